"""Averaging ensembles and snapshot ensembles.

``Ensemble(models)`` averages predicted probabilities (classification) or outputs (mse):
p(x) = (1/K) sum_k p_k(x). ``SnapshotEnsemble`` is a callback that keeps copies of the
model during one training run (every ``every`` epochs, the last ``keep`` of them) and
turns them into an Ensemble.
"""
from __future__ import annotations

import numpy as np

from .callbacks import Callback

__all__ = ["Ensemble", "SnapshotEnsemble"]


class Ensemble:
    """Average of K models with the same input width, output width and loss."""

    def __init__(self, models, weights=None):
        try:
            models = list(models)
        except TypeError:
            raise TypeError(f"models must be a list of pydl models, got "
                            f"{type(models).__name__}") from None
        if not models:
            raise ValueError("models must be a non-empty list of pydl models")
        first = models[0]
        for i, mdl in enumerate(models):
            for attr in ("n_in", "n_out", "loss", "forward"):
                if not hasattr(mdl, attr):
                    raise TypeError(f"models[{i}] is not a pydl model (no {attr})")
            if (mdl.n_in, mdl.n_out, mdl.loss.name) != (first.n_in, first.n_out, first.loss.name):
                raise ValueError(f"models[{i}] has (n_in, n_out, loss) = ({mdl.n_in}, {mdl.n_out}, "
                                 f"{mdl.loss.name!r}); models[0] has ({first.n_in}, {first.n_out}, "
                                 f"{first.loss.name!r})")
        if weights is None:
            w = np.full(len(models), 1.0 / len(models))
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(models),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights must be {len(models)} non-negative finite numbers with a positive sum")
            w = w / w.sum()
        self.models, self.weights = models, w
        self.loss = first.loss

    def _average(self, X) -> np.ndarray:
        out = None
        for w, mdl in zip(self.weights, self.models):
            p = mdl.predict_proba(X) if self.loss.classification else mdl.predict(X)
            p = np.asarray(p, dtype=np.float64)
            out = w * p if out is None else out + w * p
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Weighted mean of the members' probabilities, (m, C) (or (m, 1) for sigmoid)."""
        if not self.loss.classification:
            raise TypeError("predict_proba needs classification models; use predict")
        return self._average(X)

    def predict(self, X) -> np.ndarray:
        """Class ids (m,) from the averaged probabilities, or averaged outputs (m, k)."""
        p = self._average(X)
        if not self.loss.classification:
            return p
        if p.shape[1] == 1:
            return (p[:, 0] > 0.5).astype(np.int64)
        return p.argmax(axis=1)

    def evaluate(self, X, y) -> dict:
        """{"accuracy"} for classification, {"mse"} otherwise, of the ensemble's prediction."""
        first = self.models[0]
        yc = first._check_y(y, first._rows(X).shape[0])
        pred = self.predict(X)  # (as given: each member standardizes it, if it has a standardizer)
        if self.loss.classification:
            labels = yc if yc.ndim == 1 else (yc[:, 0] > 0.5 if yc.shape[1] == 1 else yc.argmax(axis=1))
            return {"accuracy": float((pred == labels).mean())}
        return {"mse": float(((pred - yc) ** 2).mean())}

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"Ensemble({len(self.models)} models, loss={self.loss.name!r})"


class SnapshotEnsemble(Callback):
    """Keep a copy of the model every ``every`` epochs (the last ``keep`` copies);
    ``ensemble()`` averages them. Pair it with a cyclic or decaying learning rate.

    The snapshots belong to one run of one model: a fit from epoch 0, or of another model,
    starts with an empty list (so reusing the callback never mixes copies of earlier runs
    or other models), while a fit that resumes the same model (``initial_epoch > 0``)
    keeps adding to it."""

    def __init__(self, every: int = 1, keep: int = 5):
        for name, v in (("every", every), ("keep", keep)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.every, self.keep = int(every), int(keep)
        self.snapshots: list = []

    def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
        if initial_epoch == 0 or getattr(self, "_model", None) is not model:
            self.snapshots = []
        self._model = model

    def on_epoch_end(self, model, epoch, logs):
        if (epoch + 1) % self.every == 0:
            self.snapshots.append(model.copy())
            del self.snapshots[:-self.keep]

    def ensemble(self) -> Ensemble:
        if not self.snapshots:
            raise ValueError("no snapshots were taken (train for at least `every` epochs)")
        return Ensemble(self.snapshots)

    def __repr__(self):
        return f"SnapshotEnsemble(every={self.every}, keep={self.keep})"
