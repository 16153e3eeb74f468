"""Training callbacks and the History record that ``fit`` returns.

``History`` (returned by fit), ``ProgressBar`` (on by default with verbose=1),
``EarlyStopping``, ``Checkpoint`` (atomic writes), ``LRScheduler``. The NaN guard is
built into ``fit`` itself (see ``pydl.training.TrainingDiverged``).
"""
from __future__ import annotations

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
    """

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.iterations: list[float] = []
        self.best_epoch: int | None = None

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
        h = cls()
        h.epoch = [int(e) for e in d.get("epoch", [])]
        h.history = {k: [float(x) for x in v] for k, v in d.get("history", {}).items()}
        h.iterations = [float(x) for x in d.get("iterations", [])]
        h.best_epoch = d.get("best_epoch")
        return h

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}], iterations={len(self.iterations)})"


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
    """Stop when ``monitor`` (default "dev_loss") has not improved by more than
    ``min_delta`` for ``patience`` epochs; with ``restore_best`` put back the parameters
    (and BatchNorm statistics) of the best epoch. Records ``history.best_epoch``."""

    def __init__(self, monitor: str = "dev_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True, mode: str = "auto"):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name like 'dev_loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not np.isfinite(min_delta) \
                or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
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
        if self.restore_best and self._best_theta is not None:
            model.theta[...] = self._best_theta
            live = [a for l in model.layers for a in l.state_arrays().values()]
            for a, b in zip(live, self._best_state):
                a[...] = b

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best})")


class Checkpoint(Callback):
    """Save the model (with optimizer state, epoch and step) every ``every`` epochs.

    ``path`` may contain ``{epoch}`` (the number of epochs completed), e.g.
    "ckpt/model-{epoch:03d}.npz"; ``keep_last=k`` deletes all but the k newest files this
    callback wrote. Writes are atomic (temporary file, fsync, rename), so a crash at any
    moment leaves the previous checkpoints intact and loadable.
    """

    def __init__(self, path, every: int = 1, keep_last: int | None = None):
        import os

        self.path = os.fspath(path)
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, (int, np.integer))
                                      or keep_last < 1):
            raise ValueError(f"keep_last must be an integer >= 1 or None, got {keep_last!r}")
        self.every, self.keep_last = int(every), keep_last
        self.written: list[str] = []

    def _target(self, done: int) -> str:
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
    a pydl.schedules object or any callable epoch -> lr."""

    def __init__(self, schedule):
        from .schedules import as_schedule

        self.schedule = as_schedule(schedule)

    def on_epoch_begin(self, model, epoch):
        model.optimizer.lr = self.schedule(epoch)

    def __repr__(self):
        return f"LRScheduler({self.schedule!r})"
