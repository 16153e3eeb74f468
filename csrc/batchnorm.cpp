// Batch normalization on Z, before the activation, fused with the activation.
// m = batch size, n = features. Row-major (m, n) activations, (n,) per-feature vectors.
// Training forward and backward are two passes each (common.hpp): per-feature sums whose
// bits do not depend on the thread count, then an elementwise pass over the rows. Large
// batches go one column panel at a time (panel_passes, split_passes), so that the second
// pass finds at least part of the panel in cache, and a kernel whose arrays are too large
// for the cache writes its output with non-temporal stores.
// Memory-bound: xhat is never stored.
#include <algorithm>
#include <cmath>

#include "kernels.hpp"

namespace pydl {

namespace {

// The sums go in groups of rows counted from the tile's first row: each group is summed in
// T (float: eight lanes to a vector and no conversions, 1.3-1.5x the pass in double on an
// AVX2 core), and the group's sum is added to the tile's double accumulator. The grouping
// depends only on the tile, never on the thread count. The forward takes groups of 8 rows
// of Z; the backward groups of 4 rows of dout and Z (8 rows of two arrays are 16 streams
// 16 KB apart at 4096 features, and at 1024 x 4096 on an AVX2 EPYC groups of 4 made the
// backward 1.11-1.18x faster from memory, the same in cache). A float group can overflow
// (|Z - Z[0]| > 1.8e19) or, when the shift is far from the batch mean, lose digits;
// finish sees both in the totals and recomputes that column exactly in double
// (exact_moments, exact_backward_sums), which costs a pass over the column's rows.
constexpr int kMomentRows = 8;
constexpr int kBackwardRows = 4;

// fn(i, rows) for the groups of G rows of [i0, i1): rows is G as a constant for the full
// groups (so the compiler unrolls them), an int for the last, shorter one.
template <int G, class Fn>
inline void for_groups(int i0, int i1, Fn&& fn) {
    int i = i0;
    for (; i1 - i >= G; i += G) fn(i, std::integral_constant<int, G>{});
    if (i < i1) fn(i, i1 - i);
}

// s1[j] += sum_i (Z[i,j] - Z[0,j]), s2[j] += sum_i (Z[i,j] - Z[0,j])^2 over rows [i0, i1),
// columns [j0, j0 + w); s1 = acc, s2 = acc + stride. Shifted by the first row of the batch so
// that a large mean does not cancel the variance away.
template <class T>
PYDL_NOINLINE void moments_tile(const T* Z, int n, int i0, int i1, int j0, int w,
                                double* __restrict acc, std::ptrdiff_t stride) {
    const T* __restrict z0 = Z + j0;
    double* __restrict s1 = acc;
    double* __restrict s2 = acc + stride;
    for_groups<kMomentRows>(i0, i1, [&](int i, auto rows) {
        const T* __restrict a = Z + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
        for (int j = 0; j < w; ++j) {
            const T s = z0[j];
            T f1 = T(0), f2 = T(0);
            for (int r = 0; r < rows; ++r) {
                const T d = a[std::ptrdiff_t(r) * n + j] - s;
                f1 += d;
                f2 += d * d;
            }
            s1[j] += double(f1);
            s2[j] += double(f2);
        }
    });
}

// Column j's mean and biased variance over its m rows, in double and two passes.
template <class T>
void exact_moments(const T* Z, int m, int n, int j, double& mu, double& var) {
    const T* z = Z + j;
    double s = 0.0;
    for (std::ptrdiff_t i = 0; i < m; ++i) s += double(z[i * n]);
    mu = s / m;
    double q = 0.0;
    for (std::ptrdiff_t i = 0; i < m; ++i) {
        const double d = double(z[i * n]) - mu;
        q += d * d;
    }
    var = q / m;
}

// Whether the moments summed in T groups hold their digits: finite, and the shift (the
// first row) within 4 standard deviations of the mean (d1 = mean - shift). The groups' sums
// of squares round relative to var + d1^2, so this bounds their error by a few float
// roundings of var. Always true for double, whose groups are as exact as the totals.
template <class T>
inline bool grouped_moments_hold(double d1, double var) {
    if constexpr (sizeof(T) >= sizeof(double)) return true;
    return std::isfinite(d1) && std::isfinite(var) && d1 * d1 <= 16.0 * var;
}

// sb[j] += sum_i g, sg[j] += sum_i g * (Z - mean) with g = dout * g'(out), over rows
// [i0, i1), columns [j0, j0 + w); sb = acc, sg = acc + stride; dgamma = invstd * sg. xhat
// is not stored by the forward pass: reading Z again costs what reading a stored xhat
// would, and saves writing one (m, n) array.
template <Activation ACT, class T>
PYDL_NOINLINE void backward_sums_tile(const T* dout, const T* out, const T* Z, const T* mean,
                                      int n, int i0, int i1, int j0, int w, T alpha,
                                      double* __restrict acc, std::ptrdiff_t stride) {
    const T* __restrict mu = mean + j0;
    double* __restrict sb = acc;
    double* __restrict sg = acc + stride;
    for_groups<kBackwardRows>(i0, i1, [&](int i, auto rows) {
        const std::ptrdiff_t off = std::ptrdiff_t(i) * n + j0;
        const T *__restrict d = dout + off, *__restrict o = out + off, *__restrict z = Z + off;
#pragma omp simd
        for (int j = 0; j < w; ++j) {
            const T c = mu[j];
            T fb = T(0), fg = T(0);
            for (int r = 0; r < rows; ++r) {
                const std::ptrdiff_t q = std::ptrdiff_t(r) * n + j;
                const T g = d[q] * activation_grad<ACT>(o[q], alpha);
                fb += g;
                fg += g * (z[q] - c);
            }
            sb[j] += double(fb);
            sg[j] += double(fg);
        }
    });
}

// Column j's sb and sg as backward_sums_tile defines them, over its m rows in double (for
// a column whose T groups overflowed).
template <Activation ACT, class T>
void exact_backward_sums(const T* dout, const T* out, const T* Z, const T* mean, int m, int n,
                         int j, T alpha, double& sb, double& sg) {
    sb = sg = 0.0;
    for (std::ptrdiff_t q = j; q < std::ptrdiff_t(m) * n; q += n) {
        const double g = double(dout[q] * activation_grad<ACT>(out[q], alpha));
        sb += g;
        sg += g * (double(Z[q]) - double(mean[j]));
    }
}

// out = g(gamma * (Z - mean) * invstd + beta) over rows [r0, r1) (last rows first: the
// rows the sums read last are the ones still in cache), four rows to a block so that the
// per-feature vectors are loaded once per block, columns [j0, j0 + w); prefetches the next
// w_next columns of Z.
template <bool STREAM, Activation ACT, class T>
PYDL_NOINLINE void normalize_rows(T* out, const T* Z, const T* mean, const T* invstd,
                                  const T* gamma, const T* beta, int n, int r0, int r1, int j0,
                                  int w, int w_next, T alpha) {
    for_row_blocks_down(r0, r1, [&](int i, auto rows) {
        const std::ptrdiff_t off = std::ptrdiff_t(i) * n + j0;
        const T* z = Z + off;
        for (int r = 0; r < rows; ++r) prefetch_span(z + std::ptrdiff_t(r) * n + w, w_next);
        write_rows<STREAM>(out + off, n, rows, w,
                           [&](T* __restrict o, std::ptrdiff_t ldo, int c0, int len) {
            const T *__restrict zc = z + c0, *__restrict mu = mean + j0 + c0;
            const T *__restrict is = invstd + j0 + c0, *__restrict ga = gamma + j0 + c0;
            const T* __restrict be = beta + j0 + c0;
#pragma omp simd
            for (int j = 0; j < len; ++j) {
                const T mj = mu[j], ij = is[j], gj = ga[j], bj = be[j];
                for (int r = 0; r < rows; ++r) {
                    const T x = (zc[r * std::ptrdiff_t(n) + j] - mj) * ij;
                    o[r * ldo + j] = activate<ACT>(gj * x + bj, alpha);
                }
            }
        });
    });
}

// dZ = k * (m*g - dbeta - xhat*dgamma), g = dout * g'(out), xhat = (Z - mean)*invstd
// exactly as the forward pass computed it; rows [r0, r1) (last first, in blocks as above),
// columns [j0, j0 + w); prefetches the next w_next columns of dout and Z (and out for an
// activation). dZ may alias dout (each element is read before it is written). A block's
// rows are all read before any is written: with dZ a separate array at dout's offset in a
// 4 KB page (so that its rows fall in the L1 sets of the rows still to be read), writing
// each row between the reads made 256 x 1024 float 1.6x slower in cache on one thread of the
// Zen 1 VM (0.225 ms against 0.141). Both orders took 0.23 ms with dZ 64 bytes further on,
// and 0.11-0.12 ms in place (BatchNorm.backward's call) or 1 KB further on.
template <bool STREAM, Activation ACT, class T>
PYDL_NOINLINE void backward_rows(T* dZ, const T* dout, const T* out, const T* Z, const T* mean,
                                 const T* invstd, const T* k, const T* dbeta, const T* dgamma,
                                 int n, int m, int r0, int r1, int j0, int w, int w_next,
                                 T alpha) {
    const T mt = T(m);
    for_row_blocks_down(r0, r1, [&](int i, auto rows) {
        const std::ptrdiff_t off = std::ptrdiff_t(i) * n + j0;
        const T *d = dout + off, *o = out + off, *z = Z + off;
        for (int r = 0; r < rows; ++r) {
            const std::ptrdiff_t next = std::ptrdiff_t(r) * n + w;
            prefetch_span(d + next, w_next);
            prefetch_span(z + next, w_next);
            if constexpr (ACT != Activation::identity) prefetch_span(o + next, w_next);
        }
        write_rows<STREAM>(dZ + off, n, rows, w, [&](T* dz, std::ptrdiff_t ldz, int c0, int len) {
            const int q = j0 + c0;
#pragma omp simd
            for (int j = 0; j < len; ++j) {
                const T mj = mean[q + j], ij = invstd[q + j], kj = k[q + j];
                const T bj = dbeta[q + j], gj = dgamma[q + j];
                T v[decltype(rows)::value];
                for (int r = 0; r < rows; ++r) {
                    const std::ptrdiff_t e = r * std::ptrdiff_t(n) + c0 + j;
                    const T g = d[e] * activation_grad<ACT>(o[e], alpha);
                    const T xh = (z[e] - mj) * ij;
                    v[r] = kj * (mt * g - bj - xh * gj);
                }
                for (int r = 0; r < rows; ++r) dz[r * ldz + j] = v[r];
            }
        });
    });
}

// The two passes of a training kernel: panels for a large batch on several threads, else
// all columns at once (the same sums, bit for bit: see common.hpp). The output is written
// around the caches when the kernel's `footprint` bytes would not fit in them:
// rows(stream, r0, r1, j0, w, w_next) gets std::bool_constant<that>, and the pass is fenced.
template <class T, class Tile, class Finish, class Rows>
void two_passes(int m, int n, const T* out, double footprint, Tile&& tile, Finish&& finish,
                Rows&& rows) {
    const bool parallel = worth_parallel(std::ptrdiff_t(m) * n, 2);
    auto run = [&](auto stream) {
        auto pass = [&](int r0, int r1, int j0, int w, int w_next) {
            rows(stream, r0, r1, j0, w, w_next);
            if constexpr (decltype(stream)::value) stream_fence();
        };
        const PanelShape shape = panel_shape();
        if (parallel && use_panels(m, n, sizeof(T), max_threads(), shape)) {
            if (shape.by_columns)
                split_passes<2>(m, n, out, sizeof(T), shape, tile, finish, pass);
            else
                panel_passes<2>(m, n, out, sizeof(T), shape, tile, finish, pass);
        } else {
            double* const sums = scratch<double>(Scratch::sums, 2 * std::size_t(n));
            column_passes<2>(m, n, parallel, sums, tile, finish, pass);
        }
    };
    if (stream_output(footprint))
        run(std::true_type{});
    else
        run(std::false_type{});
}

}  // namespace

// Training forward, per feature j over the batch:
//   mu = mean_i Z[i,j], var = mean_i (Z[i,j]-mu)^2 (biased), invstd = 1/sqrt(var+eps)
//   xhat = (Z-mu)*invstd, out = g(gamma*xhat + beta)          (xhat is not stored)
//   running_mean = momentum*running_mean + (1-momentum)*mu
//   running_var  = momentum*running_var  + (1-momentum)*var*m/(m-1)   (unbiased; m=1: var)
// out (m, n), not aliasing Z (backward reads Z); mean, invstd (n,) saved for backward;
// running_mean/var (n,) updated in place, or both null to leave them untouched.
// Two passes over Z: both moments at once (shifted by the first row so that a large mean
// does not cancel the variance away; float groups into double totals, as above), then
// normalize.
template <class T>
void batchnorm_forward_train(T* out, T* mean, T* invstd, T* running_mean, T* running_var,
                             const T* Z, const T* gamma, const T* beta, int m, int n, T momentum,
                             T eps, Activation act, T alpha) {
    const double unbias = m > 1 ? double(m) / double(m - 1) : 1.0;
    auto tile = [&](int i0, int i1, int j0, int w, double* acc, std::ptrdiff_t stride) {
        moments_tile(Z, n, i0, i1, j0, w, acc, stride);
    };
    auto finish = [&](int j0, int j1, const double* s, std::ptrdiff_t stride) {
        for (int j = j0; j < j1; ++j) {
            const double d1 = s[j - j0] / m;
            double mu = double(Z[j]) + d1;
            double v = s[stride + j - j0] / m - d1 * d1;
            if (!grouped_moments_hold<T>(d1, v)) exact_moments(Z, m, n, j, mu, v);
            // clamp rounding below 0, but keep a NaN (std::max(0.0, NaN) is 0.0)
            const double var = v < 0.0 ? 0.0 : v;
            mean[j] = T(mu);
            invstd[j] = T(1.0 / std::sqrt(var + double(eps)));
            if (running_mean != nullptr) {
                running_mean[j] = momentum * running_mean[j] + (T(1) - momentum) * T(mu);
                running_var[j] = momentum * running_var[j] + (T(1) - momentum) * T(var * unbias);
            }
        }
    };
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        two_passes(m, n, out, 2.0 * double(m) * n * sizeof(T), tile, finish,
                   [&](auto stream, int r0, int r1, int j0, int w, int w_next) {
                       normalize_rows<decltype(stream)::value, ACT>(
                           out, Z, mean, invstd, gamma, beta, n, r0, r1, j0, w, w_next, alpha);
                   });
    });
}

// Evaluation forward with the running statistics:
//   out = g(gamma*(Z - running_mean)/sqrt(running_var + eps) + beta)     (m, n)
template <class T>
void batchnorm_forward_eval(T* out, const T* Z, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int m, int n, T eps,
                            Activation act, T alpha) {
    T* const scale = scratch<T>(Scratch::coef, 2 * std::size_t(n));
    T* const shift = scale + n;
    for (int j = 0; j < n; ++j) {
        scale[j] = gamma[j] * (T(1) / std::sqrt(running_var[j] + eps));
        shift[j] = beta[j] - running_mean[j] * scale[j];
    }
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n;
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(m, worth_parallel(total, activation_cost<ACT>),
                     [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                         const T a = alpha;
                         for (std::ptrdiff_t i = lo; i < hi; ++i) {
                             const T* z = Z + i * n;
                             T* o = out + i * n;
#pragma omp simd
                             for (int j = 0; j < n; ++j)
                                 o[j] = activate<ACT>(scale[j] * z[j] + shift[j], a);
                         }
                     });
    });
}

// Backward, closed form. With g = dout * g'(out) (the gradient w.r.t. gamma*xhat+beta) and
// xhat = (Z - mean)*invstd recomputed from the forward pass's input and statistics:
//   dbeta = sum_i g, dgamma = sum_i g*xhat
//   dZ = gamma*invstd/m * (m*g - dbeta - xhat*dgamma)
// dZ (m, n) may alias dout (then dout ends up holding dZ; otherwise it is only read).
// dgamma, dbeta (n,). g is recomputed in the second pass rather than stored by the first.
template <class T>
void batchnorm_backward(T* dZ, T* dgamma, T* dbeta, const T* dout, const T* out, const T* Z,
                        const T* gamma, const T* mean, const T* invstd, int m, int n,
                        Activation act, T alpha) {
    T* const k = scratch<T>(Scratch::coef, n);  // gamma * invstd / m; the rows also read
                                                // dbeta and dgamma
    const int arrays = act == Activation::identity ? 3 : 4;  // dout, Z, dZ (+ out)
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        auto finish = [&](int j0, int j1, const double* s, std::ptrdiff_t stride) {
            for (int j = j0; j < j1; ++j) {
                double sb = s[j - j0], sg = s[stride + j - j0];
                if (!(std::isfinite(sb) && std::isfinite(sg)))
                    exact_backward_sums<ACT>(dout, out, Z, mean, m, n, j, alpha, sb, sg);
                dbeta[j] = T(sb);
                dgamma[j] = T(sg * double(invstd[j]));
                k[j] = T(double(gamma[j]) * double(invstd[j]) / m);
            }
        };
        auto tile = [&](int i0, int i1, int j0, int w, double* acc, std::ptrdiff_t stride) {
            backward_sums_tile<ACT>(dout, out, Z, mean, n, i0, i1, j0, w, alpha, acc, stride);
        };
        two_passes(m, n, dZ, double(arrays) * double(m) * n * sizeof(T), tile, finish,
                   [&](auto stream, int r0, int r1, int j0, int w, int w_next) {
                       backward_rows<decltype(stream)::value, ACT>(
                           dZ, dout, out, Z, mean, invstd, k, dbeta, dgamma, n, m, r0, r1,
                           j0, w, w_next, alpha);
                   });
    });
}

#define PYDL_INSTANTIATE(T)                                                                        \
    template void batchnorm_forward_train<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                             int, int, T, T, Activation, T);                       \
    template void batchnorm_forward_eval<T>(T*, const T*, const T*, const T*, const T*, const T*,  \
                                            int, int, T, Activation, T);                           \
    template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,       \
                                        const T*, const T*, int, int, Activation, T);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
