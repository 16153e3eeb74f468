// GEMM shim over SciPy's BLAS; see blas.hpp.
#include "blas.hpp"

#include <Python.h>

#include "common.hpp"

#include <algorithm>
#include <cctype>
#include <atomic>
#include <utility>
#include <cstdint>
#include <type_traits>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif


namespace pydl {
namespace {

using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const float*, const float*, const int*, const float*, const int*,
                          const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const double*, const double*, const int*, const double*, const int*,
                          const double*, double*, const int*);

using sgemv_fn = void (*)(const char*, const int*, const int*, const float*, const float*,
                          const int*, const float*, const int*, const float*, float*, const int*);
using dgemv_fn = void (*)(const char*, const int*, const int*, const double*, const double*,
                          const int*, const double*, const int*, const double*, double*,
                          const int*);

using set_threads_fn = void (*)(int);
using get_threads_fn = int (*)();

sgemm_fn g_sgemm = nullptr;
dgemm_fn g_dgemm = nullptr;
sgemv_fn g_sgemv = nullptr;
dgemv_fn g_dgemv = nullptr;
std::string g_blas_core;  // OpenBLAS's kernel family ("SkylakeX", "Zen", ...); "" if unknown
bool g_blas_wide = true;   // BLAS may have 512-bit kernels (true unless known otherwise)
// OpenBLAS's own thread-count functions (both or neither); null for another BLAS, and for
// an OpenBLAS built with OpenMP (there openblas_set_num_threads calls omp_set_num_threads,
// which would set the OpenMP count of the importing thread, pydl's included; and inside an
// OpenMP region such a build already runs each call on one thread).
set_threads_fn g_blas_set_threads = nullptr;
get_threads_fn g_blas_get_threads = nullptr;
std::string g_blas_path;     // the OpenBLAS library's file, "" if unknown
int g_blas_max_threads = 0;  // OpenBLAS's MAX_THREADS (its get_config), 0 if unknown

// Asks the library that scipy.linalg.cython_blas loaded (SciPy's wheels: scipy_openblas_*;
// a system OpenBLAS: openblas_*) for the name of the kernels it picked on this CPU ("" for
// another BLAS or where it cannot be found) and for its thread-count functions.
void find_blas_symbols(const void* fn) {
#if defined(__unix__) || defined(__APPLE__)
    Dl_info info;
    if (dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return;
    void* h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (h == nullptr) return;
    for (const char* prefix : {"scipy_openblas", "openblas"}) {
        const std::string p(prefix);
        void* corename = dlsym(h, (p + "_get_corename").c_str());
        if (corename == nullptr) continue;
        Dl_info lib;  // (info is SciPy's cython_blas, which links the BLAS)
        if (dladdr(corename, &lib) != 0 && lib.dli_fname != nullptr) g_blas_path = lib.dli_fname;
        if (const char* c = reinterpret_cast<const char* (*)()>(corename)()) g_blas_core = c;
        if (void* config = dlsym(h, (p + "_get_config").c_str())) {
            const char* c = reinterpret_cast<const char* (*)()>(config)();
            const char* m = c != nullptr ? std::strstr(c, "MAX_THREADS=") : nullptr;
            if (m != nullptr) g_blas_max_threads = std::atoi(m + 12);
        }
        // 0: sequential, 1: its own pthreads, 2: OpenMP
        void* parallel = dlsym(h, (p + "_get_parallel").c_str());
        const bool openmp = parallel != nullptr && reinterpret_cast<int (*)()>(parallel)() == 2;
        void* set = dlsym(h, (p + "_set_num_threads").c_str());
        void* get = dlsym(h, (p + "_get_num_threads").c_str());
        if (set != nullptr && get != nullptr && !openmp) {
            g_blas_set_threads = reinterpret_cast<set_threads_fn>(set);
            g_blas_get_threads = reinterpret_cast<get_threads_fn>(get);
        }
        break;
    }
    dlclose(h);  // (SciPy keeps the library loaded: the pointers stay valid)
#else
    (void)fn;
#endif
}

// OpenBLAS kernel families with 512-bit GEMM kernels (and, for SkylakeX, small-matrix
// kernels that skip packing).
bool is_wide_core(std::string core) {
    for (char& ch : core) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

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

bool pin_blas_threads() { return set_blas_pool(1) > 0; }

int set_blas_pool(int n) {
    if (n < 1) throw std::invalid_argument("n: must be >= 1");
    if (g_blas_set_threads == nullptr) return 0;
    const int previous = g_blas_get_threads();
    if (previous != n) g_blas_set_threads(n);
    return previous;
}

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
        g_sgemv = reinterpret_cast<sgemv_fn>(capsule_pointer(capi, "sgemv"));
        g_dgemv = reinterpret_cast<dgemv_fn>(capsule_pointer(capi, "dgemv"));
        g_sgemm = reinterpret_cast<sgemm_fn>(capsule_pointer(capi, "sgemm"));
        g_dgemm = reinterpret_cast<dgemm_fn>(capsule_pointer(capi, "dgemm"));
        find_blas_symbols(reinterpret_cast<const void*>(g_sgemm));
        g_blas_wide = g_blas_core.empty() || is_wide_core(g_blas_core);
        pin_blas_threads();
    } catch (...) {
        Py_DECREF(capi);
        throw;
    }
    Py_DECREF(capi);
}

namespace {

// pydl's own GEMM for the products of small and medium layers (see is_own below),
// built when the target has AVX or AVX-512 (GCC/Clang vector extensions of one register's
// width; with narrower registers the accumulators no longer fit and BLAS is faster).
// Where SciPy's OpenBLAS runs 256-bit kernels on an AVX-512 CPU (a 2-core AMD VM) it pays a
// setup per call and at the 32-row products of a small-batch MLP reaches ~70-80 GFLOP/s on
// one core (~30% of the core's 512-bit peak, measured 240), this kernel 140-180.
#if defined(__GNUC__) && (defined(__AVX512F__) || defined(__AVX__))
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif

template <class T>
struct Tile {
    // V: one vector register of T; VU: its unaligned alias for loads and stores.
    typedef T V __attribute__((vector_size(kVecBytes)));
    typedef T VU __attribute__((vector_size(kVecBytes), aligned(sizeof(T)), may_alias));
    static constexpr int L = int(sizeof(V) / sizeof(T));
    // A block of C is MR rows x NR = 2 vectors: 2*MR accumulators, 2 vectors of B and a
    // broadcast of A in registers (19 of 32 with AVX-512, 15 of 16 with AVX).
    static constexpr int MR = kVecBytes == 64 ? 8 : 6, NR = 2 * L;
    // K is cut into blocks of KC so that one packed KC x NR panel of op(B) (32 KB) stays
    // in the L1 cache while every row block of op(A) passes over it.
    static constexpr int KC = 32768 / (NR * int(sizeof(T)));
    // Columns of a packed panel row the tile kernel reads: a panel of w <= NR / 2 columns
    // takes the one-vector tile.
    static constexpr int read_width(int w) { return w <= NR / 2 ? NR / 2 : NR; }
};

// C[rows, 0:NR] (+)= alpha * sum_p a(r, p) b[p, 0:NR] over p < kc, one MR x NR block.
// a(r, p) = a_row[r][p * sp]; b is kc rows of NR values, ldb apart. mode 0: C = alpha acc
// (C not read), 1: C = alpha acc + beta C, 2: C += alpha acc. Only the first `rows` rows
// and first w columns are stored (the caller repeats valid rows of A for the others and
// zero-pads b).
template <class T, int NV>
__attribute__((noinline)) void tile_kernel(const T* const* a_row, std::ptrdiff_t sp, const T* b,
                               std::ptrdiff_t ldb, int kc, T* C, std::ptrdiff_t ldc, int rows,
                               int w, T alpha, T beta, int mode) {
    using V = typename Tile<T>::V;
    using VU = typename Tile<T>::VU;
    constexpr int MR = Tile<T>::MR, L = Tile<T>::L, NR = Tile<T>::NR;
    V c[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) c[r][v] = V{};
    const T* ap[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) ap[r] = a_row[r];
    for (int p = 0; p < kc; ++p) {
        V bv[NV];
        for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const VU*>(b + v * L);
        b += ldb;
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const T x = ap[r][p * sp];
            for (int v = 0; v < NV; ++v) c[r][v] += x * bv[v];
        }
    }
    for (int r = 0; r < rows; ++r) {
        T* cr = C + r * ldc;
        if (w == NV * L) {
            for (int v = 0; v < NV; ++v) {
                V x = alpha * c[r][v];
                VU* cv = reinterpret_cast<VU*>(cr + v * L);
                if (mode == 1) x += beta * *cv;
                else if (mode == 2) x += *cv;
                *cv = x;
            }
        } else {
            T out[NR];
            for (int v = 0; v < NV; ++v) *reinterpret_cast<VU*>(out + v * L) = alpha * c[r][v];
            for (int j = 0; j < w; ++j)
                cr[j] = mode == 0 ? out[j] : out[j] + (mode == 1 ? beta : T(1)) * cr[j];
        }
    }
}

// Bp[p, j] = B[j, p] for p < kc, j < w; zero for w <= j < the columns the tile kernel reads
// (NR, or NR / 2 for a panel of w <= NR / 2 columns); B has rows ldb apart.
template <class T>
void pack_transposed(T* Bp, const T* B, std::ptrdiff_t ldb, int kc, int w) {
    constexpr int NR = Tile<T>::NR;
    int p0 = 0, jt = 0;  // rows p < p0 of columns j < jt are done in registers
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
        // 16 x 16 blocks through registers: 16 row loads, 64 shuffles, 16 stores; every
        // whole group of 16 columns (packed a scalar at a time, a 16-column panel of a
        // 16 x 1024 x 16 forward took 22 us, now 7.5 with the product).
        jt = w / 16 * 16;
        if (jt > 0) {
            for (; p0 + 16 <= kc; p0 += 16)
                for (int j0 = 0; j0 < jt; j0 += 16) {
                    __m512 r[16], t[16];
                    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(B + (j0 + i) * ldb + p0);
                    for (int i = 0; i < 16; i += 2) {
                        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
                    }
                    for (int i = 0; i < 16; i += 4) {
                        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
                        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
                    }
                    // r[4g + q], 128-bit lane k: column 4k + q of rows 4g..4g+3
                    for (int q = 0; q < 4; ++q) {
                        t[q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);
                        t[4 + q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);
                        t[8 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
                        t[12 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
                    }
                    for (int q = 0; q < 4; ++q) {
                        float* d = Bp + std::ptrdiff_t(p0) * NR + j0;
                        _mm512_storeu_ps(d + (q)*NR, _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88));
                        _mm512_storeu_ps(d + (8 + q) * NR,
                                         _mm512_shuffle_f32x4(t[q], t[8 + q], 0xDD));
                        _mm512_storeu_ps(d + (4 + q) * NR,
                                         _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88));
                        _mm512_storeu_ps(d + (12 + q) * NR,
                                         _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xDD));
                    }
                }
        }
    }
#endif
    // Row by row, and zeros only up to the width the tile kernel reads (one vector for a
    // narrow panel): zeroing all NR columns a column at a time cost ~3.5 us at kc = 256
    // (a 1 x 256 x 1 product took 5.6 us, now 2.0).
    const int width = Tile<T>::read_width(w);
    for (int p = 0; p < kc; ++p) {
        T* dst = Bp + std::ptrdiff_t(p) * NR;
        for (int j = p < p0 ? jt : 0; j < w; ++j) dst[j] = B[std::ptrdiff_t(j) * ldb + p];
        for (int j = w; j < width; ++j) dst[j] = T(0);
    }
}

// C = alpha op(A) op(B) + beta C (C not read when beta == 0), single-threaded (its bits do
// not depend on the thread count; gemm's choice of kernel may). Loops: K blocks of KC, then
// NR-column panels of op(B), each packed into a KC x NR buffer (zero-padded to the width
// the tile reads), then MR-row blocks of op(A) read in place (the last block repeats row
// M-1 and drops the copies). Each C element sums its K block in order p = 0..
template <class T>
void own_gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
              const T* B, int ldb, T beta, T* C, int ldc) {
    constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR, KC = Tile<T>::KC;
    if (K == 0) {  // C = beta C, as BLAS
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
                T& c = C[std::ptrdiff_t(i) * ldc + j];
                c = beta == T(0) ? T(0) : beta * c;
            }
        return;
    }
    T* const Bp = scratch<T>(Scratch::pack, std::size_t(KC) * NR);
    // op(A)[i, p] = A[i * sr + p * sp]; op(B)[p, j] = B[p * sb + j * sj]
    const std::ptrdiff_t sr = trans_a ? 1 : lda, sp = trans_a ? lda : 1;
    const std::ptrdiff_t sb = trans_b ? 1 : ldb, sj = trans_b ? ldb : 1;
    // (block counters in 64 bits: M, N, K may each be up to INT_MAX)
    for (std::ptrdiff_t pc0 = 0; pc0 < K; pc0 += KC) {
        const int pc = int(pc0), kc = K - pc < KC ? K - pc : KC;
        const int mode = pc > 0 ? 2 : beta == T(0) ? 0 : 1;
        for (std::ptrdiff_t jc0 = 0; jc0 < N; jc0 += NR) {
            const int jc = int(jc0), w = N - jc < NR ? N - jc : NR;
            const T* b = B + pc * sb + jc * sj;
            if (trans_b)
                pack_transposed(Bp, b, ldb, kc, w);
            else  // copied even when full: rows 2^k bytes apart would alias in L1
                for (int p = 0; p < kc; ++p) {
                    T* dst = Bp + std::ptrdiff_t(p) * NR;
                    std::memcpy(dst, b + p * sb, sizeof(T) * w);
                    for (int j = w; j < Tile<T>::read_width(w); ++j) dst[j] = T(0);
                }
            for (std::ptrdiff_t ic0 = 0; ic0 < M; ic0 += MR) {
                const int ic = int(ic0);
                const T* a_row[MR];
                for (int r = 0; r < MR; ++r)
                    a_row[r] = A + (ic0 + r < M ? ic0 + r : M - 1) * sr + pc * sp;
                const int rows = M - ic < MR ? M - ic : MR;
                T* c = C + std::ptrdiff_t(ic) * ldc + jc;
                if (Tile<T>::read_width(w) == NR / 2)  // one vector: half the multiply-adds
                    tile_kernel<T, 1>(a_row, sp, Bp, NR, kc, c, ldc, rows, w, alpha, beta, mode);
                else
                    tile_kernel<T, 2>(a_row, sp, Bp, NR, kc, c, ldc, rows, w, alpha, beta, mode);
            }
        }
    }
}

// Where own_gemm runs depends on the BLAS it competes with (bench/gemm_shapes.py measures
// dense_forward/backward against raw sgemm calls, 1 and 2 threads, 1 x 64 x 256 to
// 1024 x 4096 x 4096):
// - OpenBLAS with 256-bit kernels (e.g. "Zen" on a 2-core AMD AVX-512 VM): tiny products
//   (M*N*K <= 2^17, 2^16 with AVX), where a BLAS call costs more in set-up and packing than
//   in arithmetic; and with AVX-512, when K >= 8: on a compute-bound shape own_gemm is
//   1.6-2.5x OpenBLAS on one core and as fast as OpenBLAS on two up to M*N*K = 2^26 (~0.7 ms
//   of float work; 1.5-2.4x faster below 2^22). So every such product while the BLAS pool
//   has one thread, and up to 2^26 with more threads unless an operand exceeds 4 MB (then
//   it is bound by memory traffic, which two BLAS threads draw from two cores: 16 x 2048 x
//   2048 0.8x). Below K = 8 (dW of a batch of 1-7 rows: an outer product that writes C)
//   OpenBLAS is faster (1 x 4096 x 4096: 1.4x).
// - OpenBLAS with 512-bit kernels ("SkylakeX", "Cooperlake", "SapphireRapids"), or a BLAS
//   pydl cannot name (MKL's kernels are as wide): on a 2-core Emerald Rapids VM OpenBLAS
//   runs 75-95 GFLOP/s on one core and 125-190 on two, and its small-matrix kernels skip
//   packing. bench/gemm_sweep.py times the forward and dW products of 383 layer shapes
//   (M, N, K from 1 to 1024, up to 2^24) in each kernel, interleaved. Where M, K >= 16
//   and N >= two vectors (178 products), own_gemm on one core against OpenBLAS on one is
//   1.17x faster (geometric mean; 16% less time in all), against OpenBLAS on two up to
//   2^22 1.04x (154 products), and beyond 2^22 it loses (128 x 512 x 512, 2^25: 0.6x).
//   Measured alone, OpenBLAS on two cores is ahead by ~10% at 2^21-2^22, but inside
//   training it is not: its threads keep spinning after each call and slow pydl's next
//   OpenMP kernel (a digits MLP with batch 32, layers of 32 x 256 x 256: ~10% faster per
//   trial with those in own_gemm). Elsewhere its tile wastes lanes or its packing is not
//   amortized: fewer than 16 rows (0.5-0.8x by size; M = 10, a classifier's dW: 0.5-0.6x),
//   K < 16, or N < 16 (0.4-0.8x; N = 10, the classifier's forward: 0.2-0.5x). So M, K >=
//   16, N >= two vectors and operands of at most 4 MB, up to 2^24 while the BLAS pool has
//   one thread and up to 2^22 with more.
// - AVX without AVX-512: about OpenBLAS's speed on one core, half of it on two: tiny
//   products only (beside a BLAS taken for 512-bit, e.g. MKL, only those with the shape
//   limits above).
constexpr std::int64_t kTinyGemm = std::int64_t(1) << (kVecBytes == 64 ? 17 : 16);
#if defined(__AVX512F__)
constexpr bool kOwnBeyondTiny = true;
#else
constexpr bool kOwnBeyondTiny = false;
#endif
constexpr std::int64_t kOwnGemmMax = std::int64_t(1) << 26;
constexpr std::int64_t kOwnGemmMaxWide = std::int64_t(1) << 22;     // BLAS on > 1 thread
constexpr std::int64_t kOwnGemmMaxWideOne = std::int64_t(1) << 24;  // BLAS on 1 thread
constexpr std::int64_t kOwnOperandBytes = std::int64_t(4) << 20;

std::atomic<int> g_force{0};  // 0: the rule below; 1: always own_gemm; 2: always the BLAS

// blas_threads: the threads the BLAS would use for this call (0: unknown, more than one).
template <class T>
bool is_own(int M, int N, int K, int blas_threads) {
    if (const int force = g_force.load(std::memory_order_relaxed)) return force == 1;
    const std::int64_t m = M, n = N, k = K;
    const std::int64_t largest = std::max(m * k, std::max(k * n, m * n)) * std::int64_t(sizeof(T));
    if (g_blas_wide) {
        const std::int64_t limit = !kOwnBeyondTiny ? kTinyGemm
                                   : blas_threads == 1 ? kOwnGemmMaxWideOne
                                       : kOwnGemmMaxWide;
        return m * n * k <= limit && largest <= kOwnOperandBytes && m >= 16 && k >= 16 &&
               n >= Tile<T>::NR;
    }
    if (m * n * k <= kTinyGemm) return true;
    if (!kOwnBeyondTiny || k < 8) return false;
    if (blas_threads == 1) return true;
    return m * n * k <= kOwnGemmMax && largest <= kOwnOperandBytes;
}
#else
std::atomic<int> g_force{0};
template <class T>
void own_gemm(bool, bool, int, int, int, T, const T*, int, const T*, int, T, T*, int) {}
template <class T>
bool is_own(int, int, int, int) { return false; }
#endif

}  // namespace

const std::string& blas_core() { return g_blas_core; }

int own_gemm_vector_bytes() {
#if defined(__GNUC__) && (defined(__AVX512F__) || defined(__AVX__))
    return kVecBytes;
#else
    return 0;
#endif
}

int force_gemm_kernel(int kernel) {
    if (kernel < 0 || kernel > 2 || (kernel == 1 && own_gemm_vector_bytes() == 0))
        throw std::invalid_argument("force_gemm_kernel: 0 (the rule), 1 (own, where built) or 2");
    return g_force.exchange(kernel, std::memory_order_relaxed);
}

// (~40 us of one core's multiply-adds: more than a parallel region costs)
constexpr std::int64_t kRowsParallelWork = std::int64_t(1) << 22;

// own_gemm sums each element of C over K in the same order (K blocks of KC, p = 0.. within
// each) whatever the row block it falls in, so rows may be cut anywhere.
template <class T>
void gemm_rows(int M, int N, int K, const T* A, const T* B, T* C) {
    if (own_gemm_vector_bytes() == 0)
        return gemm<T>(false, true, M, N, K, T(1), A, K, B, K, T(0), C, N);
    const std::int64_t work = std::int64_t(M) * N * std::max(K, 1);
    const bool parallel = M >= 32 && work >= kRowsParallelWork;
    parallel_for(M, parallel, [&](std::ptrdiff_t lo, std::ptrdiff_t hi) {
        own_gemm<T>(false, true, int(hi - lo), N, K, T(1), A + lo * std::ptrdiff_t(K), K, B, K,
                    T(0), C + lo * std::ptrdiff_t(N), N);
    });
}
template void gemm_rows<float>(int, int, int, const float*, const float*, float*);
template void gemm_rows<double>(int, int, int, const double*, const double*, double*);

namespace {

void blas_gemm(char ta, char tb, int M, int N, int K, float alpha, const float* A, int lda,
               const float* B, int ldb, float beta, float* C, int ldc) {
    g_sgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}
void blas_gemm(char ta, char tb, int M, int N, int K, double alpha, const double* A, int lda,
               const double* B, int ldb, double beta, double* C, int ldc) {
    g_dgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

// The threads SciPy's BLAS would use for a call now (0: unknown, taken as more than one).
// Where pydl cannot ask OpenBLAS, pydl.set_num_threads set the BLAS's pool to its own count
// through threadpoolctl.
int blas_threads() {
    return g_blas_get_threads ? g_blas_get_threads()
                              : thread_count().load(std::memory_order_relaxed);
}

// Before a thread's first BLAS call of a type: one call of 64 x 512 x 768 (~25 M
// multiply-adds, ~1 ms in float), which touches the pages of the thread's OpenBLAS buffer
// that the packed panels of layer-sized products use. OpenBLAS's Haswell kernels prefetch
// beyond a call's panels, into pages of that buffer no call has touched yet, and on the
// Zen 1 VM each such prefetch of a page never faulted in was as slow as a page walk
// that finds nothing: until a call with 384 or more of BLAS's rows (pydl's N) had run on
// the thread, a 128 x 256 x 256 float product ran at 10 GFLOP/s instead of 33, and
// 128 x 784 x 256 at 12 instead of 33 (bench/README.md, "One pool of threads").
// Its operands are zeros in own_gemm's pack buffer (the two kernels never run at once on a
// thread), A the first rows of B: ~1.7 MB (float), released after the call.
template <class T>
void prime_blas() {
    thread_local bool primed = false;
    if (primed || g_blas_core.empty()) return;  // only an OpenBLAS that names its kernels
    constexpr int m = 64, k = 512, n = 768;
    constexpr std::size_t b_count = std::size_t(n) * k, count = b_count + std::size_t(m) * n;
    T* const b = scratch<T>(Scratch::pack, count);
    std::memset(b, 0, sizeof(T) * b_count);
    blas_gemm('N', 'T', m, n, k, T(1), b, k, b, k, T(0), b + b_count, n);
    scratch_release(Scratch::pack);
    primed = true;
}

void blas_gemv(char t, int m, int n, float alpha, const float* A, int lda, const float* x,
               int incx, float beta, float* y, int incy) {
    g_sgemv(&t, &m, &n, &alpha, A, &lda, x, &incx, &beta, y, &incy);
}
void blas_gemv(char t, int m, int n, double alpha, const double* A, int lda, const double* x,
               int incx, double beta, double* y, int incy) {
    g_dgemv(&t, &m, &n, &alpha, A, &lda, x, &incx, &beta, y, &incy);
}

// A product with at most kGemvMax rows or columns of C as matrix-vector products, one per
// row (column) of C: OpenBLAS's gemm packs the whole matrix operand first (a layer's
// forward on one row, 1 x 1024 -> 1024 float: 61% of the time in the packing, 7-9x NumPy's
// gemv), where gemv streams it once per row. Row-major (r, c) with leading dimension ld is
// column-major (c x r): 'T' reads it as (r x c), 'N' as (c x r). With beta = 0 the row
// (column) is zeroed first: gemv may scale what C held by 0, which keeps a NaN there.
// False (nothing done) for other shapes.
constexpr int kGemvRows = 8;
constexpr int kGemvColumns = 2;

template <class T>
bool gemv_product(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
                  const T* B, int ldb, T beta, T* C, int ldc) {
    if (K < 1 || (M > kGemvRows && N > kGemvColumns)) return false;
    auto zero = [&](T* y, int count, std::ptrdiff_t stride) {
        if (beta == T(0))
            for (std::ptrdiff_t i = 0; i < count; ++i) y[i * stride] = T(0);
    };
    // by rows when there are few of them (and not fewer columns to go by)
    if (M <= kGemvRows && (N > kGemvColumns || M <= N)) {
        // row i of C = op(A)'s row i (x) times op(B): y = op(B)^T x
        for (int i = 0; i < M; ++i) {
            const T* x = trans_a ? A + i : A + std::ptrdiff_t(i) * lda;  // A (K, M) or (M, K)
            const int incx = trans_a ? lda : 1;
            T* y = C + std::ptrdiff_t(i) * ldc;
            zero(y, N, 1);
            if (trans_b)  // B (N, K): column-major (K x N), read as its transpose
                blas_gemv('T', K, N, alpha, B, ldb, x, incx, beta, y, 1);
            else  // B (K, N): column-major (N x K) = op(B)^T
                blas_gemv('N', N, K, alpha, B, ldb, x, incx, beta, y, 1);
        }
    } else {  // column j of C = op(A) times op(B)'s column j (x): y = op(A) x
        for (int j = 0; j < N; ++j) {
            const T* x = trans_b ? B + std::ptrdiff_t(j) * ldb : B + j;  // B (N, K) or (K, N)
            const int incx = trans_b ? 1 : ldb;
            T* y = C + j;
            zero(y, M, ldc);
            if (trans_a)  // A (K, M): column-major (M x K) = op(A)
                blas_gemv('N', M, K, alpha, A, lda, x, incx, beta, y, ldc);
            else  // A (M, K): column-major (K x M), read as its transpose
                blas_gemv('T', K, M, alpha, A, lda, x, incx, beta, y, ldc);
        }
    }
    return true;
}

// One call, in the own kernel or the BLAS (on blas_threads threads) as is_own says.
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same call with the
// operands (and their transposes) swapped.
template <class T>
void gemm_one(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
              const T* B, int ldb, T beta, T* C, int ldc, int blas_threads) {
    if (is_own<T>(M, N, K, blas_threads))
        return own_gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (gemv_product<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
    prime_blas<T>();
    blas_gemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

// Products of at least kSplitWork multiply-adds run in parts, one per thread of pydl's team,
// each a single-threaded call on a band of C's columns (or of its rows, when it has more
// rows than columns): whole blocks of kBlock spread evenly over the bands, the partial
// block last, at least one block per band. That needs SciPy's BLAS on one thread
// (pin_blas_threads): pydl's parallel work then all runs on one pool of threads, which sleep
// when idle, where OpenBLAS's own workers keep spinning after each call and fight the next
// OpenMP kernel for the cores, and on a busy machine wait out a time slice at every call
// (bench/README.md, "One pool of threads"). Below 2^20 cutting was slower.
constexpr std::int64_t kSplitWork = std::int64_t(1) << 20;
constexpr int kBlock = 16;

// Bands being computed, over all calling threads. At most band_limit: pydl's team size, so
// that Python threads that multiply at once do not each bring a team (a later one computes
// the same bands one after another on its own thread), and half of OpenBLAS's MAX_THREADS:
// OpenBLAS keeps a table of 2 x MAX_THREADS buffers, one per call in progress and one per
// worker of its own; past it, it warns ("precompiled NUM_THREADS exceeded") and may crash.
std::atomic<int> g_bands{0};
std::atomic<long long> g_bands_run{0};  // bands computed so far (gemm_bands_run, for tests)

int band_limit(int team) {
    return g_blas_max_threads > 0 ? std::min(team, g_blas_max_threads / 2) : team;
}

struct Split {
    int parts;        // 1: one call
    bool by_columns;  // bands of C's columns, else of its rows
    int limit;        // band_limit of the team the split was made for
};

// blas: blas_threads(), read once by the caller.
Split split_of(int M, int N, int K, int blas) {
    const int team = max_threads();
    if (team < 2 || std::int64_t(M) * N * K < kSplitWork || blas != 1) return {1, false, 0};
    const bool by_columns = N >= M;
    const int limit = band_limit(team);
    const int parts = std::min(limit, (by_columns ? N : M) / kBlock);
    return {parts >= 2 ? parts : 1, by_columns, limit};
}

// Band id of `parts` over [0, n): [begin, end).
std::pair<int, int> band(int n, int parts, int id) {
    const std::int64_t blocks = (std::int64_t(n) + kBlock - 1) / kBlock;
    const int begin = int(blocks * id / parts) * kBlock;
    const int end = int(std::min<std::int64_t>(n, blocks * (id + 1) / parts * kBlock));
    return {begin, end};
}

// Band `part` of a split product: its first column (of C's columns) or row, and its M x N.
struct Band {
    std::ptrdiff_t begin;
    int M, N;
};
Band band_of(const Split& split, int M, int N, int part) {
    const auto [b, e] = band(split.by_columns ? N : M, split.parts, part);
    return split.by_columns ? Band{b, M, e - b} : Band{b, e - b, N};
}

// Holds `parts` of `limit` (band_limit) while it lives, if they are free (ok).
class BandReservation {
    int parts_;

public:
    BandReservation(int parts, int limit) : parts_(parts) {
        if (g_bands.fetch_add(parts) + parts > limit) {
            g_bands.fetch_sub(parts);
            parts_ = 0;
        }
    }
    ~BandReservation() {
        if (parts_ > 0) g_bands.fetch_sub(parts_);
    }
    bool ok() const { return parts_ > 0; }
    BandReservation(const BandReservation&) = delete;
    BandReservation& operator=(const BandReservation&) = delete;
};

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc) {
    const int blas = blas_threads();
    const Split split = split_of(M, N, K, blas);
    if (split.parts == 1)  // no shared counter touched for a product that runs whole
        return gemm_one<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, blas);
    auto run_band = [&](int part) {
        const Band s = band_of(split, M, N, part);
        const std::ptrdiff_t b = s.begin;
        if (split.by_columns)  // op(B)'s columns from b: B's rows when transposed
            gemm_one<T>(trans_a, trans_b, s.M, s.N, K, alpha, A, lda,
                        B + (trans_b ? b * ldb : b), ldb, beta, C + b, ldc, 1);
        else  // op(A)'s rows from b: A's columns when transposed
            gemm_one<T>(trans_a, trans_b, s.M, s.N, K, alpha, A + (trans_a ? b : b * lda), lda,
                        B, ldb, beta, C + b * ldc, ldc, 1);
        g_bands_run.fetch_add(1, std::memory_order_relaxed);
    };
    const BandReservation reserved(split.parts, split.limit);
    if (!reserved.ok()) {
        // Other calling threads' bands hold the team's count: the same bands, one after
        // another on this thread, so that C's bits depend on the split (the thread count)
        // alone, not on what else runs (a whole call can round differently).
        for (int part = 0; part < split.parts; ++part) run_band(part);
        return;
    }
    in_team(split.parts, [&](int nt, int id) {  // (a team may come up short: nt < parts)
        for (int part = id; part < split.parts; part += nt) run_band(part);
    });
}
template void gemm<float>(bool, bool, int, int, int, float, const float*, int, const float*, int,
                          float, float*, int);
template void gemm<double>(bool, bool, int, int, int, double, const double*, int, const double*,
                           int, double, double*, int);

template <class T>
bool gemm_runs_own(int M, int N, int K) {
    const int blas = blas_threads();
    const Split split = split_of(M, N, K, blas);
    if (split.parts == 1) return is_own<T>(M, N, K, blas);
    const Band s = band_of(split, M, N, 0);
    return is_own<T>(s.M, s.N, K, 1);
}
template bool gemm_runs_own<float>(int, int, int);
template bool gemm_runs_own<double>(int, int, int);

long long gemm_bands_run() { return g_bands_run.load(); }

int hold_gemm_bands(int n) {
    int now = g_bands.fetch_add(n) + n;
    if (now < 0) {  // more released than held: back to none (a negative count would let
        g_bands.fetch_add(-now);  // products take more bands than OpenBLAS allows)
        now = 0;
    }
    return now;
}

const std::string& blas_library() { return g_blas_path; }

int gemm_parts(int M, int N, int K) { return split_of(M, N, K, blas_threads()).parts; }

}  // namespace pydl
