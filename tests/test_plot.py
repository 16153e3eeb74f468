"""pydl.plot: figures are built with the expected lines/axes/labels, PNGs are written,
the decision-boundary grid and rendering match the model, confusion counts match NumPy."""
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pydl import plot  # noqa: E402
from pydl.callbacks import History  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _assert_png(path):
    assert path.exists(), f"{path} was not written"
    data = path.read_bytes()
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"
    assert data[:8] == PNG_MAGIC, f"{path} does not start with the PNG signature: {data[:8]!r}"


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def _fake_history(n=8, accuracy=True, dev=True, best_epoch=5, iterations=40):
    h = History()
    rng = np.random.default_rng(0)
    for e in range(n):
        values = {"loss": 1.0 / (e + 1), "lr": 0.1 * 0.9 ** e}
        if dev:
            values["dev_loss"] = 1.2 / (e + 1) + 0.01 * e
        if accuracy:
            values["accuracy"] = 1 - 0.5 / (e + 1)
            if dev:
                values["dev_accuracy"] = 1 - 0.6 / (e + 1)
        h.record(e, **values)
    h.iterations = list(1.0 / np.arange(1, iterations + 1) + 0.05 * rng.random(iterations))
    h.best_epoch = best_epoch
    return h


# --------------------------------------------------------------------------- lazy import


def test_module_imports_without_matplotlib(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; import pydl.plot; "
            "print(pydl.plot.confusion_counts([0, 1], [1, 1]).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[0, 1], [0, 1]]"


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot.learning_curves(_fake_history())
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot.confusion_matrix([0, 1], [0, 1])


# --------------------------------------------------------------------------- learning curves


def test_learning_curves_two_panels_with_best_epoch(tmp_path):
    h = _fake_history()
    path = tmp_path / "curves.png"
    fig = plot.learning_curves(h, path=path)
    _assert_png(path)
    cost_ax, acc_ax = fig.axes
    assert cost_ax.get_xlabel() == "epoch" and cost_ax.get_ylabel() == "cost"
    assert acc_ax.get_ylabel() == "accuracy"
    for ax in (cost_ax, acc_ax):
        assert _labels(ax) == ["train", "dev", "best epoch (5)"]
        best = ax.get_lines()[-1]
        assert list(best.get_xdata()) == [5, 5]
    train, dev = cost_ax.get_lines()[:2]
    np.testing.assert_array_equal(train.get_xdata(), h.epoch)
    np.testing.assert_allclose(train.get_ydata(), h["loss"])
    np.testing.assert_allclose(dev.get_ydata(), h["dev_loss"])
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), h["dev_accuracy"])


def test_learning_curves_cost_only_without_accuracy_or_best_epoch():
    h = _fake_history(accuracy=False, dev=False, best_epoch=None)
    fig = plot.learning_curves(h)
    assert len(fig.axes) == 1
    assert _labels(fig.axes[0]) == ["train"]


def test_learning_curves_on_given_axes_and_dict_history():
    h = _fake_history()
    fig, (a, b) = plt.subplots(1, 2)
    assert plot.learning_curves(h.to_dict(), ax=(a, b)) is fig
    assert len(a.get_lines()) == 3 and len(b.get_lines()) == 3
    fig2, single = plt.subplots()
    assert plot.learning_curves(h, ax=single) is fig2
    assert single.get_ylabel() == "cost" and len(fig2.axes) == 1


def test_learning_curves_keeps_diverged_values_as_gaps():
    h = _fake_history(accuracy=False)
    h.history["loss"][-1] = float("inf")
    fig = plot.learning_curves(h)
    assert np.isnan(fig.axes[0].get_lines()[0].get_ydata()[-1])


def test_learning_curves_bad_input():
    with pytest.raises(ValueError, match="history is empty"):
        plot.learning_curves(History())
    h = History()
    h.record(0, lr=0.1)
    with pytest.raises(ValueError, match="neither 'loss' nor 'dev_loss'"):
        plot.learning_curves(h)
    h = _fake_history()
    h.history["dev_loss"].pop()
    with pytest.raises(ValueError, match="history\\['dev_loss'\\] has 7 values.*8 epochs"):
        plot.learning_curves(h)
    with pytest.raises(TypeError, match="history must be"):
        plot.learning_curves([0.5, 0.4])


@pytest.mark.parametrize("d, key", [
    ({"epoch": None}, "d['epoch']"),
    ({"epoch": [0, 1], "history": {"loss": "ab"}}, "d['history']['loss']"),
    ({"epoch": [0], "history": [0.5]}, "d['history']"),
    ({"epoch": [0], "history": {"loss": [0.5]}, "best_epoch": "0"}, "d['best_epoch']"),
])
def test_learning_curves_bad_dict_history_names_the_argument(d, key):
    with pytest.raises(TypeError) as info:
        plot.learning_curves(d)
    msg = str(info.value)
    assert msg.startswith("history is not a valid History.to_dict() form") and key in msg, msg
    plt.close("all")


# --------------------------------------------------------------------------- iteration costs


def _ewa_reference(x, beta):
    v, out = 0.0, []
    for t, xt in enumerate(x, start=1):
        v = beta * v + (1 - beta) * xt
        out.append(v / (1 - beta ** t))
    return np.array(out)


def test_iteration_costs_raw_and_bias_corrected_average(tmp_path):
    h = _fake_history(iterations=300)
    path = tmp_path / "iters.png"
    fig = plot.iteration_costs(h, beta=0.9, path=path)
    _assert_png(path)
    (ax,) = fig.axes
    raw, avg = ax.get_lines()
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "cost"
    assert raw.get_label() == "mini-batch cost" and "bias-corrected" in avg.get_label()
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 301))
    np.testing.assert_allclose(raw.get_ydata(), h.iterations)
    want = _ewa_reference(h.iterations, 0.9)
    np.testing.assert_allclose(avg.get_ydata(), want, rtol=1e-12)
    # bias correction: the average starts at the first cost, not near 0
    assert avg.get_ydata()[0] == pytest.approx(h.iterations[0])


def test_iteration_costs_beta_zero_is_the_raw_curve():
    h = _fake_history()
    raw, avg = plot.iteration_costs(h, beta=0.0).axes[0].get_lines()
    np.testing.assert_allclose(avg.get_ydata(), raw.get_ydata())


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan"), "0.9", None])
def test_iteration_costs_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        plot.iteration_costs(_fake_history(), beta=beta)


def test_iteration_costs_empty():
    h = _fake_history(iterations=0)
    with pytest.raises(ValueError, match="history.iterations is empty"):
        plot.iteration_costs(h)


# --------------------------------------------------------------------------- plot_history


def test_plot_history_selected_and_all_keys(tmp_path):
    h = _fake_history(best_epoch=None)
    path = tmp_path / "lr.png"
    fig = plot.plot_history(h, keys="lr", logy=True, path=path)
    _assert_png(path)
    (ax,) = fig.axes
    assert _labels(ax) == ["lr"] and ax.get_yscale() == "log" and ax.get_ylabel() == "lr"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), h["lr"])

    fig = plot.plot_history(h)
    assert _labels(fig.axes[0]) == list(h.history)
    fig = plot.plot_history(h, keys=["loss", "dev_loss"], title="costs")
    assert fig.axes[0].get_title() == "costs" and fig.axes[0].get_ylabel() == "value"


def test_plot_history_bad_input():
    h = _fake_history()
    with pytest.raises(ValueError, match=r"no key\(s\) \['val_loss'\].*available keys"):
        plot.plot_history(h, keys=["loss", "val_loss"])
    with pytest.raises(ValueError, match="history is empty"):
        plot.plot_history(History())
    with pytest.raises(ValueError, match="keys is empty"):
        plot.plot_history(h, keys=[])


# --------------------------------------------------------------------------- decision boundary


def _sign_model(X):
    """Class 1 where x1 > 0, else 0."""
    return (X[:, 0] > 0).astype(np.int64)


class _PredictModel:
    def __init__(self):
        self.seen_dtype = None

    def predict(self, X):
        self.seen_dtype = X.dtype
        return (X[:, 1] > X[:, 0]).astype(np.int64)


def test_decision_grid_matches_the_predict_function():
    X = np.array([[-2.0, -1.0], [2.0, 1.0], [0.5, -0.5]])
    xx, yy, labels = plot.decision_grid(_sign_model, X, resolution=51)
    assert xx.shape == yy.shape == labels.shape == (51, 51)
    # the grid covers the data with a 10% margin
    assert xx.min() == pytest.approx(-2.4) and xx.max() == pytest.approx(2.4)
    assert yy.min() == pytest.approx(-1.2) and yy.max() == pytest.approx(1.2)
    np.testing.assert_array_equal(labels, (xx > 0).astype(int))


def test_decision_grid_passes_float_dtype_and_accepts_scores():
    model = _PredictModel()
    X = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    xx, yy, labels = plot.decision_grid(model, X, resolution=20)
    assert model.seen_dtype == np.float32
    np.testing.assert_array_equal(labels, (yy > xx).astype(int))

    def scores(G):  # (N, 3) class scores -> argmax
        return np.stack([-G[:, 0], G[:, 0], np.zeros(len(G))], axis=1)

    xx, _, labels = plot.decision_grid(scores, np.array([[-1, -1], [1, 1]]), resolution=11)
    np.testing.assert_array_equal(labels, np.where(xx < 0, 0, np.where(xx > 0, 1, 0)))


def test_decision_boundary_figure_and_rendered_regions(tmp_path):
    # data only at the corners, so the middle row of the plot is pure contour fill
    X = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    y = _sign_model(X)
    path = tmp_path / "boundary.png"
    fig = plot.decision_boundary(_sign_model, X, y, path=path, resolution=201, title="sign")
    _assert_png(path)
    (ax,) = fig.axes
    assert ax.get_title() == "sign" and ax.get_xlabel() == "x1" and ax.get_ylabel() == "x2"
    assert len(ax.collections) >= 2  # filled contour + scatter
    scatter = ax.collections[-1]
    np.testing.assert_array_equal(scatter.get_offsets(), X)

    # Sample the rendered image along y = 0: color must be constant on each side of
    # x1 = 0, differ between sides, and switch within a few grid cells of x1 = 0.
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    height = rgba.shape[0]
    xs = np.linspace(-1.15, 1.15, 231)
    pix = ax.transData.transform(np.column_stack([xs, np.zeros_like(xs)]))
    cols = np.round(pix[:, 0]).astype(int)
    row = int(round(height - pix[0, 1]))
    colors = rgba[row, cols, :3].astype(int)
    left, right = colors[xs < -0.05], colors[xs > 0.05]
    assert np.all(np.abs(left - left[0]).max(axis=1) <= 2), "left region is not one color"
    assert np.all(np.abs(right - right[0]).max(axis=1) <= 2), "right region is not one color"
    assert np.abs(left[0] - right[0]).max() > 20, "both sides have the same color"
    change = np.nonzero(np.abs(colors - left[0]).max(axis=1) > 2)[0][0]
    cell = 2.4 / 200
    assert abs(xs[change]) <= 3 * cell + 0.01, f"boundary drawn at x1={xs[change]}, not 0"


def test_decision_boundary_with_predict_method_and_given_axes():
    X = np.random.default_rng(1).normal(size=(30, 2))
    y = np.eye(2)[(X[:, 1] > X[:, 0]).astype(int)]  # one-hot labels
    fig, ax = plt.subplots()
    assert plot.decision_boundary(_PredictModel(), X, y, ax=ax, resolution=30) is fig
    assert ax.get_title() == "Decision boundary"


@pytest.mark.parametrize("X, match", [
    (np.zeros((5, 3)), r"shape \(m, 2\)"),
    (np.zeros(10), r"shape \(m, 2\)"),
    (np.zeros((0, 2)), "no rows"),
    (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN"),
])
def test_decision_boundary_bad_X(X, match):
    y = np.zeros(len(X), dtype=int)
    with pytest.raises(ValueError, match=match):
        plot.decision_boundary(_sign_model, X, y)


def test_decision_boundary_bad_y_model_resolution():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="y has 3 rows but X has 4"):
        plot.decision_boundary(_sign_model, X, [0, 1, 0])
    with pytest.raises(ValueError, match="y must hold class ids >= 0"):
        plot.decision_boundary(_sign_model, X, [0, -1, 0, 1])
    with pytest.raises(ValueError, match="y must hold integer class ids"):
        plot.decision_boundary(_sign_model, X, [0.5, 1, 0, 1])
    with pytest.raises(TypeError, match="model must have a predict"):
        plot.decision_boundary("model", X, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="resolution"):
        plot.decision_boundary(_sign_model, X, [0, 1, 0, 1], resolution=1)
    with pytest.raises(ValueError, match="expected one class id per point"):
        plot.decision_boundary(lambda G: np.zeros(3, dtype=int), X, [0, 1, 0, 1])


# --------------------------------------------------------------------------- confusion matrix


def _confusion_reference(t, p, n):
    C = np.zeros((n, n), dtype=np.int64)
    for i, j in zip(t, p):
        C[i, j] += 1
    return C


@pytest.mark.parametrize("seed, m, n", [(0, 1, 1), (1, 50, 3), (2, 1000, 10), (3, 7, 12)])
def test_confusion_counts_matches_reference(seed, m, n):
    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, n, m), rng.integers(0, n, m)
    got = plot.confusion_counts(t, p, n)
    want = _confusion_reference(t, p, n)
    assert got.dtype == np.int64 and got.shape == (n, n)
    diff = np.abs(got - want)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() == 0, f"worst cell {worst}: got {got[worst]}, want {want[worst]}"
    assert got.sum() == m and np.trace(got) == np.sum(t == p)


def test_confusion_counts_infers_classes_and_accepts_one_hot():
    t = np.array([0, 2, 1, 2])
    p_scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 1.0, 0.0]])
    got = plot.confusion_counts(np.eye(3)[t], p_scores)
    np.testing.assert_array_equal(got, [[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(plot.confusion_counts([], [], 2), np.zeros((2, 2)))


def test_confusion_counts_bad_input():
    with pytest.raises(ValueError, match="y_pred has 2 labels but y_true has 3"):
        plot.confusion_counts([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="class 3 but n_classes is 3"):
        plot.confusion_counts([0, 1, 3], [0, 1, 2], 3)
    with pytest.raises(ValueError, match="n_classes"):
        plot.confusion_counts([0, 1], [0, 1], 0)
    with pytest.raises(ValueError, match="y_true must hold class ids >= 0"):
        plot.confusion_counts([0, -1], [0, 1])
    with pytest.raises(ValueError, match="y_true is empty"):
        plot.confusion_counts([], [])


def test_confusion_matrix_figure(tmp_path):
    t = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 2, 2])
    path = tmp_path / "cm.png"
    fig = plot.confusion_matrix(t, p, path=path)
    _assert_png(path)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    np.testing.assert_array_equal(ax.images[0].get_array(), plot.confusion_counts(t, p))
    assert [x.get_text() for x in ax.texts] == ["1", "1", "0", "0", "2", "1", "0", "0", "1"]

    fig = plot.confusion_matrix(t, p, n_classes=4, normalize=True)
    image = np.asarray(fig.axes[0].images[0].get_array())
    assert image.shape == (4, 4)
    np.testing.assert_allclose(image[:3].sum(axis=1), 1.0)
    assert np.all(image[3] == 0)  # class 3 never occurs: a zero row, not NaN
