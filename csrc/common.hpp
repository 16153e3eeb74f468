// Shared helpers for pydl kernels.
// m = batch size, n_in = input features, n_out = output features, n = features of a
// layer, C = classes. Every matrix is row-major (C order); weights are (n_out, n_in).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef PYDL_HAVE_OPENMP
#include <omp.h>
#endif

namespace pydl {

// Below this many elements an elementwise kernel stays on one thread: the cost of
// waking a team (and of fighting BLAS workers that still spin after a GEMM) is
// larger than the work.
constexpr std::ptrdiff_t kParallelMinElements = 1 << 16;

// Column block width for kernels that reduce over the batch (db, BatchNorm
// statistics): each thread owns whole columns, so every sum is taken in row order
// and the result does not depend on the number of threads.
constexpr int kColumnBlock = 64;

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

inline int max_threads() {
#ifdef PYDL_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace pydl
