"""Numerical gradients and the gradient check."""
from __future__ import annotations

import numpy as np

__all__ = ["numerical_gradient"]


def numerical_gradient(f, theta: np.ndarray, eps: float = 1e-7, coordinates=None) -> np.ndarray:
    """Two-sided differences: grad_i = (f(theta + eps e_i) - f(theta - eps e_i)) / (2 eps).

    ``theta`` (P,) float64 is perturbed in place and restored; ``coordinates`` limits the
    indices computed (others are left 0). Returns (P,) float64.
    """
    theta = np.asarray(theta)
    if theta.ndim != 1:
        raise ValueError(f"theta must be 1-D, got shape {theta.shape}")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    idx = range(theta.size) if coordinates is None else np.asarray(coordinates, dtype=np.int64)
    g = np.zeros(theta.shape, dtype=np.float64)
    for i in idx:
        old = theta[i]
        theta[i] = old + eps
        fp = f(theta)
        theta[i] = old - eps
        fm = f(theta)
        theta[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g
