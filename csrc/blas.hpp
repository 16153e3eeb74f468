// GEMM through the BLAS that SciPy ships (the products of small and medium layers excepted), found at run time in
// scipy.linalg.cython_blas.__pyx_capi__ (Fortran convention, column-major).
// Nothing links against a BLAS at build time.
#pragma once

namespace pydl {

// Looks up sgemm/dgemm once; throws std::runtime_error if SciPy has no such capsule.
// Needs the GIL (it imports a module).
void blas_init();

// The size of SciPy's BLAS pool (pydl.set_num_threads sets both); gemm picks its kernel by it.
void set_blas_threads(int n);

// Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
// A is (M, K) or (K, M) when trans_a, B is (K, N) or (N, K) when trans_b;
// lda/ldb/ldc are row strides in elements. Never call from inside an OpenMP region.
// Tiny products (M*N*K <= 2^17 with AVX-512, 2^16 with AVX), and with AVX-512 products with
// K >= 8 while the BLAS pool has one thread or up to 2^26 with operands of at most 4 MB,
// run in pydl's own single-threaded kernel instead (see blas.cpp: faster than SciPy's
// OpenBLAS there); pydl passes alpha = 1 (with alpha = 0 that kernel would still form A*B,
// so inf/NaN in A or B would show, unlike in BLAS).
template <class T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc);

}  // namespace pydl
