"""Tests for pydl.averages.ewa against a plain-loop reference."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from pydl.averages import ewa


def ewa_reference(values, beta, bias_correction=True):
    """v_t = beta v_{t-1} + (1 - beta) theta_t, v_0 = 0; optionally / (1 - beta^t)."""
    out, v = [], 0.0
    for t, theta in enumerate(values, start=1):
        v = beta * v + (1 - beta) * float(theta)
        out.append(v / (1 - beta ** t) if bias_correction else v)
    return np.array(out)


@settings(max_examples=100, deadline=None)
@given(values=arrays(np.float64, st.integers(0, 300),
                     elements=st.floats(-1e6, 1e6, allow_nan=False)),
       beta=st.floats(0.0, 0.999), bias_correction=st.booleans())
def test_matches_loop_reference(values, beta, bias_correction):
    got = ewa(values, beta, bias_correction=bias_correction)
    ref = ewa_reference(values, beta, bias_correction)
    assert got.dtype == np.float64 and got.shape == values.shape
    if len(values):
        diff = np.abs(got - ref)
        i = int(np.argmax(diff))
        tol = 1e-9 * max(1.0, float(np.max(np.abs(values))))
        assert diff[i] <= tol, f"worst at t={i + 1}: {got[i]} vs {ref[i]}"


def test_known_values():
    np.testing.assert_allclose(ewa([1, 2, 3], 0.5), [1.0, 5 / 3, 17 / 7], rtol=1e-15)
    np.testing.assert_allclose(ewa([1, 2, 3], 0.5, bias_correction=False), [0.5, 1.25, 2.125],
                               rtol=1e-15)
    np.testing.assert_array_equal(ewa([4.0, -1.0, 2.5], 0.0), [4.0, -1.0, 2.5])


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.98, 0.999])
def test_bias_correction_removes_the_startup_bias(beta):
    c = np.full(200, 7.0)
    np.testing.assert_allclose(ewa(c, beta), 7.0, rtol=1e-12)
    raw = ewa(c, beta, bias_correction=False)
    assert raw[0] == pytest.approx((1 - beta) * 7.0)  # v_1 = (1-beta) theta_1: biased low
    np.testing.assert_allclose(raw, 7.0 * (1 - beta ** np.arange(1, 201)), rtol=1e-12)


@pytest.mark.parametrize("beta, window", [(0.9, 10), (0.98, 50)])
def test_step_response_takes_about_one_over_one_minus_beta_steps(beta, window):
    # zeros, then a step to 1 at t0: after k steps v = 1 - beta^k (warm-up gives exactly 0)
    t0 = 500
    x = np.r_[np.zeros(t0), np.ones(400)]
    v = ewa(x, beta)
    k = int(np.argmax(v[t0:] >= 1 - 1 / math.e)) + 1  # steps after the step to reach 63%
    assert k == math.ceil(-1 / math.log(beta))
    assert abs(k - 1 / (1 - beta)) <= 1 and abs(k - window) <= 1
    assert v[t0 - 1] == 0.0
    assert v[t0 + 5 * window] > 0.99  # ~fully caught up after a few windows
    # a larger beta is smoother: slower to react
    assert np.all(ewa(x, 0.98)[t0:t0 + 100] <= ewa(x, 0.9)[t0:t0 + 100])


def test_axis_0_of_2d_values_and_empty():
    x = np.random.default_rng(0).standard_normal((50, 3))
    got = ewa(x, 0.8)
    for j in range(3):
        np.testing.assert_allclose(got[:, j], ewa_reference(x[:, j], 0.8), rtol=1e-12)
    assert ewa([], 0.9).shape == (0,)


def test_nan_propagates_like_the_recurrence():
    v = ewa([1.0, np.nan, 1.0], 0.9)
    assert v[0] == 1.0 and np.isnan(v[1]) and np.isnan(v[2])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(beta=1.0), ValueError, r"beta must be in \[0, 1\)"),
    (dict(beta=-0.1), ValueError, r"beta must be in \[0, 1\)"),
    (dict(beta=float("nan")), ValueError, r"beta must be in \[0, 1\)"),
    (dict(beta="0.9"), TypeError, "beta must be a real number"),
    (dict(beta=True), TypeError, "beta must be a real number"),
    (dict(bias_correction="yes"), TypeError, "bias_correction must be a bool"),
    (dict(values=3.0), ValueError, "values must be a sequence"),
    (dict(values=["a", "b"]), TypeError, "values must be an array-like of numbers"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(values=[1.0, 2.0], beta=0.9)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ewa(**args)
