"""Weight initializers. Biases always start at zero.

For W of shape (n_out, n_in), with N(0, 1) standard normal draws:

=========  =======================================
he         N(0,1) * sqrt(2 / n_in)   (before ReLU)
xavier     N(0,1) * sqrt(1 / n_in)   (before tanh/sigmoid)
glorot     N(0,1) * sqrt(2 / (n_in + n_out))
random     N(0,1) * 0.01
zeros      0 (cannot break symmetry: every unit of a layer learns the same thing)
=========  =======================================

``scale`` multiplies any of them (to show exploding or vanishing signals).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["INITIALIZERS", "initialize", "check_init"]

INITIALIZERS = ("he", "xavier", "glorot", "random", "zeros")


def check_init(init: str, scale: float = 1.0) -> None:
    """Raise ValueError unless init names an initializer (or "auto") and scale is finite."""
    if init != "auto" and init not in INITIALIZERS:
        raise ValueError(f"init must be 'auto' or one of {list(INITIALIZERS)}, got {init!r}")
    try:
        finite = math.isfinite(float(scale))
    except (TypeError, ValueError, OverflowError):  # not a number, or an int beyond float's range
        finite = False
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) or not finite:
        raise ValueError(f"scale must be a finite number, got {scale!r:.60}")


def initialize(init: str, shape: tuple[int, int], rng: np.random.Generator, scale: float = 1.0,
               dtype=np.float32) -> np.ndarray:
    """A new (n_out, n_in) weight matrix drawn by the named initializer, times scale."""
    check_init(init, scale)
    if init == "auto":
        raise ValueError("init='auto' must be resolved by the model (he before ReLU, xavier otherwise)")
    n_out, n_in = shape
    if init == "zeros":
        return np.zeros(shape, dtype=dtype)
    std = {"he": math.sqrt(2.0 / n_in), "xavier": math.sqrt(1.0 / n_in),
           "glorot": math.sqrt(2.0 / (n_in + n_out)), "random": 0.01}[init]
    return (rng.standard_normal(shape) * (std * float(scale))).astype(dtype)
