"""Optimizer step kernels (pydl.ops) against a float64 NumPy loop of each update rule.

With weight decay w coupled (L2): g = grad + w*theta.
SGD:      theta -= lr g
Momentum: v = beta v + (1-beta) g; theta -= lr v   (Nesterov: lr (beta v + (1-beta) g))
RMSprop:  s = beta s + (1-beta) g^2; theta -= lr g / (sqrt(s) + eps)
Adam:     v = b1 v + (1-b1) g; s = b2 s + (1-b2) g^2; theta -= lr (v/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps)
AdamW:    g = grad (no coupling) and theta -= lr w theta_old as well.
Each test runs 12 steps from the same start and gradient sequence in both.
"""
import os
import platform

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import assert_close
from pydl import ops

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
STEPS = 12
counts = st.one_of(st.integers(1, 100), st.sampled_from([1, 63, 65, 1000, 70001]))
seeds = st.integers(0, 2**32 - 1)
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)


def f64(x):
    return np.array(x, dtype=np.float64)  # always a copy: kernels work in place


def problem(count, dtype, seed, warm_state, zero_grads=True):
    """theta0, a gradient sequence (STEPS, count) and initial moments, all in dtype.

    zero_grads: every 7th coordinate gets exact zero gradients (g = 0 paths, s = 0 + eps).
    Not for RMSprop/Adam with coupled decay: there g = w*theta alone is normalized by
    sqrt(s) ~ |w*theta|, a step of ~lr whatever theta's size, so theta hops around 0 and
    float32 and float64 trajectories part ways (ill-conditioned, not a kernel error).
    """
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(count).astype(dtype)
    # gradients of different scales per coordinate, including some exact zeros
    grads = (rng.standard_normal((STEPS, count)) * np.exp(rng.uniform(-3, 2, count))).astype(dtype)
    if zero_grads:
        grads[:, ::7] = 0.0
    if warm_state:
        v = (0.1 * rng.standard_normal(count)).astype(dtype)
        s = (0.1 * rng.uniform(0, 1, count)).astype(dtype)
    else:
        v, s = np.zeros(count, dtype), np.zeros(count, dtype)
    return theta, grads, v, s


def grad_scale(grads, thmax, wd):
    """Per coordinate, a bound on |g| = |grad + wd*theta| over the run: moments of a
    coordinate whose g is tiny (a zero gradient, theta near 0) are compared on this scale."""
    return np.abs(f64(grads)).max(axis=0) + wd * thmax


def check(theta, theta_ref, dtype, lr, keep=None):
    rtol = RTOL[dtype]
    # Rounding of theta each step (~|theta|) and of each update (~lr * O(1), up to a
    # few for RMSprop's first step 1/sqrt(1-beta)): allow STEPS of each.
    if keep is not None:
        theta, theta_ref = theta[keep], theta_ref[keep]
    assert_close(theta, theta_ref, rtol, rtol * (np.abs(theta_ref) + 10 * lr))


def cancelled(grad, th, wd, dtype):
    """Where g = grad + wd*theta nearly cancels: within 1e3 roundings of its terms in dtype.
    RMSprop and Adam divide g by ~|g| (sqrt(s) with s = 0 at first, or small), so there the
    step is ~lr * sign(g) and the dtype's rounding of the sum decides it: such coordinates
    are not compared with the float64 reference (about 1 in 10^4 in float32)."""
    return np.abs(f64(grad) + wd * th) <= 1e3 * np.finfo(dtype).eps * (np.abs(f64(grad)) + wd * np.abs(th))


def compared(fragile):
    """The coordinates to compare; the others are few and finite-checked by the caller."""
    assert fragile.sum() <= max(3, 0.01 * fragile.size), \
        f"{fragile.sum()} of {fragile.size} coordinates cancel"
    return ~fragile


@SETTINGS
@given(count=counts, lr=st.floats(1e-3, 0.5), wd=st.sampled_from([0.0, 1e-3, 0.3]),
       dtype=st.sampled_from(DTYPES), seed=seeds)
def test_sgd_matches_reference_loop(count, lr, wd, dtype, seed):
    theta, grads, _, _ = problem(count, dtype, seed, False)
    th = f64(theta)
    for t in range(STEPS):
        ops.sgd_step(theta, grads[t], lr, weight_decay=wd)
        th = th - lr * (f64(grads[t]) + wd * th)
    check(theta, th, dtype, lr)


@SETTINGS
@given(count=counts, lr=st.floats(1e-3, 0.5), beta=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       nesterov=st.booleans(), wd=st.sampled_from([0.0, 1e-3, 0.3]), warm=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(count=70001, lr=0.1, beta=0.9, nesterov=True, wd=0.3, warm=True, dtype=np.float32,
         seed=0)
def test_momentum_matches_reference_loop(count, lr, beta, nesterov, wd, warm, dtype, seed):
    theta, grads, v, _ = problem(count, dtype, seed, warm)
    th, vr = f64(theta), f64(v)
    thmax = np.abs(th)
    for t in range(STEPS):
        ops.momentum_step(theta, v, grads[t], lr, beta=beta, nesterov=nesterov, weight_decay=wd)
        g = f64(grads[t]) + wd * th
        vr = beta * vr + (1 - beta) * g
        th = th - lr * (beta * vr + (1 - beta) * g if nesterov else vr)
        thmax = np.maximum(thmax, np.abs(th))
    check(theta, th, dtype, lr)
    assert_close(v, vr, RTOL[dtype], 10 * RTOL[dtype] * (np.abs(vr) + grad_scale(grads, thmax, wd)))


@SETTINGS
@given(count=counts, lr=st.floats(1e-4, 0.1), beta=st.sampled_from([0.5, 0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), wd=st.sampled_from([0.0, 1e-3, 0.3]),
       warm=st.booleans(), dtype=st.sampled_from(DTYPES), seed=seeds)
# g = grad + 0.3*theta is -4.3e-6 at coordinate 4853's first step: float32's rounding of
# the sum decides its step (not compared; it failed a comparison before)
@example(count=70001, lr=0.0625, beta=0.999, eps=1e-8, wd=0.3, warm=False, dtype=np.float32,
         seed=307)
def test_rmsprop_matches_reference_loop(count, lr, beta, eps, wd, warm, dtype, seed):
    # (beta = 0 is sign descent, lr*g/(|g|+eps): discontinuous at g = 0, so any rounding
    # difference near g = 0 flips a step; not compared.)
    theta, grads, _, s = problem(count, dtype, seed, warm, zero_grads=wd == 0)
    th, sr = f64(theta), f64(s)
    thmax = np.abs(th)
    fragile = np.zeros(count, bool)
    for t in range(STEPS):
        ops.rmsprop_step(theta, s, grads[t], lr, beta=beta, eps=eps, weight_decay=wd)
        fragile |= (wd > 0) & cancelled(grads[t], th, wd, dtype)
        g = f64(grads[t]) + wd * th
        sr = beta * sr + (1 - beta) * g**2
        th = th - lr * g / (np.sqrt(sr) + eps)
        thmax = np.maximum(thmax, np.abs(th))
    # beta = 0.999: the first step moves by lr/sqrt(1-beta) ~ 32 lr.
    keep = compared(fragile)
    assert np.isfinite(theta).all() and np.isfinite(s).all()
    check(theta, th, dtype, lr / np.sqrt(1 - beta), keep)
    bound = sr + grad_scale(grads, thmax, wd) ** 2
    assert_close(s[keep], sr[keep], RTOL[dtype] * 10, 10 * RTOL[dtype] * bound[keep])


@SETTINGS
@given(count=counts, lr=st.floats(1e-4, 0.1), beta1=st.sampled_from([0.0, 0.9, 0.95]),
       beta2=st.sampled_from([0.9, 0.999, 0.9999]), eps=st.sampled_from([1e-8, 1e-4]),
       wd=st.sampled_from([0.0, 1e-2, 0.3]), decoupled=st.booleans(), warm=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(count=70001, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01, decoupled=True,
         warm=False, dtype=np.float32, seed=0)
@example(count=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, decoupled=False,
         warm=False, dtype=np.float64, seed=0)
def test_adam_matches_reference_loop(count, lr, beta1, beta2, eps, wd, decoupled, warm, dtype,
                                     seed):
    if warm:
        # With arbitrary moments at t = 1 the bias corrections 1/(1-b^t) amplify the
        # rounding of b to float32 (1-b has a 3e-4 relative error for b = 0.9999) by up
        # to 1e4; a cold start is immune (the weights of shat still sum to 1). Use betas
        # that float32 holds exactly so the kernel's arithmetic is what is compared.
        beta1 = 1 - 2.0 ** np.round(np.log2(1 - beta1)) if beta1 else 0.0
        beta2 = 1 - 2.0 ** np.round(np.log2(1 - beta2))
    theta, grads, v, s = problem(count, dtype, seed, warm, zero_grads=wd == 0 or decoupled)
    th, vr, sr = f64(theta), f64(v), f64(s)
    thmax = np.abs(th)
    fragile = np.zeros(count, bool)
    for t in range(1, STEPS + 1):
        ops.adam_step(theta, v, s, grads[t - 1], lr, beta1, beta2, eps, t, weight_decay=wd,
                      decoupled=decoupled)
        fragile |= (wd > 0 and not decoupled) & cancelled(grads[t - 1], th, wd, dtype)
        g = f64(grads[t - 1]) + (0.0 if decoupled else wd * th)
        vr = beta1 * vr + (1 - beta1) * g
        sr = beta2 * sr + (1 - beta2) * g**2
        vhat = vr / (1 - beta1**t)
        shat = sr / (1 - beta2**t)
        th = th - lr * vhat / (np.sqrt(shat) + eps) - (lr * wd * th if decoupled else 0.0)
        thmax = np.maximum(thmax, np.abs(th))
    # |vhat / sqrt(shat)| <= ~1/sqrt(1-b2) in the worst case; it is O(1) for these grads.
    keep = compared(fragile)
    assert np.isfinite(theta).all() and np.isfinite(v).all() and np.isfinite(s).all()
    check(theta, th, dtype, lr * 3, keep)
    gs = grad_scale(grads, 0.0 if decoupled else thmax, wd)
    assert_close(v[keep], vr[keep], RTOL[dtype], 10 * RTOL[dtype] * (np.abs(vr) + gs)[keep])
    assert_close(s[keep], sr[keep], RTOL[dtype] * 10, 10 * RTOL[dtype] * (sr + gs**2)[keep])


def test_adamw_differs_from_l2_adam_only_by_decay_route():
    # Same start and gradients: AdamW decays theta directly, Adam+L2 through g; both move
    # theta toward 0 relative to plain Adam, by different amounts.
    rng = np.random.default_rng(0)
    theta0, grad = rng.standard_normal(50), rng.standard_normal(50)
    out = {}
    for name, wd, dec in [("plain", 0.0, False), ("l2", 0.5, False), ("adamw", 0.5, True)]:
        th, v, s = theta0.copy(), np.zeros(50), np.zeros(50)
        ops.adam_step(th, v, s, grad, 0.01, 0.9, 0.999, 1e-8, 1, weight_decay=wd, decoupled=dec)
        out[name] = th
    assert_close(out["adamw"], out["plain"] - 0.01 * 0.5 * theta0, 1e-12, 1e-15)
    assert not np.allclose(out["l2"], out["plain"])
    assert not np.allclose(out["l2"], out["adamw"])


# ------------------------------------------------------------------ non-finite updates


STEP_KERNELS = {  # name -> (state arrays, call(theta, state, grad, check))
    "sgd": (0, lambda th, st, g, check: ops.sgd_step(th, g, 0.1, weight_decay=0.01, check=check)),
    "momentum": (1, lambda th, st, g, check: ops.momentum_step(th, st[0], g, 0.1, 0.9, True, 0.01,
                                                               check=check)),
    "rmsprop": (1, lambda th, st, g, check: ops.rmsprop_step(th, st[0], g, 0.01, 0.9, 1e-8, 0.01,
                                                             check=check)),
    "adam": (2, lambda th, st, g, check: ops.adam_step(th, st[0], st[1], g, 1e-3, 0.9, 0.999, 1e-8, 3,
                                                       weight_decay=0.01, check=check)),
}


def _arrays(name, count, dtype, seed=0):
    rng = np.random.default_rng(seed)
    n_state, _ = STEP_KERNELS[name]
    theta = rng.standard_normal(count).astype(dtype)
    state = [np.abs(rng.standard_normal(count)).astype(dtype) * 0.1 for _ in range(n_state)]
    grad = rng.standard_normal(count).astype(dtype)
    return theta, state, grad


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("count", [5, 17, 2**19 + 3])  # the last runs on 2 threads
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(STEP_KERNELS))
def test_a_non_finite_update_is_not_applied_with_check(name, dtype, count, threads):
    """check=True: a finite update is stored with the bits of check=False and True is
    returned; one NaN or inf gradient anywhere (first, middle, last element) makes the step
    return False and leave theta and the state bitwise as they were. Without check the
    same step is stored and also returns False."""
    old = ops.get_num_threads()
    ops.set_num_threads(threads)
    try:
        _, call = STEP_KERNELS[name]
        theta, state, grad = _arrays(name, count, dtype)
        a = [theta.copy()] + [s.copy() for s in state]
        b = [theta.copy()] + [s.copy() for s in state]
        assert call(a[0], a[1:], grad, False) is True
        assert call(b[0], b[1:], grad, True) is True
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
        for k, bad in ((0, np.inf), (count // 2, np.nan), (count - 1, -np.inf)):
            g = grad.copy()
            g[k] = bad
            arrays = [theta.copy()] + [s.copy() for s in state]
            before = [x.copy() for x in arrays]
            assert call(arrays[0], arrays[1:], g, True) is False
            for x, y in zip(arrays, before):
                assert np.array_equal(x, y), "a rejected update wrote something"
            assert call(arrays[0], arrays[1:], g, False) is False
            assert not np.isfinite(np.concatenate(arrays)).all()
    finally:
        ops.set_num_threads(old)


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e20), (np.float64, 1e160)])
def test_an_overflowing_second_moment_is_caught_though_theta_stays_finite(dtype, big):
    """g^2 overflows s to inf; theta - lr g / (sqrt(inf) + eps) is still finite. The state
    would then be unusable (inf forever), so check=True rejects the step."""
    theta, s, grad = np.ones(40, dtype), np.zeros(40, dtype), np.full(40, 0.5, dtype)
    grad[7] = big
    th2, s2 = theta.copy(), s.copy()
    assert ops.rmsprop_step(th2, s2, grad, 0.01, check=False) is False
    assert np.isfinite(th2).all() and np.isinf(s2[7])
    assert ops.rmsprop_step(theta, s, grad, 0.01, check=True) is False
    assert np.array_equal(theta, np.ones(40, dtype)) and not s.any()


def test_optimizer_step_refuses_a_non_finite_update_and_keeps_its_count():
    from pydl import optim

    class P:
        pass

    for opt in (optim.SGD(lr=0.1), optim.Momentum(lr=0.1), optim.RMSprop(), optim.Adam()):
        p = P()
        p.theta, p.dtheta = np.ones(10, np.float32), np.full(10, 0.5, np.float32)
        p.dtheta[3] = np.nan
        with pytest.raises(FloatingPointError, match=r"step 1: the update would make .* not applied"):
            opt.step(p)  # the first step: its new state is dropped again
        assert opt.t == 0 and opt.state == {} and np.array_equal(p.theta, np.ones(10, np.float32))
        p.dtheta[3] = 0.5
        opt.step(p)
        assert opt.t == 1 and not np.array_equal(p.theta, np.ones(10, np.float32))
        theta, state = p.theta.copy(), {k: v.copy() for k, v in opt.state.items()}
        p.dtheta[9] = np.inf
        with pytest.raises(FloatingPointError, match="step 2"):
            opt.step(p)
        assert opt.t == 1 and np.array_equal(p.theta, theta)
        assert all(np.array_equal(v, state[k]) for k, v in opt.state.items())


def test_an_optimizer_whose_update_returns_no_verdict_is_refused():
    """A subclass's _update must say whether its new values are finite (check=True in
    pydl.ops): one that returns None would leave fit unable to keep a diverged step out."""
    from pydl import optim

    class Old(optim.SGD):
        def _update(self, theta, grad, bufs):
            ops.sgd_step(theta, grad, self.lr)  # returns its verdict, dropped here

    class P:
        theta, dtheta = np.ones(4), np.ones(4)

    with pytest.raises(TypeError, match=r"Old._update must return whether every new value"):
        Old(lr=0.1).step(P())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_a_finite_update_beyond_the_quick_bound_is_still_applied(name, dtype, threads,
                                                                 restore_threads):
    """RMSprop and Adam check first with a bound that needs no division,
    |theta| + lr/eps * |numerator|. With a tiny eps and huge gradients that bound overflows
    though every new value is finite: the exact check must then pass the step, stored with
    the bits of check=False."""
    big = 1e15 if dtype == np.float32 else 1e150
    eps = 1e-30 if dtype == np.float32 else 1e-300
    count = 2**19 + 3  # on 2 threads, one range of each thread fails the bound
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(count).astype(dtype)
    grad = rng.standard_normal(count).astype(dtype)
    grad[[5, count - 2]] = big
    state = [np.zeros(count, dtype) for _ in range(2 if name == "adam" else 1)]

    def call(th, st, check):
        if name == "adam":
            return ops.adam_step(th, st[0], st[1], grad, 1e-3, 0.9, 0.999, eps, 1, check=check)
        return ops.rmsprop_step(th, st[0], grad, 1e-3, 0.9, eps, check=check)

    step = 1e-3 / 0.1 if name == "adam" else 1e-3
    with np.errstate(over="ignore"):
        assert not np.isfinite(dtype(step / eps) * dtype(0.1 * big))  # the bound overflows
    ops.set_num_threads(threads)
    a = [theta.copy()] + [x.copy() for x in state]
    b = [theta.copy()] + [x.copy() for x in state]
    assert call(a[0], a[1:], False) is True
    assert call(b[0], b[1:], True) is True
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert np.isfinite(b[0]).all() and not np.array_equal(b[0], theta)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["rmsprop", "adam"])
@pytest.mark.parametrize("case", ["negative s", "eps > 1"])
def test_a_step_the_quick_bound_must_not_certify_writes_nothing(name, dtype, case):
    """The quick bound must not pass what the exact check refuses: a negative second moment
    (whose square root is NaN), or eps > 1 with lr * numerator beyond the largest value
    before the division by eps. check=True then returns False and writes nothing."""
    big = 1e30 if dtype == np.float32 else 1e300
    count = 37
    theta = np.ones(count, dtype)
    grad = np.full(count, 0.5, dtype)
    v, s = np.zeros(count, dtype), np.zeros(count, dtype)
    lr, eps = 1e-3, 1e-8
    if case == "negative s":
        s[4] = -1.0
        grad[:] = 0.0  # s stays -1 after beta * s
    else:
        lr, eps = big, big
        grad[7] = 1e10 if dtype == np.float32 else 1e100

    def call(check):
        if name == "adam":
            return ops.adam_step(theta, v, s, grad, lr, 0.9, 0.999, eps, 1, check=check)
        return ops.rmsprop_step(theta, s, grad, lr, 0.9, eps, check=check)

    before = [a.copy() for a in (theta, v, s)]
    assert call(True) is False
    for a, b in zip((theta, v, s), before):
        assert np.array_equal(a, b), "a refused step wrote something"
    assert call(False) is False  # the update itself is not finite
    assert not np.isfinite(theta).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_check_keeps_a_margin_of_half_the_largest_value(dtype):
    """A new value beyond half the largest finite value counts as diverged (so that the
    check and the store, two compiled loops, can never disagree about an overflow)."""
    big = np.finfo(dtype).max
    theta = np.array([0.4 * big, 0.0], dtype)
    for target, verdict in ((0.49 * big, True), (0.51 * big, False)):
        th = theta.copy()
        grad = np.array([(0.4 * big - target) / 1.0, 0.0], dtype)  # lr 1: th - g = target
        assert ops.sgd_step(th, grad, 1.0, check=True) is verdict
        assert np.isfinite(th).all()
        assert (th[0] == dtype(0.4 * big) - grad[0]) if verdict else np.array_equal(th, theta)


# ---- subnormal numbers count as 0 in a step on x86 (csrc/common.hpp: FlushSubnormals)

TINY = {np.float32: np.finfo(np.float32).tiny, np.float64: np.finfo(np.float64).tiny}
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="the steps flush subnormals through x86's MXCSR")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("count", [17, 2**19 + 3])  # the last runs on 2 threads
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam"])
@x86_only
def test_state_that_decays_below_the_smallest_normal_is_stored_as_zero(name, dtype, count,
                                                                      threads, restore_threads):
    """Where the gradient is 0 the state decays geometrically. Stored subnormal, it would
    make every later step take a ~100-cycle assist per operation on Intel cores."""
    _, call = STEP_KERNELS[name]
    theta, state, grad = _arrays(name, count, dtype)
    dead = np.arange(count) % 3 == 0
    grad[dead] = 0.0
    theta[dead] = 0.0  # with weight decay the gradient is grad + w*theta: 0 here
    tiny = TINY[dtype]
    for st in state:
        st[dead] = np.where(np.arange(count)[dead] % 2 == 0, 1.0005 * tiny, 0.5 * tiny)  # normal, subnormal
    before = [f64(st) for st in state]
    ops.set_num_threads(threads)
    assert call(theta, state, grad, True)
    for st, st0 in zip(state, before):
        assert not np.any((st != 0) & (np.abs(st) < tiny)), "a subnormal value was stored"
        assert np.all(st[dead] == 0)  # beta * 1.0005 tiny is subnormal for beta <= 0.999
        live = ~dead
        assert np.all(np.abs(st[live]) > tiny)  # the others are untouched by the flush
        assert not np.array_equal(st[live], st0[live])


@pytest.mark.parametrize("dtype", DTYPES)
@x86_only
def test_adam_with_a_gradient_whose_square_is_subnormal_matches_the_reference(dtype):
    """g = 1e-20 (float32) or 1e-160 (float64): g^2 is below the smallest normal and counts
    as 0, so s stays 0 and the step is lr * vhat / eps, as in float64 to the last digits."""
    g0 = 1e-20 if dtype == np.float32 else 1e-160
    theta = np.ones(64, dtype)
    v, s = np.zeros(64, dtype), np.zeros(64, dtype)
    grad = np.full(64, g0, dtype)
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    assert ops.adam_step(theta, v, s, grad, lr, b1, b2, eps, 1, check=True)
    v_ref = (1 - b1) * f64(grad)
    s_ref = (1 - b2) * f64(grad) ** 2  # < tiny: a subnormal (float32) or below it (float64)
    assert np.all(s_ref < TINY[dtype])
    theta_ref = 1.0 - lr * (v_ref / (1 - b1)) / (np.sqrt(s_ref / (1 - b2)) + eps)
    np.testing.assert_array_equal(s, 0)
    assert_close(v, v_ref, RTOL[dtype])
    assert_close(theta, theta_ref, RTOL[dtype])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_the_threads_floating_point_mode_is_restored_after_a_step(name, threads,
                                                                  restore_threads):
    """Subnormals are flushed only inside the step: afterwards NumPy on the calling thread and
    a parallel pydl kernel on the OpenMP threads see them again. Leaky ReLU with alpha 0.5
    keeps half a tiny (DAZ would read it as 0) and makes -tiny into a subnormal (FTZ would
    flush it)."""
    _, call = STEP_KERNELS[name]
    count = 2**19 + 3  # parallel on 2 threads
    theta, state, grad = _arrays(name, count, np.float32)
    ops.set_num_threads(threads)
    assert call(theta, state, grad, True)
    half_tiny = np.float32(TINY[np.float32]) * np.float32(0.5)
    assert half_tiny != 0 and half_tiny < TINY[np.float32]
    tiny = np.float32(TINY[np.float32])
    Z = np.where(np.arange(2**20) % 2 == 0, half_tiny, -tiny).astype(np.float32)
    out = np.empty_like(Z)
    ops.activation_forward(out, Z, "leaky_relu", alpha=0.5)  # 2^20 elements: parallel
    expected = np.where(Z > 0, Z, np.float32(0.5) * Z)
    assert np.all(expected != 0)
    np.testing.assert_array_equal(out, expected)
