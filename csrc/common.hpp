// Shared helpers for pydl kernels.
// m = batch size, n_in = input features, n_out = output features, n = features of a
// layer, C = classes. Every matrix is row-major (C order); weights are (n_out, n_in).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef PYDL_HAVE_OPENMP
#include <omp.h>
#endif

namespace pydl {

// Below this many elements an elementwise kernel stays on one thread: the cost of
// waking a team (and of fighting BLAS workers that still spin after a GEMM) is
// larger than the work.
constexpr std::ptrdiff_t kParallelMinElements = 1 << 16;


enum class Activation : int { identity = 0, relu = 1, leaky_relu = 2, tanh = 3, sigmoid = 4 };

// a = g(z), with the activation a compile-time constant so loops stay branch-free.
template <Activation act, class T>
inline T activate(T z, T alpha) {
    // relu: written so that NaN propagates (z > 0 ? z : 0 turned NaN into 0 and hid a
    // diverged network from the loss); as np.maximum(z, 0) and torch.relu.
    if constexpr (act == Activation::relu)
        return z < T(0) ? T(0) : z;
    else if constexpr (act == Activation::leaky_relu)
        return z > T(0) ? z : alpha * z;
    else if constexpr (act == Activation::tanh)
        return std::tanh(z);
    else if constexpr (act == Activation::sigmoid)
        return T(1) / (T(1) + std::exp(-z));
    else
        return z;
}

// g'(z) written in terms of a = g(z), so backward never needs Z.
// leaky_relu needs alpha > 0 so that a > 0 exactly when z > 0.
template <Activation act, class T>
inline T activation_grad(T a, T alpha) {
    if constexpr (act == Activation::relu)
        return a > T(0) ? T(1) : T(0);
    else if constexpr (act == Activation::leaky_relu)
        return a > T(0) ? T(1) : alpha;
    else if constexpr (act == Activation::tanh)
        return T(1) - a * a;
    else if constexpr (act == Activation::sigmoid)
        return a * (T(1) - a);
    else
        return T(1);
}

// exp(x) that vectorizes (libm's expf does not without -ffast-math). float: Cody-Waite
// reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (the Cephes expf
// coefficients, ~1 ulp) and 2^n put into the exponent bits; x is clamped to the normal
// range, NaN stays NaN. double: std::exp (gradient checks want the last bits).
inline float exp_vec(float x0) {
    float x = x0 > -87.33654f ? x0 : -87.33654f;  // also maps NaN here; restored below
    x = x < 88.37626f ? x : 88.37626f;
    const float n = std::floor(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const float scale = __builtin_bit_cast(float, (int32_t(n) + 127) << 23);
    const float e = x0 < -87.33654f ? 0.0f : y * scale;  // underflow to 0 like expf
    return x0 != x0 ? x0 : e;
}

inline double exp_vec(double x) { return std::exp(x); }

// max_j z[j] over j < n (n >= 1), vectorized.
template <class T>
inline T row_max(const T* z, int n) {
    T zmax = z[0];
#pragma omp simd reduction(max : zmax)
    for (int j = 1; j < n; ++j) zmax = z[j] > zmax ? z[j] : zmax;
    return zmax;
}

// out[j] = exp_vec(z[j] - shift) for j < n; returns their sum, accumulated in 16
// independent lanes so that both loops vectorize without reassociating a reduction.
template <class T>
inline double exp_shifted_sum(T* __restrict out, const T* __restrict z, int n, T shift) {
    for (int j = 0; j < n; ++j) out[j] = exp_vec(z[j] - shift);
    T lanes[16] = {};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; ++l) lanes[l] += out[j + l];
    double sum = 0.0;
    for (; j < n; ++j) sum += out[j];
    for (int l = 0; l < 16; ++l) sum += lanes[l];
    return sum;
}

template <Activation A>
using ActTag = std::integral_constant<Activation, A>;

// Calls f(ActTag<act>{}) so that the body is compiled once per activation.
template <class F>
inline void with_activation(Activation act, F&& f) {
    switch (act) {
        case Activation::relu:
            f(ActTag<Activation::relu>{});
            break;
        case Activation::leaky_relu:
            f(ActTag<Activation::leaky_relu>{});
            break;
        case Activation::tanh:
            f(ActTag<Activation::tanh>{});
            break;
        case Activation::sigmoid:
            f(ActTag<Activation::sigmoid>{});
            break;
        default:
            f(ActTag<Activation::identity>{});
            break;
    }
}

// Kernel bodies handed to parallel_for are kept out of line: GCC with -fopenmp vectorizes
// the copy outlined into the parallel region but left the copy inlined into the serial
// path scalar (Adam ran at 2 ns/element instead of 0.2).
#define PYDL_NOINLINE __attribute__((noinline))

// Runs body(begin, end) over [0, n) split into one contiguous range per thread when
// `parallel` (and OpenMP is on with more than one thread), else as one serial call.
// The serial path stays outside any OpenMP construct: an `omp parallel ... if(false)`
// region still outlines the loop and blocks its vectorization (10x slower for small
// arrays). Ranges are rounded to multiples of 16 items.
template <class F>
inline void parallel_for(std::ptrdiff_t n, bool parallel, F&& body) {
#ifdef PYDL_HAVE_OPENMP
    if (parallel && n > 1 && omp_get_max_threads() > 1) {
#pragma omp parallel
        {
            const std::ptrdiff_t nt = omp_get_num_threads(), id = omp_get_thread_num();
            std::ptrdiff_t chunk = (n + nt - 1) / nt;
            if (chunk > 16) chunk = (chunk + 15) & ~std::ptrdiff_t(15);
            const std::ptrdiff_t b = id * chunk < n ? id * chunk : n;
            const std::ptrdiff_t e = b + chunk < n ? b + chunk : n;
            if (b < e) body(b, e);
        }
        return;
    }
#endif
    (void)parallel;
    if (n > 0) body(std::ptrdiff_t(0), n);
}

// Sums over the batch (per-column reductions: db, BatchNorm statistics) that do not depend
// on the number of threads, and an elementwise pass that uses them, in one parallel region.
// Rows are cut into a fixed number of chunks (a function of m only); a tile is a row chunk
// times at most kReduceBlock columns (4 KB of float per row, so each row segment is one
// sequential stream for the prefetcher: whole columns at a 16 KB stride defeated it). Each
// tile is reduced by one thread, in row order, into its own partial sums; the partials are
// added in chunk order. A column's sum depends on (m, n) only: same bits for 1 or N threads.
// (Column panels that one thread takes through both passes, so that the second pass finds
// them in cache, plus non-temporal stores for the output, measured 1.00-1.03x this in one
// process: bench/ab_builds.py.)
constexpr int kReduceBlock = 1024;
constexpr int kReduceRowsPerChunk = 128;
constexpr int kReduceMaxChunks = 16;

inline void team_barrier() {
#ifdef PYDL_HAVE_OPENMP
#pragma omp barrier
#endif
}

//   tile(i0, i1, j0, w, acc): add the K sums of rows [i0, i1), columns [j0, j0 + w) into
//     acc[k * n + j - j0] (zero on entry);
//   finish(sums): once, with the totals in sums[k * n + j] (K * n doubles);
//   rows(i0, i1): then the elementwise pass over rows [i0, i1), or NoRows{} for none.
struct NoRows {
    void operator()(int, int) const {}
};

template <int K, class Tile, class Finish, class Rows>
inline void column_passes(int m, int n, bool parallel, double* sums, Tile&& tile, Finish&& finish,
                          Rows&& rows) {
    // (64-bit index arithmetic throughout: m and n may each be up to INT_MAX)
    std::ptrdiff_t nchunks = (std::ptrdiff_t(m) + kReduceRowsPerChunk - 1) / kReduceRowsPerChunk;
    nchunks = nchunks < 1 ? 1 : (nchunks > kReduceMaxChunks ? kReduceMaxChunks : nchunks);
    const std::ptrdiff_t chunk_rows = (std::ptrdiff_t(m) + nchunks - 1) / nchunks;
    const std::ptrdiff_t nblocks = (std::ptrdiff_t(n) + kReduceBlock - 1) / kReduceBlock;
    const std::ptrdiff_t stride = std::ptrdiff_t(K) * n;  // one chunk's partials
    std::vector<double> part(nchunks > 1 ? std::size_t(nchunks) * std::size_t(stride) : 0);
    double* const base = nchunks > 1 ? part.data() : sums;
    constexpr bool has_rows = !std::is_same_v<std::decay_t<Rows>, NoRows>;
    auto body = [&](int nt, int id) PYDL_NOINLINE {
        const std::ptrdiff_t ntiles = nchunks * nblocks;  // chunk-major: contiguous rows
        const std::ptrdiff_t t0 = ntiles * id / nt, t1 = ntiles * (id + 1) / nt;
        for (std::ptrdiff_t t = t0; t < t1; ++t) {
            const std::ptrdiff_t c = t / nblocks, j0 = (t % nblocks) * kReduceBlock;
            const std::ptrdiff_t i0 = c * chunk_rows;
            const std::ptrdiff_t i1 = i0 + chunk_rows < m ? i0 + chunk_rows : m;
            const int w = int(n - j0 < kReduceBlock ? n - j0 : kReduceBlock);
            double* acc = base + c * stride + j0;
            for (int k = 0; k < K; ++k)
                for (int j = 0; j < w; ++j) acc[std::ptrdiff_t(k) * n + j] = 0.0;
            if (i0 < i1) tile(int(i0), int(i1), int(j0), w, acc);
        }
        // Barriers only inside a team: the serial path may run inside a caller's own
        // parallel region, where an orphaned barrier would wait for that whole team.
        if (nt > 1) team_barrier();
        if (id == 0) {
            if (nchunks > 1)
                for (std::ptrdiff_t k = 0; k < stride; ++k) {
                    double s = 0.0;
                    for (int c = 0; c < nchunks; ++c) s += part[std::size_t(c) * stride + k];
                    sums[k] = s;
                }
            finish(static_cast<const double*>(sums));
        }
        if constexpr (has_rows) {
            if (nt > 1) team_barrier();
            const int r0 = int(std::ptrdiff_t(m) * id / nt);
            const int r1 = int(std::ptrdiff_t(m) * (id + 1) / nt);
            if (r0 < r1) rows(r0, r1);
        }
    };
#ifdef PYDL_HAVE_OPENMP
    if (parallel && omp_get_max_threads() > 1) {
#pragma omp parallel
        body(omp_get_num_threads(), omp_get_thread_num());
        return;
    }
#endif
    (void)parallel;
    body(1, 0);
}

// column_passes without the elementwise pass: out[k * n + j] = the K column sums.
template <int K, class Tile>
inline void column_reduce(int m, int n, bool parallel, double* out, Tile&& tile) {
    const bool one_tile = m <= kReduceRowsPerChunk && n <= kReduceBlock;
    column_passes<K>(
        m, n, parallel && !one_tile, out, tile, [](const double*) {}, NoRows{});
}

inline int max_threads() {
#ifdef PYDL_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace pydl
