"""Bad input at every public entry point: a TypeError/ValueError whose message names the
argument and what was expected; never a crash, never a silently wrong result.

Decisions this suite pins down:
- X may hold ints or bools (converted to the model dtype, same result as the floats);
  complex, object, string and datetime arrays are a TypeError; NaN/inf, empty, wrong
  ndim or width are a ValueError.
- Labels for softmax cross-entropy are integer ids in [0, C) (int, bool, or floats with
  integral values) or one-hot rows (m, C) (float or int); anything else is refused.
- fit: batch_size is an integer >= 1; a batch_size > m means one batch of all m rows
  (so the default 64 trains a 50-row dataset), as pydl.data.minibatches does.
- X and y that overflow the model's dtype (1e39 into float32) are a ValueError saying
  so; numpy masked arrays are a TypeError (pydl would ignore the mask).
- Hyperparameters: lr finite > 0; betas and BatchNorm momentum in [0, 1); keep_prob in
  (0, 1]; eps finite > 0; NaN/inf always refused.

The hand-written cases are collected in CASES (one parametrized test each); the
hypothesis tests count their examples in COUNT. The total is printed when the module
finishes (pytest -s, or -rA) and asserted to be large.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pydl
from pydl import callbacks, config, data, gradcheck, nn, ops, optim, schedules, tune

COUNT = {"hand-written cases": 0, "hypothesis examples": 0}

M, N_IN, C = 12, 4, 3
RNG = np.random.default_rng(0)
X = RNG.standard_normal((M, N_IN)).astype(np.float32)
Y = np.arange(M) % C
X64 = X.astype(np.float64)


def model(**kw):
    return pydl.mlp([N_IN, 8, C], seed=0, **kw)


def fit(m, Xa=X, ya=Y, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("epochs", 1)
    kw.setdefault("verbose", 0)
    return m.fit(Xa, ya, **kw)


def with_nan(a, value=np.nan):
    a = np.array(a, dtype=np.float64)
    a.flat[len(a.flat) // 2] = value
    return a


CASES = []


def bad(case_id, exc, match, fn):
    """Register: fn() must raise exc with a message matching the regex ``match``."""
    CASES.append(pytest.param(fn, exc, match, id=case_id))


# ------------------------------------------------------------------ X of a model
for name, Xb, exc, match in [
    ("complex", X.astype(np.complex64), TypeError, r"X must be a numeric array, got dtype complex"),
    ("object", X.astype(object), TypeError, r"X must be a numeric array, got dtype object"),
    ("str", X.astype(str), TypeError, r"X must be a numeric array, got dtype <U"),
    ("bytes", X.astype("S8"), TypeError, r"X must be a numeric array, got dtype \|S8"),
    ("datetime", X.astype(np.int64).astype("M8[s]"), TypeError, r"X must be a numeric array"),
    ("timedelta", X.astype(np.int64).astype("m8[s]"), TypeError, r"X must be a numeric array"),
    ("ragged", [[1.0, 2.0, 3.0, 4.0], [1.0]], (TypeError, ValueError), r"\bX\b"),
    ("nested-str", [["a", "b", "c", "d"]], TypeError, r"X must be a numeric array"),
    ("none", None, TypeError, r"X must be a numeric array, got dtype object"),
    ("scalar", 3.0, ValueError, r"X must be 2-D \(m, 4\), got shape \(\)"),
    ("1d", X[0], ValueError, r"X must be 2-D \(m, 4\), got shape \(4,\)"),
    ("3d", X[None], ValueError, r"X must be 2-D \(m, 4\), got shape \(1, 12, 4\)"),
    ("width", X[:, :3], ValueError, r"X has 3 features but the model expects 4"),
    ("empty", X[:0], ValueError, r"X is empty \(0 rows\)"),
    ("nan", with_nan(X), ValueError, r"X contains NaN or inf"),
    ("inf", with_nan(X, np.inf), ValueError, r"X contains NaN or inf"),
    ("-inf", with_nan(X, -np.inf), ValueError, r"X contains NaN or inf"),
    ("overflows-float32", X64 * 1e300, ValueError,
     r"X has values beyond the float32 range \(\|x\| > 3\.403e\+38\), which overflow to inf"),
    ("1e39", np.where(np.arange(M * N_IN).reshape(M, N_IN) == 7, 1e39, X64), ValueError,
     r"X has values beyond the float32 range"),
    ("overflow-and-nan", with_nan(X64 * 1e300), ValueError, r"X contains NaN or inf"),
    ("masked", np.ma.masked_array(X, mask=X > 1), TypeError,
     r"X is a numpy masked array; pydl would ignore its mask"),
    ("masked-nothing", np.ma.masked_array(X), TypeError, r"X is a numpy masked array"),
]:
    for entry in ("predict", "predict_proba", "forward", "evaluate", "cost", "forward_backward",
                  "fit"):
        def call(entry=entry, Xb=Xb):
            m = model()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the float32 cast overflows
                if entry in ("evaluate", "cost", "forward_backward"):
                    return getattr(m, entry)(Xb, Y)
                if entry == "fit":
                    return fit(m, Xb, Y)
                return getattr(m, entry)(Xb)
        bad(f"X-{name}-{entry}", exc, match, call)

bad("fit-validation-X-nan", ValueError, r"validation_data\[0\] contains NaN or inf",
    lambda: fit(model(), validation_data=(with_nan(X), Y)))
bad("fit-validation-X-complex", TypeError, r"validation_data\[0\] must be a numeric array",
    lambda: fit(model(), validation_data=(X.astype(complex), Y)))
bad("fit-validation-X-overflow", ValueError, r"validation_data\[0\] has values beyond the float32 range",
    lambda: fit(model(), validation_data=(X64 * 1e300, Y)))
bad("fit-validation-X-masked", TypeError, r"validation_data\[0\] is a numpy masked array",
    lambda: fit(model(), validation_data=(np.ma.masked_array(X, mask=X > 1), Y)))
bad("fit-validation-y-masked", TypeError, r"validation_data\[1\] is a numpy masked array",
    lambda: fit(model(), validation_data=(X, np.ma.masked_array(Y, mask=Y == 0))))
for entry in ("fit", "evaluate", "cost", "forward_backward"):
    bad(f"y-masked-{entry}", TypeError, r"y is a numpy masked array; pydl would ignore its mask",
        lambda entry=entry: (fit(model(), X, np.ma.masked_array(Y, mask=Y == 0)) if entry == "fit" else
                             getattr(model(), entry)(X, np.ma.masked_array(Y, mask=Y == 0))))
bad("fit-validation-not-pair", ValueError, r"validation_data must be a pair \(X_dev, y_dev\)",
    lambda: fit(model(), validation_data=X))
bad("fit-validation-triple", ValueError, r"validation_data must be a pair",
    lambda: fit(model(), validation_data=(X, Y, Y)))
bad("fit-validation-y-length", ValueError, r"validation_data\[1\] has 3 rows but validation_data\[0\] has 12",
    lambda: fit(model(), validation_data=(X, Y[:3])))

# ------------------------------------------------------------------ labels
for name, yb, exc, match in [
    ("length-short", Y[:5], ValueError, r"y has 5 rows but X has 12; they must match"),
    ("length-long", np.r_[Y, Y], ValueError, r"y has 24 rows but X has 12; they must match"),
    ("out-of-range", Y + 1, ValueError, r"y holds labels outside \[0, 3\) \(min 1, max 3\)"),
    ("negative", Y - 1, ValueError, r"y holds labels outside \[0, 3\) \(min -1, max 1\)"),
    ("huge-uint64", Y.astype(np.uint64) + np.uint64(2**63), ValueError,
     r"y holds labels outside \[0, 3\) \(min 9223372036854775808, max 9223372036854775810\)"),
    ("non-integer", Y + 0.5, ValueError, r"y must hold integer class ids, got non-integer values"),
    ("nan", with_nan(Y), ValueError, r"y must hold integer class ids"),
    ("inf", with_nan(Y, np.inf), ValueError, r"y must hold integer class ids"),
    ("str", Y.astype(str), TypeError, r"y must hold integer class ids, got dtype <U"),
    ("object", Y.astype(object), TypeError, r"y must hold integer class ids, got dtype object"),
    ("complex", Y.astype(complex), TypeError, r"y must hold integer class ids, got dtype complex"),
    ("none", None, ValueError, r"y is required"),
    ("scalar", 1, ValueError, r"y must be integer labels of shape \(12,\) or one-hot of shape \(12, 3\), got shape \(\)"),
    ("column", Y[:, None], ValueError, r"y must be integer labels .* got shape \(12, 1\)"),
    ("one-hot-width", np.eye(4)[Y], ValueError, r"y must be integer labels .* got shape \(12, 4\)"),
    ("one-hot-nan", with_nan(np.eye(3)[Y]), ValueError, r"y contains NaN or inf"),
    ("one-hot-negative", np.eye(3)[Y] * 2 - 0.5, ValueError, r"one-hot y must have non-negative rows that sum to 1"),
    ("one-hot-sum", np.eye(3)[Y] * 0.5, ValueError, r"one-hot y must have non-negative rows that sum to 1"),
    ("one-hot-int-sum", np.eye(3, dtype=np.int64)[Y] * 2, ValueError, r"one-hot y must have non-negative rows that sum to 1"),
    ("one-hot-rows", np.eye(3)[Y][:5], ValueError, r"y has 5 rows but X has 12"),
    ("3d", Y[:, None, None], ValueError, r"y must be integer labels"),
]:
    for entry in ("evaluate", "cost", "forward_backward", "fit"):
        def call(entry=entry, yb=yb):
            m = model()
            return fit(m, X, yb) if entry == "fit" else getattr(m, entry)(X, yb)
        bad(f"y-{name}-{entry}", exc, match, call)

for name, loss, n_out, yb, exc, match in [
    ("sigmoid-2", "sigmoid_cross_entropy", 1, Y, ValueError, r"y must hold labels 0 or 1"),
    ("sigmoid-nan", "sigmoid_cross_entropy", 1, with_nan(Y % 2), ValueError, r"y contains NaN or inf"),
    ("sigmoid-str", "sigmoid_cross_entropy", 1, (Y % 2).astype(str), TypeError, r"y must be numeric 0/1 labels"),
    ("sigmoid-complex", "sigmoid_cross_entropy", 1, (Y % 2).astype(complex), TypeError, r"y must be numeric 0/1 labels"),
    ("sigmoid-width", "sigmoid_cross_entropy", 1, np.eye(2)[Y % 2], ValueError, r"y must have shape \(12,\) or \(12, 1\)"),
    ("sigmoid-length", "sigmoid_cross_entropy", 1, Y[:3] % 2, ValueError, r"y has 3 rows but X has 12"),
    ("sigmoid-two-units", "sigmoid_cross_entropy", 2, Y % 2, ValueError, r"sigmoid_cross_entropy needs an output layer of 1 unit"),
    ("softmax-one-unit", "softmax_cross_entropy", 1, Y % 2, ValueError, r"softmax_cross_entropy needs an output layer of >= 2 units"),
    ("mse-nan", "mse", 1, with_nan(Y), ValueError, r"y contains NaN or inf"),
    ("mse-inf", "mse", 2, with_nan(np.ones((M, 2)), -np.inf), ValueError, r"y contains NaN or inf"),
    ("mse-object", "mse", 1, Y.astype(object), TypeError, r"y must be numeric, got dtype object"),
    ("mse-complex", "mse", 1, Y.astype(complex), TypeError, r"y must be numeric, got dtype complex"),
    ("mse-width", "mse", 2, np.ones((M, 3)), ValueError, r"y must have shape \(12, 2\), got \(12, 3\)"),
    ("mse-length", "mse", 2, np.ones((5, 2)), ValueError, r"y has 5 rows but X has 12"),
]:
    def call(loss=loss, n_out=n_out, yb=yb):
        return pydl.mlp([N_IN, 5, n_out], loss=loss, seed=0).evaluate(X, yb)
    bad(f"y-{name}", exc, match, call)

# ------------------------------------------------------------------ fit arguments
for value, exc, match in [
    (0, ValueError, r"batch_size must be an integer >= 1, got 0"),
    (-1, ValueError, r"batch_size must be an integer >= 1, got -1"),
    (2.0, ValueError, r"batch_size must be an integer >= 1, got 2.0"),
    (True, ValueError, r"batch_size must be an integer >= 1, got True"),
    (None, ValueError, r"batch_size must be an integer >= 1, got None"),
    ("4", ValueError, r"batch_size must be an integer >= 1, got '4'"),
]:
    bad(f"fit-batch_size-{value!r}", exc, match, lambda v=value: fit(model(), batch_size=v))
for arg, value, match in [
    ("epochs", -1, r"epochs must be an integer >= 0, got -1"),
    ("epochs", 2.5, r"epochs must be an integer >= 0, got 2.5"),
    ("epochs", math.nan, r"epochs must be an integer >= 0, got nan"),
    ("initial_epoch", -1, r"initial_epoch must be an integer >= 0, got -1"),
    ("initial_epoch", 1.0, r"initial_epoch must be an integer >= 0, got 1.0"),
    ("optimizer", "adamw", r"optimizer must be an Optimizer or one of \['adam', .*got 'adamw'"),
    ("optimizer", 0.01, r"optimizer must be an Optimizer or one of .* got 0.01"),
]:
    bad(f"fit-{arg}-{value!r}", ValueError, match, lambda a=arg, v=value: fit(model(), **{a: v}))
bad("fit-callbacks-int", TypeError, r"callbacks must be a list of pydl.callbacks.Callback objects, got int",
    lambda: fit(model(), callbacks=1))
bad("fit-callbacks-item", TypeError, r"callbacks must be pydl.callbacks.Callback objects, got str",
    lambda: fit(model(), callbacks=["EarlyStopping"]))
bad("fit-augment-not-callable", TypeError, r"augment must be a callable augment\(Xb, rng\) -> Xb",
    lambda: fit(model(), augment=3))
bad("fit-augment-shape", ValueError, r"augment must return an array of shape \(4, 4\), got \(1, 4\)",
    lambda: fit(model(), augment=lambda Xb, rng: Xb[:1]))
bad("fit-augment-nan", ValueError, r"augment returned NaN or inf",
    lambda: fit(model(), augment=lambda Xb, rng: Xb * np.nan))
bad("fit-augment-complex", TypeError, r"augment must return a numeric array, got dtype complex",
    lambda: fit(model(), augment=lambda Xb, rng: Xb.astype(complex)))
bad("fit-shuffle-str", TypeError, r"shuffle must be a bool, got str", lambda: fit(model(), shuffle="no"))


def _memmap(a):
    """a as a read-only memory map of a temporary .npy file."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, a)
    out = np.load(path, mmap_mode="r")
    os.unlink(path)  # the mapping stays valid
    return out


bad("fit-memmap-width", ValueError, r"X must have shape \(m, 4\), got \(12, 3\)",
    lambda: fit(model(), _memmap(X[:, :3])))


bad("fit-memmap-nan", ValueError, r"X contains NaN or inf",
    lambda: fit(model(), _memmap(with_nan(X).astype(np.float32))))
bad("fit-memmap-overflow", ValueError,
    r"X has values beyond the float32 range .* \(found in a streamed mini-batch\)",
    lambda: fit(model(), _memmap(X64 * 1e300)))
bad("fit-memmap-masked", TypeError, r"X is a numpy masked array",
    lambda: fit(model(), np.ma.masked_array(_memmap(X), mask=X > 1)))
bad("predict-memmap-nan", ValueError, r"X contains NaN or inf",
    lambda: model().predict(_memmap(with_nan(X).astype(np.float32))))
bad("validation-memmap-nan", ValueError, r"validation_data\[0\] contains NaN or inf",
    lambda: fit(model(), validation_data=(_memmap(with_nan(X).astype(np.float32)), Y)))

# ------------------------------------------------------------------ layers
for ctor, match, exc in [
    (lambda: nn.Dense(0, 3), r"n_in must be a positive integer, got 0", ValueError),
    (lambda: nn.Dense(3, -1), r"n_out must be a positive integer, got -1", ValueError),
    (lambda: nn.Dense(2.5, 3), r"n_in must be a positive integer, got 2.5", ValueError),
    (lambda: nn.Dense("3", 3), r"n_in must be a positive integer, got '3'", ValueError),
    (lambda: nn.Dense(3, 3, init="normal"), r"init must be 'auto' or one of \['he', .*got 'normal'", ValueError),
    (lambda: nn.Dense(3, 3, scale=math.nan), r"scale must be a finite number, got nan", ValueError),
    (lambda: nn.Dense(3, 3, scale=math.inf), r"scale must be a finite number, got inf", ValueError),
    (lambda: nn.Dense(3, 3, l2=-1e-3), r"l2 must be a finite number >= 0, got -0.001", ValueError),
    (lambda: nn.Dense(3, 3, l2=math.nan), r"l2 must be a finite number >= 0, got nan", ValueError),
    (lambda: nn.Dense(3, 3, l1=math.inf), r"l1 must be a finite number >= 0, got inf", ValueError),
    (lambda: nn.BatchNorm(0), r"n must be a positive integer, got 0", ValueError),
    (lambda: nn.BatchNorm(10**20), r"n must be a positive integer \(at most 2\*\*31 - 1\)", ValueError),
    (lambda: nn.Dense(2**31, 3), r"n_in must be a positive integer \(at most 2\*\*31 - 1\)", ValueError),
    (lambda: nn.Dense(3, 2, scale=10**400), r"scale must be a finite number", ValueError),
    (lambda: nn.BatchNorm(3, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0", ValueError),
    (lambda: nn.BatchNorm(3, momentum=-0.1), r"momentum must be in \[0, 1\), got -0.1", ValueError),
    (lambda: nn.BatchNorm(3, momentum=math.nan), r"momentum must be in \[0, 1\), got nan", ValueError),
    (lambda: nn.BatchNorm(3, momentum="0.9"), r"momentum must be in \[0, 1\), got '0.9'", ValueError),
    (lambda: nn.BatchNorm(3, eps=0.0), r"eps must be a finite number > 0, got 0.0", ValueError),
    (lambda: nn.BatchNorm(3, eps=-1e-5), r"eps must be a finite number > 0", ValueError),
    (lambda: nn.BatchNorm(3, eps=math.inf), r"eps must be a finite number > 0, got inf", ValueError),
    (lambda: nn.Dropout(0.0), r"keep_prob must be in \(0, 1\], got 0.0", ValueError),
    (lambda: nn.Dropout(-0.5), r"keep_prob must be in \(0, 1\], got -0.5", ValueError),
    (lambda: nn.Dropout(1.0001), r"keep_prob must be in \(0, 1\], got 1.0001", ValueError),
    (lambda: nn.Dropout(math.nan), r"keep_prob must be a number, got nan", ValueError),
    (lambda: nn.Dropout(math.inf), r"keep_prob must be a number, got inf", ValueError),
    (lambda: nn.Dropout("0.5"), r"keep_prob must be a number, got '0.5'", ValueError),
    (lambda: nn.Dropout(), r"give exactly one of keep_prob and rate", ValueError),
    (lambda: nn.Dropout(0.5, rate=0.5), r"give exactly one of keep_prob and rate", ValueError),
    (lambda: nn.Dropout(rate=1.0), r"rate must be in \[0, 1\), got 1.0", ValueError),
    (lambda: nn.Dropout(rate=-0.2), r"rate must be in \[0, 1\), got -0.2", ValueError),
    (lambda: nn.LeakyReLU(0.0), r"alpha must be in \(0, 1\), got 0.0", ValueError),
    (lambda: nn.LeakyReLU(1.0), r"alpha must be in \(0, 1\), got 1.0", ValueError),
    (lambda: nn.LeakyReLU(math.nan), r"alpha must be in \(0, 1\), got nan", ValueError),
    (lambda: nn.layer_from_config({"type": "Conv2D", "config": {}}), r"unknown layer description", ValueError),
    (lambda: nn.layer_from_config({"type": "Dense", "config": {"n_in": 2}}), r"bad arguments for layer Dense", ValueError),
]:
    bad(f"layer-ctor-{len(CASES)}", exc, match, ctor)

# a layer used on its own: forward validates its input and names it
for layer_name, make in [("Dense", lambda: nn.Dense(N_IN, 3)), ("BatchNorm", lambda: nn.BatchNorm(N_IN)),
                         ("ReLU", nn.ReLU), ("Tanh", nn.Tanh), ("Dropout", lambda: nn.Dropout(0.5))]:
    for name, A, exc, match in [
        ("list", X.tolist(), TypeError, r"A_prev must be a numpy array, got list"),
        ("1d", X64[0], ValueError, r"A_prev must be 2-D \(m, n\), got shape \(4,\)"),
        ("3d", X64[None], ValueError, r"A_prev must be 2-D \(m, n\), got shape \(1, 12, 4\)"),
        ("int", X.astype(np.int64), TypeError, r"A_prev must be float32 or float64, got int64"),
        ("complex", X.astype(complex), TypeError, r"A_prev must be float32 or float64, got complex128"),
        ("empty", X64[:0], ValueError, r"A_prev"),
    ]:
        bad(f"layer-forward-{layer_name}-{name}", exc, match,
            lambda make=make, A=A: make().forward(A, True))
    if layer_name in ("Dense", "BatchNorm"):
        bad(f"layer-forward-{layer_name}-width", ValueError, r"A_prev has 3 features but the layer expects 4",
            lambda make=make: make().forward(X64[:, :3], True))

# ------------------------------------------------------------------ Sequential / mlp
for case_id, fn, exc, match in [
    ("layers-empty", lambda: pydl.Sequential([]), ValueError, r"layers must be a non-empty list of pydl.nn layers"),
    ("layers-int", lambda: pydl.Sequential(5), TypeError, r"layers must be a list of pydl.nn layers, got int"),
    ("layers-item", lambda: pydl.Sequential([nn.Dense(2, 2), "relu"]), TypeError, r"layers\[1\] must be a pydl.nn.Layer, got str"),
    ("layers-twice", lambda: (lambda d: pydl.Sequential([d, d]))(nn.Dense(2, 2)), ValueError, r"layers must not contain the same layer object twice"),
    ("layers-widths", lambda: pydl.Sequential([nn.Dense(3, 4), nn.Dense(5, 2)]), ValueError, r"layers\[1\] \(Dense\) expects 5 inputs but the previous layer gives 4"),
    ("layers-bn-width", lambda: pydl.Sequential([nn.Dense(3, 4), nn.BatchNorm(5), nn.Dense(4, 2)]), ValueError, r"layers\[1\] \(BatchNorm\) expects 5 inputs"),
    ("no-dense", lambda: pydl.Sequential([nn.ReLU()]), ValueError, r"the model needs at least one Dense layer"),
    ("activation-last", lambda: pydl.Sequential([nn.Dense(3, 4), nn.Sigmoid()]), ValueError, r"the last Dense layer outputs logits"),
    ("loss", lambda: pydl.Sequential([nn.Dense(3, 2)], loss="hinge"), ValueError, r"loss must be one of \['mse', 'sigmoid_cross_entropy', 'softmax_cross_entropy'\], got 'hinge'"),
    ("seed-negative", lambda: pydl.Sequential([nn.Dense(3, 2)], seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*63\) or None, got -1"),
    ("seed-float", lambda: pydl.Sequential([nn.Dense(3, 2)], seed=1.5), ValueError, r"seed must be an integer in \[0, 2\*\*63\) or None, got 1.5"),
    ("seed-huge", lambda: pydl.Sequential([nn.Dense(3, 2)], seed=2**63), ValueError, r"seed must be an integer in \[0, 2\*\*63\)"),
    ("dtype-float16", lambda: pydl.Sequential([nn.Dense(3, 2)], dtype=np.float16), ValueError, r"dtype must be float32 or float64, got float16"),
    ("dtype-int", lambda: pydl.Sequential([nn.Dense(3, 2)], dtype="int32"), ValueError, r"dtype must be float32 or float64, got int32"),
    ("dtype-garbage", lambda: pydl.Sequential([nn.Dense(3, 2)], dtype="floaty"), (TypeError, ValueError), r"dtype must be float32 or float64, got 'floaty'"),
    ("loss-list", lambda: pydl.Sequential([nn.Dense(3, 2)], loss=["mse"]), TypeError, r"loss must be a loss name \(one of \['mse', 'sigmoid_cross_entropy', 'softmax_cross_entropy'\]\) or a pydl.losses.Loss, got list"),
    ("loss-none", lambda: pydl.Sequential([nn.Dense(3, 2)], loss=None), TypeError, r"loss must be a loss name .* got NoneType"),
    ("architecture-type-list", lambda: pydl.Sequential.from_architecture({"layers": [{"type": ["Dense"], "config": {"n_in": 3, "n_out": 2}}]}), ValueError, r"architecture\['layers'\]\[0\] must be a dict \{'type': layer class name \(str\), 'config': dict\}, got \{'type': \['Dense'\]"),
    ("architecture-layer-int", lambda: pydl.Sequential.from_architecture({"layers": [{"type": "Dense", "config": {"n_in": 3, "n_out": 2}}, 7]}), ValueError, r"architecture\['layers'\]\[1\] must be a dict .* got 7"),
    ("architecture-loss-list", lambda: pydl.Sequential.from_architecture({"layers": [{"type": "Dense", "config": {"n_in": 3, "n_out": 2}}], "loss": ["mse"]}), TypeError, r"loss must be a loss name .* got list"),
    ("mlp-sizes-none", lambda: pydl.mlp(None), TypeError, r"sizes must be a list of layer widths \[n_in, hidden\.\.\., n_out\], got NoneType"),
    ("mlp-sizes-int", lambda: pydl.mlp(5), TypeError, r"sizes must be a list of layer widths \[n_in, hidden\.\.\., n_out\], got int"),
    ("mlp-activation-list", lambda: pydl.mlp([4, 3], activation=["relu"]), TypeError, r"activation must be a name, one of \['leaky_relu', 'relu', 'sigmoid', 'tanh'\], got list"),
    ("mlp-sizes-short", lambda: pydl.mlp([4]), ValueError, r"sizes must list at least \[n_in, n_out\]"),
    ("mlp-sizes-str", lambda: pydl.mlp("48"), ValueError, r"sizes must list at least \[n_in, n_out\]"),
    ("mlp-sizes-zero", lambda: pydl.mlp([4, 0, 3]), ValueError, r"sizes\[1\] must be a positive integer \(a layer width\), got 0"),
    ("mlp-sizes-huge", lambda: pydl.mlp([10**20, 3]), ValueError, r"n_in must be a positive integer \(at most"),
    ("mlp-activation", lambda: pydl.mlp([4, 3], activation="gelu"), ValueError, r"activation must be one of \['leaky_relu', 'relu', 'sigmoid', 'tanh'\], got 'gelu'"),
    ("mlp-keep_prob-0", lambda: pydl.mlp([4, 3, 2], keep_prob=0.0), ValueError, r"keep_prob must be in \(0, 1\], got 0.0"),
    ("mlp-keep_prob-2", lambda: pydl.mlp([4, 3, 2], keep_prob=2.0), ValueError, r"keep_prob must be in \(0, 1\], got 2.0"),
    ("mlp-keep_prob-nan", lambda: pydl.mlp([4, 3, 2], keep_prob=math.nan), ValueError, r"keep_prob must be a number, got nan"),
    ("mlp-l2", lambda: pydl.mlp([4, 3, 2], l2=-1.0), ValueError, r"l2 must be a finite number >= 0, got -1.0"),
    ("predict_proba-mse", lambda: pydl.mlp([4, 3, 1], loss="mse").predict_proba(X), TypeError, r"predict_proba needs a classification loss"),
]:
    bad(f"sequential-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ optimizers
OPTS = {"SGD": optim.SGD, "Momentum": optim.Momentum, "RMSprop": optim.RMSprop, "Adam": optim.Adam}
for opt_name, cls in OPTS.items():
    for value, exc, match in [
        (-1e-3, ValueError, r"lr must be a finite number > 0.0, got -0.001"),
        (0.0, ValueError, r"lr must be a finite number > 0.0, got 0.0"),
        (math.nan, ValueError, r"lr must be a finite number > 0.0, got nan"),
        (math.inf, ValueError, r"lr must be a finite number > 0.0, got inf"),
        ("0.1", TypeError, r"lr must be a real number, got str"),
        (None, TypeError, r"lr must be a real number, got NoneType"),
        (True, TypeError, r"lr must be a real number, got bool"),
        (np.array([0.1, 0.2]), TypeError, r"lr must be a real number, got ndarray"),
    ]:
        bad(f"{opt_name}-lr-{value!r}", exc, match, lambda c=cls, v=value: c(lr=v))
        bad(f"{opt_name}-lr-setter-{value!r}", exc, match,
            lambda c=cls, v=value: setattr(c(), "lr", v))
    for value in (-1.0, math.nan, math.inf):
        bad(f"{opt_name}-weight_decay-{value!r}", ValueError,
            rf"weight_decay must be a finite number >= 0.0, got {value!r}",
            lambda c=cls, v=value: c(weight_decay=v))
for opt_name, beta_names in [("Momentum", ["beta"]), ("RMSprop", ["beta"]), ("Adam", ["beta1", "beta2"])]:
    for beta in beta_names:
        for value in (1.0, 1.5, -0.1, -1e-12, math.nan, math.inf, -math.inf):
            bad(f"{opt_name}-{beta}-{value!r}", ValueError,
                rf"{beta} must be a finite number in \[0.0, 1.0\), got {re.escape(repr(value))}",
                lambda c=OPTS[opt_name], b=beta, v=value: c(**{b: v}))
for opt_name in ("RMSprop", "Adam"):
    for value in (0.0, -1e-8, math.nan):
        bad(f"{opt_name}-eps-{value!r}", ValueError, rf"eps must be a finite number > 0.0, got {value!r}",
            lambda c=OPTS[opt_name], v=value: c(eps=v))
for case_id, fn, exc, match in [
    ("get-unknown", lambda: optim.get_optimizer("adamax"), ValueError, r"optimizer must be an Optimizer or one of"),
    ("get-kwarg", lambda: optim.get_optimizer("adam", beta3=0.9), TypeError, r"beta3"),
    ("get-bad-lr", lambda: optim.get_optimizer("sgd", lr=-1), ValueError, r"lr must be a finite number"),
    ("step-mismatch", lambda: optim.SGD().step(_Holder(3, 4)), ValueError, r"grad must have shape \(3,\), got \(4,\)"),
    ("step-dtype", lambda: optim.Adam().step(_Holder(3, 3, np.float32, np.float64)), TypeError, r"grad must have dtype float32"),
    ("step-int-theta", lambda: optim.SGD().step(_Holder(3, 3, np.int64, np.int64)), TypeError, r"theta must be float32 or float64"),
    ("step-other-model", lambda: _stepped(optim.Adam(), 3).step(_Holder(5, 5)), ValueError, r"optimizer state has 3 float32 entries but theta has 5 float32"),
    ("load_state-type", lambda: optim.Adam().load_state_dict({"type": "SGD", "t": 0}), ValueError, r"state is for optimizer 'SGD', not Adam"),
    ("load_state-t", lambda: optim.Adam().load_state_dict({"type": "Adam", "t": -1}), ValueError, r"optimizer step count t must be an integer >= 0, got -1"),
    ("load_state-arrays", lambda: optim.Adam().load_state_dict({"type": "Adam", "t": 2, "arrays": {"v": np.zeros(3)}}), ValueError, r"optimizer state needs arrays \['v', 's'\]"),
    ("load_state-nan", lambda: optim.Momentum().load_state_dict({"type": "Momentum", "t": 2, "arrays": {"v": np.full(3, np.nan)}}), ValueError, r"optimizer state arrays must be finite 1-D arrays"),
    ("from_state-unknown", lambda: optim.Optimizer.from_state_dict({"type": "Lion"}), ValueError, r"unknown optimizer type 'Lion'"),
    ("minimize-steps", lambda: optim.minimize(lambda w: w * w, 1.0, optim.SGD(0.1), -1), ValueError, r"steps must be an integer >= 0, got -1"),
    ("minimize-x0", lambda: optim.minimize(lambda w: w * w, math.nan, optim.SGD(0.1), 1), ValueError, r"x0 must be finite"),
    ("minimize-f", lambda: optim.minimize(3, 1.0, optim.SGD(0.1), 1), TypeError, r"f must be callable"),
    ("minimize-optimizer", lambda: optim.minimize(lambda w: w, 1.0, "sgd", 1), TypeError, r"optimizer must be a pydl.optim.Optimizer, got str"),
    ("minimize-grad-shape", lambda: optim.minimize(lambda w: w * w, [1.0, 2.0], optim.SGD(0.1), 1, grad=lambda w: np.zeros(3)), ValueError, r"grad returned shape \(3,\), expected \(2,\)"),
    ("minimize-diverges", lambda: optim.minimize(lambda w: w ** 4, np.ones(1), optim.SGD(1e30), 5, grad=lambda w: 4 * w ** 3), FloatingPointError, r"the gradient became non-finite; lower the learning rate"),
]:
    bad(f"optim-{case_id}", exc, match, fn)


class _Holder:
    def __init__(self, p, g, t=np.float32, gt=None):
        self.theta = np.zeros(p, t)
        self.dtheta = np.zeros(g, gt or t)


def _stepped(opt, p):
    opt.step(_Holder(p, p))
    return opt


# ------------------------------------------------------------------ ops hyperparameters
_A = np.ones((2, 3), np.float32)
_T = np.ones(4, np.float32)
for case_id, fn, exc, match in [
    ("sgd-lr-neg", lambda: ops.sgd_step(_T.copy(), _T, -0.1), ValueError, r"lr must be >= 0.0, got -0.1"),
    ("sgd-lr-nan", lambda: ops.sgd_step(_T.copy(), _T, math.nan), ValueError, r"lr must be finite, got nan"),
    ("momentum-beta-1", lambda: ops.momentum_step(_T.copy(), _T.copy(), _T, 0.1, 1.0), ValueError, r"beta must be in \[0.0, 1.0\), got 1.0"),
    ("rmsprop-eps-0", lambda: ops.rmsprop_step(_T.copy(), _T.copy(), _T, 0.1, 0.9, 0.0), ValueError, r"eps must be > 0.0, got 0.0"),
    ("adam-beta2-nan", lambda: ops.adam_step(_T.copy(), _T.copy(), _T.copy(), _T, 0.1, 0.9, math.nan, 1e-8, 1), ValueError, r"beta2 must be finite, got nan"),
    ("adam-t-0", lambda: ops.adam_step(_T.copy(), _T.copy(), _T.copy(), _T, 0.1, 0.9, 0.99, 1e-8, 0), ValueError, r"t must be >= 1, got 0"),
    ("adam-t-float", lambda: ops.adam_step(_T.copy(), _T.copy(), _T.copy(), _T, 0.1, 0.9, 0.99, 1e-8, 1.0), TypeError, r"t must be an integer, got float"),
    ("dropout-keep-0", lambda: ops.dropout_forward(_A.copy(), _A, 0, 0, 0, 0.0), ValueError, r"keep_prob must be in \(0.0, 1.0\], got 0.0"),
    ("dropout-keep-1.5", lambda: ops.dropout_forward(_A.copy(), _A, 0, 0, 0, 1.5), ValueError, r"keep_prob must be in \(0.0, 1.0\], got 1.5"),
    ("dropout-seed-neg", lambda: ops.dropout_forward(_A.copy(), _A, -1, 0, 0, 0.5), ValueError, r"seed must be >= 0, got -1"),
    ("dropout-step-huge", lambda: ops.dropout_forward(_A.copy(), _A, 0, 2**64, 0, 0.5), ValueError, r"step must be <= 18446744073709551615"),
    ("bn-momentum", lambda: ops.batchnorm_forward_eval(_A.copy(), _A, _A[0], _A[0], _A[0], _A[0], eps=-1.0), ValueError, r"eps must be > 0.0, got -1.0"),
    ("activation-name", lambda: ops.activation_forward(_A.copy(), _A, "swish"), ValueError, r"activation must be one of \['identity', 'leaky_relu', 'relu', 'sigmoid', 'tanh'\], got 'swish'"),
    ("leaky-alpha", lambda: ops.activation_forward(_A.copy(), _A, "leaky_relu", alpha=1.0), ValueError, r"alpha must be in \(0.0, 1.0\), got 1.0"),
    ("l2-neg", lambda: ops.weight_penalty(_A, l2=-1.0), ValueError, r"l2 must be >= 0.0, got -1.0"),
    ("set_num_threads-0", lambda: pydl.set_num_threads(0), ValueError, r"n must be >= 1, got 0"),
    ("set_num_threads-float", lambda: pydl.set_num_threads(2.0), TypeError, r"n must be an integer, got float"),
    ("labels-out-of-range", lambda: ops.softmax_cross_entropy(None, np.zeros((2, 3)), labels=np.array([0, 3])), ValueError, r"labels: 1 of them are outside \[0, 3\)"),
    ("labels-negative", lambda: ops.softmax_cross_entropy(None, np.zeros((2, 3)), labels=np.array([-1, 0])), ValueError, r"labels: 1 of them are outside \[0, 3\)"),
]:
    bad(f"ops-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ schedules
for case_id, fn, exc, match in [
    ("constant-0", lambda: schedules.Constant(0), ValueError, r"lr0 must be > 0, got 0.0"),
    ("constant-neg", lambda: schedules.Constant(-0.1), ValueError, r"lr0 must be > 0, got -0.1"),
    ("constant-nan", lambda: schedules.Constant(math.nan), ValueError, r"lr0 must be finite, got nan"),
    ("constant-str", lambda: schedules.Constant("0.1"), TypeError, r"lr0 must be a real number, got str"),
    ("inverse-time-rate", lambda: schedules.InverseTimeDecay(0.1, -1), ValueError, r"decay_rate must be >= 0, got -1.0"),
    ("inverse-time-inf", lambda: schedules.InverseTimeDecay(0.1, math.inf), ValueError, r"decay_rate must be finite, got inf"),
    ("exponential-base-0", lambda: schedules.ExponentialDecay(0.1, 0.0), ValueError, r"base must be in \(0, 1\], got 0.0"),
    ("exponential-base-2", lambda: schedules.ExponentialDecay(0.1, 2.0), ValueError, r"base must be in \(0, 1\], got 2.0"),
    ("inverse-sqrt-k", lambda: schedules.InverseSqrtDecay(0.1, k=0), ValueError, r"k must be > 0, got 0.0"),
    ("staircase-interval-0", lambda: schedules.StaircaseDecay(0.1, 1.0, 0), ValueError, r"interval must be >= 1, got 0"),
    ("staircase-interval-float", lambda: schedules.StaircaseDecay(0.1, 1.0, 2.5), TypeError, r"interval must be an integer, got float"),
    ("epoch-negative", lambda: schedules.Constant(0.1)(-1), ValueError, r"epoch must be >= 0, got -1"),
    ("epoch-float", lambda: schedules.Constant(0.1)(1.5), TypeError, r"epoch must be an integer, got float"),
    ("fn-nan", lambda: schedules.as_schedule(lambda e: math.nan)(0), ValueError, r"returned nan at epoch 0; it must return a finite number > 0"),
    ("fn-negative", lambda: schedules.as_schedule(lambda e: -0.1)(3), ValueError, r"returned -0.1 at epoch 3"),
    ("fn-none", lambda: schedules.as_schedule(lambda e: None)(0), ValueError, r"returned None at epoch 0"),
    ("as_schedule-bool", lambda: schedules.as_schedule(True), TypeError, r"a learning rate cannot be a bool"),
    ("as_schedule-str", lambda: schedules.as_schedule("fast"), TypeError, r"learning rate must be a number, a Schedule"),
    ("from_dict-name", lambda: schedules.from_dict({"name": "Cosine"}), ValueError, r"unknown schedule name 'Cosine'"),
    ("from_dict-keys", lambda: schedules.from_dict({"name": "Constant", "lr": 0.1}), ValueError, r"Constant needs exactly the keys \['lr0'\]"),
    ("LRScheduler-nan", lambda: fit(model(), callbacks=[callbacks.LRScheduler(lambda e: math.nan)]), ValueError, r"returned nan at epoch 0"),
]:
    bad(f"schedule-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ callbacks
for case_id, fn, exc, match in [
    ("early-patience", lambda: callbacks.EarlyStopping(patience=-1), ValueError, r"patience must be an integer >= 0, got -1"),
    ("early-min_delta", lambda: callbacks.EarlyStopping(min_delta=math.nan), ValueError, r"min_delta must be a finite number >= 0, got nan"),
    ("early-mode", lambda: callbacks.EarlyStopping(mode="up"), ValueError, r"mode must be 'auto', 'min' or 'max', got 'up'"),
    ("early-monitor-missing", lambda: fit(model(), callbacks=[callbacks.EarlyStopping()]), ValueError, r"EarlyStopping monitors 'dev_loss' but the epoch logged only"),
    ("checkpoint-every", lambda: callbacks.Checkpoint("x.npz", every=0), ValueError, r"every must be an integer >= 1, got 0"),
    ("checkpoint-keep_last", lambda: callbacks.Checkpoint("x.npz", keep_last=0), ValueError, r"keep_last must be an integer >= 1 or None, got 0"),
    ("checkpoint-path", lambda: callbacks.Checkpoint(3), TypeError, r"expected str, bytes or os.PathLike object, not int"),
]:
    bad(f"callback-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ data utilities
for case_id, fn, exc, match in [
    ("split-length", lambda: data.train_dev_test_split(X, Y[:5]), ValueError, r"y has 5 rows but X has 12; they must match"),
    ("split-empty", lambda: data.train_dev_test_split(X[:0], Y[:0]), ValueError, r"X has 0 rows; a train/dev/test split needs at least 3"),
    ("split-two-rows", lambda: data.train_dev_test_split(X[:2], Y[:2]), ValueError, r"X has 2 rows; a train/dev/test split needs at least 3"),
    ("split-1d", lambda: data.train_dev_test_split(X[:, 0], Y), ValueError, r"X must be 2-D \(m, n_features\), got shape \(12,\)"),
    ("split-object", lambda: data.train_dev_test_split(X.astype(object), Y), TypeError, r"X must be a numeric array, got dtype object"),
    ("split-complex", lambda: data.train_dev_test_split(X.astype(complex), Y), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("split-y-complex", lambda: data.train_dev_test_split(X, Y.astype(complex)), TypeError, r"y must be a numeric array, got dtype complex128"),
    ("split-ratios-2", lambda: data.train_dev_test_split(X, Y, ratios=(0.5, 0.5)), ValueError, r"ratios must have 3 entries \(train, dev, test\), got 2"),
    ("split-ratios-neg", lambda: data.train_dev_test_split(X, Y, ratios=(1.2, -0.1, -0.1)), ValueError, r"ratios must be non-negative and finite"),
    ("split-ratios-nan", lambda: data.train_dev_test_split(X, Y, ratios=(math.nan, 0.5, 0.5)), ValueError, r"ratios must be non-negative and finite"),
    ("split-ratios-sum", lambda: data.train_dev_test_split(X, Y, ratios=(0.5, 0.2, 0.2)), ValueError, r"ratios must sum to 1"),
    ("split-ratios-str", lambda: data.train_dev_test_split(X, Y, ratios="60/20/20"), ValueError, r'ratios must be "auto" or \(train, dev, test\)'),
    ("split-seed", lambda: data.train_dev_test_split(X, Y, seed=-3), ValueError, r"seed must be a non-negative int, got -3"),
    ("split-seed-float", lambda: data.train_dev_test_split(X, Y, seed=1.5), TypeError, r"seed must be None, a non-negative int or a numpy.random.Generator, got float"),
    ("split-stratify-float", lambda: data.train_dev_test_split(X, Y + 0.5, stratify=True), TypeError, r"stratify=True needs integer class labels"),
    ("split-shuffle", lambda: data.train_dev_test_split(X, Y, shuffle="yes"), TypeError, r"shuffle must be a bool, got str"),
    ("std-nan", lambda: data.Standardizer().fit(with_nan(X)), ValueError, r"X contains NaN or infinity; cannot fit a Standardizer"),
    ("std-inf", lambda: data.Standardizer().fit(with_nan(X, np.inf)), ValueError, r"X contains NaN or infinity"),
    ("std-empty", lambda: data.Standardizer().fit(X[:0]), ValueError, r"X has 0 rows; cannot fit a Standardizer"),
    ("std-complex", lambda: data.Standardizer().fit(X.astype(complex)), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("std-str", lambda: data.Standardizer().fit(X.astype(str)), TypeError, r"X must be a numeric array, got dtype <U"),
    ("std-object", lambda: data.Standardizer().fit(X.astype(object)), TypeError, r"X must be a numeric array, got dtype object"),
    ("std-1d", lambda: data.Standardizer().fit(X[0]), ValueError, r"X must be 2-D"),
    ("std-transform-width", lambda: data.Standardizer().fit(X).transform(X[:, :2]), ValueError, r"X has 2 features but the Standardizer was fitted on 4"),
    ("std-transform-complex", lambda: data.Standardizer().fit(X).transform(X.astype(complex)), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("std-transform-str", lambda: data.Standardizer().fit(X).transform(X.astype(str)), TypeError, r"X must be a numeric array"),
    ("std-unfitted", lambda: data.Standardizer().transform(X), RuntimeError, r"Standardizer is not fitted; call fit\(X_train\) first"),
    ("std-state-scale", lambda: data.Standardizer.from_state({"mean": np.zeros(2), "scale": np.array([1.0, 0.0])}), ValueError, r"state\['scale'\] must be > 0 everywhere"),
    ("std-state-nan", lambda: data.Standardizer.from_state({"mean": np.array([np.nan]), "scale": np.ones(1)}), ValueError, r"state\['mean'\] contains NaN or infinity"),
    ("std-state-shapes", lambda: data.Standardizer.from_state({"mean": np.zeros(2), "scale": np.ones(3)}), ValueError, r"state\['mean'\] has shape \(2,\) but state\['scale'\] has \(3,\)"),
    ("std-state-missing", lambda: data.Standardizer.from_state({"mean": np.zeros(2)}), ValueError, r"state must be a mapping with keys 'mean' and 'scale'"),
    ("batches-0", lambda: data.minibatches(X, Y, 0), ValueError, r"batch_size must be >= 1, got 0"),
    ("batches-neg", lambda: data.minibatches(X, Y, -5), ValueError, r"batch_size must be >= 1, got -5"),
    ("batches-float", lambda: data.minibatches(X, Y, 2.5), TypeError, r"batch_size must be an int, got float"),
    ("batches-length", lambda: data.minibatches(X, Y[:3], 2), ValueError, r"y has 3 rows but X has 12; they must match"),
    ("batches-empty", lambda: data.minibatches(X[:0], Y[:0], 2), ValueError, r"X has 0 rows; nothing to batch"),
    ("batches-scalar", lambda: data.minibatches(3.0, Y, 2), ValueError, r"X must have one row per example, got a scalar"),
    ("batches-block", lambda: data.minibatches(X, Y, 4, block_rows=6), ValueError, r"block_rows must be a multiple of batch_size=4, got 6"),
    ("batches-complex", lambda: data.minibatches(X.astype(complex), Y, 4), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("noise-neg", lambda: data.GaussianNoise(-0.1), ValueError, r"std must be >= 0, got -0.1"),
    ("noise-nan", lambda: data.GaussianNoise(math.nan), ValueError, r"std must be finite, got nan"),
    ("noise-int-batch", lambda: data.GaussianNoise(0.1)(np.ones((2, 2), int), np.random.default_rng()), TypeError, r"Xb must be a floating array, got dtype int64"),
    ("noise-rng", lambda: data.GaussianNoise(0.1)(X, 0), TypeError, r"rng must be a numpy.random.Generator, got int"),
    ("flip-p", lambda: data.HorizontalFlip((2, 2), p=1.5), ValueError, r"p must be in \[0, 1\], got 1.5"),
    ("flip-shape", lambda: data.HorizontalFlip((3, 3))(X, np.random.default_rng()), ValueError, r"Xb rows have 4 values but image_shape \(3, 3\) has 9"),
    ("flip-image_shape", lambda: data.HorizontalFlip((2, 0)), ValueError, r"image_shape must be \(H, W\) or \(H, W, C\) of positive ints"),
    ("shift-neg", lambda: data.RandomShift((2, 2), max_shift=-1), ValueError, r"max_shift must be in \[0, min\(H, W\)\)"),
    ("shift-float", lambda: data.RandomShift((2, 2), max_shift=0.5), TypeError, r"max_shift must be an int, got float"),
    ("rotate-degrees", lambda: data.RandomRotation((2, 2), max_degrees=270), ValueError, r"max_degrees must be in \[0, 180\], got 270"),
    ("compose-item", lambda: data.Compose([data.GaussianNoise(0.1), "flip"]), TypeError, r"augs\[1\] must be callable as aug\(Xb, rng\), got str"),
    ("moons-n", lambda: pydl.datasets.make_moons(1), ValueError, r"n_samples must be >= 2 \(one per class\), got 1"),
    ("moons-noise", lambda: pydl.datasets.make_moons(10, noise=-1.0), ValueError, r"noise must be finite and >= 0, got -1.0"),
    ("spirals-noise-nan", lambda: pydl.datasets.make_spirals(10, noise=math.nan), ValueError, r"noise must be finite and >= 0, got nan"),
    ("ewa-beta", lambda: pydl.ewa([1.0, 2.0], beta=1.0), ValueError, r"beta must be in \[0, 1\), got 1.0"),
    ("ewa-beta-nan", lambda: pydl.ewa([1.0, 2.0], beta=math.nan), ValueError, r"beta must be in \[0, 1\), got nan"),
]:
    bad(f"data-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ gradcheck
_gc_model = pydl.mlp([N_IN, 5, C], seed=0)
for case_id, fn, exc, match in [
    ("eps-0", lambda: gradcheck.gradient_check(_gc_model, X, Y, eps=0.0), ValueError, r"eps must be a finite number > 0, got 0.0"),
    ("eps-nan", lambda: gradcheck.gradient_check(_gc_model, X, Y, eps=math.nan), ValueError, r"eps must be a finite number > 0, got nan"),
    ("coords-0", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=0), ValueError, r"coordinates must be >= 1, got 0"),
    ("coords-neg", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=[-1]), ValueError, r"coordinates must be indices in \[0, 43\)"),
    ("coords-big", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=[43]), ValueError, r"coordinates must be indices in \[0, 43\)"),
    ("coords-empty", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=[]), ValueError, r"coordinates must be indices in \[0, 43\)"),
    ("coords-float", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=[1.5, 2.0]), TypeError, r"coordinates must be integer indices, got dtype float64"),
    ("coords-float-int", lambda: gradcheck.gradient_check(_gc_model, X, Y, coordinates=2.0), TypeError, r"coordinates must be None, an int or integer indices"),
    ("X-nan", lambda: gradcheck.gradient_check(_gc_model, with_nan(X), Y), ValueError, r"X contains NaN or inf"),
    ("X-complex", lambda: gradcheck.gradient_check(_gc_model, X.astype(complex), Y), TypeError, r"X must be a numeric array"),
    ("X-width", lambda: gradcheck.gradient_check(_gc_model, X[:, :2], Y), ValueError, r"X has 2 features but the model expects 4"),
    ("y-range", lambda: gradcheck.gradient_check(_gc_model, X, Y + 3), ValueError, r"y holds labels outside \[0, 3\)"),
    ("y-length", lambda: gradcheck.gradient_check(_gc_model, X, Y[:4]), ValueError, r"y has 4 rows but X has 12"),
    ("dropout", lambda: gradcheck.gradient_check(pydl.mlp([N_IN, 5, C], keep_prob=0.5, seed=0), X, Y), ValueError, r"the model has active dropout"),
    ("numgrad-theta-2d", lambda: gradcheck.numerical_gradient(lambda t: 0.0, np.zeros((2, 2))), ValueError, r"theta must be a 1-D numpy array, got \(2, 2\)"),
    ("numgrad-theta-list", lambda: gradcheck.numerical_gradient(lambda t: 0.0, [0.0, 1.0]), ValueError, r"theta must be a 1-D numpy array, got list"),
    ("numgrad-eps", lambda: gradcheck.numerical_gradient(lambda t: 0.0, np.zeros(2), eps=-1e-7), ValueError, r"eps must be a finite number > 0"),
    ("numgrad-coords", lambda: gradcheck.numerical_gradient(lambda t: 0.0, np.zeros(2), coordinates=[2]), ValueError, r"coordinates must be indices in \[0, 2\)"),
    ("numgrad-coords-float", lambda: gradcheck.numerical_gradient(lambda t: 0.0, np.zeros(2), coordinates=[0.5]), TypeError, r"coordinates must be integer indices, got dtype float64"),
    ("layer-not-layer", lambda: gradcheck.check_layer("Dense", X), TypeError, r"layer must be a pydl.nn.Layer, got str"),
    ("layer-X-nan", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), with_nan(X)), ValueError, r"X must be a finite 2-D array with at least one row"),
    ("layer-X-1d", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), X[0]), ValueError, r"X must be a finite 2-D array with at least one row, got shape \(4,\)"),
    ("layer-X-complex", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), X.astype(complex)), TypeError, r"X must be a numeric array, got dtype complex128"),
    ("layer-X-str", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), X.astype(str)), TypeError, r"X must be a numeric array, got dtype <U"),
    ("layer-X-object", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), X.astype(object)), TypeError, r"X must be a numeric array, got dtype object"),
    ("layer-X-width", lambda: gradcheck.check_layer(nn.Dense(N_IN, 2), X[:, :3]), ValueError, r"A_prev has 3 features but the layer expects 4"),
    ("layer-dropout", lambda: gradcheck.check_layer(nn.Dropout(0.5), X), ValueError, r"dropout layers cannot be gradient-checked"),
]:
    bad(f"gradcheck-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ tune


def _objective(params):
    return params["x"]


_SPACE = {"x": tune.uniform(0, 1)}
for case_id, fn, exc, match in [
    ("uniform-reversed", lambda: tune.uniform(1, 0), ValueError, r"uniform needs low < high, got low=1.0, high=0.0"),
    ("uniform-inf", lambda: tune.uniform(0, math.inf), ValueError, r"high must be finite, got inf"),
    ("uniform-str", lambda: tune.uniform("0", 1), TypeError, r"low must be a real number, got str"),
    ("loguniform-0", lambda: tune.loguniform(0, 1), ValueError, r"loguniform needs low > 0, got low=0.0"),
    ("loguniform-nan", lambda: tune.loguniform(math.nan, 1), ValueError, r"low must be finite, got nan"),
    ("beta-1", lambda: tune.one_minus_loguniform(0.9, 1.0), ValueError, r"one_minus_loguniform needs high < 1"),
    ("beta-neg", lambda: tune.one_minus_loguniform(-0.5, 0.9), ValueError, r"one_minus_loguniform needs low >= 0 \(a beta in \[0, 1\)\), got low=-0.5"),
    ("randint-reversed", lambda: tune.randint(3, 1), ValueError, r"randint needs low <= high, got low=3, high=1"),
    ("randint-float", lambda: tune.randint(0.5, 3), TypeError, r"low must be an integer, got float"),
    ("choice-empty", lambda: tune.choice([]), ValueError, r"choice needs at least one option"),
    ("choice-set", lambda: tune.choice({1, 2}), TypeError, r"choice options must be a list or tuple of values, got set"),
    ("rs-n_trials-0", lambda: tune.random_search(_objective, _SPACE, 0), ValueError, r"n_trials must be >= 1, got 0"),
    ("rs-n_trials-float", lambda: tune.random_search(_objective, _SPACE, 2.0), TypeError, r"n_trials must be an integer, got float"),
    ("rs-space-empty", lambda: tune.random_search(_objective, {}, 2), ValueError, r"space must not be empty"),
    ("rs-space-list", lambda: tune.random_search(_objective, [1, 2], 2), TypeError, r"space must be a dict of name -> distribution or constant, got list"),
    ("rs-space-key", lambda: tune.random_search(_objective, {1: 2}, 2), TypeError, r"space keys must be str parameter names, got 1"),
    ("rs-objective", lambda: tune.random_search("f", _SPACE, 2), TypeError, r"objective must be callable, got str"),
    ("rs-direction", lambda: tune.random_search(_objective, _SPACE, 2, direction="down"), ValueError, r"direction must be 'minimize' or 'maximize', got 'down'"),
    ("rs-metric", lambda: tune.random_search(_objective, _SPACE, 2, metric=""), ValueError, r"metric must be a non-empty str"),
    ("rs-seed", lambda: tune.random_search(_objective, _SPACE, 2, seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("rs-n_jobs", lambda: tune.random_search(_objective, _SPACE, 2, n_jobs=0), ValueError, r"n_jobs must be >= 1, or -1 for one worker per CPU, got 0"),
    ("rs-threads", lambda: tune.random_search(_objective, _SPACE, 2, threads_per_worker=0), ValueError, r"threads_per_worker must be >= 1, got 0"),
    ("rs-journal", lambda: tune.random_search(_objective, _SPACE, 2, journal=3), TypeError, r"journal must be a path \(str or os.PathLike\) or None, got int"),
    ("rs-all-nan", lambda: tune.random_search(lambda p: math.nan, _SPACE, 2, seed=0).best, RuntimeError, r"no trial succeeded \(2 failed\); first error: dev_loss is nan \(not finite\)"),
    ("ctf-rounds", lambda: tune.coarse_to_fine(_objective, _SPACE, rounds=0), ValueError, r"rounds must be >= 1, got 0"),
    ("sh-eta", lambda: tune.successive_halving(lambda p, b: 0.0, _SPACE, 4, 1, 9, eta=1), ValueError, r"eta must be > 1 \(the promotion ratio\), got 1.0"),
    ("sh-budgets", lambda: tune.successive_halving(lambda p, b: 0.0, _SPACE, 4, 9, 1), ValueError, r"max_budget must be >= min_budget \(9.0\), got 1.0"),
]:
    bad(f"tune-{case_id}", exc, match, fn)

# ------------------------------------------------------------------ CLI configs
for toml, match in [
    ("[model]\nkeep_prob = 0.0", r"model.keep_prob must be in \(0, 1\], got 0.0"),
    ("[model]\nkeep_prob = 1.5", r"model.keep_prob must be in \(0, 1\], got 1.5"),
    ("[model]\nkeep_prob = nan", r"model.keep_prob must be in \(0, 1\], got nan"),
    ("[model]\nhidden = [0]", r"model.hidden must be a list of positive integers, got \[0\]"),
    ("[model]\nl2 = -1.0", r"model.l2 must be >= 0, got -1.0"),
    ("[model]\nl2 = inf", r"model.l2 must be a finite number >= 0, got inf"),
    ("[model]\nloss = 'hinge'", r"model.loss must be one of \['mse', 'sigmoid_cross_entropy', 'softmax_cross_entropy'\], got 'hinge'"),
    ("[model]\ninit = 'normal'", r"model.init must be 'auto' or one of \['he', .*got 'normal'"),
    ("[optimizer]\nlr = -0.1", r"\[optimizer\]: lr must be a finite number > 0.0, got -0.1"),
    ("[optimizer]\nlr = nan", r"\[optimizer\]: lr must be a finite number > 0.0, got nan"),
    ("[optimizer]\nname = 'adam'\nbeta1 = 1.0", r"\[optimizer\]: beta1 must be a finite number in \[0.0, 1.0\), got 1.0"),
    ("[optimizer]\nname = 'momentum'\nbeta = -0.5", r"\[optimizer\]: beta must be a finite number in \[0.0, 1.0\), got -0.5"),
    ("[training]\nbatch_size = 0", r"training.batch_size must be >= 1, got 0"),
    ("[training]\nbatch_size = 2.5", r"training.batch_size must be an integer, got 2.5"),
    ("[training]\nepochs = -1", r"training.epochs must be >= 1, got -1"),
    ("[training]\nseed = -1", r"training.seed must be >= 0, got -1"),
    ("[data]\nseed = -1", r"data.seed must be >= 0, got -1"),
    ("[data]\nratios = [0.5, 0.6, -0.1]", r"data.ratios must be non-negative and finite"),
    ("[data]\nratios = [0.5, 0.2, 0.2]", r"data.ratios must sum to 1"),
    ("[data]\nsource = 'moons'\nnoise = -1.0", r"data.noise must be a finite number >= 0, got -1.0"),
    ("[data]\nsource = 'moons'\nn_samples = 0", r"data.n_samples must be >= 3, got 0"),
    ("[data]\nsource = 'spirals'\nn_classes = 1", r"data.n_classes must be >= 2, got 1"),
    ("[data]\nsource = 'mnist'", r"data.source must be digits, moons, circles, spirals or file, got 'mnist'"),
    ("[search]\ntrials = 0", r"search.trials must be >= 1, got 0"),
    ("[search]\nrounds = 0", r"search.rounds must be >= 1, got 0"),
    ("[search.space]\n'optimizer.lr' = {dist = 'loguniform', low = -1.0, high = 1.0}", r"\[search.space\]: loguniform needs low > 0"),
    ("[schedule]\nname = 'exponential'\nbase = 2.0", r"\[schedule\]: base must be in \(0, 1\], got 2.0"),
    ("[model]\nunknown = 1", r"unknown key model.unknown"),
    ("[optimizer]\nlearning_rate = 0.01", r"\[optimizer\]: Adam takes no argument 'learning_rate'; its arguments are lr, beta1"),
    ("[schedule]\nname = 'inverse_time'", r"\[schedule\]: schedule 'inverse_time' needs schedule.decay_rate"),
    ("[schedule]\nname = 'exponential'\nrate = 0.5", r"\[schedule\]: schedule 'exponential' takes no key 'rate'; its keys are base"),
    ("nonsense ==", r"is not valid TOML"),
]:
    def call(toml=toml, tmp=[]):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(toml)
        return config.load_config(f.name)
    bad(f"config-{toml.splitlines()[-1][:40]}", config.ConfigError, match, call)


@pytest.mark.parametrize("fn, exc, match", CASES)
def test_bad_input_is_refused_with_a_message_naming_it(fn, exc, match):
    COUNT["hand-written cases"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a ComplexWarning would mean a silent cast
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        with pytest.raises(exc, match=match):
            fn()


def test_cli_reports_a_bad_config_and_exits_2(tmp_path, capsys):
    from pydl import cli

    cfg = tmp_path / "bad.toml"
    cfg.write_text("[training]\nbatch_size = -4\n")
    assert cli.main(["train", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"training.batch_size must be >= 1, got -4 in .*bad.toml", err), err
    assert cli.main(["train", "--lr", "-1", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "lr must be a finite number" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "missing.npz"), "--out",
                     str(tmp_path / "out"), "--quiet"]) == 2
    assert "missing.npz" in capsys.readouterr().err
    COUNT["hand-written cases"] += 3


# ------------------------------------------------------------------ accepted conversions
# Ints, bools, float16/float64 and lists for X; ints, bools, integral floats for labels;
# int one-hot rows: all converted, and each gives exactly the result of the float32 input.

XI = (RNG.integers(-3, 4, (M, N_IN))).astype(np.int64)


@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.int8), lambda a: a.astype(np.int32), lambda a: (a + 3).astype(np.uint8),
    lambda a: a.astype(np.float16), lambda a: a.astype(np.float64), lambda a: a.tolist(),
    lambda a: np.asfortranarray(a.astype(np.float32)), lambda a: np.repeat(a.astype(np.float32), 2, axis=0)[::2],
    lambda a: (a > 0), lambda a: a.astype(">f4"),
], ids=["int8", "int32", "uint8", "float16", "float64", "list", "fortran", "strided", "bool", "big-endian"])
def test_accepted_X_conversions_give_the_float32_result(convert):
    COUNT["hand-written cases"] += 1
    m = model()
    Xc = convert(XI)
    ref = np.asarray(Xc, dtype=np.float32)
    assert np.array_equal(m.forward(Xc), m.forward(ref))
    assert m.evaluate(Xc, Y) == m.evaluate(ref, Y)
    a, b = model(), model()
    fit(a, Xc, Y, epochs=2)
    fit(b, ref, Y, epochs=2)
    assert np.array_equal(a.theta, b.theta)


@pytest.mark.parametrize("labels", [
    Y.astype(np.int8), Y.astype(np.uint16), Y.astype(np.float32), Y.astype(np.float64), Y.tolist(),
    np.eye(C)[Y], np.eye(C, dtype=np.int64)[Y], np.eye(C, dtype=bool)[Y],
], ids=["int8", "uint16", "float32-integral", "float64-integral", "list", "one-hot", "one-hot-int", "one-hot-bool"])
def test_accepted_label_conversions_give_the_int64_result(labels):
    COUNT["hand-written cases"] += 1
    m = model()
    assert m.evaluate(X, labels) == pytest.approx(m.evaluate(X, Y), rel=1e-6)
    a, b = model(), model()
    fit(a, X, labels, epochs=2)
    fit(b, X, Y, epochs=2)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-5, atol=1e-7)


def test_bool_labels_are_class_ids_0_and_1():
    COUNT["hand-written cases"] += 1
    m = pydl.mlp([N_IN, 5, 2], seed=0)
    assert m.evaluate(X, Y > 0) == m.evaluate(X, (Y > 0).astype(np.int64))


# ------------------------------------------------------------------ property tests
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_MODEL = pydl.mlp([N_IN, 6, C], seed=0)

DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "complex128",
          "object", "U3", "M8[s]"]


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 3, N_IN, 5]), min_size=ndim, max_size=ndim)))
    values = np.asarray(draw(st.lists(st.floats(-10, 10, allow_nan=False, width=32),
                                      min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                        dtype=np.float64).reshape(shape)
    poison = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if poison is not None and values.size and dtype.startswith(("float", "complex", "object")):
        values.flat[draw(st.integers(0, values.size - 1))] = poison
    return values.astype(dtype) if dtype != "M8[s]" else values.astype(np.int64).astype(dtype)


def _expected_X_error(a):
    """(exception type, message regex) that a model must raise for X = a, or None."""
    if a.dtype.kind not in "biuf":
        return TypeError, r"X must be a numeric array, got dtype"
    if a.ndim != 2:
        return ValueError, r"X must be 2-D \(m, 4\)"
    if a.shape[1] != N_IN:
        return ValueError, rf"X has {a.shape[1]} features but the model expects 4"
    if a.shape[0] == 0:
        return ValueError, r"X is empty"
    if not np.isfinite(a.astype(np.float64)).all():
        return ValueError, r"X contains NaN or inf"
    return None


@FAST
@given(a=arrays(), entry=st.sampled_from(["predict", "evaluate", "fit", "forward_backward"]))
def test_any_X_is_refused_exactly_when_it_is_bad_and_otherwise_matches_float32(a, entry):
    COUNT["hypothesis examples"] += 1
    expected = _expected_X_error(a)
    m = _MODEL.copy()
    y = np.arange(a.shape[0] if a.ndim else 1) % C

    def run(Xa):
        if entry == "predict":
            return m.predict(Xa)
        if entry == "evaluate":
            return m.evaluate(Xa, y)
        if entry == "forward_backward":
            J = m.forward_backward(Xa, y)
            return J, m.dtheta.copy()
        return fit(m, Xa, y, batch_size=1).history, m.theta.copy()

    if expected is not None:
        with pytest.raises(expected[0], match=expected[1]):
            run(a)
        assert np.array_equal(m.theta, _MODEL.theta), "a refused call changed the model"
        return
    got = run(a)
    m = _MODEL.copy()
    want = run(a.astype(np.float32))
    if entry == "fit":
        assert np.array_equal(got[1], want[1])
    elif entry == "forward_backward":
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
    elif entry == "evaluate":
        assert got == want
    else:
        assert np.array_equal(got, want)


@st.composite
def label_arrays(draw):
    kind = draw(st.sampled_from(["int", "float", "uint", "bool", "str", "complex", "object", "onehot"]))
    n = draw(st.sampled_from([M, M - 1, M + 1, 0]))
    if kind == "onehot":
        rows = draw(st.lists(st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, np.nan]), min_size=C, max_size=C),
                             min_size=n, max_size=n))
        return np.asarray(rows, dtype=np.float64).reshape(n, C)
    values = draw(st.lists(st.one_of(st.integers(-2, C + 2), st.floats(-2, C + 2),
                                     st.sampled_from([np.nan, np.inf, -np.inf, 1e30, 2.0**70])),
                           min_size=n, max_size=n))
    a = np.asarray(values, dtype=np.float64)
    if kind in ("int", "uint", "bool", "str"):
        a = np.clip(np.nan_to_num(np.round(a), nan=0, posinf=C + 1, neginf=-1), -5, 1e9)
    if kind == "int":
        return a.astype(np.int64)
    if kind == "uint":
        return np.abs(a).astype(np.uint32)
    if kind == "bool":
        return a > 1
    if kind == "str":
        return a.astype(np.int64).astype(str)
    if kind == "complex":
        return a.astype(complex)
    if kind == "object":
        return a.astype(object)
    return a


def _expected_y_error(y):
    if y.ndim == 2:
        if y.shape[0] != M:
            return ValueError, rf"y has {y.shape[0]} rows but X has {M}"
        if not np.isfinite(y).all():
            return ValueError, r"y contains NaN or inf"
        if (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
            return ValueError, r"one-hot y must have non-negative rows that sum to 1"
        return None
    if y.shape[0] != M:
        return ValueError, rf"y has {y.shape[0]} rows but X has {M}"
    if y.dtype.kind not in "biuf":
        return TypeError, r"y must hold integer class ids, got dtype"
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or (y != np.round(y)).any()):
        return ValueError, r"y must hold integer class ids, got non-integer values"
    yi = y.astype(np.float64)
    if yi.size and (yi.min() < 0 or yi.max() >= C):
        return ValueError, r"y holds labels outside \[0, 3\)"
    return None


@FAST
@given(y=label_arrays(), entry=st.sampled_from(["evaluate", "fit"]))
def test_any_labels_are_refused_exactly_when_they_are_bad(y, entry):
    COUNT["hypothesis examples"] += 1
    expected = _expected_y_error(y)
    m = _MODEL.copy()

    def run(labels):
        if entry == "evaluate":
            return m.evaluate(X, labels)
        fit(m, X, labels, batch_size=M)
        return m.theta.copy()

    if expected is not None:
        with pytest.raises(expected[0], match=expected[1]):
            run(y)
        return
    got = run(y)
    m = _MODEL.copy()
    ref = y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)
    want = run(ref)
    if entry == "evaluate":
        assert got == pytest.approx(want, rel=1e-6)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


hyper_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -0.0, 1e-300, 1 - 1e-16, 0.5]),
    st.integers(-2, 2),
    st.sampled_from(["0.1", None, True, [0.1]]),
)


def _expect_hyper(name, v, lo, hi, lo_open, hi_open):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return TypeError, rf"{name} must be a real number"
    f = float(v)
    ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)
    # (eps: "... at least <the smallest normal float64>" below it, as 0 is "... > 0.0")
    bound = "in [[(]" if hi < math.inf else (f"> {float(lo)}" if lo_open else f">= {float(lo)}")
    return None if ok else (ValueError, rf"{name} must be a finite number {bound}" if name != "eps"
                            else r"eps must be (a finite number > 0.0|at least)")


@FAST
@given(opt=st.sampled_from(["SGD", "Momentum", "RMSprop", "Adam"]),
       name=st.sampled_from(["lr", "weight_decay", "beta", "beta1", "beta2", "eps"]), value=hyper_values)
@example(opt="Adam", name="eps", value=1e-310)  # subnormal: refused at construction
@example(opt="Adam", name="eps", value=1e-39)  # normal in float64 only: refused at the step
@example(opt="RMSprop", name="eps", value=1e39)  # beyond float32: refused at the step
def test_any_optimizer_hyperparameter_is_refused_exactly_when_out_of_range(opt, name, value):
    COUNT["hypothesis examples"] += 1
    cls = OPTS[opt]
    ranges = {"lr": (0, math.inf, True, False), "weight_decay": (0, math.inf, False, False),
              "beta": (0, 1, False, True), "beta1": (0, 1, False, True), "beta2": (0, 1, False, True),
              "eps": (float(np.finfo(np.float64).tiny), math.inf, False, False)}
    accepted = {"SGD": {"lr", "weight_decay"}, "Momentum": {"lr", "weight_decay", "beta"},
                "RMSprop": {"lr", "weight_decay", "beta", "eps"},
                "Adam": {"lr", "weight_decay", "beta1", "beta2", "eps"}}[opt]
    if name not in accepted:
        with pytest.raises(TypeError, match=name):
            cls(**{name: value})
        return
    expected = _expect_hyper(name, value, *ranges[name])
    if expected is None:
        o = cls(**{name: value})
        assert getattr(o, name) == float(value)
        holder = _Holder(5, 5)
        holder.dtheta[:] = 1.0
        f32 = np.finfo(np.float32)
        if name == "eps" and not f32.tiny <= float(value) <= f32.max:
            # a normal float64 that float32 cannot hold as one: refused when stepping float32
            with pytest.raises(ValueError, match="eps must be in .* for float32 arrays"):
                o.step(holder)
            assert o.t == 0 and not holder.theta.any()
            return
        if name in ("lr", "weight_decay") and float(value) > f32.max:  # inf in float32
            with pytest.raises(ValueError, match=f"{name} must be at most .* for float32 arrays"):
                o.step(holder)
            assert o.t == 0 and not holder.theta.any()
            return
        if name in ("lr", "weight_decay") and 0 < float(value) < f32.tiny:  # 0 in float32
            with pytest.raises(ValueError, match=f"{name} must be at least .* for float32"):
                o.step(holder)
            assert o.t == 0 and not holder.theta.any()
            return
        try:
            o.step(holder)
        except FloatingPointError:  # a huge lr or weight decay overflows float32: refused
            assert o.t == 0 and not holder.theta.any()
        else:
            assert o.t == 1 and np.isfinite(holder.theta).all()
    else:
        with pytest.raises(expected[0], match=expected[1]):
            cls(**{name: value})


@FAST
@given(keep_prob=hyper_values)
def test_any_keep_prob_is_refused_exactly_when_outside_0_1(keep_prob):
    COUNT["hypothesis examples"] += 1
    numeric = not isinstance(keep_prob, bool) and isinstance(keep_prob, (int, float))
    if numeric and math.isfinite(keep_prob) and 0 < keep_prob <= 1:
        layer = nn.Dropout(keep_prob)
        out = layer.forward(X64, True)
        kept = out != 0
        np.testing.assert_allclose(out[kept], X64[kept] / keep_prob)
        return
    with pytest.raises(ValueError, match=r"keep_prob must be (in \(0, 1\]|a number)|give exactly one of keep_prob"):
        nn.Dropout(keep_prob)
    with pytest.raises((ValueError, TypeError), match=r"keep_prob must be"):
        ops.dropout_forward(X64.copy(), X64, 0, 0, 0, keep_prob)


@FAST
@given(batch_size=st.one_of(st.integers(-3, M + 3), st.sampled_from([2.0, "4", None, True, 10**12])))
def test_any_batch_size_is_refused_exactly_when_not_an_integer_ge_1(batch_size):
    COUNT["hypothesis examples"] += 1
    m = _MODEL.copy()
    ok = isinstance(batch_size, int) and not isinstance(batch_size, bool) and 1 <= batch_size
    if ok:
        h = fit(m, batch_size=batch_size)
        assert len(h.iterations) == -(-M // min(batch_size, M))  # > m: one batch of all m rows
        if batch_size >= M:
            ref = _MODEL.copy()
            fit(ref, batch_size=M)
            assert np.array_equal(m.theta, ref.theta)
    else:
        with pytest.raises(ValueError, match=r"batch_size must be"):
            fit(m, batch_size=batch_size)
        assert np.array_equal(m.theta, _MODEL.theta)


@pytest.fixture(scope="module", autouse=True)
def _report_count():
    yield
    total = sum(COUNT.values())
    print(f"\n[reliability bad input] {COUNT['hand-written cases']} hand-written cases + "
          f"{COUNT['hypothesis examples']} hypothesis examples = {total} bad/edge inputs tried")
