"""Hyperparameter search: search spaces, random/grid search, coarse-to-fine,
successive halving and Hyperband, run in-process, in worker processes or on a
Dask cluster, with a crash-safe journal.

Search spaces
-------------
A space is a non-empty ``dict`` mapping a hyperparameter name to a
distribution or to a constant (anything without a ``sample``/``rvs`` method,
passed through unchanged). With ``U(lo, hi)`` a uniform draw:

- ``uniform(a, b)``:              ``x = U(a, b)``
- ``loguniform(a, b)``:           ``r = U(log10 a, log10 b)``, ``x = 10**r``
  (each decade gets the same share of draws; ``0 < a < b``)
- ``one_minus_loguniform(a, b)``: ``r = U(log10(1-b), log10(1-a))``,
  ``x = 1 - 10**r`` (for betas near 1: ``1 - x`` is log-uniform; ``a < b < 1``)
- ``randint(a, b)``:              an integer in ``{a, ..., b}``, both ends included
- ``choice([v1, v2, ...])``:      one of the options, each with probability ``1/k``
- any object with ``.rvs(random_state=...)``, e.g. ``scipy.stats.loguniform(1e-4, 1)``

Searches
--------
- :func:`random_search`: ``n_trials`` independent draws from the space.
- :func:`grid_search`: the Cartesian product of value lists (for comparison:
  with the same budget, random search tries many more distinct values of the
  one hyperparameter that matters).
- :func:`coarse_to_fine`: rounds of random search, each in a box shrunk
  around the best trials of the previous round.
- :func:`successive_halving` / :func:`hyperband`: many configurations on a
  small budget, the best ``1/eta`` promoted to ``eta`` times the budget.

The objective receives a ``dict`` of parameters and returns a number or a
dict of metrics containing ``metric`` (default ``"dev_loss"``). A trial that
raises or returns a non-finite metric is recorded as failed and the search
goes on.

Parallelism: ``n_jobs=k`` runs trials in ``k`` worker processes (started with
"forkserver" where available, else "spawn", so OpenMP and BLAS thread pools
are never forked); each worker is limited to ``threads_per_worker`` threads.
The workers are kept for the next search with the same ``n_jobs`` and
``threads_per_worker`` (see :func:`shutdown_workers`; idle ones exit after 5
minutes). A worker that dies (killed, e.g. out of memory) fails the trials the
workers were running then (at most ``k``; not journaled, so a resumed search
runs them again), and new workers run the rest. Workers that cannot start
(their thread limits fail) or cannot load the objective end the search with
an error that says why. Ctrl-C stops the workers.
``executor=`` takes any ``concurrent.futures.Executor``, e.g. Dask's
``Client.get_executor()`` (not the ``Client`` itself). With processes, the
objective must be picklable: a module-level function (or a ``functools.partial``
of one) defined in an importable module or in a script guarded by
``if __name__ == "__main__":``; lambdas and closures work inline (``n_jobs=1``)
and on an executor, not with ``n_jobs > 1``; nor do functions defined in a
notebook (move them to a .py module). An executor other than a
``ThreadPoolExecutor`` gets the objective pickled (with cloudpickle where it is
installed, as Dask's workers would), once per search, and each trial runs a copy:
side effects on the caller's objects are not seen, and data the objective
captures travels with every trial (load it in the objective instead). Workers
that cannot load the objective (its module is not importable there) end the
search with an error that says why. Every trial is a
new task: an executor that caches results by arguments (Dask's pure calls) never
hands back a result, or a failure, of an earlier search. An executor shut down
during a search (or its client closed) ends it with an error; the trials
finished by then are in the journal.

Journal: ``journal="search.jsonl"`` appends one JSON line per finished trial,
flushed and fsync'd as it completes. Running the same search again with the
same journal skips every trial already recorded, so killing the process
loses no finished trial. A search holds its journal's lock while it runs (POSIX):
a second search on the same journal is refused instead of repeating its trials.
"""
from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import contextlib
import csv
import io
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import numbers
import operator
import os
import pickle
import queue
import re
import secrets
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "Distribution",
    "Uniform",
    "LogUniform",
    "OneMinusLogUniform",
    "RandInt",
    "Choice",
    "uniform",
    "loguniform",
    "one_minus_loguniform",
    "randint",
    "choice",
    "Trial",
    "TrialHandle",
    "SearchResult",
    "CoarseToFineResult",
    "random_search",
    "grid_search",
    "coarse_to_fine",
    "successive_halving",
    "hyperband",
    "shutdown_workers",
]

_DIRECTIONS = ("minimize", "maximize")
_MAX_RUNGS = 100            # promotions of one successive-halving bracket (and Hyperband brackets)
_MAX_CONFIGS = 100_000      # configurations one Hyperband run may sample
_JOURNAL_VERSION = 1


# --------------------------------------------------------------------------- validation


def _real(name: str, value: Any) -> float:
    """``value`` as a finite float, or an error naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (bools refused), at least ``minimum`` if given."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_objective(objective: Any) -> None:
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__} {objective!r}")


def _check_direction(direction: Any) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    return direction


def _check_metric(metric: Any) -> str:
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str (a key of the objective's result), got {metric!r}")
    if not metric:
        raise ValueError("metric must be a non-empty str")
    return metric


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return _integer("seed", seed, minimum=0)


def _check_n_jobs(n_jobs: Any, executor: Any) -> int:
    given = _integer("n_jobs", n_jobs)
    n_jobs = (os.cpu_count() or 1) if given == -1 else given
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, or -1 for one worker per CPU, got {given}")
    if executor is not None:
        if not isinstance(executor, concurrent.futures.Executor):
            hint = (": pass its executor, client.get_executor()"
                    if callable(getattr(executor, "get_executor", None)) else "")
            raise TypeError(f"executor must be a concurrent.futures.Executor, got "
                            f"{type(executor).__name__}{hint}")
        if n_jobs != 1:
            raise ValueError(
                f"pass either n_jobs or executor, not both (got n_jobs={given} and an executor); "
                "the executor decides how many trials run at once"
            )
    return n_jobs


def _check_threads(threads_per_worker: Any) -> int | None:
    if threads_per_worker is None:
        return None
    value = _integer("threads_per_worker", threads_per_worker, minimum=1)
    from pydl import ops

    limit = ops._thread_limit()  # what pydl.set_num_threads takes in the worker
    if value > limit:
        raise ValueError(f"threads_per_worker must be <= {limit} (4 per CPU, at least 64), "
                         f"got {value}")
    return value


def _check_journal(journal: Any) -> str | None:
    if journal is None:
        return None
    if not isinstance(journal, (str, os.PathLike)):
        raise TypeError(f"journal must be a path (str or os.PathLike) or None, got {type(journal).__name__}")
    return os.fspath(journal)


def _check_space(space: Any, name: str = "space") -> dict:
    if not isinstance(space, dict):
        raise TypeError(f"{name} must be a dict of name -> distribution or constant, got {type(space).__name__}")
    if not space:
        raise ValueError(f"{name} must not be empty")
    for key in space:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str parameter names, got {key!r}")
    return dict(space)


# --------------------------------------------------------------------------- JSON helpers


def _plain(value: Any) -> Any:
    """NumPy scalars and 0-d arrays as Python scalars; anything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _normalized(value: Any) -> Any:
    """The JSON round trip of ``value`` (tuples become lists, unknown objects their repr)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return repr(value)


def _check_stable(name: str, value: Any) -> None:
    """TypeError unless ``value``'s JSON form is the same in every process: objects recorded by a
    default repr (``<Foo object at 0x7f...>``, an address) would never match on resume."""
    def default(v: Any) -> Any:
        text = _json_default(v)
        if isinstance(text, str) and re.search(r" at 0x[0-9a-fA-F]+", text):
            raise TypeError(f"{name} holds {text}, which a journal cannot record stably (its repr "
                            "names a memory address, so a resumed search would not recognize it); "
                            "use a JSON value (number, str, list, dict) or an object with a stable "
                            "__repr__, or run without a journal")
        return text

    json.dumps(value, default=default)


# --------------------------------------------------------------------------- distributions


class Distribution:
    """Base class of the search-space distributions.

    A distribution draws one value with ``sample(rng)`` (``rng`` a
    ``numpy.random.Generator``) and says with ``log`` whether its natural axis
    is logarithmic (used by :meth:`SearchResult.plot`).
    """

    log = False

    def sample(self, rng: np.random.Generator) -> Any:  # pragma: no cover - every subclass defines it
        raise TypeError(f"{type(self).__name__} is a Distribution without a sampling law: define sample(rng)")

    def _narrowed(self, values: list, shrink: float, original: "Distribution") -> "Distribution":
        """A distribution around ``values`` (the best trials) for coarse-to-fine."""
        return self


class _Interval(Distribution):
    """Uniform in a transformed coordinate ``t = _to_t(x)`` over ``[low, high]``."""

    def __init__(self, low: Any, high: Any):
        low, high = _real("low", low), _real("high", high)
        if not low < high:
            raise ValueError(f"{self._name} needs low < high, got low={low}, high={high}")
        self.low, self.high = low, high
        self._check()
        t0, t1 = self._to_t(low), self._to_t(high)
        self.t_low, self.t_high = min(t0, t1), max(t0, t1)
        if not math.isfinite(self.t_high - self.t_low):
            raise ValueError(f"{self._name} needs a range whose width high - low is a finite float, "
                             f"got low={low}, high={high}")

    def _check(self) -> None:
        pass

    def _to_t(self, x: float) -> float:
        return x

    def _from_t(self, t: float) -> float:
        return t

    def sample(self, rng: np.random.Generator) -> float:
        return float(self._from_t(rng.uniform(self.t_low, self.t_high)))

    def _narrowed(self, values: list, shrink: float, original: Distribution) -> Distribution:
        t_vals = [self._to_t(float(v)) for v in values]
        lo, hi = _shrunk_box(min(t_vals), max(t_vals), self.t_high - self.t_low, shrink,
                             original.t_low, original.t_high)
        x0, x1 = sorted((self._from_t(lo), self._from_t(hi)))
        x0, x1 = max(x0, original.low), min(x1, original.high)
        if not x0 < x1:  # collapsed by rounding: keep the current box
            return self
        return type(self)(x0, x1)

    def __repr__(self) -> str:
        return f"{self._name}({self.low!r}, {self.high!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.low, self.high) == (other.low, other.high)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.low, self.high))


def _shrunk_box(lo: float, hi: float, width: float, shrink: float, bound_lo: float,
                bound_hi: float) -> tuple[float, float]:
    """Coarse-to-fine box in the transformed coordinate.

    The smallest interval holding the best trials ``[lo, hi]``, widened
    symmetrically to at least ``shrink * width`` (``width`` = current box),
    then shifted (not cut) to lie inside ``[bound_lo, bound_hi]``, the
    original bounds. Its width is ``max(hi - lo, shrink * width) <= width``.
    """
    new_width = max(hi - lo, shrink * width)
    centre = 0.5 * (lo + hi)
    a, b = centre - 0.5 * new_width, centre + 0.5 * new_width
    if a < bound_lo:
        a, b = bound_lo, b + (bound_lo - a)
    if b > bound_hi:
        a, b = a - (b - bound_hi), bound_hi
    return max(a, bound_lo), min(b, bound_hi)


class Uniform(_Interval):
    """``x = U(low, high)``: every sub-interval gets draws in proportion to its length."""

    _name = "uniform"


class LogUniform(_Interval):
    """``r = U(log10 low, log10 high)``, ``x = 10**r`` (``0 < low < high``).

    Each decade gets the same share of draws: ``loguniform(1e-4, 1)`` puts a
    quarter of them in each of [1e-4, 1e-3), [1e-3, 1e-2), [1e-2, 1e-1), [1e-1, 1].
    """

    log = True
    _name = "loguniform"

    def _check(self) -> None:
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}")

    def _to_t(self, x: float) -> float:
        return math.log10(x)

    def _from_t(self, t: float) -> float:
        return 10.0 ** t


class OneMinusLogUniform(_Interval):
    """``r = U(log10(1-high), log10(1-low))``, ``x = 1 - 10**r`` (``0 <= low < high < 1``).

    For exponential-average betas: ``1 - x`` is log-uniform in ``[1-high, 1-low]``,
    so ``one_minus_loguniform(0.9, 0.999)`` samples 0.9..0.99 as often as 0.99..0.999.
    Plots use ``1 - x`` on a log axis.
    """

    log = True
    _name = "one_minus_loguniform"

    def _check(self) -> None:
        if self.high >= 1:
            raise ValueError(f"one_minus_loguniform needs high < 1 (1 - high > 0), got high={self.high}")
        if self.low < 0:
            raise ValueError(f"one_minus_loguniform needs low >= 0 (a beta in [0, 1)), got low={self.low}")

    def _to_t(self, x: float) -> float:
        return math.log10(1.0 - x)

    def _from_t(self, t: float) -> float:
        return 1.0 - 10.0 ** t


class RandInt(Distribution):
    """An integer uniform in ``{low, low+1, ..., high}`` (both ends included)."""

    def __init__(self, low: Any, high: Any):
        low, high = _integer("low", low), _integer("high", high)
        if low > high:
            raise ValueError(f"randint needs low <= high, got low={low}, high={high}")
        for name, v in (("low", low), ("high", high)):
            if not -2**63 <= v < 2**63:
                raise ValueError(f"randint {name} must fit in int64 ([-2**63, 2**63 - 1]), got {v}")
        self.low, self.high = low, high

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))

    def _narrowed(self, values: list, shrink: float, original: Distribution) -> Distribution:
        lo, hi = _shrunk_box(min(values), max(values), self.high - self.low, shrink,
                             original.low, original.high)
        return RandInt(max(math.floor(lo), original.low), min(math.ceil(hi), original.high))

    def __repr__(self) -> str:
        return f"randint({self.low!r}, {self.high!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is RandInt and (self.low, self.high) == (other.low, other.high)

    def __hash__(self) -> int:
        return hash(("RandInt", self.low, self.high))


class Choice(Distribution):
    """One of ``options``, each with probability ``1/len(options)``."""

    def __init__(self, options: Any):
        # sets are refused: their order (hash-seeded for str) would make a seeded search
        # draw different trials in another process
        if isinstance(options, (str, bytes, dict, set, frozenset)) or not hasattr(options, "__len__"):
            raise TypeError(f"choice options must be a list or tuple of values, got {type(options).__name__}")
        options = [_plain(v) for v in options]
        if not options:
            raise ValueError("choice needs at least one option, got an empty sequence")
        self.options = options

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def _narrowed(self, values: list, shrink: float, original: Distribution) -> Distribution:
        kept = [v for v in self.options if any(_same(v, w) for w in values)]
        return Choice(kept) if kept else self

    def __repr__(self) -> str:
        return f"choice({self.options!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Choice and _normalized(self.options) == _normalized(other.options)

    def __hash__(self) -> int:
        return hash(("Choice", json.dumps(_normalized(self.options))))


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays of different shapes
        return _normalized(a) == _normalized(b)


def uniform(a: float, b: float) -> Uniform:
    """``x = U(a, b)`` with ``a < b``."""
    return Uniform(a, b)


def loguniform(a: float, b: float) -> LogUniform:
    """``r = U(log10 a, log10 b)``, ``x = 10**r`` with ``0 < a < b`` (learning rates, L2)."""
    return LogUniform(a, b)


def one_minus_loguniform(a: float, b: float) -> OneMinusLogUniform:
    """``1 - x`` log-uniform in ``[1-b, 1-a]`` with ``a < b < 1`` (momentum betas)."""
    return OneMinusLogUniform(a, b)


def randint(a: int, b: int) -> RandInt:
    """An integer in ``{a, ..., b}``, both included, ``a <= b`` (hidden units, layers)."""
    return RandInt(a, b)


def choice(options: Any) -> Choice:
    """One of ``options`` uniformly (activations, optimizers, batch sizes)."""
    return Choice(options)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, Distribution) or callable(getattr(value, "rvs", None))


def _is_log(value: Any) -> bool:
    if isinstance(value, Distribution):
        return value.log
    name = getattr(getattr(value, "dist", None), "name", "")
    return name in ("loguniform", "reciprocal")


def _describe(value: Any) -> Any:
    """A stable JSON description of one space entry (for the journal header)."""
    if isinstance(value, Distribution):
        return repr(value)
    if callable(getattr(value, "rvs", None)):
        dist = getattr(value, "dist", None)
        if dist is not None and hasattr(value, "args"):  # scipy.stats frozen distribution
            return _normalized({"scipy.stats": getattr(dist, "name", type(dist).__name__),
                                "args": list(value.args), "kwds": dict(getattr(value, "kwds", {}))})
        return f"<{type(value).__module__}.{type(value).__qualname__} with .rvs>"
    return _normalized({"constant": value})


def _sample_one(value: Any, rng: np.random.Generator) -> Any:
    if isinstance(value, Distribution):
        return value.sample(rng)
    if callable(getattr(value, "rvs", None)):
        return _plain(value.rvs(random_state=rng))
    return value


def _sample_space(space: dict, rng: np.random.Generator) -> dict:
    """One parameter set: each entry drawn in the space's key order."""
    return {name: _sample_one(value, rng) for name, value in space.items()}


# --------------------------------------------------------------------------- trials


@dataclass
class Trial:
    """One evaluation of the objective.

    ``value`` is the metric being optimized (``None`` if the objective raised);
    ``status`` is ``"ok"`` or ``"failed"`` (with ``error``, a one-line message,
    and ``traceback``); ``duration`` is the objective's wall time in seconds.
    ``budget``/``rung``/``bracket`` are set by successive halving and
    Hyperband, ``round`` by coarse-to-fine; ``reports`` holds the
    ``(step, value)`` pairs sent through :meth:`TrialHandle.report`.
    """

    number: int
    params: dict
    status: str = "ok"
    value: float | None = None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    duration: float = 0.0
    budget: float | None = None
    rung: int | None = None
    bracket: int | None = None
    round: int | None = None
    reports: list = field(default_factory=list)
    traceback: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def _to_json(self) -> dict:
        return _normalized({
            "kind": "trial", "number": self.number, "params": self.params, "status": self.status,
            "value": self.value, "metrics": self.metrics, "error": self.error,
            "duration": self.duration, "budget": self.budget, "rung": self.rung,
            "bracket": self.bracket, "round": self.round, "reports": self.reports,
            "traceback": self.traceback,
        })

    @classmethod
    def _from_json(cls, record: dict) -> "Trial":
        if record.get("kind") != "trial" or record.get("status") not in ("ok", "failed"):
            raise ValueError("not a trial record")

        def typed(key, kinds, optional=True, default=None):
            v = record.get(key, default) if optional else record[key]
            if (v is None and optional) or (isinstance(v, kinds) and not isinstance(v, bool)):
                return v
            raise TypeError(f"its {key} is {v!r}, not {' or '.join(k.__name__ for k in kinds)}")

        value = typed("value", (int, float), optional=record["status"] == "failed")
        reports = typed("reports", (list,), default=[])
        if not all(isinstance(r, list) and len(r) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in r) for r in reports):
            raise TypeError(f"its reports are {reports!r}, not [step, value] pairs")
        return cls(
            number=typed("number", (int,), optional=False), params=typed("params", (dict,), False),
            status=record["status"], value=value, metrics=typed("metrics", (dict,), False),
            error=typed("error", (str,)), duration=float(typed("duration", (int, float), False)),
            budget=typed("budget", (int, float)), rung=typed("rung", (int,)),
            bracket=typed("bracket", (int,)), round=typed("round", (int,)),
            reports=[tuple(r) for r in reports], traceback=typed("traceback", (str,)),
        )


class TrialHandle:
    """What a budgeted objective receives as ``trial=``: ``objective(params, budget=b, trial=h)``.

    ``h.number``, ``h.params`` and ``h.budget`` describe the evaluation;
    ``h.report(step, value)`` records an intermediate value (e.g. the dev loss
    after each epoch), kept in ``Trial.reports``.
    """

    def __init__(self, number: int, params: dict, budget: float | None):
        self.number, self.params, self.budget = number, params, budget
        self.reports: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        """Record ``value`` at ``step`` (an integer, e.g. the epoch)."""
        step = _integer("step", step)
        if isinstance(value, (bool, np.bool_)) or not isinstance(_plain(value), numbers.Real):
            raise TypeError(f"value must be a real number, got {type(value).__name__} {value!r}")
        self.reports.append((step, float(value)))

    def __repr__(self) -> str:
        return f"TrialHandle(number={self.number}, budget={self.budget}, reports={len(self.reports)})"


def _parse_output(out: Any, metric: str) -> tuple[dict, float]:
    """The objective's return value as ``(metrics, value)``; TypeError/KeyError if unusable."""
    out = _plain(out)
    if isinstance(out, dict):
        if metric not in out:
            raise KeyError(f"objective returned a dict without {metric!r} (keys: {sorted(map(str, out))}); "
                           f"return {{{metric!r}: value, ...}} or pass metric=")
        metrics = {str(k): _plain(v) for k, v in out.items()}
        raw = metrics[metric]
    else:
        metrics, raw = None, out
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, numbers.Real):
        raise TypeError(f"objective returned {type(raw).__name__} {raw!r} for {metric!r}; "
                        f"expected a number or a dict containing {metric!r}")
    value = float(raw)
    if metrics is None:
        metrics = {metric: value}
    else:
        metrics[metric] = value
    return metrics, value


class _PickledObjective:
    """The objective as pickle bytes, loaded inside the worker's trial wrapper so
    that a worker unable to import it reports why instead of breaking the pool."""

    def __init__(self, blob: bytes):
        self.blob = blob


def _run_trial(objective: Callable, number: int, params: dict, budget: Any, metric: str,
               budgeted: bool, submission: str = "") -> dict:
    """Call the objective once and describe the outcome (runs in the worker). ``submission``
    is unused: a token new for every submit, so that an executor that caches calls by their
    arguments (Dask's pure tasks) runs each trial afresh."""
    if isinstance(objective, _PickledObjective):
        if _INIT_ERROR is not None:  # the worker's initializer failed: say why, not "died"
            return {"init_error": _INIT_ERROR}
        try:
            objective = pickle.loads(objective.blob)
        except BaseException as exc:  # SystemExit from a module's import too (sys.exit, argparse)
            return {"load_error": f"{type(exc).__name__}: {exc}"}
    handle = TrialHandle(number, dict(params), budget) if budgeted else None
    metrics, value, error, tb = {}, None, None, None
    start = time.perf_counter()
    try:
        out = objective(dict(params), budget=budget, trial=handle) if budgeted else objective(dict(params))
        metrics, value = _parse_output(out, metric)
        status = "ok" if math.isfinite(value) else "failed"
        if status == "failed":
            error = f"{metric} is {value} (not finite)"
    except Exception as exc:  # the trial fails, the search goes on
        status, error, tb = "failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    duration = time.perf_counter() - start
    return {"status": status, "value": value, "metrics": metrics, "error": error,
            "traceback": tb, "duration": duration, "reports": handle.reports if handle else []}


# --------------------------------------------------------------------------- journal


class _Journal:
    """Append-only JSON-lines record of finished trials.

    Line 1 is a header naming the search and its configuration; every other
    line is one trial. Each line is flushed and fsync'd when written.
    """

    def __init__(self, path: str, search: str, config: dict, seed: int | None, seeded: bool):
        self.path = path
        self.done: dict[tuple, Trial] = {}
        header = {"kind": "header", "journal": "pydl.tune", "version": _JOURNAL_VERSION,
                  "search": search, "config": _normalized(config), "seed": seed}
        self._file = open(path, "a", encoding="utf-8")
        try:
            self._lock()
            records = self._load()
            if records:
                self.seed = self._check_header(records[0], header, seed)
                for record in records[1:]:
                    trial = Trial._from_json(record)
                    self.done[self._key(trial.number, trial.budget)] = trial
            elif seed is None and seeded:  # new journal, no seed: draw one, keep it in the header
                self.seed = secrets.randbits(63)
            else:
                self.seed = seed
            if not records:
                header["seed"] = self.seed
                self._write(header)
        except BaseException:
            self._file.close()
            raise

    def _lock(self) -> None:
        """Hold the journal for this search while it runs: two searches appending to one
        journal would both run every unfinished trial (POSIX flock; none on Windows)."""
        try:
            import fcntl
        except ImportError:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"journal {self.path!r} is in use by another search (it holds the "
                             "journal's lock); wait for it to finish, or use another journal "
                             "file") from None
        except OSError:  # a file system without locks: go on unlocked
            pass

    def _load(self) -> list[dict]:
        """The parsed lines; a corrupt last line (partial write) is cut off with a warning."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            data = f.read()
        kept = data.rstrip(b"\x00 \t\r\n")
        if b"\x00" in data[len(kept):]:  # a crash can leave the file's last block zero-filled
            warnings.warn(f"journal {self.path!r}: ignoring and removing {len(data) - len(kept)} "
                          "NUL and blank bytes at its end (left by a crash)", RuntimeWarning,
                          stacklevel=6)
            with open(self.path, "r+b") as f:
                f.truncate(len(kept))
            data = kept
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        records, offset = [], 0
        for i, line in enumerate(lines):
            if i > 0 and not line.strip():  # a blank line (an editor's, or echo >> FILE)
                offset += len(line) + 1
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if i > 0:
                    Trial._from_json(record)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if not self._partial(line, i, last=i == len(lines) - 1 and not data.endswith(b"\n")):
                    raise ValueError(f"journal {self.path!r} line {i + 1} is corrupt ({exc}); only a "
                                     "partially written last line is tolerated") from None
                warnings.warn(f"journal {self.path!r}: ignoring and removing a partially written "
                              f"last line (line {i + 1}, {len(line)} bytes)", RuntimeWarning, stacklevel=6)
                with open(self.path, "r+b") as f:
                    f.truncate(offset)
                break
            if i == 0 and not (isinstance(record, dict) and record.get("journal") == "pydl.tune"):
                raise ValueError(f"{self.path!r} is not a pydl.tune journal (its first line is not a "
                                 "pydl.tune header); pass another journal path")
            records.append(record)
            offset += len(line) + 1
        else:
            if data and not data.endswith(b"\n"):  # complete last line whose newline was lost
                with open(self.path, "ab") as f:
                    f.write(b"\n")
        return records

    @staticmethod
    def _partial(line: bytes, index: int, last: bool) -> bool:
        """Whether ``line`` can be an interrupted write: the last line, with no
        newline, starting like a header (line 1) or trial record."""
        prefix = b'{"kind": "header"' if index == 0 else b'{"kind": "trial"'
        return last and (prefix.startswith(line) or line.startswith(prefix))

    def _check_header(self, found: dict, expected: dict, seed: int | None) -> int | None:
        if found.get("version") != _JOURNAL_VERSION:
            raise ValueError(f"journal {self.path!r} has version {found.get('version')!r}; "
                             f"this pydl reads version {_JOURNAL_VERSION}")
        if found.get("search") != expected["search"]:
            raise ValueError(f"journal {self.path!r} was written by {found.get('search')}, not "
                             f"{expected['search']}; use another journal file")
        diffs = _differences(found.get("config", {}), expected["config"])
        if diffs:
            raise ValueError(f"journal {self.path!r} belongs to a different search; "
                             + "; ".join(diffs) + ". Use a new journal file (or delete this one).")
        if seed is not None and found.get("seed") != seed:
            raise ValueError(f"journal {self.path!r} was written with seed={found.get('seed')}, but "
                             f"seed={seed} was passed; pass the same seed (or seed=None to reuse it)")
        return found.get("seed")

    @staticmethod
    def _key(number: int, budget: Any) -> tuple:
        return (int(number), None if budget is None else float(budget))

    def lookup(self, task: Trial) -> Trial | None:
        """The recorded trial for ``task`` (same number and budget), checking its params."""
        found = self.done.get(self._key(task.number, task.budget))
        if found is None:
            return None
        if found.params != _normalized(task.params):
            raise ValueError(f"journal {self.path!r}: trial {task.number} was recorded with params "
                             f"{found.params}, but this search draws {_normalized(task.params)}; "
                             "the journal belongs to a different search")
        return found

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, default=_json_default) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, trial: Trial) -> None:
        self._write(trial._to_json())

    def close(self) -> None:
        self._file.close()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"key: journal has A, this call has B"`` for each differing entry, nested dicts by dotted key."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix}: journal has {old!r}, this call has {new!r}"]
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        diffs += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
    return diffs


@contextlib.contextmanager
def _open_journal(path: str | None, search: str, config: dict, seed: int | None,
                  seeded: bool = True) -> Iterator[tuple[_Journal | None, int | None]]:
    """Yield ``(journal, seed)``: a seed drawn (or read from the journal) if ``seed`` is None."""
    if path is None:
        if seed is None and seeded:
            seed = secrets.randbits(63)
        yield None, seed
        return
    journal = _Journal(path, search, config, seed, seeded)
    seed = journal.seed
    try:
        yield journal, seed
    finally:
        journal.close()


# --------------------------------------------------------------------------- execution


def _init_worker(threads_per_worker: int | None, alive: Any = None) -> None:
    """Worker-process initializer: limit OpenMP/BLAS threads to ``threads_per_worker``;
    ignore Ctrl-C (the main process stops the workers of an interrupted search; idle kept
    workers stay usable); exit when ``alive``, the read end of a pipe whose write end only
    the main process holds, reports end-of-file: the main process is gone (kept workers
    would otherwise wait for work forever after a kill or an os._exit)."""
    global _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if alive is not None:
        threading.Thread(target=_exit_at_eof, args=(alive,), daemon=True).start()
    try:
        _limit_threads(threads_per_worker)
    except Exception as exc:  # raised from here, it would break every pool, unexplained
        _INIT_ERROR = f"{type(exc).__name__}: {exc}"


_INIT_ERROR: str | None = None  # set in a worker whose initializer failed


def _limit_threads(threads_per_worker: int | None) -> None:
    if threads_per_worker is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads_per_worker)
    from threadpoolctl import threadpool_limits

    import pydl

    threadpool_limits(limits=threads_per_worker)  # every BLAS and OpenMP pool a trial may use
    pydl.set_num_threads(threads_per_worker)  # after it: SciPy's BLAS on one thread per call


def _exit_at_eof(alive: Any) -> None:
    multiprocessing.connection.wait([alive])  # nothing is ever sent: readable means EOF
    os._exit(0)


def _start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


_PRELOAD = ("pydl", "pydl.tune")


def _mp_context():
    """The start method's context; with forkserver, pydl is imported in the server once.

    Workers fork from the forkserver, which outlives each pool: with NumPy, SciPy and pydl
    already imported there, a pool's workers are ready in ~30 ms instead of importing them
    anew in every pool (~0.4 s, which an 8-trial search of 0.4 s trials felt as 10%).
    Only effective before the forkserver first starts; modules the user preloads are kept.
    Note that this sets the preload list of the process-wide forkserver (a later
    ProcessPoolExecutor of the user's on "forkserver" gets pydl preloaded too: harmless).
    """
    method = _start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        server = getattr(forkserver, "_forkserver", None)
        current = getattr(server, "_preload_modules", None)
        current = ["__main__"] if current is None else list(current)
        ctx.set_forkserver_preload(current + [m for m in _PRELOAD if m not in current])
    return ctx


# Worker processes are kept between searches (as joblib's loky executor does): a fresh
# worker pays its start-up and a first trial ~30% slower than the next (new memory to fault
# in: on the 2-core VM of bench/bench_tune.py an 8-trial n_jobs=2 search took 1.11 s with
# new workers, 1.02 s with kept ones, 1.97 s inline). Idle workers exit after
# WORKER_IDLE_TIMEOUT seconds, or at shutdown_workers().
WORKER_IDLE_TIMEOUT = 300.0

_workers_lock = threading.Lock()
_workers: dict[str, Any] = {"key": None, "pool": None, "busy": False, "timer": None,
                            "owner": None}  # owner: the token of the search holding them


def _source_stamp(objective: Callable) -> tuple:
    """(module, its file's mtime) of the objective: workers import it once, so an edited
    module needs new workers."""
    func = getattr(objective, "func", objective)  # functools.partial
    name = getattr(func, "__module__", None) or getattr(type(func), "__module__", None)
    path = getattr(sys.modules.get(name), "__file__", None)
    try:
        return name, os.stat(path).st_mtime_ns if path else None
    except OSError:
        return name, None


def _new_pool(n_jobs: int, threads_per_worker: int | None):
    ctx = _mp_context()
    alive, alive_w = ctx.Pipe(duplex=False)  # the workers get the read end
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=n_jobs, mp_context=ctx, initializer=_init_worker,
        initargs=(threads_per_worker, alive))
    pool._pydl_alive = (alive, alive_w)  # open as long as the pool object lives
    return pool


def _alive(pool) -> bool:
    """No worker of ``pool`` has died (the pool marks itself broken only a moment later)."""
    if getattr(pool, "_broken", False):
        return False
    return all(p.is_alive() for p in list((getattr(pool, "_processes", None) or {}).values()))


def _kill(pool) -> None:
    # the processes first: shutdown forgets them (CPython sets pool._processes to None)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _acquire_pool(key: tuple, n_jobs: int, threads_per_worker: int | None, owner: object):
    """(pool, kept): the kept workers when they match ``key`` and are free, else new ones
    (kept for the next search unless another search is using the kept ones). Kept ones are
    marked busy, held by ``owner`` (see _release_owned)."""
    if multiprocessing.parent_process() is not None:
        # In a multiprocessing child, whose exit joins its children before any atexit hook
        # could stop kept workers: a pool for this search only.
        return _new_pool(n_jobs, threads_per_worker), False
    with _workers_lock:
        if _workers["busy"]:  # another search (thread) runs on them: a pool of its own
            return _new_pool(n_jobs, threads_per_worker), False
        if _workers["timer"] is not None:
            _workers["timer"].cancel()
            _workers["timer"] = None
        pool = _workers["pool"]
        if pool is not None and (_workers["key"] != key or not _alive(pool)):
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        if pool is None:
            pool = _new_pool(n_jobs, threads_per_worker)
        _workers.update(key=key, pool=pool, busy=True, owner=owner)
        return pool, True


def _release_pool(pool, ok: bool) -> None:
    """After a search: keep the workers (idle timer started) if the search ended cleanly,
    else stop them. (A pool whose worker died is replaced by the next _acquire_pool.)"""
    with _workers_lock:
        _workers.update(busy=False, owner=None)
        if not ok:
            _workers.update(key=None, pool=None)
            _kill(pool)
            return
        timer = threading.Timer(WORKER_IDLE_TIMEOUT, _stop_if_idle, args=(pool,))
        timer.daemon = True
        _workers["timer"] = timer
        timer.start()


def _release_owned(owner: object) -> None:
    """Stop the kept workers if the search ``owner`` still holds them: it was interrupted
    (Ctrl-C) between acquiring them and binding them, or inside their release. Otherwise
    they would stay busy for good: every later search would start workers of its own and
    shutdown_workers() would refuse."""
    with _workers_lock:
        if not (_workers["busy"] and _workers["owner"] is owner):
            return
        pool = _workers["pool"]
        _workers.update(key=None, pool=None, busy=False, owner=None)
    _kill(pool)


def _stop_if_idle(pool) -> None:
    with _workers_lock:
        if _workers["pool"] is not pool or _workers["busy"]:
            return
        _workers.update(key=None, pool=None, timer=None)
    pool.shutdown(wait=True)


def _forget_workers() -> None:
    """In a forked child: the parent's workers are not ours (their pool has no manager thread
    here, and the lock may have been held by another thread at the fork)."""
    global _workers_lock
    _workers_lock = threading.Lock()
    _workers.update(key=None, pool=None, busy=False, timer=None, owner=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def shutdown_workers() -> None:
    """Stop the worker processes that ``n_jobs > 1`` keeps between searches.

    Searches with ``n_jobs = k > 1`` reuse the ``k`` worker processes of the previous
    search with the same ``n_jobs`` and ``threads_per_worker`` (a new worker's first trial
    is slower: it starts and faults in its memory); idle workers exit by themselves after
    ``WORKER_IDLE_TIMEOUT`` seconds (300). Workers import the objective's module once; if it
    changed on disk, or the working directory or ``sys.path`` changed, they are replaced;
    call this after changing modules the objective imports. Kept workers also keep their
    module state (globals, caches, random state) from one search to the next.
    """
    with _workers_lock:
        pool, timer = _workers["pool"], _workers["timer"]
        if _workers["busy"]:
            raise RuntimeError("shutdown_workers: a search is running on the workers")
        _workers.update(key=None, pool=None, timer=None)
    if timer is not None:
        timer.cancel()
    if pool is not None:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def _executor_scope(objective: Callable, n_jobs: int, executor: Any,
                    threads_per_worker: int | None) -> Iterator[Any]:
    """Yield ``(executor, objective to submit)``; executor None runs trials inline."""
    if executor is not None:  # (threads share this process's objective as it is)
        threads = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        yield executor, objective if threads else _as_bytes(objective)
        return
    if n_jobs == 1:
        yield None, objective
        return
    try:
        blob = pickle.dumps(objective)
    except Exception as exc:
        raise TypeError(
            f"objective must be picklable to run in worker processes (n_jobs={n_jobs}): define it "
            "at module level (not a lambda, closure or method of a local class), or use n_jobs=1. "
            f"Pickling failed with {type(exc).__name__}: {exc}"
        ) from None
    key = (n_jobs, threads_per_worker, _start_method(), _source_stamp(objective), os.getcwd(),
           tuple(sys.path))
    owner, workers = object(), None
    try:
        workers = _OwnWorkers(*_acquire_pool(key, n_jobs, threads_per_worker, owner), n_jobs,
                              threads_per_worker)
        yield workers, _PickledObjective(blob)
    except BaseException:  # error or Ctrl-C: stop the workers, queued trials and all
        if workers is not None:
            workers.stop(ok=False)
        raise
    else:
        workers.stop(ok=True)
    finally:
        _release_owned(owner)  # a Ctrl-C before ``workers`` was bound, or inside stop()


def _as_bytes(objective: Callable) -> Any:
    """The objective for a foreign executor: as pickle bytes (cloudpickle where installed,
    as with Dask: lambdas too), loaded by ``_run_trial``, so that a worker that cannot import
    it reports why; a worker that fails to unpickle a task's arguments itself dies (Dask
    retries it on other workers, then hangs or kills them all). As is if it does not
    pickle."""
    try:
        import cloudpickle
        dumps = cloudpickle.dumps
    except ImportError:
        dumps = pickle.dumps
    try:
        return _PickledObjective(dumps(objective))
    except Exception:
        return objective


class _OwnWorkers:
    """The worker processes of a search with n_jobs > 1, as an executor; ``renew()``
    replaces them after one died (killed, out of memory), which breaks the whole pool."""

    def __init__(self, pool, kept: bool, n_jobs: int, threads_per_worker: int | None):
        self.pool, self.kept, self.n_jobs = pool, kept, n_jobs
        self.threads_per_worker = threads_per_worker

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def stop(self, ok: bool) -> None:
        """After the search: kept workers go back to the keeper (stopped unless ``ok``);
        a search's own ones are shut down (``ok``) or killed."""
        pool, kept = self.pool, self.kept
        self.kept = False  # released once, even if what follows fails or is interrupted
        if kept:
            _release_pool(pool, ok=ok)
        elif ok:
            pool.shutdown(wait=True)
        else:
            _kill(pool)

    def renew(self) -> None:
        self.stop(ok=False)
        self.pool = _new_pool(self.n_jobs, self.threads_per_worker)


@dataclass
class _Context:
    objective: Callable
    metric: str
    direction: str
    executor: Any  # None: inline
    journal: _Journal | None
    budgeted: bool = False


def _finish(task: Trial, outcome: dict) -> Trial:
    for key, value in outcome.items():
        setattr(task, key, value)
    return task


def _evaluate(ctx: _Context, tasks: list[Trial]) -> list[Trial]:
    """Run ``tasks`` (those not already in the journal); return them finished, in order."""
    done: dict[int, Trial] = {}
    todo = []
    for i, task in enumerate(tasks):
        found = ctx.journal.lookup(task) if ctx.journal is not None else None
        if found is not None:
            found.params = task.params  # the drawn values (tuples stay tuples)
            done[i] = found
        else:
            todo.append(i)

    def record(i: int, outcome: dict, journaled: bool = True) -> None:
        trial = _finish(tasks[i], outcome)
        if journaled and ctx.journal is not None:
            ctx.journal.write(trial)
        done[i] = trial

    if ctx.executor is None:
        for i in todo:
            t = tasks[i]
            record(i, _run_trial(ctx.objective, t.number, t.params, t.budget, ctx.metric, ctx.budgeted))
    else:
        pending = todo
        while pending:
            pending = _submitted(ctx, tasks, pending, record)

    return [done[i] for i in range(len(tasks))]


def _died(error: str) -> dict:
    """The outcome of a trial that did not finish because its worker or executor broke (it is
    not journaled, so a resumed search runs it again)."""
    return {"status": "failed", "value": None, "metrics": {}, "duration": 0.0, "error": error,
            "traceback": "", "reports": []}


def _submitted(ctx: _Context, tasks: list[Trial], pending: list[int], record) -> list[int]:
    """Run tasks[i] for i in ``pending`` on ctx.executor and record them; returns the ones to
    submit again. A worker process that dies (SIGKILL, the out-of-memory killer) breaks
    pydl's own pool: the trials it was running fail, new workers take the rest."""
    renewable = isinstance(ctx.executor, _OwnWorkers)
    futures, broken, unsent, cancelled = {}, [], [], []
    try:
        for k, i in enumerate(pending):
            try:
                futures[ctx.executor.submit(_run_trial, ctx.objective, tasks[i].number,
                                            tasks[i].params, tasks[i].budget, ctx.metric,
                                            ctx.budgeted, secrets.token_hex(8))] = i
            except Exception:
                # a worker died while the trials were being submitted (a fast crash): the
                # rest never started, so new workers take them. (BrokenProcessPool, or
                # "cannot schedule new futures after shutdown" from a submit racing the
                # break: CPython marks the pool broken and shut down outside the submit lock.)
                if not (renewable and getattr(ctx.executor.pool, "_broken", False)):
                    raise
                unsent = pending[k:]
                break
        for future in _as_completed(futures, ctx.executor.pool if renewable else None):
            i = futures[future]
            if not future.done():  # queued after its broken pool failed the pending ones
                unsent.append(i)
                continue
            try:
                outcome = future.result()
            except BrokenProcessPool if renewable else ():  # else: as any other error below
                broken.append(i)
                continue
            except concurrent.futures.CancelledError:  # not by this search: it cancels only
                cancelled.append(i)                    # as it stops, below
                continue
            except Exception as exc:  # the worker or the executor broke, not the objective
                outcome = _died(f"worker error: {type(exc).__name__}: {exc}")
                outcome["traceback"] = "".join(traceback.format_exception(exc))
                exc.__traceback__ = None  # its frames would keep the batch's futures alive
                record(i, outcome, journaled=False)
                continue
            if "init_error" in outcome:
                raise RuntimeError(f"the worker processes failed to start ({outcome['init_error']})")
            if "load_error" in outcome:
                where = ("make its module importable on the executor's workers (installed "
                         "there, or on their sys.path), or use n_jobs=1" if not renewable else
                         "define it at module level in a .py file (not in a notebook cell or "
                         "under `if __name__ == '__main__':`), or use n_jobs=1 or a Dask "
                         "executor")
                raise TypeError(
                    f"the worker processes could not load the objective ({outcome['load_error']}); "
                    f"they import it (or what it refers to) by module and name, so {where}")
            record(i, outcome)
        if cancelled:  # the executor was shut down: the trials that finished are recorded
            raise RuntimeError(
                f"the executor cancelled trial {tasks[min(cancelled)].number} (was it shut "
                "down, or its client closed?); the trials that finished are in the journal, "
                "if the search has one")
    except BaseException:  # error or Ctrl-C: do not leave trials queued on the executor
        for future in futures:
            future.cancel()
        raise
    finally:
        futures.clear()  # an executor may keep a task while its future lives (Dask)
    if not broken and not unsent:
        return []
    # Workers take trials in submission order, so the ones that were running are the first
    # n_jobs of those left unfinished; the rest had not started and go to new workers.
    lost = set(broken)
    broken = [i for i in pending if i in lost]
    for i in broken[:ctx.executor.n_jobs]:
        record(i, _died("its worker process died (killed, e.g. by the out-of-memory killer)"),
               journaled=False)
    ctx.executor.renew()
    again = set(broken[ctx.executor.n_jobs:]) | set(unsent)
    return [i for i in pending if i in again]


_POLL = 0.2  # seconds between checks that a pool still settles its futures


def _abandoned(pool) -> bool:
    """``pool`` broke and its manager thread is gone: nothing will settle its pending futures."""
    thread = getattr(pool, "_executor_manager_thread", None)
    return bool(getattr(pool, "_broken", False)) and (thread is None or not thread.is_alive())


def _as_completed(futures, pool=None) -> Iterator:
    """concurrent.futures.as_completed(futures); with ``pool`` (pydl's own), then also, still
    pending, the futures the broken pool will never settle: a submit racing the pool's break
    (CPython's terminate_broken does not take the submit lock) can queue its trial after the
    pool failed the pending ones, and its future would be waited for forever. Each future
    reports itself once through a callback: O(1) per completion, not O(pending)."""
    if pool is None:
        yield from concurrent.futures.as_completed(futures)
        return
    settled: queue.SimpleQueue = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(settled.put)
    seen: set = set()
    while len(seen) < len(futures):
        try:
            future = settled.get(timeout=_POLL)
        except queue.Empty:
            if _abandoned(pool):  # hand back the rest, settled or not, in submission order
                yield from (f for f in futures if f not in seen)
                return
            continue
        seen.add(future)  # each future's callback reports it once
        yield future


def _rank_key(direction: str) -> Callable[[Trial], tuple]:
    sign = 1.0 if direction == "minimize" else -1.0
    return lambda t: (sign * t.value, t.number)


def _ranked(trials: list[Trial], direction: str) -> list[Trial]:
    """The ok trials, best first (ties: lower trial number first)."""
    return sorted((t for t in trials if t.ok), key=_rank_key(direction))


# --------------------------------------------------------------------------- results


def _fmt(value: Any, width: int = 10) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "~"


class SearchResult:
    """The trials of one search and the best of them.

    Attributes
    ----------
    trials : list of Trial
        Every evaluation, ordered by trial number (then budget).
    space : dict
        The search space (or grid) the trials were drawn from.
    metric, direction : str
        What was optimized and which way.
    seed : int or None
        The seed actually used (drawn at random if none was given).
    search : str
        Which search produced it (``"random_search"``, ...).
    """

    def __init__(self, trials: list[Trial], *, space: dict, metric: str, direction: str,
                 seed: int | None = None, search: str = "random_search"):
        self.trials = sorted(trials, key=lambda t: (t.number, -math.inf if t.budget is None else t.budget))
        self.space, self.metric, self.direction = space, metric, direction
        self.seed, self.search = seed, search

    @property
    def ok_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.ok]

    @property
    def failed_trials(self) -> list[Trial]:
        return [t for t in self.trials if not t.ok]

    @property
    def best(self) -> Trial:
        """The best ok trial (min or max ``value``).

        With budgets (successive halving, Hyperband) only trials at the
        largest budget any ok trial reached compete, since a value measured
        on a small budget is not comparable. Raises RuntimeError if no trial
        succeeded.
        """
        ok = self.ok_trials
        if not ok:
            first = self.trials[0].error if self.trials else "no trials ran"
            raise RuntimeError(f"no trial succeeded ({len(self.trials)} failed); first error: {first}")
        budgets = [t.budget for t in ok if t.budget is not None]
        if budgets:
            top = max(budgets)
            ok = [t for t in ok if t.budget == top]
        return _ranked(ok, self.direction)[0]

    @property
    def best_params(self) -> dict:
        return self.best.params

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def _param_names(self) -> list[str]:
        names = list(self.space)
        for t in self.trials:
            names += [k for k in t.params if k not in names]
        return names

    def to_records(self) -> list[dict]:
        """One flat dict per trial (``pandas.DataFrame(result.to_records())`` works).

        Keys: ``number``, ``status``, ``value``, then ``budget``/``rung``/
        ``bracket``/``round`` when any trial has them, then one key per
        parameter and per metric, then ``duration`` and ``error``. A parameter
        or metric whose name is already taken gets a ``param_``/``metric_`` prefix.
        """
        optional = [k for k in ("budget", "rung", "bracket", "round")
                    if any(getattr(t, k) is not None for t in self.trials)]
        fixed = ["number", "status", "value", *optional, "duration", "error"]
        records = []
        for t in self.trials:
            rec = {"number": t.number, "status": t.status, "value": t.value}
            for k in optional:
                rec[k] = getattr(t, k)
            for prefix, items in (("param_", t.params.items()), ("metric_", t.metrics.items())):
                for k, v in items:
                    key = k if k not in rec and k not in fixed else f"{prefix}{k}"
                    rec[key] = v
            rec["duration"], rec["error"] = t.duration, t.error
            records.append(rec)
        return records

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_records` as CSV (header = union of keys, in first-seen order),
        atomically: on any error the file at ``path`` is as it was."""
        from .model import atomic_write

        records = self.to_records()
        fieldnames: list[str] = []
        for rec in records:
            fieldnames += [k for k in rec if k not in fieldnames]

        def write(f):
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(records)
            text.flush()
            text.detach()  # atomic_write closes f

        atomic_write(os.fspath(path), write)

    def plot(self, param: str, ax: Any = None, log: bool | None = None):
        """Scatter the metric of every ok trial against ``param``; returns the Figure.

        The x axis is logarithmic when the parameter's distribution is
        (``loguniform``, ``scipy.stats.loguniform``); for
        ``one_minus_loguniform`` it shows ``1 - param`` on a log axis.
        ``log=True/False`` overrides. Non-numeric values (``choice`` of
        strings) are shown as categories. The best trial is a star; with
        budgets, one colour per budget. Needs matplotlib (imported here).
        """
        if param not in self._param_names():
            raise ValueError(f"param {param!r} is not a parameter of this search; "
                             f"choose one of {self._param_names()}")
        import matplotlib.pyplot as plt

        dist = self.space.get(param)
        one_minus = isinstance(dist, OneMinusLogUniform)
        use_log = _is_log(dist) if log is None else bool(log)
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        ok = self.ok_trials
        raw = [t.params.get(param) for t in ok]
        numeric = all(isinstance(_plain(v), numbers.Real) and not isinstance(v, bool) for v in raw)
        if numeric:
            def x_of(v):
                return 1.0 - float(v) if one_minus else float(v)
        else:
            categories = []
            for v in raw:
                if not any(_same(v, c) for c in categories):
                    categories.append(v)

            def x_of(v):
                return next(i for i, c in enumerate(categories) if _same(v, c))
        budgets = sorted({t.budget for t in ok if t.budget is not None})
        groups = [(f"budget={_fmt(b)}", [t for t in ok if t.budget == b]) for b in budgets] or [(None, ok)]
        for label, trials in groups:
            ax.scatter([x_of(t.params.get(param)) for t in trials], [t.value for t in trials],
                       s=20, alpha=0.8, label=label)
        if ok:
            best = self.best
            ax.scatter([x_of(best.params.get(param))], [best.value], marker="*", s=200,
                       color="red", zorder=3, label=f"best ({self.metric}={best.value:.4g})")
            ax.legend(loc="best", fontsize="small")
        if not numeric:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels([str(c) for c in categories])
        elif use_log:
            ax.set_xscale("log")
        ax.set_xlabel(f"1 - {param}" if one_minus and numeric else param)
        ax.set_ylabel(self.metric)
        failed = len(self.failed_trials)
        ax.set_title(f"{self.search}: {len(ok)} ok" + (f", {failed} failed" if failed else ""))
        return fig

    def _summary(self) -> str:
        failed = len(self.failed_trials)
        text = f"{self.search}, {len(self.trials)} trials ({len(self.trials) - failed} ok, {failed} failed)"
        if self.ok_trials:
            best = self.best
            text += f"; best {self.metric}={best.value:.6g} at trial {best.number}"
            if best.budget is not None:
                text += f" (budget {_fmt(best.budget)})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._summary()})"

    def __str__(self) -> str:
        names = self._param_names()
        optional = [k for k in ("budget", "round", "bracket") if any(getattr(t, k) is not None for t in self.trials)]
        columns = ["#", *optional, "status", self.metric, *names, "seconds", "error"]
        best = self.best if self.ok_trials else None
        rows = []
        for t in self.trials:
            mark = "*" if t is best else " "
            rows.append([f"{t.number}{mark}", *[_fmt(getattr(t, k)) for k in optional], t.status,
                         _fmt(t.value), *[_fmt(t.params.get(n)) for n in names], f"{t.duration:.2f}",
                         _fmt(t.error or "", 40)])
        widths = [max(len(str(c)), *(len(r[j]) for r in rows)) if rows else len(str(c))
                  for j, c in enumerate(columns)]
        lines = [self._summary() + " (* = best)",
                 "  ".join(str(c).ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)


class CoarseToFineResult(SearchResult):
    """A :class:`SearchResult` over every round, plus ``rounds`` (one SearchResult
    per round, its ``space`` the box that round sampled) and ``boxes`` (those spaces)."""

    def __init__(self, trials: list[Trial], rounds: list[SearchResult], **kwargs: Any):
        super().__init__(trials, **kwargs)
        self.rounds = rounds
        self.boxes = [r.space for r in rounds]

    def _summary(self) -> str:
        return super()._summary() + f", {len(self.rounds)} rounds"


# --------------------------------------------------------------------------- searches


def _common(objective, direction, metric, n_jobs, executor, journal, threads_per_worker):
    _check_objective(objective)
    return (_check_direction(direction), _check_metric(metric), _check_n_jobs(n_jobs, executor),
            _check_journal(journal), _check_threads(threads_per_worker))


def _header(config: dict, context: Any, space: dict, journal: str | None, name: str = "space") -> dict:
    """The journal header's config: ``config`` plus ``context`` (if any); with a journal, every
    constant of ``space`` must have a stable JSON form (one recorded now must match in a new process)."""
    if context is not None:
        if not isinstance(context, dict):
            raise TypeError(f"context must be a dict (what else a trial's result depends on), "
                            f"got {type(context).__name__}")
        _check_stable("context", context)
        config = {**config, "context": _normalized(context)}
    if journal is not None:
        for key, value in space.items():
            if isinstance(value, Choice):
                _check_stable(f"{name}[{key!r}]", value.options)
            elif not _is_distribution(value):
                _check_stable(f"{name}[{key!r}]", value)
    return config


def random_search(objective: Callable, space: dict, n_trials: int, seed: int | None = None,
                  direction: str = "minimize", metric: str = "dev_loss", n_jobs: int = 1,
                  executor: Any = None, journal: str | os.PathLike | None = None,
                  threads_per_worker: int | None = 1, context: dict | None = None) -> SearchResult:
    """Random search: ``n_trials`` independent draws ``params_i ~ space``.

    Trial ``i`` gets the ``i``-th parameter set drawn from
    ``numpy.random.default_rng(seed)`` (entries in the space's key order), so
    the same seed and space give the same trials whatever ``n_jobs`` is, and
    raising ``n_trials`` on a resumed journal only adds trials.

    Parameters
    ----------
    objective : callable
        ``objective(params) -> float`` or ``-> dict`` containing ``metric``.
        Must be picklable when ``n_jobs > 1`` (a module-level function).
    space : dict
        Name -> distribution (``loguniform(1e-4, 1)``, ``scipy.stats`` ...) or constant.
    n_trials : int >= 1
    seed : int >= 0 or None
        None draws one (kept in ``result.seed`` and in the journal header).
    direction : "minimize" or "maximize"
    metric : str
        The key to optimize when the objective returns a dict.
    n_jobs : int
        Worker processes (-1: one per CPU); 1 runs trials in this process.
    executor : concurrent.futures.Executor, optional
        E.g. ``dask.distributed.Client(...).get_executor()``; excludes ``n_jobs``.
    journal : path, optional
        JSON-lines file recording each finished trial; rerunning with it resumes.
    threads_per_worker : int or None
        Threads each worker process may use (``pydl.set_num_threads``);
        None leaves the libraries' defaults. Only for ``n_jobs > 1``.
    context : dict, optional
        What else a trial's result depends on (the base config, a fingerprint
        of the data, ...), as JSON values. Kept in the journal header: a
        journal written with another context is refused, not reused.

    Returns
    -------
    SearchResult
    """
    direction, metric, n_jobs, journal, threads = _common(
        objective, direction, metric, n_jobs, executor, journal, threads_per_worker)
    space = _check_space(space)
    n_trials = _integer("n_trials", n_trials, minimum=1)
    seed = _check_seed(seed)
    config = {"space": {k: _describe(v) for k, v in space.items()}, "direction": direction, "metric": metric}
    config = _header(config, context, space, journal)
    with _open_journal(journal, "random_search", config, seed) as (jr, seed):
        rng = np.random.default_rng(seed)
        tasks = [Trial(number=i, params=_sample_space(space, rng)) for i in range(n_trials)]
        with _executor_scope(objective, n_jobs, executor, threads) as (ex, fn):
            trials = _evaluate(_Context(fn, metric, direction, ex, jr), tasks)
    return SearchResult(trials, space=space, metric=metric, direction=direction, seed=seed,
                        search="random_search")


def _grid_values(name: str, value: Any) -> list:
    if isinstance(value, Choice):
        return list(value.options)
    if isinstance(value, (list, tuple, range, np.ndarray)):
        values = [_plain(v) for v in value]
        if not values:
            raise ValueError(f"grid[{name!r}] is empty; give at least one value")
        return values
    if isinstance(value, (set, frozenset)) or isinstance(value, Iterator):
        raise TypeError(f"grid[{name!r}] is a {type(value).__name__}; give its values as a list or tuple "
                        "(a set's order differs between processes, an iterator is used up once)")
    if _is_distribution(value):
        raise TypeError(f"grid[{name!r}] is a continuous distribution ({value!r}); a grid needs an "
                        "explicit list of values, e.g. numpy.logspace(-4, 0, 5)")
    return [value]  # a constant


def grid_search(objective: Callable, grid: dict, direction: str = "minimize", metric: str = "dev_loss",
                n_jobs: int = 1, executor: Any = None, journal: str | os.PathLike | None = None,
                threads_per_worker: int | None = 1, context: dict | None = None) -> SearchResult:
    """Grid search over the Cartesian product ``grid[k1] x grid[k2] x ...``.

    ``grid`` maps each name to a list/tuple/array of values (or a ``choice``,
    or a constant). With ``k`` names of ``v`` values each, the ``v**k`` trials
    try only ``v`` distinct values of every parameter; random search with the
    same budget tries ``v**k`` distinct values of each, which is what matters
    when only a few parameters do. Other arguments as in :func:`random_search`.
    """
    direction, metric, n_jobs, journal, threads = _common(
        objective, direction, metric, n_jobs, executor, journal, threads_per_worker)
    grid = _check_space(grid, "grid")
    axes = {name: _grid_values(name, value) for name, value in grid.items()}
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    config = _header({"grid": _normalized(axes), "direction": direction, "metric": metric}, context,
                     axes, journal, "grid")
    with _open_journal(journal, "grid_search", config, None, seeded=False) as (jr, _):
        tasks = [Trial(number=i, params=p) for i, p in enumerate(combos)]
        with _executor_scope(objective, n_jobs, executor, threads) as (ex, fn):
            trials = _evaluate(_Context(fn, metric, direction, ex, jr), tasks)
    return SearchResult(trials, space=dict(grid), metric=metric, direction=direction, search="grid_search")


def _narrow_space(box: dict, original: dict, best: list[Trial], shrink: float) -> dict:
    """The next coarse-to-fine box: each distribution narrowed around the ``best`` trials."""
    new = {}
    for name, dist in box.items():
        if isinstance(dist, Distribution):
            new[name] = dist._narrowed([t.params[name] for t in best], shrink, original[name])
        else:  # constants and third-party distributions stay as they are
            new[name] = dist
    return new


def coarse_to_fine(objective: Callable, space: dict, rounds: int = 3, trials_per_round: int = 10,
                   top_k: int = 3, shrink: float = 0.5, seed: int | None = None,
                   direction: str = "minimize", metric: str = "dev_loss", n_jobs: int = 1,
                   executor: Any = None, journal: str | os.PathLike | None = None,
                   threads_per_worker: int | None = 1, context: dict | None = None) -> CoarseToFineResult:
    """Coarse-to-fine random search: sample a box, zoom in around the best, repeat.

    Round ``r`` draws ``trials_per_round`` parameter sets from the current box
    (``default_rng([seed, r])``; trial numbers continue across rounds). Then
    every numeric distribution is narrowed in its own coordinate ``t``
    (``x`` for uniform/randint, ``log10 x`` for loguniform, ``log10(1-x)``
    for one_minus_loguniform) to

        ``[lo, hi]`` = the span of the ``top_k`` best ok trials, widened
        symmetrically to at least ``shrink * (current width)``, then shifted
        to lie inside the ORIGINAL bounds,

    so the box never leaves the original space and never grows; with
    ``top_k=1`` its width is exactly ``shrink**r`` times the original. A
    ``choice`` keeps only the options the ``top_k`` trials used; constants and
    third-party (``.rvs``) distributions stay unchanged. A round with no ok
    trial leaves the box as it is.

    Returns a :class:`CoarseToFineResult`: all trials, ``best`` over all
    rounds, ``rounds`` (one SearchResult per round) and ``boxes``. Other
    arguments as in :func:`random_search`.
    """
    direction, metric, n_jobs, journal, threads = _common(
        objective, direction, metric, n_jobs, executor, journal, threads_per_worker)
    space = _check_space(space)
    rounds = _integer("rounds", rounds, minimum=1)
    trials_per_round = _integer("trials_per_round", trials_per_round, minimum=1)
    top_k = _integer("top_k", top_k, minimum=1)
    if top_k > trials_per_round:
        raise ValueError(f"top_k must be <= trials_per_round ({trials_per_round}), got {top_k}")
    shrink = _real("shrink", shrink)
    if not 0.0 < shrink <= 1.0:
        raise ValueError(f"shrink must be in (0, 1] (the box's minimum width ratio per round), got {shrink}")
    seed = _check_seed(seed)
    config = {"space": {k: _describe(v) for k, v in space.items()}, "direction": direction,
              "metric": metric, "trials_per_round": trials_per_round, "top_k": top_k, "shrink": shrink}
    config = _header(config, context, space, journal)
    results, everything = [], []
    with _open_journal(journal, "coarse_to_fine", config, seed) as (jr, seed):
        with _executor_scope(objective, n_jobs, executor, threads) as (ex, fn):
            ctx = _Context(fn, metric, direction, ex, jr)
            box = space
            for r in range(rounds):
                rng = np.random.default_rng([seed, r])
                tasks = [Trial(number=r * trials_per_round + i, params=_sample_space(box, rng), round=r)
                         for i in range(trials_per_round)]
                trials = _evaluate(ctx, tasks)
                everything += trials
                results.append(SearchResult(trials, space=box, metric=metric, direction=direction,
                                            seed=seed, search=f"coarse_to_fine round {r}"))
                best = _ranked(trials, direction)[:top_k]
                if best:
                    box = _narrow_space(box, space, best, shrink)
    return CoarseToFineResult(everything, results, space=space, metric=metric, direction=direction,
                              seed=seed, search="coarse_to_fine")


def _check_budgets(min_budget: Any, max_budget: Any, eta: Any) -> tuple[float, float, float, bool]:
    integer = all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in (min_budget, max_budget))
    lo, hi, eta = _real("min_budget", min_budget), _real("max_budget", max_budget), _real("eta", eta)
    if lo <= 0:
        raise ValueError(f"min_budget must be > 0, got {lo}")
    if hi < lo:
        raise ValueError(f"max_budget must be >= min_budget ({lo}), got {hi}")
    if eta <= 1:
        raise ValueError(f"eta must be > 1 (the promotion ratio), got {eta}")
    ratio = hi / lo
    steps = math.log(ratio) / math.log(eta) if math.isfinite(ratio) else math.inf
    if not steps <= _MAX_RUNGS:
        raise ValueError(f"max_budget / min_budget = {ratio:g} with eta={eta} needs log_eta(max/min) = "
                         f"{steps:.4g} promotions; at most {_MAX_RUNGS} are allowed: raise eta or "
                         "narrow the budgets")
    return lo, hi, eta, integer


def _rung_budgets(min_budget: float, max_budget: float, eta: float, integer: bool) -> list:
    """``[r, r*eta, r*eta**2, ..., R]``: ``s = floor(log_eta(R/r))`` steps of ``eta``, the last set to ``R``."""
    s = int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9))
    budgets = [min_budget * eta ** i for i in range(s)] + [max_budget]
    if integer:
        budgets = [max(1, int(round(b))) for b in budgets]
    out = []
    for b in budgets:  # rounding may repeat a budget
        if not out or b > out[-1]:
            out.append(b)
    return out


def _halving(ctx: _Context, space: dict, n_configs: int, budgets: list, eta: float,
             rng: np.random.Generator, offset: int, bracket: int | None) -> list[Trial]:
    """One successive-halving bracket: ``n_configs`` configs numbered from ``offset``."""
    configs = [_sample_space(space, rng) for _ in range(n_configs)]
    alive = list(range(n_configs))
    trials: list[Trial] = []
    for rung, budget in enumerate(budgets):
        tasks = [Trial(number=offset + i, params=configs[i], budget=budget, rung=rung, bracket=bracket)
                 for i in alive]
        finished = _evaluate(ctx, tasks)
        trials += finished
        if rung == len(budgets) - 1:
            break
        keep = max(1, int(math.floor(len(alive) / eta)))
        alive = [t.number - offset for t in _ranked(finished, ctx.direction)[:keep]]
        if not alive:
            warnings.warn(f"successive halving: every trial failed at budget {budget}; stopping",
                          RuntimeWarning, stacklevel=3)
            break
    return trials


def successive_halving(objective: Callable, space: dict, n_trials: int, min_budget: float,
                       max_budget: float, eta: float = 3, seed: int | None = None,
                       direction: str = "minimize", metric: str = "dev_loss", n_jobs: int = 1,
                       executor: Any = None, journal: str | os.PathLike | None = None,
                       threads_per_worker: int | None = 1, context: dict | None = None) -> SearchResult:
    """Successive halving: train many configurations briefly, promote the best.

    ``n_0 = n_trials`` configurations run with budget ``b_0 = min_budget``;
    rung ``i+1`` runs the best ``n_{i+1} = max(1, floor(n_i / eta))`` ok
    trials of rung ``i`` with budget ``b_{i+1} = eta * b_i``, the last rung
    using ``max_budget`` (``s = floor(log_eta(max_budget/min_budget))``
    promotions). Integer budgets stay integers (epochs).

    The objective is called ``objective(params, budget=b, trial=handle)``;
    ``handle.report(step, value)`` records intermediate values. Each call is
    one Trial (same ``number`` for the same configuration, with ``budget`` and
    ``rung``); ``result.best`` compares only trials at the largest budget.
    Other arguments as in :func:`random_search`.
    """
    direction, metric, n_jobs, journal, threads = _common(
        objective, direction, metric, n_jobs, executor, journal, threads_per_worker)
    space = _check_space(space)
    n_trials = _integer("n_trials", n_trials, minimum=1)
    lo, hi, eta, integer = _check_budgets(min_budget, max_budget, eta)
    seed = _check_seed(seed)
    budgets = _rung_budgets(lo, hi, eta, integer)
    config = {"space": {k: _describe(v) for k, v in space.items()}, "direction": direction,
              "metric": metric, "n_trials": n_trials, "budgets": budgets, "eta": eta}
    config = _header(config, context, space, journal)
    with _open_journal(journal, "successive_halving", config, seed) as (jr, seed):
        with _executor_scope(objective, n_jobs, executor, threads) as (ex, fn):
            ctx = _Context(fn, metric, direction, ex, jr, budgeted=True)
            trials = _halving(ctx, space, n_trials, budgets, eta, np.random.default_rng(seed), 0, None)
    return SearchResult(trials, space=space, metric=metric, direction=direction, seed=seed,
                        search="successive_halving")


def hyperband(objective: Callable, space: dict, min_budget: float, max_budget: float, eta: float = 3,
              seed: int | None = None, direction: str = "minimize", metric: str = "dev_loss",
              n_jobs: int = 1, executor: Any = None, journal: str | os.PathLike | None = None,
              threads_per_worker: int | None = 1, context: dict | None = None) -> SearchResult:
    """Hyperband: successive halving brackets trading many-configs for long-budgets.

    With ``R = max_budget``, ``s_max = floor(log_eta(R / min_budget))``,
    bracket ``s = s_max, ..., 0`` runs successive halving on
    ``n_s = ceil((s_max + 1) / (s + 1) * eta**s)`` configurations starting at
    budget ``R * eta**-s``: the first bracket is the most aggressive, the last
    is plain random search at the full budget. Configuration numbers continue
    across brackets (``Trial.bracket`` says which); ``best`` compares trials at
    ``max_budget``. Bracket ``k`` samples with ``default_rng([seed, k])``.
    The objective is called as in :func:`successive_halving`.
    """
    direction, metric, n_jobs, journal, threads = _common(
        objective, direction, metric, n_jobs, executor, journal, threads_per_worker)
    space = _check_space(space)
    lo, hi, eta, integer = _check_budgets(min_budget, max_budget, eta)
    seed = _check_seed(seed)
    s_max = int(math.floor(math.log(hi / lo) / math.log(eta) + 1e-9))
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * eta ** s - 1e-9))
        budgets = _rung_budgets(hi / eta ** s, hi, eta, integer)
        brackets.append((n, budgets))
    total = sum(n for n, _ in brackets)
    if total > _MAX_CONFIGS:
        raise ValueError(f"hyperband with max_budget / min_budget = {hi / lo:g} and eta={eta} would sample "
                         f"{total} configurations (at most {_MAX_CONFIGS}): raise eta or narrow the budgets")
    config = {"space": {k: _describe(v) for k, v in space.items()}, "direction": direction,
              "metric": metric, "brackets": brackets, "eta": eta}
    config = _header(config, context, space, journal)
    trials: list[Trial] = []
    with _open_journal(journal, "hyperband", config, seed) as (jr, seed):
        with _executor_scope(objective, n_jobs, executor, threads) as (ex, fn):
            ctx = _Context(fn, metric, direction, ex, jr, budgeted=True)
            offset = 0
            for k, (n, budgets) in enumerate(brackets):
                trials += _halving(ctx, space, n, budgets, eta, np.random.default_rng([seed, k]), offset, k)
                offset += n
    return SearchResult(trials, space=space, metric=metric, direction=direction, seed=seed,
                        search="hyperband")
