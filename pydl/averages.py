"""Exponentially weighted averages (the smoothing behind momentum, RMSprop, Adam
and BatchNorm's running statistics).

    v_0 = 0,  v_t = beta v_{t-1} + (1 - beta) theta_t,  t = 1..T
    bias-corrected:  v_t / (1 - beta^t)

v_t averages roughly the last 1/(1 - beta) values: beta = 0.9 ~ 10 values,
0.98 ~ 50, 0.5 ~ 2 (a larger beta is smoother but lags more).
"""
import math
import numbers

import numpy as np

__all__ = ["ewa"]


def ewa(values, beta, bias_correction=True):
    """Exponentially weighted average of a sequence, along axis 0.

    values: (T,) or (T, ...) array-like of numbers; theta_t = values[t-1].
    beta: float in [0, 1).
    Returns float64 array of values' shape with
        v_t = beta v_{t-1} + (1 - beta) theta_t,  v_0 = 0,
    divided by (1 - beta^t) when bias_correction is True (so a constant
    sequence averages to itself from t = 1). NaN/inf in values propagate
    to every later v_t, as in the recurrence.
    """
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if not isinstance(bias_correction, (bool, np.bool_)):
        raise TypeError(f"bias_correction must be a bool, got {type(bias_correction).__name__}")
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError("values must be an array-like of numbers") from e
    if x.ndim == 0:
        raise ValueError("values must be a sequence (T,) or (T, ...), got a scalar")
    if x.shape[0] == 0:
        return x.copy()
    # IIR filter v_t - beta v_{t-1} = (1 - beta) x_t with zero initial state
    from scipy.signal import lfilter  # imported here: scipy.signal costs ~0.7 s at import

    v = lfilter([1.0 - beta], [1.0, -beta], x, axis=0)
    if bias_correction:
        t = np.arange(1, x.shape[0] + 1, dtype=np.float64)
        v /= (1.0 - beta ** t).reshape((-1,) + (1,) * (x.ndim - 1))
    return v
