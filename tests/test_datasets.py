"""Tests for pydl.datasets: the shipped digits and the 2-D toy problems."""
import hashlib
import socket

import numpy as np
import pytest

from pydl.datasets import load_digits, make_circles, make_moons, make_spirals

# facts of sklearn.datasets.load_digits() (scikit-learn 1.9), recorded when digits.npz was made
DIGITS_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_FIRST = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
                0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0,
                0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
DIGITS_LAST = [0, 0, 10, 14, 8, 1, 0, 0, 0, 2, 16, 14, 6, 1, 0, 0, 0, 0, 15, 15, 8, 15, 0, 0,
               0, 0, 5, 16, 16, 10, 0, 0, 0, 0, 12, 15, 15, 12, 0, 0, 0, 4, 16, 6, 4, 16, 6, 0,
               0, 8, 16, 10, 8, 16, 8, 0, 0, 1, 8, 12, 14, 12, 1, 0]


def test_load_digits_content(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("load_digits must not touch the network")
    monkeypatch.setattr(socket, "socket", no_network)
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.array_equal(X, np.round(X))
    assert np.bincount(y).tolist() == DIGITS_COUNTS
    assert X[0].astype(int).tolist() == DIGITS_FIRST and y[0] == 0
    assert X[-1].astype(int).tolist() == DIGITS_LAST and y[-5:].tolist() == [9, 0, 8, 9, 8]
    assert y[:20].tolist() == list(range(10)) * 2
    assert hashlib.sha256(X.astype(np.uint8).tobytes()).hexdigest() == DIGITS_SHA256
    X2, _ = load_digits()
    X2[0, 0] = 99  # each call returns fresh arrays
    assert load_digits()[0][0, 0] == 0


MAKERS = [
    (make_moons, {}, 200, 2),
    (make_circles, {}, 200, 2),
    (make_spirals, {}, 300, 3),
    (make_spirals, {"n_classes": 5}, 300, 5),
]


@pytest.mark.parametrize("make, kw, m, C", MAKERS)
def test_toy_shapes_balance_and_seed(make, kw, m, C):
    X, y = make(seed=0, **kw)
    assert X.shape == (m, 2) and X.dtype == np.float32
    assert y.shape == (m,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [m // C] * C
    X1, y1 = make(seed=0, **kw)
    X2, y2 = make(seed=1, **kw)
    assert np.array_equal(X, X1) and np.array_equal(y, y1)
    assert not np.array_equal(X, X2)
    assert np.any(np.diff(y) < 0)  # rows are shuffled, not grouped by class
    Xo, yo = make(n_samples=m + 1, seed=0, **kw)  # odd sizes stay balanced to one row
    counts = np.bincount(yo)
    assert counts.sum() == m + 1 and counts.max() - counts.min() == 1


def test_moons_geometry_without_noise():
    X, y = make_moons(n_samples=101, noise=0.0, seed=0)
    X = X.astype(np.float64)
    a, b = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(a[:, 0], a[:, 1]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.hypot(b[:, 0] - 1.0, b[:, 1] - 0.5), 1.0, atol=1e-6)
    assert np.all(a[:, 1] >= -1e-6) and np.all(b[:, 1] <= 0.5 + 1e-6)


def test_circles_geometry_and_noise_level():
    X, y = make_circles(n_samples=100, noise=0.0, factor=0.3, seed=0)
    r = np.hypot(X[:, 0].astype(np.float64), X[:, 1])
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-6)
    X, y = make_circles(n_samples=20000, noise=0.05, seed=1)
    r = np.hypot(X[:, 0].astype(np.float64), X[:, 1])
    resid = r[y == 0] - 1.0  # radial part of 2-D N(0, 0.05^2) noise has std ~0.05
    assert abs(resid.std() - 0.05) < 0.003 and abs(resid.mean()) < 0.003


def test_spirals_geometry_without_noise():
    X, y = make_spirals(n_samples=300, noise=0.0, seed=0, n_classes=3)
    X = X.astype(np.float64)
    r = np.hypot(X[:, 0], X[:, 1])
    theta = np.arctan2(X[:, 0], X[:, 1])  # point = r (sin t, cos t)
    expected = 4.0 * y + 4.0 * r         # radius and angle grow together along an arm
    keep = r > 0.05
    d = np.angle(np.exp(1j * (theta - expected)))[keep]
    assert np.max(np.abs(d)) < 1e-4
    Xn, _ = make_spirals(n_samples=300, noise=0.2, seed=0)
    assert not np.allclose(Xn, X, atol=1e-3)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: make_moons(n_samples=1), ValueError, "n_samples must be >= 2"),
    (lambda: make_moons(n_samples=10.0), TypeError, "n_samples must be an int"),
    (lambda: make_moons(noise=-0.1), ValueError, "noise must be finite and >= 0"),
    (lambda: make_moons(noise=float("inf")), ValueError, "noise must be finite"),
    (lambda: make_moons(seed="x"), TypeError, "seed must be"),
    (lambda: make_circles(factor=1.0), ValueError, r"factor must be in \(0, 1\)"),
    (lambda: make_circles(factor=0), ValueError, r"factor must be in \(0, 1\)"),
    (lambda: make_circles(noise="a"), TypeError, "noise must be a real number"),
    (lambda: make_spirals(n_classes=1), ValueError, "n_classes must be >= 2"),
    (lambda: make_spirals(n_classes=2.0), TypeError, "n_classes must be an int"),
    (lambda: make_spirals(n_samples=4, n_classes=5), ValueError, "n_samples must be >= 5"),
])
def test_toy_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
