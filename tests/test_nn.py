"""Layers (pydl.nn) and initializers (pydl.init): construction, validation, standalone
forward/backward against NumPy, dropout masks, batch norm statistics, and the
statistics of drawn weights against the DESIGN formulas.

Initializers (W of shape (n_out, n_in), biases zero):
he = N(0,1) sqrt(2/n_in); xavier = N(0,1) sqrt(1/n_in); glorot = N(0,1) sqrt(2/(n_in+n_out));
random = N(0,1) 0.01; zeros; all times ``scale``. init="auto": He before ReLU-family,
Xavier before tanh/sigmoid (and for the output layer).
"""
import math

import numpy as np
import pytest

import pydl
from conftest import assert_close
from pydl import init, nn

N_IN, N_OUT = 300, 200          # 60_000 weights per draw


def expected_std(name, n_in, n_out, scale=1.0):
    return scale * {"he": math.sqrt(2 / n_in), "xavier": math.sqrt(1 / n_in),
                    "glorot": math.sqrt(2 / (n_in + n_out)), "random": 0.01}[name]


def check_normal_draw(W, std, what):
    """W ~ N(0, std^2) elementwise: sample std within 3% (the standard error of a sample
    std over N draws is std/sqrt(2N) ~ 0.3% here, so 3% is ~10 standard errors) and mean
    within 6 standard errors of 0."""
    W = np.asarray(W, dtype=np.float64)
    n = W.size
    s, mu = W.std(), W.mean()
    assert abs(s / std - 1) < 0.03, f"{what}: sample std {s:.6g}, formula gives {std:.6g} (ratio {s / std:.4f})"
    assert abs(mu) < 6 * std / math.sqrt(n), f"{what}: sample mean {mu:.3g} too far from 0 (std {std:.3g})"
    # rows are not all the same (symmetry broken) and values look normal: ~68% within 1 std
    frac = np.mean(np.abs(W) < std)
    assert abs(frac - 0.6827) < 0.02, f"{what}: {frac:.3f} of draws within 1 std, a normal gives 0.683"


# ---------------------------------------------------------------------------- initializers
@pytest.mark.parametrize("name", ["he", "xavier", "glorot", "random"])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_initializer_std_in_a_model(name, scale):
    model = pydl.Sequential([nn.Dense(N_IN, N_OUT, init=name, scale=scale), nn.ReLU(),
                             nn.Dense(N_OUT, 3, init=name, scale=scale)], seed=3)
    l0, l2 = model.layers[0], model.layers[2]
    check_normal_draw(l0.W, expected_std(name, N_IN, N_OUT, scale), f"{name} scale={scale} layer 0")
    # the small output layer (600 weights): looser bound, ~6 standard errors of the std
    s = np.asarray(l2.W, np.float64).std()
    e = expected_std(name, N_OUT, 3, scale)
    assert abs(s / e - 1) < 6 / math.sqrt(2 * l2.W.size), f"{name} layer 2: std {s:.4g} vs {e:.4g}"
    assert np.all(l0.b == 0) and np.all(l2.b == 0), "biases must start at zero"


@pytest.mark.parametrize("name", ["he", "xavier", "glorot", "random"])
def test_initialize_function_std(name):
    rng = np.random.default_rng(0)
    W = init.initialize(name, (N_OUT, N_IN), rng, scale=0.5, dtype=np.float64)
    assert W.shape == (N_OUT, N_IN) and W.dtype == np.float64
    check_normal_draw(W, expected_std(name, N_IN, N_OUT, 0.5), f"initialize({name!r}, scale=0.5)")


def test_zeros_init_and_scale_zero():
    model = pydl.Sequential([nn.Dense(5, 4, init="zeros"), nn.ReLU(), nn.Dense(4, 2, init="he", scale=0.0)],
                            seed=0)
    assert np.all(model.theta == 0), model.theta


def test_initializers_are_distinguishable():
    """he vs xavier differ by sqrt(2): make sure the check above could tell them apart."""
    rng = np.random.default_rng(1)
    W = init.initialize("he", (N_OUT, N_IN), rng, dtype=np.float64)
    with pytest.raises(AssertionError, match="sample std"):
        check_normal_draw(W, expected_std("xavier", N_IN, N_OUT), "he checked as xavier")


@pytest.mark.parametrize("after, expected", [
    ([nn.ReLU()], "he"),
    ([nn.LeakyReLU(0.1)], "he"),
    ([nn.BatchNorm(N_OUT), nn.ReLU()], "he"),
    ([nn.Dropout(keep_prob=0.9), nn.ReLU()], "he"),
    ([nn.Tanh()], "xavier"),
    ([nn.Sigmoid()], "xavier"),
    ([nn.BatchNorm(N_OUT), nn.Tanh()], "xavier"),
])
def test_auto_init_resolves_by_next_activation(after, expected):
    first = nn.Dense(N_IN, N_OUT, init="auto", use_bias=not isinstance(after[0], nn.BatchNorm))
    out = nn.Dense(N_OUT, 4)              # output layer: auto -> xavier
    model = pydl.Sequential([first, *after, out], seed=7)
    assert first.resolved_init == expected, f"{[type(l).__name__ for l in after]}: {first.resolved_init}"
    assert out.resolved_init == "xavier"
    check_normal_draw(first.W, expected_std(expected, N_IN, N_OUT), f"auto before {type(after[-1]).__name__}")
    assert model.layers[0] is first


def test_standalone_dense_auto_is_xavier():
    d = nn.Dense(N_IN, N_OUT)
    d.forward(np.zeros((2, N_IN), np.float64))
    assert d.resolved_init == "xavier"
    check_normal_draw(d.W, expected_std("xavier", N_IN, N_OUT), "standalone Dense")


def test_same_seed_same_weights_different_seed_different():
    a = pydl.mlp([8, 16, 3], seed=5)
    b = pydl.mlp([8, 16, 3], seed=5)
    c = pydl.mlp([8, 16, 3], seed=6)
    assert np.array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)


@pytest.mark.parametrize("kwargs, name", [
    ({"init": "kaiming"}, "init"), ({"init": "he", "scale": float("nan")}, "scale"),
    ({"l2": -1.0}, "l2"), ({"l1": float("inf")}, "l1"),
    ({"l2": 10**400}, "l2"), ({"l1": -10**400}, "l1"),   # beyond float: not OverflowError
])
def test_dense_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nn.Dense(3, 4, **kwargs)


@pytest.mark.parametrize("n_in, n_out, name", [(0, 3, "n_in"), (3, 0, "n_out"), (2.5, 3, "n_in"),
                                                (True, 3, "n_in")])
def test_dense_bad_widths(n_in, n_out, name):
    with pytest.raises(ValueError, match=name):
        nn.Dense(n_in, n_out)


def test_initialize_refuses_auto_and_unknown():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="auto"):
        init.initialize("auto", (3, 4), rng)
    with pytest.raises(ValueError, match="init"):
        init.initialize("orthogonal", (3, 4), rng)


# ---------------------------------------------------------------------------- Dense
def test_dense_standalone_forward_backward_matches_numpy():
    rng = np.random.default_rng(0)
    d = nn.Dense(5, 3, init="he", l2=0.0)
    A_prev = rng.standard_normal((7, 5))
    d.forward(A_prev, training=True)          # a standalone layer allocates its own W, b
    W = d.W.copy()
    assert W.dtype == np.float64 and np.all(d.b == 0)
    b = rng.standard_normal(3)
    d.b[...] = b
    Z = d.forward(A_prev, training=True).copy()
    assert_close(Z, A_prev @ W.T + b, 1e-12, 1e-14)
    dZ = rng.standard_normal((7, 3))
    dA_prev = d.backward(dZ.copy())
    assert_close(dA_prev, dZ @ W, 1e-12, 1e-14)
    assert_close(d.dW, dZ.T @ A_prev, 1e-12, 1e-14)
    assert_close(d.db, dZ.sum(axis=0), 1e-12, 1e-14)


def test_dense_without_bias_has_only_W():
    d = nn.Dense(4, 2, use_bias=False)
    assert [n for n, _ in d.param_shapes()] == ["W"]
    model = pydl.Sequential([d, nn.BatchNorm(2), nn.ReLU(), nn.Dense(2, 2)], seed=0)
    assert [n for n, _ in model.parameters()] == ["0.W", "1.gamma", "1.beta", "3.W", "3.b"]


# ---------------------------------------------------------------------------- activations
ACTS = [
    (nn.ReLU(), lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    (nn.LeakyReLU(0.2), lambda z: np.where(z > 0, z, 0.2 * z), lambda z: np.where(z > 0, 1.0, 0.2)),
    (nn.Tanh(), np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    (nn.Sigmoid(), lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
]


@pytest.mark.parametrize("layer, g, dg", ACTS, ids=lambda v: type(v).__name__ if isinstance(v, nn.Layer) else "")
def test_activation_standalone_matches_numpy(layer, g, dg):
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((9, 6)) * 3
    A = layer.forward(Z, training=True)
    assert_close(A, g(Z), 1e-13, 1e-15)
    dA = rng.standard_normal((9, 6))
    dZ = layer.backward(dA.copy())
    assert_close(dZ, dA * dg(Z), 1e-10, 1e-14)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, float("nan"), True])
def test_leaky_relu_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        nn.LeakyReLU(alpha)


# ---------------------------------------------------------------------------- Dropout
def test_dropout_keep_prob_or_rate_exactly_one():
    assert nn.Dropout(keep_prob=0.8).keep_prob == 0.8
    assert nn.Dropout(rate=0.25).keep_prob == 0.75
    assert nn.Dropout(0.6).keep_prob == 0.6            # positional is keep_prob
    with pytest.raises(ValueError, match="exactly one"):
        nn.Dropout()
    with pytest.raises(ValueError, match="exactly one"):
        nn.Dropout(keep_prob=0.8, rate=0.2)


@pytest.mark.parametrize("kwargs, name", [
    ({"keep_prob": 0.0}, "keep_prob"), ({"keep_prob": 1.5}, "keep_prob"), ({"keep_prob": -0.1}, "keep_prob"),
    ({"keep_prob": float("nan")}, "keep_prob"), ({"rate": 1.0}, "rate"), ({"rate": -0.2}, "rate"),
    ({"rate": float("inf")}, "rate"), ({"keep_prob": "0.5"}, "keep_prob"),
])
def test_dropout_bad_values_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nn.Dropout(**kwargs)


def test_dropout_rate_config_round_trip():
    d = nn.Dropout(rate=0.3)
    d2 = nn.layer_from_config({"type": "Dropout", "config": d.config()})
    assert d2.keep_prob == pytest.approx(0.7, abs=1e-15)


@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_dropout_training_is_inverted_mask(keep_prob):
    rng = np.random.default_rng(0)
    A = rng.uniform(0.5, 1.5, (400, 50))           # no zeros, so a zero output means dropped
    d = nn.Dropout(keep_prob=keep_prob)
    d.seed, d.index, d.step = 11, 3, 7
    out = d.forward(A, training=True).copy()
    kept = out != 0
    assert_close(out[kept], A[kept] / keep_prob, 1e-15)
    n = A.size
    frac = kept.mean()
    tol = 6 * math.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(frac - keep_prob) < tol, f"kept {frac:.4f} of units, keep_prob {keep_prob} (tol {tol:.4f})"
    # backward uses the same mask and scaling
    dA = rng.standard_normal(A.shape)
    dA_prev = d.backward(dA.copy())
    assert_close(dA_prev, np.where(kept, dA / keep_prob, 0.0), 1e-15)
    # same (seed, step, layer) -> same mask; another step or layer -> another mask
    again = d.forward(A, training=True).copy()
    assert np.array_equal(again, out)
    d.step = 8
    other_step = d.forward(A, training=True) != 0
    d.step, d.index = 7, 4
    other_layer = d.forward(A, training=True) != 0
    assert not np.array_equal(other_step, kept) and not np.array_equal(other_layer, kept)


def test_dropout_is_identity_in_eval_and_keep_prob_one():
    A = np.random.default_rng(0).standard_normal((20, 5))
    assert np.array_equal(nn.Dropout(keep_prob=0.5).forward(A, training=False), A)
    assert np.array_equal(nn.Dropout(keep_prob=1.0).forward(A, training=True), A)


# ---------------------------------------------------------------------------- BatchNorm
def test_batchnorm_standalone_training_normalizes_and_tracks():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((64, 6)) * np.arange(1, 7) + np.arange(6) * 3.0
    bn = nn.BatchNorm(6, momentum=0.8)
    out = bn.forward(Z, training=True).copy()
    assert_close(out.mean(axis=0), np.zeros(6), 0, 1e-12)
    var = Z.var(axis=0)
    assert_close(out.var(axis=0), var / (var + 1e-5), 1e-10)
    assert_close(bn.running_mean, 0.2 * Z.mean(axis=0), 1e-12, 1e-14)
    assert_close(bn.running_var, 0.8 + 0.2 * Z.var(axis=0, ddof=1), 1e-12)
    # gamma/beta scale and shift
    bn.gamma[...] = 2.0
    bn.beta[...] = -1.0
    out2 = bn.forward(Z, training=True)
    assert_close(out2, 2 * out - 1, 1e-12, 1e-12)


def test_batchnorm_training_needs_two_rows_and_evaluation_one():
    bn = nn.BatchNorm(3)
    bn.forward(np.ones((2, 3)), training=True)
    state = (bn.running_mean.copy(), bn.running_var.copy())
    with pytest.raises(ValueError, match="A_prev has 1 row, but BatchNorm in training mode"):
        bn.forward(np.ones((1, 3)), training=True)
    assert np.array_equal(bn.running_mean, state[0]) and np.array_equal(bn.running_var, state[1])
    assert bn.forward(np.ones((1, 3)), training=False).shape == (1, 3)


def test_batchnorm_eval_uses_running_stats_rowwise_exactly():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm(5)
    bn.forward(rng.standard_normal((10, 5)), training=True)      # allocate + bind
    bn.running_mean[...] = rng.standard_normal(5)
    bn.running_var[...] = rng.uniform(0.5, 2, 5)
    bn.gamma[...] = rng.uniform(0.5, 2, 5)
    bn.beta[...] = rng.standard_normal(5)
    Z = rng.standard_normal((30, 5))
    out = bn.forward(Z, training=False).copy()
    ref = bn.gamma * (Z - bn.running_mean) / np.sqrt(bn.running_var + bn.eps) + bn.beta
    assert_close(out, ref, 1e-12, 1e-14)
    rm = bn.running_mean.copy()
    for i in (0, 7, 29):
        single = bn.forward(Z[i:i + 1], training=False)
        assert np.array_equal(single[0], out[i]), f"row {i}: {single[0]} vs {out[i]}"
    assert np.array_equal(bn.running_mean, rm), "evaluation must not touch running statistics"


@pytest.mark.parametrize("kwargs, name", [({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
                                          ({"eps": 0.0}, "eps"), ({"eps": float("nan")}, "eps"),
                                          ({"n": 0}, "n"),
                                          # beyond float: not OverflowError
                                          ({"eps": 10**400}, "eps"), ({"momentum": 10**400}, "momentum"),
                                          # subnormal: below the smallest normal float64
                                          ({"eps": 1e-310}, "eps"), ({"eps": 2.2e-308}, "eps")])
def test_batchnorm_bad_arguments(kwargs, name):
    args = {"n": 4, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name} "):
        nn.BatchNorm(**args)


def test_batchnorm_smallest_normal_eps_is_accepted():
    assert nn.BatchNorm(4, eps=np.finfo(np.float64).tiny).eps == np.finfo(np.float64).tiny


@pytest.mark.parametrize("make, name", [
    (lambda: nn.Dropout(keep_prob=10**400), "keep_prob"), (lambda: nn.Dropout(rate=-10**400), "rate"),
    (lambda: nn.LeakyReLU(10**400), "alpha"),
])
def test_hyperparameters_beyond_float_name_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        make()


@pytest.mark.parametrize("layer_cls", [nn.Dense, nn.BatchNorm])
@pytest.mark.parametrize("first, then", [(np.float64, np.float32), (np.float32, np.float64)])
def test_standalone_layer_refuses_a_new_input_dtype_naming_A_prev(layer_cls, first, then):
    """A standalone layer's parameters take the dtype of its first input; another dtype
    later is an error naming A_prev and the layer's dtype (not an internal buffer)."""
    layer = layer_cls(3, 3) if layer_cls is nn.Dense else layer_cls(3)
    A = np.random.default_rng(0).standard_normal((4, 3))
    layer.forward(A.astype(first), training=True)
    for training in (True, False):
        with pytest.raises(TypeError, match=rf"^A_prev .*{np.dtype(first).name}"):
            layer.forward(A.astype(then), training=training)
    out = layer.forward(A.astype(first), training=True)      # still works in its own dtype
    assert out.dtype == first


# ---------------------------------------------------------------------------- backward misuse
def _bn_eval_after_train():
    bn = nn.BatchNorm(3)
    A = np.ones((4, 3)) * np.arange(4)[:, None]
    bn.forward(A, training=True)
    bn.forward(A, training=False)     # overwrites what backward would read
    return bn


def _bn_eval():
    bn = nn.BatchNorm(3)
    bn.forward(np.ones((4, 3)), training=False)
    return bn


@pytest.mark.parametrize("make, name", [
    (lambda: nn.Dense(3, 2), "Dense"), (lambda: nn.ReLU(), "ReLU"), (lambda: nn.Tanh(), "Tanh"),
    (lambda: nn.BatchNorm(3), "BatchNorm"), (_bn_eval, "BatchNorm"),
    (_bn_eval_after_train, "BatchNorm"), (lambda: nn.Dropout(keep_prob=0.5), "Dropout"),
], ids=["dense", "relu", "tanh", "batchnorm", "batchnorm-after-eval", "batchnorm-train-then-eval",
        "dropout"])
def test_backward_without_a_training_forward_raises(make, name):
    layer = make()
    with pytest.raises(RuntimeError, match=rf"^{name}\.backward needs a training-mode forward"):
        layer.backward(np.ones((4, 3 if name != "Dense" else 2)))


@pytest.mark.parametrize("layer", [nn.Dense(3, 2), nn.ReLU(), nn.BatchNorm(3), nn.Dropout(keep_prob=0.5),
                                   nn.Dropout(keep_prob=1.0)],
                         ids=["dense", "relu", "batchnorm", "dropout", "dropout-identity"])
def test_backward_checks_dA_naming_it(layer):
    A = np.random.default_rng(0).standard_normal((4, 3))
    out = layer.forward(A, training=True)
    m, n = out.shape
    with pytest.raises(TypeError, match=r"^dA must be a numpy array, got list"):
        layer.backward(np.ones((m, n)).tolist())
    with pytest.raises(ValueError, match=rf"^dA .*\({m}, {n}\)"):
        layer.backward(np.ones((m + 1, n)))
    with pytest.raises(ValueError, match=r"^dA "):
        layer.backward(np.ones(n))
    with pytest.raises(TypeError, match=r"^dA .*float64"):
        layer.backward(np.ones((m, n), np.float32))
    assert layer.backward(np.ones((m, n))).shape == (m, 3)     # the right dA still works


# ---------------------------------------------------------------------------- configs
@pytest.mark.parametrize("layer", [nn.Dense(3, 4, init="glorot", use_bias=False, l2=0.1, l1=0.2, scale=2.0),
                                   nn.BatchNorm(4, momentum=0.7, eps=1e-3), nn.Dropout(keep_prob=0.7),
                                   nn.ReLU(), nn.LeakyReLU(0.3), nn.Tanh(), nn.Sigmoid()],
                         ids=lambda l: type(l).__name__)
def test_layer_config_round_trip(layer):
    d = {"type": type(layer).__name__, "config": layer.config()}
    again = nn.layer_from_config(d)
    assert type(again) is type(layer) and again.config() == layer.config()


def test_layer_from_config_refuses_unknown():
    with pytest.raises(ValueError):
        nn.layer_from_config({"type": "Conv2d", "config": {}})
    with pytest.raises(ValueError):
        nn.layer_from_config({"type": "Dense", "config": {"n_in": 3, "n_out": 4, "bogus": 1}})
    with pytest.raises(ValueError):
        nn.layer_from_config({"type": "Dense", "config": {"n_in": -3, "n_out": 4}})
