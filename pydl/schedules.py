"""Learning-rate decay schedules.

A schedule is a callable ``sched(epoch) -> lr`` where ``epoch`` is the epoch
index ``e`` counted from 0. The built-in schedules:

- ``Constant(lr0)``:                            ``lr0``
- ``InverseTimeDecay(lr0, decay_rate)``:         ``lr0 / (1 + decay_rate * e)``
- ``ExponentialDecay(lr0, base=0.95)``:          ``lr0 * base**e``
- ``InverseSqrtDecay(lr0, k=1.0)``:              ``lr0 * k / sqrt(e + 1)``
- ``StaircaseDecay(lr0, decay_rate, interval)``: ``lr0 / (1 + decay_rate * floor(e / interval))``

with ``lr0 > 0``, ``decay_rate >= 0``, ``0 < base <= 1``, ``k > 0`` and
``interval`` an integer >= 1.

Every hyperparameter must be a finite real number (``lr0 * k`` too). Every
value a schedule returns is a finite float > 0; when the formula cannot give
one at some epoch (``lr0 * base**e`` underflows to 0 after many epochs, an
epoch too large to compute with), calling the schedule raises ``ValueError``
naming the schedule and the epoch, before the optimizer ever sees it.

Built-in schedules can be
stored as JSON (``to_dict()``) and rebuilt (``Schedule.from_dict(d)`` or the
module-level :func:`from_dict`); any other callable ``e -> lr`` is accepted
through :func:`as_schedule`, which checks each value it returns, but cannot
be saved.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

__all__ = [
    "Schedule",
    "Constant",
    "InverseTimeDecay",
    "ExponentialDecay",
    "InverseSqrtDecay",
    "StaircaseDecay",
    "FunctionSchedule",
    "as_schedule",
    "from_dict",
]


# --------------------------------------------------------------------------- validation


def _real(name: str, value: Any) -> float:
    """``value`` as a finite float, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _non_negative(name: str, value: Any) -> float:
    value = _real(name, value)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _epoch(epoch: Any) -> int:
    """The epoch index as an int: a non-negative integer (Python or NumPy)."""
    return _integer("epoch", epoch, 0)


# --------------------------------------------------------------------------- base class


class Schedule:
    """Base class: a learning rate as a function of the epoch index ``e >= 0``.

    Subclasses implement ``_lr(e)`` (``e`` already validated) and list their
    hyperparameters in ``_params``, which drives ``__repr__``, ``to_dict`` and
    equality.
    """

    _params: tuple[str, ...] = ()

    def __call__(self, epoch: int) -> float:
        e = _epoch(epoch)
        try:
            lr = float(self._lr(e))
        except OverflowError as exc:
            raise ValueError(
                f"{self!r} cannot compute the learning rate at epoch {e}: {exc}") from exc
        if lr == 0.0:
            raise ValueError(
                f"{self!r} gives a learning rate that underflows to 0.0 at epoch {e}; it decays "
                "too fast for this many epochs (use a slower decay or fewer epochs)")
        if not (math.isfinite(lr) and lr > 0.0):
            raise ValueError(
                f"{self!r} gives lr = {lr} at epoch {e}; it must be a finite number > 0")
        return lr

    def _lr(self, e: int) -> float:  # pragma: no cover - every subclass defines it
        raise TypeError(f"{type(self).__name__} is a Schedule without a formula: define _lr(e)")

    def get_config(self) -> dict[str, Any]:
        """The hyperparameters, by name."""
        return {name: getattr(self, name) for name in self._params}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description: ``{"name": <class name>, **hyperparameters}``."""
        return {"name": type(self).__name__, **self.get_config()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        """Rebuild a schedule from ``to_dict()`` output.

        Called on ``Schedule`` it dispatches on ``d["name"]``; called on a
        subclass it also checks that the name matches that subclass.
        """
        if not isinstance(d, dict):
            raise TypeError(f"schedule description must be a dict, got {type(d).__name__}")
        if "name" not in d:
            raise ValueError(f"schedule description has no 'name' key: {d!r}")
        name = d["name"]
        if not isinstance(name, str):
            raise TypeError(
                f"schedule description 'name' must be a str, got {type(name).__name__} {name!r}")
        target = _BUILTINS.get(name)
        if target is None:
            known = ", ".join(sorted(_BUILTINS))
            raise ValueError(f"unknown schedule name {name!r}; known schedules: {known}")
        if cls is not Schedule and target is not cls:
            raise ValueError(f"schedule description is a {name}, not a {cls.__name__}")
        params = {k: v for k, v in d.items() if k != "name"}
        expected = set(target._params)
        if set(params) != expected:
            raise ValueError(
                f"{name} needs exactly the keys {sorted(expected)}, got {sorted(params)}")
        return target(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.get_config().items())))


# --------------------------------------------------------------------------- built-ins


class Constant(Schedule):
    """``lr(e) = lr0`` for every epoch."""

    _params = ("lr0",)

    def __init__(self, lr0: float):
        self.lr0 = _positive("lr0", lr0)

    def _lr(self, e: int) -> float:
        return self.lr0


class InverseTimeDecay(Schedule):
    """``lr(e) = lr0 / (1 + decay_rate * e)``.

    ``decay_rate = 0`` is a constant learning rate; ``decay_rate = 1`` halves
    it after one epoch, thirds it after two, ...
    """

    _params = ("lr0", "decay_rate")

    def __init__(self, lr0: float, decay_rate: float):
        self.lr0 = _positive("lr0", lr0)
        self.decay_rate = _non_negative("decay_rate", decay_rate)

    def _lr(self, e: int) -> float:
        return self.lr0 / (1.0 + self.decay_rate * e)


class ExponentialDecay(Schedule):
    """``lr(e) = lr0 * base**e`` with ``0 < base <= 1`` (default 0.95)."""

    _params = ("lr0", "base")

    def __init__(self, lr0: float, base: float = 0.95):
        self.lr0 = _positive("lr0", lr0)
        base = _real("base", base)
        if not 0.0 < base <= 1.0:
            raise ValueError(f"base must be in (0, 1], got {base}")
        self.base = base

    def _lr(self, e: int) -> float:
        return self.lr0 * self.base ** e


class InverseSqrtDecay(Schedule):
    """``lr(e) = lr0 * k / sqrt(e + 1)`` with ``k > 0`` (default 1)."""

    _params = ("lr0", "k")

    def __init__(self, lr0: float, k: float = 1.0):
        self.lr0 = _positive("lr0", lr0)
        self.k = _positive("k", k)
        start = self.lr0 * self.k
        if not (math.isfinite(start) and start > 0.0):
            raise ValueError(
                f"lr0 * k (the learning rate at epoch 0) must be a finite number > 0, got "
                f"lr0={self.lr0!r} * k={self.k!r} = {start}")

    def _lr(self, e: int) -> float:
        return self.lr0 * self.k / math.sqrt(e + 1)


class StaircaseDecay(Schedule):
    """``lr(e) = lr0 / (1 + decay_rate * floor(e / interval))``.

    Inverse-time decay that only changes every ``interval`` epochs
    (``interval`` an integer >= 1; ``interval = 1`` is ``InverseTimeDecay``).
    """

    _params = ("lr0", "decay_rate", "interval")

    def __init__(self, lr0: float, decay_rate: float, interval: int):
        self.lr0 = _positive("lr0", lr0)
        self.decay_rate = _non_negative("decay_rate", decay_rate)
        self.interval = _integer("interval", interval, 1)

    def _lr(self, e: int) -> float:
        return self.lr0 / (1.0 + self.decay_rate * (e // self.interval))


_BUILTINS: dict[str, type[Schedule]] = {
    cls.__name__: cls
    for cls in (Constant, InverseTimeDecay, ExponentialDecay, InverseSqrtDecay, StaircaseDecay)
}


# --------------------------------------------------------------------------- user callables


class FunctionSchedule(Schedule):
    """Wraps any callable ``fn(e) -> lr``; each returned value is checked.

    The value must be a finite real number > 0, otherwise ``ValueError``
    naming the epoch. Cannot be saved: ``to_dict`` raises ``TypeError``.
    """

    def __init__(self, fn: Callable[[int], float]):
        if not callable(fn):
            raise TypeError(f"fn must be callable e -> lr, got {type(fn).__name__}")
        self.fn = fn

    def _lr(self, e: int) -> float:
        lr = self.fn(e)
        is_number = isinstance(lr, numbers.Real) and not isinstance(lr, (bool, np.bool_))
        is_0d = isinstance(lr, np.ndarray) and lr.ndim == 0 and lr.dtype.kind in "fiu"
        value = float(lr) if (is_number or is_0d) else math.nan
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(
                f"learning-rate schedule {self.fn!r} returned {lr!r} at epoch {e}; "
                "it must return a finite number > 0")
        return value

    def get_config(self) -> dict[str, Any]:
        return {"fn": self.fn}

    def to_dict(self) -> dict[str, Any]:
        known = ", ".join(sorted(_BUILTINS))
        raise TypeError(
            f"cannot save the learning-rate schedule {self.fn!r}: only built-in schedules "
            f"({known}) can be stored in a checkpoint; use one of them or save your own "
            "description")

    def __repr__(self) -> str:
        return f"FunctionSchedule({self.fn!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FunctionSchedule):
            return NotImplemented
        return self.fn == other.fn

    def __hash__(self) -> int:
        return hash(("FunctionSchedule", self.fn))


# --------------------------------------------------------------------------- entry points


def as_schedule(obj: Any) -> Schedule:
    """Turn ``obj`` into a :class:`Schedule`.

    - a real number -> ``Constant(obj)``
    - a ``Schedule`` -> itself
    - a dict (``to_dict()`` output) -> the schedule it describes
    - any other callable ``e -> lr`` -> ``FunctionSchedule(obj)``
    """
    if isinstance(obj, Schedule):
        return obj
    if isinstance(obj, bool):
        raise TypeError("a learning rate cannot be a bool")
    if isinstance(obj, numbers.Real):
        return Constant(obj)
    if isinstance(obj, dict):
        return Schedule.from_dict(obj)
    if callable(obj):
        return FunctionSchedule(obj)
    raise TypeError(
        "learning rate must be a number, a Schedule, a schedule dict or a callable e -> lr, "
        f"got {type(obj).__name__} {obj!r}")


def from_dict(d: dict[str, Any]) -> Schedule:
    """Rebuild a built-in schedule from ``Schedule.to_dict()`` output."""
    return Schedule.from_dict(d)
