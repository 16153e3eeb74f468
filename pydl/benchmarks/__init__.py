"""Benchmarks behind ``pydl bench``: kernel ratios (``kernels``) and end-to-end training
(``training``) against NumPy and PyTorch CPU, measured in one run on this machine."""
from __future__ import annotations

__all__ = ["main"]


def main(argv=None) -> int:
    """``pydl bench [--quick]``: the kernel table, then the training table."""
    import argparse

    from . import kernels, training

    ap = argparse.ArgumentParser(prog="pydl bench")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    common = (["--quick"] if a.quick else []) + ["--threads", str(a.threads)]
    print("## Kernels\n")
    rc = kernels.main(common)
    print("\n## Training, one epoch\n")
    rc2 = training.main(common)
    return rc or rc2
