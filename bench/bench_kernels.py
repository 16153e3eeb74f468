"""pytest-benchmark suite of pydl's kernels beside a NumPy reference and PyTorch CPU.

    pytest bench/bench_kernels.py --benchmark-only
    pytest bench/ --benchmark-only -k "dense and pydl" --benchmark-group-by=group
    PYDL_BENCH_SIZES=small pytest bench/ --benchmark-only     # the quick sizes only
    PYDL_BENCH_THREADS=1 pytest bench/ --benchmark-only

Each test times one variant of one kernel at one size; the variants, their set-up
and the sizes are those of ``bench/compare.py`` (which prints the ratio table and judges
the goals; it lives in ``pydl.benchmarks.kernels``), so the two always measure the
same code. Variants: ``pydl``, ``numpy``
(the straightforward NumPy formula), ``ref-*`` (raw sgemm, streaming add) and
``torch-*`` (skipped when torch is absent). Results are grouped by kernel and size.
"""
from __future__ import annotations

import os
import re

import pytest

from pydl.benchmarks import kernels as compare

SIZES = {"small": compare.QUICK, "full": compare.FULL}
_TINY = {"dense": dict(m=2, n_in=3, n_out=4), "adam": dict(n=8),
         "batchnorm": dict(m=4, n=3), "softmax_xent": dict(m=4, C=5)}


def slug(label: str) -> str:
    """'torch (Adam fused=True)' -> 'torch-adam-fused-true'."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _selected_sizes() -> list[str]:
    wanted = os.environ.get("PYDL_BENCH_SIZES", "small,full")
    return [s for s in (w.strip() for w in wanted.split(",")) if s in SIZES]


def _variant_ids(key: str) -> list[str]:
    # Built at tiny sizes at collection time, only to learn which variants exist here
    # (torch present or not, fused Adam supported or not).
    case = compare.CASES[key](**_TINY[key], torch=compare.import_torch())
    return [slug(label) for label in case["variants"]]


_cache: dict = {}


def _case(key: str, size: str) -> dict:
    """The case of (key, size), built once; only the most recent one is kept alive."""
    if (key, size) not in _cache:
        _cache.clear()
        case = compare.CASES[key](**SIZES[size][key], torch=compare.import_torch())
        case["by_slug"] = {slug(label): fn for label, fn in case["variants"].items()}
        _cache[(key, size)] = case
    return _cache[(key, size)]


def pytest_generate_tests(metafunc):
    if "variant" in metafunc.fixturenames:
        key = metafunc.function.__name__.removeprefix("test_")
        metafunc.parametrize("size", _selected_sizes())
        metafunc.parametrize("variant", _variant_ids(key))


def _run(benchmark, bench_threads, key, size, variant):
    case = _case(key, size)
    fn = case["by_slug"][variant]
    benchmark.group = f"{key} {case['size']} ({bench_threads} threads)"
    benchmark.extra_info.update(size=case["size"], threads=bench_threads)
    if "flop" in case:
        benchmark.extra_info["flop"] = case["flop"]
    if "bytes" in case:
        benchmark.extra_info["bytes"] = case["stream_bytes" if variant.startswith("ref") else "bytes"]
    fn()  # warm-up: wakes the thread pools, faults the pages in
    benchmark(fn)


def test_dense(benchmark, bench_threads, size, variant):
    """Dense forward+backward with ReLU (3 GEMMs + epilogues) vs raw sgemm and torch."""
    _run(benchmark, bench_threads, "dense", size, variant)


def test_adam(benchmark, bench_threads, size, variant):
    """One Adam step over a flat buffer vs NumPy, a streaming add, torch fused/foreach."""
    _run(benchmark, bench_threads, "adam", size, variant)


def test_batchnorm(benchmark, bench_threads, size, variant):
    """Batch norm, training forward + backward."""
    _run(benchmark, bench_threads, "batchnorm", size, variant)


def test_softmax_xent(benchmark, bench_threads, size, variant):
    """Softmax cross-entropy from logits, cost and gradient."""
    _run(benchmark, bench_threads, "softmax_xent", size, variant)


@pytest.mark.parametrize("check", [False, True], ids=["store", "check+store"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "rmsprop", "adam"])
def test_optimizer_step(benchmark, bench_threads, opt, check):
    """Each optimizer's step over 4M float32 params, plain and with check=True (the update
    is computed once without storing it, as fit runs it: one more read of the arrays).
    A loop that stops vectorizing shows here first (Momentum once ran 3.5x slower)."""
    import numpy as np

    from pydl import ops

    n = 1 << 22
    rng = np.random.default_rng(0)
    theta, grad = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
    v, s = np.zeros(n, np.float32), np.ones(n, np.float32)
    t = [1]
    steps = {
        "sgd": lambda: ops.sgd_step(theta, grad, 1e-3, check=check),
        "momentum": lambda: ops.momentum_step(theta, v, grad, 1e-3, 0.9, False, check=check),
        "nesterov": lambda: ops.momentum_step(theta, v, grad, 1e-3, 0.9, True, check=check),
        "rmsprop": lambda: ops.rmsprop_step(theta, s, grad, 1e-4, check=check),
        "adam": lambda: ops.adam_step(theta, v, s, grad, 1e-4, 0.9, 0.999, 1e-8, t[0], check=check),
    }
    benchmark.group = f"optimizer step 4M float32 ({bench_threads} threads)"
    benchmark.extra_info.update(threads=bench_threads, params=n)
    fn = steps[opt]
    assert fn() is True
    benchmark(fn)


@pytest.mark.parametrize("state", ["normal", "subnormal v and s", "gradient 1e-20"])
def test_adam_step_with_subnormals(benchmark, bench_threads, state):
    """Adam over the 2410 parameters of a 64-32-10 MLP where the state has decayed into the
    subnormal range (a gradient that stays 0) or the gradient's square is subnormal. x86
    cores take ~100 cycles per subnormal operand or result unless the step flushes them
    (csrc/common.hpp: FlushSubnormals): the three should time alike (~4 us here; 50-95 us
    before the flush)."""
    import numpy as np

    from pydl import ops

    n = 2410
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(n, np.float32)
    grad = (1e-3 * rng.standard_normal(n)).astype(np.float32)
    v0, s0 = (1e-3 * rng.standard_normal(n)).astype(np.float32), np.full(n, 1e-6, np.float32)
    if state == "subnormal v and s":
        grad[:] = 0
        v0[:], s0[:] = 5e-39, 5e-39
    elif state == "gradient 1e-20":
        grad[:] = 1e-20
    v, s = v0.copy(), s0.copy()

    def reset():  # each round from the same state (a step flushes or decays it)
        np.copyto(v, v0)
        np.copyto(s, s0)

    benchmark.group = f"Adam step, 2410 float32 params ({bench_threads} threads)"
    benchmark.extra_info.update(threads=bench_threads, state=state)
    fn = lambda: ops.adam_step(theta, v, s, grad, 1e-3, 0.9, 0.999, 1e-8, 5, check=True)  # noqa: E731
    assert fn() is True
    benchmark.pedantic(fn, setup=reset, rounds=2000, warmup_rounds=10)
