#!/usr/bin/env python
"""Hyperparameter search: grid vs random search, and a log vs linear scale for
the learning rate.

The learning rate of Adam and the hidden width of a 64 -> h -> h -> 10 network
on the 8x8 digits are tuned three ways, with the same budget of trials:

* ``grid_search``: 5 learning rates (1e-4, 1e-3, ..., 1) x 4 widths. Only 5
  distinct learning rates are ever tried, although the learning rate is the
  hyperparameter that matters most.
* ``random_search`` with ``lr ~ loguniform(1e-4, 1)``: ``r ~ U(-4, 0)``,
  ``lr = 10**r``. Every trial tries a new learning rate, and each decade
  [1e-4, 1e-3), ..., [0.1, 1] gets the same share (1/4) of the trials.
* ``random_search`` with ``lr ~ uniform(1e-4, 1)``: the wrong scale. 90% of the
  draws land in [0.1, 1] and only 0.1% below 1e-3, so the good region (around
  1e-3 to 3e-2 here) is barely explored.

Each trial trains for a few epochs and returns its dev accuracy. Prints the
decade table and the best trial of each search, and saves ``06_search.png``
(dev accuracy against the learning rate, via ``SearchResult.plot``) to ``--out``.

    python examples/06_search.py [--quick] [--out DIR] [--threads N]
"""
import functools
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from _common import format_table, parse_args  # noqa: E402  (examples/, next to this file)
import pydl  # noqa: E402
import pydl.tune as tune  # noqa: E402  (not imported by `import pydl`)
from pydl import optim  # noqa: E402

DECADES = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def objective(params, data, epochs):
    """Train 64 -> h -> h -> 10 with Adam(lr) and return dev accuracy and dev loss."""
    X_train, y_train, X_dev, y_dev = data
    h = int(params["hidden"])
    model = pydl.mlp([X_train.shape[1], h, h, 10], seed=0)
    model.fit(X_train, y_train, optimizer=optim.Adam(lr=params["lr"]), epochs=epochs, batch_size=64,
              verbose=0)
    return {f"dev_{k}": v for k, v in model.evaluate(X_dev, y_dev).items()}


def decade_counts(values):
    """How many values fall in [1e-4, 1e-3), [1e-3, 1e-2), [1e-2, 1e-1), [1e-1, 1]."""
    idx = np.clip(np.digitize(np.asarray(values, dtype=float), DECADES) - 1, 0, len(DECADES) - 2)
    return np.bincount(idx, minlength=len(DECADES) - 1)


def main(argv=None):
    args = parse_args(argv, __doc__, "a few tiny trials (smoke run)")
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    X, y = pydl.datasets.load_digits()
    if args.quick:
        X, y = X[:300], y[:300]
        epochs, grid_lr, grid_hidden = 1, [1e-4, 1e-2, 1.0], [16]
    else:
        epochs, grid_lr, grid_hidden = 8, list(np.logspace(-4, 0, 5)), [16, 32, 64, 128]
    n_trials = len(grid_lr) * len(grid_hidden)  # the same budget for every search
    X_train, y_train, X_dev, y_dev, _, _ = pydl.data.train_dev_test_split(X, y, stratify=True, seed=0)
    scaler = pydl.data.Standardizer().fit(X_train)
    X_train, X_dev = scaler.transform(X_train), scaler.transform(X_dev)
    fn = functools.partial(objective, data=(X_train, y_train, X_dev, y_dev), epochs=epochs)

    common = dict(direction="maximize", metric="dev_accuracy")
    hidden = tune.randint(min(grid_hidden), max(grid_hidden))
    searches = {
        "grid (log-spaced lr)": tune.grid_search(fn, {"lr": grid_lr, "hidden": grid_hidden}, **common),
        "random, loguniform lr": tune.random_search(
            fn, {"lr": tune.loguniform(1e-4, 1), "hidden": hidden}, n_trials=n_trials, seed=0, **common),
        "random, uniform lr": tune.random_search(
            fn, {"lr": tune.uniform(1e-4, 1), "hidden": hidden}, n_trials=n_trials, seed=0, **common),
    }

    # expected shares per decade, from many draws of the two distributions
    rng = np.random.default_rng(0)
    draws = {name: [dist.sample(rng) for _ in range(100_000)]
             for name, dist in (("log", tune.loguniform(1e-4, 1)), ("uniform", tune.uniform(1e-4, 1)))}
    share = {name: decade_counts(v) / len(v) for name, v in draws.items()}

    print(f"Search on digits: {len(X_train)} train / {len(X_dev)} dev, net 64-h-h-10, Adam, "
          f"{epochs} epochs per trial, {n_trials} trials per search")
    print("\nTrials per learning-rate decade:")
    counts = {name: decade_counts([t.params["lr"] for t in res.trials]) for name, res in searches.items()}
    headers = ["lr decade", *searches, "loguniform share", "uniform share"]
    rows = []
    for k in range(len(DECADES) - 1):
        right = "]" if k == len(DECADES) - 2 else ")"
        rows.append([f"[{DECADES[k]:g}, {DECADES[k + 1]:g}{right}", *[str(counts[n][k]) for n in searches],
                     f"{share['log'][k]:.1%}", f"{share['uniform'][k]:.2%}"])
    print(format_table(headers, rows))

    print("\nBest trial of each search:")
    good = 0.9
    headers = ["search", "trials", "distinct lr", "failed", "best dev acc", "best lr", "best hidden",
               "median dev acc", f"trials >= {good:g}"]
    rows = []
    for name, res in searches.items():
        best = res.best
        values = [t.value for t in res.ok_trials]
        rows.append([name, str(len(res.trials)), str(len({t.params["lr"] for t in res.trials})),
                     str(len(res.failed_trials)), f"{best.value:.3f}", f"{best.params['lr']:.3g}",
                     str(best.params["hidden"]), f"{np.median(values):.3f}",
                     str(sum(v >= good for v in values))])
    print(format_table(headers, rows))

    # ---------------------------------------------------------------- figure
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained", sharey=True)
    for ax, (name, res) in zip(axes, searches.items()):
        res.plot("lr", ax=ax, log=True)  # log x axis for all three, so the scales compare
        ax.set_xlim(5e-5, 2)
        for d in DECADES:
            ax.axvline(d, color="0.85", linewidth=0.8, zorder=0)
        ax.set_title(f"{name}: {len(res.trials)} trials")
        ax.set_ylim(0, 1.02)
    fig.suptitle("Dev accuracy vs Adam learning rate (log axis): where each search spends its trials")
    path = os.path.join(args.out, "06_search.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"\nsaved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {name: {"best_value": res.best.value, "best_params": res.best.params,
                   "decade_counts": counts[name].tolist(), "n_trials": len(res.trials)}
            for name, res in searches.items()} | {"png": path}


if __name__ == "__main__":
    main()
