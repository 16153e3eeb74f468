// Optimizer updates over the flat parameter buffer theta and its gradient, one pass each.
// count = number of parameters. With weight_decay w (coupled, i.e. L2): g = grad + w*theta.
// Betas come in as double: 1 - beta and the bias corrections are taken in double, so a beta
// that rounds to 1 in float32 (e.g. 0.99999999) still gives 1 - beta > 0, not 0 (and 0/0).
//
// On x86 the steps count subnormal numbers as 0, in and out (FlushSubnormals, common.hpp):
// the state of a parameter whose gradient is 0 (a dead unit, an input feature that is always
// 0) decays geometrically into the subnormal range, and a subnormal operand or result costs
// an Intel core an assist of ~100 cycles (Adam over 2410 floats with subnormal v or s:
// 50-95 us instead of 4; with a gradient of 1e-20, whose square is subnormal: 45-63 us).
//
// Each returns whether every new value (theta and the state) is finite, with a margin: at
// most half the largest finite T in magnitude (2x is exact, so 2 * value * 0 is 0 exactly
// then, NaN otherwise). With `check` the update is first computed without storing anything,
// and applied only when it is all within that: false then means nothing was written. (A
// training loop that must not keep a diverged step pays one extra read of the arrays
// instead of copying them all beforehand.) The margin covers the check and the store being
// two compiled loops: should the compiler contract a multiply-add in one and not the other,
// their values differ in the last bits, never by 2x, so a checked update stores finite.
// RMSprop and Adam first try a cheaper check, without the square root and the division:
// |new theta| <= |theta| + max(lr/eps, lr) * |numerator| (+ |decay * theta|), since the
// denominator is at least eps (and lr * numerator is formed first), when the new second
// moment is >= 0 (else its square root is NaN: not certified). When that bound is within a
// quarter of the largest T (2x again for the rounding) and the new state within half, the
// update is certain to pass, and the exact check runs only where the bound does not hold.
// In fit, whose steps all check: Adam over 270k float parameters on 2 threads took 447-452
// us with the exact check, 383-407 us with the bound, 254-264 us unchecked (the README's
// medium training job: 2% more samples/s).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels.hpp"

namespace pydl {

namespace {

// max(num / eps, num) in T, inf where that exceeds T (an out-of-range conversion is
// undefined): the factor of the bound on |num * x / d| for any d >= eps > 0, and of the
// product num * x itself, which the update forms before it divides (eps > 1).
template <class T>
T bound_factor(double num, double eps) {
    const double f = std::max(num / eps, num);
    return f <= double(std::numeric_limits<T>::max()) ? T(f) : std::numeric_limits<T>::infinity();
}

// One pass of an update (or, with check, two: see above). For each k, with the S state
// arrays' values st[0..S) loaded, new_theta = rule(theta[k], grad[k], st) also leaves the new
// state values in st; they are stored when the pass stores. Each pass sums 2 * value * 0
// over all of them: 0 when every one is within the margin, NaN otherwise.
// bound(theta[k], grad[k], st), if not nullptr, updates st as rule does and returns a bound
// on |new_theta| that needs no division (see above): the check first sums
// (4 * bound) * 0 + (2 * state) * 0 over the range (finite only if the bound is within a
// quarter of the largest T and the state within half), and runs the exact check only when
// that is not 0.
template <int S, class T, class Rule, class Bound = std::nullptr_t>
bool run_update(T* theta, T* s0, T* s1, const T* grad, std::ptrdiff_t count, int cost,
                bool check, Rule rule, Bound bound = nullptr) {
    // Whether fn's values over [k0, k1) are all within their margins: w * fn(...) and twice
    // each new state value finite (w = 2: the new theta; w = 4: a bound on it); stores the
    // new values if `store` (fn = rule).
    auto sweep = [&](std::ptrdiff_t k0, std::ptrdiff_t k1, auto fn, auto store, T w)
        PYDL_NOINLINE {
        // Locals, not captured references: a store through theta or the state could
        // otherwise alias them, forcing reloads that made the loop ~10x slower.
        const auto f = fn;  // a local: the stores below cannot change it
        T* __restrict th_p = theta;
        T* __restrict a_p = s0;
        T* __restrict b_p = s1;
        const T* __restrict g_p = grad;
        T z = 0;
#pragma omp simd reduction(+ : z)
        for (std::ptrdiff_t k = k0; k < k1; ++k) {
            T st[2] = {T(0), T(0)};
            if constexpr (S > 0) st[0] = a_p[k];
            if constexpr (S > 1) st[1] = b_p[k];
            const T x = f(th_p[k], g_p[k], st);
            if constexpr (decltype(store)::value) {
                if constexpr (S > 0) a_p[k] = st[0];
                if constexpr (S > 1) b_p[k] = st[1];
                th_p[k] = x;
            }
            z += (w * x) * T(0) + (T(2) * st[0]) * T(0) + (T(2) * st[1]) * T(0);
        }
        return z == T(0);
    };
    auto range = [&](std::ptrdiff_t k0, std::ptrdiff_t k1, auto store) {
        return sweep(k0, k1, rule, store, T(2));
    };
    // whether the bound certifies [k0, k1)'s new values within the margin (stores nothing)
    auto certified = [&](std::ptrdiff_t k0, std::ptrdiff_t k1) {
        if constexpr (std::is_same_v<Bound, std::nullptr_t>) {
            (void)k0, (void)k1;
            return false;
        } else {
            return sweep(k0, k1, bound, std::false_type{}, T(4));
        }
    };
    std::atomic<bool> finite{true};
    // Both passes in one team: each thread checks its range, meets the others at a barrier,
    // then stores the same range, which is still in its cache (a second team would cost
    // another wake-up, 50-100 us on a VM).
    auto passes = [&](std::ptrdiff_t k0, std::ptrdiff_t k1, int nt, TeamBarrier* barrier) {
        const FlushSubnormals flush;  // on each thread, around the calls of range
        if (check) {
            if (k0 < k1 && !certified(k0, k1) && !range(k0, k1, std::false_type{}))
                finite.store(false, std::memory_order_relaxed);
            if (nt > 1) barrier->wait(nt);
            if (!finite.load()) return;
        }
        if (k0 < k1 && !range(k0, k1, std::true_type{}))
            finite.store(false, std::memory_order_relaxed);
    };
    if (worth_parallel(count, cost) && count > 1 && max_threads() > 1) {
        TeamBarrier barrier;
        in_team([&](int nt, int id) {
            const auto [k0, k1] = thread_range(count, nt, id);
            passes(k0, k1, nt, &barrier);
        });
    } else {
        passes(0, count, 1, nullptr);
    }
    return finite.load();
}

}  // namespace

// theta -= lr * g
template <class T>
bool sgd_step(T* theta, const T* grad, std::ptrdiff_t count, T lr, T weight_decay, bool check) {
    return run_update<0>(theta, static_cast<T*>(nullptr), static_cast<T*>(nullptr), grad, count, 1,
                         check, [=](T th, T grad_k, T(&)[2]) {
                             return th - lr * (grad_k + weight_decay * th);
                         });
}

// v = beta*v + (1-beta)*g;  theta -= lr * v
// nesterov: theta -= lr * (beta*v + (1-beta)*g)   (with the new v)
template <class T>
bool momentum_step(T* theta, T* v, const T* grad, std::ptrdiff_t count, T lr, double beta_d,
                   bool nesterov, T weight_decay, bool check) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    auto run = [&](auto nesterov_c) {  // a constant in the loop, which then vectorizes
        return run_update<1>(theta, v, static_cast<T*>(nullptr), grad, count, 1, check,
                             [=](T th, T grad_k, T(&st)[2]) {
                                 const T g = grad_k + weight_decay * th;
                                 const T vk = st[0] = beta * st[0] + c * g;
                                 return th - lr * (decltype(nesterov_c)::value ? beta * vk + c * g
                                                                               : vk);
                             });
    };
    return nesterov ? run(std::true_type{}) : run(std::false_type{});
}

// s = beta*s + (1-beta)*g^2;  theta -= lr * g / (sqrt(s) + eps)
template <class T>
bool rmsprop_step(T* theta, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta_d, T eps,
                  T weight_decay, bool check) {
    const T beta = T(beta_d), c = T(1.0 - beta_d);
    const T lr_eps = bound_factor<T>(double(lr), double(eps));
    auto state = [=](T th, T grad_k, T(&st)[2]) {  // the new s; returns g
        const T g = grad_k + weight_decay * th;
        st[0] = beta * st[0] + c * g * g;
        return g;
    };
    return run_update<1>(
        theta, s, static_cast<T*>(nullptr), grad, count, 2, check,
        [=](T th, T grad_k, T(&st)[2]) {
            const T g = state(th, grad_k, st);
            return th - lr * g / (std::sqrt(st[0]) + eps);
        },
        [=](T th, T grad_k, T(&st)[2]) {  // NaN (not certified) for s < 0: sqrt is NaN
            const T g = state(th, grad_k, st);
            return st[0] >= T(0) ? std::abs(th) + lr_eps * std::abs(g)
                                 : std::numeric_limits<T>::quiet_NaN();
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
    const T step_eps = bound_factor<T>(double(step), double(eps));
    auto state = [=](T th, T grad_k, T(&st)[2]) {  // the new v and s
        const T g = grad_k + coupled * th;
        st[0] = beta1 * st[0] + c1 * g;
        st[1] = beta2 * st[1] + c2 * g * g;
    };
    return run_update<2>(
        theta, v, s, grad, count, 2, check,
        [=](T th, T grad_k, T(&st)[2]) {
            state(th, grad_k, st);
            return th - step * st[0] / (std::sqrt(st[1]) * inv_sqrt_bc2 + eps) - shrink * th;
        },
        [=](T th, T grad_k, T(&st)[2]) {  // NaN (not certified) for s < 0: sqrt is NaN
            state(th, grad_k, st);
            return st[1] >= T(0)
                       ? std::abs(th) + step_eps * std::abs(st[0]) + std::abs(shrink * th)
                       : std::numeric_limits<T>::quiet_NaN();
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
