"""Training callbacks and the History record that ``fit`` returns.

``History`` (returned by fit), ``ProgressBar`` (on by default with verbose=1),
``EarlyStopping``, ``Checkpoint`` (atomic writes), ``LRScheduler``. The NaN guard is
built into ``fit`` itself (see ``pydl.training.TrainingDiverged``).
"""
from __future__ import annotations

import math
import numbers
import string

import numpy as np

__all__ = ["History", "Callback", "ProgressBar", "EarlyStopping", "Checkpoint", "LRScheduler"]


class History:
    """What one ``fit`` run measured.

    Attributes
    ----------
    epoch : list of int
        Epoch index (from 0, counting ``initial_epoch``) of every recorded epoch.
    history : dict of str -> list of float
        Per-epoch values, one entry per element of ``epoch``: ``"loss"`` (train cost
        over the epoch's mini-batches, regularization included), ``"accuracy"``
        (classification only), ``"dev_loss"``/``"dev_accuracy"`` (with validation
        data) and ``"lr"``.
    iterations : list of float
        Cost of every mini-batch step, in order: the noisy mini-batch curve.
    best_epoch : int or None
        The epoch EarlyStopping restored (or would restore), if it ran.
    completed : bool
        Whether ``fit`` ran to its end (its last epoch, or a callback's stop) rather than
        ending on an exception (TrainingDiverged, KeyboardInterrupt, ...).
    """

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.iterations: list[float] = []
        self.best_epoch: int | None = None
        self.completed = False

    def record(self, epoch: int, **values: float) -> None:
        """Append one epoch's values (missing keys are allowed)."""
        self.epoch.append(int(epoch))
        for key, value in values.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def to_dict(self) -> dict:
        """A JSON-serializable copy."""
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in self.history.items()},
                "iterations": list(self.iterations), "best_epoch": self.best_epoch}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """Rebuild a History from ``to_dict()`` output (a dict; missing keys are empty)."""
        if not isinstance(d, dict):
            raise TypeError(f"History.from_dict needs a dict like History.to_dict() returns, "
                            f"got {type(d).__name__} {d!r:.80}")
        h = cls()
        h.epoch = _number_list("d['epoch']", d.get("epoch", []), int)
        hist = d.get("history", {})
        if not isinstance(hist, dict):
            raise TypeError(f"History.from_dict: d['history'] must be a dict of lists, "
                            f"got {type(hist).__name__} {hist!r:.80}")
        h.history = {k: _number_list(f"d['history'][{k!r}]", v, float) for k, v in hist.items()}
        h.iterations = _number_list("d['iterations']", d.get("iterations", []), float)
        best = d.get("best_epoch")
        if best is not None and (isinstance(best, (bool, np.bool_)) or not isinstance(best, numbers.Integral)):
            raise TypeError(f"History.from_dict: d['best_epoch'] must be an integer or None, "
                            f"got {type(best).__name__} {best!r:.80}")
        h.best_epoch = None if best is None else int(best)
        return h

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}], iterations={len(self.iterations)})"


def _number_list(name: str, values, convert) -> list:
    """``[convert(v) for v in values]`` for a list/tuple/1-D array of numbers, else TypeError naming it."""
    ok = isinstance(values, (list, tuple)) or (isinstance(values, np.ndarray) and values.ndim == 1)
    try:
        if ok:
            return [convert(v) for v in values]
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf) of an epoch
        pass
    kind = "integers" if convert is int else "numbers"
    raise TypeError(f"History.from_dict: {name} must be a list of {kind}, "
                    f"got {type(values).__name__} {values!r:.80}")


class Callback:
    """Base class: override any of the hooks. ``fit`` calls them in this order:
    on_train_begin, (on_epoch_begin, on_epoch_end)*, on_train_end (always, also on errors).
    Set ``model.stop_training = True`` to stop after the current epoch."""

    def on_train_begin(self, model, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        pass

    def on_epoch_begin(self, model, epoch: int) -> None:
        pass

    def on_epoch_end(self, model, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, model) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _format_logs(logs: dict) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in logs.items())


class ProgressBar(Callback):
    """One bar over the epochs (tqdm when installed, a plain line per epoch otherwise)."""

    def __init__(self, stream=None):
        self.stream = stream
        self._bar = None

    def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
        self._epochs = epochs
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._bar = None
            return
        self._bar = tqdm(total=epochs, initial=initial_epoch, unit="epoch", file=self.stream,
                         dynamic_ncols=True, leave=True)

    def on_epoch_end(self, model, epoch, logs):
        if self._bar is not None:
            self._bar.set_postfix_str(_format_logs(logs), refresh=False)
            self._bar.update(1)
        else:
            import sys

            print(f"epoch {epoch + 1}/{self._epochs} {_format_logs(logs)}", file=self.stream or sys.stdout,
                  flush=True)

    def on_train_end(self, model):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` (default "dev_loss") has gone more than ``patience`` epochs in a
    row without improving by more than ``min_delta``: ``patience`` such epochs are
    tolerated, and training stops at the end of the next one (patience=0: of the first;
    as scikit-learn's ``n_iter_no_change``; Keras stops one epoch earlier). With
    ``restore_best`` put back the parameters (and BatchNorm statistics) of the best epoch.
    Records ``history.best_epoch``. A run that ends on an exception (TrainingDiverged,
    KeyboardInterrupt) is not restored.

    ``patience`` is an integer >= 0 and ``min_delta`` a finite real number >= 0 (Python or
    NumPy scalars); ``restore_best`` is a bool (Python or NumPy)."""

    def __init__(self, monitor: str = "dev_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True, mode: str = "auto"):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name like 'dev_loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, (bool, np.bool_)) or not isinstance(min_delta, numbers.Real) \
                or not math.isfinite(float(min_delta)) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if not isinstance(restore_best, (bool, np.bool_)):
            raise TypeError(f"restore_best must be True or False, got {type(restore_best).__name__} "
                            f"{restore_best!r}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best = bool(restore_best)
        self.mode = _monitor_mode(monitor, mode)

    def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
        self.best = np.inf if self.mode == "min" else -np.inf
        self.best_epoch = None
        self.wait = 0
        self._best_theta = None
        self._best_state = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, model, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r} but the epoch logged only "
                             f"{sorted(logs)} (pass validation_data to fit for dev_* metrics)")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_theta = model.theta.copy()
                self._best_state = [a.copy() for l in model.layers for a in l.state_arrays().values()]
        else:
            self.wait += 1
            if self.wait > self.patience:
                model.stop_training = True
        if model.history is not None:
            model.history.best_epoch = self.best_epoch

    def on_train_end(self, model):
        # not after an exception: TrainingDiverged promises the last finite step, and an
        # interrupted model stays at its last step (the counters and optimizer agree with it)
        completed = model.history is not None and model.history.completed
        if self.restore_best and self._best_theta is not None and completed:
            model.theta[...] = self._best_theta
            live = [a for l in model.layers for a in l.state_arrays().values()]
            for a, b in zip(live, self._best_state):
                a[...] = b

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best})")


def _check_path_template(path: str) -> None:
    """Fail now, not after the first epoch, if ``path`` is not a valid ``{epoch}`` template."""
    if "{" not in path:
        return                      # not a template: used as it is (see Checkpoint._target)
    allowed = "the only field allowed is {epoch} (the number of epochs completed), e.g. " \
              "'ckpt/model-{epoch:03d}.npz'; write {{ and }} for literal braces"
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(path) if field is not None]
    except ValueError as exc:
        raise ValueError(f"path {path!r} is not a valid file name template ({exc}); {allowed}") from None
    bad = [field for field in fields if field != "epoch"]
    if bad:
        shown = ", ".join("{" + f + "}" for f in bad)
        raise ValueError(f"path {path!r} uses the field(s) {shown}; {allowed}")
    try:
        path.format(epoch=1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"path {path!r} is not a valid file name template ({exc}); {allowed}") from None


class Checkpoint(Callback):
    """Save the model (with optimizer state, epoch and step) every ``every`` epochs.

    ``path`` may contain ``{epoch}`` (the number of epochs completed), e.g.
    "ckpt/model-{epoch:03d}.npz"; it is the only field allowed (write ``{{`` and ``}}``
    for literal braces), and the template is checked when the callback is made.
    ``keep_last=k`` deletes all but the k newest files this callback wrote. Writes are
    atomic (temporary file, fsync, rename), so a crash at any moment leaves the previous
    checkpoints intact and loadable; the files get the usual mode 0o666 & ~umask.
    """

    def __init__(self, path, every: int = 1, keep_last: int | None = None):
        import os

        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
        self.path = path
        _check_path_template(path)
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, (int, np.integer))
                                      or keep_last < 1):
            raise ValueError(f"keep_last must be an integer >= 1 or None, got {keep_last!r}")
        self.every, self.keep_last = int(every), keep_last
        self.written: list[str] = []

    def _target(self, done: int) -> str:
        """The file for ``done`` completed epochs (``path`` with ``{epoch}`` filled in)."""
        return self.path.format(epoch=done) if "{" in self.path else self.path

    def on_epoch_end(self, model, epoch, logs):
        import os

        done = epoch + 1
        if done % self.every:
            return
        target = self._target(done)
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        model.save(target)
        if target in self.written:
            self.written.remove(target)
        self.written.append(target)
        if self.keep_last is not None:
            while len(self.written) > self.keep_last:
                old = self.written.pop(0)
                try:
                    os.unlink(old)
                except OSError:
                    pass

    def __repr__(self):
        return f"Checkpoint({self.path!r}, every={self.every}, keep_last={self.keep_last})"


class LRScheduler(Callback):
    """Set ``optimizer.lr = schedule(epoch)`` at the start of every epoch; ``schedule`` is
    a pydl.schedules object or any callable epoch -> lr.

    Built-in schedules never increase, so one that would underflow within the run (to 0,
    or below the smallest normal number of the model's dtype, which the optimizer steps
    refuse) is refused before training starts (ValueError naming the first such epoch),
    not after some epochs and checkpoints; a plain callable is only called epoch by epoch."""

    def __init__(self, schedule):
        from .schedules import as_schedule

        self.schedule = as_schedule(schedule)

    def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
        from .schedules import FunctionSchedule

        if isinstance(self.schedule, FunctionSchedule) or epochs <= initial_epoch:
            return
        try:
            self._rate(epochs - 1, model)
        except ValueError:
            lo, hi = initial_epoch, epochs - 1   # first failing epoch is in [lo, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                try:
                    self._rate(mid, model)
                    lo = mid + 1
                except ValueError:
                    hi = mid
            self._rate(lo, model)                 # raises, naming that epoch
            raise

    def _rate(self, epoch, model):
        """schedule(epoch), which must be a normal number of the model's dtype."""
        from . import ops

        lr = self.schedule(epoch)
        try:
            ops._factor("lr", lr, model.theta)
        except ValueError as e:
            raise ValueError(f"{self.schedule!r} gives lr = {lr:g} at epoch {epoch}; {e}") from None
        return lr

    def on_epoch_begin(self, model, epoch):
        model.optimizer.lr = self.schedule(epoch)

    def __repr__(self):
        return f"LRScheduler({self.schedule!r})"
