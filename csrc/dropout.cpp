// Inverted dropout with a counter-based generator: the mask bit of element k is a pure
// function of (seed, step, layer, k), so it is the same for any thread count, and
// backward regenerates it instead of storing it.
// count = number of elements of the (m, n) activation, flattened row-major.
#include <cmath>

#include "kernels.hpp"

namespace pydl {
namespace {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finalizer
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

inline bool keep(uint64_t key, std::ptrdiff_t k, uint64_t threshold) {
    const uint64_t x = mix64(key ^ (uint64_t(k) * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL));
    return (x >> 11) < threshold;
}

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
#pragma omp simd
                     for (std::ptrdiff_t k = k0; k < k1; ++k)
                         out[k] = keep(key, k, threshold) ? A[k] * scale : T(0);
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
