"""scikit-learn estimators over pydl networks: ``MLPClassifier`` and ``MLPRegressor``.

Both are ordinary scikit-learn estimators (``get_params``/``set_params``, ``clone``,
``Pipeline``, ``cross_val_score``, ``GridSearchCV``/``RandomizedSearchCV``, pickling) whose
``fit`` builds a network with :func:`pydl.mlp` and trains it with
:meth:`pydl.Sequential.fit`::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from pydl.sklearn import MLPClassifier

    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)

Inputs are not standardized here: put a ``StandardScaler`` in front (and scale
regression targets, e.g. with ``TransformedTargetRegressor``). Needs the optional
dependency scikit-learn (``pip install pydl[sklearn]``).
"""
from __future__ import annotations

import contextlib
import math
from numbers import Integral, Real

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("pydl.sklearn needs scikit-learn: pip install 'pydl[sklearn]' "
                      "(or pip install scikit-learn)") from e

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6
    _sk_validate_data = None

from .callbacks import EarlyStopping
from .data import _is_memory_mapped, train_dev_test_split
from .model import Sequential, _all_finite, mlp
from .optim import _bound, _in_range, get_optimizer

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
_DTYPES = ("float32", "float64")


def _validate_data(estimator, X, y="no_validation", reset=True, **kwargs):
    """``sklearn.utils.validation.validate_data`` (>= 1.6) or ``BaseEstimator._validate_data``."""
    if _sk_validate_data is not None:
        return _sk_validate_data(estimator, X, y, reset=reset, **kwargs)
    return estimator._validate_data(X, y, reset=reset, **kwargs)  # pragma: no cover


def _bad(name, expected, value):
    return ValueError(f"The {name!r} parameter must be {expected}, got {value!r}.")


def _check_int(name, value, lo):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)) or value < lo:
        raise _bad(name, f"an integer >= {lo}", value)
    return int(value)


def _check_real(name, value, lo, hi=math.inf, lo_open=False, hi_open=False):
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (Real, np.floating, np.integer))
    if not (ok and _in_range(float(value), lo, hi, lo_open, hi_open)):
        raise _bad(name, f"a finite number {_bound(lo, hi, lo_open, hi_open)}", value)
    return float(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise _bad(name, "True or False", value)
    return bool(value)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise _bad(name, f"one of {list(choices)}", value)
    return value


def _as_model_input(X, dtype, name="X"):
    """C-contiguous array of ``dtype`` that is not backed by a memory map.

    ``Sequential`` streams memory-mapped training data (and evaluates a memory map a
    chunk at a time); estimators get small in-memory data (or read-only memory maps from
    joblib), so copy those into RAM. ``X`` (named ``name`` in errors) is finite, as
    validated by scikit-learn unless its ``assume_finite`` is set (NaN or inf found here is
    then a ValueError); values too large for ``dtype`` are a ValueError that points to the
    estimator's ``dtype`` parameter.
    """
    with np.errstate(over="ignore"):  # an overflow to inf is reported below
        if _is_memory_mapped(X):
            out = np.array(X, dtype=dtype, order="C", copy=True)
        else:
            out = np.ascontiguousarray(X, dtype=dtype)
    if np.asarray(X).dtype.itemsize > out.dtype.itemsize and not _all_finite(out):
        if not _all_finite(np.asarray(X)):  # sklearn's check is off (assume_finite=True)
            raise ValueError(f"{name} contains NaN or inf")
        limit = float(np.finfo(out.dtype).max)
        raise ValueError(f"{name} has values beyond the {out.dtype.name} range (|x| > {limit:.4g}), "
                         f"which overflow to inf with the estimator's dtype={out.dtype.name!r}: "
                         f"rescale {name} (e.g. with a scikit-learn scaler) or set dtype='float64'")
    return out


class _BaseMLP(BaseEstimator):
    """Parameters, validation and training shared by the two estimators."""

    _loss = ""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", batchnorm=False, keep_prob=1.0,
                 l2=0.0, optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=50,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 dtype="float32", random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batchnorm = batchnorm
        self.keep_prob = keep_prob
        self.l2 = l2
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> dict:
        """Validated copies of the parameters (the attributes themselves are left as set)."""
        hls = self.hidden_layer_sizes
        if isinstance(hls, (Integral, np.integer)) and not isinstance(hls, (bool, np.bool_)):
            hls = (hls,)
        if isinstance(hls, (str, bytes)) or not hasattr(hls, "__iter__"):
            raise _bad("hidden_layer_sizes", "a sequence of positive integers", self.hidden_layer_sizes)
        hls = list(hls)
        if any(isinstance(h, (bool, np.bool_)) or not isinstance(h, (Integral, np.integer)) or h < 1
               for h in hls):
            raise _bad("hidden_layer_sizes", "a sequence of positive integers", self.hidden_layer_sizes)
        try:
            dtype = np.dtype(self.dtype).name
        except (TypeError, ValueError):
            dtype = None
        if dtype not in _DTYPES:
            raise _bad("dtype", "'float32' or 'float64'", self.dtype)
        optimizer = self.optimizer.lower() if isinstance(self.optimizer, str) else self.optimizer
        p = {
            "hidden_layer_sizes": [int(h) for h in hls],
            "activation": _check_choice("activation", self.activation, _ACTIVATIONS),
            "batchnorm": _check_bool("batchnorm", self.batchnorm),
            "keep_prob": _check_real("keep_prob", self.keep_prob, 0.0, 1.0, lo_open=True),
            "l2": _check_real("l2", self.l2, 0.0),
            "optimizer": _check_choice("optimizer", optimizer, _OPTIMIZERS),
            "learning_rate": _check_real("learning_rate", self.learning_rate, 0.0, lo_open=True),
            "batch_size": _check_int("batch_size", self.batch_size, 1),
            "epochs": _check_int("epochs", self.epochs, 1),
            "early_stopping": _check_bool("early_stopping", self.early_stopping),
            "validation_fraction": _check_real("validation_fraction", self.validation_fraction, 0.0, 1.0,
                                               lo_open=True, hi_open=True),
            "n_iter_no_change": _check_int("n_iter_no_change", self.n_iter_no_change, 1),
            "dtype": dtype,
            "verbose": int(self.verbose) if isinstance(self.verbose, (bool, np.bool_))
            else _check_int("verbose", self.verbose, 0),
        }
        try:
            p["rng"] = check_random_state(self.random_state)
        except ValueError:
            raise _bad("random_state", "None, an integer in [0, 2**32) or a numpy RandomState",
                       self.random_state) from None
        return p

    # ------------------------------------------------------------------ training
    @contextlib.contextmanager
    def _keeping_state_on_failure(self):
        """A fit that raises leaves the estimator as it was, fitted or not (validating X
        sets n_features_in_ before training, which would otherwise disagree with the old
        model_)."""
        def fitted_state():
            return {k: v for k, v in self.__dict__.items() if k.endswith("_") or k == "_y_1d"}
        saved = fitted_state()
        try:
            yield
        except BaseException:
            for k in fitted_state():
                del self.__dict__[k]
            self.__dict__.update(saved)
            raise

    def _train(self, p, X, y, n_out, stratify):
        """Build and train the network on validated X (m, n) and model-ready targets y,
        with the validated parameters p."""
        m = X.shape[0]
        rng = p["rng"]
        seed = int(rng.randint(np.iinfo(np.int32).max))
        X = _as_model_input(X, p["dtype"])
        validation_data, callbacks = None, []
        if p["early_stopping"]:
            if m < 3:
                raise ValueError(f"early_stopping=True needs at least 3 samples to hold out a "
                                 f"validation set, got n_samples={m}")
            split_seed = int(rng.randint(np.iinfo(np.int32).max))
            f = p["validation_fraction"]
            X, y, X_dev, y_dev, _, _ = train_dev_test_split(X, y, ratios=(1.0 - f, f, 0.0),
                                                            stratify=stratify, seed=split_seed)
            seen = np.unique(y).size if stratify else None  # classes left to train on
            if X.shape[0] == 0 or (seen is not None and seen < n_out):
                raise ValueError(
                    f"validation_fraction={f} leaves {X.shape[0]} of the {m} samples to train "
                    + (f"on, with {seen} of the {n_out} classes" if seen is not None else "on")
                    + ": lower validation_fraction or pass more samples")
            validation_data = (X_dev, y_dev)
            callbacks.append(EarlyStopping(monitor="dev_loss", patience=p["n_iter_no_change"],
                                           restore_best=True))
        model = mlp([X.shape[1], *p["hidden_layer_sizes"], n_out], activation=p["activation"],
                    batchnorm=p["batchnorm"], keep_prob=p["keep_prob"], l2=p["l2"], loss=self._loss,
                    seed=seed, dtype=p["dtype"])
        history = model.fit(X, y, optimizer=get_optimizer(p["optimizer"], lr=p["learning_rate"]),
                            epochs=p["epochs"], batch_size=min(p["batch_size"], X.shape[0]),
                            validation_data=validation_data, callbacks=callbacks,
                            verbose=1 if p["verbose"] else 0)
        self.model_ = model
        self.history_ = history
        self.n_iter_ = len(history.epoch)
        self.loss_ = float(history["loss"][-1])
        return self

    def _logits(self, X):
        """float64 logits (m, n_out) of validated X; each row from its row of X alone, bit
        for bit, whatever else X holds (scikit-learn's contract: predicting on a subset of
        the rows gives those rows' predictions), where pydl's own GEMM kernel is built
        (``pydl.ops.has_own_gemm``; else through the BLAS, equal to rounding)."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        X = _as_model_input(X, self.model_.dtype)
        return self.model_.forward(X, batch_invariant=True).astype(np.float64)

    def __setstate__(self, state):
        # Pickles from earlier builds hold model_ as a dict (architecture, theta, state
        # arrays, counters; no optimizer): rebuild it. model_ now pickles itself whole.
        saved = state.get("model_")
        if isinstance(saved, dict) and saved.get("__pydl_model__"):
            model = Sequential.from_architecture(saved["architecture"])
            model.theta[...] = saved["theta"]
            live = model._state_arrays()
            for key, arr in saved["state"].items():
                live[key][...] = arr
            model.epoch, model.step = saved["epoch"], saved["step"]
            model.history = state.get("history_")
            state = {**state, "model_": model}
        super().__setstate__(state)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained with pydl (softmax cross-entropy).

    ``fit`` builds ``pydl.mlp([n_features, *hidden_layer_sizes, n_classes])`` with a
    softmax output (also for two classes) and trains it by mini-batch gradient descent.
    Class labels may be anything sortable (integers, strings, ...); they are encoded as
    ``np.unique`` does and ``classes_`` holds them in that order.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default=(100,)
        Width of each hidden layer; ``()`` gives softmax regression.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default="relu"
        Hidden-layer activation.
    batchnorm : bool, default=False
        Batch normalization before every hidden activation (those Dense layers then
        have no bias).
    keep_prob : float in (0, 1], default=1.0
        Inverted-dropout keep probability after every hidden activation (1 = no dropout).
    l2 : float >= 0, default=0.0
        L2 regularization strength lambda of every Dense layer
        (cost += lambda/(2m) sum ||W||^2).
    optimizer : {"adam", "sgd", "momentum", "rmsprop"}, default="adam"
        Optimizer, with pydl's default hyperparameters apart from the learning rate.
    learning_rate : float > 0, default=1e-3
        Learning rate of the optimizer.
    batch_size : int >= 1, default=64
        Mini-batch size; clipped to the number of training samples.
    epochs : int >= 1, default=50
        Number of passes over the training data (fewer with early stopping).
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the training data and stop at the
        end of the first epoch after ``n_iter_no_change`` epochs in a row in which its
        loss did not improve (as scikit-learn's MLPClassifier), then restore the
        parameters of the best epoch.
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the training data held out with ``early_stopping``.
    n_iter_no_change : int >= 1, default=5
        Patience, in epochs, of early stopping.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the network (inputs are converted to it; values beyond
        its range are a ValueError naming X). Outputs of ``predict_proba`` are float64
        either way.
    random_state : None, int or numpy.random.RandomState, default=None
        Seeds the initialization, shuffling, dropout masks and validation split; an int
        makes ``fit`` reproducible.
    verbose : int >= 0, default=0
        Show a progress bar during ``fit`` when > 0.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
        The class labels.
    model_ : pydl.Sequential
        The trained network (its outputs are the logits of ``classes_``).
    history_ : pydl.History
        Per-epoch ``"loss"``, ``"accuracy"``, ``"lr"`` (and ``"dev_loss"``,
        ``"dev_accuracy"`` with early stopping).
    n_iter_ : int
        Number of epochs run.
    loss_ : float
        Training loss (with regularization) of the last epoch run.
    n_features_in_ : int
        Number of features seen in ``fit``; ``feature_names_in_`` too for DataFrames.
    """

    _loss = "softmax_cross_entropy"

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and labels y (n_samples,); returns self.

        Raises ValueError for invalid parameters or data, and ``pydl.TrainingDiverged`` if
        the training cost becomes NaN or inf (lower ``learning_rate``)."""
        p = self._check_params()
        with self._keeping_state_on_failure():
            X, y = _validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=False)
            try:
                check_classification_targets(y)
                classes, y_enc = np.unique(y, return_inverse=True)
            except TypeError as exc:  # e.g. ints and strings in one object array
                raise TypeError(f"y's labels must be sortable against each other (all numbers "
                                f"or all strings): {exc}") from None
            if len(classes) < 2:
                raise ValueError(f"MLPClassifier needs samples of at least 2 classes in y; the "
                                 f"data contains only one class: {classes[0]!r}")
            self._train(p, X, y_enc.reshape(-1).astype(np.int64), len(classes), stratify=True)
            self.classes_ = classes
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), float64, columns in ``classes_`` order."""
        Z = self._logits(X)
        Z -= Z.max(axis=1, keepdims=True)
        np.exp(Z, out=Z)
        Z /= Z.sum(axis=1, keepdims=True)
        return Z

    def predict_log_proba(self, X):
        """Logarithm of ``predict_proba(X)``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class label of every row of X, (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor trained with pydl (mean squared error).

    ``fit`` builds ``pydl.mlp([n_features, *hidden_layer_sizes, n_outputs])`` with a
    linear output and trains it on the mean squared error. ``y`` may be 1-D (n_samples,)
    or 2-D (n_samples, n_outputs); ``predict`` returns the same dimensionality. Targets
    are not rescaled: standardize large-valued targets (e.g. with
    ``sklearn.compose.TransformedTargetRegressor``).

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default=(100,)
        Width of each hidden layer; ``()`` gives linear regression.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default="relu"
        Hidden-layer activation.
    batchnorm : bool, default=False
        Batch normalization before every hidden activation.
    keep_prob : float in (0, 1], default=1.0
        Inverted-dropout keep probability after every hidden activation.
    l2 : float >= 0, default=0.0
        L2 regularization strength lambda of every Dense layer.
    optimizer : {"adam", "sgd", "momentum", "rmsprop"}, default="adam"
        Optimizer, with pydl's default hyperparameters apart from the learning rate.
    learning_rate : float > 0, default=1e-3
        Learning rate of the optimizer.
    batch_size : int >= 1, default=64
        Mini-batch size; clipped to the number of training samples.
    epochs : int >= 1, default=50
        Number of passes over the training data (fewer with early stopping).
    early_stopping : bool, default=False
        Hold out a random ``validation_fraction`` of the training data, stop at the end
        of the first epoch after ``n_iter_no_change`` epochs in a row in which its loss
        did not improve (as scikit-learn's MLPRegressor) and restore the best epoch's
        parameters.
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the training data held out with ``early_stopping``.
    n_iter_no_change : int >= 1, default=5
        Patience, in epochs, of early stopping.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the network (X and y are converted to it; values beyond
        its range are a ValueError naming X or y). ``predict`` returns float64 either way.
    random_state : None, int or numpy.random.RandomState, default=None
        Seeds the initialization, shuffling, dropout masks and validation split.
    verbose : int >= 0, default=0
        Show a progress bar during ``fit`` when > 0.

    Attributes
    ----------
    model_ : pydl.Sequential
        The trained network.
    n_outputs_ : int
        Number of regression targets.
    history_ : pydl.History
        Per-epoch ``"loss"``, ``"lr"`` (and ``"dev_loss"``, ``"dev_mse"`` with early
        stopping).
    n_iter_ : int
        Number of epochs run.
    loss_ : float
        Training loss (mean squared error plus regularization) of the last epoch run.
    n_features_in_ : int
        Number of features seen in ``fit``; ``feature_names_in_`` too for DataFrames.
    """

    _loss = "mse"

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and targets y (n_samples,) or
        (n_samples, n_outputs); returns self.

        Raises ValueError for invalid parameters or data, and ``pydl.TrainingDiverged`` if
        the training cost becomes NaN or inf (lower ``learning_rate`` or scale y)."""
        p = self._check_params()
        with self._keeping_state_on_failure():
            X, y = _validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True,
                                  y_numeric=True)
            y2 = y.reshape(-1, 1) if y.ndim == 1 else y
            self._train(p, X, _as_model_input(y2, p["dtype"], "y"), y2.shape[1], stratify=False)
            self.n_outputs_ = y2.shape[1]
            self._y_1d = y.ndim == 1
        return self

    def predict(self, X):
        """Predicted targets, float64: (n_samples,) if y was 1-D in fit, else (n_samples, n_outputs)."""
        out = self._logits(X)
        return out[:, 0] if self._y_1d else out

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
