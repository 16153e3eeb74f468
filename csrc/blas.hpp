// GEMM through the BLAS that SciPy ships (the products of small and medium layers excepted), found at run time in
// scipy.linalg.cython_blas.__pyx_capi__ (Fortran convention, column-major).
// Nothing links against a BLAS at build time.
#pragma once

#include <string>

namespace pydl {

// Looks up sgemm/dgemm and sgemv/dgemv once; throws std::runtime_error if SciPy has no such
// capsule.
// Needs the GIL (it imports a module).
void blas_init();

// Sets SciPy's BLAS to one thread per call (gemm then runs large products in parts over
// pydl's OpenMP threads); false where the BLAS is not an OpenBLAS pydl can set (then gemm
// leaves the threads to the BLAS, whose pool pydl.set_num_threads sets to pydl's own count
// through threadpoolctl). blas_init calls it.
bool pin_blas_threads();

// Sets SciPy's OpenBLAS to n threads per call; returns the count it had, or 0 (and does
// nothing) where pin_blas_threads cannot set it. For references that time the BLAS's own
// threads (bench/); gemm does not split products while it is above one.
int set_blas_pool(int n);

// Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
// A is (M, K) or (K, M) when trans_a, B is (K, N) or (N, K) when trans_b;
// lda/ldb/ldc are row strides in elements. Never call from inside an OpenMP region.
// Some products run in pydl's own single-threaded kernel instead (see is_own in blas.cpp:
// which ones depends on the BLAS's kernels and on the BLAS's thread count); of the others,
// those with at most 8 rows or 2 columns of C go to the BLAS as one gemv per row (column);
// pydl passes alpha = 1 (with alpha = 0 that kernel would still form A*B, so inf/NaN in A
// or B would show, unlike in BLAS).
template <class T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc);

// C (M, N) = A (M, K) @ B^T, B (N, K), with each row of C computed from its row of A and B
// alone, bit for bit the same whatever M and whichever rows share the call (inference
// that does not depend on the batch): pydl's own kernel, in blocks of rows over the OpenMP
// threads when the product is large. Without the own kernel (own_gemm_vector_bytes() == 0)
// it is gemm, and the bits may then depend on M. Never call from inside an OpenMP region.
template <class T>
void gemm_rows(int M, int N, int K, const T* A, const T* B, T* C);

// How many parts gemm cuts this product into now: the threads of pydl's team for a large
// product while SciPy's BLAS runs on one thread, else 1. While other calling threads' bands
// take the team's count, gemm computes the same parts one after another on the calling
// thread (the same bits). gemm_bands_run: how many bands gemm has computed so far, in this
// process; hold_gemm_bands(n): counts n more bands as in progress (negative: fewer) and
// returns the count (both for tests).
int gemm_parts(int M, int N, int K);
long long gemm_bands_run();
int hold_gemm_bands(int n);

// The file of the OpenBLAS library SciPy loaded ("" if unknown or another BLAS).
const std::string& blas_library();

// True when gemm<T> would run this product (its first band, when cut) in pydl's own kernel
// now (it depends on the BLAS's kernels and thread count); false: in the BLAS.
template <class T>
bool gemm_runs_own(int M, int N, int K);

// OpenBLAS's name for its kernels on this CPU ("SkylakeX", "Haswell", "Zen", ...), or ""
// when the BLAS is not an OpenBLAS that tells.
const std::string& blas_core();

// The own kernel's vector width in bytes (64 with AVX-512, 32 with AVX; 0: not built),
// and, for tests: make gemm use the rule (0), always the own kernel (1; refused without
// it) or always the BLAS (2); returns the previous setting.
int own_gemm_vector_bytes();
int force_gemm_kernel(int kernel);

}  // namespace pydl
