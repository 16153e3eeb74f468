"""Wall time of one 8-trial random search with n_jobs=1 and n_jobs=2.

Each trial trains an MLP (64-256-256-10 with batch norm, Adam) on the shipped digits
for a fixed number of epochs (~0.4 s at the time of writing), with the learning rate and
beta1 drawn on log scales.

    python bench/bench_tune.py            # prints the timings and the speed-ups
    pytest bench/bench_tune.py            # the same runs under pytest-benchmark

What bounds the speed-up on 2 cores, and what the script prints about each:
- start-up: the first search of a process starts the forkserver, which imports NumPy,
  SciPy and pydl once (~0.4 s, "cold"), and its workers; later searches with the same
  n_jobs reuse those workers ("n_jobs=2"). "n_jobs=2 new workers" stops them before each
  search (tune.shutdown_workers): the pool forks new ones (~30 ms), and a new worker's
  first trial is ~30% slower than the next (it faults in fresh memory; costly on a VM);
- threads: with n_jobs=1 a trial runs in this process with pydl's default threads (all
  cores); each worker of n_jobs=2 runs one thread. Products of this MLP's size run in
  pydl's own single-threaded GEMM either way, so the second core adds little to a trial
  in-process. The ceiling is 2 x (trial time at the default threads) / (trial time in a
  worker), printed beside the measured speed-up; "n_jobs=1 at 1 thread" isolates the
  search's own parallel efficiency from that.
On a shared machine the numbers are noisy.
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


def _run(n_jobs: int, new_workers: bool = False) -> tuple[float, float]:
    """(wall seconds of the search, summed seconds spent inside the objective)."""
    if new_workers:
        tune.shutdown_workers()
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
    import pydl

    start = time.perf_counter()
    cpu_bound_objective({"lr": 1e-2, "beta1": 0.9})
    per_trial = time.perf_counter() - start
    default_threads = pydl.get_num_threads()
    print(f"{N_TRIALS} trials of ~{per_trial:.2f} s each, {os.cpu_count()} CPUs, "
          f"pydl default {default_threads} threads, Python {sys.version.split()[0]}")
    cold, cold_work = _run(2)  # the first pool of this process starts the forkserver
    print(f"n_jobs=2 cold (forkserver start-up included): {cold:.2f} s, "
          f"overhead ~{cold - cold_work / 2:.2f} s")
    settings = {"n_jobs=1": (1, default_threads), "n_jobs=2": (2, default_threads),
                "n_jobs=2 new workers": (2, default_threads), "n_jobs=1 at 1 thread": (1, 1)}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in settings}
    for _ in range(3):  # interleaved, so a burst of load elsewhere hits every setting
        for name, (n_jobs, threads) in settings.items():
            pydl.set_num_threads(threads)
            runs[name].append(_run(n_jobs, new_workers=name.endswith("new workers")))
    pydl.set_num_threads(default_threads)
    best = {}
    for name, rs in runs.items():
        wall, work = min(rs)
        best[name] = (wall, work)
        n_jobs = settings[name][0]
        # overhead: wall time not explained by the trials themselves (pool start-up,
        # scheduling, shutdown)
        print(f"{name}: best {wall:6.2f} s, of which ~{wall - work / n_jobs:.2f} s overhead "
              f"(runs: {', '.join(f'{w:.2f}' for w, _ in rs)})")
    one, two = best["n_jobs=1"], best["n_jobs=2"]
    ceiling = 2 * one[1] / two[1]  # summed trial time in-process vs in the workers
    print(f"speed-up n_jobs=2 vs n_jobs=1 (best vs best): {one[0] / two[0]:.2f}x; cold: "
          f"{one[0] / cold:.2f}x; ceiling from trial times {ceiling:.2f}x (ideal "
          f"{min(2, os.cpu_count() or 1)}.00x)")
    print(f"speed-up n_jobs=2 new workers vs n_jobs=1: {one[0] / best['n_jobs=2 new workers'][0]:.2f}x")
    print(f"speed-up n_jobs=2 vs n_jobs=1 at 1 thread: {best['n_jobs=1 at 1 thread'][0] / two[0]:.2f}x")


if __name__ == "__main__":
    main()
