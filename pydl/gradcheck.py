"""Numerical gradients and the gradient check.

Two-sided differences  approx_i = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps),
eps = 1e-7, in float64, compared with backprop's gradient by

    difference = ||approx - grad||_2 / (||approx||_2 + ||grad||_2)

< 1e-7 great, < 1e-5 acceptable, > 1e-3 almost certainly a bug. A NaN or inf in either
gradient makes the difference inf (a bug); such coordinates come first in ``worst``. The
check runs on a float64 copy of the model, with dropout refused (its random masks make J
non-smooth in theta) unless ``disable_dropout=True``, BatchNorm in training mode over the
given batch without touching running statistics (at least 2 examples: with one, every
normalized value is 0 and the output is beta exactly), and regularization included.

Kinks: where a ReLU input lies within eps of 0, the two-sided difference straddles the
kink and disagrees with backprop's one-sided derivative for no bug; a check that flags
only a few coordinates of a ReLU network at a point like that is worth repeating on
other examples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

__all__ = ["numerical_gradient", "gradient_check", "check_layer", "GradCheckResult", "verdict"]

#: the largest eps accepted: a step of 1e-2 is already far from the derivative's limit
EPS_MAX = 1e-2


def _check_eps(eps) -> float:
    """eps as a float: a real number, finite, > 0 and <= EPS_MAX (a perturbation)."""
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, Real):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    eps = float(eps)
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if eps > EPS_MAX:
        raise ValueError(f"eps must be a small perturbation <= {EPS_MAX:g} (e.g. 1e-7), got {eps!r}")
    return eps


def _check_seed(seed, allow_none: bool):
    """seed: an int >= 0 (or None when allowed), as numpy.random.default_rng takes it."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (Integral, np.integer)):
        what = "None or an int" if allow_none else "an int"
        raise TypeError(f"seed must be {what} >= 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


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

    ``theta`` (P,) float64 is perturbed in place and restored (another dtype is a
    TypeError: an integer array cannot hold theta + eps, and float32 rounds it away);
    ``eps`` is finite, > 0 and <= 1e-2; ``coordinates`` (indices) limits the entries
    computed (the others are 0). Returns (P,) float64.
    """
    if not isinstance(theta, np.ndarray) or theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D numpy array, got {getattr(theta, 'shape', type(theta).__name__)}")
    if theta.dtype != np.float64:
        raise TypeError(f"theta must be a float64 array (it is perturbed in place by eps), got "
                        f"dtype {theta.dtype}; pass theta.astype(np.float64)")
    eps = _check_eps(eps)
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
    """||a - b|| / (||a|| + ||b||); 0 when both are 0; inf when either holds a NaN or inf.

    Both are scaled by their largest magnitude first, so huge finite values do not
    overflow the norms into inf/inf = NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    a, b = a / scale, b / scale
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))


def _worst_order(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n largest |a - b|, coordinates with a NaN or inf in a or b first."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - b)
    err[~(np.isfinite(a) & np.isfinite(b))] = np.inf
    return np.argsort(-err, kind="stable")[:n]


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


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _refuse_single_example_batchnorm(layers, m: int, what: str) -> None:
    from . import nn

    if m < 2 and any(isinstance(l, nn.BatchNorm) for l in layers):
        raise ValueError(
            f"X has {m} row but {what} BatchNorm: over one example the batch variance "
            "is 0, every normalized value is 0 and the output is beta exactly (on the ReLU "
            "kink, so the check would flag beta for no bug); use at least 2 examples")


def gradient_check(model, X, y, eps: float = 1e-7, coordinates=None, seed=None,
                   disable_dropout: bool = False, n_worst: int = 5) -> GradCheckResult:
    """Compare backprop's dtheta with two-sided numerical differences of J(theta).

    Works on a float64 copy of ``model`` (a ``pydl.Sequential``; the model itself is
    untouched, running statistics included). X (m, n_in), y as the model's loss takes
    them; with BatchNorm m >= 2. ``eps`` is finite, > 0 and <= 1e-2.
    ``coordinates``: None checks every coordinate; an int k checks k coordinates sampled
    (with ``seed``, None or an int >= 0) across all parameters, for big models; or an
    index array. ``disable_dropout`` is a bool. ``worst`` lists the ``n_worst`` (an int
    >= 0) coordinates that disagree most, NaN/inf ones first.
    """
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a pydl.Sequential, got {type(model).__name__}")
    eps = _check_eps(eps)
    seed = _check_seed(seed, allow_none=True)
    disable_dropout = _check_bool(disable_dropout, "disable_dropout")
    if isinstance(n_worst, (bool, np.bool_)) or not isinstance(n_worst, (Integral, np.integer)):
        raise TypeError(f"n_worst must be an int, got {type(n_worst).__name__}")
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    m64 = _prepare_copy(model, disable_dropout)
    X = m64._check_X(X)
    y = m64._check_y(y, X.shape[0])
    _refuse_single_example_batchnorm(m64.layers, X.shape[0], "the model has")
    P = m64.theta.size
    if coordinates is None:
        idx = np.arange(P)
    elif isinstance(coordinates, (Integral, np.integer)) and not isinstance(coordinates, (bool, np.bool_)):
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
    order = _worst_order(a, g, int(n_worst))
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

    The check runs on a deep copy of ``layer`` with its own float64 parameters (its
    current values, or ``reset_parameters`` with ``seed`` if it has none yet), so the
    layer, and the model it may belong to, are left exactly as they were. A layer taken
    from a model is checked as the model runs it (e.g. with the activation the model fused
    into a Dense). ``eps`` is finite, > 0 and <= 1e-2; ``seed`` an int >= 0; a BatchNorm
    needs X with at least 2 rows.
    """
    import copy

    from . import nn

    if not isinstance(layer, nn.Layer):
        raise TypeError(f"layer must be a pydl.nn.Layer, got {type(layer).__name__}")
    eps = _check_eps(eps)
    seed = _check_seed(seed, allow_none=False)
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
    _refuse_single_example_batchnorm([layer], X.shape[0], "the layer is")
    old = {n: np.array(v, dtype=np.float64) for n, v in layer.params.items()}
    # the caller's layer keeps its parameter views (into a model's theta, say), buffers
    # and running statistics: everything below happens on a copy
    layer = copy.deepcopy(layer)
    layer.need_input_grad = True  # a model's first layer skips dA_prev; the check needs it
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
    if getattr(layer, "track_running_stats", None) is not None:
        layer.track_running_stats = False
    A = layer.forward(X, True)
    R = np.random.default_rng([seed, 12345]).standard_normal(A.shape)
    dA_prev = layer.backward((R.copy()).astype(A.dtype))
    g_in = np.array(dA_prev, dtype=np.float64).reshape(-1)
    g = np.concatenate([dtheta.copy(), g_in])

    # J includes the layer's own penalty (Dense's L2/L1), which its backward adds to dW
    penalty = getattr(layer, "penalty", None)
    m = X.shape[0]

    def J_theta(_):
        J = float((layer.forward(X, True) * R).sum())
        return J + float(penalty(m)) if penalty is not None else J

    flatX = X.reshape(-1)

    def J_input(_):
        return float((layer.forward(flatX.reshape(X.shape), True) * R).sum())

    a_theta = numerical_gradient(J_theta, theta, eps)
    a_in = numerical_gradient(J_input, flatX, eps)
    a = np.concatenate([a_theta, a_in])
    per = {name: _difference(a_theta[sl], dtheta[sl]) for name, sl, _ in offs}
    per["input"] = _difference(a_in, g_in)
    diff = _difference(a, g)
    worst = []
    for k in _worst_order(a, g, 5):
        k = int(k)
        if k < theta.size:
            name, sl, shape = next(t for t in offs if t[1].start <= k < t[1].stop)
            index = tuple(int(v) for v in np.unravel_index(k - sl.start, shape))
        else:
            name, index = "input", tuple(int(v) for v in np.unravel_index(k - theta.size, X.shape))
        worst.append((name, index, float(g[k]), float(a[k])))
    return GradCheckResult(diff, verdict(diff), per, worst, int(a.size))
