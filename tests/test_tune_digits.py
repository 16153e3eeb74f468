"""A random search finds, within 30 trials, an MLP on the digits within 1% accuracy of a
good hand-tuned configuration."""
import numpy as np

import pydl
from pydl import tune
from pydl.data import Standardizer, train_dev_test_split

X, y = pydl.datasets.load_digits()
Xtr, ytr, Xd, yd, _, _ = train_dev_test_split(X, y, seed=0)
_std = Standardizer().fit(Xtr)
Xtr, Xd = _std.transform(Xtr), _std.transform(Xd)
EPOCHS = 12


def dev_accuracy(params):
    model = pydl.mlp([64, params["hidden"], 10], batchnorm=True, seed=0)
    model.fit(Xtr, ytr, optimizer=pydl.optim.Adam(lr=params["lr"], beta1=params["beta1"]),
              epochs=EPOCHS, batch_size=params["batch_size"], verbose=0)
    return {"dev_accuracy": model.evaluate(Xd, yd)["accuracy"]}


def test_random_search_matches_hand_tuned_mlp_within_one_percent():
    hand = dev_accuracy({"hidden": 128, "lr": 1e-3, "beta1": 0.9, "batch_size": 32})["dev_accuracy"]
    assert hand > 0.95  # the hand-tuned reference really is good
    space = {"lr": tune.loguniform(1e-4, 1e-1), "beta1": tune.one_minus_loguniform(0.8, 0.99),
             "hidden": tune.choice([32, 64, 128]), "batch_size": tune.choice([32, 64, 128])}
    result = tune.random_search(dev_accuracy, space, n_trials=30, seed=0, direction="maximize",
                                metric="dev_accuracy")
    assert len(result.ok_trials) == 30
    best = result.best.metrics["dev_accuracy"]
    assert best >= hand - 0.01, (best, hand, result.best.params)
    # the search really explored: not every trial is near the best
    accs = np.array([t.metrics["dev_accuracy"] for t in result.ok_trials])
    assert accs.min() < best - 0.05
