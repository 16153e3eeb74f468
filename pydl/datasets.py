"""Small datasets: the shipped 8x8 digits and 2-D toy problems.

Every function returns (X, y): X float32 (m, n_features), y int64 (m,) class ids.
Nothing here touches the network.
"""
import math
import numbers
from importlib import resources

import numpy as np

__all__ = ["load_digits", "make_moons", "make_circles", "make_spirals"]

# Source: UCI ML Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998); CC BY 4.0
_DIGITS_FILE = "digits.npz"


def load_digits():
    """The 8x8 handwritten digits (1797 images, 10 classes), read from the package.

    Returns X float32 (1797, 64), each row an 8x8 image flattened row-major,
    pixel values 0..16 (integers); y int64 (1797,) in 0..9. This is the copy
    scikit-learn ships (sklearn.datasets.load_digits), stored as uint8 in
    pydl/_data/digits.npz.
    """
    with resources.files("pydl").joinpath("_data", _DIGITS_FILE).open("rb") as f:
        with np.load(f) as d:
            images, target = d["images"], d["target"]
    return images.reshape(len(images), -1).astype(np.float32), target.astype(np.int64)


def _check_n_samples(n_samples, n_classes):
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < n_classes:
        raise ValueError(f"n_samples must be >= {n_classes} (one per class), got {n_samples}")
    return int(n_samples)


def _check_nonneg(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {v}")
    return v


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
                        and seed >= 0):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be None, a non-negative int or a numpy.random.Generator, "
                    f"got {seed!r}")


def _class_sizes(n_samples, n_classes):
    """Balanced class sizes: the first n_samples % n_classes classes get one extra."""
    return [n_samples // n_classes + (k < n_samples % n_classes) for k in range(n_classes)]


def _finish(parts, labels, noise, rng, noise_on_points=True):
    """Stack class parts, add N(0, noise^2) to the points, shuffle rows."""
    X = np.concatenate(parts)
    y = np.concatenate([np.full(len(p), k, dtype=np.int64) for p, k in zip(parts, labels)])
    if noise_on_points:
        X = X + noise * rng.standard_normal(X.shape)
    perm = rng.permutation(len(y))
    return X[perm].astype(np.float32), y[perm]


def make_moons(n_samples=200, noise=0.1, seed=None):
    """Two interleaving half circles in 2-D (the classic non-linear toy problem).

    Class 0: (cos t, sin t), class 1: (1 - cos t, 0.5 - sin t), t evenly
    spaced in [0, pi], plus Gaussian noise of std `noise` on each coordinate.
    Returns X float32 (n_samples, 2), y int64 (n_samples,), rows shuffled,
    class sizes differing by at most one.
    """
    n_samples = _check_n_samples(n_samples, 2)
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    n0, n1 = _class_sizes(n_samples, 2)
    t0 = np.linspace(0.0, np.pi, n0)
    t1 = np.linspace(0.0, np.pi, n1)
    outer = np.column_stack((np.cos(t0), np.sin(t0)))
    inner = np.column_stack((1.0 - np.cos(t1), 0.5 - np.sin(t1)))
    return _finish([outer, inner], [0, 1], noise, rng)


def make_circles(n_samples=200, noise=0.05, factor=0.5, seed=None):
    """A circle of radius `factor` (class 1) inside the unit circle (class 0), in 2-D.

    Angles evenly spaced in [0, 2 pi); Gaussian noise of std `noise` on each
    coordinate; 0 < factor < 1. Returns X float32 (n_samples, 2), y int64
    (n_samples,), rows shuffled, class sizes differing by at most one.
    """
    n_samples = _check_n_samples(n_samples, 2)
    noise = _check_nonneg(noise, "noise")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise TypeError(f"factor must be a real number, got {type(factor).__name__}")
    if not 0.0 < float(factor) < 1.0:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    rng = _rng(seed)
    n0, n1 = _class_sizes(n_samples, 2)
    t0 = np.linspace(0.0, 2 * np.pi, n0, endpoint=False)
    t1 = np.linspace(0.0, 2 * np.pi, n1, endpoint=False)
    outer = np.column_stack((np.cos(t0), np.sin(t0)))
    inner = float(factor) * np.column_stack((np.cos(t1), np.sin(t1)))
    return _finish([outer, inner], [0, 1], noise, rng)


def make_spirals(n_samples=300, noise=0.2, seed=None, n_classes=3):
    """n_classes interleaved spiral arms in 2-D (the CS231n spiral data).

    Arm k: radius r evenly spaced in [0, 1], angle t = linspace(4k, 4(k+1)) +
    N(0, noise^2) (noise perturbs the angle), point r * (sin t, cos t).
    Returns X float32 (n_samples, 2), y int64 (n_samples,) in 0..n_classes-1,
    rows shuffled, class sizes differing by at most one.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
        raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    n_samples = _check_n_samples(n_samples, n_classes)
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    parts = []
    for k, n_k in enumerate(_class_sizes(n_samples, n_classes)):
        r = np.linspace(0.0, 1.0, n_k)
        t = np.linspace(4.0 * k, 4.0 * (k + 1), n_k) + noise * rng.standard_normal(n_k)
        parts.append(np.column_stack((r * np.sin(t), r * np.cos(t))))
    return _finish(parts, list(range(n_classes)), noise, rng, noise_on_points=False)
