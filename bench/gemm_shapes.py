"""pydl's GEMMs against SciPy's OpenBLAS over layer shapes, at 1 and 2 threads.

pydl runs some products in its own single-threaded kernel (csrc/blas.cpp, ``own_gemm``;
``pydl.ops.gemm_kernel(M, N, K)`` names the kernel of a product) and the others in SciPy's
OpenBLAS; which ones depends on OpenBLAS's kernels (``pydl.ops.blas_core()``) and on the
thread count (see ``is_own``). This prints, per dense layer shape (batch m,
n_in -> n_out), the GFLOP/s of the three GEMMs of a forward+backward (Z = X W^T,
dW = dZ^T X, dX = dZ W) through pydl (``dense_forward`` + ``dense_backward``, identity
activation, no bias: nothing but the products) and through raw ``scipy.linalg.blas.sgemm``
calls, each at 1 and 2 threads, interleaved round-robin in one process, and the ratios.

    python bench/gemm_shapes.py                      # the default shapes, float32
    python bench/gemm_shapes.py 32x256x256 1024x4096x4096 --dtype float64 --rounds 9

The rule in csrc/blas.cpp was chosen from this table, from bench/gemm_sweep.py (every
product of many layer shapes with each kernel forced) and, at 2^21-2^22 with two
threads, from training itself, where OpenBLAS's spinning threads slow the next kernel
(there the own kernel runs although OpenBLAS's two threads are ~10% ahead alone).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

import pydl
from pydl import ops
from pydl.benchmarks.kernels import measure_samples, scipy_blas_threads, set_threads

SHAPES = ["1x512x512", "4x512x512", "1x2048x2048", "16x2048x2048", "32x64x256", "32x256x256", "32x256x10", "32x784x128", "64x256x256", "128x512x512",
          "256x512x512", "64x1024x1024", "128x1024x1024", "1024x1024x1024", "1024x4096x4096"]


def gemm_variants(m: int, n_in: int, n_out: int, dtype) -> dict:
    """{"pydl": ..., "blas": ...}: the three products of one layer, once each."""
    from scipy.linalg.blas import dgemm, sgemm

    rng = np.random.default_rng(0)
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    dZ = rng.standard_normal((m, n_out)).astype(dtype)
    A, dW, dX = np.empty((m, n_out), dtype), np.empty_like(W), np.empty_like(X)
    gemm = sgemm if dtype == np.float32 else dgemm

    def pydl_gemms():
        ops.dense_forward(A, X, W)
        ops.dense_backward(dX, dW, None, dZ, A, X, W)

    # Row-major C = A B is column-major C^T = B^T A^T; the .T views are Fortran-contiguous.
    def blas_gemms():
        gemm(1.0, W.T, X.T, trans_a=1, c=A.T, overwrite_c=1)
        gemm(1.0, X.T, dZ.T, trans_b=1, c=dW.T, overwrite_c=1)
        gemm(1.0, W.T, dZ.T, c=dX.T, overwrite_c=1)

    return {"pydl": pydl_gemms, "blas": scipy_blas_threads(blas_gemms)}


_current = [0]


def with_threads(n: int, fn):
    """fn at n threads (switched on the first call of a turn, which is untimed)."""
    def call():
        if _current[0] != n:
            set_threads(n)
            _current[0] = n
        fn()
    return call


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shapes", nargs="*", default=SHAPES, help="m x n_in x n_out, e.g. 32x256x256")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    dtype = np.dtype(args.dtype).type
    before = pydl.get_num_threads()
    print(f"{args.dtype}, GFLOP/s of the 3 products (median of {args.rounds} rounds); "
          f"OpenBLAS's kernels: {ops.blas_core() or 'not named'}")
    print(f"{'m x n_in x n_out':>18} {'M*N*K':>8} | {'pydl 1t':>7} {'blas 1t':>7} "
          f"{'pydl 2t':>7} {'blas 2t':>7} | pydl/blas 1t  2t")
    try:
        for shape in args.shapes:
            m, n_in, n_out = (int(x) for x in shape.lower().split("x"))
            fns = gemm_variants(m, n_in, n_out, dtype)
            variants = {f"{name} {t}t": with_threads(t, fn) for t in (1, 2)
                        for name, fn in fns.items()}
            samples = measure_samples(variants, args.rounds, warmup=2, min_time=0.05,
                                      settle=0.1)
            flops = 3 * 2.0 * m * n_in * n_out
            gf = {k: flops / statistics.median(v) / 1e9 for k, v in samples.items()}
            print(f"{shape:>18} 2^{np.log2(m * n_in * n_out):<6.1f} | "
                  f"{gf['pydl 1t']:7.0f} {gf['blas 1t']:7.0f} {gf['pydl 2t']:7.0f} "
                  f"{gf['blas 2t']:7.0f} | {gf['pydl 1t'] / gf['blas 1t']:12.2f} "
                  f"{gf['pydl 2t'] / gf['blas 2t']:4.2f}", flush=True)
    finally:
        set_threads(before)


if __name__ == "__main__":
    main()
