"""Numerical gradients and the gradient check.

Two-sided differences  approx_i = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps),
eps = 1e-7, in float64, compared with backprop's gradient by

    difference = ||approx - grad||_2 / (||approx||_2 + ||grad||_2)

< 1e-7 great, < 1e-5 acceptable, > 1e-3 almost certainly a bug. The check runs on a
float64 copy of the model, with dropout refused (its random masks make J non-smooth in
theta) unless ``disable_dropout=True``, BatchNorm in training mode over the given batch
without touching running statistics, and regularization included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

__all__ = ["numerical_gradient", "gradient_check", "check_layer", "GradCheckResult", "verdict"]


def _indices(coordinates) -> np.ndarray:
    """``coordinates`` as a flat int64 index array; a non-integer index is a TypeError (a
    float like 1.5 must not be silently truncated to 1)."""
    if isinstance(coordinates, (bool, float, np.floating, str, bytes)):
        raise TypeError("coordinates must be None, an int or integer indices, got "
                        f"{type(coordinates).__name__}")
    a = np.asarray(coordinates)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"coordinates must be integer indices, got dtype {a.dtype}")
    return a.astype(np.int64).reshape(-1)


def numerical_gradient(f, theta: np.ndarray, eps: float = 1e-7, coordinates=None) -> np.ndarray:
    """Two-sided differences: grad_i = (f(theta + eps e_i) - f(theta - eps e_i)) / (2 eps).

    ``theta`` (P,) is perturbed in place and restored; ``coordinates`` (indices) limits the
    entries computed (the others are 0). Returns (P,) float64.
    """
    if not isinstance(theta, np.ndarray) or theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D numpy array, got {getattr(theta, 'shape', type(theta).__name__)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    idx = np.arange(theta.size) if coordinates is None else _indices(coordinates)
    if idx.size and (idx.min() < 0 or idx.max() >= theta.size):
        raise ValueError(f"coordinates must be indices in [0, {theta.size})")
    g = np.zeros(theta.shape, dtype=np.float64)
    for i in idx:
        old = theta[i]
        theta[i] = old + eps
        fp = float(f(theta))
        theta[i] = old - eps
        fm = float(f(theta))
        theta[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def verdict(difference: float) -> str:
    """'great' (< 1e-7), 'acceptable' (< 1e-5), 'suspicious' (<= 1e-3) or 'bug' (> 1e-3)."""
    if not np.isfinite(difference):
        return "bug"
    if difference < 1e-7:
        return "great"
    if difference < 1e-5:
        return "acceptable"
    if difference <= 1e-3:
        return "suspicious"
    return "bug"


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    num = np.linalg.norm(a - b)
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return float(num / den) if den > 0 else 0.0


@dataclass
class GradCheckResult:
    """Outcome of a gradient check.

    difference : the DESIGN relative difference over all checked coordinates
    verdict : 'great', 'acceptable', 'suspicious' or 'bug'
    per_parameter : {name: difference} for each named parameter ("2.W", "2.b", ...)
    worst : [(name, index, backprop, numerical)] the coordinates that disagree most
    n_checked : number of coordinates checked
    """

    difference: float
    verdict: str
    per_parameter: dict = field(default_factory=dict)
    worst: list = field(default_factory=list)
    n_checked: int = 0

    @property
    def passed(self) -> bool:
        """True for 'great' or 'acceptable'."""
        return self.verdict in ("great", "acceptable")

    def __str__(self) -> str:
        lines = [f"gradient check: difference {self.difference:.3e} -> {self.verdict} "
                 f"({self.n_checked} coordinates)"]
        for name, d in self.per_parameter.items():
            lines.append(f"  {name:>12}  {d:.3e}  {verdict(d)}")
        if self.worst:
            lines.append("  worst coordinates (parameter, index, backprop, numerical):")
            for name, index, a, n in self.worst:
                lines.append(f"    {name}{list(index)}  {a:+.6e}  {n:+.6e}")
        return "\n".join(lines)


def _prepare_copy(model, disable_dropout: bool):
    from . import nn

    dropouts = [l for l in model.layers if isinstance(l, nn.Dropout) and l.keep_prob < 1.0]
    if dropouts and not disable_dropout:
        raise ValueError(
            "the model has active dropout: its random masks change J between the two "
            "evaluations of each difference, so the check would fail for no bug. Check "
            "without dropout (disable_dropout=True), then turn it back on.")
    m64 = model.astype(np.float64)
    for layer in m64.layers:
        if isinstance(layer, nn.Dropout):
            layer.keep_prob = 1.0
        if isinstance(layer, nn.BatchNorm):
            layer.track_running_stats = False
    return m64


def gradient_check(model, X, y, eps: float = 1e-7, coordinates=None, seed=None,
                   disable_dropout: bool = False, n_worst: int = 5) -> GradCheckResult:
    """Compare backprop's dtheta with two-sided numerical differences of J(theta).

    Works on a float64 copy of ``model`` (the model itself is untouched, running
    statistics included). X (m, n_in), y as the model's loss takes them.
    ``coordinates``: None checks every coordinate; an int k checks k coordinates sampled
    (with ``seed``) across all parameters, for big models; or an index array.
    """
    m64 = _prepare_copy(model, disable_dropout)
    X = m64._check_X(X)
    y = m64._check_y(y, X.shape[0])
    P = m64.theta.size
    if coordinates is None:
        idx = np.arange(P)
    elif isinstance(coordinates, (Integral, np.integer)) and not isinstance(coordinates, bool):
        if coordinates < 1:
            raise ValueError(f"coordinates must be >= 1, got {coordinates}")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(P, size=min(int(coordinates), P), replace=False))
    else:
        idx = np.unique(_indices(coordinates))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= P:
            raise ValueError(f"coordinates must be indices in [0, {P})")

    m64._forward_backward(X, y)
    grad = m64.dtheta.copy()
    theta = m64.theta  # perturbed in place by numerical_gradient, restored after

    def J(_):
        return m64._training_cost(X, y)

    approx = numerical_gradient(J, theta, eps=eps, coordinates=idx)
    a, g = approx[idx], grad[idx]
    diff = _difference(a, g)
    per = {}
    for name, sl, shape in m64.parameter_slices():
        sel = (idx >= sl.start) & (idx < sl.stop)
        if sel.any():
            per[name] = _difference(a[sel], g[sel])
    order = np.argsort(-np.abs(a - g))[: max(0, int(n_worst))]
    worst = []
    slices = m64.parameter_slices()
    for k in order:
        i = int(idx[k])
        for name, sl, shape in slices:
            if sl.start <= i < sl.stop:
                worst.append((name, tuple(int(v) for v in np.unravel_index(i - sl.start, shape)),
                              float(g[k]), float(a[k])))
                break
    return GradCheckResult(diff, verdict(diff), per, worst, int(idx.size))


def check_layer(layer, X, eps: float = 1e-7, seed: int = 0) -> GradCheckResult:
    """Gradient-check one layer on its own: its parameters and its input gradient.

    Contract for a user's layer (subclass of ``pydl.nn.Layer``): ``param_shapes()`` lists
    (name, shape) of its parameters; ``bind(params, grads)`` makes them attributes;
    ``forward(A_prev, training)`` returns A (m, n_out) and keeps what backward needs;
    ``backward(dA)`` returns dA_prev (m, n_in) and fills the gradient arrays (it may
    overwrite dA). The check uses J = sum(forward(X) * R) for a fixed random R, in
    float64; the input gradient is reported as "input".
    """
    from . import nn

    if not isinstance(layer, nn.Layer):
        raise TypeError(f"layer must be a pydl.nn.Layer, got {type(layer).__name__}")
    try:
        dtype = (X if isinstance(X, np.ndarray) else np.asarray(X)).dtype
    except ValueError:  # ragged nested lists
        dtype = np.dtype(object)
    if dtype.kind not in "biuf":
        raise TypeError(f"X must be a numeric array, got dtype {dtype}")
    X = np.array(X, dtype=np.float64, order="C", copy=True)
    if X.ndim != 2 or X.shape[0] < 1 or not np.isfinite(X).all():
        raise ValueError(f"X must be a finite 2-D array with at least one row, got shape {X.shape}")
    if isinstance(layer, nn.Dropout) and layer.keep_prob < 1.0:
        raise ValueError("dropout layers cannot be gradient-checked (random masks); use keep_prob=1")
    old = {n: np.array(v, dtype=np.float64) for n, v in layer.params.items()}
    shapes = layer.param_shapes()
    sizes = [int(np.prod(s)) for _, s in shapes]
    theta = np.zeros(sum(sizes))
    dtheta = np.zeros_like(theta)
    params, grads, offs = {}, {}, []
    o = 0
    for (name, shape), size in zip(shapes, sizes):
        params[name] = theta[o:o + size].reshape(shape)
        grads[name] = dtheta[o:o + size].reshape(shape)
        offs.append((name, slice(o, o + size), shape))
        o += size
    layer.bind(params, grads)
    layer._bufs = {}
    if old and all(n in old and old[n].shape == params[n].shape for n in params):
        for n in params:
            params[n][...] = old[n]
    else:
        layer.reset_parameters(np.random.default_rng(seed))
    saved_track = getattr(layer, "track_running_stats", None)
    if saved_track is not None:
        layer.track_running_stats = False
    try:
        A = layer.forward(X, True)
        R = np.random.default_rng([seed, 12345]).standard_normal(A.shape)
        dA_prev = layer.backward((R.copy()).astype(A.dtype))
        g_in = np.array(dA_prev, dtype=np.float64).reshape(-1)
        g = np.concatenate([dtheta.copy(), g_in])

        def J_theta(_):
            return float((layer.forward(X, True) * R).sum())

        a_theta = numerical_gradient(J_theta, theta, eps)
        flatX = X.reshape(-1)

        def J_input(_):
            return float((layer.forward(flatX.reshape(X.shape), True) * R).sum())

        a_in = numerical_gradient(J_input, flatX, eps)
    finally:
        if saved_track is not None:
            layer.track_running_stats = saved_track
    a = np.concatenate([a_theta, a_in])
    per = {name: _difference(a_theta[sl], dtheta[sl]) for name, sl, _ in offs}
    per["input"] = _difference(a_in, g_in)
    diff = _difference(a, g)
    worst = []
    for k in np.argsort(-np.abs(a - g))[:5]:
        k = int(k)
        if k < theta.size:
            name, sl, shape = next(t for t in offs if t[1].start <= k < t[1].stop)
            index = tuple(int(v) for v in np.unravel_index(k - sl.start, shape))
        else:
            name, index = "input", tuple(int(v) for v in np.unravel_index(k - theta.size, X.shape))
        worst.append((name, index, float(g[k]), float(a[k])))
    return GradCheckResult(diff, verdict(diff), per, worst, int(a.size))
