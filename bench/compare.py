"""Kernel ratio table against NumPy and PyTorch: see pydl/benchmarks/kernels.py.

    python bench/compare.py [--quick] [--threads N] [--only dense,adam] [--json out.json]
"""
import sys

from pydl.benchmarks.kernels import main

if __name__ == "__main__":
    sys.exit(main())
