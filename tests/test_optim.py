"""Optimizers (pydl.optim) against float64 NumPy implementations of the DESIGN formulas,
over 12+ steps of random gradients, with the learning rate changed by hand mid-run;
state_dict round trips; hyperparameter validation; and ``minimize``.

SGD:      theta -= lr (g + wd theta)
Momentum: v = beta v + (1-beta) g; theta -= lr v   (nesterov: lr (beta v + (1-beta) g), new v)
RMSprop:  s = beta s + (1-beta) g^2; theta -= lr g / (sqrt(s) + eps)
Adam:     v = b1 v + (1-b1) g; s = b2 s + (1-b2) g^2; vhat = v/(1-b1^t); shat = s/(1-b2^t);
          theta -= lr vhat / (sqrt(shat) + eps);  weight_decay: g += wd theta (coupled) or,
          decoupled (AdamW), theta -= lr wd theta_old besides.
"""
import math

import numpy as np
import pytest

import pydl
from conftest import assert_close
from pydl import optim

P = 257
STEPS = 14


class Holder:
    """Anything with theta/dtheta works as a 'model' for an optimizer."""

    def __init__(self, theta):
        self.theta = np.array(theta, dtype=np.float64)
        self.dtheta = np.zeros_like(self.theta)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(P)
    grads = rng.standard_normal((STEPS, P)) * np.exp(rng.uniform(-4, 2, P))
    grads[:, ::11] = 0.0                # some coordinates never get a gradient
    lrs = [0.05] * 5 + [0.2] * 4 + [0.01] * (STEPS - 9)   # lr set by hand between steps
    return theta0, grads, lrs


def ref_sgd(theta, grads, lrs, wd=0.0):
    th = theta.copy()
    for g, lr in zip(grads, lrs):
        th = th - lr * (g + wd * th)
    return th


def ref_momentum(theta, grads, lrs, beta, nesterov, wd=0.0):
    th, v = theta.copy(), np.zeros_like(theta)
    for g, lr in zip(grads, lrs):
        g = g + wd * th
        v = beta * v + (1 - beta) * g
        th = th - lr * ((beta * v + (1 - beta) * g) if nesterov else v)
    return th, v


def ref_rmsprop(theta, grads, lrs, beta, eps, wd=0.0):
    th, s = theta.copy(), np.zeros_like(theta)
    for g, lr in zip(grads, lrs):
        g = g + wd * th
        s = beta * s + (1 - beta) * g ** 2
        th = th - lr * g / (np.sqrt(s) + eps)
    return th, s


def ref_adam(theta, grads, lrs, b1, b2, eps, wd=0.0, decoupled=False):
    th, v, s = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if not decoupled:
            g = g + wd * th
        v = b1 * v + (1 - b1) * g
        s = b2 * s + (1 - b2) * g ** 2
        vhat, shat = v / (1 - b1 ** t), s / (1 - b2 ** t)
        new = th - lr * vhat / (np.sqrt(shat) + eps)
        if decoupled:
            new = new - lr * wd * th
        th = new
    return th, v, s


def run(opt, theta0, grads, lrs):
    h = Holder(theta0)
    for g, lr in zip(grads, lrs):
        opt.lr = lr
        h.dtheta[...] = g
        opt.step(h)
    assert opt.t == len(grads)
    return h.theta


def check(theta, ref, what):
    assert_close(theta, ref, 1e-12, 1e-13 * (1 + np.abs(ref).max())), what


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sgd_matches_formula(wd):
    theta0, grads, lrs = problem(1)
    th = run(optim.SGD(lr=0.1, weight_decay=wd), theta0, grads, lrs)
    check(th, ref_sgd(theta0, grads, lrs, wd), "sgd")


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.5])
def test_momentum_matches_formula(beta, nesterov):
    theta0, grads, lrs = problem(2)
    opt = optim.Momentum(lr=0.1, beta=beta, nesterov=nesterov)
    th = run(opt, theta0, grads, lrs)
    ref, v = ref_momentum(theta0, grads, lrs, beta, nesterov)
    check(th, ref, f"momentum beta={beta} nesterov={nesterov}")
    check(opt.state["v"], v, "momentum v")


def test_nesterov_differs_from_plain_momentum():
    theta0, grads, lrs = problem(3)
    a = run(optim.Momentum(beta=0.9), theta0, grads, lrs)
    b = run(optim.Momentum(beta=0.9, nesterov=True), theta0, grads, lrs)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("beta, eps", [(0.9, 1e-8), (0.99, 1e-3)])
def test_rmsprop_matches_formula(beta, eps):
    theta0, grads, lrs = problem(4)
    opt = optim.RMSprop(beta=beta, eps=eps)
    th = run(opt, theta0, grads, lrs)
    ref, s = ref_rmsprop(theta0, grads, lrs, beta, eps)
    check(th, ref, "rmsprop")
    check(opt.state["s"], s, "rmsprop s")


@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.05, False), (0.05, True)])
@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_matches_formula(b1, b2, wd, decoupled):
    theta0, grads, lrs = problem(5)
    opt = optim.Adam(beta1=b1, beta2=b2, weight_decay=wd, decoupled=decoupled)
    th = run(opt, theta0, grads, lrs)
    ref, v, s = ref_adam(theta0, grads, lrs, b1, b2, 1e-8, wd, decoupled)
    check(th, ref, f"adam wd={wd} decoupled={decoupled}")
    check(opt.state["v"], v, "adam v")
    check(opt.state["s"], s, "adam s")


def test_adamw_differs_from_coupled_decay():
    theta0, grads, lrs = problem(6)
    a = run(optim.Adam(weight_decay=0.1), theta0, grads, lrs)
    b = run(optim.Adam(weight_decay=0.1, decoupled=True), theta0, grads, lrs)
    c = run(optim.Adam(), theta0, grads, lrs)
    assert not np.allclose(a, b) and not np.allclose(b, c) and not np.allclose(a, c)


def test_defaults_match_design():
    assert (optim.Adam().lr, optim.Adam().beta1, optim.Adam().beta2, optim.Adam().eps) == (1e-3, 0.9, 0.999, 1e-8)
    assert optim.Momentum().beta == 0.9
    assert (optim.RMSprop().beta, optim.RMSprop().eps) == (0.9, 1e-8)


def test_lr_set_between_steps_takes_effect():
    h = Holder(np.zeros(3))
    opt = optim.SGD(lr=0.5)
    h.dtheta[...] = 1.0
    opt.step(h)
    assert np.array_equal(h.theta, [-0.5] * 3)
    opt.lr = 0.25
    opt.step(h)
    assert np.array_equal(h.theta, [-0.75] * 3)


def test_optimizer_on_a_float32_model():
    model = pydl.mlp([4, 6, 3], seed=0)
    opt = optim.Adam(lr=0.01)
    theta0 = model.theta.astype(np.float64)
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((STEPS, model.n_params)).astype(np.float32)
    for g in grads:
        model.dtheta[...] = g
        opt.step(model)
    assert opt.state["v"].dtype == np.float32
    ref, _, _ = ref_adam(theta0, grads.astype(np.float64), [0.01] * STEPS, 0.9, 0.999, 1e-8)
    assert_close(model.theta, ref, 1e-4, 1e-5)
    other = pydl.mlp([4, 7, 3], seed=0)
    with pytest.raises(ValueError, match="new optimizer"):
        opt.step(other)


# ----------------------------------------------------------------------------- state_dict
OPTS = [
    lambda: optim.SGD(lr=0.05, weight_decay=0.01),
    lambda: optim.Momentum(lr=0.05, beta=0.8, nesterov=True),
    lambda: optim.RMSprop(lr=0.01, beta=0.95, eps=1e-6),
    lambda: optim.Adam(lr=0.02, beta1=0.8, beta2=0.99, weight_decay=0.01, decoupled=True),
]


@pytest.mark.parametrize("make", OPTS, ids=["sgd", "momentum", "rmsprop", "adamw"])
def test_state_dict_round_trip_continues_identically(make):
    theta0, grads, _ = problem(7)
    a = make()
    h = Holder(theta0)
    for g in grads[:6]:
        h.dtheta[...] = g
        a.step(h)
    sd = a.state_dict()
    assert sd["type"] == type(a).__name__ and sd["t"] == 6
    assert sd["hyperparameters"] == a.hyperparameters()
    b = make()
    b.load_state_dict(sd)
    c = optim.Optimizer.from_state_dict(sd)
    assert type(c) is type(a) and c.hyperparameters() == a.hyperparameters() and c.t == 6
    ha, hb, hc = Holder(h.theta), Holder(h.theta), Holder(h.theta)
    for g in grads[6:]:
        for opt, hh in ((a, ha), (b, hb), (c, hc)):
            hh.dtheta[...] = g
            opt.step(hh)
    assert np.array_equal(ha.theta, hb.theta), "load_state_dict: trajectories differ"
    assert np.array_equal(ha.theta, hc.theta), "from_state_dict: trajectories differ"
    # the state_dict is a copy, not a live view
    for k, v in sd["arrays"].items():
        assert not np.shares_memory(v, a.state[k])
        assert not np.array_equal(v, a.state[k]), f"state_dict array {k} changed with the optimizer"


def test_load_state_dict_restores_the_hyperparameters_the_moments_were_built_with():
    theta0, grads, _ = problem(7)
    a = optim.Adam(lr=0.01, beta1=0.5, beta2=0.9, eps=1e-3)
    h = Holder(theta0)
    for g in grads[:5]:
        h.dtheta[...] = g
        a.step(h)
    b = optim.Adam()
    b.load_state_dict(a.state_dict())
    assert b.hyperparameters() == a.hyperparameters() and b.state_dict()["hyperparameters"] == \
        a.state_dict()["hyperparameters"]
    ha, hb = Holder(h.theta), Holder(h.theta)
    for g in grads[5:]:
        for opt, hh in ((a, ha), (b, hb)):
            hh.dtheta[...] = g
            opt.step(hh)
    np.testing.assert_array_equal(ha.theta, hb.theta)
    bad = dict(a.state_dict(), hyperparameters=dict(a.hyperparameters(), beta1=1.5))
    c = optim.Adam()
    with pytest.raises(ValueError, match="beta1"):
        c.load_state_dict(bad)
    assert c.hyperparameters() == optim.Adam().hyperparameters() and c.t == 0 and c.state == {}
    with pytest.raises(ValueError, match="bad optimizer hyperparameters.*beta"):
        optim.Adam().load_state_dict(dict(a.state_dict(), hyperparameters={"beta": 0.9}))


def test_load_state_dict_sets_the_hyperparameters_the_state_holds_and_keeps_the_rest():
    class Clipped(optim.SGD):
        """A user's optimizer whose constructor takes more than its hyperparameters."""

        def __init__(self, clip, **kw):
            super().__init__(**kw)
            self.clip = clip

    a = Clipped(1.0, lr=0.5)
    b = Clipped(2.0)
    b.load_state_dict(a.state_dict())
    assert b.lr == 0.5 and b.clip == 2.0
    c = optim.Adam(beta1=0.8, weight_decay=0.1)
    c.load_state_dict({"type": "Adam", "hyperparameters": {"lr": 0.01}, "t": 0, "arrays": {}})
    assert (c.lr, c.beta1, c.weight_decay) == (0.01, 0.8, 0.1)


def test_load_state_dict_refuses_mismatches():
    a = optim.Adam()
    h = Holder(np.ones(4))
    h.dtheta[...] = 1
    a.step(h)
    sd = a.state_dict()
    with pytest.raises(ValueError, match="Adam"):
        optim.Momentum().load_state_dict(sd)
    bad = dict(sd, t=-1)
    with pytest.raises(ValueError, match="t"):
        optim.Adam().load_state_dict(bad)
    bad = dict(sd, arrays={"v": sd["arrays"]["v"]})
    with pytest.raises(ValueError, match="arrays"):
        optim.Adam().load_state_dict(bad)
    bad = dict(sd, arrays={"v": np.ones(4), "s": np.ones(5)})
    with pytest.raises(ValueError, match="length"):
        optim.Adam().load_state_dict(bad)
    bad = dict(sd, arrays={"v": np.full(4, np.nan), "s": np.ones(4)})
    with pytest.raises(ValueError, match="finite"):
        optim.Adam().load_state_dict(bad)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.Optimizer.from_state_dict(dict(sd, type="Adagrad"))


def _adam_state():
    a = optim.Adam()
    h = Holder(np.ones(4))
    h.dtheta[...] = 1
    a.step(h)
    return a.state_dict()


@pytest.mark.parametrize("change, error, match", [
    (lambda sd: [sd], TypeError, r"^optimizer state must be a dict"),
    (lambda sd: dict(sd, arrays=[1, 2]), TypeError, r"^optimizer state arrays must be a dict"),
    (lambda sd: dict(sd, arrays={"v": 1, "s": 2}), TypeError, r"^optimizer state array 'v' .*int"),
    (lambda sd: dict(sd, arrays={"v": np.array(["a"] * 4), "s": sd["arrays"]["s"]}), TypeError,
     r"^optimizer state array 'v' .*dtype <U1"),
    (lambda sd: dict(sd, arrays={"v": sd["arrays"]["v"], "s": [0.0] * 4}), TypeError,
     r"^optimizer state array 's' .*list"),
    (lambda sd: dict(sd, arrays={"v": np.ones(4), "s": np.ones(4, np.float32)}), ValueError, "dtype"),
    (lambda sd: dict(sd, t=0, arrays={"w": np.ones(4)}), ValueError, r"needs arrays \['v', 's'\]"),
], ids=["not-a-dict", "arrays-list", "arrays-ints", "arrays-strings", "array-list", "mixed-dtypes",
        "unknown-name-at-t0"])
def test_load_state_dict_refuses_malformed_input_naming_it(change, error, match):
    bad = change(_adam_state())
    a = optim.Adam()
    with pytest.raises(error, match=match):
        a.load_state_dict(bad)
    assert a.t == 0 and a.state == {}, "a refused state must leave the optimizer as it was"


@pytest.mark.parametrize("d, error, match", [
    (3, TypeError, r"^optimizer state must be a dict"),
    ({"type": [1]}, ValueError, r"^unknown optimizer type \[1\]"),
    ({"type": None}, ValueError, r"^unknown optimizer type None"),
    ({"type": "Adam", "hyperparameters": [1], "t": 0}, TypeError, r"^optimizer hyperparameters must be a dict"),
], ids=["not-a-dict", "type-list", "type-none", "hyperparameters-list"])
def test_from_state_dict_refuses_malformed_input_naming_it(d, error, match):
    with pytest.raises(error, match=match):
        optim.Optimizer.from_state_dict(d)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make, name", [
    (lambda: optim.SGD(lr=float("nan")), "lr"),
    (lambda: optim.SGD(lr=-0.1), "lr"),
    (lambda: optim.SGD(lr=0.0), "lr"),
    (lambda: optim.Adam(lr=float("inf")), "lr"),
    (lambda: optim.Momentum(beta=1.0), "beta"),
    (lambda: optim.Momentum(beta=-0.1), "beta"),
    (lambda: optim.Momentum(beta=float("nan")), "beta"),
    (lambda: optim.RMSprop(beta=1.5), "beta"),
    (lambda: optim.RMSprop(eps=0.0), "eps"),
    (lambda: optim.Adam(beta1=1.0), "beta1"),
    (lambda: optim.Adam(beta1=-0.5), "beta1"),
    (lambda: optim.Adam(beta2=1.0), "beta2"),
    (lambda: optim.Adam(beta2=-1e-3), "beta2"),
    (lambda: optim.Adam(eps=-1e-8), "eps"),
    (lambda: optim.Adam(weight_decay=-0.1), "weight_decay"),
    (lambda: optim.SGD(weight_decay=float("nan")), "weight_decay"),
    # integers beyond the float range: a ValueError naming them, not OverflowError
    (lambda: optim.Adam(lr=10**400), "lr"),
    (lambda: optim.SGD(weight_decay=10**400), "weight_decay"),
    (lambda: optim.Momentum(beta=-10**400), "beta"),
    (lambda: optim.Adam(beta2=10**400), "beta2"),
    (lambda: optim.RMSprop(eps=10**400), "eps"),
    # a subnormal eps counts as 0 in the native step: 0/0 = NaN on a zero gradient
    (lambda: optim.Adam(eps=1e-310), "eps"),
    (lambda: optim.RMSprop(eps=1e-310), "eps"),
    (lambda: optim.Adam(eps=np.float64(2.2e-308)), "eps"),
])
def test_bad_hyperparameters_raise_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda v: optim.Momentum(nesterov=v), "nesterov"),
    (lambda v: optim.Adam(decoupled=v), "decoupled"),
])
@pytest.mark.parametrize("value", ["no", 1, 0, None, 1.0])
def test_flags_must_be_bools(make, name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be a bool"):
        make(value)


@pytest.mark.parametrize("make, name", [
    (lambda v: optim.Momentum(nesterov=v), "nesterov"),
    (lambda v: optim.Adam(decoupled=v), "decoupled"),
])
def test_flags_accept_numpy_bools(make, name):
    for v in (np.True_, np.False_, True, False):
        flag = getattr(make(v), name)
        assert type(flag) is bool and flag == bool(v)


@pytest.mark.parametrize("make", [lambda eps: optim.Adam(lr=0.1, eps=eps),
                                  lambda eps: optim.RMSprop(lr=0.1, eps=eps)], ids=["adam", "rmsprop"])
def test_smallest_normal_eps_steps_a_zero_gradient_to_no_change(make):
    """eps = the smallest normal float64 is accepted and, unlike a subnormal one, is not
    counted as 0: a zero gradient moves nothing (0 / eps), no NaN."""
    tiny = np.finfo(np.float64).tiny
    opt = make(tiny)
    assert opt.eps == tiny
    h = Holder(np.array([1.0, -2.0, 3.0]))
    for _ in range(3):
        h.dtheta[...] = 0.0
        opt.step(h)
    assert np.array_equal(h.theta, [1.0, -2.0, 3.0]), h.theta


@pytest.mark.parametrize("value", [float("nan"), -1.0, 0.0, float("inf"), 10**400],
                         ids=["nan", "-1", "0", "inf", "10**400"])
def test_setting_a_bad_lr_later_raises(value):
    opt = optim.Adam(lr=0.01)
    with pytest.raises(ValueError, match=r"^lr "):
        opt.lr = value
    assert opt.lr == 0.01, "a refused lr must leave the old one"


def test_get_optimizer():
    assert isinstance(optim.get_optimizer("adam"), optim.Adam)
    assert optim.get_optimizer("Momentum", beta=0.5).beta == 0.5
    o = optim.SGD()
    assert optim.get_optimizer(o) is o
    with pytest.raises(ValueError, match="optimizer"):
        optim.get_optimizer("lbfgs")


# ----------------------------------------------------------------------------- minimize
def f_scalar(w):
    return w ** 2 - 10 * w + 25


@pytest.mark.parametrize("opt, steps, tol", [
    (optim.SGD(lr=0.1), 200, 1e-6),
    (optim.Momentum(lr=0.1, beta=0.9), 500, 1e-6),
    (optim.RMSprop(lr=0.01), 2000, 2e-2),
    (optim.Adam(lr=0.1), 1000, 1e-4),
], ids=["sgd", "momentum", "rmsprop", "adam"])
def test_minimize_scalar_lands_on_5(opt, steps, tol):
    w = optim.minimize(f_scalar, 0.0, opt, steps)
    assert isinstance(w, float), type(w)
    assert abs(w - 5) < tol, f"{opt!r}: w = {w}"


def test_minimize_with_analytic_gradient_matches_numerical():
    w1 = optim.minimize(f_scalar, 0.0, optim.SGD(lr=0.1), 20)
    w2 = optim.minimize(f_scalar, 0.0, optim.SGD(lr=0.1), 20, grad=lambda w: 2 * w - 10)
    assert w1 == pytest.approx(w2, rel=1e-7)
    # 20 steps of w <- 0.8 w + 1 from 0
    assert w2 == pytest.approx(5 * (1 - 0.8 ** 20), rel=1e-12)


def test_minimize_vector_function():
    c = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    a = np.array([[1.0, 2.0, 0.5], [3.0, 1.0, 2.0]])

    def f(w):
        assert w.shape == (2, 3)
        return float(np.sum(a * (w - c) ** 2))

    x0 = np.zeros((2, 3))
    w = optim.minimize(f, x0, optim.Adam(lr=0.05), 3000)
    assert w.shape == (2, 3)
    assert_close(w, c, 0, 1e-3)
    assert np.all(x0 == 0), "x0 must not be modified"
    w_grad = optim.minimize(f, x0, optim.SGD(lr=0.1), 300, grad=lambda w: 2 * a * (w - c))
    assert_close(w_grad, c, 0, 1e-8)


def test_minimize_bad_arguments():
    with pytest.raises(TypeError, match="optimizer"):
        optim.minimize(f_scalar, 0.0, "adam", 10)
    with pytest.raises(ValueError, match="steps"):
        optim.minimize(f_scalar, 0.0, optim.SGD(), -1)
    with pytest.raises(ValueError, match="x0"):
        optim.minimize(f_scalar, float("nan"), optim.SGD(), 1)
    with pytest.raises(ValueError, match="grad"):
        optim.minimize(lambda w: float(np.sum(w ** 2)), np.zeros(3), optim.SGD(), 1, grad=lambda w: np.zeros(2))
    with pytest.raises(FloatingPointError, match="non-finite"), np.errstate(over="ignore", invalid="ignore"):
        optim.minimize(lambda w: w ** 4, 1.0, optim.SGD(lr=10.0), 50, grad=lambda w: 4 * np.float64(w) ** 3)
    assert optim.minimize(f_scalar, 2.0, optim.SGD(), 0) == 2.0
    assert not math.isnan(optim.minimize(f_scalar, 2.0, optim.SGD(), 1))
