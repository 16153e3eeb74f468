// Output losses computed from logits, cost and gradient in one pass.
// m = batch size, C = classes, count = m * outputs. Row-major.
#include <algorithm>
#include <cmath>

#include "kernels.hpp"

namespace pydl {
namespace {

// Sum of body(lo, hi) over parallel_for's ranges, added in thread (= range) order: the cost
// is then the same on every call for a given thread count. (An `omp atomic` += adds in the
// order the threads finish, which changed the last bits from call to call with > 2 threads.)
template <class F>
double ordered_sum(std::ptrdiff_t n, bool parallel, F&& body) {
#ifdef PYDL_HAVE_OPENMP
    const int threads = max_threads();  // read once: part has room for this many
    if (parallel && n > 1 && threads > 1) {
        double* const part = scratch<double>(Scratch::parts, std::size_t(threads));
        std::fill(part, part + threads, 0.0);
        in_team(threads, [&](int nt, int id) PYDL_NOINLINE {
            const auto [lo, hi] = thread_range(n, nt, id);
            if (lo < hi) part[id] = body(lo, hi);
        });
        double sum = 0.0;
        for (int t = 0; t < threads; ++t) sum += part[t];
        return sum;
    }
#endif
    (void)parallel;
    return n > 0 ? body(std::ptrdiff_t(0), n) : 0.0;
}

}  // namespace

// Softmax cross-entropy from logits Z (m, C):
//   lse_i = log sum_j exp(Z[i,j])   (computed as max + log sum exp(Z - max): stable)
//   J = (1/m) sum_i sum_j Y[i,j] (lse_i - Z[i,j])
//   dZ = (softmax(Z) - Y) / m       (m, C), or null for the cost only
// Labels are either integer ids `labels` (m,) in [0, C) or one-hot/soft rows `Y` (m, C)
// (exactly one is non-null). A label outside [0, C) is counted in *bad_labels, its row
// skipped, and never used as an index.
template <class T>
double softmax_cross_entropy(T* dZ, const T* Z, const int64_t* labels, const T* Y, int m, int C,
                             int64_t* bad_labels) {
    int64_t bad = 0;
    const T inv_m = T(1) / T(m);
    const std::ptrdiff_t total = std::ptrdiff_t(m) * C;
    const bool parallel = worth_parallel(total, 1);
    const double cost =
        ordered_sum(m, parallel, [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
            double cost_local = 0.0;
            int64_t bad_local = 0;
            for (int i = int(lo); i < int(hi); ++i) {
                const T* z = Z + std::ptrdiff_t(i) * C;
                T* dz = dZ ? dZ + std::ptrdiff_t(i) * C : nullptr;
                int64_t label = -1;
                if (labels != nullptr) {
                    label = labels[i];
                    if (label < 0 || label >= C) {
                        ++bad_local;
                        if (dz) std::fill(dz, dz + C, T(0));
                        continue;
                    }
                }
                const T zmax = row_max(z, C);
                // without dZ, the exponentials go to the first row of scratch space on
                // the stack in chunks
                double sum = 0.0;
                if (dz) {
                    sum = exp_shifted_sum(dz, z, C, zmax);
                } else {
                    T tmp[256];
                    for (int j0 = 0; j0 < C; j0 += 256)
                        sum += exp_shifted_sum(tmp, z + j0, std::min(256, C - j0), zmax);
                }
                const double lse = double(zmax) + std::log(sum);
                if (labels != nullptr) {
                    cost_local += lse - double(z[label]);
                } else {
                    const T* y = Y + std::ptrdiff_t(i) * C;
                    double row = 0.0;
                    for (int j = 0; j < C; ++j)
                        if (y[j] != T(0)) row += double(y[j]) * (lse - double(z[j]));
                    cost_local += row;
                }
                if (dz) {
                    const T scale = T(1.0 / sum) * inv_m;
                    if (labels != nullptr) {
#pragma omp simd
                        for (int j = 0; j < C; ++j) dz[j] *= scale;
                        dz[label] -= inv_m;
                    } else {
                        const T* y = Y + std::ptrdiff_t(i) * C;
#pragma omp simd
                        for (int j = 0; j < C; ++j) dz[j] = dz[j] * scale - y[j] * inv_m;
                    }
                }
            }
#pragma omp atomic
            bad += bad_local;
            return cost_local;
        });
    *bad_labels = bad;
    return cost / m;
}

// P = softmax(Z) row-wise, stable.   P, Z (m, C); P may alias Z.
template <class T>
void softmax(T* P, const T* Z, int m, int C) {
    const std::ptrdiff_t total = std::ptrdiff_t(m) * C;
    parallel_for(m, worth_parallel(total, 1),
                 [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                     for (int i = int(lo); i < int(hi); ++i) {
                         const T* z = Z + std::ptrdiff_t(i) * C;
                         T* p = P + std::ptrdiff_t(i) * C;
                         const T zmax = row_max(z, C);
                         const double sum = exp_shifted_sum(p, z, C, zmax);
                         const T inv = T(1.0 / sum);
#pragma omp simd
                         for (int j = 0; j < C; ++j) p[j] *= inv;
                     }
                 });
}

// Sigmoid binary cross-entropy from logits z with targets y in [0, 1] (count elements,
// m examples):
//   J = (1/m) sum [max(z,0) - z*y + log(1 + exp(-|z|))]
//   dZ = (sigmoid(z) - y) / m, or null for the cost only
template <class T>
double sigmoid_cross_entropy(T* dZ, const T* Z, const T* Y, std::ptrdiff_t count, int m) {
    const T inv_m = T(1) / T(m);
    const bool parallel = worth_parallel(count, 4);
    const double cost =
        ordered_sum(count, parallel, [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
            double local = 0.0;
            for (std::ptrdiff_t k = k0; k < k1; ++k) {
                const T z = Z[k], y = Y[k];
                const T e = std::exp(-std::fabs(z));
                local += double(std::max(z, T(0)) - z * y) + std::log1p(double(e));
                if (dZ) {
                    const T s = z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
                    dZ[k] = (s - y) * inv_m;
                }
            }
            return local;
        });
    return cost / m;
}

// Mean squared error over all count elements:
//   J = (1/count) sum (Yhat - Y)^2,  dZ = 2 (Yhat - Y) / count, or null
template <class T>
double mean_squared_error(T* dZ, const T* Yhat, const T* Y, std::ptrdiff_t count) {
    const T scale = T(2) / T(count);
    const bool parallel = worth_parallel(count, 1);
    const double cost =
        ordered_sum(count, parallel, [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
            // an explicit fused multiply-add: left to contraction, the compiler may fuse
            // one copy of this loop and not the other after unswitching it on dZ (GCC 12
            // on an Intel AVX-512 target did), and the cost with the gradient would
            // differ from the cost without it in the last bit. kLanes running sums (element
            // k into sum k mod kLanes from k0), added in a fixed order at the end: one sum
            // was a chain of dependent multiply-adds, 2.3x NumPy's time at 128 x 100.
            constexpr int kLanes = 8;
            double acc[kLanes] = {};
            std::ptrdiff_t k = k0;
            for (; k1 - k >= kLanes; k += kLanes) {
                for (int l = 0; l < kLanes; ++l) {
                    const T d = Yhat[k + l] - Y[k + l];
                    acc[l] = std::fma(double(d), double(d), acc[l]);
                    if (dZ) dZ[k + l] = scale * d;
                }
            }
            for (int l = 0; k < k1; ++k, ++l) {
                const T d = Yhat[k] - Y[k];
                acc[l] = std::fma(double(d), double(d), acc[l]);
                if (dZ) dZ[k] = scale * d;
            }
            return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                   ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        });
    return cost / double(count);
}

#define PYDL_INSTANTIATE(T)                                                                    \
    template double softmax_cross_entropy<T>(T*, const T*, const int64_t*, const T*, int, int, \
                                             int64_t*);                                        \
    template void softmax<T>(T*, const T*, int, int);                                          \
    template double sigmoid_cross_entropy<T>(T*, const T*, const T*, std::ptrdiff_t, int);     \
    template double mean_squared_error<T>(T*, const T*, const T*, std::ptrdiff_t);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
