"""Training that blows up stops at the first non-finite cost (or the first update that makes
theta non-finite) with pydl.TrainingDiverged naming the step and the learning rate; the model
keeps the finite parameters from before the failing step, its optimizer state stays finite
(so it can be saved, loaded and trained on), and checkpoints already written stay intact.

(test_callbacks.py checks the restored theta against a replayed low-level loop for several
architectures; here: the exact stopping step, checkpoints, optimizer state, resuming.)
"""
import glob
import os
import re

import numpy as np
import pytest

import pydl
from pydl import optim
from pydl.callbacks import Callback, Checkpoint


def regression(m=64, n=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n)).astype(np.float32)
    y = (X @ rng.standard_normal((n, 1))).astype(np.float32)
    return X, y


class Recorder(Callback):
    """theta, BatchNorm state and optimizer state at the end of every epoch."""

    def __init__(self):
        self.theta, self.state = {}, {}

    def on_epoch_end(self, model, epoch, logs):
        self.theta[epoch + 1] = model.theta.copy()
        self.state[epoch + 1] = {k: v.copy() for k, v in model._state_arrays().items()}


def _step_and_lr(message):
    step = re.search(r"step (\d+)", message)
    lr = re.search(r"lr=([0-9.e+-]+)", message)
    assert step and lr and "diverged" in message, message
    return int(step.group(1)), float(lr.group(1))


@pytest.mark.parametrize("act, batchnorm", [("relu", False), ("relu", True), ("tanh", True)])
def test_sgd_lr_10_stops_with_a_clear_error_and_checkpoints_stay_intact(tmp_path, act, batchnorm):
    X, y = regression()
    model = pydl.mlp([8, 16, 1], activation=act, batchnorm=batchnorm, loss="mse", seed=0)
    rec = Recorder()
    ckpt = str(tmp_path / "ck-{epoch:03d}.npz")
    with pytest.raises(pydl.TrainingDiverged) as info:
        model.fit(X, y, optimizer=optim.SGD(lr=10), epochs=500, batch_size=64, verbose=0,
                  callbacks=[rec, Checkpoint(ckpt)])
    step, lr = _step_and_lr(str(info.value))
    assert lr == 10 and step == model.step >= 2, str(info.value)
    # it stopped at the first failure: every recorded cost is finite, nothing ran after it
    assert len(model.history.iterations) == step and np.isfinite(model.history.iterations).all()
    assert model.epoch == step and model.optimizer.t == step
    # batch gradient descent: one step per epoch, so the model holds theta after epoch `step`
    assert np.isfinite(model.theta).all()
    assert np.array_equal(model.theta, rec.theta[step])
    for k, v in model._state_arrays().items():
        assert np.array_equal(v, rec.state[step][k]), k
    # every checkpoint written before the failure loads, finite and as it was written
    files = sorted(glob.glob(str(tmp_path / "ck-*.npz")))
    assert [os.path.basename(f) for f in files] == [f"ck-{e:03d}.npz" for e in range(1, step + 1)]
    for e in range(1, step + 1):
        loaded = pydl.load(ckpt.format(epoch=e))
        assert loaded.epoch == e and loaded.step == e
        assert np.array_equal(loaded.theta, rec.theta[e])
    assert not glob.glob(str(tmp_path / ".tmp-*")), "a temporary checkpoint file was left behind"
    # the diverged model saves and loads; an early checkpoint resumes with a lower learning rate
    model.save(tmp_path / "after.npz")
    again = pydl.load(tmp_path / "after.npz")
    assert np.array_equal(again.theta, model.theta) and again.step == step
    early = pydl.load(ckpt.format(epoch=1))
    early.optimizer.lr = 1e-3
    early.fit(X, y, optimizer=early.optimizer, epochs=6, initial_epoch=early.epoch, batch_size=64,
              verbose=0)
    assert np.isfinite(early.theta).all() and np.isfinite(early.history["loss"]).all()


class BlowUpAt:
    """augment that returns huge (finite) inputs at exactly one step: the forward pass then
    overflows and the cost of that step is not finite, whatever the platform's rounding."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, Xb, rng):
        out = np.full_like(Xb, 3e38) if self.calls == self.step else Xb
        self.calls += 1
        return out


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("batch_size", [64, 16])
def test_training_stops_at_the_first_non_finite_cost(opt, batch_size):
    X, y = regression()
    k = 6  # the failing step (mid-epoch for batch_size 16)
    model = pydl.mlp([8, 16, 1], batchnorm=True, loss="mse", seed=0)
    optimizer = optim.get_optimizer(opt, lr=0.01)
    with pytest.raises(pydl.TrainingDiverged, match=rf"the cost became (nan|inf) at epoch \d+, step {k} \(lr=0.01\)"):
        model.fit(X, y, optimizer=optimizer, epochs=50, batch_size=batch_size, verbose=0,
                  augment=BlowUpAt(k))
    assert model.step == k and optimizer.t == k, "a step ran after the non-finite cost"
    assert len(model.history.iterations) == k and np.isfinite(model.history.iterations).all()
    assert model.epoch == k * batch_size // 64
    # the parameters, BatchNorm statistics and moments are those after k good steps
    ref = pydl.mlp([8, 16, 1], batchnorm=True, loss="mse", seed=0)
    ref_opt = optim.get_optimizer(opt, lr=0.01)
    with pytest.raises(_Stop):  # the same run, interrupted (cleanly) before step k
        ref.fit(X, y, optimizer=ref_opt, epochs=50, batch_size=batch_size, verbose=0,
                augment=_StopAfter(k))
    assert np.array_equal(model.theta, ref.theta)
    for (name, a), (_, b) in zip(model._state_arrays().items(), ref._state_arrays().items()):
        assert np.array_equal(a, b), name
    for name, v in optimizer.state.items():
        assert np.array_equal(v, ref_opt.state[name]), name


class _StopAfter:
    """Identity augment that interrupts fit (with _Stop) just before step k runs."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, Xb, rng):
        if self.calls == self.k:
            raise _Stop
        self.calls += 1
        return Xb


class _Stop(Exception):
    pass


@pytest.mark.parametrize("dtype, lr", [(np.float32, 3e38), (np.float64, 1e307)])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "rmsprop", "adam"])
def test_an_update_that_overflows_theta_is_undone_with_the_optimizer_state(tmp_path, opt, dtype, lr):
    X, y = regression()
    y = y * 100  # big gradients: the first update at this lr overflows
    model = pydl.mlp([8, 16, 1], activation="tanh", loss="mse", seed=0, dtype=dtype)
    first = optim.get_optimizer(opt, lr=1e-3)
    model.fit(X, y, optimizer=first, epochs=2, batch_size=16, verbose=0)  # moments exist
    before = model.theta.copy()
    state = {k: v.copy() for k, v in first.state.items()}
    first.lr = lr
    with pytest.raises(pydl.TrainingDiverged,
                       match=r"the update at epoch 2, step 8 would make the parameters or the optimizer's state non-finite") as info:
        model.fit(X, y, optimizer=first, epochs=50, initial_epoch=2, batch_size=16, verbose=0)
    assert _step_and_lr(str(info.value)) == (8, lr) and model.step == 8
    # the failing update is undone entirely: parameters, moments and the step count t
    assert np.array_equal(model.theta, before)
    assert first.t == 8, "the optimizer counted a step that was undone"
    assert set(first.state) == set(state)
    for k, v in first.state.items():
        assert np.array_equal(v, state[k]), f"optimizer state {k} kept the overflowing update"
    model.save(tmp_path / "m.npz")
    loaded = pydl.load(tmp_path / "m.npz")
    assert loaded.optimizer.t == first.t
    loaded.optimizer.lr = 1e-3
    loaded.fit(X, y, optimizer=loaded.optimizer, epochs=loaded.epoch + 1, initial_epoch=loaded.epoch,
               batch_size=16, verbose=0)
    assert np.isfinite(loaded.theta).all()


def test_overflowing_batchnorm_statistics_stop_training_before_the_model_is_spoiled():
    """Batch norm keeps the cost finite however large its input; the batch variance can still
    overflow (float32: |Z| ~ 1e20), and running statistics at inf would make every later
    evaluation NaN. Training stops at that step with the statistics and theta from before."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = pydl.mlp([8, 16, 3], batchnorm=True, seed=0)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    dense = model.layers[0]
    dense.W[...] *= np.float32(1e19)  # Z = X W^T: variance ~1e38 * 8 overflows float32
    theta, stats = model.theta.copy(), {k: v.copy() for k, v in model._state_arrays().items()}
    step = model.step
    with pytest.raises(pydl.TrainingDiverged, match=r"running statistics became non-finite .* step "
                       + str(step)):
        model.fit(X, y, epochs=2, batch_size=16, verbose=0, initial_epoch=1)
    np.testing.assert_array_equal(model.theta, theta)
    for k, v in model._state_arrays().items():
        np.testing.assert_array_equal(v, stats[k])
        assert np.isfinite(v).all()
    assert np.isfinite(model.predict_proba(X)).all()
