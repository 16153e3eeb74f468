"""Ensembles average probabilities (or outputs); snapshots; model.diagnose."""
import numpy as np
import pytest

import pydl
from pydl.ensemble import Ensemble, SnapshotEnsemble


@pytest.fixture(scope="module")
def moons():
    X, y = pydl.datasets.make_moons(400, noise=0.25, seed=0)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.fixture(scope="module")
def trained(moons):
    Xtr, ytr, _, _ = moons
    models = []
    for seed in range(3):
        m = pydl.mlp([2, 16, 2], seed=seed)
        m.fit(Xtr, ytr, optimizer=pydl.optim.Adam(lr=0.01), epochs=30, batch_size=32, verbose=0)
        models.append(m)
    return models


def test_ensemble_averages_member_probabilities(trained, moons):
    _, _, Xd, yd = moons
    ens = Ensemble(trained)
    expected = np.mean([m.predict_proba(Xd).astype(np.float64) for m in trained], axis=0)
    np.testing.assert_allclose(ens.predict_proba(Xd), expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(ens.predict(Xd), expected.argmax(axis=1))
    assert ens.evaluate(Xd, yd)["accuracy"] == pytest.approx(float((expected.argmax(1) == yd).mean()))


def test_weighted_ensemble(trained, moons):
    _, _, Xd, _ = moons
    ens = Ensemble(trained, weights=[1, 0, 3])
    expected = (trained[0].predict_proba(Xd) + 3 * trained[2].predict_proba(Xd)) / 4
    np.testing.assert_allclose(ens.predict_proba(Xd), expected, rtol=1e-6)


def test_regression_ensemble_averages_outputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    ms = [pydl.mlp([3, 8, 1], loss="mse", seed=s) for s in range(2)]
    for m in ms:
        m.fit(X, y, epochs=3, batch_size=16, verbose=0)
    ens = Ensemble(ms)
    np.testing.assert_allclose(ens.predict(X), (ms[0].predict(X) + ms[1].predict(X)) / 2, rtol=1e-6)
    with pytest.raises(TypeError, match="predict_proba"):
        ens.predict_proba(X)


@pytest.mark.parametrize("bad, match", [
    ([], "non-empty"),
    (["not a model"], r"models\[0\]"),
])
def test_ensemble_bad_members(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Ensemble(bad)


def test_ensemble_refuses_mismatched_models():
    with pytest.raises(ValueError, match=r"models\[1\]"):
        Ensemble([pydl.mlp([2, 4, 2]), pydl.mlp([3, 4, 2])])
    with pytest.raises(ValueError, match="weights"):
        Ensemble([pydl.mlp([2, 4, 2])], weights=[-1])


def test_snapshot_ensemble_keeps_copies(moons):
    Xtr, ytr, Xd, _ = moons
    snap = SnapshotEnsemble(every=2, keep=3)
    m = pydl.mlp([2, 16, 2], seed=0)
    m.fit(Xtr, ytr, epochs=10, batch_size=32, callbacks=[snap], verbose=0)
    assert len(snap.snapshots) == 3
    np.testing.assert_array_equal(snap.snapshots[-1].theta, m.theta)   # taken after epoch 10
    assert not np.array_equal(snap.snapshots[0].theta, m.theta)
    assert all(not np.shares_memory(s.theta, m.theta) for s in snap.snapshots)
    assert snap.ensemble().predict_proba(Xd).shape == (len(Xd), 2)
    with pytest.raises(ValueError, match="every"):
        SnapshotEnsemble(every=0)


def test_snapshot_ensemble_reused_starts_empty_each_fit(moons):
    Xtr, ytr, _, _ = moons
    snap = SnapshotEnsemble(every=1, keep=5)
    first = pydl.mlp([2, 16, 2], seed=0)
    first.fit(Xtr, ytr, epochs=3, batch_size=32, callbacks=[snap], verbose=0)
    assert len(snap.snapshots) == 3
    other = pydl.mlp([2, 8, 8, 2], seed=1)          # a different architecture
    other.fit(Xtr, ytr, epochs=2, batch_size=32, callbacks=[snap], verbose=0)
    assert len(snap.snapshots) == 2
    assert all(s.architecture() == other.architecture() for s in snap.snapshots)
    np.testing.assert_array_equal(snap.snapshots[-1].theta, other.theta)
    assert len(snap.ensemble()) == 2


def test_model_diagnose_measures_errors(trained, moons):
    Xtr, ytr, Xd, yd = moons
    m = trained[0]
    d = m.diagnose(Xtr, ytr, Xd, yd, bayes_error=0.0)
    tr = 1 - m.evaluate(Xtr, ytr)["accuracy"]
    dv = 1 - m.evaluate(Xd, yd)["accuracy"]
    assert d.avoidable_bias == pytest.approx(tr)
    assert d.variance == pytest.approx(dv - tr)


def test_snapshot_ensemble_keeps_its_snapshots_when_the_same_model_resumes(moons):
    Xtr, ytr, _, _ = moons
    snap = SnapshotEnsemble(every=1, keep=10)
    model = pydl.mlp([2, 16, 2], seed=0)
    model.fit(Xtr, ytr, epochs=3, batch_size=32, callbacks=[snap], verbose=0)
    model.fit(Xtr, ytr, epochs=5, batch_size=32, callbacks=[snap], verbose=0, initial_epoch=3)
    assert len(snap.snapshots) == 5
    np.testing.assert_array_equal(snap.snapshots[-1].theta, model.theta)
    model.fit(Xtr, ytr, epochs=1, batch_size=32, callbacks=[snap], verbose=0)  # a new run
    assert len(snap.snapshots) == 1
