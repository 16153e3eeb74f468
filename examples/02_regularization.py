#!/usr/bin/env python
"""Regularization: no regularization vs L2 vs dropout on noisy two moons.

A network much bigger than the problem needs (2 -> 100 -> 100 -> 1) is trained
on only 200 noisy points. Without regularization it bends its decision boundary
around individual noisy training points: near-perfect training accuracy, worse
dev accuracy (high variance). Two remedies:

* L2 (``l2=lambda`` on every Dense layer): the cost gets
  ``lambda/(2m) * sum ||W||_F^2`` and every step shrinks the weights
  ("weight decay"), which smooths the boundary.
* Inverted dropout (``keep_prob``): each hidden unit is dropped with
  probability ``1 - keep_prob`` at every step, so no unit can rely on any
  other; at evaluation the network is used whole.

Data: ``make_moons(noise=0.3)`` split 20/40/40 into train/dev/test with
``train_dev_test_split`` and standardized on the training set.

Prints a train/dev table and saves ``02_regularization.png`` (the three
decision boundaries) to ``--out``.

    python examples/02_regularization.py [--quick] [--out DIR] [--threads N]
"""
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import format_table, parse_args  # noqa: E402  (examples/, next to this file)
import pydl  # noqa: E402
import pydl.plot  # noqa: E402,F401  (not imported by `import pydl`)
from pydl import optim  # noqa: E402


LAMBDA = 1.0
KEEP_PROB = 0.5
# (label, keyword arguments of pydl.mlp)
RUNS = [
    ("none", {}),
    (f"L2 (lambda={LAMBDA:g})", {"l2": LAMBDA}),
    (f"dropout (keep_prob={KEEP_PROB:g})", {"keep_prob": KEEP_PROB}),
]


def main(argv=None):
    args = parse_args(argv, __doc__)
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    if args.quick:
        n, hidden, epochs = 200, [32, 32], 100
    else:
        n, hidden, epochs = 1000, [100, 100], 2000
    X, y = pydl.datasets.make_moons(n, noise=0.3, seed=3)
    X_train, y_train, X_dev, y_dev, X_test, y_test = pydl.data.train_dev_test_split(
        X, y, ratios=(0.2, 0.4, 0.4), seed=0)
    scaler = pydl.data.Standardizer().fit(X_train)  # fit on train only
    X_train, X_dev, X_test = (scaler.transform(a) for a in (X_train, X_dev, X_test))

    results = {}
    for label, kwargs in RUNS:
        model = pydl.mlp([2, *hidden, 1], loss="sigmoid_cross_entropy", seed=0, **kwargs)
        # batch gradient descent with Adam: every step sees the whole (small) training set
        history = model.fit(X_train, y_train, optimizer=optim.Adam(lr=0.005), epochs=epochs,
                            batch_size=len(X_train), validation_data=(X_dev, y_dev), verbose=0)
        train = model.evaluate(X_train, y_train)
        results[label] = {
            "model": model, "history": history,
            "train_cost": train["loss"], "train_acc": train["accuracy"],
            "dev_acc": model.evaluate(X_dev, y_dev)["accuracy"],
        }

    print(f"Regularization on make_moons (noise 0.3): {len(X_train)} train / {len(X_dev)} dev, "
          f"net 2-{'-'.join(map(str, hidden))}-1, Adam lr=0.005, batch GD, {epochs} epochs")
    headers = ["regularization", "train cost", "train acc", "dev acc", "train-dev gap"]
    rows = [[label, f"{r['train_cost']:.4f}", f"{r['train_acc']:.3f}", f"{r['dev_acc']:.3f}",
             f"{r['train_acc'] - r['dev_acc']:+.3f}"] for label, r in results.items()]
    print(format_table(headers, rows))
    print("(train cost J is measured in evaluation mode, dropout off, L2 term included)")
    best = max(results, key=lambda k: results[k]["dev_acc"])
    print(f"\nbest dev accuracy: {best}")

    # ---------------------------------------------------------------- figure
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4), layout="constrained")
    for ax, (label, r) in zip(axes, results.items()):
        pydl.plot.decision_boundary(r["model"], X_train, y_train, ax=ax, resolution=200,
                                    title=f"{label}\ntrain {r['train_acc']:.3f} / dev {r['dev_acc']:.3f}")
    fig.suptitle(f"Decision boundaries on the {len(X_train)} training points (make_moons, noise 0.3)")
    path = os.path.join(args.out, "02_regularization.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"saved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {label: {k: v for k, v in r.items() if k not in ("model", "history")}
            for label, r in results.items()} | {"png": path}


if __name__ == "__main__":
    main()
