"""Training callbacks and the History record that ``fit`` returns."""
from __future__ import annotations

import numpy as np


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
