"""Output losses. The last Dense layer outputs logits Z (m, k); the loss owns the output
activation (softmax or sigmoid) and computes cost and dZ from the logits in one kernel.

- softmax_cross_entropy: J = -(1/m) sum_i sum_j y_ij log softmax(Z)_ij, dZ = (yhat - y)/m;
  labels are integer class ids (m,) or one-hot rows (m, C).
- sigmoid_cross_entropy: J = -(1/m) sum [y log s + (1-y) log(1-s)], s = sigmoid(Z),
  dZ = (s - y)/m; one output unit, labels 0/1 of shape (m,) or (m, 1).
- mse: J = mean((Z - y)^2) over all m*k elements, dZ = 2 (Z - y)/(m k); targets (m,) or (m, k).
"""
from __future__ import annotations

import copy

import numpy as np

from . import ops

__all__ = ["Loss", "SoftmaxCrossEntropy", "SigmoidCrossEntropy", "MeanSquaredError", "get_loss",
           "LOSSES"]


def _check_rows(name: str, y: np.ndarray, m: int) -> None:
    """ValueError unless targets ``name`` have the m rows of their inputs (X, or
    validation_data[0] for validation_data[1])."""
    if y.shape[0] != m:
        x = "validation_data[0]" if name == "validation_data[1]" else "X"
        raise ValueError(f"{name} has {y.shape[0]} rows but {x} has {m}; they must match")


def _check_finite(name: str, y: np.ndarray) -> None:
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or inf")


class Loss:
    """Base: ``prepare(y, m, k, dtype)`` validates targets once; ``forward_backward(Z, y)``
    returns (J, dZ); ``cost(Z, y)`` returns J; ``output(Z)`` the probabilities/outputs."""

    name = ""
    classification = True

    def __init__(self):
        self._dZ = None

    def _grad_buffer(self, Z: np.ndarray) -> np.ndarray:
        b = self._dZ
        if b is None or b.shape[0] < Z.shape[0] or b.shape[1:] != Z.shape[1:] or b.dtype != Z.dtype:
            b = self._dZ = np.empty(Z.shape, Z.dtype)
        return b[: Z.shape[0]] if b.shape[0] != Z.shape[0] else b

    def check_outputs(self, k: int) -> None:
        """ValueError when an output layer of k units cannot fit this loss (any k here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    name = "softmax_cross_entropy"

    def check_outputs(self, k: int) -> None:
        if k < 2:
            raise ValueError(f"softmax_cross_entropy needs an output layer of >= 2 units (one per "
                             f"class), got {k}: for two classes use 2 outputs, or "
                             "loss='sigmoid_cross_entropy' with 1")

    def prepare(self, y, m: int, k: int, dtype, name: str = "y") -> np.ndarray:
        """int64 labels (m,) in [0, k), or one-hot/probability rows (m, k) in dtype."""
        y = np.asarray(y)
        self.check_outputs(k)
        if y.ndim == 2 and y.shape[1] == k:
            if y.dtype.kind not in "biuf":
                raise TypeError(f"one-hot {name} must be numeric, got dtype {y.dtype}")
            _check_rows(name, y, m)
            _check_finite(name, y)
            if (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
                raise ValueError(f"one-hot {name} must have non-negative rows that sum to 1")
            return np.ascontiguousarray(y, dtype=dtype)
        if y.ndim != 1:
            raise ValueError(f"{name} must be integer labels of shape ({m},) or one-hot of shape "
                             f"({m}, {k}), got shape {y.shape}")
        _check_rows(name, y, m)
        return _integer_labels(y, k, name)

    def forward_backward(self, Z, y):
        dZ = self._grad_buffer(Z)
        if y.ndim == 1:
            J = ops.softmax_cross_entropy(dZ, Z, labels=y)
        else:
            J = ops.softmax_cross_entropy(dZ, Z, Y=y)
        return J, dZ

    def cost(self, Z, y):
        return ops.softmax_cross_entropy(None, Z, labels=y) if y.ndim == 1 else \
            ops.softmax_cross_entropy(None, Z, Y=y)

    def output(self, Z):
        return ops.softmax(np.empty_like(Z), Z)

    def predict(self, Z):
        return Z.argmax(axis=1)

    def correct(self, Z, y) -> int:
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return int(np.count_nonzero(Z.argmax(axis=1) == labels))


class SigmoidCrossEntropy(Loss):
    name = "sigmoid_cross_entropy"

    def check_outputs(self, k: int) -> None:
        if k != 1:
            raise ValueError(f"sigmoid_cross_entropy needs an output layer of 1 unit (the logit of "
                             f"class 1), got {k}: for {k} classes use loss='softmax_cross_entropy'")

    def prepare(self, y, m, k, dtype, name="y"):
        """Float targets (m, 1) with values 0/1 (any values in [0, 1] are accepted)."""
        y = np.asarray(y)
        self.check_outputs(k)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{name} must have shape ({m},) or ({m}, 1), got {y.shape}")
        _check_rows(name, y, m)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric 0/1 labels, got dtype {y.dtype}")
        _check_finite(name, y)
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"{name} must hold labels 0 or 1 (values in [0, 1])")
        return np.ascontiguousarray(y, dtype=dtype).reshape(m, 1)

    def forward_backward(self, Z, y):
        dZ = self._grad_buffer(Z)
        return ops.sigmoid_cross_entropy(dZ, Z, y), dZ

    def cost(self, Z, y):
        return ops.sigmoid_cross_entropy(None, Z, y)

    def output(self, Z):
        out = np.empty_like(Z)
        ops.activation_forward(out, np.ascontiguousarray(Z), "sigmoid")
        return out

    def predict(self, Z):
        return (Z[:, 0] > 0).astype(np.int64)

    def correct(self, Z, y) -> int:
        return int(np.count_nonzero((Z[:, 0] > 0) == (y[:, 0] > 0.5)))


class MeanSquaredError(Loss):
    name = "mse"
    classification = False

    def prepare(self, y, m, k, dtype, name="y"):
        """Float targets (m, k) ((m,) is accepted when k == 1)."""
        y = np.asarray(y)
        if y.ndim == 1 and k == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"{name} must have shape ({m}, {k})" + (f" or ({m},)" if k == 1 else "")
                             + f", got {y.shape}")
        _check_rows(name, y, m)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {y.dtype}")
        with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf
            out = np.ascontiguousarray(y, dtype=dtype)
        if not np.isfinite(out).all():
            from .model import _nonfinite_error

            raise _nonfinite_error(name, y, np.dtype(dtype))
        return out

    def forward_backward(self, Z, y):
        dZ = self._grad_buffer(Z)
        return ops.mean_squared_error(dZ, Z, y), dZ

    def cost(self, Z, y):
        return ops.mean_squared_error(None, Z, y)

    def output(self, Z):
        return Z.copy()

    def predict(self, Z):
        return Z.copy()


def _integer_labels(y: np.ndarray, k: int, name: str) -> np.ndarray:
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{name} must hold integer class ids, got non-integer values")
    elif y.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    # range check before the cast to int64, which would wrap uint64 >= 2**63 and big floats
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"{name} holds labels outside [0, {k}) (min {lo}, max {hi}); the "
                             f"output layer has {k} units")
    return np.ascontiguousarray(y.astype(np.int64, copy=False))


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, SigmoidCrossEntropy, MeanSquaredError)}


def get_loss(loss) -> Loss:
    """A new loss object from its name, or a shallow copy of a Loss instance (its attributes
    shared) with a gradient buffer of its own, so that no two models share one."""
    if isinstance(loss, Loss):
        new = copy.copy(loss)
        new._dZ = None
        return new
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    return LOSSES[loss]()
