#!/usr/bin/env python
"""Softmax classification of the 8x8 handwritten digits (10 classes).

The last Dense layer outputs 10 logits; the ``softmax_cross_entropy`` loss
turns them into probabilities ``softmax(z)_j = exp(z_j) / sum_k exp(z_k)`` and
computes ``J = -(1/m) sum_i log p_i[y_i]`` (from the logits, with log-sum-exp,
so it never overflows); its gradient is simply ``(p - y_onehot) / m``.
``predict`` returns the arg-max class, ``predict_proba`` the probabilities.

Three models, all trained with Adam (mini-batches of 64) and early stopping on
the dev loss (``pydl.callbacks.EarlyStopping``, which restores the best epoch):

* softmax regression: no hidden layer (64 -> 10), a linear classifier;
* an MLP 64 -> 128 -> 10 with ReLU;
* the same MLP with BatchNorm and dropout (keep_prob 0.8).

Data: ``pydl.datasets.load_digits`` split 60/20/20 (stratified) and
standardized on the training set. Prints an accuracy table and the most
frequent confusions, and saves ``07_softmax_digits.png`` (learning curves of
the best model and its test-set confusion matrix) to ``--out``.

    python examples/07_softmax_digits.py [--quick] [--out DIR] [--threads N]
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
from pydl import callbacks, optim  # noqa: E402


# (label, keyword arguments of pydl.mlp)
MODELS = [
    ("softmax regression 64-10", dict(sizes=[64, 10])),
    ("MLP 64-128-10", dict(sizes=[64, 128, 10])),
    ("MLP 64-128-10 + BN + dropout", dict(sizes=[64, 128, 10], batchnorm=True, keep_prob=0.8)),
]


def main(argv=None):
    args = parse_args(argv, __doc__)
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    X, y = pydl.datasets.load_digits()
    if args.quick:
        X, y = X[:300], y[:300]
    epochs = 3 if args.quick else 100
    X_train, y_train, X_dev, y_dev, X_test, y_test = pydl.data.train_dev_test_split(
        X, y, stratify=True, seed=0)
    scaler = pydl.data.Standardizer().fit(X_train)
    X_train, X_dev, X_test = (scaler.transform(a) for a in (X_train, X_dev, X_test))

    results = {}
    for label, kwargs in MODELS:
        model = pydl.mlp(seed=0, **kwargs)
        stop = callbacks.EarlyStopping(monitor="dev_loss", patience=5, restore_best=True)
        start = time.perf_counter()
        history = model.fit(X_train, y_train, optimizer=optim.Adam(lr=1e-3), epochs=epochs, batch_size=64,
                            validation_data=(X_dev, y_dev), callbacks=[stop], verbose=0)
        results[label] = {
            "model": model, "history": history, "seconds": time.perf_counter() - start,
            "epochs_run": len(history.epoch),
            "best_epoch": history.best_epoch,  # epoch index, counted from 0 as in history.epoch
            "params": model.n_params,
            **{f"{split}_acc": model.evaluate(Xs, ys)["accuracy"]
               for split, Xs, ys in (("train", X_train, y_train), ("dev", X_dev, y_dev),
                                     ("test", X_test, y_test))},
        }

    print(f"Softmax on digits: {len(X_train)} train / {len(X_dev)} dev / {len(X_test)} test, Adam lr=1e-3, "
          f"batch 64, up to {epochs} epochs, early stopping on dev loss (patience 5)")
    headers = ["model", "parameters", "epochs run", "best epoch (from 0)", "train acc", "dev acc", "test acc",
               "seconds"]
    rows = [[label, str(r["params"]), str(r["epochs_run"]), "-" if r["best_epoch"] is None else str(r["best_epoch"]),
             f"{r['train_acc']:.4f}", f"{r['dev_acc']:.4f}", f"{r['test_acc']:.4f}", f"{r['seconds']:.2f}"]
            for label, r in results.items()]
    print(format_table(headers, rows))

    best = max(results, key=lambda k: results[k]["dev_acc"])  # chosen on dev, reported on test
    model = results[best]["model"]
    y_pred = model.predict(X_test)
    counts = pydl.plot.confusion_counts(y_test, y_pred, n_classes=10)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:5]
    confusions = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))
                  if off[i, j] > 0]
    print(f"\nBest on dev: {best}. Test accuracy {np.trace(counts) / counts.sum():.4f}; "
          f"{off.sum()} of {counts.sum()} test digits misclassified.")
    if confusions:
        print("Most frequent confusions (true -> predicted: count): "
              + ", ".join(f"{i} -> {j}: {c}" for i, j, c in confusions))
    recall = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
    print("Per-class test recall: " + " ".join(f"{k}:{r:.2f}" for k, r in enumerate(recall)))

    # ---------------------------------------------------------------- figure
    fig, axd = plt.subplot_mosaic([["cost", "acc", "cm"]], figsize=(19, 5.6), layout="constrained",
                                  width_ratios=[1, 1, 1.15])
    pydl.plot.learning_curves(results[best]["history"], ax=(axd["cost"], axd["acc"]))
    axd["cost"].set_title(f"{best}: cost")
    axd["acc"].set_title(f"{best}: accuracy")
    pydl.plot.confusion_matrix(y_test, y_pred, n_classes=10, ax=axd["cm"],
                               title=f"Test confusion matrix (accuracy {results[best]['test_acc']:.3f})")
    fig.suptitle("Softmax classifier on the 8x8 digits")
    path = os.path.join(args.out, "07_softmax_digits.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"\nsaved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {label: {k: v for k, v in r.items() if k not in ("model", "history")}
            for label, r in results.items()} | {"best": best, "confusion": counts.tolist(), "png": path}


if __name__ == "__main__":
    main()
