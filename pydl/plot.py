"""Plots for seeing why a network trains well or badly (matplotlib, optional).

matplotlib is imported inside each plotting function, never when this module
is imported; without it the functions raise ``ImportError`` saying
``pip install matplotlib`` (the ``[plot]`` extra). :func:`confusion_counts` and :func:`decision_grid`
are plain NumPy and always work.

Every plotting function takes ``ax=None`` (draw on new axes of a new figure,
made with ``matplotlib.pyplot`` so ``plt.show()`` works; close it with
``plt.close(fig)`` when making many) or existing axes, and ``path=None`` (if
given, the whole figure is saved there; the format follows the extension and
is PNG by default). Each returns the ``matplotlib.figure.Figure``.

A *history* is a :class:`pydl.callbacks.History` (what ``fit`` returns) or its
``to_dict()`` form: ``epoch`` is the list of epoch indices and
``history[key]`` holds one value per epoch for keys such as ``"loss"``,
``"accuracy"``, ``"dev_loss"``, ``"dev_accuracy"`` and ``"lr"``.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "learning_curves",
    "iteration_costs",
    "decision_boundary",
    "decision_grid",
    "plot_history",
    "confusion_matrix",
    "confusion_counts",
]

_INSTALL_HINT = "pydl.plot needs matplotlib, which is not installed: pip install matplotlib (or the [plot] extra of pydl)"


# --------------------------------------------------------------------------- helpers


def _pyplot():
    """``matplotlib.pyplot``, imported on first use, or a clear ImportError."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return plt


def _new_axes(ax, nrows: int = 1, ncols: int = 1, figsize=(6.4, 4.8)):
    """``(figure, [axes...])``: the given axes, or a new figure with nrows x ncols axes."""
    if ax is not None:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        for a in axes:
            if not hasattr(a, "figure") or not hasattr(a, "plot"):
                raise TypeError(f"ax must be matplotlib Axes, got {type(a).__name__}")
        return axes[0].figure, axes
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    return fig, list(axes.ravel())


def _save(fig, path) -> None:
    if path is not None:
        fig.savefig(os.fspath(path))


def _as_history(history: Any):
    """Accept a History (anything with ``.epoch`` and ``.history``) or its dict form."""
    if isinstance(history, dict):
        from .callbacks import History

        try:
            history = History.from_dict(history)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"history is not a valid History.to_dict() form: {exc}") from None
    if history is None or not hasattr(history, "epoch") or not hasattr(history, "history"):
        raise TypeError(
            "history must be a pydl.callbacks.History (what fit returns) or its to_dict() "
            f"form, got {type(history).__name__}")
    return history


def _require_epochs(history) -> None:
    if len(history.epoch) == 0:
        raise ValueError("history is empty: it has no recorded epochs to plot")


def _series(history, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` for one history key; non-finite values become gaps (NaN)."""
    values = np.asarray(history.history[key], dtype=np.float64)
    epochs = np.asarray(history.epoch, dtype=np.int64)
    if values.ndim != 1 or values.shape[0] != epochs.shape[0]:
        raise ValueError(
            f"history[{key!r}] has {values.size} values but history.epoch has "
            f"{epochs.shape[0]} epochs; they must match")
    return epochs, np.where(np.isfinite(values), values, np.nan)


def _integer_xaxis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_best_epoch(ax, best_epoch) -> None:
    if best_epoch is not None:
        ax.axvline(int(best_epoch), color="0.4", linestyle="--", linewidth=1.0,
                   label=f"best epoch ({int(best_epoch)})")


def _ewa(values: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponentially weighted average.

    ``v_0 = 0``, ``v_t = beta v_{t-1} + (1 - beta) theta_t``, returned as
    ``v_t / (1 - beta^t)`` for t = 1..n.
    """
    out = np.empty(values.shape[0], dtype=np.float64)
    v = 0.0
    for t, theta in enumerate(values, start=1):
        v = beta * v + (1.0 - beta) * theta
        out[t - 1] = v / (1.0 - beta ** t)
    return out


def _class_ids(name: str, y: Any) -> np.ndarray:
    """Labels as a 1-D int array: class ids ``(m,)``, or one-hot/scores ``(m, C)`` -> argmax."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = np.argmax(arr, axis=1)
    elif arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be class ids of shape (m,) or one-hot of shape (m, C), "
            f"got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype} "
                             "with non-integer values")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold class ids >= 0, found {arr.min()}")
    return arr


# --------------------------------------------------------------------------- history plots


def learning_curves(history, ax=None, path=None):
    """Train vs dev cost per epoch, and accuracy in a second panel when recorded.

    Draws ``history["loss"]`` ("train") and ``history["dev_loss"]`` ("dev")
    against ``history.epoch``; when ``"accuracy"`` or ``"dev_accuracy"`` is
    present, a second panel shows them. A dashed vertical line marks
    ``history.best_epoch`` (the early-stopping point) if set. A gap between
    the train and dev curves is variance; a high train curve is bias.

    ``ax``: one Axes (cost only) or a pair ``(cost_ax, accuracy_ax)``.
    Returns the Figure.
    """
    history = _as_history(history)
    _pyplot()
    _require_epochs(history)
    loss_keys = [k for k in ("loss", "dev_loss") if k in history.history]
    if not loss_keys:
        raise ValueError(
            "history has neither 'loss' nor 'dev_loss' to plot; it has keys "
            f"{sorted(history.history)}")
    acc_keys = [k for k in ("accuracy", "dev_accuracy") if k in history.history]
    series = {k: _series(history, k) for k in loss_keys + acc_keys}

    n_panels = 2 if acc_keys else 1
    fig, axes = _new_axes(ax, 1, n_panels, figsize=(5.5 * n_panels, 4.0))
    if len(axes) < n_panels:
        acc_keys = []  # one Axes given: cost only, as documented
    labels = {"loss": "train", "dev_loss": "dev", "accuracy": "train", "dev_accuracy": "dev"}

    cost_ax = axes[0]
    for key in loss_keys:
        cost_ax.plot(*series[key], marker="o", markersize=3, label=labels[key])
    cost_ax.set_xlabel("epoch")
    cost_ax.set_ylabel("cost")
    cost_ax.set_title("Learning curves: cost")
    panels = [cost_ax]
    if acc_keys:
        acc_ax = axes[1]
        for key in acc_keys:
            acc_ax.plot(*series[key], marker="o", markersize=3, label=labels[key])
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_title("Learning curves: accuracy")
        panels.append(acc_ax)
    for a in panels:
        _mark_best_epoch(a, history.best_epoch)
        _integer_xaxis(a)
        a.grid(True, alpha=0.3)
        a.legend()
    _save(fig, path)
    return fig


def iteration_costs(history, beta: float = 0.98, ax=None, path=None):
    """Per-iteration mini-batch cost and its bias-corrected moving average.

    The raw curve is ``history.iterations`` (noisy with mini-batches); the
    smooth one is the exponentially weighted average ``v_t = beta v_{t-1} +
    (1 - beta) J_t``, ``v_0 = 0``, shown bias-corrected as
    ``v_t / (1 - beta^t)`` so it does not start near zero. It averages roughly
    the last ``1 / (1 - beta)`` iterations. ``beta`` in ``[0, 1)``.
    Returns the Figure.
    """
    history = _as_history(history)
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) \
            or not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")
    beta = float(beta)
    _pyplot()
    costs = np.asarray(getattr(history, "iterations", []), dtype=np.float64).ravel()
    if costs.size == 0:
        raise ValueError("history has no per-iteration costs to plot (history.iterations is empty)")

    fig, axes = _new_axes(ax, figsize=(7.0, 4.0))
    a = axes[0]
    steps = np.arange(1, costs.size + 1)
    a.plot(steps, np.where(np.isfinite(costs), costs, np.nan), linewidth=0.8, alpha=0.4,
           label="mini-batch cost")
    a.plot(steps, _ewa(costs, beta), linewidth=2.0,
           label=f"moving average (beta={beta:g}, bias-corrected)")
    a.set_xlabel("iteration")
    a.set_ylabel("cost")
    a.set_title("Mini-batch cost per iteration")
    _integer_xaxis(a)
    a.grid(True, alpha=0.3)
    a.legend()
    _save(fig, path)
    return fig


def plot_history(history, keys: str | Sequence[str] | None = None, ax=None, path=None,
                 logy: bool = False, title: str | None = None):
    """Any history keys against epoch, one line per key, labelled with the key.

    ``keys=None`` draws every key in ``history.history``; a single string is
    one key. ``logy=True`` uses a log-scale y axis (useful for ``"lr"``).
    Returns the Figure.
    """
    history = _as_history(history)
    _pyplot()
    _require_epochs(history)
    if keys is None:
        keys = list(history.history)
    elif isinstance(keys, str):
        keys = [keys]
    else:
        keys = list(keys)
    if not keys:
        raise ValueError("keys is empty and history has no recorded values; nothing to plot")
    missing = [k for k in keys if k not in history.history]
    if missing:
        raise ValueError(
            f"history has no key(s) {missing}; available keys: {sorted(history.history)}")
    series = {k: _series(history, k) for k in keys}

    fig, axes = _new_axes(ax, figsize=(6.4, 4.0))
    a = axes[0]
    for key in keys:
        a.plot(*series[key], marker="o", markersize=3, label=key)
    _mark_best_epoch(a, history.best_epoch)
    if logy:
        a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel(keys[0] if len(keys) == 1 else "value")
    a.set_title(title if title is not None else "Training history")
    _integer_xaxis(a)
    a.grid(True, alpha=0.3)
    a.legend()
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------- decision boundary


def _predict_fn(model) -> Callable[[np.ndarray], Any]:
    if hasattr(model, "predict") and callable(model.predict):
        return model.predict
    if callable(model):
        return model
    raise TypeError(
        "model must have a predict(X) method returning class ids, or be a callable X -> ids; "
        f"got {type(model).__name__}")


def _check_points(X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have shape (m, 2) (two features to plot), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows; need at least one point")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    return X


def decision_grid(model, X, resolution: int = 200):
    """Predicted class on a ``resolution x resolution`` grid covering ``X``.

    The grid spans each feature's ``[min - pad, max + pad]`` with
    ``pad = 0.1 * (max - min)`` (1.0 for a constant feature). Grid points are
    passed to the model as one ``(resolution**2, 2)`` array in ``X``'s float
    dtype (float64 for integer X). Predictions may be class ids ``(N,)`` or
    scores/one-hot ``(N, C)`` (argmax is taken).

    Returns ``(xx, yy, labels)``, each of shape ``(resolution, resolution)``:
    ``xx[i, j]``, ``yy[i, j]`` are the coordinates and ``labels[i, j]`` the
    predicted class id there (rows follow ``x2``, columns ``x1``).
    """
    predict = _predict_fn(model)
    X = _check_points(X)
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) \
            or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    resolution = int(resolution)
    dtype = X.dtype if X.dtype.kind == "f" else np.dtype(np.float64)
    lo = X.min(axis=0).astype(np.float64)
    hi = X.max(axis=0).astype(np.float64)
    span = hi - lo
    pad = np.where(span > 0, 0.1 * span, 1.0)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(xs, ys)
    grid = np.ascontiguousarray(np.column_stack([xx.ravel(), yy.ravel()]), dtype=dtype)
    pred = np.asarray(predict(grid))
    if pred.ndim == 0 or pred.shape[0] != grid.shape[0]:
        raise ValueError(
            f"model returned predictions of shape {pred.shape} for {grid.shape[0]} grid points; "
            "expected one class id per point")
    labels = _class_ids("model predictions", pred)
    return xx, yy, labels.reshape(resolution, resolution)


def decision_boundary(model, X, y, ax=None, path=None, resolution: int = 200,
                      title: str | None = None):
    """Decision regions of a 2-feature classifier with the data on top.

    ``model`` has ``predict(X) -> class ids`` (e.g. ``Sequential``) or is a
    callable ``X -> class ids``; ``X`` is ``(m, 2)``; ``y`` the true classes,
    ids ``(m,)`` or one-hot ``(m, C)``. The filled contour is
    :func:`decision_grid`'s prediction; point colors are the true classes on
    the same color scale, so a misclassified point sits on a differently
    colored region. Returns the Figure.
    """
    predict = _predict_fn(model)
    X = _check_points(X)
    y = _class_ids("y", y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows but X has {X.shape[0]}; they must match")
    _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    import matplotlib

    xx, yy, labels = decision_grid(predict, X, resolution)
    n_classes = int(max(labels.max(), y.max())) + 1
    palette = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20"]
    cmap = ListedColormap([palette(i % palette.N) for i in range(n_classes)])
    levels = np.arange(n_classes + 1) - 0.5
    norm = BoundaryNorm(levels, n_classes)

    fig, axes = _new_axes(ax, figsize=(5.5, 5.0))
    a = axes[0]
    a.contourf(xx, yy, labels, levels=levels, cmap=cmap, norm=norm, alpha=0.35)
    a.scatter(X[:, 0], X[:, 1], c=y, cmap=cmap, norm=norm, s=18, edgecolors="k",
              linewidths=0.4)
    a.set_xlim(xx[0, 0], xx[0, -1])
    a.set_ylim(yy[0, 0], yy[-1, 0])
    a.set_xlabel("x1")
    a.set_ylabel("x2")
    a.set_title(title if title is not None else "Decision boundary")
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------- confusion matrix


def confusion_counts(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Confusion matrix ``C`` of shape ``(n_classes, n_classes)``, int64.

    ``C[i, j]`` = number of examples whose true class is ``i`` and predicted
    class is ``j``; rows sum to the class counts of ``y_true``, the diagonal
    counts correct predictions, ``trace(C) / m`` is the accuracy. Labels are
    class ids ``(m,)`` or one-hot/scores ``(m, C)`` (argmax). ``n_classes``
    defaults to ``1 + max`` label seen.
    """
    t = _class_ids("y_true", y_true)
    p = _class_ids("y_pred", y_pred)
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_pred has {p.shape[0]} labels but y_true has {t.shape[0]}; they must match")
    seen = int(max(t.max(), p.max())) + 1 if t.size else 0
    if n_classes is None:
        if t.size == 0:
            raise ValueError("y_true is empty; pass n_classes to get an all-zero matrix")
        n_classes = seen
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) \
            or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    n_classes = int(n_classes)
    if seen > n_classes:
        raise ValueError(
            f"labels go up to class {seen - 1} but n_classes is {n_classes}; "
            "class ids must be < n_classes")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def confusion_matrix(y_true, y_pred, n_classes: int | None = None, ax=None, path=None,
                     normalize: bool = False, title: str | None = None):
    """Heat map of :func:`confusion_counts` (rows: true class, columns: predicted).

    With ``normalize=True`` each row is divided by its total, so the diagonal
    is the per-class recall. Cells are annotated with their value when there
    are at most 20 classes. Returns the Figure.
    """
    counts = confusion_counts(y_true, y_pred, n_classes)
    _pyplot()
    n = counts.shape[0]
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    else:
        values = counts

    size = min(2.0 + 0.5 * n, 12.0)
    fig, axes = _new_axes(ax, figsize=(size + 1.0, size))
    a = axes[0]
    image = a.imshow(values, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(image, ax=a, label="fraction of true class" if normalize else "count")
    if n <= 20:
        a.set_xticks(range(n))
        a.set_yticks(range(n))
        top = values.max() if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                dark = top > 0 and values[i, j] > 0.5 * top
                a.text(j, i, text, ha="center", va="center", fontsize=8,
                       color="white" if dark else "black")
    a.set_xlabel("predicted class")
    a.set_ylabel("true class")
    a.set_title(title if title is not None else "Confusion matrix")
    _save(fig, path)
    return fig
