"""Batch-norm kernels (pydl.ops) against float64 NumPy references of the formulas.

Per feature j over the batch: mu = mean Z, var = mean (Z-mu)^2 (biased),
invstd = 1/sqrt(var+eps), xhat = (Z-mu)*invstd, out = g(gamma*xhat + beta);
running = momentum*running + (1-momentum)*batch, with the unbiased variance var*m/(m-1).
Backward: g = dout*g'(y), dbeta = sum g, dgamma = sum g*xhat,
dZ = gamma*invstd/m * (m*g - dbeta - xhat*dgamma); the gradient checks verify that closed
form independently.
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
dims = st.one_of(st.integers(1, 9), st.sampled_from([1, 2, 31, 63, 64, 65, 129, 257, 513]))
seeds = st.integers(0, 2**32 - 1)
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)


def make_inputs(rng, m, n, dtype):
    """Z with per-feature offsets and spreads (so mean removal matters), gamma, beta."""
    loc = rng.uniform(-3, 3, n)
    spread = np.exp(rng.uniform(np.log(0.1), np.log(5.0), n))
    Z = (loc + spread * rng.standard_normal((m, n))).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, n).astype(dtype) * rng.choice([-1, 1], n).astype(dtype)
    beta = rng.standard_normal(n).astype(dtype)
    return Z, gamma, beta


def bn_ref(Z, gamma, beta, eps, act, alpha):
    Z = f64(Z)
    mu = Z.mean(axis=0)
    var = ((Z - mu) ** 2).mean(axis=0)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (Z - mu) * invstd
    y = f64(gamma) * xhat + f64(beta)
    return mu, var, invstd, xhat, y, g_ref(y, act, alpha)


# ------------------------------------------------------------------ training forward


@SETTINGS
@given(m=dims, n=dims, act=st.sampled_from(ACTS), running=st.booleans(),
       momentum=st.sampled_from([0.0, 0.1, 0.9, 0.99, 1.0]), dtype=st.sampled_from(DTYPES),
       seed=seeds)
@example(m=257, n=513, act="relu", running=True, momentum=0.9, dtype=np.float32, seed=0)
@example(m=1, n=1, act="identity", running=True, momentum=0.9, dtype=np.float64, seed=0)
@example(m=1031, n=2100, act="tanh", running=False, momentum=0.9, dtype=np.float32, seed=1)
def test_batchnorm_forward_train_matches_reference(m, n, act, running, momentum, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha, eps = float(rng.uniform(0.01, 0.5)), 1e-5
    Z, gamma, beta = make_inputs(rng, m, n, dtype)
    rm0 = rng.standard_normal(n).astype(dtype)
    rv0 = rng.uniform(0.1, 3.0, n).astype(dtype)
    rm, rv = (rm0.copy(), rv0.copy()) if running else (None, None)
    out = np.full((m, n), np.nan, dtype=dtype)
    mean = np.full(n, np.nan, dtype=dtype)
    invstd = np.full(n, np.nan, dtype=dtype)
    Z0 = Z.copy()
    ops.batchnorm_forward_train(out, mean, invstd, rm, rv, Z, gamma, beta, momentum=momentum,
                                eps=eps, activation=act, alpha=alpha)
    assert np.array_equal(Z, Z0)  # backward recomputes xhat from Z

    mu, var, inv, xh, _, out_ref = bn_ref(Z, gamma, beta, eps, act, alpha)
    rtol = RTOL[dtype]
    colmax = np.abs(f64(Z)).max(axis=0)
    assert_close(mean, mu, rtol, rtol * colmax)
    assert_close(invstd, inv, rtol * 10)  # 1/sqrt of a variance computed in double
    xh_bound = (np.abs(f64(Z)) + colmax) * inv  # mu carries an error ~ eps * max |Z|
    assert_close(out, out_ref, rtol, rtol * (np.abs(f64(gamma)) * xh_bound + np.abs(f64(beta))))
    if running:
        unbiased = var * m / (m - 1) if m > 1 else var
        rm_ref = momentum * f64(rm0) + (1 - momentum) * mu
        rv_ref = momentum * f64(rv0) + (1 - momentum) * unbiased
        assert_close(rm, rm_ref, rtol, rtol * (np.abs(f64(rm0)) + colmax))
        assert_close(rv, rv_ref, rtol * 10, rtol * (f64(rv0) + unbiased))
        if momentum == 1.0:
            assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


def test_running_stats_unbiased_variance_and_ewa_over_steps():
    rng = np.random.default_rng(7)
    m, n, mom = 8, 5, 0.9
    rm, rv = np.zeros(n), np.ones(n)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    out, mean, invstd = np.empty((m, n)), np.empty(n), np.empty(n)
    for _ in range(12):
        Z = 2.0 + 3.0 * rng.standard_normal((m, n))
        ops.batchnorm_forward_train(out, mean, invstd, rm, rv, Z, np.ones(n), np.zeros(n),
                                    momentum=mom)
        rm_ref = mom * rm_ref + (1 - mom) * Z.mean(axis=0)
        rv_ref = mom * rv_ref + (1 - mom) * Z.var(axis=0, ddof=1)
    assert_close(rm, rm_ref, 1e-12, 1e-14)
    assert_close(rv, rv_ref, 1e-12, 1e-14)


def test_none_running_stats_give_same_outputs_as_arrays():
    rng = np.random.default_rng(3)
    Z, gamma, beta = make_inputs(rng, 33, 70, np.float64)
    res = []
    for running in (True, False):
        bufs = [np.empty((33, 70)), np.empty(70), np.empty(70)]
        rs = (np.zeros(70), np.ones(70)) if running else (None, None)
        ops.batchnorm_forward_train(*bufs, *rs, Z, gamma, beta, activation="tanh")
        res.append(bufs)
    for a, b in zip(*res):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_large_mean_small_spread(dtype):
    # A feature with mean 1000 and std 1: a naive one-pass E[Z^2]-E[Z]^2 in float32 would
    # lose the variance entirely.
    rng = np.random.default_rng(11)
    m, n = 200, 3
    Z = (1000.0 + rng.standard_normal((m, n))).astype(dtype)
    out = np.empty((m, n), dtype)
    mean, invstd = np.empty(n, dtype), np.empty(n, dtype)
    ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, np.ones(n, dtype),
                                np.zeros(n, dtype))
    _, _, inv, xh, _, _ = bn_ref(Z, np.ones(n), np.zeros(n), 1e-5, "identity", 0)
    assert_close(invstd, inv, RTOL[dtype] * 10)
    assert_close(out, xh, RTOL[dtype], RTOL[dtype] * 2000 * inv)  # out = xhat here


@pytest.mark.parametrize("m", [16, 1024])
def test_float32_sums_do_not_overflow_on_huge_spreads(m):
    """Features of spread 1e20 and 3e38 (squares overflow float32) and an outlying first row:
    the float32 groups of rows overflow or lose digits there, and those features are summed
    again in double, so statistics and gradients stay finite and right."""
    rng = np.random.default_rng(3)
    signs = rng.choice([-1.0, 1.0], (m, 4))
    signs[:, 2] = np.resize([1.0, -1.0], m)  # mean 0: Z - mean itself stays below FLT_MAX
    Z64 = signs * np.array([1e20, 1e18, 3e38, 1.0])
    Z64[0, 3] = 3000.0  # the first row, which the sums are shifted by, far from the rest
    Z = Z64.astype(np.float32)
    n = Z.shape[1]
    gamma, beta = np.ones(n, np.float32), np.zeros(n, np.float32)
    out, mean, invstd = np.empty_like(Z), np.empty(n, np.float32), np.empty(n, np.float32)
    ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta)
    mu, var, inv, xh, _, _ = bn_ref(Z, gamma, beta, 1e-5, "identity", 0.0)
    assert np.isfinite(out).all() and np.isfinite(invstd).all()
    assert_close(invstd, inv, 1e-5, 1e-45)  # 3e38's invstd ~ 3e-39 is subnormal in float32
    assert_close(out[:, [0, 1, 3]], xh[:, [0, 1, 3]], 1e-5, 1e-5)
    assert_close(out[:, 2], xh[:, 2], 1e-2, 1e-2)  # through that subnormal invstd
    # backward: g * (Z - mean) = 1e30 * 1e10 overflows float32, not the double sums
    Zb = (signs[:, :1] * 1e10).astype(np.float32)
    dout = (rng.choice([-1.0, 1.0], (m, 1)) * 1e30).astype(np.float32)
    g1 = np.ones(1, np.float32)
    ob, mb, ib = np.empty_like(Zb), np.empty(1, np.float32), np.empty(1, np.float32)
    ops.batchnorm_forward_train(ob, mb, ib, None, None, Zb, g1, np.zeros(1, np.float32))
    dZ, dgamma, dbeta = np.empty_like(Zb), np.empty(1, np.float32), np.empty(1, np.float32)
    ops.batchnorm_backward(dZ, dgamma, dbeta, dout, ob, Zb, g1, mb, ib)
    xhb = (f64(Zb) - f64(mb)) * f64(ib)
    dgamma_ref = (f64(dout) * xhb).sum(axis=0)
    assert np.isfinite(dgamma).all() and np.isfinite(dZ).all()
    assert_close(dgamma, dgamma_ref, 1e-5, 1e-5 * np.abs(f64(dout) * xhb).sum(axis=0))


@pytest.mark.parametrize("act", ACTS)
def test_nan_in_a_feature_propagates_to_that_feature_only(act):
    Z = np.random.default_rng(0).standard_normal((6, 70))
    Z[3, 65] = np.nan
    out, mean, invstd = np.empty((6, 70)), np.empty(70), np.empty(70)
    rm, rv = np.zeros(70), np.ones(70)
    ops.batchnorm_forward_train(out, mean, invstd, rm, rv, Z, np.ones(70), np.zeros(70),
                                activation=act)
    assert np.isnan(out[:, 65]).all()
    assert np.isfinite(np.delete(out, 65, axis=1)).all()
    assert np.isnan(rm[65]) and np.isnan(rv[65]) and np.isfinite(np.delete(rm, 65)).all()


# ------------------------------------------------------------------ evaluation forward


@SETTINGS
@given(m=dims, n=dims, act=st.sampled_from(ACTS), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_batchnorm_forward_eval_matches_reference(m, n, act, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha, eps = float(rng.uniform(0.01, 0.5)), float(rng.choice([1e-5, 1e-3]))
    Z, gamma, beta = make_inputs(rng, m, n, dtype)
    rm = rng.standard_normal(n).astype(dtype)
    rv = rng.uniform(0.05, 4.0, n).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    ops.batchnorm_forward_eval(out, Z, gamma, beta, rm, rv, eps=eps, activation=act, alpha=alpha)
    inv = 1.0 / np.sqrt(f64(rv) + eps)
    y = f64(gamma) * (f64(Z) - f64(rm)) * inv + f64(beta)
    rtol = RTOL[dtype]
    bound = np.abs(f64(gamma)) * inv * (np.abs(f64(Z)) + np.abs(f64(rm))) + np.abs(f64(beta))
    assert_close(out, g_ref(y, act, alpha), rtol, rtol * bound)


# ------------------------------------------------------------------ backward


@SETTINGS
@given(m=dims, n=dims, act=st.sampled_from(ACTS), in_place=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, n=513, act="sigmoid", in_place=False, dtype=np.float32, seed=0)
@example(m=1031, n=2100, act="relu", in_place=True, dtype=np.float32, seed=1)
def test_batchnorm_backward_matches_reference(m, n, act, in_place, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha, eps = float(rng.uniform(0.01, 0.5)), 1e-5
    Z, gamma, beta = make_inputs(rng, m, n, dtype)
    mu, _, inv, _, _, out = bn_ref(Z, gamma, beta, eps, act, alpha)
    dout = rng.standard_normal((m, n)).astype(dtype)
    out_t, mu_t, inv_t = out.astype(dtype), mu.astype(dtype), inv.astype(dtype)

    d = dout.copy()
    dZ = d if in_place else np.full((m, n), np.nan, dtype=dtype)
    dgamma = np.full(n, np.nan, dtype=dtype)
    dbeta = np.full(n, np.nan, dtype=dtype)
    ops.batchnorm_backward(dZ, dgamma, dbeta, d, out_t, Z, gamma, mu_t, inv_t, activation=act,
                           alpha=alpha)

    # Reference from the (rounded) inputs the kernel saw.
    xh_d, inv_d, gam_d = (f64(Z) - f64(mu_t)) * f64(inv_t), f64(inv_t), f64(gamma)
    g = f64(dout) * gprime_of_a(out_t, act, alpha)
    dbeta_ref = g.sum(axis=0)
    dgamma_ref = (g * xh_d).sum(axis=0)
    k = gam_d * inv_d / m
    dZ_ref = k * (m * g - dbeta_ref - xh_d * dgamma_ref)
    rtol = RTOL[dtype]
    # the kernel's g' is 1 - a*a (tanh) or a*(1 - a) (sigmoid) in T: near |a| = 1 it cancels,
    # so its rounding is relative to the size of those terms, not to g'
    a = np.abs(f64(out_t))
    terms = {"tanh": 1 + a * a, "sigmoid": a * (1 + a)}.get(act, np.abs(gprime_of_a(out_t, act, alpha)))
    abs_g = np.abs(f64(dout)) * terms
    assert_close(dbeta, dbeta_ref, rtol, rtol * abs_g.sum(axis=0))
    assert_close(dgamma, dgamma_ref, rtol, rtol * (abs_g * np.abs(xh_d)).sum(axis=0))
    bound = np.abs(k) * (m * abs_g + abs_g.sum(axis=0) + np.abs(xh_d) * (abs_g * np.abs(xh_d)).sum(axis=0))
    assert_close(dZ, dZ_ref, rtol, rtol * bound)
    if not in_place:
        assert np.array_equal(d, dout)  # dout is only read unless it is dZ


def test_backward_takes_read_only_inputs_and_forward_refuses_out_overlapping_z():
    rng = np.random.default_rng(5)
    m, n = 40, 70
    Z, gamma, beta = make_inputs(rng, m, n, np.float64)
    out, mean, invstd = np.empty((m, n)), np.empty(n), np.empty(n)
    ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta, activation="relu")
    dout = rng.standard_normal((m, n))
    for a in (dout, out, Z, gamma, mean, invstd):
        a.setflags(write=False)
    dZ, dgamma, dbeta = np.empty((m, n)), np.empty(n), np.empty(n)
    ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd, activation="relu")
    assert np.isfinite(dZ).all()
    Z2 = Z.copy()
    for bad_out in (Z2, Z2.reshape(m, n)):  # the array itself, a view of it
        with pytest.raises(ValueError, match="out must not overlap Z"):
            ops.batchnorm_forward_train(bad_out, mean.copy(), invstd.copy(), None, None, Z2, gamma,
                                        beta)


def _misaligned(shape, dtype, shift):
    """An uninitialised C-contiguous array whose data starts `shift` elements past 64 bytes."""
    size = int(np.prod(shape))
    buf = np.empty(size + 64, dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + shift
    return buf[start:start + size].reshape(shape)


@pytest.fixture
def stream_threshold():
    old = ops.get_stream_threshold()
    yield
    ops.set_stream_threshold(old)
    assert ops.get_stream_threshold() == old


PANEL_SHAPES = {"panel512-prefetch": (512, True, False), "panel2048": (2048, False, False),
                "columns4096": (4096, False, True), "columns512-prefetch": (512, True, True)}


@pytest.mark.parametrize("panel", PANEL_SHAPES.values(), ids=PANEL_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n", [(700, 515), (257, 1024), (512, 1024), (300, 2100), (256, 2048),
                                  (512, 2100), (2700, 100), (37, 300), (5, 17)])
def test_streamed_outputs_have_the_same_bits(m, n, dtype, panel, stream_threshold):
    """Outputs written around the caches (non-temporal stores) equal the cached ones bitwise,
    for every activation, 1 and 2 threads, column panels of each shape (shared by the threads:
    2 threads, an even number of row chunks, rows of >= 4 panels; each thread its own
    columns: rows of >= 8 KB on 2 threads) and all columns at once, arrays starting
    anywhere within a cache line, and dZ in place of dout."""
    rng = np.random.default_rng(m * n)
    Z0, gamma, beta = make_inputs(rng, m, n, dtype)
    dout0 = rng.standard_normal((m, n)).astype(dtype)
    threads = ops.get_num_threads()
    results = {}
    try:
        with ops._forced_panel_shape(*panel):
            for stream in (False, True):
                ops.set_stream_threshold(0 if stream else 2**62)
                for nt in (1, 2):
                    ops.set_num_threads(nt)
                    for i, act in enumerate(ACTS):
                        shift = (3 * i + nt) % 16
                        Z, dout = _misaligned((m, n), dtype, shift), _misaligned((m, n), dtype, 15 - shift)
                        Z[...], dout[...] = Z0, dout0
                        out = _misaligned((m, n), dtype, (shift + 5) % 16)
                        mean, invstd = np.empty(n, dtype), np.empty(n, dtype)
                        ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta,
                                                    activation=act)
                        dZ = _misaligned((m, n), dtype, (shift + 9) % 16)
                        dgamma, dbeta = np.empty(n, dtype), np.empty(n, dtype)
                        ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd,
                                               activation=act)
                        dgamma2, dbeta2 = np.empty(n, dtype), np.empty(n, dtype)
                        ops.batchnorm_backward(dout, dgamma2, dbeta2, dout, out, Z, gamma, mean,
                                               invstd, activation=act)  # in place
                        assert np.array_equal(dout, dZ) and np.array_equal(dgamma2, dgamma)
                        results[stream, nt, act] = [out, mean, invstd, dZ, dgamma, dbeta]
    finally:
        ops.set_num_threads(threads)
    for (stream, nt, act), arrays in results.items():
        for name, a, b in zip(["out", "mean", "invstd", "dZ", "dgamma", "dbeta"], arrays,
                              results[False, 1, act]):
            assert np.array_equal(a, b), (name, act, stream, nt)
    assert np.isfinite(results[True, 2, "tanh"][3]).all()


@pytest.mark.skipif(not ops.has_openmp, reason="built without OpenMP")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n", [(64, 8192), (40, 7000), (129, 6000), (1000, 4100)])
def test_own_columns_give_the_same_bits_on_any_number_of_threads(m, n, dtype):
    """Each thread its own columns (split_passes): 2, 3 and 4 threads, one row chunk (m <=
    128) or several, rows that are not a whole number of cache lines, give the bits of one
    thread, forward and backward."""
    rng = np.random.default_rng(m + n)
    Z, gamma, beta = make_inputs(rng, m, n, dtype)
    dout = rng.standard_normal((m, n)).astype(dtype)
    threads = ops.get_num_threads()
    results = {}
    try:
        with ops._forced_panel_shape(512, True, True):
            for nt in (1, 2, 3, 4):
                ops.set_num_threads(nt)
                out, mean, invstd = np.empty((m, n), dtype), np.empty(n, dtype), np.empty(n, dtype)
                rm, rv = np.zeros(n, dtype), np.ones(n, dtype)
                ops.batchnorm_forward_train(out, mean, invstd, rm, rv, Z, gamma, beta,
                                            activation="relu")
                dZ, dgamma, dbeta = np.empty((m, n), dtype), np.empty(n, dtype), np.empty(n, dtype)
                ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd,
                                       activation="relu")
                results[nt] = [out, mean, invstd, rm, rv, dZ, dgamma, dbeta]
    finally:
        ops.set_num_threads(threads)
    for nt in (2, 3, 4):
        for name, a, b in zip(["out", "mean", "invstd", "running_mean", "running_var", "dZ",
                               "dgamma", "dbeta"], results[nt], results[1]):
            assert np.array_equal(a, b), (name, nt)


@pytest.mark.parametrize("m", [64, 1024, 4096])
def test_float32_statistics_keep_their_digits_when_the_first_row_is_far_out(m):
    """The sums are shifted by the first row and taken in float32 groups of rows: with that
    row up to sqrt(m) standard deviations from the mean, the groups' rounding would reach
    1e-5 of the variance (measured: 2.7e-5 at m = 4096). Such features are summed again in
    double, so invstd stays within a few float32 roundings of the float64 formula."""
    rng = np.random.default_rng(m)
    n = 64
    Z64 = rng.standard_normal((m, n))
    Z64[0] = rng.uniform(5, 100, n) * np.sqrt(m)
    Z = Z64.astype(np.float32)
    out, mean, invstd = np.empty_like(Z), np.empty(n, np.float32), np.empty(n, np.float32)
    ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, np.ones(n, np.float32),
                                np.zeros(n, np.float32))
    mu, _, inv, xh, _, _ = bn_ref(Z, np.ones(n), np.zeros(n), 1e-5, "identity", 0.0)
    assert_close(invstd, inv, 3e-7)
    assert_close(mean, mu, 3e-7, 1e-6 * np.abs(f64(Z)).max(axis=0))
    assert_close(out, xh, 1e-6, 1e-6)


@pytest.mark.parametrize("panel", PANEL_SHAPES.values(), ids=PANEL_SHAPES.keys())
def test_features_summed_again_in_double_in_every_panel_shape(panel):
    """Features whose float32 groups fail (an outlying first row, squares or products that
    overflow) spread over the panels of each shape, on 1 and 2 threads: the same bits, and
    right against float64."""
    m, n = 512, 2100
    rng = np.random.default_rng(5)
    Z, gamma, beta = make_inputs(rng, m, n, np.float32)
    signs = rng.choice([-1.0, 1.0], m)
    for j in (3, 700, 1500):
        Z[0, j] = Z[1:, j].mean() + 1000.0 * Z[1:, j].std()  # the shift, 22 stds out
    for j in (5, 1023, 2099):
        Z[:, j] = (signs * 1e20).astype(np.float32)  # squares overflow float32
    dout = rng.standard_normal((m, n)).astype(np.float32)
    dout[:, 1030] = (rng.choice([-1.0, 1.0], m) * 1e30).astype(np.float32)
    Z[:, 1030] = (signs * 1e10).astype(np.float32)  # g * (Z - mean) overflows float32
    threads = ops.get_num_threads()
    results = {}
    try:
        with ops._forced_panel_shape(*panel):
            for nt in (1, 2):
                ops.set_num_threads(nt)
                out, mean, invstd = np.empty_like(Z), np.empty(n, np.float32), np.empty(n, np.float32)
                ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta)
                dZ, dgamma, dbeta = np.empty_like(Z), np.empty(n, np.float32), np.empty(n, np.float32)
                ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd)
                results[nt] = [out, mean, invstd, dZ, dgamma, dbeta]
    finally:
        ops.set_num_threads(threads)
    for name, a, b in zip(["out", "mean", "invstd", "dZ", "dgamma", "dbeta"], results[2], results[1]):
        assert np.array_equal(a, b), name
    out, mean, invstd, dZ, dgamma, dbeta = results[1]
    assert np.isfinite(out).all() and np.isfinite(dZ).all() and np.isfinite(dgamma).all()
    mu, _, inv, _, _, _ = bn_ref(Z, gamma, beta, 1e-5, "identity", 0.0)
    assert_close(invstd, inv, 1e-6)
    assert_close(mean, mu, 1e-6, 1e-6 * np.abs(f64(Z)).max(axis=0))
    xh = (f64(Z) - f64(mean)) * f64(invstd)
    g = f64(dout)
    assert_close(dbeta, g.sum(axis=0), 1e-5, 1e-5 * np.abs(g).sum(axis=0))
    assert_close(dgamma, (g * xh).sum(axis=0), 1e-5, 1e-5 * np.abs(g * xh).sum(axis=0))


def test_stream_threshold_is_checked(stream_threshold):
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        ops.set_stream_threshold(-1)
    with pytest.raises(TypeError, match="nbytes must be an integer"):
        ops.set_stream_threshold(1.5)
    assert ops.get_stream_threshold() > 0  # 3/4 of the largest cache by default


# ------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("m", [3, 8])
def test_batchnorm_gradient_check(act, m):
    # (m = 2 is ill-conditioned for a finite-difference check: xhat = +-sqrt(var/(var+eps))
    # hardly depends on Z, so dZ is ~eps/var times its usual size.)
    rng = np.random.default_rng([ACTS.index(act), m])
    n, alpha = 3, 0.1
    for _ in range(1000):  # keep gamma*xhat + beta away from the relu kink
        Z, gamma, beta = make_inputs(rng, m, n, np.float64)
        if np.abs(bn_ref(Z, gamma, beta, 1e-5, act, alpha)[4]).min() > 1e-2:
            break
    R = rng.standard_normal((m, n))
    out, mean, invstd = np.empty((m, n)), np.empty(n), np.empty(n)

    def J():
        ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta,
                                    activation=act, alpha=alpha)
        return float(np.sum(R * out))

    J()
    dZ, dgamma, dbeta = np.empty((m, n)), np.empty(n), np.empty(n)
    ops.batchnorm_backward(dZ, dgamma, dbeta, R.copy(), out.copy(), Z.copy(), gamma, mean.copy(),
                           invstd.copy(), activation=act, alpha=alpha)
    assert np.abs(dZ).sum() > 0
    for name, param, analytic in [("Z", Z, dZ), ("gamma", gamma, dgamma), ("beta", beta, dbeta)]:
        d = rel_diff(numerical_grad(J, param), analytic)
        assert d < 1e-7, f"{name}: relative difference {d:.2e}"


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_network_gradient_check_dense_bn_act_dense_softmax(act):
    """X -> Dense(no bias) -> BN -> act -> Dense -> softmax cross-entropy, L2 on both W."""
    rng = np.random.default_rng(ACTS.index(act))
    m, n0, n1, C, l2 = 6, 4, 5, 3, 0.3
    X = rng.standard_normal((m, n0))
    labels = rng.integers(0, C, m)
    Z1, A1 = np.empty((m, n1)), np.empty((m, n1))
    mean, invstd, Z2 = np.empty(n1), np.empty(n1), np.empty((m, C))
    for _ in range(1000):
        W1, W2, b2 = rng.standard_normal((n1, n0)), rng.standard_normal((C, n1)), rng.standard_normal(C)
        gamma, beta = rng.uniform(0.5, 2, n1), rng.standard_normal(n1)
        ops.dense_forward(Z1, X, W1)
        if np.abs(bn_ref(Z1, gamma, beta, 1e-5, act, 0)[4]).min() > 1e-2:
            break

    def forward():
        ops.dense_forward(Z1, X, W1)
        ops.batchnorm_forward_train(A1, mean, invstd, None, None, Z1, gamma, beta,
                                    activation=act)
        ops.dense_forward(Z2, A1, W2, b2)
        return (ops.softmax_cross_entropy(None, Z2, labels=labels)
                + ops.weight_penalty(W1, l2=l2, m=m) + ops.weight_penalty(W2, l2=l2, m=m))

    forward()
    dZ2 = np.empty((m, C))
    ops.softmax_cross_entropy(dZ2, Z2, labels=labels)
    dW2, db2, dA1 = np.empty_like(W2), np.empty_like(b2), np.empty((m, n1))
    ops.dense_backward(dA1, dW2, db2, dZ2, Z2, A1, W2, l2=l2)
    dZ1, dgamma, dbeta, dW1 = np.empty((m, n1)), np.empty(n1), np.empty(n1), np.empty_like(W1)
    ops.batchnorm_backward(dZ1, dgamma, dbeta, dA1, A1, Z1, gamma, mean, invstd, activation=act)
    ops.dense_backward(None, dW1, None, dZ1, Z1, X, W1, l2=l2)
    for name, param, analytic in [("W1", W1, dW1), ("gamma", gamma, dgamma), ("beta", beta, dbeta),
                                  ("W2", W2, dW2), ("b2", b2, db2)]:
        d = rel_diff(numerical_grad(forward, param), analytic)
        assert d < 1e-7, f"{name}: relative difference {d:.2e}"


def _sysfs_l2_bytes():
    """CPU 0's L2 data/unified cache in bytes from sysfs, as lscpu reads it; 0 if unknown."""
    import glob
    import os

    best = 0
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if level != 2 or kind == "Instruction":
            continue
        scale = {"K": 2**10, "M": 2**20}.get(size[-1:].upper(), 1)
        best = max(best, int(size.rstrip("KkMm")) * scale)
    return best


def test_panel_shape_follows_the_l2_cache():
    l2 = _sysfs_l2_bytes()
    expected = ((4096, False, True) if l2 >= 2 * 2**20 else (512, True, False) if l2 >= 2**20
                else (2048, False, False))
    assert ops.batchnorm_panel_shape() == expected
    with ops._forced_panel_shape(256, True):
        assert ops.batchnorm_panel_shape() == (256, True, False)
    with ops._forced_panel_shape(192, False, True):
        assert ops.batchnorm_panel_shape() == (192, False, True)
    assert ops.batchnorm_panel_shape() == expected
    for bad in (0, 100, 2**21):
        with pytest.raises(ValueError, match="nbytes"):
            with ops._forced_panel_shape(bad, False):
                pass
    assert ops.batchnorm_panel_shape() == expected


def test_forced_panel_shapes_nest():
    rule = ops.batchnorm_panel_shape()
    with ops._forced_panel_shape(1024, False, True):
        with ops._forced_panel_shape(256, True):
            assert ops.batchnorm_panel_shape() == (256, True, False)
        assert ops.batchnorm_panel_shape() == (1024, False, True)
    assert ops.batchnorm_panel_shape() == rule
