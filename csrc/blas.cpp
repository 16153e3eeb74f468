// GEMM shim over SciPy's BLAS; see blas.hpp.
#include "blas.hpp"

#include <Python.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace pydl {
namespace {

using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const float*, const float*, const int*, const float*, const int*,
                          const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const double*, const double*, const int*, const double*, const int*,
                          const double*, double*, const int*);

sgemm_fn g_sgemm = nullptr;
dgemm_fn g_dgemm = nullptr;

void* capsule_pointer(PyObject* capi, const char* name) {
    PyObject* cap = PyDict_GetItemString(capi, name);  // borrowed
    if (cap == nullptr || !PyCapsule_CheckExact(cap))
        throw std::runtime_error(std::string("scipy.linalg.cython_blas has no capsule for ") +
                                 name);
    void* p = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (p == nullptr) {
        PyErr_Clear();
        throw std::runtime_error(std::string("could not read the capsule for ") + name);
    }
    return p;
}

}  // namespace

void blas_init() {
    if (g_sgemm && g_dgemm) return;
    PyObject* mod = PyImport_ImportModule("scipy.linalg.cython_blas");
    if (mod == nullptr) {
        PyErr_Clear();
        throw std::runtime_error(
            "pydl needs SciPy's BLAS (scipy.linalg.cython_blas); install scipy");
    }
    PyObject* capi = PyObject_GetAttrString(mod, "__pyx_capi__");
    Py_DECREF(mod);
    if (capi == nullptr || !PyDict_Check(capi)) {
        Py_XDECREF(capi);
        PyErr_Clear();
        throw std::runtime_error("scipy.linalg.cython_blas has no __pyx_capi__");
    }
    try {
        g_sgemm = reinterpret_cast<sgemm_fn>(capsule_pointer(capi, "sgemm"));
        g_dgemm = reinterpret_cast<dgemm_fn>(capsule_pointer(capi, "dgemm"));
    } catch (...) {
        Py_DECREF(capi);
        throw;
    }
    Py_DECREF(capi);
}

namespace {

// Small products, where a BLAS call costs more in setup and packing than in arithmetic
// (a 32x64 @ 64x32 product: ~2.3 us through OpenBLAS), run in the kernel below when the
// build targets AVX or AVX-512 (GCC/Clang vector extensions of one register's width; with
// narrower registers the 8 accumulators no longer fit and BLAS is faster).
#if defined(__GNUC__) && (defined(__AVX512F__) || defined(__AVX__))
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
// Up to this M*N*K the kernel beats a BLAS call (measured through dense_forward /
// dense_backward on a 2-core AVX-512 machine: 32x64->32 forward 2.2 vs 3.0 us, backward
// 4.0 vs 5.9 us; even at 2^18, slower from 2^19 on).
constexpr std::int64_t kSmallGemmMax = std::int64_t(1) << 17;
#else
constexpr int kVecBytes = 32;
constexpr std::int64_t kSmallGemmMax = std::int64_t(1) << 16;  // half the width, half the size
#endif

// C = alpha op(A) op(B) + beta C (C not read when beta == 0). op(B) is packed into K x Np
// rows padded with zeros to a multiple of NR; each MR x NR block of C accumulates in
// registers over p in order. Rows of op(A) are read in place (the last block repeats row
// M-1 and drops the copies). Single-threaded, so the result does not depend on the thread
// count.
template <class T>
void small_gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
                const T* B, int ldb, T beta, T* C, int ldc) {
    // V: one vector register of T; VU: its unaligned alias for loads and stores. The
    // accumulators are values, never addressed, so they stay in registers.
    typedef T V __attribute__((vector_size(kVecBytes)));
    typedef T VU __attribute__((vector_size(kVecBytes), aligned(sizeof(T)), may_alias));
    constexpr int MR = 4, L = int(sizeof(V) / sizeof(T)), NR = 2 * L;
    const std::ptrdiff_t Np = (std::ptrdiff_t(N) + NR - 1) / NR * NR;
    thread_local std::vector<T> packed;
    if (packed.size() < std::size_t(K) * std::size_t(Np)) packed.resize(std::size_t(K) * Np);
    T* const Bp = packed.data();
    if (trans_b) {  // Bp[p, j] = B[j, p]: read B in rows, 8 at a time
        for (int j0 = 0; j0 < N; j0 += 8) {
            const int jn = N - j0 < 8 ? N - j0 : 8;
            for (int p = 0; p < K; ++p)
                for (int j = 0; j < jn; ++j)
                    Bp[p * Np + j0 + j] = B[std::ptrdiff_t(j0 + j) * ldb + p];
        }
    } else {
        for (int p = 0; p < K; ++p)
            std::memcpy(Bp + p * Np, B + std::ptrdiff_t(p) * ldb, sizeof(T) * N);
    }
    for (int p = 0; p < K; ++p)
        for (std::ptrdiff_t j = N; j < Np; ++j) Bp[p * Np + j] = T(0);
    // a(r, p) = op(A)[i0 + r, p], rows past M clamped to M - 1
    const std::ptrdiff_t sr = trans_a ? 1 : lda, sp = trans_a ? lda : 1;
    for (int i0 = 0; i0 < M; i0 += MR) {
        const T* a0 = A + std::ptrdiff_t(i0) * sr;
        const T* a1 = A + std::ptrdiff_t(i0 + 1 < M ? i0 + 1 : M - 1) * sr;
        const T* a2 = A + std::ptrdiff_t(i0 + 2 < M ? i0 + 2 : M - 1) * sr;
        const T* a3 = A + std::ptrdiff_t(i0 + 3 < M ? i0 + 3 : M - 1) * sr;
        for (std::ptrdiff_t j0 = 0; j0 < Np; j0 += NR) {
            V c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{};
            for (std::ptrdiff_t p = 0; p < K; ++p) {
                const T* b = Bp + p * Np + j0;
                const V b0 = *reinterpret_cast<const VU*>(b);
                const V b1 = *reinterpret_cast<const VU*>(b + L);
                const T x0 = a0[p * sp], x1 = a1[p * sp], x2 = a2[p * sp], x3 = a3[p * sp];
                c00 += x0 * b0;
                c01 += x0 * b1;
                c10 += x1 * b0;
                c11 += x1 * b1;
                c20 += x2 * b0;
                c21 += x2 * b1;
                c30 += x3 * b0;
                c31 += x3 * b1;
            }
            const V acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
            const int w = int(N - j0 < NR ? N - j0 : NR);
            for (int r = 0; r < MR && i0 + r < M; ++r) {
                T out[NR];
                *reinterpret_cast<VU*>(out) = alpha * acc[r][0];
                *reinterpret_cast<VU*>(out + L) = alpha * acc[r][1];
                T* c = C + std::ptrdiff_t(i0 + r) * ldc + j0;
                if (beta == T(0))
                    for (int jj = 0; jj < w; ++jj) c[jj] = out[jj];
                else
                    for (int jj = 0; jj < w; ++jj) c[jj] = out[jj] + beta * c[jj];
            }
        }
    }
}

// ... and while packed op(B) stays within 2^16 elements (it is kept per thread for reuse).
bool is_small(int M, int N, int K) {
    return std::int64_t(M) * N * K <= kSmallGemmMax &&
           std::int64_t(K) * ((std::int64_t(N) + 31) / 32 * 32) <= (std::int64_t(1) << 16);
}
#else
template <class T>
void small_gemm(bool, bool, int, int, int, T, const T*, int, const T*, int, T, T*, int) {}
bool is_small(int, int, int) { return false; }
#endif

}  // namespace

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same call
// with the operands (and their transposes) swapped.
template <>
void gemm<float>(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    if (is_small(M, N, K))
        return small_gemm<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    g_sgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                  int lda, const double* B, int ldb, double beta, double* C, int ldc) {
    if (is_small(M, N, K))
        return small_gemm<double>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    g_dgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

}  // namespace pydl
