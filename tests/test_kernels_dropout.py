"""Inverted dropout kernels (pydl.ops): D = U[0,1) < keep_prob, out = A * D / keep_prob.

The mask comes from a counter-based generator keyed by (seed, step, layer) and the element
index: checked here for its keep rate (binomial, 5 sigma), independence across keys and
neighbouring elements, determinism, and that backward applies the very same mask
(thread-count independence: test_kernels_threads.py).
"""
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_close
from pydl import ops

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-15, np.float32: 2.5e-7}  # a rounded 1/keep_prob, one multiplication
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)
BIG = (1024, 1031)  # > 2^16 elements: OpenMP splits the loop


def mask(seed, step, layer, keep_prob, shape=BIG, dtype=np.float64):
    out = np.empty(shape, dtype=dtype)
    ops.dropout_forward(out, np.ones(shape, dtype=dtype), seed, step, layer, keep_prob)
    return out != 0


def within_binomial(k, n, p, sigmas=5.0):
    return abs(k - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("keep_prob", [0.05, 0.5, 0.8, 0.999])
def test_keep_rate_within_binomial_bounds(keep_prob):
    D = mask(123, 4, 2, keep_prob)
    n = D.size
    assert within_binomial(D.sum(), n, keep_prob), (D.mean(), keep_prob)
    # ... and uniformly along the flat index (16 chunks, even vs odd positions).
    for chunk in np.array_split(D.reshape(-1), 16):
        assert within_binomial(chunk.sum(), chunk.size, keep_prob)
    assert within_binomial(D.reshape(-1)[::2].sum(), D.reshape(-1)[::2].size, keep_prob)
    # Neighbours are independent: P(both kept) = p^2.
    flat = D.reshape(-1)
    both = np.sum(flat[1:] & flat[:-1])
    assert within_binomial(both, flat.size - 1, keep_prob**2, sigmas=6.0)


@SETTINGS
@given(shape=st.one_of(st.tuples(st.integers(1, 2000)),
                       st.tuples(st.integers(1, 300), st.integers(1, 300))),
       keep_prob=st.one_of(st.sampled_from([0.5, 1.0]), st.floats(0.01, 1.0)), in_place=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**64 - 1),
       step=st.integers(0, 2**64 - 1), layer=st.integers(0, 100))
def test_forward_backward_match_formula_with_one_mask(shape, keep_prob, in_place, dtype, seed,
                                                      step, layer):
    rng = np.random.default_rng(seed % 2**32)
    D = mask(seed, step, layer, keep_prob, shape, dtype)
    A = (rng.standard_normal(shape) + 3.0).astype(dtype)  # no zeros: the mask stays visible
    ref = np.where(D, A.astype(np.float64) / keep_prob, 0.0)

    out = A.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.dropout_forward(out, out if in_place else A, seed, step, layer, keep_prob)
    assert np.array_equal(out != 0, D)
    assert_close(out, ref, RTOL[dtype])

    dout = (rng.standard_normal(shape) + 3.0).astype(dtype)
    dA = dout.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.dropout_backward(dA, dA if in_place else dout, seed, step, layer, keep_prob)
    assert np.array_equal(dA != 0, D)  # backward regenerates exactly the forward mask
    assert_close(dA, np.where(D, dout.astype(np.float64) / keep_prob, 0.0), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_keep_prob_one_is_identity(dtype):
    A = np.random.default_rng(0).standard_normal(BIG).astype(dtype)
    out, dA = np.empty_like(A), np.empty_like(A)
    ops.dropout_forward(out, A, 1, 2, 3, 1.0)
    ops.dropout_backward(dA, A, 1, 2, 3, 1.0)
    assert np.array_equal(out, A) and np.array_equal(dA, A)


def test_same_key_same_mask_and_dtype_independent():
    D = mask(5, 6, 7, 0.5)
    assert np.array_equal(D, mask(5, 6, 7, 0.5))
    assert np.array_equal(D, mask(5, 6, 7, 0.5, dtype=np.float32))
    # A smaller array gets the prefix of the same stream.
    assert np.array_equal(D.reshape(-1)[:999], mask(5, 6, 7, 0.5, shape=(999,)))


def _mix64(x):
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def reference_mask(seed, step, layer, keep_prob, n):
    """The generator as csrc/dropout.cpp documents it, in NumPy: element k is kept when the
    top 53 bits of mix64(key ^ (k * golden + c)) are below ceil(keep_prob * 2^53), with
    key = mix64(mix64(mix64(seed + golden) ^ step) + layer * c')."""
    u = lambda v: np.array([v], dtype=np.uint64)  # noqa: E731
    golden = u(0x9E3779B97F4A7C15)
    key = _mix64(_mix64(_mix64(u(seed) + golden) ^ u(step)) + u(layer) * u(0x632BE59BD9B4E019))
    k = np.arange(n, dtype=np.uint64)
    x = _mix64(key ^ (k * golden + u(0x2545F4914F6CDD1D)))
    return (x >> np.uint64(11)) < np.uint64(int(np.ceil(keep_prob * 2.0**53)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 63, 1000, 2**17 + 3])
def test_mask_is_the_documented_generator_bit_for_bit(n, dtype):
    # Every length around the 8-element vector blocks, and one that OpenMP splits.
    for seed, step, layer, keep_prob in [(0, 0, 0, 0.5), (2**63 + 5, 12345, 3, 0.8), (7, 1, 2, 0.05)]:
        got = mask(seed, step, layer, keep_prob, shape=(n,), dtype=dtype)
        assert np.array_equal(got, reference_mask(seed, step, layer, keep_prob, n)), (seed, n)


def test_different_seed_step_layer_give_independent_masks():
    p, shape = 0.5, (256, 256)
    keys = list(itertools.product([0, 1, 2, 2**63], [0, 1, 2], [0, 1, 2]))
    masks = {k: mask(*k, p, shape=shape) for k in keys}
    n = np.prod(shape)
    # Two independent masks agree where both keep or both drop: p^2 + (1-p)^2.
    agree_p = p**2 + (1 - p) ** 2
    for a, b in itertools.combinations(keys, 2):
        agree = np.sum(masks[a] == masks[b])
        assert within_binomial(agree, n, agree_p), (a, b, agree / n)
