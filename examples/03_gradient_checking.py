#!/usr/bin/env python
"""Gradient checking: a correct network passes, planted backprop bugs are caught.

``pydl.gradcheck.gradient_check`` compares backprop's gradient with two-sided
differences ``(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)`` over every
coordinate of the flat parameter vector theta (float64, eps = 1e-7), and
reports ``difference = ||approx - grad|| / (||approx|| + ||grad||)`` overall and
per parameter (< 1e-7 great, < 1e-5 acceptable, > 1e-3 a bug).

The network (on standardized 8x8 digits, a batch of 16 examples) has L2 on
every Dense layer, a BatchNorm and mixed activations:

    0 Dense(64, 16, no bias) -> 1 BatchNorm -> 2 ReLU -> 3 Dense(16, 12) -> 4 Tanh -> 5 Dense(12, 10)

Three versions are checked:

* the correct network;
* layer 3 replaced by a ``Dense`` subclass whose backward forgets the L2 term
  ``(lambda/m) W`` of dW: only parameter "3.W" is flagged;
* layer 5 replaced by a ``Dense`` subclass whose backward divides dW by m a
  second time: only "5.W" is flagged.

Finally the check refuses a network with active dropout (its random masks
change J between the two evaluations of each difference).

Prints the reports and a summary table, and saves ``03_gradient_checking.png``
(per-parameter differences) to ``--out``.

    python examples/03_gradient_checking.py [--quick] [--out DIR] [--threads N]
"""
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from _common import format_table, parse_args  # noqa: E402  (examples/, next to this file)
import pydl  # noqa: E402
from pydl import nn, optim  # noqa: E402
from pydl.gradcheck import gradient_check  # noqa: E402

LAMBDA = 0.7


class ForgotL2Dense(nn.Dense):
    """Planted bug: backward leaves out the L2 term (lambda/m) W of dW."""

    def backward(self, dA):
        m = dA.shape[0]
        dA_prev = super().backward(dA)
        self.dW -= (self.l2 / m) * self.W
        return dA_prev


class DoubleMeanDense(nn.Dense):
    """Planted bug: backward divides dW by m although dZ already carries the 1/m."""

    def backward(self, dA):
        m = dA.shape[0]
        dA_prev = super().backward(dA)
        self.dW /= m
        return dA_prev


def build(dense3=nn.Dense, dense5=nn.Dense, keep_prob=1.0, seed=0):
    layers = [
        nn.Dense(64, 16, use_bias=False, l2=LAMBDA), nn.BatchNorm(16), nn.ReLU(),
        dense3(16, 12, l2=LAMBDA), nn.Tanh(),
        dense5(12, 10, l2=LAMBDA),
    ]
    if keep_prob < 1.0:
        layers.insert(3, nn.Dropout(keep_prob=keep_prob))
    return pydl.Sequential(layers, loss="softmax_cross_entropy", seed=seed)


def main(argv=None):
    args = parse_args(argv, __doc__, "check a sample of coordinates (smoke run)")
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    X, y = pydl.datasets.load_digits()
    X_train, y_train, _, _, _, _ = pydl.data.train_dev_test_split(X, y, seed=0)
    X_train = pydl.data.Standardizer().fit_transform(X_train)
    Xb, yb = X_train[:16], y_train[:16]
    # None checks every coordinate of theta; --quick checks a random sample of 200
    coords = 200 if args.quick else None

    versions = [
        ("correct", {}),
        ("layer 3 forgets the L2 term", {"dense3": ForgotL2Dense}),
        ("layer 5 divides dW by m twice", {"dense5": DoubleMeanDense}),
    ]
    results = {}
    for label, kwargs in versions:
        model = build(**kwargs)
        # a few epochs first, so the check runs at a realistic point, not only at initialization
        model.fit(X_train, y_train, optimizer=optim.Adam(lr=1e-3), epochs=1 if args.quick else 3,
                  batch_size=64, verbose=0)
        report = gradient_check(model, Xb, yb, coordinates=coords, seed=0)
        results[label] = report
        print(f"=== {label} ===")
        print(report)
        print()

    print(f"Summary ({results['correct'].n_checked} coordinates checked per network, batch of {len(Xb)}):")
    headers = ["network", "difference", "verdict", "passed", "flagged parameters"]
    rows = []
    for label, r in results.items():
        flagged = [name for name, d in r.per_parameter.items() if d > 1e-5]
        rows.append([label, f"{r.difference:.2e}", r.verdict, "yes" if r.passed else "no",
                     ", ".join(flagged) or "-"])
    print(format_table(headers, rows))

    try:
        gradient_check(build(keep_prob=0.8), Xb, yb, coordinates=coords)
        dropout_message = "(not refused)"
    except ValueError as e:
        dropout_message = str(e)
    print(f"\nWith dropout the check is refused: {dropout_message}")

    # ---------------------------------------------------------------- figure
    names = list(results["correct"].per_parameter)
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    height = 0.8 / len(results)
    ypos = np.arange(len(names))
    for k, (label, r) in enumerate(results.items()):
        diffs = [max(r.per_parameter.get(n, np.nan), 1e-16) for n in names]
        ax.barh(ypos + (k - (len(results) - 1) / 2) * height, diffs, height=height, label=label)
    for x, text in ((1e-7, "great"), (1e-5, "acceptable"), (1e-3, "bug")):
        ax.axvline(x, color="0.3", linestyle="--", linewidth=1)
        ax.text(x, len(names) - 0.45, f" {text} {'<' if x < 1e-3 else '>'} {x:.0e}", fontsize=9,
                va="bottom", color="0.3")
    ax.set_xscale("log")
    ax.set_yticks(ypos, names)
    ax.invert_yaxis()
    ax.set_xlabel("relative difference ||approx - grad|| / (||approx|| + ||grad||)")
    ax.set_ylabel("parameter (layer.name)")
    ax.set_title("Gradient check per parameter: the planted bugs show up only where they are")
    ax.legend(loc="upper right")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    path = os.path.join(args.out, "03_gradient_checking.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"saved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {label: {"difference": r.difference, "verdict": r.verdict, "passed": r.passed,
                    "per_parameter": dict(r.per_parameter)} for label, r in results.items()} \
        | {"dropout_refused": dropout_message, "png": path}


if __name__ == "__main__":
    main()
