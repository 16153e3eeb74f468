// GEMM through the BLAS that SciPy ships (small products excepted), found at run time in
// scipy.linalg.cython_blas.__pyx_capi__ (Fortran convention, column-major).
// Nothing links against a BLAS at build time.
#pragma once

namespace pydl {

// Looks up sgemm/dgemm once; throws std::runtime_error if SciPy has no such capsule.
// Needs the GIL (it imports a module).
void blas_init();

// Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
// A is (M, K) or (K, M) when trans_a, B is (K, N) or (N, K) when trans_b;
// lda/ldb/ldc are row strides in elements. Never call from inside an OpenMP region.
// Small products (M*N*K <= 2^17 with AVX-512, 2^16 with AVX, and K*N <= ~2^16) run in
// pydl's own single-threaded register-blocked kernel instead, where a BLAS call costs more
// than the product (see blas.cpp); pydl passes alpha = 1 (with alpha = 0 that kernel would
// still form A*B, so inf/NaN in A or B would show, unlike in BLAS).
template <class T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc);

}  // namespace pydl
