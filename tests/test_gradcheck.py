"""pydl.gradcheck: numerical gradients, the model check and the layer check.

Bad input here is the argument-by-argument kind the red-team found; the basic bad-input
table is in test_reliability_badinput.py.
"""
import math

import numpy as np
import pytest

import pydl
from pydl import cli, nn
from pydl.gradcheck import _difference, check_layer, gradient_check, numerical_gradient

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 2))
Y = np.array([0, 1, 0, 1, 1, 0])


def difference_ref(a, b):
    """The DESIGN formula in plain NumPy float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))


# ------------------------------------------------------------------ NaN / inf gradients
class NaNScale(nn.Layer):
    """A = w * A_prev; its backward has a bug that makes dw NaN."""

    def param_shapes(self):
        return [("w", (1,))]

    def reset_parameters(self, rng):
        self.w[...] = 1.5

    def forward(self, A_prev, training):
        self._A = A_prev
        return A_prev * self.w[0]

    def backward(self, dA):
        self.dw[...] = np.sum(dA * self._A) * np.nan
        return dA * self.w[0]


class NaNDense(nn.Dense):
    """A Dense whose backward leaves a NaN in dW[1, 0]."""

    def backward(self, dA):
        dA_prev = super().backward(dA)
        self.dW[1, 0] = np.nan
        return dA_prev


def test_difference_matches_numpy_and_flags_nonfinite():
    a, b = RNG.standard_normal(7), RNG.standard_normal(7)
    assert _difference(a, b) == pytest.approx(difference_ref(a, b), rel=1e-14)
    assert _difference(np.zeros(3), np.zeros(3)) == 0.0
    for bad in (np.nan, np.inf, -np.inf):
        assert _difference(np.array([bad, 1.0]), np.array([1.0, 1.0])) == math.inf
        assert _difference(np.array([1.0, 1.0]), np.array([1.0, bad])) == math.inf
    # huge but finite: the norms must not overflow into inf/inf = NaN
    assert _difference(np.array([1e308, 1e308]), np.array([1e308, -1e308])) == \
        pytest.approx(difference_ref([1, 1], [1, -1]), rel=1e-14)


def test_check_layer_nan_gradient_is_a_bug_listed_first():
    r = check_layer(NaNScale(), RNG.standard_normal((4, 3)))
    assert r.difference == math.inf and r.verdict == "bug" and not r.passed
    assert r.per_parameter["w"] == math.inf
    name, index, backprop, numerical = r.worst[0]
    assert (name, index) == ("w", (0,)) and math.isnan(backprop) and math.isfinite(numerical)
    assert "inf -> bug" in str(r)


def test_gradient_check_nan_gradient_is_a_bug_listed_first():
    model = pydl.Sequential([NaNDense(2, 3), nn.ReLU(), nn.Dense(3, 2)], seed=0)
    r = gradient_check(model, X, Y, n_worst=3)
    assert r.difference == math.inf and r.verdict == "bug" and not r.passed
    assert r.per_parameter["0.W"] == math.inf and r.per_parameter["2.W"] < 1e-7
    name, index, backprop, _ = r.worst[0]
    assert (name, index) == ("0.W", (1, 0)) and math.isnan(backprop)
    assert len(r.worst) == 3


# ------------------------------------------------------------------ eps
@pytest.mark.parametrize("call", [
    lambda eps: gradient_check(pydl.mlp([2, 3, 2], seed=0), X, Y, eps=eps),
    lambda eps: check_layer(nn.Dense(2, 3), X, eps=eps),
    lambda eps: numerical_gradient(lambda t: float(t.sum()), np.zeros(2), eps=eps),
], ids=["gradient_check", "check_layer", "numerical_gradient"])
@pytest.mark.parametrize("eps, exc, match", [
    (1e300, ValueError, r"eps must be a small perturbation <= 0.01 \(e.g. 1e-7\), got 1e\+300"),
    (0.5, ValueError, r"eps must be a small perturbation <= 0.01"),
    (math.inf, ValueError, r"eps must be a finite number > 0, got inf"),
    (-1e-7, ValueError, r"eps must be a finite number > 0, got -1e-07"),
    ("1e-7", TypeError, r"eps must be a float, got str"),
    (True, TypeError, r"eps must be a float, got bool"),
])
def test_eps_must_be_a_small_positive_float(call, eps, exc, match):
    with pytest.raises(exc, match=match):
        call(eps)


def test_eps_accepts_numpy_floats():
    r = gradient_check(pydl.mlp([2, 3, 2], seed=0), X, Y, eps=np.float32(1e-6))
    assert r.passed


# ------------------------------------------------------------------ check_layer leaves the model alone
@pytest.mark.parametrize("batchnorm", [False, True])
def test_check_layer_on_every_layer_of_a_model_leaves_it_bitwise_unchanged(batchnorm):
    model = pydl.mlp([2, 3, 3, 2], batchnorm=batchnorm, seed=0)
    model.fit(X, Y, epochs=2, batch_size=3, verbose=0)  # non-trivial running statistics
    theta, proba = model.theta.copy(), model.predict_proba(X)
    state = {k: v.copy() for k, v in model._state_arrays().items()}
    for i, layer in enumerate(model.layers):
        before = dict(layer.__dict__)
        n_in = layer.n_in if layer.n_in is not None else model.layers[i - 1].n_out
        r = check_layer(layer, RNG.standard_normal((5, n_in)))
        assert r.passed, f"layer {i}:\n{r}"
        assert "input" in r.per_parameter
        assert layer.__dict__.keys() == before.keys()
        for k, v in before.items():  # the same objects: views into the model, not copies
            assert layer.__dict__[k] is v, f"layer {i} attribute {k} was replaced"
        assert np.array_equal(model.theta, theta)
        assert np.array_equal(model.predict_proba(X), proba)
        for k, v in model._state_arrays().items():
            assert np.array_equal(v, state[k]), k
    for (name, view), (_, grad) in zip(model.parameters(), model.gradients()):
        layer = model.layers[int(name.split(".")[0])]
        attr = name.split(".")[1]
        assert np.shares_memory(getattr(layer, attr), model.theta)
        assert np.shares_memory(getattr(layer, "d" + attr), model.dtheta)
    model.fit(X, Y, epochs=1, batch_size=3, verbose=0)  # still trains
    assert not np.array_equal(model.theta, theta)


def test_check_layer_leaves_a_standalone_layer_unchanged():
    layer = nn.Dense(2, 3)
    layer._standalone(np.float32)
    W, dW = layer.W, layer.dW
    W0 = W.copy()
    r = check_layer(layer, X)
    assert r.passed
    assert layer.W is W and layer.dW is dW and W.dtype == np.float32 and np.array_equal(W, W0)
    unbound = NaNScale()
    check_layer(unbound, X)
    assert unbound.params == {} and not hasattr(unbound, "w")


# ------------------------------------------------------------------ numerical_gradient
@pytest.mark.parametrize("theta", [np.array([1, 2]), np.array([1.0, 2.0], np.float32),
                                   np.array([True, False])], ids=["int64", "float32", "bool"])
def test_numerical_gradient_requires_float64_theta(theta):
    with pytest.raises(TypeError, match=rf"theta must be a float64 array .* got dtype {theta.dtype}"):
        numerical_gradient(lambda t: float((t ** 2).sum()), theta)


def test_numerical_gradient_matches_the_derivative():
    theta = np.array([1.0, 2.0, -0.5])
    g = numerical_gradient(lambda t: float((t ** 2).sum()), theta)
    np.testing.assert_allclose(g, 2 * theta, rtol=1e-7)
    assert np.array_equal(theta, [1.0, 2.0, -0.5])  # restored


# ------------------------------------------------------------------ gradient_check arguments
_M = pydl.mlp([2, 3, 2], seed=0)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(model="x"), TypeError, r"model must be a pydl.Sequential, got str"),
    (dict(model=nn.Dense(2, 2)), TypeError, r"model must be a pydl.Sequential, got Dense"),
    (dict(n_worst="a"), TypeError, r"n_worst must be an int, got str"),
    (dict(n_worst=2.7), TypeError, r"n_worst must be an int, got float"),
    (dict(n_worst=True), TypeError, r"n_worst must be an int, got bool"),
    (dict(n_worst=-1), ValueError, r"n_worst must be >= 0, got -1"),
    (dict(seed="a", coordinates=3), TypeError, r"seed must be None or an int >= 0, got str"),
    (dict(seed=1.5), TypeError, r"seed must be None or an int >= 0, got float"),
    (dict(seed=-1, coordinates=3), ValueError, r"seed must be >= 0, got -1"),
    (dict(disable_dropout="no"), TypeError, r"disable_dropout must be True or False, got str"),
    (dict(disable_dropout=1), TypeError, r"disable_dropout must be True or False, got int"),
])
def test_gradient_check_bad_arguments(kwargs, exc, match):
    args = dict(model=_M, X=X, y=Y)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gradient_check(**args)


def test_gradient_check_accepts_numpy_scalars():
    r = gradient_check(_M, X, Y, coordinates=np.int64(5), seed=np.int64(3), n_worst=np.int64(2),
                       disable_dropout=np.bool_(False))
    assert r.passed and r.n_checked == 5 and len(r.worst) == 2


def test_check_layer_bad_seed():
    with pytest.raises(TypeError, match=r"seed must be an int >= 0, got str"):
        check_layer(nn.Dense(2, 3), X, seed="a")


# ------------------------------------------------------------------ batch norm over one example
def test_batchnorm_model_needs_two_examples():
    model = pydl.mlp([2, 3, 2], batchnorm=True, seed=0)
    with pytest.raises(ValueError, match=r"X has 1 row but the model has BatchNorm.*at least 2"):
        gradient_check(model, X[:1], Y[:1])
    with pytest.raises(ValueError, match=r"X has 1 row but the layer is BatchNorm.*at least 2"):
        check_layer(model.layers[1], X[:1, :1].repeat(3, axis=1))
    assert gradient_check(model, X[:2], Y[:2]).passed


def test_cli_gradcheck_one_example_is_refused_not_a_false_bug(capsys):
    assert cli.main(["gradcheck", "--examples", "1"]) == 2
    err = capsys.readouterr().err
    assert "pydl gradcheck: error: X has 1 row but the model has BatchNorm" in err
    assert cli.main(["gradcheck", "--examples", "2", "--coordinates", "200"]) == 0
    assert "great" in capsys.readouterr().out


@pytest.mark.parametrize("penalty", [{"l2": 2.0}, {"l1": 2.0}, {"l2": 0.5, "l1": 0.5}])
def test_check_layer_passes_a_dense_layer_with_a_penalty(penalty):
    """Dense's backward adds the L2/L1 term to dW: the layer check's J includes the layer's
    penalty, so a correct layer passes (it was called a bug at 1e-2)."""
    Xl = RNG.standard_normal((5, 4))
    r = check_layer(nn.Dense(4, 3, **penalty), Xl)
    assert r.difference < 1e-7 and r.verdict == "great", r


class RunningMean(nn.Layer):
    """A user's layer with state (state_arrays) that training forwards update in place."""

    def __init__(self, n):
        super().__init__()
        self.n_in = self.n_out = n
        self.running_mean = np.zeros(n)

    def state_arrays(self):
        return {"running_mean": self.running_mean}

    def forward(self, A, training=False):
        if training:
            self.running_mean[...] = 0.9 * self.running_mean + 0.1 * A.mean(axis=0)
        self._out = A
        return A

    def backward(self, dA):
        return dA


def test_gradient_check_and_copies_leave_a_user_layers_state_alone():
    model = pydl.Sequential([nn.Dense(2, 5), RunningMean(5), nn.Dense(5, 2)], seed=0)
    assert gradient_check(model, X, Y).passed
    assert not model.layers[1].running_mean.any()
    for copy in (model.copy(), model.astype(np.float64)):
        assert copy.layers[1].running_mean is not model.layers[1].running_mean
        copy.fit(X, Y, epochs=1, verbose=0)
    assert not model.layers[1].running_mean.any()
