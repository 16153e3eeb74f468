#!/usr/bin/env python
"""Weight initialization: zeros vs large random vs He on concentric circles.

A 3-layer ReLU network (2 -> 10 -> 5 -> 1, sigmoid output) is trained by batch
gradient descent from four starting points:

* ``zeros``: every weight 0. All hidden units of a layer compute the same
  function and get the same gradient, so they stay identical forever: the
  symmetry is never broken and the network is no better than a coin flip.
* ``random x1000``: ``init="random"`` (N(0,1)*0.01) times 1000, i.e. N(0,1)*10.
  The first logits are huge, the first cost is in the thousands and training
  crawls out of saturated sigmoid outputs.
* ``he x10``: He init ten times too large; the same problem, milder.
* ``he``: N(0,1)*sqrt(2/n_in), made for ReLU. Trains quickly and well.

A fifth run starts every weight at the same nonzero constant 0.5 (tanh hidden
units): the weights do move this time, yet every row of W1 stays identical to
the others. Symmetry, not a dead gradient, is the problem.

Prints a table and saves ``01_initialization.png`` (decision boundaries and
cost curves) to ``--out``.

    python examples/01_initialization.py [--quick] [--out DIR] [--threads N]
"""
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from _common import format_table, parse_args  # noqa: E402  (examples/, next to this file)
import pydl  # noqa: E402
import pydl.plot  # noqa: E402,F401  (not imported by `import pydl`)
from pydl import nn, optim  # noqa: E402


# (label, init, scale, hidden activation, how W starts); init "constant" = every weight 0.5
RUNS = [
    ("zeros", "zeros", 1.0, nn.ReLU, "W = 0"),
    ("random x1000", "random", 1000.0, nn.ReLU, "N(0,1)*10"),
    ("he x10", "he", 10.0, nn.ReLU, "N(0,1)*sqrt(2/n_in)*10"),
    ("he", "he", 1.0, nn.ReLU, "N(0,1)*sqrt(2/n_in)"),
    ("all 0.5 (tanh)", "constant", 0.5, nn.Tanh, "W = 0.5"),
]


def build(init, scale, activation, seed=0):
    constant = init == "constant"
    if constant:
        init, scale = "zeros", 1.0
    model = pydl.Sequential([
        nn.Dense(2, 10, init=init, scale=scale), activation(),
        nn.Dense(10, 5, init=init, scale=scale), activation(),
        nn.Dense(5, 1, init=init, scale=scale),
    ], loss="sigmoid_cross_entropy", seed=seed)
    if constant:
        for layer in model.layers:
            if isinstance(layer, nn.Dense):
                layer.W[...] = 0.5  # W is a view into model.theta: set it in place
    return model


def row_spread(W):
    """max |W[i] - W[0]| over the rows of W (one row per hidden unit)."""
    return float(np.abs(W - W[0]).max())


def rows_identical(W):
    """True when every row of W equals the first (to float32 rounding)."""
    return row_spread(W) <= 1e-6 * max(1.0, float(np.abs(W).max()))


def main(argv=None):
    args = parse_args(argv, __doc__)
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    n, epochs = (80, 300) if args.quick else (400, 15000)
    # sklearn's default circles (factor 0.8): the two rings are close together
    X, y = pydl.datasets.make_circles(n, noise=0.05, factor=0.8, seed=1)
    X_train, y_train, _, _, X_test, y_test = pydl.data.train_dev_test_split(
        X, y, ratios=(0.75, 0.0, 0.25), stratify=True, seed=0)
    # the inputs already lie in [-1.2, 1.2]: no standardization, as in the classic experiment

    results = {}
    for label, init, scale, act, start in RUNS:
        model = build(init, scale, act)
        w0 = model.layers[0].W.copy()
        # batch gradient descent: one mini-batch holding the whole training set
        history = model.fit(X_train, y_train, optimizer=optim.SGD(lr=0.01), epochs=epochs,
                            batch_size=len(X_train), verbose=0)
        W1 = model.layers[0].W
        results[label] = {
            "model": model, "history": history,
            "first_cost": history["loss"][0], "final_cost": history["loss"][-1],
            "train_acc": model.evaluate(X_train, y_train)["accuracy"],
            "test_acc": model.evaluate(X_test, y_test)["accuracy"],
            "start": start,
            "W1_row_spread": row_spread(W1),
            "W1_rows_identical": rows_identical(W1),
            "W1_changed": bool(np.any(W1 != w0)),
        }

    headers = ["init", "weights start as", "first cost", "final cost", "train acc", "test acc", "W1 rows equal"]
    rows = [[label, r["start"], f"{r['first_cost']:.4g}", f"{r['final_cost']:.4f}",
             f"{r['train_acc']:.3f}", f"{r['test_acc']:.3f}", "yes" if r["W1_rows_identical"] else "no"]
            for label, r in results.items()]
    print(f"Initialization on make_circles (noise 0.05, factor 0.8): {len(X_train)} train / "
          f"{len(X_test)} test, net 2-10-5-1, batch GD lr=0.01, {epochs} epochs")
    print(format_table(headers, rows))
    print()

    z, zc = results["zeros"], results["all 0.5 (tanh)"]
    W1 = z["model"].layers[0].W
    print(f"Symmetry: after training from zeros, all {W1.shape[0]} rows of W1 are identical "
          f"(max |W1[i] - W1[0]| = {row_spread(W1):g}): every hidden unit computes the same "
          "function, so the layer acts like a single unit.")
    W1c = zc["model"].layers[0].W
    print(f"From the constant 0.5 the weights do move (W1[0] is now "
          f"{np.array2string(W1c[0], precision=4)}), but all rows stay identical "
          f"(max |W1[i] - W1[0]| = {row_spread(W1c):g}): gradient descent cannot break symmetry.")
    he_W1 = results["he"]["model"].layers[0].W
    print(f"From He init the rows differ (max |W1[i] - W1[0]| = {row_spread(he_W1):.3g}).")

    # ---------------------------------------------------------------- figure
    shown = ["zeros", "random x1000", "he x10", "he"]
    fig, axd = plt.subplot_mosaic([shown, ["cost"] * 4], figsize=(17, 8.5), layout="constrained",
                                  height_ratios=[1.1, 1])
    for label in shown:
        r = results[label]
        pydl.plot.decision_boundary(r["model"], X_test, y_test, ax=axd[label], resolution=150,
                                    title=f"{label}: test acc {r['test_acc']:.2f}")
    ax = axd["cost"]
    for label, r in results.items():
        ax.plot(np.arange(1, len(r["history"]["loss"]) + 1), r["history"]["loss"], label=label,
                linestyle="--" if "0.5" in label else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration (batch gradient descent)")
    ax.set_ylabel("training cost")
    ax.set_title("Training cost by initialization")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.suptitle("Weight initialization on make_circles (test points on the decision regions)")
    path = os.path.join(args.out, "01_initialization.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"\nsaved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {label: {k: v for k, v in r.items() if k not in ("model", "history")}
            for label, r in results.items()} | {"png": path}


if __name__ == "__main__":
    main()
