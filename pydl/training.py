"""The mini-batch training loop behind ``Sequential.fit``."""
from __future__ import annotations

import math
import signal
import threading
from numbers import Integral

import numpy as np

from .callbacks import Callback, History, ProgressBar
from .model import _nonfinite_error, _refuse_masked, _row_chunks

__all__ = ["fit", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """The training cost became NaN or inf; the model keeps its last finite parameters."""


def _positive_int(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)) or int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _is_memmap(X) -> bool:
    """X is an array backed by a memory-mapped file, through any chain of views
    (``np.asarray(mm)[:k]`` too): fit streams it rather than converting it whole."""
    from .data import _is_memory_mapped

    return isinstance(X, np.ndarray) and _is_memory_mapped(X)


def fit(model, X, y, optimizer=None, epochs: int = 10, batch_size: int = 64,
        validation_data=None, shuffle: bool = True, callbacks=(), initial_epoch: int = 0,
        verbose: int = 1, augment=None) -> History:
    """Train ``model`` by mini-batch gradient descent; returns a ``History``.

    X (m, n_in); y as the model's loss takes it. Each epoch e (from ``initial_epoch``,
    default 0, up to but excluding ``epochs``) shuffles the rows with a generator keyed
    by (model.seed, e), splits them into mini-batches of ``batch_size`` (the last one
    partial; batch_size = m is batch gradient descent, 1 is stochastic; a batch_size
    larger than m means one batch of all m rows), and for each runs forward, backward
    and ``optimizer.step``. As in Keras, ``epochs`` is the index of the last epoch plus
    one, not a count: to resume a model that has trained (or was loaded), pass
    ``initial_epoch=model.epoch`` and an ``epochs`` beyond it (below it is a ValueError;
    equal to it, nothing to do: the model, its history and optimizer stay as they are,
    and an empty History is returned). Dropout masks are keyed
    by (seed, step, layer), so training 2 epochs, saving, loading and training 2 more
    (``epochs=4, initial_epoch=2``) gives bitwise the same theta as 4 in one go.

    BatchNorm cannot learn from one example (its batch variance is 0: the layers before it
    get no gradient and its running variance decays towards 0), so a model with BatchNorm
    refuses batch_size=1, and a lone last row (m % batch_size == 1) joins the batch before
    it, which then has batch_size + 1 rows.

    optimizer : an Optimizer, a name ("adam", ...), or None for ``model.optimizer``
        (or Adam() if the model has none). Stored as ``model.optimizer``.
    validation_data : (X_dev, y_dev) evaluated after every epoch ("dev_loss", ...).
    callbacks : pydl.callbacks objects; a ProgressBar is added when verbose=1.
    augment : callable ``augment(Xb, rng) -> Xb`` applied to every mini-batch.
    X may be a memory-mapped array (np.memmap / np.load(mmap_mode="r")): it is then
    streamed in shuffled blocks and never read whole.

    A non-finite cost or BatchNorm running statistic, or an update that would make theta
    or the optimizer's state non-finite (it is then not applied), stops training with
    ``TrainingDiverged``; the
    model keeps the (finite) parameters, BatchNorm statistics and optimizer state from
    before the failing step.

    Any exception, KeyboardInterrupt included, leaves the model at a step boundary: theta,
    the optimizer's state, the BatchNorm statistics and ``model.step`` all as after the
    last update applied. ``model.epoch`` counts whole epochs only, so after an interrupt in
    the middle of an epoch ``fit(..., initial_epoch=model.epoch)`` runs that epoch again
    in full from there (it is not the same as an uninterrupted run; resuming from a
    checkpoint written at the end of an epoch is). ``history.completed`` is False then,
    and EarlyStopping does not restore its best epoch.
    """
    from .optim import Adam, get_optimizer

    epochs = _positive_int("epochs", epochs, 0)
    start = _positive_int("initial_epoch", initial_epoch, 0)
    if epochs < start:
        raise ValueError(f"epochs={epochs} is below initial_epoch={start}: epochs is the epoch to "
                         f"train up to, not a count (for {epochs} more, epochs={start + epochs})")
    if not isinstance(verbose, (bool, np.bool_)) and verbose not in (0, 1):
        raise TypeError(f"verbose must be 0 or 1 (or a bool), got {verbose!r}")
    batch_size = _positive_int("batch_size", batch_size)
    if augment is not None and not callable(augment):
        raise TypeError("augment must be a callable augment(Xb, rng) -> Xb")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")

    _refuse_masked(X, "X")
    streaming = _is_memmap(X)
    if streaming:
        if X.ndim != 2 or X.shape[1] != model.n_in:
            raise ValueError(f"X must have shape (m, {model.n_in}), got {X.shape}")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X must be a numeric array, got dtype {X.dtype}")
        m = X.shape[0]
        if m == 0:
            raise ValueError("X is empty (0 rows)")
    else:
        X = model._check_X(X)
        m = X.shape[0]
    y = model._check_y(y, m)
    batch_size = min(batch_size, m)  # more than m: one batch of all m rows
    join_lone_row = _join_lone_row(model, m, batch_size)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_dev, y_dev)")
        name = "validation_data[0]"
        Xd = model._rows(validation_data[0], name)
        if _is_memmap(Xd):  # converted a chunk at a time at every evaluation, as it is read
            chunks = lambda: model._converted_chunks(Xd, name)  # noqa: E731
        else:  # converted (checked, standardized) once, before training
            Xd = model._converted(Xd, name)
            chunks = lambda: _row_chunks(Xd)  # noqa: E731
        val = (chunks, model._check_y(validation_data[1], Xd.shape[0], "validation_data[1]"))

    if optimizer is None:
        optimizer = model.optimizer if model.optimizer is not None else Adam()
    optimizer = get_optimizer(optimizer)
    if epochs == start:  # nothing to train: the model (history, optimizer) stays as it is
        done = History()
        done.completed = True
        return done
    optimizer._buffers(model.theta)  # another model's optimizer: refused before anything changes
    model.optimizer = optimizer

    try:
        callbacks = list(callbacks) if callbacks is not None else []
    except TypeError:
        raise TypeError("callbacks must be a list of pydl.callbacks.Callback objects, got "
                        f"{type(callbacks).__name__}") from None
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be pydl.callbacks.Callback objects, got {type(cb).__name__}")
    if verbose and not any(isinstance(cb, ProgressBar) for cb in callbacks):
        callbacks.append(ProgressBar())

    history = History()
    model.history = history
    model.stop_training = False
    classification = model.loss.classification
    # forward and backward leave theta alone; they do move BatchNorm's running statistics
    state = [a for layer in model.layers for a in layer.state_arrays().values()]
    state_backup = [a.copy() for a in state]
    # a batch whose variance overflows leaves inf in running_var (the mean overflows only
    # with an inf input, which makes the cost NaN): one reduction per BatchNorm per step
    variances = [a for layer in model.layers for k, a in layer.state_arrays().items()
                 if k == "running_var"]

    xbuf = np.empty((batch_size + join_lone_row, model.n_in), dtype=model.dtype)
    ybuf = np.empty((batch_size + join_lone_row,) + y.shape[1:], dtype=y.dtype)
    steps_per_epoch = -(-m // batch_size) - join_lone_row

    begun = []  # callbacks whose on_train_begin ran: they get on_train_end whatever happens
    guard = _StepGuard()
    try:
        for cb in callbacks:
            cb.on_train_begin(model, epochs=epochs, initial_epoch=start, steps_per_epoch=steps_per_epoch)
            begun.append(cb)
        for epoch in range(start, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(model, epoch)
            rng = np.random.default_rng([model.seed, epoch])
            aug_rng = np.random.default_rng([model.seed, epoch, 1]) if augment is not None else None
            loss_sum, correct = 0.0, 0
            for Xb, yb in _batches(X, y, m, batch_size, shuffle, rng, streaming, xbuf, ybuf, model,
                                   join_lone_row, augment is not None):
                if augment is not None:
                    Xb = _augmented(augment, Xb, aug_rng, model.dtype)
                for a, b in zip(state, state_backup):
                    np.copyto(b, a)
                t0, step0 = optimizer.t, model.step
                try:
                    J = _train_step(model, optimizer, Xb, yb, epoch, variances, guard)
                except BaseException:  # an interrupt, too: the model stays at a step boundary
                    if optimizer.t == t0:  # not applied: undo the forward's BatchNorm statistics
                        for a, b in zip(state, state_backup):
                            np.copyto(a, b)
                        model.step = step0
                    else:  # applied (interrupted after the update)
                        model.step = step0 + 1
                    raise
                n = Xb.shape[0]
                loss_sum += J * n
                if classification:
                    correct += model.loss.correct(model._logits, yb)
                history.iterations.append(J)
            model.epoch = epoch + 1
            logs = {"loss": loss_sum / m}
            if classification:
                logs["accuracy"] = correct / m
            if val is not None:
                for k, v in model._evaluate(val[0](), val[1]).items():
                    logs["dev_" + k] = v
            logs["lr"] = optimizer.lr
            history.record(epoch, **logs)
            for cb in callbacks:
                cb.on_epoch_end(model, epoch, logs)
            if model.stop_training:
                break
        history.completed = True
    except BaseException as e:
        ended = e
        raise
    else:
        ended = None
    finally:
        guard.close()
        errors = []
        for cb in begun:  # each one, even after another's on_train_end raised
            try:
                cb.on_train_end(model)
            except BaseException as e:
                errors.append((cb, e))
        if errors:
            if ended is None:
                raise errors[0][1]
            # what ended training stays the error raised (TrainingDiverged, Ctrl-C)
            for cb, e in errors:
                if hasattr(ended, "add_note"):  # Python >= 3.11
                    ended.add_note(f"and then {type(cb).__name__}.on_train_end raised "
                                   f"{type(e).__name__}: {e}")
    return history


class _StepGuard:
    """Holds Ctrl-C (SIGINT) back while an optimizer step runs and raises it right after, so
    that an interrupted fit has t, theta and model.step in agreement. Only in the main thread
    and over Python's default handler (a handler of the caller's own is left alone)."""

    def __init__(self):
        self.inside = self.pending = False
        self.previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame):
        if self.inside:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def step(self, optimizer, model) -> None:
        self.inside = True
        try:
            optimizer.step(model)
        finally:
            self.inside = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def _train_step(model, optimizer, Xb, yb, epoch, variances, guard) -> float:
    """Forward, backward and the update on one mini-batch; returns its cost J. Raises
    TrainingDiverged, with no update applied, when the cost, a BatchNorm running variance
    or the update would not be finite (the caller puts back the BatchNorm statistics)."""
    J = model._forward_backward(Xb, yb)
    if not math.isfinite(J):
        raise TrainingDiverged(
            f"training diverged: the cost became {J} at epoch {epoch}, step {model.step} "
            f"(lr={optimizer.lr:g}); the model keeps the parameters of the last step with "
            "a finite cost. Lower the learning rate or check the inputs.")
    # normalized activations keep the cost finite while a batch's variance
    # overflows: the running statistics would then make evaluation all NaN
    if variances and not all(math.isfinite(a.sum()) for a in variances):
        raise TrainingDiverged(
            f"training diverged: BatchNorm's running statistics became non-finite at "
            f"epoch {epoch}, step {model.step} (lr={optimizer.lr:g}); the model keeps "
            "them and the parameters from before that step. Lower the learning rate "
            "or check the inputs.")
    # a finite cost can still give an update that overflows: the optimizer then
    # applies none of it (theta, its moments and t stay as they were)
    try:
        guard.step(optimizer, model)
    except FloatingPointError:
        raise TrainingDiverged(
            f"training diverged: the update at epoch {epoch}, step {model.step} would make "
            f"the parameters or the optimizer's state non-finite (lr={optimizer.lr:g}); it "
            "was not applied, so the model keeps the parameters from before that step. "
            "Lower the learning rate or check the inputs.") from None
    return J


def _join_lone_row(model, m: int, batch_size: int) -> bool:
    """Whether the batch of one row that m % batch_size == 1 leaves joins another (the model
    has BatchNorm); raises when every batch would have one row."""
    from .nn import BatchNorm

    if not any(isinstance(layer, BatchNorm) for layer in model.layers):
        return False
    if m == 1:
        raise ValueError(
            "X has 1 row, but the model has BatchNorm, whose training needs batches of at least "
            "2 rows (over one sample the batch variance is 0): pass at least 2 rows")
    if batch_size == 1:
        raise ValueError(
            "batch_size=1, but the model has BatchNorm: over one sample the batch variance is 0, "
            "so the layers before it get no gradient and its running variance decays towards 0; "
            "use batch_size >= 2 (a lone last row then joins the batch before it)")
    return m % batch_size == 1


def _batches(X, y, m, batch_size, shuffle, rng, streaming, xbuf, ybuf, model, join_lone_row,
             augment_copy=False):
    """Yield (Xb, yb) mini-batches; in-memory rows are gathered into reused buffers (with
    augment_copy, unshuffled ones too: an augment hook gets a copy, never the caller's X).
    With join_lone_row, the batch of one row goes with its neighbour (the one before it)."""
    if streaming:
        from .data import minibatches

        seed = int(rng.integers(2**63)) if shuffle else None
        pending = None  # streamed batches are copies: holding one back is safe
        for Xb, yb in minibatches(X, y, batch_size, shuffle=shuffle, seed=seed):
            Xb = model._standardized(Xb)
            raw = Xb
            with np.errstate(over="ignore"):  # values beyond the dtype's range: reported below
                Xb = np.ascontiguousarray(Xb, dtype=model.dtype)
            if not np.isfinite(Xb).all():
                e = _nonfinite_error("X", raw, model.dtype)
                raise ValueError(f"{e} (found in a streamed mini-batch)")
            batch = (Xb, np.ascontiguousarray(yb))
            if not join_lone_row:
                yield batch
            elif pending is None:
                pending = batch
            elif len(pending[0]) == 1 or len(batch[0]) == 1:  # shuffled blocks can put the
                pending = _joined(pending, batch)             # short batch anywhere
            else:
                yield pending
                pending = batch
        if pending is not None:
            yield pending
        return
    order = rng.permutation(m) if shuffle else None
    for s in range(0, m, batch_size):
        e = min(s + batch_size, m)
        if join_lone_row and e == m - 1:
            e = m
        if order is None and augment_copy:  # the augment hook may edit its batch in place
            n = e - s
            np.copyto(xbuf[:n], X[s:e])
            yield xbuf[:n], y[s:e]
        elif order is None:
            yield X[s:e], y[s:e]
        else:
            idx = order[s:e]
            n = e - s
            yield X.take(idx, axis=0, out=xbuf[:n]), y.take(idx, axis=0, out=ybuf[:n])
        if e == m:
            break


def _joined(first, second):
    return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])


def _augmented(augment, Xb, rng, dtype):
    out = augment(Xb, rng)
    if not isinstance(out, np.ndarray) or out.shape != Xb.shape:
        raise ValueError(f"augment must return an array of shape {Xb.shape}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    if out.dtype.kind not in "biuf":
        raise TypeError(f"augment must return a numeric array, got dtype {out.dtype}")
    out = np.ascontiguousarray(out, dtype=dtype)
    if not np.isfinite(out).all():  # NaN would otherwise reach the kernels unchecked
        raise ValueError("augment returned NaN or inf")
    return out
