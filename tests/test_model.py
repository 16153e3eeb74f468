"""Sequential: the flat theta/dtheta with per-layer views, parameters(), forward,
forward_backward, cost, predict, predict_proba, evaluate, astype, mlp(), and the
numerics of forward_backward against an independent float64 NumPy implementation of
the same network (written here from DESIGN.md, unfused, layer by layer).
"""
import math

import numpy as np
import pytest

import pydl
from conftest import assert_close, run_in_lockstep
from pydl import nn

# ============================================================================ reference


def _softmax(Z):
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(Z):
    return 1 / (1 + np.exp(-Z))


def reference(model, X, y, training=True):
    """(J, {name: gradient}, {"i.running_mean"/"i.running_var": new value}) in float64.

    training=True: batch statistics (and the running-stat update), training-mode cost.
    training=False: running statistics, no gradients. Dropout must have keep_prob 1.
    """
    P = {name: np.array(v, dtype=np.float64) for name, v in model.parameters()}
    X = np.asarray(X, np.float64)
    m = X.shape[0]
    A = X
    cache = []
    new_state = {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, nn.Dense):
            W = P[f"{i}.W"]
            Z = A @ W.T + (P[f"{i}.b"] if layer.use_bias else 0.0)
            cache.append(("dense", i, A))
            A = Z
        elif isinstance(layer, nn.BatchNorm):
            g, b = P[f"{i}.gamma"], P[f"{i}.beta"]
            if training:
                mu, var = A.mean(axis=0), A.var(axis=0)
                rm = np.asarray(layer.running_mean, np.float64)
                rv = np.asarray(layer.running_var, np.float64)
                new_state[f"{i}.running_mean"] = layer.momentum * rm + (1 - layer.momentum) * mu
                unbiased = var * m / (m - 1) if m > 1 else var
                new_state[f"{i}.running_var"] = layer.momentum * rv + (1 - layer.momentum) * unbiased
            else:
                mu = np.asarray(layer.running_mean, np.float64)
                var = np.asarray(layer.running_var, np.float64)
            invstd = 1 / np.sqrt(var + layer.eps)
            xhat = (A - mu) * invstd
            cache.append(("bn", i, (xhat, invstd)))
            A = g * xhat + b
        elif isinstance(layer, nn.Dropout):
            assert layer.keep_prob == 1.0 or not training, "reference has no dropout masks"
            cache.append(("id", i, None))
        elif isinstance(layer, nn.ReLU):
            cache.append(("relu", i, A))
            A = np.maximum(A, 0)
        elif isinstance(layer, nn.LeakyReLU):
            cache.append(("leaky", i, (A, layer.alpha)))
            A = np.where(A > 0, A, layer.alpha * A)
        elif isinstance(layer, nn.Tanh):
            A = np.tanh(A)
            cache.append(("tanh", i, A))
        elif isinstance(layer, nn.Sigmoid):
            A = _sigmoid(A)
            cache.append(("sigmoid", i, A))
        else:  # pragma: no cover
            raise AssertionError(layer)
    Z = A
    loss = model.loss.name
    if loss == "softmax_cross_entropy":
        Y = np.zeros_like(Z)
        if np.ndim(y) == 1:
            Y[np.arange(m), np.asarray(y)] = 1
        else:
            Y = np.asarray(y, np.float64)
        logp = Z - Z.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        J = -(Y * logp).sum() / m
        dA = (_softmax(Z) - Y) / m
    elif loss == "sigmoid_cross_entropy":
        Y = np.asarray(y, np.float64).reshape(m, 1)
        J = (np.logaddexp(0, Z) - Y * Z).sum() / m
        dA = (_sigmoid(Z) - Y) / m
    else:
        Y = np.asarray(y, np.float64).reshape(Z.shape)
        J = ((Z - Y) ** 2).mean()
        dA = 2 * (Z - Y) / Z.size
    for i, layer in enumerate(model.layers):
        if isinstance(layer, nn.Dense):
            W = P[f"{i}.W"]
            J += layer.l2 / (2 * m) * (W ** 2).sum() + layer.l1 / (2 * m) * np.abs(W).sum()
    if not training:
        return J, None, new_state
    grads = {}
    for kind, i, c in reversed(cache):
        layer = model.layers[i]
        if kind == "dense":
            W = P[f"{i}.W"]
            grads[f"{i}.W"] = dA.T @ c + layer.l2 / m * W + layer.l1 / (2 * m) * np.sign(W)
            if layer.use_bias:
                grads[f"{i}.b"] = dA.sum(axis=0)
            dA = dA @ W
        elif kind == "bn":
            xhat, invstd = c
            g = P[f"{i}.gamma"]
            grads[f"{i}.gamma"] = (dA * xhat).sum(axis=0)
            grads[f"{i}.beta"] = dA.sum(axis=0)
            dA = g * invstd / m * (m * dA - dA.sum(axis=0) - xhat * (dA * xhat).sum(axis=0))
        elif kind == "relu":
            dA = dA * (c > 0)
        elif kind == "leaky":
            Zc, alpha = c
            dA = dA * np.where(Zc > 0, 1.0, alpha)
        elif kind == "tanh":
            dA = dA * (1 - c ** 2)
        elif kind == "sigmoid":
            dA = dA * c * (1 - c)
    return J, grads, new_state


# ============================================================================ networks

def net_relu_softmax(dtype=np.float64):
    """Dense+ReLU+Dense, softmax CE, with L2 and L1 on both Dense layers."""
    return pydl.Sequential([nn.Dense(6, 9, l2=0.7, l1=0.3), nn.ReLU(), nn.Dense(9, 4, l2=0.2, l1=0.5)],
                           loss="softmax_cross_entropy", seed=1, dtype=dtype)


def net_batchnorm(dtype=np.float64):
    return pydl.Sequential([nn.Dense(6, 8, use_bias=False), nn.BatchNorm(8, momentum=0.7), nn.ReLU(),
                            nn.Dense(8, 7, use_bias=False, l2=0.1), nn.BatchNorm(7), nn.Tanh(),
                            nn.Dense(7, 4)], loss="softmax_cross_entropy", seed=2, dtype=dtype)


def net_tanh_sigmoid(dtype=np.float64):
    return pydl.Sequential([nn.Dense(6, 7, init="xavier"), nn.Tanh(), nn.Dense(7, 5, l2=0.3), nn.Sigmoid(),
                            nn.Dense(5, 1)], loss="sigmoid_cross_entropy", seed=3, dtype=dtype)


def net_mse(dtype=np.float64):
    return pydl.Sequential([nn.Dense(6, 8, l1=0.4), nn.LeakyReLU(0.1), nn.Dense(8, 3)],
                           loss="mse", seed=4, dtype=dtype)


def net_unfused(dtype=np.float64):
    """Activations that cannot be fused (after a Dropout(keep_prob=1) or another activation)."""
    return pydl.Sequential([nn.Dense(6, 8), nn.Dropout(keep_prob=1.0), nn.LeakyReLU(0.2), nn.Tanh(),
                            nn.Dense(8, 8, use_bias=False), nn.Dropout(rate=0.0), nn.BatchNorm(8),
                            nn.Dropout(keep_prob=1.0), nn.Sigmoid(), nn.Dense(8, 3)],
                           loss="softmax_cross_entropy", seed=5, dtype=dtype)


NETS = [net_relu_softmax, net_batchnorm, net_tanh_sigmoid, net_mse, net_unfused]


def data_for(model, m=13, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, model.n_in)) * 1.5
    if model.loss.name == "softmax_cross_entropy":
        y = rng.integers(0, model.n_out, m)
    elif model.loss.name == "sigmoid_cross_entropy":
        y = rng.integers(0, 2, m).astype(np.float64)
    else:
        y = rng.standard_normal((m, model.n_out))
    return X.astype(model.dtype), y


def perturb(model, seed=9):
    """Random gamma/beta/biases (init leaves them 1/0), so their gradients are exercised."""
    rng = np.random.default_rng(seed)
    for name, view in model.parameters():
        if not name.endswith(".W"):
            view[...] = rng.uniform(0.5, 1.5, view.shape) if name.endswith("gamma") else \
                0.3 * rng.standard_normal(view.shape)


# ============================================================================ numerics

@pytest.mark.parametrize("make", NETS, ids=lambda f: f.__name__)
def test_forward_backward_matches_numpy_float64(make):
    model = make()
    perturb(model)
    X, y = data_for(model)
    J_ref, g_ref, state_ref = reference(model, X, y)
    J = model.forward_backward(X, y)
    assert isinstance(J, float)
    assert math.isclose(J, J_ref, rel_tol=1e-10), f"cost {J!r} vs reference {J_ref!r}"
    names = [n for n, _ in model.gradients()]
    assert sorted(names) == sorted(g_ref), f"gradient names {names} vs reference {sorted(g_ref)}"
    for name, view in model.gradients():
        ref = g_ref[name]
        assert_close(view, ref, 1e-10, 1e-12 * max(np.abs(ref).max(), 1e-300))
    # the layer attributes are the same views
    for i, layer in enumerate(model.layers):
        for pname, _ in layer.param_shapes():
            assert np.shares_memory(getattr(layer, "d" + pname), model.dtheta)
            assert_close(getattr(layer, "d" + pname), g_ref[f"{i}.{pname}"], 1e-10,
                         1e-12 * max(np.abs(g_ref[f"{i}.{pname}"]).max(), 1e-300))
    for key, ref in state_ref.items():
        i, attr = key.split(".")
        assert_close(getattr(model.layers[int(i)], attr), ref, 1e-12, 1e-14)


@pytest.mark.parametrize("make", NETS, ids=lambda f: f.__name__)
def test_forward_backward_float32_close_to_float64_reference(make):
    model = make(np.float32)
    perturb(model)
    X, y = data_for(model)
    J_ref, g_ref, _ = reference(model, X, y)
    J = model.forward_backward(X, y)
    assert math.isclose(J, J_ref, rel_tol=1e-5), f"cost {J!r} vs reference {J_ref!r}"
    for name, view in model.gradients():
        scale = np.abs(g_ref[name]).max()
        assert_close(view, g_ref[name], 1e-4, 1e-5 * scale)


def test_reference_agrees_with_finite_differences():
    """Guards the test itself: the float64 reference cost's gradient vs central differences."""
    model = net_batchnorm()
    perturb(model)
    X, y = data_for(model)
    _, g_ref, _ = reference(model, X, y)
    base = model.theta.copy()
    rng = np.random.default_rng(0)
    for name, sl, shape in model.parameter_slices():
        flat = np.concatenate([g.ravel() for n, g in g_ref.items() if n == name])
        for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            eps = 1e-6
            model.theta[sl.start + j] += eps
            jp = reference(model, X, y)[0]
            model.theta[...] = base
            model.theta[sl.start + j] -= eps
            jm = reference(model, X, y)[0]
            model.theta[...] = base
            num = (jp - jm) / (2 * eps)
            assert abs(num - flat[j]) <= 1e-6 * (abs(num) + abs(flat[j])) + 1e-9, \
                f"{name}[{j}]: numerical {num} vs reference {flat[j]}"


def test_one_hot_labels_same_as_integer_labels():
    model = net_relu_softmax()
    X, y = data_for(model)
    Y = np.eye(model.n_out)[y]
    J1 = model.forward_backward(X, y)
    g1 = model.dtheta.copy()
    J2 = model.forward_backward(X, Y)
    assert math.isclose(J1, J2, rel_tol=1e-14)
    assert_close(model.dtheta, g1, 1e-13, 1e-16)


@pytest.mark.parametrize("make", NETS, ids=lambda f: f.__name__)
def test_cost_and_forward_eval_mode_match_reference(make):
    model = make()
    perturb(model)
    X, y = data_for(model, m=17, seed=1)
    model.forward_backward(*data_for(model, m=21, seed=2))      # move the running stats
    state = {k: v.copy() for k, v in model._state_arrays().items()}
    J_ref, _, _ = reference(model, X, y, training=False)
    assert math.isclose(model.cost(X, y), J_ref, rel_tol=1e-10), (model.cost(X, y), J_ref)
    # cost/forward in evaluation mode leave the running statistics alone
    model.forward(X)
    for k, v in model._state_arrays().items():
        assert np.array_equal(v, state[k]), f"{k} changed in evaluation mode"


def test_forward_training_mode_uses_batch_statistics():
    model = net_batchnorm()
    X, _ = data_for(model, m=32)
    Zt = model.forward(X, training=True)
    Ze = model.forward(X)
    assert not np.allclose(Zt, Ze), "training mode must normalize with the batch statistics"
    assert Zt.shape == Ze.shape == (32, model.n_out)


# ============================================================================ structure

def test_theta_is_one_contiguous_array_with_views():
    model = net_batchnorm(np.float32)
    assert model.theta.ndim == 1 and model.theta.flags.c_contiguous and model.theta.dtype == np.float32
    assert model.dtheta.shape == model.theta.shape and model.dtheta.dtype == model.theta.dtype
    sizes = [int(np.prod(s)) for _, s in sum((l.param_shapes() for l in model.layers), [])]
    assert model.n_params == model.theta.size == sum(sizes)
    for i, layer in enumerate(model.layers):
        for pname, shape in layer.param_shapes():
            view, grad = getattr(layer, pname), getattr(layer, "d" + pname)
            assert view.shape == shape and grad.shape == shape
            assert view.base is not None and np.shares_memory(view, model.theta), f"{i}.{pname}"
            assert np.shares_memory(grad, model.dtheta), f"{i}.d{pname}"


def test_writing_views_changes_theta_and_back():
    model = net_relu_softmax()
    W0 = model.layers[0].W
    W0[1, 2] = 123.0
    name_to_slice = {n: (sl, s) for n, sl, s in model.parameter_slices()}
    sl, shape = name_to_slice["0.W"]
    assert model.theta[sl].reshape(shape)[1, 2] == 123.0
    model.layers[2].b[...] = [1, 2, 3, 4]
    sl, _ = name_to_slice["2.b"]
    assert np.array_equal(model.theta[sl], [1, 2, 3, 4])
    model.theta[...] = 0.5
    assert np.all(model.layers[0].W == 0.5) and np.all(model.layers[2].b == 0.5)
    model.theta *= 2           # in-place ops keep the views valid
    assert np.all(model.layers[2].W == 1.0)
    model.dtheta[...] = 7
    assert np.all(model.layers[0].dW == 7) and np.all(model.layers[2].db == 7)
    model.layers[0].db[0] = -1
    assert model.dtheta[name_to_slice["0.b"][0]][0] == -1


def test_assigning_theta_or_a_parameter_copies_into_the_model():
    """model.theta = x and layer.W = x copy in: the layers, theta and the optimizer keep
    sharing one array (rebinding the name left the layers on the old theta, or the optimizer
    stepping an array the layer no longer read)."""
    model = net_relu_softmax(np.float32)
    theta, W = model.theta, model.layers[0].W
    new = np.linspace(-1, 1, model.n_params)        # float64 into a float32 model
    model.theta = new
    assert model.theta is theta and model.layers[0].W is W
    assert np.array_equal(model.theta, new.astype(np.float32))
    sl, shape = next((sl, s) for n, sl, s in model.parameter_slices() if n == "0.W")
    assert np.array_equal(W, new[sl].reshape(shape).astype(np.float32))
    model.layers[0].W = np.full(shape, 0.25)
    assert model.layers[0].W is W and np.all(model.theta[sl] == 0.25)
    model.layers[0].dW = np.ones(shape)
    assert np.all(model.dtheta[sl] == 1.0)
    model.dtheta = np.zeros(model.n_params)
    assert not model.dtheta.any() and not model.layers[0].dW.any()
    # the optimizer's step reaches the layer
    X = np.random.default_rng(0).standard_normal((8, model.n_in)).astype(np.float32)
    y = np.arange(8) % model.n_out
    before = W.copy()
    model.forward_backward(X, y)
    pydl.optim.SGD(lr=0.1).step(model)
    assert not np.array_equal(model.layers[0].W, before)
    assert np.array_equal(model.layers[0].W, model.theta[sl].reshape(shape))


@pytest.mark.parametrize("target, value, exc, message", [
    ("theta", np.zeros(3), ValueError, r"theta must have shape \(\d+,\), got \(3,\)"),
    ("theta", "nan", ValueError, "theta must be finite"),
    ("theta", 1e39, ValueError, "theta must be finite in float32"),
    ("W", np.zeros((3, 3)), ValueError, r"W must have shape \(\d+, \d+\), got \(3, 3\)"),
    ("W", np.inf, ValueError, "W must be finite"),
    ("W", "abc", TypeError, "W must hold real numbers"),
    ("b", [1j], TypeError, "b must hold real numbers"),
])
def test_assigning_a_bad_value_is_named_and_changes_nothing(target, value, exc, message):
    model = net_relu_softmax(np.float32)
    layer = model.layers[0]
    before = model.theta.copy()
    if target == "theta" and not isinstance(value, np.ndarray):  # a fill value
        value = np.full(model.n_params, float(value))
    elif isinstance(value, float):
        value = np.full(getattr(layer, target).shape, value)
    with pytest.raises(exc, match=message):
        setattr(model if target == "theta" else layer, target, value)
    assert np.array_equal(model.theta, before)
    assert np.shares_memory(layer.W, model.theta)


def test_parameters_names_in_theta_order():
    model = net_batchnorm()
    names = [n for n, _ in model.parameters()]
    assert names == ["0.W", "1.gamma", "1.beta", "3.W", "4.gamma", "4.beta", "6.W", "6.b"]
    flat = np.concatenate([v.ravel() for _, v in model.parameters()])
    assert np.array_equal(flat, model.theta)
    offset = 0
    for (name, view), (gname, gview), (sname, sl, shape) in zip(model.parameters(), model.gradients(),
                                                                 model.parameter_slices()):
        assert name == gname == sname and view.shape == gview.shape == shape
        assert sl.start == offset and np.shares_memory(view, model.theta[sl])
        offset = sl.stop
    assert offset == model.n_params
    assert [n for n, _ in net_relu_softmax().parameters()] == ["0.W", "0.b", "2.W", "2.b"]


def test_predict_predict_proba_evaluate_softmax():
    model = net_relu_softmax(np.float32)
    X, y = data_for(model, m=50)
    Z = model.forward(X)
    P = model.predict_proba(X)
    assert P.shape == (50, 4)
    assert_close(P.sum(axis=1), np.ones(50), 1e-5)
    assert_close(P, _softmax(Z.astype(np.float64)), 1e-5, 1e-7)
    pred = model.predict(X)
    assert pred.shape == (50,) and np.issubdtype(pred.dtype, np.integer)
    assert np.array_equal(pred, Z.argmax(axis=1))
    ev = model.evaluate(X, y)
    assert set(ev) == {"loss", "accuracy"}
    assert ev["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-12)
    assert ev["loss"] == pytest.approx(model.cost(X, y), rel=1e-12)
    J_ref, _, _ = reference(model, X, y, training=False)
    assert ev["loss"] == pytest.approx(J_ref, rel=1e-5)


def test_predict_predict_proba_sigmoid():
    model = net_tanh_sigmoid()
    X, y = data_for(model, m=40)
    Z = model.forward(X)
    P = model.predict_proba(X)
    assert P.shape == (40, 1)
    assert_close(P, _sigmoid(Z), 1e-12)
    assert np.array_equal(model.predict(X), (Z[:, 0] > 0).astype(np.int64))
    ev = model.evaluate(X, y)
    assert ev["accuracy"] == pytest.approx(np.mean(model.predict(X) == y), abs=1e-12)


def test_mse_targets_beyond_the_models_dtype_are_refused_naming_y():
    """1e39 is inf in float32: refused as X's values are, not reported as divergence."""
    model = pydl.mlp([3, 4, 1], loss="mse", seed=0)
    X = np.zeros((8, 3), np.float32)
    y = np.full(8, 1e39)
    for call in (lambda: model.fit(X, y, epochs=1, verbose=0), lambda: model.evaluate(X, y)):
        with pytest.raises(ValueError, match=r"^y .*float32"):
            call()
    pydl.mlp([3, 4, 1], loss="mse", seed=0, dtype=np.float64).evaluate(X, y)


def test_predict_and_evaluate_mse():
    model = net_mse()
    X, y = data_for(model, m=30)
    assert np.array_equal(model.predict(X), model.forward(X))
    ev = model.evaluate(X, y)
    assert set(ev) == {"loss", "mse"}
    data = ((model.forward(X) - y) ** 2).mean()
    assert ev["mse"] == pytest.approx(data, rel=1e-10)
    # loss adds the L1 penalty lambda/(2m) sum|W| with m = len(X)
    pen = 0.4 / (2 * 30) * np.abs(model.layers[0].W).sum()
    assert ev["loss"] == pytest.approx(data + pen, rel=1e-10)
    with pytest.raises(TypeError, match="predict_proba"):
        model.predict_proba(X)


def test_evaluate_is_chunk_independent():
    """Large inputs are evaluated in chunks; the result must not depend on it."""
    model = net_relu_softmax()
    X, y = data_for(model, m=9000, seed=3)
    ev = model.evaluate(X, y)
    J_ref, _, _ = reference(model, X, y, training=False)
    assert ev["loss"] == pytest.approx(J_ref, rel=1e-10)
    assert model.forward(X).shape == (9000, 4)


def test_astype_float64_is_an_independent_copy():
    model = net_batchnorm(np.float32)
    X, y = data_for(model, m=20)
    model.forward_backward(X, y)             # non-trivial running stats
    model.step, model.epoch = 5, 2
    c = model.astype(np.float64)
    assert c.dtype == np.float64 and c.theta.dtype == np.float64 and c.dtheta.dtype == np.float64
    assert np.array_equal(c.theta, model.theta.astype(np.float64))
    for (k, a), (k2, b) in zip(model._state_arrays().items(), c._state_arrays().items()):
        assert k == k2 and b.dtype == np.float64 and np.array_equal(b, a.astype(np.float64))
    assert (c.step, c.epoch, c.seed) == (5, 2, model.seed)
    assert [n for n, _ in c.parameters()] == [n for n, _ in model.parameters()]
    assert c.layers[0].W.dtype == np.float64 and np.shares_memory(c.layers[0].W, c.theta)
    before = model.theta.copy()
    rm = model.layers[1].running_mean.copy()
    c.theta[...] = 0
    c.layers[1].running_mean[...] = 9
    c.forward_backward(X.astype(np.float64), y)
    assert np.array_equal(model.theta, before) and np.array_equal(model.layers[1].running_mean, rm)
    # and back: float64 predictions close to float32 ones
    c2 = model.astype(np.float64)
    assert_close(c2.forward(X), model.forward(X), 1e-4, 1e-5)
    with pytest.raises(ValueError, match="dtype"):
        model.astype(np.int32)


def test_mlp_builds_expected_stacks():
    m = pydl.mlp([5, 8, 6, 3], batchnorm=True, seed=0)
    kinds = [type(l).__name__ for l in m.layers]
    assert kinds == ["Dense", "BatchNorm", "ReLU", "Dense", "BatchNorm", "ReLU", "Dense"]
    dense = [l for l in m.layers if isinstance(l, nn.Dense)]
    assert [d.use_bias for d in dense] == [False, False, True], "no bias before BatchNorm; output has one"
    assert [(d.n_in, d.n_out) for d in dense] == [(5, 8), (8, 6), (6, 3)]
    assert [n for n, _ in m.parameters()] == ["0.W", "1.gamma", "1.beta", "3.W", "4.gamma", "4.beta",
                                              "6.W", "6.b"]

    m2 = pydl.mlp([5, 8, 3], activation="tanh", keep_prob=0.8, l2=0.01, seed=0)
    assert [type(l).__name__ for l in m2.layers] == ["Dense", "Tanh", "Dropout", "Dense"]
    assert all(d.use_bias and d.l2 == 0.01 for d in m2.layers if isinstance(d, nn.Dense))
    assert m2.layers[2].keep_prob == 0.8
    assert m2.layers[0].resolved_init == "xavier"
    assert pydl.mlp([5, 8, 3], seed=0).layers[0].resolved_init == "he"

    m3 = pydl.mlp([4, 1], loss="sigmoid_cross_entropy", seed=0)
    assert len(m3.layers) == 1 and m3.n_out == 1
    with pytest.raises(ValueError, match="sizes"):
        pydl.mlp([4])
    with pytest.raises(ValueError, match="activation"):
        pydl.mlp([4, 3, 2], activation="gelu")


def test_dropout_is_identity_in_eval_mode():
    with_do = pydl.Sequential([nn.Dense(6, 9), nn.ReLU(), nn.Dropout(keep_prob=0.5), nn.Dense(9, 4)], seed=1)
    without = pydl.Sequential([nn.Dense(6, 9), nn.ReLU(), nn.Dense(9, 4)], seed=1)
    without.theta[...] = with_do.theta
    X, _ = data_for(without, m=25)
    assert np.array_equal(with_do.forward(X), without.forward(X))
    assert np.array_equal(with_do.predict_proba(X), without.predict_proba(X))
    # while in training mode it does change the output
    assert not np.allclose(with_do.forward(X, training=True), without.forward(X, training=True))


def test_batchnorm_model_eval_predicts_a_row_alone_as_in_a_batch():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    model = pydl.mlp([10, 32, 16, 3], batchnorm=True, keep_prob=0.8, seed=1)
    model.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert not np.allclose(model.layers[1].running_mean, 0), "running stats should have moved"
    for dt, rtol in ((np.float32, 2e-6), (np.float64, 1e-12)):
        mod = model.astype(dt)
        Xd = X.astype(dt)
        P = mod.predict_proba(Xd)
        Z = mod.forward(Xd)
        for i in range(0, 200, 7):
            # exact equality holds for the BatchNorm layer itself (test_nn); through the
            # Dense layers the BLAS GEMM may block a 1-row product differently, so allow
            # rounding of the last bits.
            assert_close(mod.forward(Xd[i:i + 1])[0], Z[i], rtol, rtol * np.abs(Z[i]).max())
            assert_close(mod.predict_proba(Xd[i:i + 1])[0], P[i], rtol, rtol)
            assert mod.predict(Xd[i:i + 1])[0] == P[i].argmax()
        # and the same rows in another batch composition
        perm = rng.permutation(200)
        assert_close(mod.forward(Xd[perm]), Z[perm], rtol, rtol * np.abs(Z).max())


@pytest.mark.skipif(not pydl.ops.has_own_gemm, reason="the own GEMM kernel is not built (no AVX)")
def test_batch_invariant_predictions_do_not_depend_on_the_batch():
    """forward/predict_proba/predict(batch_invariant=True): a row alone, in a permuted
    batch, or across the evaluation chunks gives the same bits as in the whole batch; and
    the values agree with the default (BLAS) path to rounding."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 64)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    model = pydl.mlp([64, 100, 50, 10], batchnorm=True, seed=2)
    model.fit(X, y, epochs=1, batch_size=32, verbose=0)
    for dt in (np.float32, np.float64):
        mod = model.astype(dt)
        Xd = X.astype(dt)
        Z = mod.forward(Xd, batch_invariant=True)
        P = mod.predict_proba(Xd, batch_invariant=True)
        for i in (0, 1, 150, 299):
            assert np.array_equal(mod.forward(Xd[i:i + 1], batch_invariant=True)[0], Z[i])
            assert np.array_equal(mod.predict_proba(Xd[i:i + 1], batch_invariant=True)[0], P[i])
        perm = rng.permutation(300)[:123]
        assert np.array_equal(mod.forward(Xd[perm], batch_invariant=True), Z[perm])
        assert np.array_equal(mod.predict(Xd[perm], batch_invariant=True), P[perm].argmax(1))
        rtol = 1e-5 if dt == np.float32 else 1e-12
        assert_close(mod.forward(Xd), Z, rtol, rtol * np.abs(Z).max())
    big = np.repeat(X, 15, axis=0)  # 4500 rows: evaluation chunks of 4096 and 404
    assert np.array_equal(model.forward(big, batch_invariant=True)[4000:4200],
                          model.forward(big[4000:4200], batch_invariant=True))


def test_batch_invariant_is_for_evaluation_only():
    model = pydl.mlp([4, 3, 2], seed=0)
    X = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="training=False"):
        model.forward(X, training=True, batch_invariant=True)
    with pytest.raises(TypeError, match="batch_invariant"):
        model.forward(X, batch_invariant=1)


# ============================================================================ validation

def test_sequential_bad_construction():
    with pytest.raises(ValueError, match="non-empty"):
        pydl.Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        pydl.Sequential([nn.Dense(3, 4), "relu"])
    with pytest.raises(ValueError, match=r"layers\[2\].*expects 5"):
        pydl.Sequential([nn.Dense(3, 4), nn.ReLU(), nn.Dense(5, 2)])
    with pytest.raises(ValueError, match="logits"):
        pydl.Sequential([nn.Dense(3, 4), nn.ReLU()])
    with pytest.raises(ValueError, match="Dense"):
        pydl.Sequential([nn.ReLU()])
    d = nn.Dense(3, 3)
    with pytest.raises(ValueError, match="same layer"):
        pydl.Sequential([d, nn.ReLU(), d])
    with pytest.raises(ValueError, match="seed"):
        pydl.Sequential([nn.Dense(3, 2)], seed=-1)
    with pytest.raises(ValueError, match="dtype"):
        pydl.Sequential([nn.Dense(3, 2)], dtype=np.float16)
    with pytest.raises(ValueError, match="loss"):
        pydl.Sequential([nn.Dense(3, 2)], loss="hinge")


def test_forward_backward_bad_inputs_name_the_argument():
    model = net_relu_softmax(np.float32)
    X, y = data_for(model, m=10)
    with pytest.raises(ValueError, match="X.*features"):
        model.forward_backward(X[:, :5], y)
    with pytest.raises(ValueError, match="X.*NaN"):
        Xn = X.copy()
        Xn[3, 2] = np.nan
        model.forward_backward(Xn, y)
    with pytest.raises(ValueError, match="y.*rows"):
        model.forward_backward(X, y[:-1])
    with pytest.raises(ValueError, match="y.*labels outside"):
        model.forward_backward(X, np.full(10, 4))
    with pytest.raises(ValueError, match="X.*2-D"):
        model.predict(X[0])
    with pytest.raises(TypeError, match="X"):
        model.predict(np.array([["a"] * 6]))


def test_seed_none_draws_and_keeps_a_seed():
    m = pydl.mlp([3, 4, 2])
    assert isinstance(m.seed, int) and 0 <= m.seed < 2**63
    again = pydl.mlp([3, 4, 2], seed=m.seed)
    assert np.array_equal(m.theta, again.theta)


def test_a_layer_class_instead_of_an_instance_says_so():
    with pytest.raises(TypeError, match=r"layers\[1\] is the class ReLU; pass an instance, ReLU\(\.\.\.\)"):
        pydl.Sequential([nn.Dense(4, 3), nn.ReLU])


class PrivateParam(nn.Layer):
    def param_shapes(self):
        return [("_w", (1,))]


def test_parameter_names_with_a_leading_underscore_are_refused():
    """A layer's private attributes are its cached arrays, set directly (not copied into a
    bound view) and dropped by a model's copies: a parameter cannot be one of them."""
    with pytest.raises(ValueError, match=r"layer 1: PrivateParam: .*leading underscore.*'_w'"):
        pydl.Sequential([nn.Dense(3, 2), PrivateParam()])
    with pytest.raises(ValueError, match=r"^PrivateParam: .*leading underscore.*'_w'"):
        PrivateParam()._standalone(np.float64)  # a layer used on its own binds on first use
    with pytest.raises(ValueError, match=r"^PrivateParam: .*leading underscore.*'_w'"):
        pydl.gradcheck.check_layer(PrivateParam(), np.ones((2, 1)))  # binds a copy of its own
    layer = pydl.Sequential([nn.Dense(3, 2)]).layers[0]
    W = layer.W
    layer.W = np.ones((2, 3), layer.W.dtype)  # a parameter: copied into its view
    assert layer.W is W and (W == 1).all()
    kept = np.zeros(4)
    layer._cached = kept  # private: set as is
    assert layer._cached is kept


class ScaledCrossEntropy(pydl.losses.SoftmaxCrossEntropy):
    """A user's loss: softmax cross-entropy times a constant (kept in a private attribute
    too, which the model's copy keeps)."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.scale = self._scale = scale

    def forward_backward(self, Z, y):
        J, dZ = super().forward_backward(Z, y)
        dZ *= self._scale
        return self._scale * J, dZ


def test_models_given_one_loss_object_each_keep_their_own_copy(monkeypatch):
    """Two models trained at once in two threads from one Loss object do not share its
    gradient buffer: held together after each loss kernel (a barrier), each gets the
    gradient it gets alone."""
    loss = ScaledCrossEntropy(3.0)
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((64, 6)), rng.integers(0, 4, 64)) for _ in range(2)]
    models = [pydl.Sequential([nn.Dense(6, 4)], loss=loss, seed=0, dtype=np.float64)
              for _ in range(2)]
    assert models[0].loss is not loss and models[0].loss is not models[1].loss
    assert type(models[0].loss) is ScaledCrossEntropy and models[0].loss.scale == 3.0
    alone = []
    for model, (X, y) in zip(models, data):
        model.forward_backward(X, y)
        alone.append(model.dtheta.copy())
    run_in_lockstep(monkeypatch, pydl.ops, ["softmax_cross_entropy"],
                    [lambda i=i: models[i].forward_backward(*data[i]) for i in range(2)])
    for model, expected in zip(models, alone):
        np.testing.assert_array_equal(model.dtheta, expected)


def test_a_users_loss_survives_pickle_and_copies_and_save_refuses_what_load_cannot_read(tmp_path):
    import pickle

    model = pydl.Sequential([nn.Dense(3, 2)], loss=ScaledCrossEntropy(5.0), seed=0)
    for other in (pickle.loads(pickle.dumps(model)), model.copy(), model.astype(np.float64)):
        assert type(other.loss) is ScaledCrossEntropy and other.loss._scale == 5.0
        other.forward_backward(np.ones((4, 3)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="the loss is a ScaledCrossEntropy, not a built-in loss"):
        model.save(tmp_path / "m.npz")

    class MyDense(nn.Dense):
        pass

    with pytest.raises(ValueError, match="layer 1 is a MyDense, not a built-in pydl.nn layer"):
        pydl.Sequential([nn.Dense(3, 4), MyDense(4, 2)], seed=0).save(tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


def test_a_models_standardizer_applies_to_every_input_and_is_checked_when_set(tmp_path):
    from pydl.data import Standardizer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)) * 100 + 1e3
    y = rng.integers(0, 3, 64)
    std = Standardizer().fit(X)
    own = pydl.mlp([5, 8, 3], seed=0)
    own.standardizer = std
    given = pydl.mlp([5, 8, 3], seed=0)
    own.fit(X, y, epochs=2, batch_size=16, validation_data=(X[:8], y[:8]), verbose=0)
    given.fit(std.transform(X), y, epochs=2, batch_size=16,
              validation_data=(std.transform(X[:8]), y[:8]), verbose=0)
    np.testing.assert_array_equal(own.theta, given.theta)
    Z = std.transform(X)
    np.testing.assert_array_equal(own.forward(X), given.forward(Z))
    np.testing.assert_array_equal(own.predict(X), given.predict(Z))
    assert own.evaluate(X, y) == given.evaluate(Z, y) and own.cost(X, y) == given.cost(Z, y)
    assert own.forward_backward(X, y) == given.forward_backward(Z, y)
    # streamed from a memory-mapped file: each mini-batch standardized as it comes
    np.save(tmp_path / "X.npy", X)
    streamed = pydl.mlp([5, 8, 3], seed=0)
    streamed.standardizer = std
    streamed.fit(np.load(tmp_path / "X.npy", mmap_mode="r"), y, epochs=2, batch_size=16,
                 shuffle=False, verbose=0)
    unshuffled = pydl.mlp([5, 8, 3], seed=0)
    unshuffled.fit(Z, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_array_equal(streamed.theta, unshuffled.theta)
    # a float32 file into a float64 model: standardized in float64 both ways
    np.save(tmp_path / "X32.npy", X.astype(np.float32))
    pair = [pydl.mlp([5, 8, 3], seed=0, dtype=np.float64) for _ in range(2)]
    for mdl, feats in zip(pair, (np.load(tmp_path / "X32.npy", mmap_mode="r"), X.astype(np.float32))):
        mdl.standardizer = std
        mdl.fit(feats, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_array_equal(pair[0].theta, pair[1].theta)
    for copy in (own.copy(), own.astype(np.float64)):
        assert copy.standardizer is std
    # a float64 model standardizes float32 (or integer) features in float64
    wide, plain = own.astype(np.float64), own.astype(np.float64)
    plain.standardizer = None
    for feats in (X.astype(np.float32), np.rint(X).astype(np.int64)):
        np.testing.assert_array_equal(wide.forward(feats),
                                      plain.forward(std.transform(feats.astype(np.float64))))
    with pytest.raises(TypeError, match="standardizer must be a pydl.data.Standardizer or None"):
        own.standardizer = "z-score"
    with pytest.raises(ValueError, match="standardizer is fitted on 2 features; the model takes 5"):
        own.standardizer = Standardizer().fit(X[:, :2])
    with pytest.raises(ValueError, match="standardizer is not fitted"):
        own.standardizer = Standardizer()
    assert own.standardizer is std


def test_a_memory_mapped_x_is_evaluated_a_chunk_at_a_time(tmp_path, monkeypatch):
    """predict, evaluate, cost and validation_data take a memory-mapped X as they take an
    array (they refused it), converting one chunk of rows at a time."""
    import pydl.model

    monkeypatch.setattr(pydl.model, "_EVAL_CHUNK", 7)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5))  # float64 on disk, a float32 model
    y = rng.integers(0, 3, 30)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    model = pydl.mlp([5, 8, 3], seed=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.predict_proba(mm), model.predict_proba(X))
    assert model.evaluate(mm, y) == model.evaluate(X, y) and model.cost(mm, y) == model.cost(X, y)
    a, b = pydl.mlp([5, 8, 3], seed=0), pydl.mlp([5, 8, 3], seed=0)
    ha = a.fit(X, y, epochs=2, batch_size=8, validation_data=(mm, y), verbose=0)
    hb = b.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y), verbose=0)
    assert ha.history == hb.history


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(sizes=[4, 0, 2]), ValueError, r"sizes\[1\] must be a positive integer .* got 0"),
    (dict(sizes=[4, 8.0, 2]), ValueError, r"sizes\[1\] must be a positive integer .* got 8.0"),
    (dict(sizes=[True, 8, 2]), ValueError, r"sizes\[0\] must be a positive integer"),
    (dict(sizes=[4, 8, 2], batchnorm="no"), TypeError, r"batchnorm must be a bool, got str"),
    (dict(sizes=[4, 8, 2], keep_prob=True), TypeError, r"keep_prob must be a number in \(0, 1\], got a bool"),
])
def test_mlp_arguments_are_checked_naming_them(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pydl.mlp(**kwargs)


def test_an_ensemble_of_one_model_not_in_a_list_says_so():
    with pytest.raises(TypeError, match="models must be a list of pydl models, got Sequential"):
        pydl.ensemble.Ensemble(pydl.mlp([3, 2], seed=0))


@pytest.mark.parametrize("sizes, loss, needle", [
    ([3, 4, 1], "softmax_cross_entropy", r"softmax_cross_entropy needs an output layer of >= 2 "
     r"units \(one per class\), got 1: for two classes use 2 outputs, or "
     r"loss='sigmoid_cross_entropy' with 1"),
    ([3, 4, 2], "sigmoid_cross_entropy", r"sigmoid_cross_entropy needs an output layer of 1 unit"),
])
def test_an_output_layer_that_cannot_fit_the_loss_is_refused_when_built(sizes, loss, needle):
    """Before, mlp([n, h, 1]) built, predicted class 0 with probability 1 everywhere, and
    only fit refused it."""
    with pytest.raises(ValueError, match=needle):
        pydl.mlp(sizes, loss=loss, seed=0)
