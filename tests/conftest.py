"""Shared test helpers: tolerances and the float64 reference pieces several suites use."""
import numpy as np
import pytest
from scipy.special import expit

from pydl import ops

# The GEMM kernels this build has (tests force each in turn: ops._forced_gemm_kernel).
GEMM_KERNELS = ["own", "blas"] if ops.has_own_gemm else ["blas"]
# SciPy's BLAS on one thread per call, as pydl sets it. False where it cannot (another BLAS,
# or an OpenBLAS built with OpenMP): products then run whole on the BLAS's threads.
BLAS_PINNED = ops._set_scipy_blas_threads(1) > 0


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


def f64(x):
    """A float64 copy (kernels work in place)."""
    return np.array(x, dtype=np.float64)


def g_ref(z, act, alpha):
    """The activation g(z) in float64 NumPy."""
    if act == "identity":
        return z.copy()
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if act == "tanh":
        return np.tanh(z)
    return expit(z)


def gprime_of_a(a, act, alpha):
    """g'(z) written in terms of a = g(z), as the kernels take it (Z is not stored)."""
    a = np.asarray(a, dtype=np.float64)
    if act == "identity":
        return np.ones_like(a)
    if act == "relu":
        return (a > 0).astype(np.float64)
    if act == "leaky_relu":
        return np.where(a > 0, 1.0, alpha)
    if act == "tanh":
        return 1.0 - a**2
    return a * (1.0 - a)


def rel_diff(a, b):
    """||a - b|| / (||a|| + ||b||), 0 when both are 0: the gradient-check difference."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na + nb == 0 else np.linalg.norm(a - b) / (na + nb)


def numerical_grad(J, x, eps=1e-6):
    """Two-sided differences of the scalar J() w.r.t. every element of x (modified in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        jp = J()
        flat[k] = old - eps
        jm = J()
        flat[k] = old
        gflat[k] = (jp - jm) / (2 * eps)
    return grad


@pytest.fixture
def restore_threads():
    """The test may call pydl.set_num_threads: the count it found comes back afterwards."""
    from pydl import ops

    before = ops.get_num_threads()
    yield
    ops.set_num_threads(before)


def run_in_lockstep(monkeypatch, module, kernels, calls):
    """calls[i]() each on a thread of its own, the threads held together (a barrier) after
    every call of ``module.<name>`` for each name in ``kernels``: they are inside the same
    kernels at once, deterministically. Returns their results in order; the first error
    fails the test."""
    import threading

    barrier = threading.Barrier(len(calls), timeout=30)

    def meeting(kernel):
        def call(*args, **kwargs):
            out = kernel(*args, **kwargs)
            barrier.wait()
            return out
        return call

    for name in kernels:
        monkeypatch.setattr(module, name, meeting(getattr(module, name)))
    got, errors = [None] * len(calls), []

    def run(i):
        try:
            got[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return got
