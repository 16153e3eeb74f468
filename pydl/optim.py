"""Optimizers over a model's flat parameter vector ``theta`` and gradient ``dtheta``.

Each ``step(model)`` is one fused kernel pass over the whole vector. ``model`` is
anything with ``theta`` and ``dtheta`` arrays of the same length and dtype. The
learning rate ``lr`` may be set by hand between steps. State (moments, step count)
lives in flat arrays matching theta and round-trips through ``state_dict()`` /
``load_state_dict()``. A step applied to a ``pydl.Sequential`` also advances its
``model.step``, the count of updates that keys the dropout masks, so each mini-batch of a
hand-written loop gets fresh masks, as under ``fit``.
"""
from __future__ import annotations

import inspect
import math
from numbers import Integral, Real

import numpy as np

from . import ops
from .model import Sequential

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "get_optimizer", "minimize",
           "OPTIMIZERS"]


#: the smallest normal float64: the native step counts smaller values (subnormals) as 0
_TINY = float(np.finfo(np.float64).tiny)


def _bound(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    """The range a hyperparameter must lie in, as error messages say it: "in [0.0, 1.0)",
    or "> 0.0" without an upper end."""
    if hi == math.inf:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(v: float, lo: float, hi: float, lo_open: bool, hi_open: bool) -> bool:
    """v is finite and within the range _bound describes."""
    return math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def _hyper(name: str, value, lo: float, hi: float = math.inf, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got an integer too large for a float") from None
    if not _in_range(v, lo, hi, lo_open, hi_open):
        raise ValueError(f"{name} must be a finite number {_bound(lo, hi, lo_open, hi_open)}, "
                         f"got {value!r}")
    return v


def _eps(value) -> float:
    """eps of RMSprop and Adam: a normal float64 > 0. The step counts a subnormal eps as 0,
    and a zero gradient would then give 0/0 = NaN."""
    eps = _hyper("eps", value, 0.0, lo_open=True)
    if eps < _TINY:
        raise ValueError(f"eps must be at least {_TINY!r} (the smallest normal float64; the "
                         f"optimizer step counts smaller values as 0), got {value!r}")
    return eps


class Optimizer:
    """Base optimizer: validates ``lr`` and ``weight_decay`` and keeps the step count t."""

    _state_names: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = lr
        self.weight_decay = _hyper("weight_decay", weight_decay, 0.0)
        self.t = 0
        self.state: dict[str, np.ndarray] = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _hyper("lr", value, 0.0, lo_open=True)

    def _buffers(self, theta: np.ndarray) -> list[np.ndarray]:
        st = self.state
        first = st.get(self._state_names[0]) if self._state_names else None
        if self._state_names and (first is None or first.shape != theta.shape or first.dtype != theta.dtype):
            if first is not None and self.t > 0:
                raise ValueError(f"optimizer state has {first.size} {first.dtype} entries but theta "
                                 f"has {theta.size} {theta.dtype}; use a new optimizer for this model")
            for name in self._state_names:
                st[name] = np.zeros_like(theta)
        return [st[n] for n in self._state_names]

    def step(self, model) -> None:
        """Update model.theta in place from model.dtheta; for a ``pydl.Sequential``, then
        advance ``model.step`` (which keys the dropout masks) by one.

        An update that would make theta or the optimizer's state non-finite (NaN or inf,
        or beyond half the dtype's largest value) is not applied: the step raises
        ``FloatingPointError`` and leaves theta, the state, the step count t and
        ``model.step`` as they were
        (the kernel computes the update once without storing it, then again to store it).
        So does an error raised before the kernel runs (an eps below float32's normal range
        for float32 parameters: ValueError).
        """
        created = self._state_names and self._state_names[0] not in self.state
        bufs = self._buffers(model.theta)
        self.t += 1

        def undo():  # as before this step
            self.t -= 1
            if created:  # no state yet
                self.state = {}

        try:  # an argument the kernel refuses (an eps float32 cannot hold) changes nothing
            finite = self._update(model.theta, model.dtheta, bufs)
        except Exception:  # (not an interrupt: the kernel may have stored the update by then)
            undo()
            raise
        if not isinstance(finite, (bool, np.bool_)):
            undo()
            raise TypeError(f"{type(self).__name__}._update must return whether every new value "
                            f"is finite (a bool; check=True in pydl.ops), got {type(finite).__name__}")
        if finite:
            if isinstance(model, Sequential):
                model.step += 1
            return
        undo()
        raise FloatingPointError(
            f"{type(self).__name__} step {self.t + 1}: the update would make the parameters or "
            f"the optimizer's state non-finite (lr={self.lr:g}); it was not applied. Lower the "
            "learning rate or check the gradient for NaN/inf.")

    def _update(self, theta, grad, bufs) -> bool:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} does not define an update")

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict:
        """{"type", "hyperparameters", "t", "arrays": {name: array}} (copies)."""
        return {"type": type(self).__name__, "hyperparameters": self.hyperparameters(),
                "t": self.t, "arrays": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, d: dict) -> None:
        """Restore a state saved by ``state_dict`` (validated; a refused one changes
        nothing): the step count t, the state arrays, and the hyperparameters it holds
        (lr, betas, eps, ...: the moments were built with them; set lr after loading to
        change it)."""
        if not isinstance(d, dict):
            raise TypeError(f"optimizer state must be a dict from state_dict(), got {type(d).__name__}")
        if d.get("type") != type(self).__name__:
            raise ValueError(f"state is for optimizer {d.get('type')!r}, not {type(self).__name__}")
        t = d.get("t")
        if isinstance(t, bool) or not isinstance(t, (Integral, np.integer)) or int(t) < 0:
            raise ValueError(f"optimizer step count t must be an integer >= 0, got {t!r}")
        arrays = d.get("arrays", {})
        if not isinstance(arrays, dict):
            raise TypeError(f"optimizer state arrays must be a dict of name: array, got {type(arrays).__name__}")
        for k, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                what = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(f"optimizer state array {k!r} must be a float numpy array, got {what}")
        if (int(t) > 0 or arrays) and set(arrays) != set(self._state_names):
            raise ValueError(f"optimizer state needs arrays {list(self._state_names)}, got {sorted(map(str, arrays))}")
        kinds = {(a.shape, a.dtype) for a in arrays.values()}
        if len(kinds) > 1 or any(a.ndim != 1 or not np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("optimizer state arrays must be finite 1-D arrays of one length and dtype")
        hyper = d.get("hyperparameters", {})
        if not isinstance(hyper, dict):
            raise TypeError(f"optimizer hyperparameters must be a dict, got {type(hyper).__name__}")
        unknown = sorted(map(str, set(hyper) - set(self.hyperparameters())))
        if unknown:
            raise ValueError(f"bad optimizer hyperparameters: {type(self).__name__} has no {unknown}")
        values = dict(hyper)
        if type(self) in OPTIMIZERS.values():  # the constructor's checks, naming a bad value
            try:
                checked = type(self)(**{**self.hyperparameters(), **hyper})
            except TypeError as e:
                raise ValueError(f"bad optimizer hyperparameters: {e}") from None
            values = {k: getattr(checked, k) for k in hyper}
        self.t = int(t)
        self.state = {k: np.array(v, copy=True) for k, v in arrays.items()}
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_state_dict(cls, d: dict) -> "Optimizer":
        if not isinstance(d, dict):
            raise TypeError(f"optimizer state must be a dict from state_dict(), got {type(d).__name__}")
        name = d.get("type")
        opt_cls = OPTIMIZERS.get(name) if isinstance(name, str) else None
        if opt_cls is None:
            raise ValueError(f"unknown optimizer type {name!r}; expected one of {sorted(OPTIMIZERS)}")
        hyper = d.get("hyperparameters", {})
        if not isinstance(hyper, dict):
            raise TypeError(f"optimizer hyperparameters must be a dict, got {type(hyper).__name__}")
        try:
            opt = opt_cls(**hyper)
        except TypeError as e:
            raise ValueError(f"bad optimizer hyperparameters: {e}") from None
        opt.load_state_dict(d)
        return opt

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Gradient descent: theta -= lr * (g + weight_decay * theta)."""

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)

    def _update(self, theta, grad, bufs):
        return ops.sgd_step(theta, grad, self.lr, self.weight_decay, check=True)


class Momentum(Optimizer):
    """Gradient descent with momentum (EWA of gradients):

    v = beta v + (1 - beta) g;  theta -= lr v.
    With ``nesterov=True``: theta -= lr (beta v + (1 - beta) g) using the new v.
    """

    _state_names = ("v",)

    def __init__(self, lr: float = 0.01, beta: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta = _hyper("beta", beta, 0.0, 1.0, hi_open=True)
        self.nesterov = ops._bool("nesterov", nesterov)

    def _update(self, theta, grad, bufs):
        return ops.momentum_step(theta, bufs[0], grad, self.lr, self.beta, self.nesterov,
                                 self.weight_decay, check=True)

    def hyperparameters(self):
        return {"lr": self.lr, "beta": self.beta, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop: s = beta s + (1 - beta) g^2;  theta -= lr g / (sqrt(s) + eps)."""

    _state_names = ("s",)

    def __init__(self, lr: float = 0.001, beta: float = 0.9, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta = _hyper("beta", beta, 0.0, 1.0, hi_open=True)
        self.eps = _eps(eps)

    def _update(self, theta, grad, bufs):
        return ops.rmsprop_step(theta, bufs[0], grad, self.lr, self.beta, self.eps,
                                self.weight_decay, check=True)

    def hyperparameters(self):
        return {"lr": self.lr, "beta": self.beta, "eps": self.eps, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam with bias correction, t counting steps from 1:

    v = b1 v + (1-b1) g;  s = b2 s + (1-b2) g^2;  vhat = v/(1-b1^t);  shat = s/(1-b2^t);
    theta -= lr vhat / (sqrt(shat) + eps).
    ``weight_decay`` adds weight_decay*theta to g (L2); with ``decoupled=True`` it is
    AdamW instead: theta -= lr * weight_decay * theta, outside the moments.
    """

    _state_names = ("v", "s")

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(lr, weight_decay)
        self.beta1 = _hyper("beta1", beta1, 0.0, 1.0, hi_open=True)
        self.beta2 = _hyper("beta2", beta2, 0.0, 1.0, hi_open=True)
        self.eps = _eps(eps)
        self.decoupled = ops._bool("decoupled", decoupled)

    def _update(self, theta, grad, bufs):
        return ops.adam_step(theta, bufs[0], bufs[1], grad, self.lr, self.beta1, self.beta2,
                             self.eps, self.t, self.weight_decay, self.decoupled, check=True)

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled": self.decoupled}


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Momentum, RMSprop, Adam)}
_ALIASES = {"sgd": SGD, "gd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam}


def get_optimizer(name_or_opt, **kwargs) -> Optimizer:
    """An optimizer instance from a name ("sgd", "momentum", "rmsprop", "adam") and kwargs."""
    if isinstance(name_or_opt, Optimizer):
        return name_or_opt
    cls = _ALIASES.get(str(name_or_opt).lower()) if isinstance(name_or_opt, str) else None
    if cls is None:
        raise ValueError(f"optimizer must be an Optimizer or one of {sorted(_ALIASES)}, got {name_or_opt!r}")
    known = [p for p in inspect.signature(cls).parameters]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"{cls.__name__} takes no argument {', '.join(map(repr, unknown))}; its "
                        f"arguments are {', '.join(known)}")
    return cls(**kwargs)


class _Point:
    """theta/dtheta holder so optimizers can minimize a plain function."""

    def __init__(self, x: np.ndarray):
        self.theta = x
        self.dtheta = np.zeros_like(x)


def minimize(f, x0, optimizer: Optimizer, steps: int, grad=None):
    """Minimize f(w) from x0 with ``optimizer`` for ``steps`` steps; returns w (float64).

    ``grad(w)`` gives the gradient; when None a two-sided numerical gradient
    (f(w + eps e_i) - f(w - eps e_i)) / (2 eps) is used. Example: f(w) = w**2 - 10*w + 25
    from 0 lands on 5.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a pydl.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (Integral, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not callable(f):
        raise TypeError("f must be callable")
    scalar = np.ndim(x0) == 0
    x = np.array(x0, dtype=np.float64).reshape(-1).copy()
    if not np.isfinite(x).all():
        raise ValueError("x0 must be finite")
    shape = np.shape(x0)
    point = _Point(x)

    def as_input(w):
        return float(w[0]) if scalar else w.reshape(shape)

    if grad is None:
        from .gradcheck import numerical_gradient

        def gradient(w):
            return numerical_gradient(lambda v: float(f(as_input(v))), w, eps=1e-6)
    else:
        def gradient(w):
            return np.asarray(grad(as_input(w)), dtype=np.float64).reshape(-1)

    for _ in range(int(steps)):
        g = gradient(point.theta)
        if g.shape != point.theta.shape:
            raise ValueError(f"grad returned shape {g.shape}, expected {point.theta.shape}")
        if not np.isfinite(g).all():
            raise FloatingPointError("the gradient became non-finite; lower the learning rate")
        point.dtheta[...] = g
        optimizer.step(point)  # FloatingPointError for an update that would be non-finite
    return as_input(point.theta) if scalar else point.theta.reshape(shape)
