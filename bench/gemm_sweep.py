"""Every product of many dense-layer shapes, in pydl's own GEMM kernel and in the BLAS.

Where bench/gemm_shapes.py compares pydl as it runs against raw BLAS calls, this forces
each kernel in turn (``pydl.ops._forced_gemm_kernel``) for the forward (M, N, K) = (m,
n_out, n_in) and dW (n_out, n_in, m) products of every layer m x n_in -> n_out with
M*N*K <= 2^24, interleaved shape by shape, and prints the geometric mean of BLAS time /
own time per class of shape and size bucket (> 1: the own kernel is faster), then the
shapes where it loses most among those the rule in csrc/blas.cpp gives it. This is how
the rule for a BLAS with 512-bit kernels was read (on a 2-core Emerald Rapids VM).

With --threads 2 both kernels run as pydl runs them: products of 2^20 multiply-adds and
more cut into one part per thread, SciPy's BLAS on one thread per call. The rule's limits
for more than one thread were read, before that, against OpenBLAS on its own threads:
--blas-own-threads times the BLAS side that way (SciPy's BLAS on --threads threads of its
own, products whole).

    python bench/gemm_sweep.py                 # 1 thread, float32 (~2 minutes)
    python bench/gemm_sweep.py --threads 2 --dtype float64
    python bench/gemm_sweep.py --threads 2 --blas-own-threads
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict

import numpy as np

from pydl import ops

SIZES_M = [1, 4, 8, 10, 16, 32, 64, 128]
SIZES_IN = [10, 16, 32, 64, 256, 784, 1024]
SIZES_OUT = [1, 10, 16, 32, 64, 256, 1024]


def _best_of(fn, calls: int, rounds: int = 5) -> float:
    """Seconds per call, the fastest of `rounds` rounds of `calls` calls."""
    for _ in range(10):
        fn()
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def sweep(dtype, blas_own_threads=False) -> list[tuple]:
    """[(product, M, N, K, own seconds, blas seconds)] for every layer shape."""
    from pydl.benchmarks.kernels import _turn, scipy_blas_threads

    rows = []
    for m in SIZES_M:
        for n_in in SIZES_IN:
            for n_out in SIZES_OUT:
                if m * n_in * n_out > 2**24:
                    continue
                rng = np.random.default_rng(0)
                X = rng.standard_normal((m, n_in)).astype(dtype)
                W = rng.standard_normal((n_out, n_in)).astype(dtype)
                dZ = rng.standard_normal((m, n_out)).astype(dtype)
                A, dW = np.empty((m, n_out), dtype), np.empty_like(W)
                calls = max(20, min(3000, int(3e6 / (m * n_in * n_out + 1e4))))
                products = {
                    ("forward", m, n_out, n_in): lambda: ops.dense_forward(A, X, W),
                    # identity, no dA_prev, no db: the dW product alone
                    ("dW", n_out, n_in, m): lambda: ops.dense_backward(None, dW, None, dZ, A, X, W),
                }
                for key, fn in products.items():
                    times = {}
                    for kernel in ("own", "blas"):
                        timed = fn
                        if kernel == "blas" and blas_own_threads:
                            timed = scipy_blas_threads(fn)
                        with ops._forced_gemm_kernel(kernel), _turn(timed):
                            times[kernel] = _best_of(timed, calls)
                    rows.append((*key, times["own"], times["blas"]))
    return rows


def report(rows, dtype, threads) -> None:
    print(f"{np.dtype(dtype).name}, {threads} thread(s), OpenBLAS's kernels: "
          f"{ops.blas_core() or 'not named'}; BLAS time / own time (> 1: own faster)")
    classes = {"M, N, K >= 16": lambda M, N, K: M >= 16 and N >= 16 and K >= 16,
               "M < 16 (N, K >= 16)": lambda M, N, K: M < 16 and N >= 16 and K >= 16,
               "K < 16 (M, N >= 16)": lambda M, N, K: K < 16 and M >= 16 and N >= 16,
               "N < 16": lambda M, N, K: N < 16}
    buckets = defaultdict(list)
    for product, M, N, K, own, blas in rows:
        for name, test in classes.items():
            if test(M, N, K):
                b = 2 * math.ceil(math.log2(M * N * K) / 2)
                buckets[name, b].append(blas / own)
    print(f"{'class':>22} {'M*N*K':>16} {'n':>4} {'geo mean':>9} {'min':>6} {'max':>6}")
    for (name, b), v in sorted(buckets.items()):
        print(f"{name:>22} (2^{b - 2:>2}, 2^{b:>2}] {len(v):4d} {statistics.geometric_mean(v):9.2f} "
              f"{min(v):6.2f} {max(v):6.2f}")
    given = [r for r in rows if ops.gemm_kernel(*r[1:4], dtype) == "own"]
    print(f"\nproducts the rule gives the own kernel now: {len(given)} of {len(rows)}; "
          f"geometric mean {statistics.geometric_mean([r[5] / r[4] for r in given]):.2f}"
          if given else "\nthe rule gives the own kernel none of these products")
    for product, M, N, K, own, blas in sorted(given, key=lambda r: r[5] / r[4])[:10]:
        print(f"  {product:>7} M={M:5d} N={N:5d} K={K:5d}  own {own * 1e6:9.2f} us  "
              f"blas {blas * 1e6:9.2f} us  {blas / own:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--blas-own-threads", action="store_true",
                        help="time the BLAS on --threads threads of its own, products whole")
    args = parser.parse_args(argv)
    if not ops.has_own_gemm:
        raise SystemExit("this build has no own GEMM kernel (needs AVX or AVX-512)")
    ops.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype).type
    report(sweep(dtype, args.blas_own_threads), dtype, args.threads)


if __name__ == "__main__":
    main()
