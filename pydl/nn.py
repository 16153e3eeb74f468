"""Layers: ``Dense``, ``BatchNorm``, ``Dropout`` and the activations ``ReLU``,
``LeakyReLU``, ``Tanh``, ``Sigmoid``.

A layer holds its parameters (views into the model's flat ``theta``) and gradients
(views into ``dtheta``), ``forward(A_prev, training)`` which keeps what backward needs,
and ``backward(dA)`` which returns ``dA_prev`` and fills its gradient views. ``dA`` is
scratch: backward may overwrite it. Output buffers are allocated once per batch size
and reused, so a training step allocates nothing.

Rows are examples: activations are (m, n).

When a ``Sequential`` model finds an activation right after a ``Dense`` or
``BatchNorm``, it fuses it into that layer's kernel (``layer.activation``) and skips
the activation layer; used on its own, every layer also works unfused.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from . import init as _init
from . import ops

__all__ = ["Layer", "Dense", "BatchNorm", "Dropout", "Activation", "ReLU", "LeakyReLU", "Tanh",
           "Sigmoid", "layer_from_config"]


#: the smallest normal float64; BatchNorm's eps must be at least this
_TINY = float(np.finfo(np.float64).tiny)


def _float(name: str, value) -> float:
    """float(value) for a real number, raising a ValueError naming the argument for an
    integer beyond the float range (instead of OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got an integer too large for a float") from None


_MAX_WIDTH = 2**31 - 1  # the kernels' dimensions are C ints


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r:.60}")
    if int(value) > _MAX_WIDTH:
        raise ValueError(f"{name} must be a positive integer (at most 2**31 - 1), got {value!r:.60}")
    return int(value)


def _nonneg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)) \
            or not math.isfinite(_float(name, value)) or float(value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def assign_in_place(view: np.ndarray, value, name: str) -> None:
    """view[...] = value for a parameter or gradient that is a view into a model's theta or
    dtheta: rebinding the name to a new array would leave the model and its optimizer on
    the old one. value: real numbers of view's shape, finite once cast to view's dtype."""
    if value is view:  # model.theta *= 2 assigns theta to itself
        return
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of shape {view.shape}: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != view.shape:
        raise ValueError(f"{name} must have shape {view.shape}, got {arr.shape}")
    with np.errstate(over="ignore"):
        cast = arr.astype(view.dtype)
    if not np.isfinite(cast).all():
        raise ValueError(f"{name} must be finite in {view.dtype} (NaN, inf, or a value too large "
                         f"for {view.dtype})")
    view[...] = cast


def _check_param_names(layer, where: str = "") -> None:
    """``layer.param_shapes()`` names are non-empty strings without a leading underscore (a
    layer's private attributes are its cached arrays: set directly, never bound, dropped
    from a model's copies); raises ValueError naming the layer otherwise."""
    for name, _ in layer.param_shapes():
        if not isinstance(name, str) or not name or name[0] == "_":
            raise ValueError(f"{where}{type(layer).__name__}: param_shapes() names must be "
                             f"non-empty strings without a leading underscore, got {name!r}")


class Layer:
    """Base class. Subclasses with parameters list them in ``param_shapes()``.

    ``forward(A_prev, training)`` may keep a reference to ``A_prev`` (Dense and BatchNorm
    do): leave it unchanged until the matching ``backward``.
    """

    #: widths; None for layers that keep the width of their input
    n_in: int | None = None
    n_out: int | None = None

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.need_input_grad = True
        self._bufs: dict[str, np.ndarray] = {}

    # --- parameters -------------------------------------------------------------
    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every trainable parameter, in theta order. Names are public
        (no leading underscore: a layer's private attributes are its cached arrays)."""
        return []

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (e.g. BatchNorm running stats)."""
        return {}

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Point the layer's parameters and gradients at views of theta/dtheta; raises
        ValueError for a ``param_shapes()`` name that cannot be a parameter."""
        _check_param_names(self)
        self.params, self.grads = params, grads
        for name, view in params.items():
            object.__setattr__(self, name, view)
        for name, view in grads.items():
            object.__setattr__(self, "d" + name, view)

    def __setattr__(self, name: str, value) -> None:
        """``layer.W = array`` (or b, gamma, beta, dW, ...) once bound copies into the view
        (assign_in_place), so that the model, its theta and its optimizer stay one. Private
        names (a forward's kept arrays) are never parameters: set directly."""
        if name[:1] == "_":
            object.__setattr__(self, name, value)
            return
        bound = self.__dict__.get("params", {}).get(name)
        if bound is None and name[:1] == "d":
            bound = self.__dict__.get("grads", {}).get(name[1:])
        if bound is None or value is bound:
            object.__setattr__(self, name, value)
        else:
            assign_in_place(bound, value, name)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Initialize the bound parameters in place."""

    def _standalone(self, dtype) -> None:
        """Give a layer used outside a model its own parameter storage."""
        if self.params or not self.param_shapes():
            return
        params = {n: np.zeros(s, dtype) for n, s in self.param_shapes()}
        grads = {n: np.zeros(s, dtype) for n, s in self.param_shapes()}
        self.bind(params, grads)
        self.reset_parameters(np.random.default_rng(0))

    def _check_input(self, A_prev) -> None:
        """A_prev must be a float32/float64 array (m, n_in), m >= 1; raises naming it."""
        if not isinstance(A_prev, np.ndarray):
            raise TypeError(f"A_prev must be a numpy array, got {type(A_prev).__name__}")
        if A_prev.ndim != 2:
            raise ValueError(f"A_prev must be 2-D (m, n), got shape {A_prev.shape}")
        if A_prev.dtype != np.float32 and A_prev.dtype != np.float64:
            raise TypeError(f"A_prev must be float32 or float64, got {A_prev.dtype}")
        if A_prev.shape[0] == 0:
            raise ValueError("A_prev is empty (0 rows)")
        if self.n_in is not None and A_prev.shape[1] != self.n_in:
            raise ValueError(f"A_prev has {A_prev.shape[1]} features but the layer expects {self.n_in}")

    def _check_dtype(self, A_prev, dtype) -> None:
        """A_prev must have the dtype of the layer's parameters (fixed by the model, or by
        the first forward of a layer used on its own); raises naming A_prev."""
        if A_prev.dtype != dtype:
            raise TypeError(f"A_prev has dtype {A_prev.dtype} but this {type(self).__name__} layer's "
                            f"parameters are {np.dtype(dtype)}; pass {np.dtype(dtype)} input")

    def _check_dA(self, dA, out) -> None:
        """backward's checks: ``out``, the output kept by the last forward (None before a
        training-mode one), exists, and dA is an array of its shape and dtype."""
        if out is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a training-mode forward first: "
                               "call forward(A_prev, training=True), then backward(dA)")
        if not isinstance(dA, np.ndarray):
            raise TypeError(f"dA must be a numpy array, got {type(dA).__name__}")
        if dA.shape != out.shape:
            raise ValueError(f"dA must have the shape of the forward output {out.shape}, got {dA.shape}")
        if dA.dtype != out.dtype:
            raise TypeError(f"dA must have the dtype of the forward output ({out.dtype}), got {dA.dtype}")

    def _buf(self, name: str, m: int, n: int, dtype, training: bool = True) -> np.ndarray:
        """A reusable (m, n) scratch array (grown, never shrunk) for training; a new one for
        evaluation (``training`` False), so that predictions made from several Python
        threads at once on one model never share an array."""
        if not training:
            return np.empty((m, n), dtype=dtype)
        b = self._bufs.get(name)
        if b is None or b.shape[0] < m or b.shape[1] != n or b.dtype != dtype:
            b = np.empty((m, n), dtype=dtype)
            self._bufs[name] = b
        return b[:m] if b.shape[0] != m else b

    # Subclasses define forward(A_prev, training=False) -> A and backward(dA) -> dA_prev.

    def config(self) -> dict:
        """JSON-able constructor arguments (the architecture saved with a model)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: Z = A_prev @ W.T + b, (m, n_out).

    W (n_out, n_in), b (n_out,) (absent with ``use_bias=False``, e.g. before BatchNorm).
    ``init``: "auto" (He before ReLU-family activations, Xavier otherwise), "he",
    "xavier", "glorot", "random" or "zeros", times ``scale``.
    ``l2``: adds lambda/(2m) ||W||_F^2 to the cost and (lambda/m) W to dW;
    ``l1``: adds lambda/(2m) sum |W| and lambda/(2m) sign(W). Biases are never penalized.
    """

    _A = None   # the output kept by forward for backward; None before a forward

    def __init__(self, n_in: int, n_out: int, init: str = "auto", use_bias: bool = True,
                 l2: float = 0.0, l1: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.n_in = _positive_int("n_in", n_in)
        self.n_out = _positive_int("n_out", n_out)
        _init.check_init(init, scale)
        self.init, self.scale = init, float(scale)
        self.use_bias = bool(use_bias)
        self.l2, self.l1 = _nonneg("l2", l2), _nonneg("l1", l1)
        self.activation, self.alpha = "identity", 0.0   # set when a model fuses one
        self.resolved_init = "xavier" if init == "auto" else init
        self.b = self.db = None

    def param_shapes(self):
        shapes = [("W", (self.n_out, self.n_in))]
        if self.use_bias:
            shapes.append(("b", (self.n_out,)))
        return shapes

    def reset_parameters(self, rng):
        self.W[...] = _init.initialize(self.resolved_init, (self.n_out, self.n_in), rng,
                                       self.scale, self.W.dtype)
        if self.use_bias:
            self.b[...] = 0

    def forward(self, A_prev, training=False, batch_invariant=False):
        """A = g(A_prev @ W.T + b), g the fused activation (identity by default).

        ``batch_invariant=True``: each row of A depends on its row of A_prev alone, bit for
        bit (``ops.dense_forward``), at some cost in speed."""
        self._check_input(A_prev)
        self._standalone(A_prev.dtype)
        self._check_dtype(A_prev, self.W.dtype)
        A = self._buf("A", A_prev.shape[0], self.n_out, self.W.dtype, training)
        ops.dense_forward(A, A_prev, self.W, self.b, self.activation, self.alpha,
                          batch_invariant=batch_invariant)
        self._A_prev, self._A = A_prev, A
        return A

    def backward(self, dA):
        """dZ = dA*g'(A) (in dA); dW = dZ.T @ A_prev + reg; db = sum dZ; returns dZ @ W."""
        self._check_dA(dA, self._A)
        m = dA.shape[0]
        dA_prev = self._buf("dA_prev", m, self.n_in, dA.dtype) if self.need_input_grad else None
        ops.dense_backward(dA_prev, self.dW, self.db, dA, self._A, self._A_prev, self.W,
                           self.activation, self.alpha, self.l2, self.l1)
        return dA_prev

    def penalty(self, m: int) -> float:
        """lambda2/(2m) ||W||_F^2 + lambda1/(2m) sum |W| (0 without regularization)."""
        if self.l2 == 0.0 and self.l1 == 0.0:
            return 0.0
        return ops.weight_penalty(self.W, self.l2, self.l1, m)

    def config(self):
        return {"n_in": self.n_in, "n_out": self.n_out, "init": self.init,
                "use_bias": self.use_bias, "l2": self.l2, "l1": self.l1, "scale": self.scale}


class BatchNorm(Layer):
    """Batch normalization of Z (before the activation), per feature over the batch.

    Training: mu, biased var over the batch; Z_norm = (Z - mu)/sqrt(var + eps);
    out = gamma * Z_norm + beta, (m, n). Running estimates for evaluation are EWAs:
    running = momentum*running + (1-momentum)*batch (unbiased variance for running_var).
    Evaluation uses the running estimates, so a row is predicted the same alone or in a batch.
    ``track_running_stats=False``: training forwards leave the running estimates as they are.
    """

    _out = None   # the output kept by a training-mode forward for backward; None otherwise

    def __init__(self, n: int, momentum: float = 0.9, eps: float = 1e-5,
                 track_running_stats: bool = True):
        super().__init__()
        self.n_in = self.n_out = _positive_int("n", n)
        m = _float("momentum", momentum) if isinstance(momentum, (Real, np.floating)) and not isinstance(momentum, bool) else math.nan
        if not (0.0 <= m < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        e = _float("eps", eps) if isinstance(eps, (Real, np.floating)) and not isinstance(eps, bool) else math.nan
        if not (e > 0.0 and math.isfinite(e)):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        if e < _TINY:
            raise ValueError(f"eps must be at least {_TINY!r} (the smallest normal float64), got {eps!r}")
        self.momentum, self.eps = m, e
        if not isinstance(track_running_stats, (bool, np.bool_)):
            raise TypeError(f"track_running_stats must be a bool, got {track_running_stats!r}")
        self.activation, self.alpha = "identity", 0.0
        self.track_running_stats = bool(track_running_stats)
        self.running_mean = np.zeros(self.n_in, np.float32)
        self.running_var = np.ones(self.n_in, np.float32)

    def param_shapes(self):
        return [("gamma", (self.n_in,)), ("beta", (self.n_in,))]

    def reset_parameters(self, rng):
        self.gamma[...] = 1
        self.beta[...] = 0
        self.running_mean = np.zeros(self.n_in, self.gamma.dtype)
        self.running_var = np.ones(self.n_in, self.gamma.dtype)

    def state_arrays(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forward(self, A_prev, training=False):
        self._check_input(A_prev)
        self._standalone(A_prev.dtype)
        m, n = A_prev.shape[0], self.n_in
        dt = self.gamma.dtype
        self._check_dtype(A_prev, dt)
        out = self._buf("out", m, n, dt, training)
        if training:
            if m < 2:
                raise ValueError(
                    "A_prev has 1 row, but BatchNorm in training mode needs at least 2: over "
                    "one example the batch variance is 0, the output is beta and the gradient "
                    "into the layers before it is 0")
            if "mean" not in self._bufs or self._bufs["mean"].dtype != dt:
                self._bufs["mean"] = np.empty(n, dt)
                self._bufs["invstd"] = np.empty(n, dt)
            self._mean, self._invstd = self._bufs["mean"], self._bufs["invstd"]
            rm, rv = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
            ops.batchnorm_forward_train(out, self._mean, self._invstd, rm, rv, A_prev,
                                        self.gamma, self.beta, self.momentum, self.eps,
                                        self.activation, self.alpha)
            # backward recomputes xhat from the input (which stays unchanged until then)
            self._Z, self._out = A_prev, out
        else:
            self._out = None  # no batch statistics: nothing for backward
            ops.batchnorm_forward_eval(out, A_prev, self.gamma, self.beta, self.running_mean,
                                       self.running_var, self.eps, self.activation, self.alpha)
        return out

    def backward(self, dA):
        """dZ = gamma*invstd/m (m*g - sum g - xhat*sum(g*xhat)), g = dA*g'(out); in place."""
        self._check_dA(dA, self._out)
        ops.batchnorm_backward(dA, self.dgamma, self.dbeta, dA, self._out, self._Z, self.gamma,
                               self._mean, self._invstd, self.activation, self.alpha)
        return dA

    def config(self):
        return {"n": self.n_in, "momentum": self.momentum, "eps": self.eps,
                "track_running_stats": self.track_running_stats}


class Dropout(Layer):
    """Inverted dropout: D = U[0,1) < keep_prob, A = A_prev * D / keep_prob in training;
    the identity in evaluation. Give exactly one of ``keep_prob`` or ``rate`` (= 1 - keep_prob).

    Masks come from a counter-based generator keyed by (seed, step, layer index), set by
    the model, so they do not depend on the thread count and backward regenerates them.
    """

    _out = None   # the last forward's output (its shape and dtype); None before a forward

    def __init__(self, keep_prob: float | None = None, rate: float | None = None):
        super().__init__()
        if (keep_prob is None) == (rate is None):
            raise ValueError("give exactly one of keep_prob and rate (rate = 1 - keep_prob)")
        name, value = ("keep_prob", keep_prob) if rate is None else ("rate", rate)
        if isinstance(value, bool) or not isinstance(value, (Real, np.floating)) or not math.isfinite(_float(name, value)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        kp = float(value) if rate is None else 1.0 - float(value)
        if not (0.0 < kp <= 1.0):
            raise ValueError(("keep_prob must be in (0, 1]" if rate is None else "rate must be in [0, 1)")
                             + f", got {value!r}")
        self.keep_prob = kp
        self.seed, self.index, self.step = 0, 0, 0

    def forward(self, A_prev, training=False):
        self._check_input(A_prev)
        if not training or self.keep_prob == 1.0:
            self._identity, self._out = True, A_prev
            return A_prev
        self._identity = False
        out = self._out = self._buf("out", A_prev.shape[0], A_prev.shape[1], A_prev.dtype)
        ops.dropout_forward(out, A_prev, self.seed, self.step, self.index, self.keep_prob)
        return out

    def backward(self, dA):
        self._check_dA(dA, self._out)
        if self._identity:
            return dA
        ops.dropout_backward(dA, dA, self.seed, self.step, self.index, self.keep_prob)
        return dA

    def config(self):
        return {"keep_prob": self.keep_prob}


class Activation(Layer):
    """Elementwise A = g(Z); backward dZ = dA * g'(Z) computed from A."""

    name = "identity"
    _out = None   # the output kept by forward for backward; None before a forward

    def __init__(self):
        super().__init__()
        self.alpha = 0.0

    def forward(self, A_prev, training=False):
        self._check_input(A_prev)
        out = self._buf("out", A_prev.shape[0], A_prev.shape[1], A_prev.dtype, training)
        ops.activation_forward(out, A_prev, self.name, self.alpha)
        self._out = out
        return out

    def backward(self, dA):
        self._check_dA(dA, self._out)
        ops.activation_backward(dA, dA, self._out, self.name, self.alpha)
        return dA


class ReLU(Activation):
    """A = max(Z, 0)."""
    name = "relu"


class LeakyReLU(Activation):
    """A = Z if Z > 0 else alpha*Z, alpha in (0, 1)."""
    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (Real, np.floating)) or not (0.0 < _float("alpha", alpha) < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)

    def config(self):
        return {"alpha": self.alpha}


class Tanh(Activation):
    """A = tanh(Z)."""
    name = "tanh"


class Sigmoid(Activation):
    """A = 1 / (1 + exp(-Z))."""
    name = "sigmoid"


_LAYER_TYPES = {cls.__name__: cls for cls in (Dense, BatchNorm, Dropout, ReLU, LeakyReLU, Tanh, Sigmoid)}


def layer_from_config(d: dict) -> Layer:
    """Rebuild a built-in layer from ``{"type": name, "config": {...}}``."""
    if not isinstance(d, dict) or d.get("type") not in _LAYER_TYPES or not isinstance(d.get("config"), dict):
        raise ValueError(f"unknown layer description {d!r}")
    try:
        return _LAYER_TYPES[d["type"]](**d["config"])
    except TypeError as e:
        raise ValueError(f"bad arguments for layer {d['type']}: {e}") from None
