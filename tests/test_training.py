"""The training loop (Sequential.fit / pydl.training.fit): equivalence with the
course-style low-level loop, the History it returns, batch sizes, bad inputs, and that
it actually learns digits, moons and circles.
"""

import sys

import numpy as np
import pytest

import pydl
from conftest import assert_close
from pydl import nn, optim
from pydl.data import Standardizer, train_dev_test_split


def toy(m=203, n=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n)).astype(np.float32)
    W = rng.standard_normal((n, k))
    y = (X @ W + 0.5 * rng.standard_normal((m, k))).argmax(axis=1)
    return X, y


def bn_dropout_model(seed=3, dtype=np.float32):
    return pydl.Sequential([nn.Dense(10, 16, use_bias=False), nn.BatchNorm(16), nn.ReLU(),
                            nn.Dropout(keep_prob=0.7), nn.Dense(16, 12, l2=0.01), nn.Tanh(),
                            nn.Dropout(rate=0.2), nn.Dense(12, 3)], seed=seed, dtype=dtype)


def low_level_loop(model, X, y, opt, epochs, batch_size, shuffle=True):
    """The loop of DESIGN.md with fit's shuffling (rng keyed by [seed, epoch]); opt.step
    advances model.step, which keys the dropout masks. Returns the per-step costs."""
    m = X.shape[0]
    costs = []
    for epoch in range(epochs):
        order = np.random.default_rng([model.seed, epoch]).permutation(m) if shuffle else np.arange(m)
        for s in range(0, m, batch_size):
            idx = order[s:s + batch_size]
            costs.append(model.forward_backward(X[idx], y[idx]))
            opt.step(model)
        model.epoch = epoch + 1
    return costs


@pytest.mark.parametrize("make_opt", [lambda: optim.Adam(lr=0.01), lambda: optim.Momentum(lr=0.1, nesterov=True),
                                      lambda: optim.SGD(lr=0.1), lambda: optim.RMSprop(lr=0.003)],
                         ids=["adam", "nesterov", "sgd", "rmsprop"])
def test_low_level_loop_equals_fit_bitwise(make_opt):
    X, y = toy()
    a, b = bn_dropout_model(), bn_dropout_model()
    costs = low_level_loop(a, X, y, opt_a := make_opt(), epochs=3, batch_size=32)
    hist = b.fit(X, y, optimizer=(opt_b := make_opt()), epochs=3, batch_size=32, verbose=0)
    diff = np.abs(a.theta - b.theta).max()
    assert np.array_equal(a.theta, b.theta), f"theta differs (max |diff| {diff:.3g})"
    assert hist.iterations == costs
    for (k, va), (_, vb) in zip(a._state_arrays().items(), b._state_arrays().items()):
        assert np.array_equal(va, vb), f"BatchNorm state {k} differs"
    for k in opt_a.state:
        assert np.array_equal(opt_a.state[k], opt_b.state[k]), f"optimizer state {k} differs"
    assert (a.step, a.epoch) == (b.step, b.epoch) == (3 * 7, 3)
    assert b.optimizer is opt_b


def test_the_readme_loop_draws_fresh_dropout_masks_and_counts_its_steps():
    """README's course-style loop: opt.step advances model.step, so each mini-batch gets its
    own mask; forward_backward alone does not (the same batch twice: the same gradient);
    an update that is refused leaves model.step as it was."""
    X, y = toy(m=64)
    model = pydl.Sequential([nn.Dense(10, 32), nn.Tanh(), nn.Dropout(keep_prob=0.5),
                             nn.Dense(32, 3)], seed=3, dtype=np.float64)
    drop = model.layers[2]
    opt = optim.SGD(lr=0.1)
    masks = []
    for k, _ in enumerate(pydl.data.minibatches(X, y, batch_size=16, seed=0)):
        assert model.step == k
        model.forward_backward(X, y)                  # the same rows every time
        grad = model.dtheta.copy()
        masks.append(drop._out != 0)
        model.forward_backward(X, y)
        assert np.array_equal(model.dtheta, grad)     # same step: same mask
        opt.step(model)
        if k == 3:
            break
    assert model.step == 4
    for a, b in zip(masks, masks[1:]):
        assert 0.3 < np.mean(a == b) < 0.7            # independent masks agree on ~1/2
    model.dtheta[0] = np.inf
    with pytest.raises(FloatingPointError):
        opt.step(model)
    assert model.step == 4


def test_low_level_loop_equals_fit_without_shuffle():
    X, y = toy(m=100)
    a = pydl.mlp([10, 8, 3], seed=1)
    b = pydl.mlp([10, 8, 3], seed=1)
    low_level_loop(a, X, y, optim.Adam(lr=0.01), epochs=2, batch_size=25, shuffle=False)
    b.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=2, batch_size=25, shuffle=False, verbose=0)
    assert np.array_equal(a.theta, b.theta)


def test_fit_is_reproducible_and_seed_dependent():
    X, y = toy()
    t = []
    for seed in (3, 3, 4):
        m = bn_dropout_model(seed)
        m.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=2, batch_size=16, verbose=0)
        t.append(m.theta.copy())
    assert np.array_equal(t[0], t[1]) and not np.array_equal(t[0], t[2])


def test_history_contents():
    X, y = toy(m=100)
    Xd, yd = toy(m=40, seed=1)
    model = pydl.mlp([10, 12, 3], seed=0, l2=0.01)
    opt = optim.Adam(lr=0.01)
    h = model.fit(X, y, optimizer=opt, epochs=3, batch_size=30, validation_data=(Xd, yd), verbose=0)
    assert isinstance(h, pydl.History) and model.history is h
    assert h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "accuracy", "dev_loss", "dev_accuracy", "lr"}
    for k in h.history:
        assert len(h[k]) == 3, f"{k}: {h[k]}"
    assert len(h.iterations) == 3 * 4 == model.step
    assert h["lr"] == [0.01] * 3
    # epoch loss = the example-weighted mean of that epoch's mini-batch costs (30, 30, 30, 10)
    w = np.array([30, 30, 30, 10])
    for e in range(3):
        expect = float(np.dot(h.iterations[4 * e:4 * e + 4], w) / 100)
        assert h["loss"][e] == pytest.approx(expect, rel=1e-12), (e, h["loss"][e], expect)
    assert all(0 <= a <= 1 for a in h["accuracy"] + h["dev_accuracy"])
    # the last dev values are those of the final model
    ev = model.evaluate(Xd, yd)
    assert h["dev_loss"][-1] == pytest.approx(ev["loss"], rel=1e-12)
    assert h["dev_accuracy"][-1] == ev["accuracy"]
    assert h["loss"][-1] < h["loss"][0], f"training loss did not go down: {h['loss']}"
    assert "epochs=3" in repr(h)
    d = h.to_dict()
    again = pydl.History.from_dict(d)
    assert again.to_dict() == d


def test_history_regression_has_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    y = (X @ [1.0, -2.0, 0.5]).astype(np.float32)
    model = pydl.Sequential([nn.Dense(3, 8), nn.ReLU(), nn.Dense(8, 1)], loss="mse", seed=0)
    h = model.fit(X, y, epochs=2, batch_size=10, validation_data=(X, y), verbose=0)
    assert set(h.history) == {"loss", "dev_loss", "dev_mse", "lr"}


@pytest.mark.parametrize("batch_size, steps_per_epoch", [(60, 1), (1, 60), (25, 3), (59, 2), (7, 9)])
def test_batch_sizes_and_step_counts(batch_size, steps_per_epoch):
    X, y = toy(m=60)
    model = pydl.mlp([10, 8, 3], seed=0)
    h = model.fit(X, y, optimizer=optim.SGD(lr=0.05), epochs=2, batch_size=batch_size, verbose=0)
    assert len(h.iterations) == 2 * steps_per_epoch == model.step
    assert model.epoch == 2


def test_batch_gradient_descent_is_one_full_step_per_epoch():
    """batch_size = m: each epoch is one step on the whole set (here with shuffle=False,
    so it is exactly the low-level full-batch step)."""
    X, y = toy(m=64)
    a = pydl.mlp([10, 8, 3], seed=0, dtype=np.float64)
    b = pydl.mlp([10, 8, 3], seed=0, dtype=np.float64)
    X64 = X.astype(np.float64)
    opt = optim.SGD(lr=0.5)
    for _ in range(3):
        a.forward_backward(X64, y)
        opt.step(a)
    b.fit(X64, y, optimizer=optim.SGD(lr=0.5), epochs=3, batch_size=64, shuffle=False, verbose=0)
    assert np.array_equal(a.theta, b.theta)
    # shuffled full batch: same gradient up to summation order
    c = pydl.mlp([10, 8, 3], seed=0, dtype=np.float64)
    c.fit(X64, y, optimizer=optim.SGD(lr=0.5), epochs=3, batch_size=64, verbose=0)
    assert_close(c.theta, a.theta, 1e-10, 1e-12)


def test_batchnorm_refuses_batches_of_one_and_joins_a_lone_last_row():
    """Over one example BatchNorm's variance is 0: the gradient into the layers before it is
    0 and running_var decays towards 0 (SGD on digits scored below chance). So batch_size=1
    is refused, and a lone last row joins the batch before it."""
    X, y = toy(m=33)
    model = pydl.mlp([10, 8, 3], batchnorm=True, seed=0)
    theta = model.theta.copy()
    with pytest.raises(ValueError, match="batch_size=1, but the model has BatchNorm"):
        model.fit(X, y, optimizer=optim.SGD(lr=0.01), epochs=1, batch_size=1, verbose=0)
    with pytest.raises(ValueError, match="X has 1 row, but the model has BatchNorm"):
        model.fit(X[:1], y[:1], epochs=1, verbose=0)
    assert np.array_equal(model.theta, theta) and model.step == 0
    sizes = []

    class Sizes(pydl.callbacks.Callback):
        def on_train_begin(self, model, **kw):
            sizes.append(kw["steps_per_epoch"])

    first = model.layers[0].W.copy()
    original = model._forward_backward
    model._forward_backward = lambda Xb, yb: (sizes.append(Xb.shape[0]), original(Xb, yb))[1]
    h = model.fit(X, y, optimizer=optim.SGD(lr=0.01), epochs=1, batch_size=16, verbose=0,
                  callbacks=[Sizes()])
    assert sizes == [2, 16, 17] and len(h.iterations) == 2
    assert not np.array_equal(model.layers[0].W, first)
    assert all(np.isfinite(a).all() for a in model._state_arrays().values())
    # without BatchNorm the last batch keeps its one row
    plain = pydl.mlp([10, 8, 3], seed=0)
    h = plain.fit(X, y, optimizer=optim.SGD(lr=0.01), epochs=1, batch_size=16, verbose=0)
    assert len(h.iterations) == 3


def test_batchnorm_joins_a_lone_row_of_a_streamed_epoch(tmp_path):
    """A memory-mapped X streams in shuffled blocks, so the one-row batch can come anywhere
    in the epoch: it joins a neighbour, and every row is used once."""
    X, y = toy(m=49)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    model = pydl.mlp([10, 8, 3], batchnorm=True, seed=3)
    seen = []
    original = model._forward_backward
    model._forward_backward = lambda Xb, yb: (seen.append(Xb.copy()), original(Xb, yb))[1]
    model.fit(Xm, y, optimizer=optim.SGD(lr=0.01), epochs=3, batch_size=8, verbose=0)
    for epoch in range(3):
        batches = seen[epoch * 6:(epoch + 1) * 6]
        assert sorted(b.shape[0] for b in batches) == [8, 8, 8, 8, 8, 9]
        rows = np.concatenate(batches)
        assert np.array_equal(np.unique(rows, axis=0), np.unique(X.astype(np.float32), axis=0))
    assert len(seen) == 18


def test_a_view_of_a_memory_mapped_x_is_streamed_not_converted_whole(tmp_path, monkeypatch):
    """np.asarray(mm)[:k] is an ndarray whose base is an ndarray whose base is the memmap:
    fit streams it too (it used to convert it whole, a copy of the file in memory)."""
    import pydl.data

    X, y = toy(m=48)
    np.save(tmp_path / "X.npy", X.astype(np.float64))
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    streamed = []
    original = pydl.data.minibatches
    monkeypatch.setattr(pydl.data, "minibatches",
                        lambda *a, **k: (streamed.append(1), original(*a, **k))[1])
    views = [np.asarray(mm)[:40], mm.view(np.ndarray)[:, :], np.asarray(mm)[:40][::2]]
    for view in views:
        model = pydl.mlp([10, 8, 3], seed=0)
        model.fit(view, y[:len(view)], epochs=1, batch_size=8, shuffle=False, verbose=0)
        alone = pydl.mlp([10, 8, 3], seed=0)
        alone.fit(np.array(view), y[:len(view)], epochs=1, batch_size=8, shuffle=False, verbose=0)
        np.testing.assert_array_equal(model.theta, alone.theta)
    assert len(streamed) == len(views)


def test_an_augment_hook_that_edits_its_batch_in_place_never_touches_the_callers_x():
    X, y = toy(m=40)
    X = X.astype(np.float32)
    before = X.copy()

    def noisy(Xb, rng):
        Xb += rng.standard_normal(Xb.shape).astype(Xb.dtype)
        return Xb

    for shuffle in (False, True):
        model = pydl.mlp([10, 8, 3], seed=0)
        model.fit(X, y, epochs=3, batch_size=8, shuffle=shuffle, augment=noisy, verbose=0)
        np.testing.assert_array_equal(X, before)


def test_initial_epoch_and_epochs():
    X, y = toy(m=40)
    model = pydl.mlp([10, 8, 3], seed=0)
    h = model.fit(X, y, epochs=0, batch_size=10, verbose=0)
    assert h.epoch == [] and model.step == 0
    h = model.fit(X, y, epochs=5, initial_epoch=3, batch_size=40, verbose=0)
    assert h.epoch == [3, 4] and model.epoch == 5 and model.step == 2


def test_initial_epoch_defaults_to_0_as_documented():
    """initial_epoch defaults to 0 (Keras), not model.epoch: the docstring says so and says
    how to resume."""
    doc = " ".join(pydl.training.fit.__doc__.split())
    assert "``initial_epoch``, default 0" in doc and "initial_epoch=model.epoch" in doc
    assert "default ``model.epoch``" not in doc
    X, y = toy(m=40)
    model = pydl.mlp([10, 8, 3], seed=0)
    model.fit(X, y, epochs=2, batch_size=20, verbose=0)
    assert model.epoch == 2
    h = model.fit(X, y, epochs=2, batch_size=20, verbose=0)
    assert h.epoch == [0, 1] and model.step == 8, "without initial_epoch, fit starts again at epoch 0"
    h = model.fit(X, y, epochs=3, initial_epoch=model.epoch, batch_size=20, verbose=0)
    assert h.epoch == [2] and model.epoch == 3


def test_batch_size_larger_than_m_is_one_full_batch():
    """50 examples with the default batch_size=64: one batch of all 50 rows per epoch,
    i.e. batch gradient descent, checked against a NumPy step of softmax regression."""
    X, y = toy(m=50)
    X = X.astype(np.float64)
    model = pydl.Sequential([nn.Dense(10, 3)], seed=0, dtype=np.float64)
    W0, b0 = model.layers[0].W.copy(), model.layers[0].b.copy()
    h = model.fit(X, y, optimizer=optim.SGD(lr=0.5), epochs=1, verbose=0)
    assert len(h.iterations) == 1 and model.step == 1
    Z = X @ W0.T + b0
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dZ = (P - np.eye(3)[y]) / 50
    assert_close(model.layers[0].W, W0 - 0.5 * dZ.T @ X, 1e-12, 1e-12)
    assert_close(model.layers[0].b, b0 - 0.5 * dZ.sum(axis=0), 1e-12, 1e-12)
    assert h.iterations[0] == pytest.approx(-np.log(P[np.arange(50), y]).mean(), rel=1e-12)
    # any batch_size >= m gives bitwise the same training as batch_size = m
    runs = []
    for batch_size in (50, 51, 64, 10**9):
        m = pydl.mlp([10, 8, 3], seed=1)
        hist = m.fit(X, y, epochs=3, batch_size=batch_size, verbose=0)
        runs.append((m.theta.copy(), hist.iterations))
    for theta, its in runs[1:]:
        assert np.array_equal(theta, runs[0][0]) and its == runs[0][1]


def test_optimizer_default_and_by_name():
    X, y = toy(m=40)
    model = pydl.mlp([10, 8, 3], seed=0)
    model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert isinstance(model.optimizer, optim.Adam)
    first = model.optimizer
    model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert model.optimizer is first, "fit without optimizer continues with model.optimizer"
    model.fit(X, y, optimizer="momentum", epochs=1, batch_size=10, verbose=0)
    assert isinstance(model.optimizer, optim.Momentum)


def test_fit_accepts_one_hot_and_float64_input():
    X, y = toy(m=50)
    model = pydl.mlp([10, 8, 3], seed=0)
    a = model.copy()
    model.fit(X.astype(np.float64), np.eye(3)[y], epochs=2, batch_size=10, verbose=0)
    a.fit(X, y, epochs=2, batch_size=10, verbose=0)
    assert_close(model.theta, a.theta, 1e-5, 1e-6)


# ------------------------------------------------------------------------------ bad inputs
def _bad(**overrides):
    X, y = toy(m=30)
    args = dict(X=X, y=y, epochs=1, batch_size=10, verbose=0)
    args.update(overrides)
    model = pydl.mlp([10, 8, 3], seed=0)
    theta = model.theta.copy()
    return model, args, theta


@pytest.mark.parametrize("overrides, exc, pattern", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": -3}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, ValueError, "batch_size"),
    ({"epochs": -1}, ValueError, "epochs"),
    ({"epochs": 1.5}, ValueError, "epochs"),
    ({"initial_epoch": -1}, ValueError, "initial_epoch"),
    ({"X": "nan"}, ValueError, r"X contains NaN"),
    ({"X": "inf"}, ValueError, r"X contains NaN or inf"),
    ({"X": "features"}, ValueError, r"X has 9 features"),
    ({"X": "1d"}, ValueError, r"X must be 2-D"),
    ({"y": "short"}, ValueError, r"y has 29 rows"),
    ({"y": "range"}, ValueError, r"y holds labels outside \[0, 3\)"),
    ({"y": "negative"}, ValueError, r"y holds labels outside"),
    ({"y": "fraction"}, ValueError, r"y must hold integer"),
    ({"y": None}, ValueError, r"y is required"),
    ({"validation_data": "single"}, ValueError, "validation_data"),
    ({"validation_data": "features"}, ValueError, r"validation_data\[0\]"),
    ({"validation_data": "labels"}, ValueError, r"validation_data\[1\]"),
    ({"optimizer": "lbfgs"}, ValueError, "optimizer"),
    ({"callbacks": ["stop"]}, TypeError, "callbacks"),
    ({"augment": 3}, TypeError, "augment"),
])
def test_bad_inputs_raise_naming_the_argument(overrides, exc, pattern):
    model, args, theta = _bad()
    X, y = args["X"], args["y"]
    special = {
        "nan": lambda: np.where(np.arange(X.size).reshape(X.shape) == 17, np.nan, X),
        "inf": lambda: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X),
        "features": lambda: X[:, :9],
        "1d": lambda: X[:, 0],
        "short": lambda: y[:-1],
        "range": lambda: np.where(np.arange(30) == 4, 3, y),
        "negative": lambda: np.where(np.arange(30) == 4, -1, y),
        "fraction": lambda: y + 0.5,
        "single": lambda: (X,),
        "labels": lambda: (X, np.full(30, 7)),
    }
    for key, value in overrides.items():
        if key == "validation_data" and value == "features":
            value = (X[:, :9], y)
        elif isinstance(value, str) and value in special and key != "optimizer":
            value = special[value]()
        args[key] = value
    with pytest.raises(exc, match=pattern):
        model.fit(args.pop("X"), args.pop("y"), **args)
    assert np.array_equal(model.theta, theta), "a refused fit must not train"
    assert model.step == 0


# ------------------------------------------------------------------------------ learning
def test_learns_digits_with_batchnorm_and_adam():
    X, y = pydl.datasets.load_digits()
    Xtr, ytr, Xdv, ydv, Xte, yte = train_dev_test_split(X, y, seed=0)
    std = Standardizer().fit(Xtr)
    Xtr, Xdv, Xte = std.transform(Xtr), std.transform(Xdv), std.transform(Xte)
    model = pydl.mlp([64, 128, 10], batchnorm=True, seed=0)
    h = model.fit(Xtr, ytr, optimizer=optim.Adam(lr=1e-3), epochs=25, batch_size=32,
                  validation_data=(Xdv, ydv), verbose=0)
    acc = model.evaluate(Xte, yte)["accuracy"]
    assert acc >= 0.96, f"digits test accuracy {acc:.4f} < 0.96 (dev {h['dev_accuracy'][-5:]})"


@pytest.mark.parametrize("make", ["make_moons", "make_circles"])
def test_learns_moons_and_circles(make):
    X, y = getattr(pydl.datasets, make)(n_samples=1000, noise=0.1 if make == "make_moons" else 0.05, seed=0)
    Xtr, ytr, Xdv, ydv, Xte, yte = train_dev_test_split(X, y, seed=1)
    model = pydl.mlp([2, 32, 32, 2], seed=0)
    model.fit(Xtr, ytr, optimizer=optim.Adam(lr=0.01), epochs=60, batch_size=32, verbose=0)
    acc = model.evaluate(Xte, yte)["accuracy"]
    assert acc >= 0.95, f"{make}: test accuracy {acc:.4f} < 0.95"


def test_sigmoid_output_learns_moons():
    X, y = pydl.datasets.make_moons(n_samples=600, noise=0.1, seed=2)
    model = pydl.Sequential([nn.Dense(2, 32), nn.Tanh(), nn.Dense(32, 32), nn.Tanh(), nn.Dense(32, 1)],
                            loss="sigmoid_cross_entropy", seed=0)
    model.fit(X[:400], y[:400], optimizer=optim.Adam(lr=0.01), epochs=80, batch_size=32, verbose=0)
    acc = model.evaluate(X[400:], y[400:])["accuracy"]
    assert acc >= 0.95, f"sigmoid moons test accuracy {acc:.4f}"


def _first_steps(k, X, y, batch_size=32):
    """bn_dropout_model and its Adam after the first k steps of fit's epoch 0 (k < 7)."""
    model, opt = bn_dropout_model(), optim.Adam(lr=0.01)
    order = np.random.default_rng([model.seed, 0]).permutation(X.shape[0])
    for s in range(k):
        idx = order[s * batch_size:(s + 1) * batch_size]
        model.forward_backward(X[idx], y[idx])
        opt.step(model)
    return model, opt


@pytest.mark.parametrize("when", ["after the backward", "after the update"])
def test_an_interrupt_leaves_the_model_at_a_step_boundary(when):
    """KeyboardInterrupt in the 4th step of an epoch: before its update the model is as after
    3 steps (BatchNorm statistics put back), after it as after 4; theta, BatchNorm
    statistics, Adam's moments and t, and model.step all agree, bit for bit."""
    X, y = toy()
    model, opt = bn_dropout_model(), optim.Adam(lr=0.01)
    calls = [0]
    if when == "after the backward":
        target, name = model.loss, "forward_backward"
    else:
        target, name = opt, "_update"
    real = getattr(target, name)

    def interrupted(*args):
        out = real(*args)
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return out
    setattr(target, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, optimizer=opt, epochs=2, batch_size=32, verbose=0)
    k = 3 if when == "after the backward" else 4
    ref, ref_opt = _first_steps(k, X, y)
    assert (model.step, model.epoch, opt.t) == (k, 0, k)
    assert np.array_equal(model.theta, ref.theta)
    for (name_, a), (_, b) in zip(model._state_arrays().items(), ref._state_arrays().items()):
        assert np.array_equal(a, b), name_
    for key in ref_opt.state:
        assert np.array_equal(opt.state[key], ref_opt.state[key]), key
    assert model.history.completed is False


def test_early_stopping_does_not_restore_after_divergence_or_interrupt():
    """TrainingDiverged keeps the last finite step; EarlyStopping must not swap in its best
    epoch's theta behind the counters' back (it does on a normal end)."""
    from pydl.callbacks import Callback, EarlyStopping
    X, y = toy()
    Xd, yd = toy(m=60, seed=1)

    class Blowup(Callback):
        def on_epoch_begin(self, model, epoch):
            if epoch == 4:
                model.optimizer.lr = 1e30
    model = pydl.mlp([10, 16, 3], seed=0, dtype=np.float64)
    with pytest.raises(pydl.training.TrainingDiverged):
        model.fit(X, y, optimizer=optim.SGD(lr=0.5), epochs=8, validation_data=(Xd, yd),
                  callbacks=[EarlyStopping(patience=20), Blowup()], verbose=0)
    assert model.history.completed is False and model.epoch >= 4
    assert model.history.best_epoch < 4                 # its best was before the blow-up
    # theta is that of the last finite step, which is not the best epoch's
    assert model.step == model.optimizer.t > 4 * 4
    ref = pydl.mlp([10, 16, 3], seed=0, dtype=np.float64)
    ref.fit(X, y, optimizer=optim.SGD(lr=0.5), epochs=model.history.best_epoch + 1, verbose=0)
    assert not np.array_equal(model.theta, ref.theta)
    assert np.isfinite(model.theta).all()
    done = pydl.mlp([10, 16, 3], seed=0, dtype=np.float64)
    h = done.fit(X, y, optimizer=optim.SGD(lr=0.5), epochs=3, validation_data=(Xd, yd),
                 callbacks=[EarlyStopping(patience=20)], verbose=0)
    assert h.completed is True and h.best_epoch is not None


def test_every_callback_ends_even_when_one_raises_in_on_train_end():
    from pydl.callbacks import Callback
    ended = []

    class Ends(Callback):
        def __init__(self, name, fail):
            self.name, self.fail = name, fail

        def on_train_end(self, model):
            ended.append(self.name)
            if self.fail:
                raise RuntimeError(f"{self.name} failed")
    X, y = toy()
    model = pydl.mlp([10, 8, 3], seed=0)
    with pytest.raises(RuntimeError, match="a failed"):
        model.fit(X, y, epochs=1, callbacks=[Ends("a", True), Ends("b", True), Ends("c", False)],
                  verbose=0)
    assert ended == ["a", "b", "c"]


def test_another_models_optimizer_is_refused_before_anything_changes():
    X, y = toy()
    model = bn_dropout_model()
    model.fit(X, y, optimizer=optim.Adam(), epochs=1, verbose=0)
    other = pydl.mlp([10, 4, 3], seed=0)
    foreign = optim.Adam()
    other.fit(X, y, optimizer=foreign, epochs=1, verbose=0)
    before = (model.theta.copy(), {k: v.copy() for k, v in model._state_arrays().items()},
              model.optimizer, model.history)
    with pytest.raises(ValueError, match="use a new optimizer for this model"):
        model.fit(X, y, optimizer=foreign, epochs=2, initial_epoch=1, verbose=0)
    assert np.array_equal(model.theta, before[0])
    for k, v in model._state_arrays().items():
        assert np.array_equal(v, before[1][k]), k
    assert model.optimizer is before[2] and model.history is before[3]


def test_ctrl_c_during_an_optimizer_step_is_held_until_the_step_is_done():
    """A SIGINT that arrives inside opt.step (here: before its kernel, after t counted the
    step) is raised after the step: theta, t and model.step then all count 4 steps."""
    import os
    import signal
    X, y = toy()
    model, opt = bn_dropout_model(), optim.Adam(lr=0.01)
    real, calls = opt._update, [0]

    def signalled(*args):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGINT)   # delivered at the next bytecode
        return real(*args)
    opt._update = signalled
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, optimizer=opt, epochs=2, batch_size=32, verbose=0)
    ref, ref_opt = _first_steps(4, X, y)
    assert (model.step, opt.t) == (4, 4)
    assert np.array_equal(model.theta, ref.theta)
    for key in ref_opt.state:
        assert np.array_equal(opt.state[key], ref_opt.state[key]), key
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_on_train_end_error_does_not_hide_what_ended_training():
    from pydl.callbacks import Callback

    class Breaks(Callback):
        def on_epoch_end(self, model, epoch, logs):
            raise KeyboardInterrupt

        def on_train_end(self, model):
            raise OSError(28, "No space left on device")
    X, y = toy()
    with pytest.raises(KeyboardInterrupt) as info:
        pydl.mlp([10, 8, 3], seed=0).fit(X, y, epochs=2, callbacks=[Breaks()], verbose=0)
    if sys.version_info >= (3, 11):  # (add_note)
        assert any("Breaks.on_train_end raised OSError" in n for n in info.value.__notes__)


def test_epochs_below_initial_epoch_is_refused_and_equal_changes_nothing():
    """epochs is the epoch to train up to: below initial_epoch it is a mistake (read as a
    count); equal, there is nothing to do and the model keeps its curve and optimizer."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)).astype(np.float32), np.arange(40) % 2
    model = pydl.mlp([3, 4, 2], seed=0)
    model.fit(X, y, epochs=5, verbose=0)
    history, optimizer, theta = model.history, model.optimizer, model.theta.copy()
    with pytest.raises(ValueError, match=r"epochs=3 is below initial_epoch=5: .* epochs=8\)"):
        model.fit(X, y, epochs=3, initial_epoch=5, verbose=0)
    done = model.fit(X, y, optimizer="sgd", epochs=5, initial_epoch=5, verbose=0)
    assert done.epoch == [] and done.completed
    assert model.history is history and history.epoch == [0, 1, 2, 3, 4]
    assert model.optimizer is optimizer and np.array_equal(model.theta, theta)


@pytest.mark.parametrize("verbose", ["no", 2, None])
def test_verbose_must_be_0_or_1(verbose):
    X, y = np.ones((4, 3), np.float32), np.arange(4) % 2
    with pytest.raises(TypeError, match="verbose must be 0 or 1"):
        pydl.mlp([3, 2], seed=0).fit(X, y, epochs=1, verbose=verbose)


def test_batchnorm_training_on_one_row_names_x():
    model = pydl.mlp([3, 4, 2], batchnorm=True, seed=0)
    one = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError, match=r"X has 1 row, but the model has BatchNorm.*pass at least 2 rows"):
        model.fit(one, np.array([1]), epochs=1, verbose=0)
    for call in (lambda: model.forward_backward(one, np.array([1])),
                 lambda: model.forward(one, training=True)):
        with pytest.raises(ValueError, match=r"^X has 1 row, but BatchNorm in training mode"):
            call()
