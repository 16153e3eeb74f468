// Optimizer updates over the flat parameter buffer theta and its gradient, one pass each.
// count = number of parameters. With weight_decay w (coupled, i.e. L2): g = grad + w*theta.
// Betas come in as double: 1 - beta and the bias corrections are taken in double, so a beta
// that rounds to 1 in float32 (e.g. 0.99999999) still gives 1 - beta > 0, not 0 (and 0/0).
#include <cmath>

#include "kernels.hpp"

namespace pydl {

// theta -= lr * g
template <class T>
void sgd_step(T* theta, const T* grad, std::ptrdiff_t count, T lr, T weight_decay) {
    parallel_for(count, worth_parallel(count, 1),
                 [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
#pragma omp simd
                     for (std::ptrdiff_t k = k0; k < k1; ++k) {
                         const T g = grad[k] + weight_decay * theta[k];
                         theta[k] -= lr * g;
                     }
                 });
}

// v = beta*v + (1-beta)*g;  theta -= lr * v
// nesterov: theta -= lr * (beta*v + (1-beta)*g)   (with the new v)
template <class T>
void momentum_step(T* theta, T* v, const T* grad, std::ptrdiff_t count, T lr, double beta_d,
                   bool nesterov, T weight_decay) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    parallel_for(count, worth_parallel(count, 1),
                 [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
#pragma omp simd
                     for (std::ptrdiff_t k = k0; k < k1; ++k) {
                         const T g = grad[k] + weight_decay * theta[k];
                         const T vk = beta * v[k] + c * g;
                         v[k] = vk;
                         theta[k] -= lr * (nesterov ? beta * vk + c * g : vk);
                     }
                 });
}

// s = beta*s + (1-beta)*g^2;  theta -= lr * g / (sqrt(s) + eps)
template <class T>
void rmsprop_step(T* theta, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta_d, T eps,
                  T weight_decay) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    parallel_for(count, worth_parallel(count, 2),
                 [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
#pragma omp simd
                     for (std::ptrdiff_t k = k0; k < k1; ++k) {
                         const T g = grad[k] + weight_decay * theta[k];
                         const T sk = beta * s[k] + c * g * g;
                         s[k] = sk;
                         theta[k] -= lr * g / (std::sqrt(sk) + eps);
                     }
                 });
}

// v = b1*v + (1-b1)*g;  s = b2*s + (1-b2)*g^2;  vhat = v/(1-b1^t);  shat = s/(1-b2^t)
// theta -= lr * vhat / (sqrt(shat) + eps)        (t counts steps from 1)
// decoupled (AdamW): g = grad and theta -= lr*weight_decay*theta as well.
template <class T>
void adam_step(T* theta, T* v, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta1_d,
               double beta2_d, T eps, int64_t t, T weight_decay, bool decoupled) {
    const T beta1 = T(beta1_d), beta2 = T(beta2_d);
    const T c1 = T(1.0 - beta1_d), c2 = T(1.0 - beta2_d);
    const T bc1 = T(1.0 - std::pow(beta1_d, double(t)));
    const T inv_sqrt_bc2 = T(1.0 / std::sqrt(1.0 - std::pow(beta2_d, double(t))));
    const T step = lr / bc1;
    const T coupled = decoupled ? T(0) : weight_decay;
    const T shrink = decoupled ? lr * weight_decay : T(0);
    parallel_for(count, worth_parallel(count, 2),
                 [=](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
                     // Locals, not captured references: a store through theta/v/s could otherwise
                     // alias them, forcing reloads that made this loop ~10x slower.
                     T* __restrict th_p = theta;
                     T* __restrict v_p = v;
                     T* __restrict s_p = s;
                     const T* __restrict g_p = grad;
#pragma omp simd
                     for (std::ptrdiff_t k = k0; k < k1; ++k) {
                         const T th = th_p[k];
                         const T g = g_p[k] + coupled * th;
                         const T vk = beta1 * v_p[k] + c1 * g;
                         const T sk = beta2 * s_p[k] + c2 * g * g;
                         v_p[k] = vk;
                         s_p[k] = sk;
                         th_p[k] =
                             th - step * vk / (std::sqrt(sk) * inv_sqrt_bc2 + eps) - shrink * th;
                     }
                 });
}

#define PYDL_INSTANTIATE(T)                                                                \
    template void sgd_step<T>(T*, const T*, std::ptrdiff_t, T, T);                         \
    template void momentum_step<T>(T*, T*, const T*, std::ptrdiff_t, T, double, bool, T);  \
    template void rmsprop_step<T>(T*, T*, const T*, std::ptrdiff_t, T, double, T, T);      \
    template void adam_step<T>(T*, T*, T*, const T*, std::ptrdiff_t, T, double, double, T, \
                               int64_t, T, bool);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
