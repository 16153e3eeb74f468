"""Tests for pydl.diagnose: bias/variance diagnosis and error_rate."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import pydl
from pydl.diagnose import BIAS_ACTIONS, VARIANCE_ACTIONS, Diagnosis, bias_variance, error_rate

BIAS = ["bigger network", "train longer", "try a better optimizer / architecture"]
VAR = ["more data", "regularization (L2, dropout)", "try a different architecture"]


@pytest.mark.parametrize("train, dev, bayes, high_bias, high_var", [
    (0.01, 0.11, 0.0, False, True),    # overfitting
    (0.15, 0.16, 0.0, True, False),    # underfitting
    (0.15, 0.30, 0.0, True, True),     # both
    (0.005, 0.01, 0.0, False, False),  # neither
    (0.15, 0.16, 0.15, False, False),  # a hard task: Bayes error 15%
])
def test_classic_cases(train, dev, bayes, high_bias, high_var):
    d = bias_variance(train, dev, bayes_error=bayes)
    assert isinstance(d, Diagnosis)
    assert (d.high_bias, d.high_variance) == (high_bias, high_var)
    assert d.avoidable_bias == pytest.approx(train - bayes, abs=1e-15)
    assert d.variance == pytest.approx(dev - train, abs=1e-15)
    assert d.actions == (BIAS if high_bias else []) + (VAR if high_var else [])


def test_threshold_is_strict_and_tolerant_to_rounding():
    # dev - train = 0.020000000000000004 in floating point: equal to the threshold -> not high
    assert not bias_variance(0.03, 0.05).high_variance
    assert bias_variance(0.03, 0.0501).high_variance
    # 0.16 - 0.15 = 0.010000000000000009 in floating point: still not above 0.01
    assert not bias_variance(0.15, 0.16, threshold=0.01).high_variance
    assert bias_variance(0.15, 0.16, threshold=0.009).high_variance
    assert not bias_variance(0.15, 0.30, threshold=0.2).high_bias


@given(train=st.floats(0, 1), dev=st.floats(0, 1), bayes=st.floats(0, 1),
       thr=st.floats(0, 0.5))
def test_flags_follow_the_definition(train, dev, bayes, thr):
    d = bias_variance(train, dev, bayes, thr)
    if abs((train - bayes) - thr) > 1e-9:
        assert d.high_bias == (train - bayes > thr)
    if abs((dev - train) - thr) > 1e-9:
        assert d.high_variance == (dev - train > thr)
    assert d.actions == (BIAS if d.high_bias else []) + (VAR if d.high_variance else [])


def test_action_constants():
    assert list(BIAS_ACTIONS) == BIAS and list(VARIANCE_ACTIONS) == VAR


def test_str_is_readable():
    s = str(bias_variance(0.15, 0.30, bayes_error=0.01))
    for part in ("15.00%", "30.00%", "1.00%", "14.00%", "HIGH", "bigger network", "more data"):
        assert part in s, f"{part!r} missing from:\n{s}"
    s = str(bias_variance(0.005, 0.01))
    assert "low" in s and "HIGH" not in s and "bigger network" not in s


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(train_error=11), ValueError, r"train_error must be a fraction in \[0, 1\]"),
    (dict(dev_error=-0.1), ValueError, r"dev_error must be a fraction in \[0, 1\]"),
    (dict(bayes_error=float("nan")), ValueError, "bayes_error must be a fraction"),
    (dict(threshold=2.0), ValueError, "threshold must be a fraction"),
    (dict(train_error="0.1"), TypeError, "train_error must be a real number"),
    (dict(dev_error=True), TypeError, "dev_error must be a real number"),
])
def test_bias_variance_bad_input(kwargs, exc, match):
    args = dict(train_error=0.1, dev_error=0.2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        bias_variance(**args)


def test_accepts_numpy_scalars():
    d = bias_variance(np.float32(0.15), np.float64(0.16))
    assert d.high_bias and not d.high_variance


def test_error_rate_reference():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 500)
    p = np.where(rng.random(500) < 0.3, rng.integers(0, 4, 500), t)
    ref = sum(int(a != b) for a, b in zip(t, p)) / 500
    assert error_rate(t, p) == ref
    scores = rng.random((500, 4))
    scores[np.arange(500), p] += 2.0  # argmax of the scores is p
    onehot = np.eye(4)[t]
    assert error_rate(onehot, scores) == ref
    assert error_rate(t[:, None], p) == ref
    assert error_rate(t, t) == 0.0 and error_rate([0, 1], [1, 0]) == 1.0


@pytest.mark.parametrize("t, p, exc, match", [
    (np.zeros(5), np.zeros(4), ValueError, "y_pred has 4 rows but y_true has 5"),
    (np.zeros(0), np.zeros(0), ValueError, "y_true is empty"),
    (np.zeros((2, 2, 2)), np.zeros(2), ValueError, "y_true must be labels"),
    (np.zeros(2), np.zeros((2, 2, 2)), ValueError, "y_pred must be labels"),
])
def test_error_rate_bad_input(t, p, exc, match):
    with pytest.raises(exc, match=match):
        error_rate(t, p)


def test_report_explains_negative_bias_and_variance():
    d = bias_variance(0.03, 0.0247, bayes_error=0.04)
    text = str(d)
    assert d.variance < 0 and d.avoidable_bias < 0
    assert "dev error below train error" in text
    assert "train error below the Bayes estimate" in text
    assert "dev error below" not in str(bias_variance(0.01, 0.11))


def test_error_rate_reads_sigmoid_probabilities():
    X, y = pydl.datasets.make_moons(200, noise=0.2, seed=0)
    model = pydl.mlp([2, 8, 1], loss="sigmoid_cross_entropy", seed=0)
    model.fit(X, y, epochs=30, batch_size=32, verbose=0)
    proba = model.predict_proba(X)
    assert proba.shape == (200, 1)
    ref = np.mean((proba[:, 0] > 0.5).astype(int) != y)  # plain NumPy, threshold 0.5
    assert 0 < ref < 0.5
    assert error_rate(y, proba) == ref
    assert error_rate(y, proba[:, 0]) == ref
    assert error_rate(y, proba.astype(np.float64)) == ref
    assert error_rate(y[:, None].astype(np.float32), proba) == ref  # float 0/1 targets (m, 1)
    assert error_rate(y, proba) == pytest.approx(1 - model.evaluate(X, y)["accuracy"])


def test_error_rate_probability_threshold_and_ids():
    t = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.5, 0.51, 0.99, 1.0])  # 0.5 is class 0 (p > 0.5 is class 1)
    assert error_rate(t, p) == np.mean(t != np.array([0, 0, 1, 1, 1]))
    assert error_rate(t, p[:, None]) == error_rate(t, p)
    # floats with integral values stay class ids, including ids >= 2
    assert error_rate([0, 2, 1], np.array([0.0, 2.0, 2.0])) == pytest.approx(1 / 3)
    assert error_rate(np.array([0, 1, 1]), np.array([True, True, False])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("t, p, exc, match", [
    (np.zeros(3), np.array([0.5, 1.5, 2.0]), ValueError,
     r"y_pred holds non-integer values outside \[0, 1\]: neither class ids nor probabilities"),
    (np.zeros(2), np.array([0.3, np.nan]), ValueError, r"y_pred contains NaN or inf"),
    (np.zeros(2), np.array([["a", "b"], ["c", "d"]]), TypeError, r"y_pred as scores \(m, C\) must be numeric"),
])
def test_error_rate_bad_probabilities(t, p, exc, match):
    with pytest.raises(exc, match=match):
        error_rate(t, p)
