// Inverted dropout with a counter-based generator: the mask bit of element k is a pure
// function of (seed, step, layer, k), so it is the same for any thread count, and
// backward regenerates it instead of storing it.
// count = number of elements of the (m, n) activation, flattened row-major.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels.hpp"

namespace pydl {
namespace {

// splitmix64's finalizer, on one uint64_t or on a GCC vector of them (lane by lane)
template <class U>
inline U mix64(U x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

inline uint64_t stream_key(uint64_t seed, uint64_t step, uint64_t layer) {
    return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ step) + layer * 0x632be59bd9b4e019ULL);
}

// U[0,1) = (x >> 11) * 2^-53 with 53 random bits; kept when u < keep_prob, i.e. when the
// integer x >> 11 is below threshold = ceil(keep_prob * 2^53) (exact, no int->float convert).
inline uint64_t keep_threshold(double keep_prob) {
    return uint64_t(std::ceil(keep_prob * 0x1.0p53));
}

// Element k's counter is h = k * kGolden + kOffset (apply_scalar advances it by kGolden per
// element: the same value modulo 2^64, so the same bits).
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kOffset = 0x2545f4914f6cdd1dULL;

// Whether the element of counter h is kept (h: a uint64_t, or a vector of them: -1/0 per lane).
template <class U>
inline auto kept(uint64_t key, U h, uint64_t threshold) {
    return (mix64(key ^ h) >> 11) < threshold;
}

// out[k] = kept(key, k * kGolden + kOffset) ? A[k] * scale : +0 for k in [k0, k1), one
// element at a time without a branch (a kept/dropped branch mispredicts on every few
// elements): the scaled value's bits masked to all zeros where dropped, as apply8 does.
template <class T>
inline void apply_scalar(T* out, const T* A, uint64_t key, std::ptrdiff_t k0, std::ptrdiff_t k1,
                         uint64_t threshold, T scale) {
    using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
    uint64_t h = uint64_t(k0) * kGolden + kOffset;
    for (std::ptrdiff_t k = k0; k < k1; ++k, h += kGolden) {
        const Bits mask = Bits(0) - Bits(kept(key, h, threshold));
        const T a = A[k] * scale;
        Bits bits;
        std::memcpy(&bits, &a, sizeof bits);
        bits &= mask;
        std::memcpy(out + k, &bits, sizeof bits);
    }
}

#if defined(__GNUC__) && defined(__AVX512DQ__)
// Eight elements at a time in GCC/Clang vector types, where AVX-512DQ multiplies 64-bit lanes
// in one instruction: kept() on a vector of counters, so the same bits. Written out because
// GCC 12 vectorizes neither form of the plain loop: the 32-bit data under a 64-bit condition
// has "no vectype" (5.8 ns per element on one core with the branch, as much as a
// 32 x 256 x 256 product for a 256-unit layer). Without AVX-512DQ each 64-bit lane multiply
// takes several instructions, and apply_scalar is faster: on an AVX2 AMD EPYC (Zen 1) core,
// 2.45 ns per float against 3.87 ns for this vector form (a C++ harness, the same bits).
typedef uint64_t U64x8 __attribute__((vector_size(64)));

// out[j] = kept(key, (k + j) * kGolden + kOffset) ? A[j] * scale : 0 for j < 8.
template <class T>
inline void apply8(T* out, const T* A, uint64_t key, std::ptrdiff_t k, uint64_t threshold,
                   T scale) {
    typedef T V __attribute__((vector_size(8 * sizeof(T))));
    using Int = std::conditional_t<sizeof(T) == 8, int64_t, int32_t>;  // T's width
    typedef Int M __attribute__((vector_size(8 * sizeof(T))));
    const U64x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const U64x8 h = (U64x8{} + uint64_t(k) + lane) * kGolden + kOffset;
    const M keep_mask = __builtin_convertvector(kept(key, h, threshold), M);
    V a;
    std::memcpy(&a, A, sizeof a);
    a *= scale;
    M bits;
    std::memcpy(&bits, &a, sizeof bits);
    bits &= keep_mask;  // -1 where kept, 0 (+0.0) where dropped
    std::memcpy(out, &bits, sizeof bits);
}
#endif

}  // namespace

// D = U[0,1) < keep_prob;  out = A * D / keep_prob.   out, A (count,); out may alias A.
template <class T>
void dropout_forward(T* out, const T* A, std::ptrdiff_t count, uint64_t seed, uint64_t step,
                     uint64_t layer, double keep_prob) {
    const uint64_t key = stream_key(seed, step, layer);
    const T scale = T(1.0 / keep_prob);
    const uint64_t threshold = keep_threshold(keep_prob);
    parallel_for(count, worth_parallel(count, 4),
                 [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
                     std::ptrdiff_t k = k0;
#if defined(__GNUC__) && defined(__AVX512DQ__)
                     for (; k + 8 <= k1; k += 8) apply8(out + k, A + k, key, k, threshold, scale);
#endif
                     apply_scalar(out, A, key, k, k1, threshold, scale);
                 });
}

// dA = dout * D / keep_prob, with D regenerated from the same key.  dA may alias dout.
template <class T>
void dropout_backward(T* dA, const T* dout, std::ptrdiff_t count, uint64_t seed, uint64_t step,
                      uint64_t layer, double keep_prob) {
    dropout_forward(dA, dout, count, seed, step, layer, keep_prob);
}

#define PYDL_INSTANTIATE(T)                                                                       \
    template void dropout_forward<T>(T*, const T*, std::ptrdiff_t, uint64_t, uint64_t, uint64_t,  \
                                     double);                                                     \
    template void dropout_backward<T>(T*, const T*, std::ptrdiff_t, uint64_t, uint64_t, uint64_t, \
                                      double);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
