#!/usr/bin/env python
"""Optimizers: mini-batch GD vs Momentum vs RMSprop vs Adam, with and without
learning-rate decay, on two moons.

A small network (2 -> 5 -> 2 -> 1) is trained with mini-batches of 64 by four
update rules, all over the same flat parameter vector:

* GD:        ``W -= lr * dW``
* Momentum:  ``v = beta v + (1 - beta) dW;  W -= lr v``  (beta = 0.9)
* RMSprop:   ``s = beta s + (1 - beta) dW^2;  W -= lr dW / (sqrt(s) + eps)``
* Adam:      momentum and RMSprop together, bias-corrected

Two settings:

1. no decay, the same small learning rate 0.0007 for all: GD and Momentum
   crawl (their step is proportional to the gradient, which is small on this
   problem), RMSprop and Adam rescale each coordinate and converge;
2. with decay: a large initial rate (0.1 for GD/Momentum, 0.01 for
   RMSprop/Adam) divided by ``1 + floor(epoch / interval)``
   (``pydl.schedules.StaircaseDecay`` applied by ``pydl.callbacks.LRScheduler``):
   fast progress early, small careful steps late, and now every method gets
   there.

GD and Momentum draw nearly the same curves: with this (1 - beta) form the
momentum step averages the recent gradients but has the same size as GD's on
a steady slope, so at one learning rate they progress alike. What momentum
buys is damping of oscillating directions, which this small problem hardly has.

Prints a table and saves ``04_optimizers.png`` (cost curves and decision
boundaries) to ``--out``.

    python examples/04_optimizers.py [--quick] [--out DIR] [--threads N]
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
from pydl import callbacks, optim, schedules  # noqa: E402


CONSTANT_LR = 0.0007
# name -> (optimizer class, initial learning rate with decay)
OPTIMIZERS = {
    "GD": (optim.SGD, 0.1),
    "Momentum": (optim.Momentum, 0.1),
    "RMSprop": (optim.RMSprop, 0.01),
    "Adam": (optim.Adam, 0.01),
}


def main(argv=None):
    args = parse_args(argv, __doc__)
    pydl.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    n, epochs = (150, 50) if args.quick else (500, 5000)
    interval = max(1, epochs // 5)  # the learning rate steps down 4 times
    X, y = pydl.datasets.make_moons(n, noise=0.2, seed=3)
    X_train, y_train, X_dev, y_dev, _, _ = pydl.data.train_dev_test_split(X, y, seed=0)  # 60/20/20
    scaler = pydl.data.Standardizer().fit(X_train)
    X_train, X_dev = scaler.transform(X_train), scaler.transform(X_dev)

    def configure(setting, lr0):
        """(learning rate given to the optimizer, callbacks) for one setting."""
        if setting == "constant":
            return CONSTANT_LR, []
        schedule = schedules.StaircaseDecay(lr0, decay_rate=1.0, interval=interval)
        return lr0, [callbacks.LRScheduler(schedule)]  # sets optimizer.lr = schedule(epoch) each epoch

    settings = ["constant", "staircase decay"]
    results = {}
    for setting in settings:
        for name, (cls, lr0) in OPTIMIZERS.items():
            lr, cbs = configure(setting, lr0)
            model = pydl.mlp([2, 5, 2, 1], loss="sigmoid_cross_entropy", seed=1)
            start = time.perf_counter()
            history = model.fit(X_train, y_train, optimizer=cls(lr=lr), epochs=epochs, batch_size=64,
                                callbacks=cbs, verbose=0)
            results[(setting, name)] = {
                "model": model, "history": history, "seconds": time.perf_counter() - start,
                "lr0": lr, "final_lr": history["lr"][-1],
                "train_cost": model.cost(X_train, y_train),
                "train_acc": model.evaluate(X_train, y_train)["accuracy"],
                "dev_acc": model.evaluate(X_dev, y_dev)["accuracy"],
            }

    print(f"Optimizers on make_moons (noise 0.2): {len(X_train)} train / {len(X_dev)} dev, "
          f"net 2-5-2-1, mini-batches of 64, {epochs} epochs; decay: lr0 / (1 + floor(epoch / {interval}))")
    headers = ["optimizer", "schedule", "lr0", "final lr", "train cost", "train acc", "dev acc", "seconds"]
    rows = [[name, setting, f"{r['lr0']:g}", f"{r['final_lr']:.3g}", f"{r['train_cost']:.4f}",
             f"{r['train_acc']:.3f}", f"{r['dev_acc']:.3f}", f"{r['seconds']:.2f}"]
            for (setting, name), r in results.items()]
    print(format_table(headers, rows))

    # ---------------------------------------------------------------- figure
    names = list(OPTIMIZERS)
    mosaic = [["constant"] * 2 + ["staircase decay"] * 2,
              [f"constant/{n}" for n in names],
              [f"staircase decay/{n}" for n in names]]
    fig, axd = plt.subplot_mosaic(mosaic, figsize=(18, 13.5), layout="constrained")
    for setting in settings:
        ax = axd[setting]
        for name in names:
            h = results[(setting, name)]["history"]
            ax.plot(np.asarray(h.epoch) + 1, h["loss"], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training cost (mean over the epoch's mini-batches)")
        title = f"constant lr = {CONSTANT_LR:g}" if setting == "constant" else \
            "staircase decay, lr0 = " + ", ".join(f"{lr0:g} ({n})" for n, (_, lr0) in OPTIMIZERS.items())
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        for name in names:
            r = results[(setting, name)]
            pydl.plot.decision_boundary(r["model"], X_train, y_train, ax=axd[f"{setting}/{name}"],
                                        resolution=150,
                                        title=f"{name}, {setting}: dev acc {r['dev_acc']:.3f}")
    fig.suptitle("Mini-batch GD vs Momentum vs RMSprop vs Adam on make_moons (training points shown)")
    path = os.path.join(args.out, "04_optimizers.png")
    fig.savefig(path, dpi=70)
    plt.close(fig)
    print(f"\nsaved {path}")
    print(f"wall time: {time.perf_counter() - t_start:.1f} s")
    return {f"{name} ({setting})": {k: v for k, v in r.items() if k not in ("model", "history")}
            for (setting, name), r in results.items()} | {"png": path}


if __name__ == "__main__":
    main()
