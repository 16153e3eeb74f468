"""Dense and activation kernels (pydl.ops) against float64 NumPy references of the formulas.

Reference (DESIGN.md "Conventions"): Z = A_prev @ W.T + b, A = g(Z);
dZ = dA * g'(Z), db = sum_i dZ, dW = dZ.T @ A_prev + (l2/m) W + (l1/(2m)) sign(W),
dA_prev = dZ @ W; penalty = l2/(2m) ||W||^2 + l1/(2m) sum |W|.
float64 is compared with rtol 1e-12, float32 with rtol 1e-5; atol is the same relative
tolerance times an elementwise bound on the magnitudes that were summed.
"""
import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import assert_close, f64, g_ref, gprime_of_a, numerical_grad, rel_diff
from pydl import ops

ACTS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]

# Sizes: tiny, odd, around the small-GEMM blocking (4 rows x 32 columns), and large enough
# to cross the 2^16-element OpenMP threshold.
dims = st.one_of(st.integers(1, 9), st.sampled_from([1, 16, 31, 63, 64, 65, 127, 129, 257, 513]))
seeds = st.integers(0, 2**32 - 1)
# PYDL_TEST_EXAMPLES=500 pytest ... for a deeper search than the default quick run.
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)


# ------------------------------------------------------------------ forward


@SETTINGS
@given(m=dims, n_in=dims, n_out=dims, act=st.sampled_from(ACTS), use_bias=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, n_in=513, n_out=257, act="tanh", use_bias=True, dtype=np.float32, seed=1)
@example(m=257, n_in=513, n_out=129, act="relu", use_bias=False, dtype=np.float64, seed=2)
def test_dense_forward_matches_reference(m, n_in, n_out, act, use_bias, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if use_bias else None
    A = np.full((m, n_out), np.nan, dtype=dtype)  # every element must be written
    out = ops.dense_forward(A, X, W, b, activation=act, alpha=alpha)
    assert out is A
    Z = f64(X) @ f64(W).T + (f64(b) if use_bias else 0.0)
    bound = np.abs(f64(X)) @ np.abs(f64(W)).T + (np.abs(f64(b)) if use_bias else 0.0)
    rtol = RTOL[dtype]
    assert_close(A, g_ref(Z, act, alpha), rtol, rtol * bound)


# Products up to M*N*K = 2^17 skip BLAS for a register-blocked kernel (csrc/blas.cpp): 4-row
# blocks (the last one repeats row M-1) times 32-float/16-double column blocks (op(B) packed
# and zero-padded). Shapes on both sides of the threshold, with every edge of the blocking.
SMALL_GEMM_SHAPES = [(1, 1, 1), (5, 7, 33), (3, 64, 17), (32, 64, 64), (32, 64, 65), (4, 2048, 16),
                     (4, 2048, 17), (129, 33, 31)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n_in,n_out", SMALL_GEMM_SHAPES)
def test_three_products_on_both_sides_of_the_small_gemm_threshold(m, n_in, n_out, dtype):
    rng = np.random.default_rng([m, n_in, n_out])
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    A = np.full((m, n_out), np.nan, dtype)
    ops.dense_forward(A, X, W)  # A = X @ W.T: op(B) transposed
    rtol = RTOL[dtype]
    assert_close(A, f64(X) @ f64(W).T, rtol, rtol * (np.abs(f64(X)) @ np.abs(f64(W)).T))
    dZ = rng.standard_normal((m, n_out)).astype(dtype)
    dW, dX = np.full_like(W, np.nan), np.full_like(X, np.nan)
    ops.dense_backward(dX, dW, None, dZ, A, X, W, l2=0.5)  # dW: op(A) transposed, beta = 1
    dW_ref = f64(dZ).T @ f64(X) + 0.5 / m * f64(W)
    assert_close(dW, dW_ref, rtol, rtol * (np.abs(f64(dZ)).T @ np.abs(f64(X)) + np.abs(f64(W))))
    assert_close(dX, f64(dZ) @ f64(W), rtol, rtol * (np.abs(f64(dZ)) @ np.abs(f64(W))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_gemm_padding_and_repeated_rows_leak_nothing(dtype):
    # m = 5: the second 4-row block repeats row 4 three times; n_out = 33: columns 33..63
    # of the packed W.T are zero padding. inf/NaN must reach exactly their own row/column.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 7)).astype(dtype)
    W = rng.standard_normal((33, 7)).astype(dtype)
    X[4, 2] = np.nan
    W[32, 5] = np.inf
    A = np.empty((5, 33), dtype)
    ops.dense_forward(A, X, W)
    bad = ~np.isfinite(A)
    assert bad[4].all() and bad[:, 32].all()
    assert np.isfinite(A[:4, :32]).all()
    assert_close(A[:4, :32], f64(X[:4]) @ f64(W[:32]).T, RTOL[dtype], RTOL[dtype] * 10)


# ------------------------------------------------------------------ backward


@SETTINGS
@given(m=dims, n_in=dims, n_out=dims, act=st.sampled_from(ACTS), with_db=st.booleans(),
       with_dA_prev=st.booleans(), reg=st.sampled_from(["none", "l2", "l1", "both"]),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, n_in=513, n_out=257, act="sigmoid", with_db=True, with_dA_prev=True,
         reg="both", dtype=np.float32, seed=3)
@example(m=1, n_in=1, n_out=1, act="leaky_relu", with_db=False, with_dA_prev=False,
         reg="l1", dtype=np.float64, seed=4)
@example(m=300, n_in=5, n_out=2100, act="relu", with_db=True, with_dA_prev=True,
         reg="none", dtype=np.float32, seed=5)  # db over 3 row chunks x 3 column blocks
def test_dense_backward_matches_reference(m, n_in, n_out, act, with_db, with_dA_prev, reg, dtype,
                                          seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    l2 = float(rng.uniform(0.01, 2.0)) if reg in ("l2", "both") else 0.0
    l1 = float(rng.uniform(0.01, 2.0)) if reg in ("l1", "both") else 0.0
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    Z = rng.standard_normal((m, n_out))
    A = g_ref(Z, act, alpha).astype(dtype)
    dA = rng.standard_normal((m, n_out)).astype(dtype)

    dZ = dA.copy()
    dW = np.full((n_out, n_in), np.nan, dtype=dtype)
    db = np.full(n_out, np.nan, dtype=dtype) if with_db else None
    dA_prev = np.full((m, n_in), np.nan, dtype=dtype) if with_dA_prev else None
    ops.dense_backward(dA_prev, dW, db, dZ, A, X, W, activation=act, alpha=alpha, l2=l2, l1=l1)

    rtol = RTOL[dtype]
    dZ_ref = f64(dA) * gprime_of_a(A, act, alpha)
    assert_close(dZ, dZ_ref, rtol, rtol * np.abs(f64(dA)))
    Wd = f64(W)
    dW_ref = dZ_ref.T @ f64(X) + (l2 / m) * Wd + (l1 / (2 * m)) * np.sign(Wd)
    dW_bound = np.abs(dZ_ref).T @ np.abs(f64(X)) + (l2 / m) * np.abs(Wd) + l1 / (2 * m)
    assert_close(dW, dW_ref, rtol, rtol * dW_bound)
    if with_db:
        assert_close(db, dZ_ref.sum(axis=0), rtol, rtol * np.abs(dZ_ref).sum(axis=0))
    if with_dA_prev:
        assert_close(dA_prev, dZ_ref @ Wd, rtol, rtol * (np.abs(dZ_ref) @ np.abs(Wd)))


def test_dense_backward_identity_without_db_leaves_dZ_equal_to_dA():
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    dA = rng.standard_normal((5, 4))
    dZ, dW = dA.copy(), np.empty((4, 3))
    ops.dense_backward(None, dW, None, dZ, np.zeros((5, 4)), X, W)
    assert np.array_equal(dZ, dA)
    assert_close(dW, dA.T @ X, 1e-12, 1e-12)


# ------------------------------------------------------------------ elementwise activations

shapes = st.one_of(
    st.tuples(st.integers(1, 300)),
    st.tuples(dims, dims),
    st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 9)),
)


@SETTINGS
@given(shape=shapes, act=st.sampled_from(ACTS), in_place=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
def test_activation_forward_backward_match_reference(shape, act, in_place, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    rtol = RTOL[dtype]
    A_ref = g_ref(f64(Z), act, alpha)
    A = Z.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.activation_forward(A, A if in_place else Z, act, alpha=alpha)
    assert_close(A, A_ref, rtol, rtol * np.abs(f64(Z)))

    A = A_ref.astype(dtype)
    dA = rng.standard_normal(shape).astype(dtype)
    dZ = dA.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.activation_backward(dZ, dZ if in_place else dA, A, act, alpha=alpha)
    assert_close(dZ, f64(dA) * gprime_of_a(A, act, alpha), rtol, rtol * np.abs(f64(dA)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_saturate_without_nan(dtype):
    Z = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype=dtype)
    for act in ACTS:
        A = np.empty_like(Z)
        ops.activation_forward(A, Z, act)
        assert np.isfinite(A).all(), act
        assert_close(A, g_ref(f64(Z), act, 0.01), RTOL[dtype], 1e-30)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_float32_tanh_and_sigmoid_within_4_ulp_everywhere(act):
    """The vectorized float tanh/sigmoid (common.hpp) on a dense grid of [-120, 120], both
    sides of tanh's polynomial/exp switch at |z| = 0.625, and the special values."""
    grid = np.linspace(-120, 120, 480001)
    edges = np.nextafter(np.float32(0.625), np.float32([-1, 2])).astype(np.float64)
    specials = [0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625, 87.3, -87.3, 88.5, -88.5, 1e4, -1e4]
    Z = np.concatenate([grid, edges, -edges, specials]).astype(np.float32)
    A = np.empty_like(Z)
    ops.activation_forward(A, Z, act)
    ref = g_ref(f64(Z), act, 0.0)
    normal = np.abs(ref) >= np.finfo(np.float32).tiny
    rel = np.abs(f64(A[normal]) - ref[normal]) / np.abs(ref[normal])
    assert rel.max() <= 4 * 2.0**-24, (act, float(rel.max()))
    # below the normal range: 0 or the denormal, never more than the smallest normal off
    assert np.abs(f64(A[~normal]) - ref[~normal]).max() <= np.finfo(np.float32).tiny
    assert np.all(np.signbit(A[Z == 0]) == (np.signbit(Z[Z == 0]) & (act == "tanh")))
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    out = np.empty_like(special)
    ops.activation_forward(out, special, act)
    expect = [1.0, -1.0] if act == "tanh" else [1.0, 0.0]
    assert out[0] == expect[0] and out[1] == expect[1] and np.isnan(out[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_nan_propagates_through_every_activation(act, dtype):
    # As np.maximum / torch.relu: a NaN must reach the loss so that a diverged network is
    # seen (relu used to turn NaN into 0).
    Z = np.array([[np.nan, 2.0, -2.0], [1.0, -1.0, 0.5]], dtype=dtype)
    A = np.empty_like(Z)
    ops.activation_forward(A, Z, act, alpha=0.1)
    assert np.isnan(A[0, 0])
    assert_close(A[1], g_ref(f64(Z[1]), act, 0.1), RTOL[dtype])
    X = np.array([[1.0, np.nan], [1.0, 2.0]], dtype=dtype)
    W = np.ones((3, 2), dtype=dtype)
    ops.dense_forward(A, X, W, np.zeros(3, dtype), activation=act, alpha=0.1)
    assert np.isnan(A[0]).all() and np.isfinite(A[1]).all()


# ------------------------------------------------------------------ weight penalty


@SETTINGS
@given(shape=shapes, m=st.integers(1, 1000), l2=st.sampled_from([0.0, 0.1, 3.0]),
       l1=st.sampled_from([0.0, 0.05, 2.0]), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_weight_penalty_matches_reference(shape, m, l2, l1, dtype, seed):
    W = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    Wd = f64(W)
    ref = l2 / (2 * m) * np.sum(Wd**2) + l1 / (2 * m) * np.sum(np.abs(Wd))
    got = ops.weight_penalty(W, l2=l2, l1=l1, m=m)
    assert isinstance(got, float)
    # Sums are taken in double for both dtypes.
    assert_close(got, ref, 1e-12, 1e-300)


# ------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("reg", ["none", "l2", "l1"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradient_check(act, reg, use_bias):
    rng = np.random.default_rng([ACTS.index(act), ["none", "l2", "l1"].index(reg), use_bias])
    m, n_in, n_out, alpha = 5, 4, 3, 0.1
    l2 = 0.7 if reg == "l2" else 0.0
    l1 = 0.3 if reg == "l1" else 0.0
    for _ in range(1000):  # keep every Z and W away from kinks (relu at 0, |W| at 0)
        X = rng.standard_normal((m, n_in))
        W = rng.standard_normal((n_out, n_in))
        b = rng.standard_normal(n_out) if use_bias else None
        Z = X @ W.T + (b if use_bias else 0.0)
        if np.abs(Z).min() > 1e-2 and np.abs(W).min() > 1e-2:
            break
    R = rng.standard_normal((m, n_out))  # J = sum(R * A) + penalty
    A = np.empty((m, n_out))

    def J():
        ops.dense_forward(A, X, W, b, activation=act, alpha=alpha)
        return float(np.sum(R * A)) + ops.weight_penalty(W, l2=l2, l1=l1, m=m)

    J()
    dZ, dW, dX = R.copy(), np.empty_like(W), np.empty_like(X)
    db = np.empty(n_out) if use_bias else None
    ops.dense_backward(dX, dW, db, dZ, A.copy(), X, W, activation=act, alpha=alpha, l2=l2, l1=l1)
    assert np.abs(dW).sum() > 0  # a check of all-zero gradients would prove nothing
    checks = [("W", W, dW), ("A_prev", X, dX)] + ([("b", b, db)] if use_bias else [])
    for name, param, analytic in checks:
        d = rel_diff(numerical_grad(J, param), analytic)
        assert d < 1e-7, f"{name}: relative difference {d:.2e}"
