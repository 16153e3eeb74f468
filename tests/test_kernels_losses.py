"""Loss kernels (pydl.ops) against float64 NumPy references of the formulas.

softmax cross-entropy: J = -(1/m) sum_ij Y_ij log softmax(Z)_ij, dZ = (softmax(Z) - Y)/m;
sigmoid cross-entropy: J = (1/m) sum -[y log s + (1-y) log(1-s)] = (1/m) sum softplus(z) - y z,
dZ = (s - y)/m; MSE: J = mean (Yhat - Y)^2, dZ = 2 (Yhat - Y) / size.
The references use scipy's logsumexp / numpy's logaddexp, so they are exact in float64 for
any logit magnitude.
"""
import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.special import expit, logsumexp

from conftest import assert_close, f64, numerical_grad, rel_diff
from pydl import ops

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
dims = st.one_of(st.integers(1, 9), st.sampled_from([1, 2, 31, 63, 64, 65, 129, 257, 513]))
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([1.0, 10.0, 1e4])
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)


def softmax_ref(Z):
    # exp(Z - lse) would carry lse's absolute error eps*|lse| into every probability
    # (1e-12 relative at |Z| ~ 1e4); shifting by the row max keeps them accurate.
    Z = f64(Z)
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_xent_ref(Z, Y):
    """J and dZ for (soft) label rows Y (m, C)."""
    Z = f64(Z)
    m = Z.shape[0]
    logp = Z - logsumexp(Z, axis=1, keepdims=True)
    J = -np.sum(np.where(Y != 0, Y * logp, 0.0)) / m
    return J, (softmax_ref(Z) - Y) / m


def one_hot(labels, C):
    Y = np.zeros((labels.size, C))
    Y[np.arange(labels.size), labels] = 1.0
    return Y


# ------------------------------------------------------------------ softmax cross-entropy


@SETTINGS
@given(m=dims, C=dims, scale=scales, form=st.sampled_from(["labels", "one_hot", "soft"]),
       want_grad=st.booleans(), dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, C=513, scale=1e4, form="labels", want_grad=True, dtype=np.float32, seed=0)
@example(m=1, C=1, scale=1.0, form="labels", want_grad=True, dtype=np.float64, seed=0)
def test_softmax_cross_entropy_matches_reference(m, C, scale, form, want_grad, dtype, seed):
    rng = np.random.default_rng(seed)
    Z = (scale * rng.standard_normal((m, C))).astype(dtype)
    labels = rng.integers(0, C, m)
    if form == "soft":
        Y = rng.dirichlet(np.ones(C), m)
    else:
        Y = one_hot(labels, C)
    Y_t = Y.astype(dtype)
    dZ = np.full((m, C), np.nan, dtype=dtype) if want_grad else None
    if form == "labels":
        J = ops.softmax_cross_entropy(dZ, Z, labels=labels)
    else:
        J = ops.softmax_cross_entropy(dZ, Z, Y=Y_t)
    J_ref, dZ_ref = softmax_xent_ref(Z, f64(Y_t))
    rtol = RTOL[dtype]
    assert np.isfinite(J)
    # The cost is accumulated in double from exact float inputs; the cancellation in
    # lse - z is bounded by the logits' magnitude.
    zmax = np.abs(f64(Z)).max()
    assert_close(J, J_ref, rtol, rtol * (1.0 + zmax) * 4)
    if want_grad:
        assert np.isfinite(dZ).all()
        tiny = np.finfo(dtype).tiny  # probabilities below it are subnormal or flush to 0
        assert_close(dZ, dZ_ref, rtol, rtol * (softmax_ref(Z) + np.abs(f64(Y_t))) / m + tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_huge_logits_are_stable(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -5e3]], dtype=dtype)
    labels = np.array([1, 2, 0])
    dZ = np.empty_like(Z)
    J = ops.softmax_cross_entropy(dZ, Z, labels=labels)
    J_ref, dZ_ref = softmax_xent_ref(Z, one_hot(labels, 3))
    assert np.isfinite(J) and np.isfinite(dZ).all()
    assert_close(J, J_ref, RTOL[dtype])  # ~ (2e4 + log(3) + ...)/3
    assert_close(dZ, dZ_ref, RTOL[dtype], 1e-7)


@SETTINGS
@given(m=dims, C=dims, scale=scales, in_place=st.booleans(), dtype=st.sampled_from(DTYPES),
       seed=seeds)
def test_softmax_matches_reference(m, C, scale, in_place, dtype, seed):
    Z = (scale * np.random.default_rng(seed).standard_normal((m, C))).astype(dtype)
    P_ref = softmax_ref(Z)
    P = Z.copy() if in_place else np.full((m, C), np.nan, dtype=dtype)
    ops.softmax(P, P if in_place else Z)
    assert np.isfinite(P).all()
    assert_close(P, P_ref, RTOL[dtype] * 4, np.finfo(dtype).tiny)
    assert_close(P.sum(axis=1, dtype=np.float64), np.ones(m), 4 * C * RTOL[dtype])


# ------------------------------------------------------------------ sigmoid cross-entropy


@SETTINGS
@given(m=dims, k=st.sampled_from([1, 1, 1, 3, 70]), scale=scales, soft=st.booleans(),
       want_grad=st.booleans(), dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=513, k=257, scale=1e4, soft=False, want_grad=True, dtype=np.float32, seed=0)
def test_sigmoid_cross_entropy_matches_reference(m, k, scale, soft, want_grad, dtype, seed):
    rng = np.random.default_rng(seed)
    Z = (scale * rng.standard_normal((m, k))).astype(dtype)
    Y = (rng.uniform(0, 1, (m, k)) if soft else rng.integers(0, 2, (m, k))).astype(dtype)
    dZ = np.full((m, k), np.nan, dtype=dtype) if want_grad else None
    J = ops.sigmoid_cross_entropy(dZ, Z, Y)
    z, y = f64(Z), f64(Y)
    J_ref = np.sum(np.logaddexp(0.0, z) - y * z) / m
    rtol = RTOL[dtype]
    assert np.isfinite(J)
    assert_close(J, J_ref, rtol, rtol * np.sum(np.abs(z) + 1.0) / m)
    if want_grad:
        assert np.isfinite(dZ).all()
        assert_close(dZ, (expit(z) - y) / m, rtol, rtol / m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_cross_entropy_huge_logits_are_stable(dtype):
    Z = np.array([[1e4], [-1e4], [1e4], [-1e4], [50.0], [-50.0]], dtype=dtype)
    Y = np.array([[1], [0], [0], [1], [1], [0]], dtype=dtype)
    dZ = np.empty_like(Z)
    J = ops.sigmoid_cross_entropy(dZ, Z, Y)
    # Right answers cost ~0, wrong ones cost |z|: J = (1e4 + 1e4 + 2 log1p(e^-50)) / 6.
    assert np.isfinite(J) and np.isfinite(dZ).all()
    assert_close(J, (2e4 + 2 * np.log1p(np.exp(-50.0))) / 6, RTOL[dtype])
    assert_close(dZ, (expit(f64(Z)) - f64(Y)) / 6, RTOL[dtype], 1e-30)


# ------------------------------------------------------------------ mean squared error


@SETTINGS
@given(shape=st.one_of(st.tuples(st.integers(1, 600)), st.tuples(dims, dims)),
       want_grad=st.booleans(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_mean_squared_error_matches_reference(shape, want_grad, dtype, seed):
    rng = np.random.default_rng(seed)
    Yhat = rng.standard_normal(shape).astype(dtype)
    Y = rng.standard_normal(shape).astype(dtype)
    dZ = np.full(shape, np.nan, dtype=dtype) if want_grad else None
    J = ops.mean_squared_error(dZ, Yhat, Y)
    d = f64(Yhat) - f64(Y)
    rtol = RTOL[dtype]
    assert_close(J, np.mean(d**2), rtol)
    if want_grad:
        assert_close(dZ, 2 * d / d.size, rtol, rtol * 2 * (np.abs(f64(Yhat)) + np.abs(f64(Y))) / d.size)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_logits_give_nan_cost(dtype):
    # A NaN anywhere must surface in the cost (the NaN guard watches it).
    for pos in [(0, 0), (1, 2)]:
        Z = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
        Z[pos] = np.nan
        labels, Y = np.array([1, 0, 3]), np.ones((3, 4), dtype)
        assert np.isnan(ops.softmax_cross_entropy(None, Z, labels=labels))
        assert np.isnan(ops.softmax_cross_entropy(None, Z, Y=Y / 4))
        assert np.isnan(ops.sigmoid_cross_entropy(None, Z, Y))
        assert np.isnan(ops.mean_squared_error(None, Z, Y))
        P = np.empty_like(Z)
        ops.softmax(P, Z)
        assert np.isnan(P[pos[0]]).all() and np.isfinite(np.delete(P, pos[0], axis=0)).all()


# ------------------------------------------------------------------ gradient checks


LOSSES = ["softmax_labels", "softmax_one_hot", "softmax_soft", "sigmoid", "sigmoid_soft", "mse"]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("m", [1, 6])
def test_loss_gradient_check(loss, m):
    rng = np.random.default_rng([LOSSES.index(loss), m])
    C = 4
    Z = 2 * rng.standard_normal((m, C))
    labels = rng.integers(0, C, m)
    if loss == "softmax_labels":
        kw = {"labels": labels}
        call = ops.softmax_cross_entropy
    elif loss.startswith("softmax"):
        kw = {"Y": one_hot(labels, C) if loss == "softmax_one_hot" else rng.dirichlet(np.ones(C), m)}
        call = ops.softmax_cross_entropy
    elif loss.startswith("sigmoid"):
        Y = rng.uniform(0, 1, (m, C)) if loss == "sigmoid_soft" else rng.integers(0, 2, (m, C)) * 1.0
        kw = {"Y": Y}
        call = ops.sigmoid_cross_entropy
    else:
        kw = {"Y": rng.standard_normal((m, C))}
        call = lambda dZ, Z, Y: ops.mean_squared_error(dZ, Z, Y)  # noqa: E731

    def J():
        return call(None, Z, **kw)

    dZ = np.empty_like(Z)
    J_with_grad = call(dZ, Z, **kw)
    assert J_with_grad == J()  # computing the gradient does not change the cost
    d = rel_diff(numerical_grad(J, Z), dZ)
    assert d < 1e-7, f"relative difference {d:.2e}"
