"""Callbacks: EarlyStopping, Checkpoint, LRScheduler, ProgressBar, and the NaN guard
built into fit (pydl.TrainingDiverged)."""
import io
import os
import re

import numpy as np
import pytest

import pydl
from conftest import assert_close
from pydl import nn, optim, schedules
from pydl.callbacks import Callback, Checkpoint, EarlyStopping, LRScheduler, ProgressBar


class Recorder(Callback):
    """Keeps a copy of theta, BN state and logs after every epoch."""

    def __init__(self):
        self.theta, self.state, self.logs = {}, {}, {}

    def on_epoch_end(self, model, epoch, logs):
        self.theta[epoch] = model.theta.copy()
        self.state[epoch] = {k: v.copy() for k, v in model._state_arrays().items()}
        self.logs[epoch] = dict(logs)


def overfit_problem():
    """Few training rows, random labels, a wide net: dev loss bottoms out early and rises."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    Xd = rng.standard_normal((60, 8)).astype(np.float32)
    yd = rng.integers(0, 3, 60)
    return X, y, Xd, yd


# ----------------------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_stops_and_restores_best(patience):
    X, y, Xd, yd = overfit_problem()
    model = pydl.mlp([8, 64, 3], batchnorm=True, seed=0)
    rec = Recorder()
    es = EarlyStopping(monitor="dev_loss", patience=patience, restore_best=True)
    h = model.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=60, batch_size=10,
                  validation_data=(Xd, yd), callbacks=[rec, es], verbose=0)
    dev = h["dev_loss"]
    best = int(np.argmin(dev))
    assert len(h.epoch) < 60, f"never stopped; dev_loss {np.round(dev, 3)}"
    assert h.best_epoch == best == es.best_epoch, (h.best_epoch, best, np.round(dev, 4))
    assert len(h.epoch) == best + patience + 2, \
        f"stopped after {len(h.epoch)} epochs; best {best}, patience {patience}"
    assert np.array_equal(model.theta, rec.theta[best]), "theta is not the best epoch's"
    assert not np.array_equal(model.theta, rec.theta[len(h.epoch) - 1])
    for k, v in model._state_arrays().items():
        assert np.array_equal(v, rec.state[best][k]), f"BatchNorm {k} not restored"
    assert model.evaluate(Xd, yd)["loss"] == pytest.approx(dev[best], rel=1e-6)


def test_early_stopping_without_restore_keeps_last():
    X, y, Xd, yd = overfit_problem()
    model = pydl.mlp([8, 64, 3], seed=0)
    rec = Recorder()
    h = model.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=60, batch_size=10, validation_data=(Xd, yd),
                  callbacks=[rec, EarlyStopping(patience=1, restore_best=False)], verbose=0)
    assert len(h.epoch) < 60
    assert np.array_equal(model.theta, rec.theta[h.epoch[-1]])
    assert h.best_epoch == int(np.argmin(h["dev_loss"]))


def test_early_stopping_max_mode_on_accuracy_and_min_delta():
    """monitor 'loss' in 'max' mode: the first epoch is the best, so it stops after patience+1."""
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 16, 3], seed=0)
    h = model.fit(X, y, optimizer=optim.SGD(lr=0.01), epochs=20, batch_size=40,
                  callbacks=[EarlyStopping(monitor="loss", mode="max", patience=3)], verbose=0)
    assert all(np.diff(h["loss"]) < 0), h["loss"]
    assert h.best_epoch == 0 and len(h.epoch) == 5
    # a huge min_delta: nothing after the first epoch counts as an improvement
    model = pydl.mlp([8, 16, 3], seed=0)
    h = model.fit(X, y, optimizer=optim.SGD(lr=0.01), epochs=20, batch_size=40,
                  callbacks=[EarlyStopping(monitor="loss", patience=1, min_delta=10.0)], verbose=0)
    assert h.best_epoch == 0 and len(h.epoch) == 3
    assert EarlyStopping(monitor="dev_accuracy").mode == "max"


def test_early_stopping_bad_arguments_and_missing_metric():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(min_delta=float("nan"))
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 16, 3], seed=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(X, y, epochs=2, batch_size=10, callbacks=[EarlyStopping()], verbose=0)


# ----------------------------------------------------------------------------- Checkpoint
def test_checkpoint_every_and_keep_last(tmp_path):
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 16, 3], batchnorm=True, keep_prob=0.8, seed=0)
    rec = Recorder()
    ck = Checkpoint(tmp_path / "ckpt" / "model-{epoch:03d}.npz", every=2, keep_last=2)
    model.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=7, batch_size=10, callbacks=[rec, ck], verbose=0)
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["model-004.npz", "model-006.npz"], files
    for done in (4, 6):
        loaded = pydl.load(tmp_path / "ckpt" / f"model-{done:03d}.npz")
        assert loaded.epoch == done and loaded.step == done * 4
        assert np.array_equal(loaded.theta, rec.theta[done - 1])
        for k, v in loaded._state_arrays().items():
            assert np.array_equal(v, rec.state[done - 1][k])
        assert isinstance(loaded.optimizer, optim.Adam) and loaded.optimizer.t == done * 4


def test_checkpoint_fixed_path_is_overwritten(tmp_path):
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 16, 3], seed=0)
    path = tmp_path / "last.npz"
    model.fit(X, y, epochs=3, batch_size=10, callbacks=[Checkpoint(path)], verbose=0)
    assert os.listdir(tmp_path) == ["last.npz"], "temporary files left behind"
    assert pydl.load(path).epoch == 3
    assert np.array_equal(pydl.load(path).theta, model.theta)


def test_checkpoint_keeps_all_without_keep_last(tmp_path):
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 16, 3], seed=0)
    model.fit(X, y, epochs=3, batch_size=10, callbacks=[Checkpoint(tmp_path / "m{epoch}.npz")], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["m1.npz", "m2.npz", "m3.npz"]


@pytest.mark.parametrize("kwargs, name", [({"every": 0}, "every"), ({"keep_last": 0}, "keep_last"),
                                          ({"every": 1.5}, "every")])
def test_checkpoint_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        Checkpoint(tmp_path / "x.npz", **kwargs)


# ----------------------------------------------------------------------------- LRScheduler
@pytest.mark.parametrize("schedule, expected", [
    (schedules.ExponentialDecay(0.2, base=0.5), [0.2 * 0.5 ** e for e in range(5)]),
    (schedules.InverseTimeDecay(0.1, decay_rate=1.0), [0.1 / (1 + e) for e in range(5)]),
    (schedules.StaircaseDecay(0.1, decay_rate=1.0, interval=2), [0.1, 0.1, 0.05, 0.05, 0.1 / 3]),
    (lambda e: 0.01 * (e + 1), [0.01 * (e + 1) for e in range(5)]),
], ids=["exponential", "inverse_time", "staircase", "callable"])
def test_lr_scheduler_sets_lr_each_epoch(schedule, expected):
    """With batch GD in float64 and SGD, each epoch is theta -= lr_e * grad(theta): check both
    the logged lr and that the step really used it."""
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0, dtype=np.float64)
    X = X.astype(np.float64)

    class StepCheck(Callback):
        def on_epoch_begin(self, model, epoch):
            self.before = model.theta.copy()
            model.forward_backward(X, y)         # the gradient the epoch's single step will use
            self.grad = model.dtheta.copy()
            self.lr = model.optimizer.lr

        def on_epoch_end(self, model, epoch, logs):
            assert_close(model.theta, self.before - expected[epoch] * self.grad, 1e-12, 1e-15)
            assert self.lr == pytest.approx(expected[epoch], rel=1e-15)

    h = model.fit(X, y, optimizer=optim.SGD(lr=123.0), epochs=5, batch_size=40, shuffle=False,
                  callbacks=[LRScheduler(schedule), StepCheck()], verbose=0)
    assert h["lr"] == pytest.approx(expected, rel=1e-15)


def test_lr_scheduler_uses_absolute_epoch_when_resuming():
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0)
    h = model.fit(X, y, optimizer=optim.SGD(lr=1.0), epochs=5, initial_epoch=3, batch_size=10,
                  callbacks=[LRScheduler(schedules.ExponentialDecay(1.0, base=0.5))], verbose=0)
    assert h["lr"] == [0.125, 0.0625]


def test_lr_scheduler_refuses_bad_schedule_values():
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0)
    with pytest.raises(ValueError, match="epoch 0"):
        model.fit(X, y, epochs=2, batch_size=10, callbacks=[LRScheduler(lambda e: -1.0)], verbose=0)


# ----------------------------------------------------------------------------- ProgressBar
def test_progress_bar_prints_to_stream():
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0)
    s = io.StringIO()
    model.fit(X, y, epochs=3, batch_size=10, validation_data=(X, y), callbacks=[ProgressBar(stream=s)], verbose=0)
    out = s.getvalue()
    assert "3/3" in out, out
    assert "loss" in out and "dev_accuracy" in out, out


def test_verbose_adds_a_progress_bar_and_zero_is_silent(capsys):
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0)
    model.fit(X, y, epochs=2, batch_size=10, verbose=0)
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    model.fit(X, y, epochs=2, batch_size=10, verbose=1)
    cap = capsys.readouterr()
    assert "loss" in cap.out + cap.err and "2/2" in cap.out + cap.err


# ----------------------------------------------------------------------------- NaN guard
def diverging_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = (X @ rng.standard_normal((5, 1))).astype(np.float32)
    return X, y


# regression nets that blow up under SGD(lr=1e3): some first overflow theta in an update
# (from a finite cost), others first give an infinite cost
DIVERGING = {
    "shallow": lambda: [nn.Dense(5, 16), nn.ReLU(), nn.Dense(16, 1)],
    "deep": lambda: [nn.Dense(5, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 1)],
    "batchnorm": lambda: [nn.Dense(5, 16, use_bias=False), nn.BatchNorm(16), nn.ReLU(), nn.Dense(16, 1)],
}


def replay(layers, X, y, lr, batch_size, steps):
    """A fresh model trained by the low-level loop (fit's shuffling) for exactly `steps` steps."""
    model = pydl.Sequential(layers, loss="mse", seed=0)
    opt = optim.SGD(lr=lr)
    m = X.shape[0]
    epoch = 0
    while model.step < steps:
        order = np.random.default_rng([model.seed, epoch]).permutation(m)
        for s in range(0, m, batch_size):
            if model.step == steps:
                break
            idx = order[s:s + batch_size]
            model.forward_backward(X[idx], y[idx])
            opt.step(model)
        epoch += 1
    return model


@pytest.mark.parametrize("arch", list(DIVERGING))
def test_nan_guard_raises_and_keeps_last_finite_theta(tmp_path, arch):
    X, y = diverging_problem()
    model = pydl.Sequential(DIVERGING[arch](), loss="mse", seed=0)
    rec = Recorder()
    with pytest.raises(pydl.TrainingDiverged) as info:
        model.fit(X, y, optimizer=optim.SGD(lr=1e3), epochs=200, batch_size=64,
                  callbacks=[rec, Checkpoint(tmp_path / "ck-{epoch}.npz")], verbose=0)
    msg = str(info.value)
    match = re.search(r"step (\d+)", msg)
    assert match and "lr=1000" in msg, msg
    step = int(match.group(1))
    assert step == model.step >= 1, (msg, model.step)
    assert isinstance(info.value, FloatingPointError)
    # batch GD: one step per epoch, so the parameters before the failing step are those
    # after epoch step-1, and no later
    assert np.isfinite(model.theta).all(), f"the model must keep finite parameters ({msg})"
    for k, v in model._state_arrays().items():
        assert np.isfinite(v).all(), f"{k} not finite"
    assert step - 1 in rec.theta and step not in rec.theta
    assert np.array_equal(model.theta, rec.theta[step - 1])
    for k, v in model._state_arrays().items():
        assert np.array_equal(v, rec.state[step - 1][k]), f"BatchNorm {k} not restored"
    # an independent run of exactly `step` steps reaches the same parameters
    again = replay(DIVERGING[arch](), X, y, 1e3, 64, step)
    assert np.array_equal(model.theta, again.theta)
    # the last checkpoint written before the failure still loads, finite, equal to the model
    last = pydl.load(tmp_path / f"ck-{step}.npz")
    assert last.epoch == step and np.isfinite(last.theta).all()
    assert np.array_equal(last.theta, model.theta)
    assert not os.path.exists(tmp_path / f"ck-{step + 1}.npz")


@pytest.mark.parametrize("arch", list(DIVERGING))
def test_nan_guard_mid_epoch_keeps_theta_before_failing_step(arch):
    X, y = diverging_problem()
    model = pydl.Sequential(DIVERGING[arch](), loss="mse", seed=0)
    with pytest.raises(pydl.TrainingDiverged, match=r"lr=1000") as info:
        model.fit(X, y, optimizer=optim.SGD(lr=1e3), epochs=200, batch_size=16, verbose=0)
    step = model.step
    assert f"step {step}" in str(info.value), str(info.value)
    assert np.isfinite(model.theta).all(), str(info.value)
    again = replay(DIVERGING[arch](), X, y, 1e3, 16, step)
    assert np.array_equal(model.theta, again.theta), "theta is not the one from before the failing step"
    for (k, a), (_, b) in zip(model._state_arrays().items(), again._state_arrays().items()):
        assert np.array_equal(a, b), f"BatchNorm {k} not restored"


# ----------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("path", ["ck/m-{step}.npz", "m-{}.npz", "m-{0}.npz", "m-{epoch.real}.npz",
                                  "m-{epoch", "m-{epoch:s}.npz", "m-{epoch}-{step}.npz"])
def test_checkpoint_bad_path_template_is_rejected_at_construction(tmp_path, path):
    with pytest.raises(ValueError) as info:
        Checkpoint(str(tmp_path / path))
    msg = str(info.value)
    assert "path" in msg and "{epoch}" in msg, msg


def test_checkpoint_good_path_templates(tmp_path):
    assert Checkpoint(tmp_path / "m-{epoch:03d}.npz")._target(7).endswith("m-007.npz")
    assert Checkpoint(tmp_path / "m-{{x}}-{epoch}.npz")._target(7).endswith("m-{x}-7.npz")
    assert Checkpoint(tmp_path / "plain.npz")._target(7).endswith("plain.npz")


def test_checkpoint_path_must_be_a_text_path():
    with pytest.raises(TypeError, match="path must be a str"):
        Checkpoint(b"m-{epoch}.npz")
    with pytest.raises(TypeError, match="PathLike"):
        Checkpoint(3)


def test_early_stopping_accepts_numpy_scalars():
    es = EarlyStopping(patience=np.int64(2), min_delta=np.float32(0.5), restore_best=np.bool_(False))
    assert es.patience == 2 and es.min_delta == pytest.approx(0.5) and es.restore_best is False
    assert type(es.min_delta) is float


@pytest.mark.parametrize("bad", ["no", 1, None, 0.0])
def test_early_stopping_restore_best_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="restore_best"):
        EarlyStopping(restore_best=bad)


@pytest.mark.parametrize("bad", ["abc", None, [1, 2]])
def test_history_from_dict_needs_a_dict(bad):
    from pydl.callbacks import History

    with pytest.raises(TypeError, match="History.from_dict"):
        History.from_dict(bad)


def test_lr_scheduler_refuses_an_underflowing_schedule_before_training(tmp_path):
    X, y, _, _ = overfit_problem()
    model = pydl.mlp([8, 6, 3], seed=0)
    theta = model.theta.copy()
    sched = schedules.ExponentialDecay(1e-3, base=1e-200)    # 0.0 from epoch 2 on
    for m, first in ((model, 1), (model.astype(np.float64), 2)):  # 1e-203: no float32
        with pytest.raises(ValueError, match=re.escape(repr(sched)) + f".* epoch {first};"):
            m.fit(X, y, epochs=50, batch_size=10, verbose=0,
                  callbacks=[LRScheduler(sched), Checkpoint(tmp_path / "m-{epoch}.npz")])
    assert os.listdir(tmp_path) == [] and np.array_equal(model.theta, theta)
    # resuming past the bad epochs is refused at once too; a run that stays before them trains
    with pytest.raises(ValueError, match="epoch 7;"):
        model.fit(X, y, epochs=9, initial_epoch=7, batch_size=10, verbose=0,
                  callbacks=[LRScheduler(sched)])
    # 1e-203 (epoch 1) is a float64 but not a normal float32: refused up front for float32
    with pytest.raises(ValueError, match=re.escape(repr(sched)) + r" gives lr = 1e-203 at "
                                         r"epoch 1; lr must be at least .* float32"):
        model.fit(X, y, epochs=2, batch_size=10, verbose=0, callbacks=[LRScheduler(sched)])
    assert np.array_equal(model.theta, theta)
    h = model.astype(np.float64).fit(X, y, epochs=2, batch_size=10, verbose=0,
                                     callbacks=[LRScheduler(sched)])
    assert h["lr"] == pytest.approx([1e-3, 1e-203])


def test_callbacks_that_began_get_on_train_end_when_a_later_one_refuses_to_begin():
    """A callback's on_train_begin may refuse (an LRScheduler whose rate would underflow):
    those that began before it still get on_train_end (a ProgressBar closes its bar)."""
    from pydl.callbacks import Callback, LRScheduler
    from pydl.schedules import ExponentialDecay

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
            self.events.append("begin")

        def on_train_end(self, model):
            self.events.append("end")

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    model = pydl.mlp([3, 4, 2], seed=0, dtype=np.float64)
    rec = Recorder()
    with pytest.raises(ValueError, match="epoch"):
        model.fit(X, y, epochs=400, batch_size=10, verbose=0,
                  callbacks=[rec, LRScheduler(ExponentialDecay(1e-3, base=1e-200))])
    assert rec.events == ["begin", "end"]
