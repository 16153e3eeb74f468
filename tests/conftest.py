"""Shared test helpers (keep this file tiny)."""
import numpy as np


def assert_close(actual, expected, rtol, atol=0.0):
    """Assert |actual - expected| <= atol + rtol*|expected| elementwise (atol may be an array).

    On failure the message gives the worst element (largest excess over its tolerance),
    its coordinates, both values and the number of failing elements.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    tol = np.broadcast_to(atol + rtol * np.abs(e), e.shape)
    diff = np.abs(a - e)
    bad = ~(diff <= tol)  # NaN anywhere counts as a failure
    bad &= ~((a == e) | (np.isnan(a) & np.isnan(e)))  # equal infinities / NaN in both are fine
    if bad.any():
        excess = np.where(bad, np.nan_to_num(diff - tol, nan=np.inf, posinf=np.inf), -np.inf)
        idx = np.unravel_index(int(np.argmax(excess)), e.shape) if e.ndim else ()
        raise AssertionError(
            f"{int(bad.sum())} of {e.size} elements differ; worst at {idx}: "
            f"actual {a[idx]!r}, expected {e[idx]!r}, |diff| {diff[idx]:.3e} > tol {tol[idx]:.3e} "
            f"(rtol={rtol}, max |diff| {np.nanmax(diff) if diff.size else 0:.3e})"
        )
