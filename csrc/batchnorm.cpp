// Batch normalization on Z, before the activation, fused with the activation.
// m = batch size, n = features. Row-major (m, n) activations, (n,) per-feature vectors.
// Work is split into blocks of whole columns: each feature's sums run in row order on one
// thread, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "kernels.hpp"

namespace pydl {

// Training forward, per feature j over the batch:
//   mu = mean_i Z[i,j], var = mean_i (Z[i,j]-mu)^2 (biased), invstd = 1/sqrt(var+eps)
//   xhat = (Z-mu)*invstd, out = g(gamma*xhat + beta)
//   running_mean = momentum*running_mean + (1-momentum)*mu
//   running_var  = momentum*running_var  + (1-momentum)*var*m/(m-1)   (unbiased; m=1: var)
// out, xhat (m, n) [xhat may alias Z]; mean, invstd (n,) saved for backward;
// running_mean/var (n,) updated in place, or both null to leave them untouched.
template <class T>
void batchnorm_forward_train(T* out, T* xhat, T* mean, T* invstd, T* running_mean, T* running_var,
                             const T* Z, const T* gamma, const T* beta, int m, int n, T momentum,
                             T eps, Activation act, T alpha) {
    const int nblocks = (n + kColumnBlock - 1) / kColumnBlock;
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n;
    const double unbias = m > 1 ? double(m) / double(m - 1) : 1.0;
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(nblocks, total >= kParallelMinElements && nblocks > 1,
                     [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                         for (int blk = int(lo); blk < int(hi); ++blk) {
                             const int j0 = blk * kColumnBlock, w = std::min(n - j0, kColumnBlock);
                             // One pass for both moments, shifted by the first row so that a large
                             // mean does not cancel the variance away; sums in double.
                             double s1[kColumnBlock] = {}, s2[kColumnBlock] = {};
                             const T* z0 = Z + j0;
                             for (int i = 0; i < m; ++i) {
                                 const T* z = Z + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
                                 for (int j = 0; j < w; ++j) {
                                     const double d = double(z[j]) - double(z0[j]);
                                     s1[j] += d;
                                     s2[j] += d * d;
                                 }
                             }
                             T scale[kColumnBlock], shift[kColumnBlock], mu_t[kColumnBlock],
                                 inv_t[kColumnBlock];
                             for (int j = 0; j < w; ++j) {
                                 const double d1 = s1[j] / m;
                                 const double mu = double(z0[j]) + d1;
                                 // clamp rounding below 0, but keep a NaN (std::max(0.0, NaN) is
                                 // 0.0)
                                 const double v = s2[j] / m - d1 * d1;
                                 const double var = v < 0.0 ? 0.0 : v;
                                 const double inv = 1.0 / std::sqrt(var + double(eps));
                                 mu_t[j] = T(mu);
                                 inv_t[j] = T(inv);
                                 mean[j0 + j] = T(mu);
                                 invstd[j0 + j] = T(inv);
                                 scale[j] = gamma[j0 + j];
                                 shift[j] = beta[j0 + j];
                                 if (running_mean != nullptr) {
                                     running_mean[j0 + j] = momentum * running_mean[j0 + j] +
                                                            (T(1) - momentum) * T(mu);
                                     running_var[j0 + j] = momentum * running_var[j0 + j] +
                                                           (T(1) - momentum) * T(var * unbias);
                                 }
                             }
                             for (int i = 0; i < m; ++i) {
                                 const T* z = Z + std::ptrdiff_t(i) * n + j0;
                                 T* xh = xhat + std::ptrdiff_t(i) * n + j0;
                                 T* o = out + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
                                 for (int j = 0; j < w; ++j) {
                                     const T x = (z[j] - mu_t[j]) * inv_t[j];
                                     xh[j] = x;
                                     o[j] = activate<ACT>(scale[j] * x + shift[j], alpha);
                                 }
                             }
                         }
                     });
    });
}

// Evaluation forward with the running statistics:
//   out = g(gamma*(Z - running_mean)/sqrt(running_var + eps) + beta)     (m, n)
template <class T>
void batchnorm_forward_eval(T* out, const T* Z, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int m, int n, T eps,
                            Activation act, T alpha) {
    const int nblocks = (n + kColumnBlock - 1) / kColumnBlock;
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n;
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(nblocks, total >= kParallelMinElements && nblocks > 1,
                     [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                         for (int blk = int(lo); blk < int(hi); ++blk) {
                             const int j0 = blk * kColumnBlock, w = std::min(n - j0, kColumnBlock);
                             T scale[kColumnBlock], shift[kColumnBlock];
                             for (int j = 0; j < w; ++j) {
                                 const T inv = T(1) / std::sqrt(running_var[j0 + j] + eps);
                                 scale[j] = gamma[j0 + j] * inv;
                                 shift[j] = beta[j0 + j] - running_mean[j0 + j] * scale[j];
                             }
                             for (int i = 0; i < m; ++i) {
                                 const T* z = Z + std::ptrdiff_t(i) * n + j0;
                                 T* o = out + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
                                 for (int j = 0; j < w; ++j)
                                     o[j] = activate<ACT>(scale[j] * z[j] + shift[j], alpha);
                             }
                         }
                     });
    });
}

// Backward, closed form. With g = dout * g'(out) (the gradient w.r.t. gamma*xhat+beta):
//   dbeta = sum_i g, dgamma = sum_i g*xhat
//   dZ = gamma*invstd/m * (m*g - dbeta - xhat*dgamma)
// dZ (m, n) may alias dout; dout is overwritten with g. dgamma, dbeta (n,).
template <class T>
void batchnorm_backward(T* dZ, T* dgamma, T* dbeta, T* dout, const T* out, const T* xhat,
                        const T* gamma, const T* invstd, int m, int n, Activation act, T alpha) {
    const int nblocks = (n + kColumnBlock - 1) / kColumnBlock;
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n;
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(nblocks, total >= kParallelMinElements && nblocks > 1,
                     [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                         for (int blk = int(lo); blk < int(hi); ++blk) {
                             const int j0 = blk * kColumnBlock, w = std::min(n - j0, kColumnBlock);
                             double sb[kColumnBlock] = {}, sg[kColumnBlock] = {};
                             for (int i = 0; i < m; ++i) {
                                 T* d = dout + std::ptrdiff_t(i) * n + j0;
                                 const T* o = out + std::ptrdiff_t(i) * n + j0;
                                 const T* xh = xhat + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
                                 for (int j = 0; j < w; ++j) {
                                     const T g = d[j] * activation_grad<ACT>(o[j], alpha);
                                     d[j] = g;
                                     sb[j] += g;
                                     sg[j] += double(g) * double(xh[j]);
                                 }
                             }
                             T k[kColumnBlock], bsum[kColumnBlock], gsum[kColumnBlock];
                             for (int j = 0; j < w; ++j) {
                                 dbeta[j0 + j] = T(sb[j]);
                                 dgamma[j0 + j] = T(sg[j]);
                                 k[j] = T(double(gamma[j0 + j]) * double(invstd[j0 + j]) / m);
                                 bsum[j] = T(sb[j]);
                                 gsum[j] = T(sg[j]);
                             }
                             const T mt = T(m);
                             for (int i = 0; i < m; ++i) {
                                 const T* d = dout + std::ptrdiff_t(i) * n + j0;
                                 const T* xh = xhat + std::ptrdiff_t(i) * n + j0;
                                 T* dz = dZ + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
                                 for (int j = 0; j < w; ++j)
                                     dz[j] = k[j] * (mt * d[j] - bsum[j] - xh[j] * gsum[j]);
                             }
                         }
                     });
    });
}

#define PYDL_INSTANTIATE(T)                                                                        \
    template void batchnorm_forward_train<T>(T*, T*, T*, T*, T*, T*, const T*, const T*, const T*, \
                                             int, int, T, T, Activation, T);                       \
    template void batchnorm_forward_eval<T>(T*, const T*, const T*, const T*, const T*, const T*,  \
                                            int, int, T, Activation, T);                           \
    template void batchnorm_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                        int, int, Activation, T);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
