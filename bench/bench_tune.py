"""Wall time of one 8-trial random search with n_jobs=1 and n_jobs=2.

Each trial trains an MLP (64-256-256-10 with batch norm, Adam) on the shipped digits
for a fixed number of epochs (about a second), with the learning rate and beta1 drawn
on log scales.

    python bench/bench_tune.py            # prints both timings and the speed-up
    pytest bench/bench_tune.py            # the same runs under pytest-benchmark

The speed-up is bounded by the number of cores and by a fixed start-up cost
(the forkserver process imports NumPy, SciPy and pydl once, ~1 s at the time
of writing), which a search of 8 x 0.5 s feels and a real search does not;
the script prints that overhead. On a shared machine the numbers are noisy.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import pydl.tune as tune

N_TRIALS = 8
SPACE = {"lr": tune.loguniform(1e-4, 1e-1), "beta1": tune.one_minus_loguniform(0.8, 0.99)}
EPOCHS = int(os.environ.get("PYDL_BENCH_EPOCHS", 40))


def cpu_bound_objective(params):
    """Train on the digits for EPOCHS epochs; the dev loss."""
    import pydl
    from pydl.data import Standardizer, train_dev_test_split

    X, y = pydl.datasets.load_digits()
    Xtr, ytr, Xd, yd, _, _ = train_dev_test_split(X, y, seed=0)
    std = Standardizer().fit(Xtr)
    model = pydl.mlp([64, 256, 256, 10], batchnorm=True, seed=0)
    model.fit(std.transform(Xtr), ytr, optimizer=pydl.optim.Adam(lr=params["lr"], beta1=params["beta1"]),
              epochs=EPOCHS, batch_size=32, verbose=0)
    return model.evaluate(std.transform(Xd), yd)["loss"]


def timed_search(n_jobs: int) -> float:
    """Seconds for the whole search, pool start-up and shutdown included."""
    return _run(n_jobs)[0]


def _run(n_jobs: int) -> tuple[float, float]:
    """(wall seconds of the search, summed seconds spent inside the objective)."""
    start = time.perf_counter()
    result = tune.random_search(cpu_bound_objective, SPACE, N_TRIALS, seed=0, n_jobs=n_jobs)
    elapsed = time.perf_counter() - start
    assert len(result.ok_trials) == N_TRIALS, result
    return elapsed, sum(t.duration for t in result.trials)


def test_random_search_n_jobs_1(benchmark):
    benchmark.pedantic(timed_search, args=(1,), rounds=1, iterations=1)


def test_random_search_n_jobs_2(benchmark):
    benchmark.pedantic(timed_search, args=(2,), rounds=1, iterations=1)


def main() -> None:
    start = time.perf_counter()
    cpu_bound_objective({"lr": 1e-2, "beta1": 0.9})
    per_trial = time.perf_counter() - start
    print(f"{N_TRIALS} trials of ~{per_trial:.2f} s each, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(3):  # interleaved, so a burst of load elsewhere hits both settings
        for n_jobs in runs:
            runs[n_jobs].append(_run(n_jobs))
    best = {}
    for n_jobs, rs in runs.items():
        wall, work = min(rs)
        best[n_jobs] = wall
        # overhead: wall time not explained by the trials themselves (pool start-up,
        # workers importing numpy and pydl, scheduling)
        overhead = wall - work / n_jobs
        print(f"n_jobs={n_jobs}: best {wall:6.2f} s, of which ~{overhead:.2f} s overhead "
              f"(runs: {', '.join(f'{w:.2f}' for w, _ in rs)})")
    print(f"speed-up (best vs best): {best[1] / best[2]:.2f}x (ideal {min(2, os.cpu_count() or 1)}.00x)")

if __name__ == "__main__":
    main()
