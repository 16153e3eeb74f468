"""Bias/variance diagnosis and the basic recipe for improving a network.

    avoidable bias = train error - Bayes (human) error
    variance       = dev error - train error

Each is "high" above a threshold. High bias: fix it first (bigger network,
train longer, better optimizer/architecture); then high variance (more data,
regularization, different architecture).
"""
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Diagnosis", "bias_variance", "error_rate", "BIAS_ACTIONS", "VARIANCE_ACTIONS"]

BIAS_ACTIONS = ("bigger network", "train longer", "try a better optimizer / architecture")
VARIANCE_ACTIONS = ("more data", "regularization (L2, dropout)", "try a different architecture")

_TOL = 1e-12  # so that e.g. 0.16 - 0.15 = 0.010000000000000009 is not "above" 0.01


@dataclass(frozen=True)
class Diagnosis:
    """Result of bias_variance(); all errors are fractions in [0, 1].

    avoidable_bias = train_error - bayes_error (may be < 0 if train beats Bayes)
    variance       = dev_error - train_error   (may be < 0 if dev is easier)
    high_bias      = avoidable_bias > threshold
    high_variance  = variance > threshold
    actions        = basic-recipe steps: bias actions first, then variance ones
    """
    train_error: float
    dev_error: float
    bayes_error: float
    threshold: float
    avoidable_bias: float
    variance: float
    high_bias: bool
    high_variance: bool
    actions: list = field(default_factory=list)

    def __str__(self):
        def pct(v):
            return f"{100 * v:.2f}%"

        def level(high):
            return "HIGH" if high else "low"

        lines = [
            f"train error {pct(self.train_error)}, dev error {pct(self.dev_error)}, "
            f"Bayes error {pct(self.bayes_error)} (threshold {pct(self.threshold)})",
            f"  avoidable bias {pct(self.avoidable_bias):>8}  {level(self.high_bias)}"
            + (" (train error below the Bayes estimate)" if self.avoidable_bias < 0 else ""),
            f"  variance       {pct(self.variance):>8}  {level(self.high_variance)}"
            + (" (dev error below train error: dev happens to be easier)" if self.variance < 0 else ""),
        ]
        if self.actions:
            lines.append("next: " + "; ".join(self.actions))
        else:
            lines.append("next: nothing to fix at this threshold (low bias, low variance)")
        return "\n".join(lines)


def _fraction(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1] (e.g. 0.11 for 11%), got {v}")
    return v


def bias_variance(train_error, dev_error, bayes_error=0.0, threshold=0.02):
    """Diagnose bias and variance from error rates given as fractions in [0, 1].

    avoidable_bias = train_error - bayes_error; variance = dev_error - train_error;
    high_bias = avoidable_bias > threshold; high_variance = variance > threshold.

    Examples (bayes 0, threshold 0.02): train/dev 0.01/0.11 -> high variance;
    0.15/0.16 -> high bias; 0.15/0.30 -> both; 0.005/0.01 -> neither.
    With bayes_error=0.15, 0.15/0.16 -> neither.
    """
    train_error = _fraction(train_error, "train_error")
    dev_error = _fraction(dev_error, "dev_error")
    bayes_error = _fraction(bayes_error, "bayes_error")
    threshold = _fraction(threshold, "threshold")
    bias = train_error - bayes_error
    variance = dev_error - train_error
    high_bias = bias > threshold + _TOL
    high_variance = variance > threshold + _TOL
    actions = (list(BIAS_ACTIONS) if high_bias else []) + \
        (list(VARIANCE_ACTIONS) if high_variance else [])
    return Diagnosis(train_error, dev_error, bayes_error, threshold, bias, variance,
                     high_bias, high_variance, actions)


def _labels(a, name):
    """Class ids (m,) from ids, one-hot/scores (m, C), or probabilities of class 1.

    (m, C) with C >= 2 -> argmax over C. (m,) or (m, 1): integers, bools and floats with
    integral values are class ids; other floats must be probabilities of the positive
    class in [0, 1] and give class 1 where p > 0.5 (as a sigmoid model's predict, Z > 0).
    Other labels (e.g. strings) are compared as they are.
    """
    a = np.asarray(a)
    if a.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    if a.ndim == 2 and a.shape[1] >= 2:
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} as scores (m, C) must be numeric, got dtype {a.dtype}")
        return a.argmax(axis=1)          # one-hot or scores (m, C) -> class ids
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be labels (m,), probabilities (m,) or (m, 1), or "
                         f"scores (m, C), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (a != np.round(a)).any():     # not class ids: probabilities of class 1
            if ((a < 0) | (a > 1)).any():
                raise ValueError(f"{name} holds non-integer values outside [0, 1]: neither "
                                 f"class ids nor probabilities of the positive class")
            return (a > 0.5).astype(np.int64)
    return a


def error_rate(y_true, y_pred):
    """Fraction of examples whose predicted class differs from the true class.

    y_true: class ids (m,) or (m, 1), or one-hot (m, C); y_pred: class ids (m,),
    scores/probabilities/one-hot (m, C) reduced with argmax over C, or probabilities of
    the positive class (m,) or (m, 1) (a sigmoid model's predict_proba), class 1 where
    p > 0.5. Floats with integral values (0.0, 1.0, 2.0) are read as class ids.
    error = (1/m) * sum_i [y_true_i != y_pred_i], a float in [0, 1].
    """
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_pred has {p.shape[0]} rows but y_true has {t.shape[0]}; "
                         f"they must match")
    if t.shape[0] == 0:
        raise ValueError("y_true is empty; the error rate of no examples is undefined")
    return float(np.mean(t != p))
