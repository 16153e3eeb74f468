"""pydl.sklearn: the scikit-learn estimator contract (check_estimator), meta-estimators,
parameter handling, labels, shapes, determinism and pickling."""
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.stats as scipy_stats  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import (RandomizedSearchCV, StratifiedKFold,  # noqa: E402
                                     cross_val_score, train_test_split)
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import pydl  # noqa: E402
import pydl.sklearn as pysk  # noqa: E402
from pydl.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

FAST = dict(hidden_layer_sizes=(32,), learning_rate=1e-2, epochs=30)
DEFAULTS = dict(hidden_layer_sizes=(100,), activation="relu", batchnorm=False, keep_prob=1.0, l2=0.0,
                optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=50, early_stopping=False,
                validation_fraction=0.1, n_iter_no_change=5, dtype="float32", random_state=None,
                verbose=0)


# ---------------------------------------------------------------------------------------
# the scikit-learn estimator contract, one test per check
# ---------------------------------------------------------------------------------------

# No check is marked as an expected failure: every check passes. The score checks
# (check_classifiers_train/classes, check_regressors_train) need a trained network, hence
# learning_rate=1e-2 (30 Adam epochs at 1e-3 on 20-30 rows leave some seeds untrained).
@parametrize_with_checks([
    MLPClassifier(**FAST),
    MLPClassifier(**FAST, batchnorm=True, keep_prob=0.9, early_stopping=True, dtype="float64"),
    MLPRegressor(**FAST),
    MLPRegressor(**FAST, batchnorm=True, keep_prob=0.9, dtype="float64"),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    X, y = pydl.datasets.load_digits()
    return X, y


def _blobs(n=120, n_classes=3, seed=0):
    """n rows in 4-D around n_classes (<= 4) well-separated centers; classes interleaved."""
    rng = np.random.default_rng(seed)
    centers = 6.0 * np.eye(4)[:n_classes]
    y = np.arange(n) % n_classes
    X = centers[y] + rng.normal(size=(n, 4))
    return X, y


# ---------------------------------------------------------------------------------------
# meta-estimators
# ---------------------------------------------------------------------------------------

def test_pipeline_with_standard_scaler(digits):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(hidden_layer_sizes=(64,), learning_rate=3e-3, epochs=15,
                                           random_state=0))])
    pipe.fit(Xtr, ytr)
    assert pipe.score(Xte, yte) > 0.9
    proba = pipe.predict_proba(Xte)
    assert proba.shape == (len(Xte), 10)
    np.testing.assert_array_equal(pipe.named_steps["mlp"].classes_, np.arange(10))
    np.testing.assert_array_equal(pipe.predict(Xte), np.argmax(proba, axis=1))


def test_cross_val_score_on_digits(digits):
    X, y = digits
    est = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), learning_rate=3e-3,
                                                        epochs=15, random_state=0))
    scores = cross_val_score(est, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,)
    assert scores.min() > 0.9, scores


def test_randomized_search_over_learning_rate_and_l2(digits):
    X, y = digits
    X, y = X[:600] / 16.0, y[:600]
    search = RandomizedSearchCV(
        MLPClassifier(hidden_layer_sizes=(32,), epochs=10, random_state=0),
        {"learning_rate": scipy_stats.loguniform(1e-3, 3e-2), "l2": scipy_stats.loguniform(1e-4, 1e-1)},
        n_iter=4, cv=3, random_state=0)
    search.fit(X, y)
    lrs = np.asarray(search.cv_results_["param_learning_rate"], dtype=float)
    l2s = np.asarray(search.cv_results_["param_l2"], dtype=float)
    assert len(np.unique(lrs)) == 4 and ((1e-3 <= lrs) & (lrs <= 3e-2)).all()
    assert len(np.unique(l2s)) == 4 and ((1e-4 <= l2s) & (l2s <= 1e-1)).all()
    best = search.best_estimator_
    assert isinstance(best, MLPClassifier)
    assert best.learning_rate == search.best_params_["learning_rate"]
    assert best.l2 == search.best_params_["l2"]
    assert search.best_score_ > 0.8
    assert search.score(X, y) > 0.85


# ---------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_get_params_defaults(cls):
    assert cls().get_params() == DEFAULTS


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_set_params_and_clone(cls):
    est = cls(hidden_layer_sizes=(8, 4), epochs=3, random_state=1)
    assert est.set_params(learning_rate=0.05, l2=0.1) is est
    assert est.learning_rate == 0.05 and est.l2 == 0.1
    with pytest.raises(ValueError, match="nope"):
        est.set_params(nope=1)
    X, y = _blobs(60)
    est.fit(X, y)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert twin is not est
    assert not hasattr(twin, "model_")
    with pytest.raises(NotFittedError):
        twin.predict(X)
    twin.fit(X, y)
    np.testing.assert_array_equal(twin.predict(X), est.predict(X))


BAD_PARAMS = [
    ("hidden_layer_sizes", (10, 0)),
    ("hidden_layer_sizes", "100"),
    ("hidden_layer_sizes", (10.5,)),
    ("activation", "logistic"),
    ("batchnorm", "yes"),
    ("keep_prob", 0.0),
    ("keep_prob", 1.5),
    ("l2", -1e-3),
    ("l2", float("nan")),
    ("optimizer", "lbfgs"),
    ("learning_rate", 0.0),
    ("learning_rate", float("inf")),
    ("learning_rate", "fast"),
    ("batch_size", 0),
    ("batch_size", 8.0),
    ("epochs", 0),
    ("epochs", True),
    ("early_stopping", 1),
    ("validation_fraction", 0.0),
    ("validation_fraction", 1.0),
    ("n_iter_no_change", 0),
    ("dtype", "float16"),
    ("dtype", "int32"),
    ("dtype", "nonsense"),
    ("random_state", -1),
    ("random_state", "seed"),
    ("verbose", -1),
]


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("name,value", BAD_PARAMS, ids=[f"{n}={v!r}" for n, v in BAD_PARAMS])
def test_bad_parameter_raises_valueerror_naming_it_at_fit(cls, name, value):
    est = cls(epochs=1, hidden_layer_sizes=(4,))
    est.set_params(**{name: value})     # neither __init__ nor set_params validates
    cls(**{name: value})
    X, y = _blobs(30)
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        est.fit(X, y)
    assert not hasattr(est, "model_")


def test_good_parameter_variants_are_accepted():
    X, y = _blobs(40)
    for kw in [dict(hidden_layer_sizes=8), dict(hidden_layer_sizes=[8, 4]), dict(hidden_layer_sizes=()),
               dict(hidden_layer_sizes=np.array([5])), dict(dtype=np.float64), dict(optimizer="SGD"),
               dict(activation="leaky_relu"), dict(activation="sigmoid"), dict(optimizer="momentum"),
               dict(optimizer="rmsprop"), dict(random_state=np.random.RandomState(0)),
               dict(random_state=np.int64(3)), dict(epochs=np.int32(2), batch_size=np.int64(7))]:
        est = MLPClassifier(**{"hidden_layer_sizes": (4,), "epochs": 2, **kw}).fit(X, y)
        assert est.predict(X).shape == (40,), kw


# ---------------------------------------------------------------------------------------
# classifier behaviour
# ---------------------------------------------------------------------------------------

def test_classifier_string_labels_and_classes_order():
    X, y = _blobs(90)
    names = np.array(["zebra", "ant", "moose"])[y]
    clf = MLPClassifier(**FAST, random_state=0).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["ant", "moose", "zebra"])
    pred = clf.predict(X)
    assert pred.dtype.kind == "U"
    assert (pred == names).mean() > 0.95
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, names) == (pred == names).mean()


def test_classifier_binary_uses_two_softmax_outputs():
    X, y = _blobs(80, n_classes=2)
    labels = np.where(y == 1, 7, -3)
    clf = MLPClassifier(**FAST, random_state=0).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, [-3, 7])
    assert clf.model_.n_out == 2 and clf.model_.loss.name == "softmax_cross_entropy"
    assert clf.predict_proba(X).shape == (80, 2)
    assert set(np.unique(clf.predict(X))) == {-3, 7}
    assert clf.score(X, labels) > 0.95


def test_classifier_one_class_is_an_error():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier(epochs=1).fit(X, np.full(10, "a"))


def test_classifier_rejects_continuous_and_multilabel_targets():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(epochs=1).fit(X, np.linspace(0, 1, 10))
    with pytest.raises(ValueError):
        MLPClassifier(epochs=1).fit(X, np.eye(2)[np.arange(10) % 2])


def test_fitted_attributes():
    X, y = _blobs(100)
    clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=7, random_state=0).fit(X, y)
    assert clf.n_features_in_ == 4
    assert clf.n_iter_ == 7 == len(clf.history_.epoch)
    assert clf.loss_ == clf.history_["loss"][-1]
    assert "accuracy" in clf.history_ and "dev_loss" not in clf.history_
    assert isinstance(clf.model_, pydl.Sequential)
    assert [l.n_out for l in clf.model_.layers if isinstance(l, pydl.nn.Dense)] == [8, 3]
    assert clf.model_.dtype == np.float32
    # batch_size is clipped to n_samples: one step per epoch
    big = MLPClassifier(hidden_layer_sizes=(8,), epochs=4, batch_size=10_000, random_state=0).fit(X, y)
    assert len(big.history_.iterations) == 4
    assert len(clf.history_.iterations) == 7 * 2      # ceil(100 / 64) steps per epoch


class _SplitSpy:
    """Wraps pydl.sklearn.train_dev_test_split to record its arguments and outputs."""

    def __init__(self, monkeypatch):
        self.calls = []
        self._orig = pysk.train_dev_test_split
        monkeypatch.setattr(pysk, "train_dev_test_split", self)

    def __call__(self, X, y, **kw):
        out = self._orig(X, y, **kw)
        self.calls.append((kw, out))
        return out


def test_early_stopping_restores_best_epoch(monkeypatch):
    spy = _SplitSpy(monkeypatch)
    X, y = _blobs(200, seed=1)
    flip = np.random.default_rng(0).random(200) < 0.3        # noisy labels: dev loss turns up
    y = np.where(flip, (y + 1) % 3, y)
    clf = MLPClassifier(hidden_layer_sizes=(128,), learning_rate=3e-2, epochs=200, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=3, random_state=0).fit(X, y)
    h = clf.history_
    dev = h["dev_loss"]
    assert clf.n_iter_ == len(dev) < 200
    assert h.best_epoch == int(np.argmin(dev))
    assert clf.n_iter_ == h.best_epoch + 3 + 2          # stops after patience+1 epochs without progress
    assert dev[h.best_epoch] < dev[-1]
    # the network holds the parameters of the best epoch, not of the last one
    (_, (X_train, _, X_dev, y_dev, _, _)), = spy.calls
    assert len(X_train) == 160 and len(X_dev) == 40
    assert clf.model_.evaluate(X_dev, y_dev)["loss"] == pytest.approx(dev[h.best_epoch], rel=1e-5)


def test_early_stopping_needs_three_samples():
    X = np.arange(4.0).reshape(2, 2)
    with pytest.raises(ValueError, match="n_samples=2"):
        MLPRegressor(early_stopping=True, epochs=1).fit(X, [0.0, 1.0])


def test_early_stopping_split_is_stratified_and_seeded(monkeypatch):
    # 3 classes of 10 rows; validation_fraction 0.3 -> 9 dev rows, 3 of each class
    spy = _SplitSpy(monkeypatch)
    X, y = _blobs(30)
    for _ in range(2):
        MLPClassifier(epochs=2, early_stopping=True, validation_fraction=0.3, random_state=5).fit(X, y)
    (kw, out), (kw2, out2) = spy.calls
    assert kw["stratify"] is True and kw["seed"] == kw2["seed"]
    np.testing.assert_array_equal(np.bincount(out[3]), [3, 3, 3])
    np.testing.assert_array_equal(out[3], out2[3])
    np.testing.assert_array_equal(out[2], out2[2])


# ---------------------------------------------------------------------------------------
# regressor behaviour
# ---------------------------------------------------------------------------------------

def _linear_targets(n=200, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    W = rng.normal(size=(5, k))
    return X, X @ W / 2 + 0.01 * rng.normal(size=(n, k))


def test_regressor_output_dimensionality_follows_y():
    X, Y = _linear_targets(k=2)
    reg = MLPRegressor(**FAST, random_state=0)
    p1 = reg.fit(X, Y[:, 0]).predict(X)
    assert p1.shape == (200,) and p1.dtype == np.float64 and reg.n_outputs_ == 1
    assert reg.score(X, Y[:, 0]) > 0.9
    p2 = reg.fit(X, Y[:, :1]).predict(X)
    assert p2.shape == (200, 1) and reg.n_outputs_ == 1
    np.testing.assert_array_equal(p2[:, 0], p1)      # same seed, same data -> same network
    p3 = reg.fit(X, Y).predict(X)
    assert p3.shape == (200, 2) and reg.n_outputs_ == 2
    assert reg.score(X, Y) > 0.9
    assert reg.model_.loss.name == "mse"


def test_regressor_early_stopping_records_dev_metrics():
    X, Y = _linear_targets(k=1)
    reg = MLPRegressor(**FAST, early_stopping=True, random_state=0).fit(X, Y[:, 0])
    assert "dev_loss" in reg.history_ and "dev_mse" in reg.history_
    assert reg.n_iter_ == len(reg.history_["dev_loss"]) <= 30


def test_diverging_fit_raises_and_keeps_the_previous_fit():
    X, Y = _linear_targets(n=50, k=1)
    reg = MLPRegressor(hidden_layer_sizes=(8,), epochs=3, random_state=0).fit(X, Y)
    before = reg.predict(X)
    model = reg.model_
    reg.set_params(optimizer="sgd", learning_rate=10.0, epochs=20)
    with pytest.raises(pydl.TrainingDiverged):
        reg.fit(X, 1e3 * Y[:, 0])
    assert reg.model_ is model
    np.testing.assert_array_equal(reg.predict(X), before)     # still (n, 1), as fitted


def test_a_failed_refit_on_other_features_leaves_the_previous_fit_whole(digits):
    """Validating X sets n_features_in_ before training: a refit that then fails must not
    leave it disagreeing with model_ and classes_ (predict refused both widths)."""
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, random_state=0).fit(X, y)
    before = clf.predict(X)
    state = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    clf.set_params(optimizer="sgd", learning_rate=1e30)
    with pytest.raises(pydl.TrainingDiverged):
        clf.fit(X[:, :32] * 1e3, (y % 3).astype(str))
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == state.keys()
    assert all(vars(clf)[k] is v for k, v in state.items())
    np.testing.assert_array_equal(clf.predict(X), before)
    unfitted = MLPRegressor(hidden_layer_sizes=(4,), optimizer="sgd", learning_rate=1e30)
    with pytest.raises(pydl.TrainingDiverged):
        unfitted.fit(X[:, :5] * 1e3, y.astype(float))
    assert not [k for k in vars(unfitted) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        unfitted.predict(X[:, :5])


def test_classifier_labels_that_do_not_sort_are_named():
    X = np.random.default_rng(0).standard_normal((6, 3))
    y = np.array(["a", 1, "a", 1, "a", 1], dtype=object)
    with pytest.raises(TypeError, match="y's labels must be sortable"):
        MLPClassifier(epochs=1).fit(X, y)


# ---------------------------------------------------------------------------------------
# determinism, dtypes, pickling
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, dict(keep_prob=0.8, batchnorm=True, early_stopping=True)])
def test_random_state_makes_fit_reproducible(kw):
    X, y = _blobs(100)
    a = MLPClassifier(**FAST, **kw, random_state=3).fit(X, y)
    b = MLPClassifier(**FAST, **kw, random_state=3).fit(X, y)
    c = MLPClassifier(**FAST, **kw, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.model_.theta, b.model_.theta)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.model_.theta, c.model_.theta)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_sets_network_precision_outputs_are_float64(dtype):
    X, y = _blobs(60)
    clf = MLPClassifier(epochs=2, dtype=dtype, random_state=0).fit(X.astype(np.float32), y)
    assert clf.model_.dtype == np.dtype(dtype)
    assert clf.predict_proba(X).dtype == np.float64
    reg = MLPRegressor(epochs=2, dtype=dtype, random_state=0).fit(X, y.astype(float))
    assert reg.model_.dtype == np.dtype(dtype)
    assert reg.predict(X.astype(np.float32)).dtype == np.float64


@pytest.mark.parametrize("est", [MLPClassifier(**FAST, batchnorm=True, random_state=0),
                                 MLPRegressor(**FAST, batchnorm=True, random_state=0)])
def test_pickle_round_trip_keeps_flat_theta(est):
    X, y = _blobs(60)
    est.fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict(X), est.predict(X))
    model = restored.model_
    np.testing.assert_array_equal(model.theta, est.model_.theta)
    for _, view in model.parameters():
        assert np.shares_memory(view, model.theta)
    for layer in model.layers:
        for name, arr in layer.state_arrays().items():
            np.testing.assert_array_equal(arr, getattr(est.model_.layers[model.layers.index(layer)], name))
    assert restored.history_.history == est.history_.history
    assert est.model_.theta.flags.writeable           # pickling left the original alone
    assert isinstance(est.model_, pydl.Sequential)
    # the optimizer's state too (as pydl.save keeps it): model_ trains on as the original
    assert restored.model_.optimizer is not None
    for model in (est.model_, restored.model_):
        model.fit(X, y, optimizer=model.optimizer, epochs=model.epoch + 2,
                  initial_epoch=model.epoch, verbose=0)
    np.testing.assert_array_equal(restored.model_.theta, est.model_.theta)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_nan_with_assume_finite_is_named_as_nan_not_as_an_overflow(Est):
    """With scikit-learn's assume_finite=True its own NaN check is off; a NaN in float64 X
    (or y) must not be reported as a value beyond the float32 range."""
    import sklearn

    X, y = _blobs(40)
    X = X.astype(np.float64)
    fitted = Est(**FAST, random_state=0).fit(X, y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with sklearn.config_context(assume_finite=True):
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            fitted.predict(bad)
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            Est(**FAST, random_state=0).fit(bad, y)


def test_memory_mapped_input_is_copied(tmp_path):
    X, y = _blobs(60)
    path = tmp_path / "X.npy"
    np.save(path, X)
    Xm = np.load(path, mmap_mode="r")
    a = MLPClassifier(epochs=3, random_state=0).fit(Xm, y)
    b = MLPClassifier(epochs=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(Xm), b.predict_proba(X))


def test_all_exports():
    assert sorted(pysk.__all__) == ["MLPClassifier", "MLPRegressor"]
    for cls in (MLPClassifier, MLPRegressor):
        doc = cls.__doc__
        for name in DEFAULTS:
            assert f"{name} :" in doc, (cls.__name__, name)


@pytest.mark.skipif(not pydl.ops.has_own_gemm, reason="the own GEMM kernel is not built (no AVX)")
@pytest.mark.parametrize("seed", range(6))
def test_predictions_on_a_subset_are_the_same_bits(seed):
    """scikit-learn's check_methods_subset_invariance asks for agreement to 1e-7; float32
    models through the BLAS differed by up to ~1.1e-7 (2 fits in 40). Predicting on any
    subset, or one row at a time, gives the same bits."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, 3 + seed % 5))
    y = rng.integers(0, 3, 30)
    clf = MLPClassifier(**FAST, random_state=seed).fit(X, y)
    P = clf.predict_proba(X)
    rows = np.vstack([clf.predict_proba(X[i:i + 1]) for i in range(30)])
    assert np.array_equal(rows, P)
    mask = rng.random(30) < 0.5
    assert np.array_equal(clf.predict_proba(X[mask]), P[mask])
    reg = MLPRegressor(**FAST, random_state=seed).fit(X, X[:, 0] - X[:, 1])
    out = reg.predict(X)
    assert np.array_equal(np.concatenate([reg.predict(X[i:i + 1]) for i in range(30)]), out)


def test_values_beyond_float32_name_the_argument_and_the_dtype_parameter():
    X = np.ones((4, 2))
    y = np.array([0, 1, 0, 1])
    kw = dict(hidden_layer_sizes=(3,), epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"^X has values beyond the float32 range.*dtype='float64'"):
        MLPClassifier(**kw).fit(X * 1e39, y)
    clf = MLPClassifier(**kw).fit(X, y)
    with pytest.raises(ValueError, match=r"^X has values beyond the float32 range.*dtype='float64'"):
        clf.predict(X * 1e39)
    with pytest.raises(ValueError, match=r"^y has values beyond the float32 range.*dtype='float64'"):
        MLPRegressor(**kw).fit(X, y * 1e39)
    # the same data trains with the float64 network the message suggests
    MLPRegressor(dtype="float64", **kw).fit(X * 1e39, y * 1e39)


def test_a_validation_fraction_that_leaves_a_class_out_of_training_is_refused():
    """early_stopping holds out validation_fraction of the rows (stratified); when what is
    left to train on misses a class, the network would never see it: a ValueError naming
    validation_fraction, not a silent fit."""
    X, y = _blobs(30, n_classes=2)
    with pytest.raises(ValueError, match=r"validation_fraction=0.99 leaves 1 of the 30 samples "
                                         r"to train on, with 1 of the 2 classes"):
        MLPClassifier(**FAST, early_stopping=True, validation_fraction=0.99).fit(X, y)
    MLPClassifier(**FAST, early_stopping=True, validation_fraction=0.9).fit(X, y)


def test_an_estimator_pickled_with_model_as_a_dict_still_loads():
    """Earlier builds pickled model_ as a dict of its architecture and arrays: such a pickle
    loads into a working estimator with the same predictions."""
    X, y = _blobs(60)
    est = MLPClassifier(**FAST, batchnorm=True, random_state=0).fit(X, y)
    model = est.model_
    state = dict(est.__getstate__())
    state["model_"] = {"__pydl_model__": True, "architecture": model.architecture(),
                       "theta": model.theta.copy(),
                       "state": {k: v.copy() for k, v in model._state_arrays().items()},
                       "epoch": model.epoch, "step": model.step}
    old = MLPClassifier.__new__(MLPClassifier)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.predict_proba(X), est.predict_proba(X))
    assert old.model_.epoch == model.epoch and old.model_.history is old.history_


def test_early_stopping_regressor_with_several_outputs_of_few_values():
    """The class check after the split is for classifiers: a regressor's 0/1 targets in 3
    columns are not 2 classes of 3."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    Y = (rng.standard_normal((200, 3)) > 0).astype(float)
    MLPRegressor(**FAST, early_stopping=True).fit(X, Y)
