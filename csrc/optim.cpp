// Optimizer updates over the flat parameter buffer theta and its gradient, one pass each.
// count = number of parameters. With weight_decay w (coupled, i.e. L2): g = grad + w*theta.
// Betas come in as double: 1 - beta and the bias corrections are taken in double, so a beta
// that rounds to 1 in float32 (e.g. 0.99999999) still gives 1 - beta > 0, not 0 (and 0/0).
//
// Each returns whether every new value (theta and the state) is finite. With `check` the
// update is first computed without storing anything, and applied only when it is all
// finite: false then means nothing was written. (A training loop that must not keep a
// diverged step pays one extra read of the arrays instead of copying them all beforehand.)
#include <atomic>
#include <cmath>
#include <type_traits>

#include "kernels.hpp"

namespace pydl {

namespace {

// body(k0, k1, store) updates [k0, k1) (storing the new values when store is true_type) and
// returns sum of (new value * 0) over them: 0 when all are finite, NaN otherwise.
template <class Body>
bool run_update(std::ptrdiff_t count, int cost, bool check, Body&& body) {
    const bool parallel = worth_parallel(count, cost);
    std::atomic<bool> finite{true};
    auto pass = [&](auto store) {
        parallel_for(count, parallel, [&](std::ptrdiff_t k0, std::ptrdiff_t k1) {
            if (!(body(k0, k1, store) == 0)) finite.store(false, std::memory_order_relaxed);
        });
    };
    if (check) {
        pass(std::false_type{});
        if (!finite.load()) return false;
    }
    pass(std::true_type{});
    return finite.load();
}

}  // namespace

// theta -= lr * g
template <class T>
bool sgd_step(T* theta, const T* grad, std::ptrdiff_t count, T lr, T weight_decay, bool check) {
    return run_update(count, 1, check, [=](std::ptrdiff_t k0, std::ptrdiff_t k1, auto store)
                                           PYDL_NOINLINE {
        T* __restrict th_p = theta;
        const T* __restrict g_p = grad;
        T z = 0;
#pragma omp simd reduction(+ : z)
        for (std::ptrdiff_t k = k0; k < k1; ++k) {
            const T g = g_p[k] + weight_decay * th_p[k];
            const T th = th_p[k] - lr * g;
            if constexpr (decltype(store)::value) th_p[k] = th;
            z += th * T(0);
        }
        return z;
    });
}

// v = beta*v + (1-beta)*g;  theta -= lr * v
// nesterov: theta -= lr * (beta*v + (1-beta)*g)   (with the new v)
template <class T>
bool momentum_step(T* theta, T* v, const T* grad, std::ptrdiff_t count, T lr, double beta_d,
                   bool nesterov, T weight_decay, bool check) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    return run_update(count, 1, check, [=](std::ptrdiff_t k0, std::ptrdiff_t k1, auto store)
                                           PYDL_NOINLINE {
        T* __restrict th_p = theta;
        T* __restrict v_p = v;
        const T* __restrict g_p = grad;
        T z = 0;
#pragma omp simd reduction(+ : z)
        for (std::ptrdiff_t k = k0; k < k1; ++k) {
            const T g = g_p[k] + weight_decay * th_p[k];
            const T vk = beta * v_p[k] + c * g;
            const T th = th_p[k] - lr * (nesterov ? beta * vk + c * g : vk);
            if constexpr (decltype(store)::value) {
                v_p[k] = vk;
                th_p[k] = th;
            }
            z += th * T(0) + vk * T(0);
        }
        return z;
    });
}

// s = beta*s + (1-beta)*g^2;  theta -= lr * g / (sqrt(s) + eps)
template <class T>
bool rmsprop_step(T* theta, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta_d, T eps,
                  T weight_decay, bool check) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    return run_update(count, 2, check, [=](std::ptrdiff_t k0, std::ptrdiff_t k1, auto store)
                                           PYDL_NOINLINE {
        T* __restrict th_p = theta;
        T* __restrict s_p = s;
        const T* __restrict g_p = grad;
        T z = 0;
#pragma omp simd reduction(+ : z)
        for (std::ptrdiff_t k = k0; k < k1; ++k) {
            const T g = g_p[k] + weight_decay * th_p[k];
            const T sk = beta * s_p[k] + c * g * g;
            const T th = th_p[k] - lr * g / (std::sqrt(sk) + eps);
            if constexpr (decltype(store)::value) {
                s_p[k] = sk;
                th_p[k] = th;
            }
            z += th * T(0) + sk * T(0);
        }
        return z;
    });
}

// v = b1*v + (1-b1)*g;  s = b2*s + (1-b2)*g^2;  vhat = v/(1-b1^t);  shat = s/(1-b2^t)
// theta -= lr * vhat / (sqrt(shat) + eps)        (t counts steps from 1)
// decoupled (AdamW): g = grad and theta -= lr*weight_decay*theta as well.
template <class T>
bool adam_step(T* theta, T* v, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta1_d,
               double beta2_d, T eps, int64_t t, T weight_decay, bool decoupled, bool check) {
    const T beta1 = T(beta1_d), beta2 = T(beta2_d);
    const T c1 = T(1.0 - beta1_d), c2 = T(1.0 - beta2_d);
    const T bc1 = T(1.0 - std::pow(beta1_d, double(t)));
    const T inv_sqrt_bc2 = T(1.0 / std::sqrt(1.0 - std::pow(beta2_d, double(t))));
    const T step = lr / bc1;
    const T coupled = decoupled ? T(0) : weight_decay;
    const T shrink = decoupled ? lr * weight_decay : T(0);
    return run_update(count, 2, check, [=](std::ptrdiff_t k0, std::ptrdiff_t k1, auto store)
                                           PYDL_NOINLINE {
        // Locals, not captured references: a store through theta/v/s could otherwise alias
        // them, forcing reloads that made this loop ~10x slower.
        T* __restrict th_p = theta;
        T* __restrict v_p = v;
        T* __restrict s_p = s;
        const T* __restrict g_p = grad;
        T z = 0;
#pragma omp simd reduction(+ : z)
        for (std::ptrdiff_t k = k0; k < k1; ++k) {
            const T th = th_p[k];
            const T g = g_p[k] + coupled * th;
            const T vk = beta1 * v_p[k] + c1 * g;
            const T sk = beta2 * s_p[k] + c2 * g * g;
            const T th_new = th - step * vk / (std::sqrt(sk) * inv_sqrt_bc2 + eps) - shrink * th;
            if constexpr (decltype(store)::value) {
                v_p[k] = vk;
                s_p[k] = sk;
                th_p[k] = th_new;
            }
            z += th_new * T(0) + vk * T(0) + sk * T(0);
        }
        return z;
    });
}

#define PYDL_INSTANTIATE(T)                                                                     \
    template bool sgd_step<T>(T*, const T*, std::ptrdiff_t, T, T, bool);                        \
    template bool momentum_step<T>(T*, T*, const T*, std::ptrdiff_t, T, double, bool, T, bool); \
    template bool rmsprop_step<T>(T*, T*, const T*, std::ptrdiff_t, T, double, T, T, bool);     \
    template bool adam_step<T>(T*, T*, T*, const T*, std::ptrdiff_t, T, double, double, T,      \
                               int64_t, T, bool, bool);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
