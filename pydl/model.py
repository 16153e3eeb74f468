"""``Sequential``: layers over ONE flat parameter vector, and ``mlp()`` to build the
usual stacks.

All trainable parameters live in one contiguous ``theta`` (P,) and their gradients in
``dtheta`` (P,); each layer's W, b, gamma, beta are views into theta and dW, db, dgamma,
dbeta views into dtheta. ``parameters()`` lists ``(name, view)`` pairs in theta order,
named like ``"0.W"``. An optimizer step, a save, an ensemble average or a gradient check
is then a single operation on one array.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from numbers import Integral

import numpy as np

from . import nn
from .losses import LOSSES, Loss, get_loss

__all__ = ["Sequential", "mlp", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_EVAL_CHUNK = 4096
_DTYPES = {"float32": np.float32, "float64": np.float64}


def _row_chunks(X):
    """X[i:i + _EVAL_CHUNK] for each chunk of rows (evaluation goes a chunk at a time)."""
    return (X[i:i + _EVAL_CHUNK] for i in range(0, X.shape[0], _EVAL_CHUNK))


def _dtype_name(dtype) -> str:
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if d.name not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {d}")
    return d.name


class Sequential:
    """A feed-forward stack of layers trained on a loss of its last layer's logits.

    Parameters
    ----------
    layers : list of nn.Layer
        e.g. ``[Dense(64, 128), BatchNorm(128), ReLU(), Dropout(0.8), Dense(128, 10)]``.
    loss : str or pydl.losses.Loss
        "softmax_cross_entropy", "sigmoid_cross_entropy" or "mse", or a Loss instance
        (the model keeps a copy of its own: see ``losses.get_loss``).
    seed : int or None
        Seeds initialization, shuffling and dropout masks (None draws one and keeps it).
    dtype : float32 (default) or float64.

    ``model.standardizer``: None, or a fitted ``pydl.data.Standardizer`` of the model's
    n_in features (``pydl train`` sets one, and save/load keep it). When set, every X the
    model takes (fit, forward, forward_backward, cost, evaluate, predict, predict_proba)
    is standardized with it first: pass raw features.
    """

    def __init__(self, layers, loss="softmax_cross_entropy", seed=None, dtype=np.float32):
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a list of pydl.nn layers, got {type(layers).__name__}") from None
        if not layers:
            raise ValueError("layers must be a non-empty list of pydl.nn layers")
        for i, layer in enumerate(layers):
            if isinstance(layer, type) and issubclass(layer, nn.Layer):
                raise TypeError(f"layers[{i}] is the class {layer.__name__}; pass an instance, "
                                f"{layer.__name__}(...)")
            if not isinstance(layer, nn.Layer):
                raise TypeError(f"layers[{i}] must be a pydl.nn.Layer, got {type(layer).__name__}")
        if len(set(map(id, layers))) != len(layers):
            raise ValueError("layers must not contain the same layer object twice")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        if isinstance(seed, bool) or not isinstance(seed, (Integral, np.integer)) or not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
        self.dtype = np.dtype(_DTYPES[_dtype_name(dtype)])
        if not isinstance(loss, (str, Loss)):
            raise TypeError(f"loss must be a loss name (one of {sorted(LOSSES)}) or a pydl.losses.Loss, "
                            f"got {type(loss).__name__}")
        self.layers = layers
        self.loss: Loss = get_loss(loss)
        self.seed = int(seed)
        self.n_in, self.n_out = self._check_widths()
        self.loss.check_outputs(self.n_out)
        self.optimizer = None
        self.epoch = 0          # epochs completed (the next fit continues from here)
        self.step = 0           # mini-batch steps taken (keys the dropout masks)
        self._standardizer = None
        self.history = None
        self._plan = self._fuse()
        self._allocate()
        rng = np.random.default_rng(self.seed)
        for layer in self.layers:
            layer.reset_parameters(rng)

    # ------------------------------------------------------------------ structure
    def _check_widths(self):
        width = None
        n_in = None
        last_dense = None
        for i, layer in enumerate(self.layers):
            if layer.n_in is not None:
                if width is not None and layer.n_in != width:
                    raise ValueError(f"layers[{i}] ({type(layer).__name__}) expects {layer.n_in} inputs "
                                     f"but the previous layer gives {width}")
                if n_in is None:
                    n_in = layer.n_in
                width = layer.n_out
            if isinstance(layer, nn.Dense):
                last_dense = i
        if n_in is None or last_dense is None:
            raise ValueError("the model needs at least one Dense layer")
        if any(isinstance(l, nn.Activation) for l in self.layers[last_dense + 1:]):
            raise ValueError("the last Dense layer outputs logits: put no activation after it "
                             "(the loss applies softmax/sigmoid itself)")
        return n_in, width

    def _fuse(self):
        """Fuse each activation into the Dense/BatchNorm before it; resolve init='auto'."""
        plan = []
        layers = self.layers
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Dense) and layer.init == "auto":
                nxt = next((l for l in layers[i + 1:] if not isinstance(l, (nn.BatchNorm, nn.Dropout))), None)
                layer.resolved_init = "he" if isinstance(nxt, (nn.ReLU, nn.LeakyReLU)) else "xavier"
            if isinstance(layer, nn.Dropout):
                layer.seed, layer.index = self.seed, i
            if isinstance(layer, (nn.Dense, nn.BatchNorm)):
                layer.activation, layer.alpha = "identity", 0.0
            if isinstance(layer, nn.Activation) and plan and isinstance(plan[-1], (nn.Dense, nn.BatchNorm)) \
                    and plan[-1].activation == "identity" and plan[-1] is layers[i - 1]:
                plan[-1].activation, plan[-1].alpha = layer.name, layer.alpha
                continue
            plan.append(layer)
        for layer in self.layers:
            layer.need_input_grad = True
        plan[0].need_input_grad = False
        self._dropouts = [l for l in plan if isinstance(l, nn.Dropout)]
        self._dense = [l for l in self.layers if isinstance(l, nn.Dense)]
        return plan

    def _allocate(self):
        specs = []
        for i, layer in enumerate(self.layers):
            nn._check_param_names(layer, f"layer {i}: ")
            for name, shape in layer.param_shapes():
                specs.append((i, name, shape))
        total = sum(int(np.prod(s)) for _, _, s in specs)
        self._theta = np.zeros(total, dtype=self.dtype)
        self._dtheta = np.zeros(total, dtype=self.dtype)
        self._names = []
        offset = 0
        per_layer: dict[int, tuple[dict, dict]] = {}
        for i, name, shape in specs:
            size = int(np.prod(shape))
            p, g = per_layer.setdefault(i, ({}, {}))
            p[name] = self.theta[offset:offset + size].reshape(shape)
            g[name] = self.dtheta[offset:offset + size].reshape(shape)
            self._names.append((f"{i}.{name}", offset, shape))
            offset += size
        for i, layer in enumerate(self.layers):
            params, grads = per_layer.get(i, ({}, {}))
            layer.bind(params, grads)
            layer._bufs = {}
            if isinstance(layer, nn.BatchNorm):
                layer.running_mean = np.zeros(layer.n_in, self.dtype)
                layer.running_var = np.ones(layer.n_in, self.dtype)

    @property
    def theta(self) -> np.ndarray:
        """All parameters, (P,); each layer's W, b, gamma, beta is a view into it.
        ``model.theta = x`` copies x in (shape (P,), finite): the views stay views."""
        return self._theta

    @theta.setter
    def theta(self, value) -> None:
        nn.assign_in_place(self._theta, value, "theta")

    @property
    def dtheta(self) -> np.ndarray:
        """All gradients, (P,), matching theta; ``model.dtheta = x`` copies x in."""
        return self._dtheta

    @dtheta.setter
    def dtheta(self, value) -> None:
        nn.assign_in_place(self._dtheta, value, "dtheta")

    def parameters(self):
        """[(name, view)] in theta order, e.g. ("0.W", array (n_out, n_in))."""
        return [(name, self.theta[o:o + int(np.prod(s))].reshape(s)) for name, o, s in self._names]

    def gradients(self):
        """[(name, view)] into dtheta, matching ``parameters()``."""
        return [(name, self.dtheta[o:o + int(np.prod(s))].reshape(s)) for name, o, s in self._names]

    def parameter_slices(self):
        """[(name, slice into theta, shape)] in theta order."""
        return [(name, slice(o, o + int(np.prod(s))), s) for name, o, s in self._names]

    @property
    def n_params(self) -> int:
        return int(self.theta.size)

    # ------------------------------------------------------------------ validation
    @property
    def standardizer(self):
        """The Standardizer applied to every input X first (None: inputs are used as given)."""
        return self._standardizer

    @standardizer.setter
    def standardizer(self, value) -> None:
        from .data import Standardizer

        if value is not None:
            if not isinstance(value, Standardizer):
                raise TypeError(f"standardizer must be a pydl.data.Standardizer or None, got "
                                f"{type(value).__name__}")
            if value.n_features_ != self.n_in:
                fitted = "not fitted" if value.n_features_ is None else \
                    f"fitted on {value.n_features_} features"
                raise ValueError(f"standardizer is {fitted}; the model takes {self.n_in}")
        self._standardizer = value

    def _check_X(self, X, name="X"):
        """X as the layers take it: ``_converted(_rows(X))``."""
        return self._converted(self._rows(X, name), name)

    def _rows(self, X, name="X"):
        """X (m, n_in) of numbers, m >= 1, checked but not converted: a memory-mapped X
        stays on disk (evaluation converts it a chunk at a time); raises naming ``name``."""
        _refuse_masked(X, name)
        if not isinstance(X, np.ndarray):
            try:
                X = np.asarray(X)
            except ValueError as e:  # ragged nested sequences
                raise ValueError(f"{name} must be a 2-D array (m, {self.n_in}): {e}") from None
        if X.dtype == object or X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (m, {self.n_in}), got shape {X.shape}")
        if X.shape[1] != self.n_in:
            raise ValueError(f"{name} has {X.shape[1]} features but the model expects {self.n_in}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 rows)")
        return X

    def _standardized(self, X):
        """X through the model's standardizer, if it has one, in the wider of X's and the
        model's dtype (so a float64 model standardizes float32 features in float64)."""
        if self._standardizer is None:
            return X
        return self._standardizer.transform(X.astype(np.result_type(X.dtype, self.dtype),
                                                     copy=False))

    def _converted(self, X, name="X"):
        """Rows from ``_rows`` standardized (with the model's standardizer, if any), in the
        model's dtype, C-contiguous and finite; raises naming ``name``."""
        X = self._standardized(X)
        original = X
        if X.dtype == self.dtype:
            X = np.ascontiguousarray(X)
        else:
            with np.errstate(over="ignore"):  # a float64 value beyond float32's range becomes inf
                X = np.ascontiguousarray(X, dtype=self.dtype)
        if not _all_finite(X):
            raise _nonfinite_error(name, original, self.dtype)
        return X

    def _check_y(self, y, m, name="y"):
        if y is None:
            raise ValueError(f"{name} is required")
        _refuse_masked(y, name)
        return self.loss.prepare(y, m, self.n_out, self.dtype, name)

    # ------------------------------------------------------------------ computation
    def _forward(self, X, training, batch_invariant=False):
        A = X
        for layer in self._plan:
            if batch_invariant and isinstance(layer, nn.Dense):
                A = layer.forward(A, training, batch_invariant=True)
            else:
                A = layer.forward(A, training)
        return A

    def _penalty(self, m: int) -> float:
        return sum(layer.penalty(m) for layer in self._dense)

    def _forward_backward(self, X, y) -> float:
        """Training-mode forward, loss, backward on validated X (m, n_in), y; fills dtheta."""
        for d in self._dropouts:
            d.step = self.step
        Z = self._logits = self._forward(X, True)
        J, dA = self.loss.forward_backward(Z, y)
        J += self._penalty(X.shape[0])
        for layer in reversed(self._plan):
            dA = layer.backward(dA)
        return J

    def _training_cost(self, X, y) -> float:
        """J on validated (X, y) in training mode (batch statistics, current dropout step),
        without backward; with BatchNorm.track_running_stats False it changes no state."""
        for d in self._dropouts:
            d.step = self.step
        Z = self._forward(X, True)
        return float(self.loss.cost(Z, y) + self._penalty(X.shape[0]))

    def forward(self, X, training: bool = False, batch_invariant: bool = False) -> np.ndarray:
        """Logits Z of the last layer, (m, n_out) (a new array).

        training=True uses batch statistics, updates BatchNorm running estimates and
        applies dropout (with the mask of the current step).

        batch_invariant=True (evaluation only): each row of Z is computed from its row of X
        alone, bit for bit, so ``forward(X)[i]`` equals ``forward(X[i:i+1])[0]`` and a
        prediction never depends on the rest of the batch. The dense layers then multiply in
        pydl's own kernel instead of the BLAS: 1.1-1.6x slower on large batches, 1.3-5x on
        a single row (by layer size). Without it the two can differ in the last bits (a few
        float32 ulps), as the BLAS takes different kernels for different batch sizes.
        Where the own kernel is not built (``pydl.ops.has_own_gemm`` False) the BLAS is
        used either way.
        """
        X = self._rows(X)
        if not isinstance(batch_invariant, (bool, np.bool_)):
            raise TypeError(f"batch_invariant must be a bool, got {type(batch_invariant).__name__}")
        if training:
            if batch_invariant:
                raise ValueError("batch_invariant=True is for evaluation (training=False): in "
                                 "training, batch norm normalizes with the batch's statistics")
            X = self._converted(X)
            self._check_training_rows(X)
            for d in self._dropouts:
                d.step = self.step
            return self._forward(X, True).copy()
        invariant = bool(batch_invariant)  # (evaluation: each chunk's layers write new arrays)
        return np.concatenate([self._forward(Xc, False, invariant)
                               for Xc in self._converted_chunks(X)])

    def forward_backward(self, X, y) -> float:
        """J = loss + regularization on the batch (X, y) in training mode; fills dtheta.

        X (m, n_in); y as the loss takes it. Returns J as a float.
        """
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        self._check_training_rows(X)
        return float(self._forward_backward(X, y))

    def _check_training_rows(self, X) -> None:
        """ValueError naming X when a training pass over it cannot run: BatchNorm needs
        at least 2 rows (the layer's own check would name its input, A_prev)."""
        if X.shape[0] < 2 and any(isinstance(l, nn.BatchNorm) for l in self.layers):
            raise ValueError("X has 1 row, but BatchNorm in training mode needs at least 2: over "
                             "one example the batch variance is 0 (in a loop over mini-batches, "
                             "join a last batch of one row to the one before it)")

    def _converted_chunks(self, X, name="X"):
        """X as ``_rows`` gives it, converted a chunk of rows at a time (a memory-mapped X
        is read as it goes)."""
        return (self._converted(c, name) for c in _row_chunks(X))

    def _sums(self, chunks, y):
        """(sum of per-example data loss, number correct) in evaluation mode over converted
        chunks of rows, in order, and the checked y of all of them."""
        total, correct, i = 0.0, 0, 0
        for Xc in chunks:
            yc = y[i:i + Xc.shape[0]]
            i += Xc.shape[0]
            Z = self._forward(Xc, False)
            total += self.loss.cost(Z, yc) * Xc.shape[0]
            if self.loss.classification:
                correct += self.loss.correct(Z, yc)
        return total, correct

    def cost(self, X, y) -> float:
        """J (data loss + regularization with m = len(X)) in evaluation mode."""
        X = self._rows(X)
        y = self._check_y(y, X.shape[0])
        total, _ = self._sums(self._converted_chunks(X), y)
        return float(total / X.shape[0] + self._penalty(X.shape[0]))

    def evaluate(self, X, y) -> dict:
        """{"loss": J, "accuracy": fraction correct} (classification) or {"loss", "mse"}."""
        X = self._rows(X)
        y = self._check_y(y, X.shape[0])
        return self._evaluate(self._converted_chunks(X), y)

    def _evaluate(self, chunks, y) -> dict:
        """evaluate's result over converted chunks of rows (``_sums``) and their checked y."""
        m = y.shape[0]
        total, correct = self._sums(chunks, y)
        out = {"loss": float(total / m + self._penalty(m))}
        if self.loss.classification:
            out["accuracy"] = correct / m
        else:
            out["mse"] = float(total / m)
        return out

    def predict_proba(self, X, batch_invariant: bool = False) -> np.ndarray:
        """Class probabilities: softmax (m, C), or sigmoid (m, 1) for one output unit.
        batch_invariant: as in ``forward``."""
        if not self.loss.classification:
            raise TypeError("predict_proba needs a classification loss; use predict")
        return self.loss.output(self.forward(X, batch_invariant=batch_invariant))

    def predict(self, X, batch_invariant: bool = False) -> np.ndarray:
        """Class ids (m,) int64 for classification, outputs (m, k) for mse.
        batch_invariant: as in ``forward``."""
        return self.loss.predict(self.forward(X, batch_invariant=batch_invariant))

    def diagnose(self, X_train, y_train, X_dev, y_dev, bayes_error: float = 0.0, **kwargs):
        """Bias/variance diagnosis from the measured train and dev error rates."""
        from .diagnose import bias_variance

        if not self.loss.classification:
            raise TypeError("diagnose measures classification error; the model uses mse")
        tr = 1.0 - self.evaluate(X_train, y_train)["accuracy"]
        dv = 1.0 - self.evaluate(X_dev, y_dev)["accuracy"]
        return bias_variance(tr, dv, bayes_error=bayes_error, **kwargs)

    # ------------------------------------------------------------------ training
    def fit(self, X, y, optimizer=None, epochs: int = 10, batch_size: int = 64,
            validation_data=None, shuffle: bool = True, callbacks=(), initial_epoch: int = 0,
            verbose: int = 1, augment=None):
        """Mini-batch training; see ``pydl.training.fit`` for the arguments. Returns History."""
        from .training import fit

        return fit(self, X, y, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                   validation_data=validation_data, shuffle=shuffle, callbacks=callbacks,
                   initial_epoch=initial_epoch, verbose=verbose, augment=augment)

    # ------------------------------------------------------------------ copies
    def architecture(self) -> dict:
        """JSON-able description from which ``Sequential.from_architecture`` rebuilds the model."""
        return {"layers": [{"type": type(l).__name__, "config": l.config()} for l in self.layers],
                "loss": self.loss.name, "seed": self.seed, "dtype": self.dtype.name}

    def _check_built_in(self) -> None:
        """The architecture names layers and the loss by type: a file holds only built-in
        ones. Raises ValueError naming the first that is not (pickle keeps any class)."""
        for i, layer in enumerate(self.layers):
            if nn._LAYER_TYPES.get(type(layer).__name__) is not type(layer):
                raise ValueError(f"layer {i} is a {type(layer).__name__}, not a built-in pydl.nn "
                                 "layer: a saved model names its layers by type and could not be "
                                 "loaded; pickle the model instead")
        if LOSSES.get(self.loss.name) is not type(self.loss):
            raise ValueError(f"the loss is a {type(self.loss).__name__}, not a built-in loss: a "
                             "saved model names its loss and could not be loaded; pickle the "
                             "model instead")

    @classmethod
    def from_architecture(cls, arch: dict) -> "Sequential":
        layers = _layers_from_architecture(arch)
        return cls(layers, loss=arch.get("loss"), seed=arch.get("seed"), dtype=arch.get("dtype", "float32"))

    def _state_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for i, layer in enumerate(self.layers):
            for name, arr in layer.state_arrays().items():
                out[f"{i}.{name}"] = arr
        return out

    def _detached_layers(self) -> list:
        """Shallow copies of the layers without parameters, buffers or cached arrays
        (a new Sequential rebinds them to its own theta), so user layer classes work too."""
        import copy as _copy

        layers = []
        for layer in self.layers:
            new = _copy.copy(layer)
            new.__dict__ = {k: v for k, v in layer.__dict__.items() if not k.startswith("_")}
            new._bufs, new.params, new.grads = {}, {}, {}
            for name, _ in layer.param_shapes():
                new.__dict__.pop(name, None)
                new.__dict__.pop("d" + name, None)
            for name, arr in layer.state_arrays().items():  # a user layer's state: its own
                if name in new.__dict__:
                    new.__dict__[name] = np.array(arr, copy=True)
            layers.append(new)
        return layers

    def _copy_state_into(self, other: "Sequential") -> None:
        other.theta[...] = self.theta
        for key, arr in self._state_arrays().items():
            i, name = key.split(".", 1)
            getattr(other.layers[int(i)], name)[...] = arr
        other.epoch, other.step, other.standardizer = self.epoch, self.step, self.standardizer

    def astype(self, dtype) -> "Sequential":
        """A copy of the model (parameters, running statistics, counters) in ``dtype``."""
        copy = Sequential(self._detached_layers(), loss=self.loss, seed=self.seed,
                          dtype=_dtype_name(dtype))
        self._copy_state_into(copy)
        return copy

    def __getstate__(self) -> dict:
        # Views into theta do not survive pickling/deepcopy as views: rebuild instead.
        return {"layers": self._detached_layers(), "loss": get_loss(self.loss), "seed": self.seed,
                "dtype": self.dtype.name, "theta": self.theta.copy(),
                "state": {k: v.copy() for k, v in self._state_arrays().items()},
                "epoch": self.epoch, "step": self.step, "standardizer": self.standardizer,
                "optimizer": self.optimizer, "history": self.history}

    def __setstate__(self, st: dict) -> None:
        self.__init__(st["layers"], loss=st["loss"], seed=st["seed"], dtype=st["dtype"])
        self.theta[...] = st["theta"]
        for key, arr in st["state"].items():
            i, name = key.split(".", 1)
            getattr(self.layers[int(i)], name)[...] = arr
        self.epoch, self.step = st["epoch"], st["step"]
        self.standardizer, self.optimizer, self.history = st["standardizer"], st["optimizer"], st["history"]

    def copy(self) -> "Sequential":
        """An independent copy in the same dtype (optimizer not included)."""
        return self.astype(self.dtype)

    # ------------------------------------------------------------------ save / load
    def save(self, path) -> None:
        """Write the model to one .npz (atomically: temporary file, fsync, rename).

        Holds the architecture (JSON), theta, BatchNorm running statistics, the optimizer
        and its state, epoch and step counters (the RNG state: masks and shuffles are
        keyed by seed, epoch and step), and the standardizer if one is attached.
        """
        self._check_built_in()
        meta = {"format": "pydl-model", "version": FORMAT_VERSION, "architecture": self.architecture(),
                "epoch": self.epoch, "step": self.step, "n_params": self.n_params}
        arrays = {"theta": self.theta}
        for key, arr in self._state_arrays().items():
            arrays[f"state/{key}"] = arr
        if self.optimizer is not None:
            sd = self.optimizer.state_dict()
            meta["optimizer"] = {k: v for k, v in sd.items() if k != "arrays"}
            for k, v in sd["arrays"].items():  # a file that load would refuse is not written
                if v.shape != self.theta.shape or v.dtype != self.theta.dtype:
                    raise ValueError(
                        f"model.optimizer's state {k!r} has {v.size} {v.dtype} entries but theta has "
                        f"{self.theta.size} {self.theta.dtype}: the optimizer belongs to another "
                        "model; set model.optimizer = None (or a new optimizer) before saving")
                arrays[f"optimizer/{k}"] = v
        if self.standardizer is not None:
            for k, v in self.standardizer.state().items():
                arrays[f"standardizer/{k}"] = np.asarray(v)
        if self.history is not None:
            meta["history"] = self.history.to_dict()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        _atomic_savez(os.fspath(path), arrays)

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(l) for l in self.layers)
        return (f"Sequential([\n    {inner}\n], loss={self.loss.name!r}, seed={self.seed}, "
                f"dtype={self.dtype.name}, n_params={self.n_params})")


def _layers_from_architecture(arch) -> list:
    """The layers of ``architecture()["layers"]``, built (each layer validates its config)."""
    if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
        raise ValueError("architecture must be a dict with a 'layers' list")
    for i, d in enumerate(arch["layers"]):
        if not isinstance(d, dict) or not isinstance(d.get("type"), str):
            raise ValueError(f"architecture['layers'][{i}] must be a dict {{'type': layer class name "
                             f"(str), 'config': dict}}, got {d!r:.200}")
    return [nn.layer_from_config(d) for d in arch["layers"]]


def _refuse_masked(a, name: str) -> None:
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy masked array; pydl would ignore its mask: drop or fill "
                        f"the masked entries and pass a plain array (e.g. {name}.filled(value))")


def _nonfinite_error(name: str, original, dtype: np.dtype) -> ValueError:
    """The error for an input that is not finite once converted to the model's ``dtype``:
    NaN/inf in the input itself, or finite values too large for ``dtype`` (they became inf)."""
    orig = np.asarray(original)
    if orig.dtype.kind == "f" and orig.dtype.itemsize > dtype.itemsize and _all_finite(orig):
        return ValueError(f"{name} has values beyond the {dtype.name} range (|x| > "
                          f"{float(np.finfo(dtype).max):.4g}), which overflow to inf in the model's "
                          f"dtype {dtype.name}: rescale {name} (e.g. pydl.data.Standardizer) or "
                          "use a float64 model")
    return ValueError(f"{name} contains NaN or inf")


def _all_finite(a: np.ndarray) -> bool:
    """True when the contiguous array a has no NaN/inf, without a temporary as large as a:
    its sum (in a's own dtype) is finite exactly then, unless the sum overflows, which is
    then checked exactly in chunks."""
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(a.sum())):
            return True
    flat, step = a.reshape(-1), 1 << 20
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def _atomic_savez(path: str, arrays: dict) -> None:
    """np.savez to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path: str, write) -> None:
    """``write(f)`` into a binary file that then becomes ``path`` atomically: a temporary
    file in the same directory, fsync, rename; on any error ``path`` is as it was. The
    file gets the mode of a normally created one, 0o666 & ~umask (mkstemp makes it
    0o600)."""
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise IsADirectoryError(21, "expected a file name, got a directory" if path else
                                "expected a file name, got ''", path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise type(exc)(exc.errno, f"cannot save {path!r}: {exc.strerror} (in {directory!r})") \
            from None
    try:
        with os.fdopen(fd, "wb") as f:  # closes fd whatever follows
            if hasattr(os, "fchmod"):  # POSIX; best effort (some mounts refuse a chmod)
                umask = None
                try:  # Linux >= 4.7 reports it without changing it (os.umask is process-wide)
                    with open("/proc/self/status") as status:
                        umask = next((int(line.split()[1], 8) for line in status
                                      if line.startswith("Umask:")), None)
                except (OSError, ValueError, IndexError):
                    pass
                if umask is None:
                    umask = os.umask(0o022)
                    os.umask(umask)
                try:
                    os.fchmod(f.fileno(), 0o666 & ~umask)
                except OSError:
                    pass
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            # a full disk or a file size limit: name the file asked for
            raise type(exc)(exc.errno, f"cannot save {path!r}: {exc.strerror}") from exc
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


_COUNTER_MAX = 2**63 - 1   # epoch, step and t are int64 and are incremented: below this
_MAX_DEFLATE_RATIO = 1032  # deflate expands at most ~1032:1 (np.savez_compressed uses it)


class _Members:
    """The arrays of an open .npz, each read only on request and only after its .npy
    header (shape, dtype; read without the data) passes the caller's checks, so that a
    member claiming more than it should (or than the file can hold) is never read."""

    def __init__(self, zf, file_size: int, bad):
        self.zf, self.file_size, self.bad = zf, file_size, bad
        self.names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}

    def header(self, key):
        """(shape, dtype) of member ``key`` or None if absent."""
        if key not in self.names:
            return None
        bad = self.bad
        try:
            info = self.zf.getinfo(key + ".npy")
            with self.zf.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} is not supported")
                shape, _, dtype = read_header(fp, max_header_size=10000)
                header_size = fp.tell()
        except Exception as e:  # damaged archives raise many types (BadZipFile, zlib.error, ...)
            raise bad(f"cannot read entry {key!r} ({type(e).__name__}: {e})") from None
        if dtype.hasobject:
            raise bad(f"entry {key!r} holds Python objects (never unpickled)")
        ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _MAX_DEFLATE_RATIO}.get(info.compress_type)
        if math.prod(shape) * dtype.itemsize > info.file_size - header_size \
                or info.compress_size > self.file_size \
                or (ratio is not None and info.file_size > ratio * info.compress_size + 1024):
            raise bad(f"entry {key!r} claims shape {shape} {dtype}, more than the file holds")
        return shape, dtype

    def read(self, key, shape, dtype=None) -> np.ndarray:
        """Member ``key``, which must exist and have this shape (and dtype, unless None)."""
        head = self.header(key)
        if head is None:
            raise self.bad(f"it has no {key!r} entry")
        if head[0] != tuple(shape) or (dtype is not None and head[1] != dtype):
            raise self.bad(f"{key} has shape {head[0]} {head[1]}, expected {tuple(shape)} "
                           f"{'' if dtype is None else np.dtype(dtype)}".rstrip())
        try:
            with self.zf.open(key + ".npy") as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)
        except Exception as e:
            raise self.bad(f"cannot read entry {key!r} ({type(e).__name__}: {e})") from None


def _counter(meta_value, name, bad) -> int:
    if isinstance(meta_value, bool) or not isinstance(meta_value, int) or not 0 <= meta_value < _COUNTER_MAX:
        raise bad(f"{name} must be an integer in [0, 2**63 - 1), got {meta_value!r}"[:300])
    return meta_value


def load(path) -> Sequential:
    """Load a model saved by ``Sequential.save``; refuses damaged or mismatched files.

    Never unpickles. Restores parameters, running statistics, counters, the standardizer
    and ``model.optimizer`` with its state, so training resumes exactly.

    Reads only the entries it uses, each after checking the shape its header claims
    against what the architecture needs: a small damaged or hostile file costs little
    memory and time, and any defect is the ValueError "<path> is not a valid pydl model
    file: <why>".
    """
    path = os.fspath(path)

    def bad(why):
        return ValueError(f"{path} is not a valid pydl model file: {why}")

    try:
        f = open(path, "rb")   # our own handle: closed even when np.load fails
    except FileNotFoundError:
        raise
    except OSError as e:
        raise bad(f"cannot read it ({type(e).__name__}: {e})") from None
    with f:
        if f.read(4) != b"PK\x03\x04":
            raise bad("cannot read it (it is not an .npz (zip) archive)")
        f.seek(0)
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:  # damaged archives raise many types (BadZipFile, ...)
            raise bad(f"cannot read it ({type(e).__name__}: {e})") from None
        with z:
            return _load_members(_Members(z.zip, os.fstat(f.fileno()).st_size, bad), bad)


def _load_members(files: _Members, bad) -> Sequential:
    if "meta" not in files.names or "theta" not in files.names:
        raise bad("it has no 'meta' or 'theta' entry")
    for key in sorted(files.names):  # headers only: refuses pickled (object) entries, even unused ones
        files.header(key)
    meta_head = files.header("meta")
    if len(meta_head[0]) != 1 or meta_head[1] != np.uint8:
        raise bad(f"meta must be a 1-D uint8 array (JSON text), got {meta_head[0]} {meta_head[1]}")
    try:
        meta = json.loads(files.read("meta", meta_head[0], np.uint8).tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON, huge ints
        raise bad(f"its metadata is not JSON ({type(e).__name__}: {e})"[:500]) from None
    if not isinstance(meta, dict) or meta.get("format") != "pydl-model":
        raise bad("its metadata does not describe a pydl model")
    if meta.get("version") != FORMAT_VERSION:
        raise bad(f"format version {meta.get('version')!r} is not {FORMAT_VERSION}")

    # The parameter count the architecture implies, checked against theta's header before
    # anything of that size is allocated. Layers are cheap to construct, except that a
    # BatchNorm allocates its running statistics: so first every width is bounded by
    # theta's stored length (each width of a Dense or BatchNorm is a factor of its count).
    theta_shape, theta_dtype = files.header("theta")
    stored = math.prod(theta_shape)
    arch = meta.get("architecture")
    try:
        descs = arch["layers"] if isinstance(arch, dict) and isinstance(arch.get("layers"), list) else []
        widths = sum(max([v for k, v in d["config"].items() if k in ("n_in", "n_out", "n")
                          and isinstance(v, int) and not isinstance(v, bool)] or [0])
                     for d in descs if isinstance(d, dict) and isinstance(d.get("config"), dict))
        if widths > stored:
            raise ValueError(f"its layer widths need more parameters than theta's {stored}")
        layers = _layers_from_architecture(arch)
        dtype = np.dtype(_DTYPES[_dtype_name(arch.get("dtype", "float32"))])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"its architecture is invalid ({e})"[:500]) from None
    n_params = sum(math.prod(shape) for layer in layers for _, shape in layer.param_shapes())
    if theta_shape != (n_params,) or theta_dtype != dtype:
        raise bad(f"theta has shape {theta_shape} {theta_dtype}, the architecture needs "
                  f"({n_params},) {dtype}")
    if meta.get("n_params", n_params) != n_params:
        raise bad(f"n_params is {meta.get('n_params')!r}, the architecture has {n_params}"[:300])
    theta = files.read("theta", (n_params,), dtype)
    if not np.isfinite(theta).all():
        raise bad("theta contains NaN or inf")
    if arch.get("seed") is None:  # Sequential would draw a new one: other masks and shuffles
        raise bad("its architecture has no seed")
    try:
        model = Sequential(layers, loss=arch.get("loss"), seed=arch.get("seed"), dtype=dtype)
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"its architecture is invalid ({e})"[:500]) from None
    model.theta[...] = theta
    del theta
    for key, arr in model._state_arrays().items():
        if f"state/{key}" not in files.names:
            raise bad(f"state {key} is missing")
        stored_state = files.read(f"state/{key}", arr.shape, arr.dtype)
        if not np.isfinite(stored_state).all():
            raise bad(f"state {key} is not finite")
        if key.endswith(".running_var") and (stored_state < 0).any():
            raise bad(f"state {key} (a variance) has negative values")
        arr[...] = stored_state
    for name in ("epoch", "step"):
        setattr(model, name, _counter(meta.get(name), name, bad))
    if "optimizer" in meta:
        model.optimizer = _load_optimizer(meta["optimizer"], files, model, bad)
    std_names = {k.split("/", 1)[1] for k in files.names if k.startswith("standardizer/")}
    if std_names:
        from .data import Standardizer

        if std_names != {"mean", "scale"}:
            raise bad(f"standardizer needs entries 'mean' and 'scale', got {sorted(std_names)}")
        std = {k: files.read(f"standardizer/{k}", (model.n_in,)) for k in sorted(std_names)}
        try:
            model.standardizer = Standardizer.from_state(std)
        except (TypeError, ValueError) as e:
            raise bad(f"standardizer is invalid ({e})") from None
    if "history" in meta:
        model.history = _load_history(meta["history"], bad)
    return model


def _load_optimizer(d, files: _Members, model: Sequential, bad):
    from .optim import OPTIMIZERS, Optimizer

    if not isinstance(d, dict):
        raise bad("its optimizer entry is not a JSON object")
    sd = dict(d)
    cls = OPTIMIZERS.get(sd.get("type")) if isinstance(sd.get("type"), str) else None
    if cls is None:
        raise bad(f"optimizer state is invalid (unknown optimizer type {sd.get('type')!r})"[:300])
    names = {k.split("/", 1)[1] for k in files.names if k.startswith("optimizer/")}
    if not names <= set(cls._state_names):
        raise bad(f"optimizer {cls.__name__} has state arrays {list(cls._state_names)}, "
                  f"the file has {sorted(names)}")
    sd["t"] = _counter(sd.get("t"), "optimizer step count t", bad)
    sd["arrays"] = {k: files.read(f"optimizer/{k}", model.theta.shape, model.dtype) for k in sorted(names)}
    for k, v in sd["arrays"].items():
        if not np.isfinite(v).all():
            raise bad(f"optimizer state {k} is not finite")
    if "s" in sd["arrays"] and (sd["arrays"]["s"] < 0).any():  # RMSprop/Adam: EWA of g^2
        raise bad("optimizer state s (the average of squared gradients) has negative values")
    try:
        return Optimizer.from_state_dict(sd)
    except (TypeError, ValueError) as e:
        raise bad(f"optimizer state is invalid ({e})") from None


def _load_history(d, bad):
    from .callbacks import History

    lists = ("epoch", "iterations")
    if not isinstance(d, dict) or any(not isinstance(d.get(k, []), list) for k in lists) \
            or not isinstance(d.get("history", {}), dict) \
            or any(not isinstance(v, list) for v in d.get("history", {}).values()):
        raise bad("its history is invalid (it must be an object with lists 'epoch', "
                  "'iterations' and an object of lists 'history')")
    best = d.get("best_epoch")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int)):
        raise bad(f"its history is invalid (best_epoch must be an integer or null, got {best!r})"[:300])
    try:
        return History.from_dict(d)
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: int(inf) of an epoch
        raise bad(f"its history is invalid ({type(e).__name__}: {e})") from None


def mlp(sizes, activation: str = "relu", batchnorm: bool = False, keep_prob: float = 1.0,
        l2: float = 0.0, init: str = "auto", loss: str = "softmax_cross_entropy", seed=None,
        dtype=np.float32) -> Sequential:
    """A multilayer perceptron: for each hidden width, Dense [-> BatchNorm] -> activation
    [-> Dropout], then a Dense output of logits.

    ``sizes`` = [n_in, hidden..., n_out]. With batchnorm the hidden Dense layers have no
    bias (BatchNorm's beta replaces it). ``l2`` applies to every Dense layer.
    """
    acts = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name, one of {sorted(acts)}, got {type(activation).__name__}")
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    try:
        sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else None
    except TypeError:
        raise TypeError("sizes must be a list of layer widths [n_in, hidden..., n_out], "
                        f"got {type(sizes).__name__}") from None
    if not sizes or len(sizes) < 2:
        raise ValueError("sizes must list at least [n_in, n_out]")
    for i, n in enumerate(sizes):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (Integral, np.integer)) or n < 1:
            raise ValueError(f"sizes[{i}] must be a positive integer (a layer width), got {n!r}")
    if not isinstance(batchnorm, (bool, np.bool_)):
        raise TypeError(f"batchnorm must be a bool, got {type(batchnorm).__name__}")
    if isinstance(keep_prob, (bool, np.bool_)):
        raise TypeError("keep_prob must be a number in (0, 1], got a bool")
    layers: list[nn.Layer] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Dense(n_in, n_out, init=init, use_bias=not batchnorm, l2=l2))
        if batchnorm:
            layers.append(nn.BatchNorm(n_out))
        layers.append(acts[activation]())
        if keep_prob != 1.0:
            layers.append(nn.Dropout(keep_prob=keep_prob))
    layers.append(nn.Dense(sizes[-2], sizes[-1], init=init, l2=l2))
    return Sequential(layers, loss=loss, seed=seed, dtype=dtype)
