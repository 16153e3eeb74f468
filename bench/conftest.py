"""pytest configuration for the benchmark suites in bench/.

Files named ``bench_*.py`` here are collected as test modules (pytest's default
``python_files`` only knows ``test_*.py``), the directory is put on ``sys.path``, and
every benchmark (case builders: ``pydl.benchmarks.kernels``) runs with
the thread count of ``PYDL_BENCH_THREADS`` (default 2) for pydl, NumPy's and SciPy's
BLAS and torch alike.
"""
from __future__ import annotations

import os
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it itself
    if any(fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return None  # already matched by the configured patterns
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def bench_threads():
    """Threads for every peer, from PYDL_BENCH_THREADS (default 2)."""
    from pydl.benchmarks import kernels as compare

    n = int(os.environ.get("PYDL_BENCH_THREADS", "2"))
    compare.set_threads(n, compare.import_torch())
    return n
