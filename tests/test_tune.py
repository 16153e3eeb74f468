"""Tests for pydl.tune: sampling laws, searches, failures, journal/resume, parallel runs."""
from __future__ import annotations

import concurrent.futures
import csv
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import pydl
import pydl.tune as tune

# --------------------------------------------------------------------------- objectives
# Module level, so worker processes (n_jobs > 1, Dask) can unpickle them by reference.


def quadratic_log_lr(params):
    """Minimum at lr = 1e-2: (log10 lr + 2)^2, plus a small term in x."""
    return (math.log10(params["lr"]) + 2.0) ** 2 + 0.01 * params["x"]


def worker_info(params):
    """The loss plus where and with how many BLAS threads it ran."""
    from threadpoolctl import threadpool_info

    time.sleep(0.2)  # long enough that both workers get trials
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {"dev_loss": quadratic_log_lr(params), "pid": os.getpid(),
            "blas_threads": max(blas) if blas else None}


def fails_for_large_x(params):
    if params["x"] > 0.5:
        raise ValueError(f"x={params['x']:.3f} too large")
    return params["x"]


def budgeted(params, budget, trial):
    """A loss that improves with budget (epochs) and depends on lr."""
    for epoch in range(budget):
        trial.report(epoch, abs(math.log10(params["lr"]) + 2.0) + 1.0 / (epoch + 1))
    return abs(math.log10(params["lr"]) + 2.0) + 1.0 / budget


SPACE = {"lr": tune.loguniform(1e-4, 1.0), "x": tune.uniform(0.0, 1.0)}


def binomial_bounds(n, p, tail=1e-6):
    """Counts outside these bounds have probability < tail under Binomial(n, p)."""
    lo, hi = scipy.stats.binom.interval(1.0 - tail, n, p)
    return lo, hi


# --------------------------------------------------------------------------- distributions


def test_loguniform_puts_a_quarter_of_draws_in_each_decade():
    rng = np.random.default_rng(0)
    dist = tune.loguniform(1e-4, 1)
    draws = np.array([dist.sample(rng) for _ in range(10_000)])
    assert draws.min() >= 1e-4 and draws.max() <= 1.0
    counts = np.histogram(np.log10(draws), bins=[-4, -3, -2, -1, 0])[0]
    lo, hi = binomial_bounds(10_000, 0.25)
    assert all(lo <= c <= hi for c in counts), f"decade counts {counts}, expected each in [{lo}, {hi}]"


def test_one_minus_loguniform_puts_half_of_betas_above_0_99():
    rng = np.random.default_rng(1)
    dist = tune.one_minus_loguniform(0.9, 0.999)
    draws = np.array([dist.sample(rng) for _ in range(10_000)])
    assert draws.min() >= 0.9 and draws.max() <= 0.999
    above = int(np.sum(draws > 0.99))
    lo, hi = binomial_bounds(10_000, 0.5)
    assert lo <= above <= hi, f"{above} of 10000 draws above 0.99, expected in [{lo}, {hi}]"


def test_uniform_randint_and_choice_laws():
    rng = np.random.default_rng(2)
    u = np.array([tune.uniform(-2.0, 3.0).sample(rng) for _ in range(10_000)])
    assert u.min() >= -2.0 and u.max() <= 3.0
    lo, hi = binomial_bounds(10_000, 0.2)
    assert lo <= np.sum(u < -1.0) <= hi  # [-2, -1) is a fifth of the interval

    ints = [tune.randint(3, 6).sample(rng) for _ in range(8_000)]
    assert all(type(v) is int for v in ints)
    counts = {v: ints.count(v) for v in range(3, 7)}
    lo, hi = binomial_bounds(8_000, 0.25)
    assert set(ints) == {3, 4, 5, 6}, "randint must include both ends"
    assert all(lo <= c <= hi for c in counts.values()), counts

    options = ["relu", "tanh", (64, 32)]
    picks = [tune.choice(options).sample(rng) for _ in range(6_000)]
    lo, hi = binomial_bounds(6_000, 1 / 3)
    for option in options:
        assert lo <= sum(p == option for p in picks) <= hi, option


def test_scipy_distribution_in_a_space_is_reproducible():
    space = {"lr": scipy.stats.loguniform(1e-4, 1), "units": 64}
    a = tune.random_search(lambda p: p["lr"], space, 5, seed=3)
    b = tune.random_search(lambda p: p["lr"], space, 5, seed=3)
    c = tune.random_search(lambda p: p["lr"], space, 5, seed=4)
    lrs = [t.params["lr"] for t in a.trials]
    assert lrs == [t.params["lr"] for t in b.trials]
    assert lrs != [t.params["lr"] for t in c.trials]
    assert all(type(v) is float and 1e-4 <= v <= 1 for v in lrs)
    assert all(t.params["units"] == 64 for t in a.trials)


@pytest.mark.parametrize("make, error, match", [
    (lambda: tune.uniform(1.0, 1.0), ValueError, "low < high"),
    (lambda: tune.uniform(0.0, float("nan")), ValueError, "high must be finite"),
    (lambda: tune.uniform("0", 1.0), TypeError, "low must be a real number"),
    (lambda: tune.loguniform(0.0, 1.0), ValueError, "low > 0"),
    (lambda: tune.loguniform(1.0, 1e-4), ValueError, "low < high"),
    (lambda: tune.one_minus_loguniform(0.9, 1.0), ValueError, "high < 1"),
    (lambda: tune.randint(5, 2), ValueError, "low <= high"),
    (lambda: tune.randint(0.5, 2), TypeError, "low must be an integer"),
    (lambda: tune.choice([]), ValueError, "at least one option"),
    (lambda: tune.choice("abc"), TypeError, "list or tuple"),
])
def test_distribution_bounds_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_distribution_repr_and_log_flag():
    assert repr(tune.loguniform(1e-4, 1)) == "loguniform(0.0001, 1.0)"
    assert repr(tune.one_minus_loguniform(0.9, 0.999)) == "one_minus_loguniform(0.9, 0.999)"
    assert repr(tune.randint(1, 3)) == "randint(1, 3)"
    assert repr(tune.choice(["a", 2])) == "choice(['a', 2])"
    assert repr(tune.uniform(0, 1)) == "uniform(0.0, 1.0)"
    assert [d.log for d in (tune.loguniform(1e-3, 1), tune.one_minus_loguniform(0.9, 0.99),
                            tune.uniform(0, 1), tune.randint(1, 2), tune.choice([1]))] == \
        [True, True, False, False, False]


# --------------------------------------------------------------------------- random search


def test_random_search_is_seeded_and_finds_the_minimum():
    result = tune.random_search(quadratic_log_lr, SPACE, 40, seed=0)
    again = tune.random_search(quadratic_log_lr, SPACE, 40, seed=0)
    assert [t.params for t in result.trials] == [t.params for t in again.trials]
    assert [t.number for t in result.trials] == list(range(40))
    values = [t.value for t in result.trials]
    assert result.best.value == min(values)
    assert result.best_params == result.trials[int(np.argmin(values))].params
    assert abs(math.log10(result.best.params["lr"]) + 2.0) < 0.3  # 40 draws over 4 decades
    assert all(t.status == "ok" and t.error is None and t.duration >= 0 for t in result.trials)
    assert result.seed == 0
    other = tune.random_search(quadratic_log_lr, SPACE, 40, seed=1)
    assert [t.params for t in other.trials] != [t.params for t in result.trials]


def test_random_search_maximize_and_dict_metric():
    def objective(params):
        return {"dev_accuracy": 1.0 - params["x"], "train_accuracy": 1.0}

    result = tune.random_search(objective, SPACE, 10, seed=5, direction="maximize", metric="dev_accuracy")
    assert result.best.value == max(t.value for t in result.trials)
    assert result.best.metrics == {"dev_accuracy": result.best.value, "train_accuracy": 1.0}


def test_random_search_draws_a_seed_when_none_is_given():
    a = tune.random_search(quadratic_log_lr, SPACE, 3)
    b = tune.random_search(quadratic_log_lr, SPACE, 3)
    assert isinstance(a.seed, int) and a.seed != b.seed
    replay = tune.random_search(quadratic_log_lr, SPACE, 3, seed=a.seed)
    assert [t.params for t in replay.trials] == [t.params for t in a.trials]


def test_failed_trials_are_recorded_and_the_search_goes_on():
    def objective(params):
        i = round(params["i"])
        if i == 0:
            raise RuntimeError("diverged")
        if i == 1:
            return float("nan")
        if i == 2:
            return {"train_loss": 1.0}
        if i == 3:
            return "0.5"
        if i == 4:
            return {"dev_loss": np.float32(np.inf)}
        return float(i)

    result = tune.grid_search(objective, {"i": list(range(8))})
    errors = [t.error for t in result.trials]
    assert [t.status for t in result.trials] == ["failed"] * 5 + ["ok"] * 3
    assert errors[0] == "RuntimeError: diverged"
    assert "dev_loss is nan" in errors[1]
    assert "without 'dev_loss'" in errors[2]
    assert "expected a number" in errors[3]
    assert "dev_loss is inf" in errors[4]
    assert "RuntimeError: diverged" in result.trials[0].traceback
    assert result.best.number == 5 and result.best.value == 5.0
    assert len(result.failed_trials) == 5 and len(result.ok_trials) == 3
    assert "5 failed" in repr(result)


def test_best_raises_when_every_trial_failed():
    result = tune.random_search(lambda p: 1 / 0, SPACE, 3, seed=0)
    with pytest.raises(RuntimeError, match="no trial succeeded.*ZeroDivisionError"):
        result.best
    assert "0 ok, 3 failed" in repr(result) and "ZeroDivisionError" in str(result)


def test_records_csv_and_table(tmp_path):
    result = tune.random_search(fails_for_large_x, {**SPACE, "units": 32}, 8, seed=2)
    records = result.to_records()
    assert len(records) == 8
    assert list(records[0])[:3] == ["number", "status", "value"]
    for rec, trial in zip(records, result.trials):
        assert rec["lr"] == trial.params["lr"] and rec["units"] == 32
        assert rec["status"] == trial.status and rec["error"] == trial.error
        # the metric would collide with nothing here, the parameter x is not renamed
        assert rec["x"] == trial.params["x"]
    path = tmp_path / "trials.csv"
    result.to_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert [float(r["lr"]) for r in rows] == [t.params["lr"] for t in result.trials]
    assert [r["status"] for r in rows] == [t.status for t in result.trials]
    assert any(r["error"].startswith("ValueError: x=") for r in rows)
    table = str(result)
    assert len(table.splitlines()) == 2 + 8
    assert f"{result.best.number}*" in table


def test_a_csv_write_that_fails_leaves_the_earlier_file_as_it_was(tmp_path, monkeypatch):
    result = tune.random_search(fails_for_large_x, SPACE, 3, seed=2)
    path = tmp_path / "trials.csv"
    result.to_csv(path)
    before = path.read_bytes()

    def fail(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", fail)
    with pytest.raises(OSError, match="No space left"):
        result.to_csv(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_plot_uses_a_log_axis_for_log_distributions():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = {"lr": tune.loguniform(1e-4, 1), "beta": tune.one_minus_loguniform(0.9, 0.999),
             "x": tune.uniform(0, 1), "act": tune.choice(["relu", "tanh"]),
             "s": scipy.stats.loguniform(1e-3, 1)}
    result = tune.random_search(lambda p: p["x"], space, 12, seed=0)
    fig = result.plot("lr")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "dev_loss"
    np.testing.assert_allclose(sorted(ax.collections[0].get_offsets()[:, 0]),
                               sorted(t.params["lr"] for t in result.trials))
    assert result.plot("x").axes[0].get_xscale() == "linear"
    assert result.plot("s").axes[0].get_xscale() == "log"
    ax = result.plot("beta").axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "1 - beta"
    np.testing.assert_allclose(sorted(ax.collections[0].get_offsets()[:, 0]),
                               sorted(1 - t.params["beta"] for t in result.trials))
    labels = [t.get_text() for t in result.plot("act").axes[0].get_xticklabels()]
    assert sorted(labels) == ["relu", "tanh"]
    with pytest.raises(ValueError, match="param 'nope'"):
        result.plot("nope")
    plt.close("all")


# --------------------------------------------------------------------------- argument validation


@pytest.mark.parametrize("kwargs, error, match", [
    ({"objective": 3}, TypeError, "objective must be callable"),
    ({"space": {}}, ValueError, "space must not be empty"),
    ({"space": [("lr", 1)]}, TypeError, "space must be a dict"),
    ({"space": {1: tune.uniform(0, 1)}}, TypeError, "space keys"),
    ({"n_trials": 0}, ValueError, "n_trials must be >= 1"),
    ({"n_trials": 2.5}, TypeError, "n_trials must be an integer"),
    ({"n_trials": True}, TypeError, "n_trials must be an integer"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"seed": "0"}, TypeError, "seed must be an integer"),
    ({"direction": "min"}, ValueError, "direction must be 'minimize' or 'maximize'"),
    ({"metric": ""}, ValueError, "metric must be a non-empty"),
    ({"metric": 1}, TypeError, "metric must be a str"),
    ({"n_jobs": 0}, ValueError, "n_jobs must be >= 1"),
    ({"executor": "pool"}, TypeError, "executor must be a concurrent.futures.Executor"),
    ({"n_jobs": 2, "executor": tune.concurrent.futures.ThreadPoolExecutor(1)}, ValueError,
     "either n_jobs or executor"),
    ({"journal": 5}, TypeError, "journal must be a path"),
    ({"threads_per_worker": 0}, ValueError, "threads_per_worker must be >= 1"),
])
def test_random_search_validates_arguments(kwargs, error, match):
    args = {"objective": quadratic_log_lr, "space": SPACE, "n_trials": 2, **kwargs}
    with pytest.raises(error, match=match):
        tune.random_search(**args)


@pytest.mark.parametrize("call, error, match", [
    (lambda: tune.coarse_to_fine(quadratic_log_lr, SPACE, rounds=0), ValueError, "rounds must be >= 1"),
    (lambda: tune.coarse_to_fine(quadratic_log_lr, SPACE, trials_per_round=4, top_k=5), ValueError, "top_k"),
    (lambda: tune.coarse_to_fine(quadratic_log_lr, SPACE, shrink=0.0), ValueError, "shrink must be in"),
    (lambda: tune.coarse_to_fine(quadratic_log_lr, SPACE, shrink=1.5), ValueError, "shrink must be in"),
    (lambda: tune.successive_halving(budgeted, SPACE, 9, 0, 9), ValueError, "min_budget must be > 0"),
    (lambda: tune.successive_halving(budgeted, SPACE, 9, 3, 1), ValueError, "max_budget must be >="),
    (lambda: tune.successive_halving(budgeted, SPACE, 9, 1, 9, eta=1), ValueError, "eta must be > 1"),
    (lambda: tune.successive_halving(budgeted, SPACE, 0, 1, 9), ValueError, "n_trials must be >= 1"),
    (lambda: tune.hyperband(budgeted, SPACE, 1, "9"), TypeError, "max_budget must be a real"),
    (lambda: tune.grid_search(quadratic_log_lr, {"lr": []}), ValueError, r"grid\['lr'\] is empty"),
    (lambda: tune.grid_search(quadratic_log_lr, {"lr": tune.loguniform(1e-3, 1)}), TypeError,
     "explicit list of values"),
])
def test_other_searches_validate_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


class _NoRepr:  # the default repr names a memory address: differs in every process
    pass


@pytest.mark.parametrize("call, error, match", [
    (lambda: tune.hyperband(budgeted, SPACE, 1e-300, 1e300), ValueError, "at most 100"),
    (lambda: tune.successive_halving(budgeted, SPACE, 3, 1, 1e6, eta=1.0000001), ValueError,
     "1.382e\\+08 promotions; at most 100"),
    (lambda: tune.hyperband(budgeted, SPACE, 1, 2**40, eta=2), ValueError, "would sample .* configurations"),
    (lambda: tune.randint(0, 2**70), ValueError, "randint high must fit in int64"),
    (lambda: tune.uniform(-1e308, 1e308), ValueError, "uniform needs a range whose width"),
    (lambda: tune.grid_search(quadratic_log_lr, {"lr": {0.1, 0.01}}), TypeError, r"grid\['lr'\] is a set"),
    (lambda: tune.grid_search(quadratic_log_lr, {"lr": (v for v in [0.1])}), TypeError,
     r"grid\['lr'\] is a generator"),
])
def test_search_space_extremes_are_refused_up_front(call, error, match):
    """Each used to overflow, hang building ~1e8 rungs, fail only when sampling, or treat
    a set/generator as one constant."""
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        call()
    assert time.perf_counter() - start < 60  # refused up front: the old code ran for minutes


def test_randint_and_uniform_at_their_widest_still_sample():
    rng = np.random.default_rng(0)
    assert -2**63 <= tune.randint(-2**63, 2**63 - 1).sample(rng) < 2**63
    assert abs(tune.uniform(-1e307, 1e307).sample(rng)) <= 1e307


def test_journal_refuses_a_constant_without_a_stable_repr(tmp_path):
    path = tmp_path / "j.jsonl"
    for space in ({**SPACE, "obj": _NoRepr()}, {**SPACE, "obj": tune.choice([_NoRepr(), 1])}):
        with pytest.raises(TypeError, match=r"space\['obj'\] holds <.*_NoRepr object at 0x.*journal"):
            tune.random_search(quadratic_log_lr, space, 2, seed=0, journal=path)
    assert not path.exists()
    ok = tune.random_search(lambda p: quadratic_log_lr(p), {**SPACE, "obj": _NoRepr()}, 2, seed=0)
    assert len(ok.ok_trials) == 2  # without a journal it is fine


def test_journal_refuses_a_different_context(tmp_path):
    path = tmp_path / "j.jsonl"
    first = tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path,
                               context={"training.epochs": 2, "data": "moons"})
    with pytest.raises(ValueError, match=r"different search; context.training.epochs: journal has 2, "
                                         r"this call has 40"):
        tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path,
                           context={"training.epochs": 40, "data": "moons"})
    with pytest.raises(ValueError, match="different search; context: journal has"):
        tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    again = tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, journal=path,
                               context={"training.epochs": 2, "data": "moons"})
    assert [t.value for t in again.trials[:3]] == [t.value for t in first.trials]


# --------------------------------------------------------------------------- random vs grid


def test_random_search_beats_grid_search_when_one_parameter_matters():
    """9 trials, objective depends on x only: the grid tries 3 values of x, random 9."""
    def objective(params):
        return (params["x"] - 0.37) ** 2  # y is irrelevant

    grid = tune.grid_search(objective, {"x": np.linspace(0, 1, 3), "y": np.linspace(0, 1, 3)})
    assert len(grid.trials) == 9
    assert len({t.params["x"] for t in grid.trials}) == 3
    space = {"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)}
    wins = 0
    for seed in range(100):
        rand = tune.random_search(objective, space, 9, seed=seed)
        assert len({t.params["x"] for t in rand.trials}) == 9
        wins += rand.best.value < grid.best.value
    # P(random loses) = P(no x within 0.13 of 0.37) = 0.74**9 ~ 0.067 per seed.
    assert wins >= 80, f"random search beat the grid on only {wins} of 100 seeds"


# --------------------------------------------------------------------------- coarse to fine


def test_coarse_to_fine_zooms_in_around_the_optimum():
    space = {"lr": tune.loguniform(1e-6, 1.0), "x": tune.uniform(0.0, 1.0), "act": tune.choice(["relu", "tanh"]),
             "units": tune.randint(8, 256), "fixed": 7}

    def objective(params):
        penalty = 0.0 if params["act"] == "relu" else 1.0
        return (math.log10(params["lr"]) + 3.3) ** 2 + penalty + 1e-4 * params["units"]

    result = tune.coarse_to_fine(objective, space, rounds=4, trials_per_round=12, top_k=1, shrink=0.5, seed=0)
    assert len(result.rounds) == 4 and len(result.trials) == 48
    assert [t.round for t in result.trials] == [r for r in range(4) for _ in range(12)]
    assert sorted(t.number for t in result.trials) == list(range(48))
    widths = [math.log10(b["lr"].high) - math.log10(b["lr"].low) for b in result.boxes]
    # top_k=1: the box width is exactly shrink**r times the original (in log10 space)
    np.testing.assert_allclose(widths, [6.0, 3.0, 1.5, 0.75], rtol=1e-9)
    for r in range(1, 4):
        box, prev_best = result.boxes[r], result.rounds[r - 1].best
        assert box["lr"].low <= prev_best.params["lr"] <= box["lr"].high
        assert 1e-6 <= box["lr"].low and box["lr"].high <= 1.0
        assert box["units"].low <= prev_best.params["units"] <= box["units"].high
        assert box["act"].options == [prev_best.params["act"]]
        assert box["fixed"] == 7
        assert all(box["lr"].low <= t.params["lr"] <= box["lr"].high for t in result.rounds[r].trials)
    assert result.best.value == min(t.value for t in result.trials)
    assert result.rounds[-1].best.value <= result.rounds[0].best.value
    assert abs(math.log10(result.best.params["lr"]) + 3.3) < 0.1


def test_coarse_to_fine_box_is_shifted_not_cut_at_the_original_bounds():
    space = {"lr": tune.loguniform(1e-4, 1.0), "beta": tune.one_minus_loguniform(0.9, 0.999)}
    result = tune.coarse_to_fine(lambda p: p["lr"] + (1 - p["beta"]), space, rounds=4,
                                 trials_per_round=8, top_k=1, shrink=0.9, seed=0)
    for r, box in enumerate(result.boxes):
        assert 1e-4 <= box["lr"].low < box["lr"].high <= 1.0
        assert 0.9 <= box["beta"].low < box["beta"].high <= 0.999
        # the optimum is at the corner (lr -> 1e-4, beta -> 0.999): the box is pushed against
        # both bounds and keeps its full width 0.9**r (4 and 2 decades originally)
        assert box["lr"].low == 1e-4 and box["beta"].high == pytest.approx(0.999, abs=1e-15)
        np.testing.assert_allclose(math.log10(box["lr"].high / box["lr"].low), 4 * 0.9 ** r)
        np.testing.assert_allclose(math.log10((1 - box["beta"].low) / (1 - box["beta"].high)),
                                   2 * 0.9 ** r)


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(-8, 2), decades=st.floats(0.5, 8), frac=st.floats(0, 1),
       shrink=st.floats(0.05, 1.0), top_k=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_coarse_to_fine_boxes_never_grow_nor_leave_the_space(lo, decades, frac, shrink, top_k, seed):
    target = lo + frac * decades
    space = {"lr": tune.loguniform(10 ** lo, 10 ** (lo + decades))}
    result = tune.coarse_to_fine(lambda p: abs(math.log10(p["lr"]) - target), space, rounds=3,
                                 trials_per_round=6, top_k=top_k, shrink=shrink, seed=seed)
    original = space["lr"]
    for r in range(1, 3):
        box, prev = result.boxes[r]["lr"], result.boxes[r - 1]["lr"]
        assert original.low <= box.low < box.high <= original.high
        width, prev_width = math.log10(box.high / box.low), math.log10(prev.high / prev.low)
        assert width <= prev_width * (1 + 1e-9)
        assert width >= min(shrink * prev_width, prev_width) * (1 - 1e-9)
        top = sorted(result.rounds[r - 1].trials, key=lambda t: t.value)[:top_k]
        assert all(box.low * (1 - 1e-12) <= t.params["lr"] <= box.high * (1 + 1e-12) for t in top)


# --------------------------------------------------------------------------- successive halving


def test_successive_halving_promotes_the_best_third():
    result = tune.successive_halving(budgeted, SPACE, n_trials=27, min_budget=1, max_budget=9, eta=3, seed=0)
    by_rung = {r: [t for t in result.trials if t.rung == r] for r in range(3)}
    assert [len(by_rung[r]) for r in range(3)] == [27, 9, 3]
    assert [{t.budget for t in by_rung[r]} for r in range(3)] == [{1}, {3}, {9}]
    assert all(type(t.budget) is int for t in result.trials)
    for r in (1, 2):
        previous = sorted(by_rung[r - 1], key=lambda t: t.value)
        promoted = {t.number for t in previous[:len(by_rung[r])]}
        assert {t.number for t in by_rung[r]} == promoted
        for t in by_rung[r]:  # same configuration, more budget
            same = next(p for p in by_rung[r - 1] if p.number == t.number)
            assert same.params == t.params
    assert all(len(t.reports) == t.budget and t.reports[0][0] == 0 for t in result.trials)
    assert result.best.budget == 9
    assert result.best.value == min(t.value for t in by_rung[2])


def test_successive_halving_skips_failed_configs_and_odd_budgets():
    def objective(params, budget, trial):
        if params["x"] > 0.7:
            raise RuntimeError("diverged")
        return params["x"] + 1.0 / budget

    result = tune.successive_halving(objective, SPACE, 12, min_budget=1, max_budget=10, eta=3, seed=3,
                                     direction="minimize")
    budgets = sorted({t.budget for t in result.trials})
    assert budgets == [1, 3, 10]  # floor(log3(10)) = 2 promotions, the last to max_budget
    assert all(t.ok for t in result.trials if t.rung > 0)
    assert [sum(t.rung == r for t in result.trials) for r in range(3)] == [12, 4, 1]

    floats = tune.successive_halving(objective, SPACE, 4, min_budget=0.5, max_budget=2.0, eta=2, seed=3)
    assert sorted({t.budget for t in floats.trials}) == [0.5, 1.0, 2.0]


def test_hyperband_runs_every_bracket():
    result = tune.hyperband(budgeted, SPACE, min_budget=1, max_budget=9, eta=3, seed=0)
    # s_max = 2: brackets of ceil(3/(s+1) * 3**s) = 9, 5, 3 configurations
    configs = {b: {t.number for t in result.trials if t.bracket == b} for b in range(3)}
    assert [len(configs[b]) for b in range(3)] == [9, 5, 3]
    assert not (configs[0] & configs[1]) and not (configs[1] & configs[2])
    first_budget = {b: min(t.budget for t in result.trials if t.bracket == b) for b in range(3)}
    assert first_budget == {0: 1, 1: 3, 2: 9}
    assert len(result.trials) == (9 + 3 + 1) + (5 + 1) + 3
    assert result.best.budget == 9


# --------------------------------------------------------------------------- journal


def test_journal_resumes_without_rerunning_finished_trials(tmp_path):
    path = tmp_path / "search.jsonl"
    calls = []

    def objective(params):
        calls.append(params["x"])
        if params["x"] > 0.8:
            raise ValueError("too big")
        return quadratic_log_lr(params)

    first = tune.random_search(objective, SPACE, 5, seed=7, journal=path)
    assert len(calls) == 5
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 5 and json.loads(lines[0])["seed"] == 7
    calls.clear()
    second = tune.random_search(objective, SPACE, 8, seed=7, journal=path)
    assert len(calls) == 3  # only the three new trials (failed ones are not rerun either)
    fresh = tune.random_search(objective, SPACE, 8, seed=7)
    assert [t.params for t in second.trials] == [t.params for t in fresh.trials]
    assert [t.status for t in second.trials] == [t.status for t in fresh.trials]
    assert [t.value for t in second.trials[:5]] == [t.value for t in first.trials]
    calls.clear()
    tune.random_search(objective, SPACE, 8, journal=path)  # seed=None: the journal's seed
    assert calls == []


def test_journal_keeps_the_drawn_seed(tmp_path):
    path = tmp_path / "search.jsonl"
    a = tune.random_search(quadratic_log_lr, SPACE, 3, journal=path)
    b = tune.random_search(quadratic_log_lr, SPACE, 4, journal=path)
    assert a.seed == b.seed == json.loads(path.read_text().splitlines()[0])["seed"]
    assert [t.params for t in b.trials[:3]] == [t.params for t in a.trials]


def test_journal_refuses_a_different_search(tmp_path):
    path = tmp_path / "search.jsonl"
    tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    other_space = {"lr": tune.loguniform(1e-5, 1.0), "x": tune.uniform(0.0, 1.0)}
    with pytest.raises(ValueError, match=r"different search.*space.*loguniform\(1e-05"):
        tune.random_search(quadratic_log_lr, other_space, 3, seed=0, journal=path)
    with pytest.raises(ValueError, match="seed=0.*seed=1"):
        tune.random_search(quadratic_log_lr, SPACE, 3, seed=1, journal=path)
    with pytest.raises(ValueError, match="written by random_search, not coarse_to_fine"):
        tune.coarse_to_fine(quadratic_log_lr, SPACE, seed=0, journal=path)
    not_journal = tmp_path / "other.jsonl"
    not_journal.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="not a pydl.tune journal"):
        tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=not_journal)


def test_journal_tolerates_only_a_partial_last_line(tmp_path):
    path = tmp_path / "search.jsonl"
    tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    good = path.read_bytes()
    path.write_bytes(good + b'{"kind": "trial", "number": 3, "par')
    calls = []

    def objective(params):
        calls.append(1)
        return quadratic_log_lr(params)

    with pytest.warns(RuntimeWarning, match="partially written last line"):
        result = tune.random_search(objective, SPACE, 5, seed=0, journal=path)
    assert len(calls) == 2 and len(result.trials) == 5
    records = [json.loads(line) for line in path.read_text().splitlines()]  # all valid again
    assert [r["number"] for r in records[1:]] == [0, 1, 2, 3, 4]

    lines = good.splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1] + b"garbage\n" + lines[2])
    with pytest.raises(ValueError, match="line 3 is corrupt"):
        tune.random_search(objective, SPACE, 5, seed=0, journal=path)
    path.write_bytes(good + b'{"kind": "trial", "number": 3}\n')  # complete line: not a partial write
    with pytest.raises(ValueError, match="line 5 is corrupt"):
        tune.random_search(objective, SPACE, 5, seed=0, journal=path)
    other = tmp_path / "notes.txt"  # a wrong path is refused, never truncated
    other.write_bytes(b"my notes")
    with pytest.raises(ValueError, match="line 1 is corrupt"):
        tune.random_search(objective, SPACE, 5, seed=0, journal=other)
    assert other.read_bytes() == b"my notes"


def test_journal_skips_blank_lines_and_cuts_nul_bytes_left_by_a_crash(tmp_path):
    path = tmp_path / "search.jsonl"
    tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"\n" + lines[1] + b"  \n" + b"".join(lines[2:]) + b"\n")
    calls = []

    def objective(params):
        calls.append(1)
        return quadratic_log_lr(params)

    assert len(tune.random_search(objective, SPACE, 3, seed=0, journal=path).trials) == 3
    assert calls == []
    good = path.read_bytes()
    path.write_bytes(good + b"\x00" * 4096)
    with pytest.warns(RuntimeWarning, match=r"removing 409\d NUL and blank bytes"):
        result = tune.random_search(objective, SPACE, 4, seed=0, journal=path)
    assert len(calls) == 1 and len(result.trials) == 4
    assert path.read_bytes().startswith(good.rstrip(b"\n")) and b"\x00" not in path.read_bytes()


@pytest.mark.parametrize("field, value, message", [
    ("value", "abc", "its value is 'abc', not int or float"),
    ("value", None, "its value is None"),
    ("number", 1.5, "its number is 1.5, not int"),
    ("params", [1], "its params is \\[1\\], not dict"),
    ("reports", [[1, "x"]], "its reports are .*, not \\[step, value\\] pairs"),
    ("budget", "9", "its budget is '9'"),
])
def test_journal_records_of_the_wrong_type_are_corrupt_lines(tmp_path, field, value, message):
    """A hand-edited value of the wrong type was accepted, and result.best failed later with
    a TypeError that did not mention the journal."""
    path = tmp_path / "search.jsonl"
    tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record[field] = value
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"line 3 is corrupt \\({message}"):
        tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, journal=path)
    assert path.read_bytes() == before


def test_a_journal_in_use_by_another_search_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "search.jsonl"
    tune.random_search(quadratic_log_lr, SPACE, 2, seed=0, journal=path)
    before = path.read_bytes()
    with open(path, "a") as held:  # another process's search, as far as flock can tell
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="is in use by another search"):
            tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, journal=path)
        assert path.read_bytes() == before
    assert len(tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, journal=path).trials) == 4


def test_journal_resumes_coarse_to_fine_and_successive_halving(tmp_path):
    calls = []

    def objective(params, budget=None, trial=None):
        calls.append(1)
        return budgeted(params, budget, trial) if trial is not None else quadratic_log_lr(params)

    c2f = tune.coarse_to_fine(objective, SPACE, rounds=3, trials_per_round=5, seed=0, journal=tmp_path / "c.jsonl")
    sh = tune.successive_halving(objective, SPACE, 9, 1, 9, seed=0, journal=tmp_path / "s.jsonl")
    calls.clear()
    c2f_again = tune.coarse_to_fine(objective, SPACE, rounds=3, trials_per_round=5, seed=0,
                                    journal=tmp_path / "c.jsonl")
    sh_again = tune.successive_halving(objective, SPACE, 9, 1, 9, seed=0, journal=tmp_path / "s.jsonl")
    assert calls == []
    assert c2f_again.boxes == c2f.boxes
    assert [(t.number, t.budget, t.value, t.reports) for t in sh_again.trials] == \
        [(t.number, t.budget, t.value, t.reports) for t in sh.trials]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import pydl.tune as tune

    def objective(params):
        with open(sys.argv[2], "a") as f:  # one line per call, written when the call starts
            f.write(repr(params["x"]) + "\\n")
        time.sleep(0.25)
        return params["x"]

    if __name__ == "__main__":
        space = {"x": tune.uniform(0, 1), "lr": tune.loguniform(1e-4, 1)}
        result = tune.random_search(objective, space, 8, seed=11, journal=sys.argv[1])
        print(len(result.ok_trials))
""")


def test_killed_search_resumes_from_the_journal(tmp_path):
    script, journal, calls = tmp_path / "search.py", tmp_path / "search.jsonl", tmp_path / "calls.txt"
    script.write_text(KILL_SCRIPT)
    cmd = [sys.executable, str(script), str(journal), str(calls)]
    proc = subprocess.Popen(cmd, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for 3 finished trials (+ the header)
        if journal.exists() and journal.read_text().count("\n") >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = []
    for line in journal.read_text().splitlines()[1:]:
        try:
            finished.append(json.loads(line))
        except ValueError:  # killed while writing this line
            pass
    assert 3 <= len(finished) < 8, "the search must be killed part-way"

    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "8"
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert sorted(r["number"] for r in records) == list(range(8))
    started = [float(line) for line in calls.read_text().split()]
    for record in finished:  # finished before the kill: called exactly once
        assert started.count(record["params"]["x"]) == 1, record
    assert len(set(started)) == 8


# --------------------------------------------------------------------------- parallel


def test_n_jobs_runs_in_single_threaded_worker_processes(tmp_path):
    inline = tune.random_search(quadratic_log_lr, SPACE, 6, seed=4)
    result = tune.random_search(worker_info, SPACE, 6, seed=4, n_jobs=2, journal=tmp_path / "p.jsonl")
    assert [t.params for t in result.trials] == [t.params for t in inline.trials]
    assert [t.value for t in result.trials] == [t.value for t in inline.trials]
    pids = {t.metrics["pid"] for t in result.trials}
    assert os.getpid() not in pids and len(pids) == 2
    assert {t.metrics["blas_threads"] for t in result.trials} <= {1, None}
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1 + 6

    failing = tune.random_search(fails_for_large_x, SPACE, 6, seed=4, n_jobs=2)
    assert [t.ok for t in failing.trials] == [t.params["x"] <= 0.5 for t in failing.trials]
    assert all(t.error.startswith("ValueError: x=") for t in failing.trials if not t.ok)


def pid_of_worker(params):
    time.sleep(0.1)  # long enough that both workers get trials
    return {"dev_loss": params["x"], "pid": os.getpid(), "threads": pydl.get_num_threads()}


def exits_the_worker(params):
    if params["x"] > 0.5:
        os._exit(3)  # the process dies, as on a crash or an out-of-memory kill
    return params["x"]


def dies_at_one_x(params):
    time.sleep(0.1)
    if params["x"] == 3:
        os._exit(3)  # as the out-of-memory killer would end it
    return params["x"]


def test_a_worker_that_dies_fails_its_own_trials_only(no_kept_workers):
    """The dead worker breaks the pool; new workers run the trials that had not started. Only
    the trials running at that moment (at most n_jobs) fail, not journaled."""
    result = tune.grid_search(dies_at_one_x, {"x": list(range(10))}, n_jobs=2)
    failed = [t for t in result.trials if not t.ok]
    assert 1 <= len(failed) <= 2 and any(t.params["x"] == 3 for t in failed)
    assert all("worker process died" in t.error for t in failed)
    assert sorted(t.value for t in result.trials if t.ok) == sorted(
        x for x in range(10) if x not in {t.params["x"] for t in failed})


def test_a_worker_that_dies_while_trials_are_submitted_does_not_end_the_search(
        monkeypatch, no_kept_workers):
    """A worker that dies before the last trial is submitted (an objective that crashes at
    once) breaks the pool under the submitting loop: submit raises. The trials not yet
    submitted never started, so new workers run them; only the running ones fail."""
    submit, calls = tune._OwnWorkers.submit, []

    def breaks_before_the_third(self, fn, *args):
        calls.append(1)
        if len(calls) == 3:
            victim = next(iter(self.pool._processes.values()))
            os.kill(victim.pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while not self.pool._broken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert self.pool._broken
        return submit(self, fn, *args)

    monkeypatch.setattr(tune._OwnWorkers, "submit", breaks_before_the_third)
    result = tune.random_search(pid_of_worker, SPACE, 8, seed=1, n_jobs=2)
    failed = [t for t in result.trials if not t.ok]
    assert len(result.trials) == 8 and 1 <= len(failed) <= 2
    assert all("worker process died" in t.error for t in failed)
    assert all(t.number < 2 for t in failed), "only trials submitted before the break can fail"
    assert len(calls) > 8, "the unsubmitted trials went to new workers"


def test_a_trial_queued_as_its_pool_breaks_does_not_hang_the_search(monkeypatch, no_kept_workers):
    """CPython's pool fails its pending futures without the submit lock: a submit racing the
    break can queue a trial after that, whose future nothing will ever settle. The search must
    not wait for it forever; the trial never started, so new workers run it."""
    import concurrent.futures.process as cfp

    submit, calls = tune._OwnWorkers.submit, []

    def queued_after_the_break(self, fn, *args):
        calls.append(1)
        if len(calls) != 3:
            return submit(self, fn, *args)
        pool = self.pool
        os.kill(next(iter(pool._processes.values())).pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while (not pool._broken or pool._executor_manager_thread.is_alive()) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool._broken and not pool._executor_manager_thread.is_alive()
        future = concurrent.futures.Future()  # what the racing submit leaves behind
        pool._pending_work_items[pool._queue_count] = cfp._WorkItem(future, fn, args, {})
        pool._queue_count += 1
        return future

    monkeypatch.setattr(tune._OwnWorkers, "submit", queued_after_the_break)
    results = []
    search = threading.Thread(target=lambda: results.append(
        tune.random_search(pid_of_worker, SPACE, 6, seed=1, n_jobs=2)), daemon=True)
    search.start()
    search.join(30)
    assert not search.is_alive(), "the search waits forever for a trial its broken pool dropped"
    trials = results[0].trials
    assert len(trials) == 6 and trials[2].ok, "the dropped trial went to new workers"
    assert all(t.number < 2 for t in trials if not t.ok)


def test_workers_that_fail_to_start_say_why_instead_of_dying(monkeypatch, no_kept_workers):
    """A worker whose initializer raises (here: more threads than pydl.set_num_threads takes,
    let past the search's own check) would exit and break every new pool: each trial
    'died', as if killed, the cause hidden."""
    with pytest.raises(ValueError, match="threads_per_worker must be <= "):
        tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, n_jobs=2, threads_per_worker=10**6)
    monkeypatch.setattr(tune, "_check_threads", lambda threads: threads)
    with pytest.raises(RuntimeError, match="worker processes failed to start.*must be <="):
        tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, n_jobs=2, threads_per_worker=10**6)


def _exit_on_load():
    raise SystemExit(2)  # as a module's sys.exit() or argparse error at import


class ExitsOnLoad:
    def __call__(self, params):
        return 0.0

    def __reduce__(self):
        return (_exit_on_load, ())


def test_an_objective_whose_import_exits_is_reported_not_exiting_the_search(no_kept_workers):
    with pytest.raises(TypeError, match="could not load the objective.*SystemExit"):
        tune.random_search(ExitsOnLoad(), SPACE, 2, seed=0, n_jobs=2)


def test_a_ctrl_c_while_the_kept_workers_are_taken_or_given_back_does_not_leave_them_busy(
        monkeypatch, no_kept_workers):
    """Ctrl-C between acquiring the kept workers and binding them, or inside their release:
    they are stopped, not left marked busy (every later search would then start workers of
    its own, and shutdown_workers() would refuse)."""
    init = tune._OwnWorkers.__init__

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune._OwnWorkers, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune.random_search(pid_of_worker, SPACE, 2, seed=1, n_jobs=2)
    assert not tune._workers["busy"] and tune._workers["pool"] is None
    monkeypatch.setattr(tune._OwnWorkers, "__init__", init)

    release = tune._release_pool

    def interrupted_once(pool, ok):
        monkeypatch.setattr(tune, "_release_pool", release)
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "_release_pool", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        tune.random_search(pid_of_worker, SPACE, 4, seed=2, n_jobs=2)
    assert not tune._workers["busy"] and tune._workers["pool"] is None
    kept = _pids(tune.random_search(pid_of_worker, SPACE, 4, seed=3, n_jobs=2))
    assert tune._workers["pool"] is not None and not tune._workers["busy"]
    tune.shutdown_workers()
    assert _wait_gone(kept)


def _pids(result):
    return {t.metrics["pid"] for t in result.trials if t.ok}


def _alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # an exited child not yet reaped is a zombie
            return f.read().split(")")[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _wait_gone(pids, seconds=20):
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(pid) for pid in pids)


@pytest.fixture
def no_kept_workers():
    tune.shutdown_workers()
    yield
    tune.shutdown_workers()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_worker_processes_are_kept_between_searches_and_replaced_when_they_must_be(
        monkeypatch, tmp_path, no_kept_workers):
    first = tune.random_search(pid_of_worker, SPACE, 6, seed=1, n_jobs=2)
    kept = _pids(first)
    assert 1 <= len(kept) <= 2 and os.getpid() not in kept
    assert {t.metrics["threads"] for t in first.trials} == {1}
    kept |= set(tune._workers["pool"]._processes)  # a worker that started late ran no trial
    again = tune.random_search(pid_of_worker, SPACE, 6, seed=2, n_jobs=2)
    assert _pids(again) and _pids(again) <= kept, "the same settings reuse the workers"
    kept = _pids(first) | _pids(again)
    # another working directory: new workers (they resolve relative paths from it)
    monkeypatch.chdir(tmp_path)
    moved = tune.random_search(pid_of_worker, SPACE, 4, seed=2, n_jobs=2)
    assert not _pids(moved) & kept
    kept = _pids(moved)
    # other threads per worker: new workers, the kept ones stop
    two = tune.random_search(pid_of_worker, SPACE, 4, seed=3, n_jobs=2, threads_per_worker=2)
    assert not _pids(two) & kept and {t.metrics["threads"] for t in two.trials} == {2}
    assert _wait_gone(kept)
    # a worker that dies: its trials fail, the search goes on, and the next one gets new workers
    kept = _pids(tune.random_search(pid_of_worker, SPACE, 4, seed=3, n_jobs=2))
    crashed = tune.random_search(exits_the_worker, SPACE, 6, seed=4, n_jobs=2)
    assert any(t.error and "worker process died" in t.error for t in crashed.trials)
    after = tune.random_search(pid_of_worker, SPACE, 4, seed=5, n_jobs=2)
    assert all(t.ok for t in after.trials) and not _pids(after) & kept
    # an error in the search stops the workers
    kept = _pids(after)
    with pytest.raises(TypeError):
        tune.random_search(LoadsOnlyInTheParent(), SPACE, 2, n_jobs=2)
    assert not _pids(tune.random_search(pid_of_worker, SPACE, 4, seed=6, n_jobs=2)) & kept
    # idle workers exit after WORKER_IDLE_TIMEOUT, and at shutdown_workers()
    monkeypatch.setattr(tune, "WORKER_IDLE_TIMEOUT", 0.3)
    kept = _pids(tune.random_search(pid_of_worker, SPACE, 4, seed=7, n_jobs=2))
    assert _wait_gone(kept), "idle workers must exit"
    monkeypatch.setattr(tune, "WORKER_IDLE_TIMEOUT", 300.0)
    kept = _pids(tune.random_search(pid_of_worker, SPACE, 4, seed=8, n_jobs=2))
    tune.shutdown_workers()
    assert _wait_gone(kept)


def sleeps(params):
    time.sleep(0.5)
    return {"dev_loss": params["x"], "pid": os.getpid()}


def test_two_searches_at_once_in_two_threads_each_get_workers(no_kept_workers):
    results = {}
    start = threading.Barrier(2)

    def search(seed):  # 4 trials of 0.5 s on 2 workers: both searches surely overlap
        start.wait()
        results[seed] = tune.random_search(sleeps, SPACE, 4, seed=seed, n_jobs=2)

    threads = [threading.Thread(target=search, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (1, 2):
        inline = tune.random_search(fails_for_large_x, SPACE, 4, seed=seed)
        assert [t.params for t in results[seed].trials] == [t.params for t in inline.trials]
        assert all(t.ok for t in results[seed].trials)
    assert not _pids(results[1]) & _pids(results[2]), "one of them ran on workers of its own"


def test_workers_are_replaced_when_the_objective_module_changes(tmp_path, monkeypatch,
                                                                 no_kept_workers):
    module = tmp_path / "edited_objective.py"
    module.write_text("import os\ndef objective(p):\n    return {'dev_loss': 1.0, 'pid': os.getpid()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_objective

    first = tune.random_search(edited_objective.objective, SPACE, 2, seed=0, n_jobs=2)
    assert {t.value for t in first.trials} == {1.0}
    module.write_text("import os\ndef objective(p):\n    return {'dev_loss': 2.0, 'pid': os.getpid()}\n")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime, surely
    importlib.reload(edited_objective)
    second = tune.random_search(edited_objective.objective, SPACE, 2, seed=0, n_jobs=2)
    assert {t.value for t in second.trials} == {2.0}, "workers must not keep the old module"
    assert not _pids(first) & _pids(second)


LIFECYCLE_SCRIPT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    import pydl.tune as tune

    def objective(params):
        return {"dev_loss": params["x"], "pid": os.getpid()}

    SPACE = {"x": tune.uniform(0, 1)}

    def search_in_child():
        tune.random_search(objective, SPACE, 2, seed=0, n_jobs=2)

    if __name__ == "__main__":
        if sys.argv[1] == "child":  # a multiprocessing child that searches must exit
            p = multiprocessing.get_context("spawn").Process(target=search_in_child)
            p.start()
            p.join(60)
            print("exitcode", p.exitcode, flush=True)
            if p.exitcode is None:
                p.kill()
        elif sys.argv[1] == "fork":  # a forked child must not wait on the parent's workers
            # (its search may still fail: multiprocessing's forkserver belongs to the parent)
            tune.random_search(objective, SPACE, 2, seed=0, n_jobs=2)
            pid = os.fork()
            if pid == 0:
                try:
                    tune.random_search(objective, SPACE, 2, seed=1, n_jobs=2)
                finally:
                    os._exit(0)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    print("child status", os.waitstatus_to_exitcode(status), flush=True)
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, 9)
                print("child hung", flush=True)
            tune.shutdown_workers()
        else:  # killed without clean-up: the kept workers must exit by themselves
            r = tune.random_search(objective, SPACE, 4, seed=0, n_jobs=2)
            print(" ".join(str(t.metrics["pid"]) for t in r.trials), flush=True)
            os._exit(0)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat") or not hasattr(os, "fork"),
                    reason="POSIX with /proc")
@pytest.mark.parametrize("case", ["child", "fork", "killed"])
def test_kept_workers_never_hang_or_outlive_their_process(tmp_path, case):
    script = tmp_path / "lifecycle.py"
    script.write_text(LIFECYCLE_SCRIPT)
    out = subprocess.run([sys.executable, str(script), case], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if case == "child":
        assert out.stdout.split() == ["exitcode", "0"], out.stdout + out.stderr
    elif case == "fork":  # it returned or raised, but did not hang
        assert out.stdout.split() == ["child", "status", "0"], out.stdout + out.stderr
    else:
        pids = {int(p) for p in out.stdout.split()}
        assert pids and _wait_gone(pids, 20), "kept workers outlived their process"


def _refuse_to_load():
    raise RuntimeError("not importable here")


class LoadsOnlyInTheParent:
    """Pickles fine, fails to unpickle (like a notebook function in a worker)."""

    def __call__(self, params):
        return 0.0

    def __reduce__(self):
        return (_refuse_to_load, ())


def test_n_jobs_needs_an_objective_the_workers_can_load():
    with pytest.raises(TypeError, match="objective must be picklable"):
        tune.random_search(lambda p: p["x"], SPACE, 2, n_jobs=2)
    with pytest.raises(TypeError, match="workers? processes could not load the objective.*not importable here"):
        tune.random_search(LoadsOnlyInTheParent(), SPACE, 2, n_jobs=2)


def test_dask_executor_on_a_local_cluster():
    from dask.distributed import Client, LocalCluster

    inline = tune.successive_halving(budgeted, SPACE, 9, 1, 3, seed=8)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        executor = client.get_executor()
        result = tune.random_search(worker_info, SPACE, 4, seed=4, executor=executor)
        sh = tune.successive_halving(budgeted, SPACE, 9, 1, 3, seed=8, executor=executor)
        closure = tune.random_search(lambda p: p["x"] * 2, SPACE, 2, seed=0, executor=executor)
    assert [t.value for t in result.trials] == \
        [t.value for t in tune.random_search(quadratic_log_lr, SPACE, 4, seed=4).trials]
    assert os.getpid() not in {t.metrics["pid"] for t in result.trials}
    assert [(t.number, t.budget, t.value, t.reports) for t in sh.trials] == \
        [(t.number, t.budget, t.value, t.reports) for t in inline.trials]
    assert [t.value for t in closure.trials] == [2 * t.params["x"] for t in closure.trials]


def test_kill_stops_running_workers_at_once():
    """Ctrl-C during a search with n_jobs > 1 ends in _kill: the trials running then must
    stop, not run to their end (shutdown forgets the processes, so they are taken first)."""
    import time

    from pydl import tune as t
    pool = t._new_pool(2, 1)
    for _ in range(2):
        pool.submit(time.sleep, 30)
    deadline = time.monotonic() + 20
    while len(pool._processes or {}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = list(pool._processes.values())
    assert len(processes) == 2
    start = time.monotonic()
    t._kill(pool)
    for p in processes:
        p.join(timeout=10)
    assert not any(p.is_alive() for p in processes)
    assert time.monotonic() - start < 10          # not the 30 s of the trials


class _FailingExecutor(concurrent.futures.Executor):
    """An executor whose futures all fail (as Dask's do for a killed worker)."""

    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_exception(RuntimeError("KilledWorker: the worker died"))
        return future


class _CachingExecutor(concurrent.futures.Executor):
    """Runs each call inline, and hands back the earlier future of a call with the same
    arguments (as Dask's pure tasks do while their futures live)."""

    def __init__(self):
        self.cache = {}

    def submit(self, fn, *args, **kwargs):
        import pickle

        key = pickle.dumps((fn, args))
        if key not in self.cache:
            future = concurrent.futures.Future()
            future.set_result(fn(*args, **kwargs))
            self.cache[key] = future
        return self.cache[key]


_CALLS = []


def counted(params):
    _CALLS.append(params["x"])
    return params["x"]


def test_a_search_on_an_executor_that_caches_calls_runs_every_trial_afresh():
    """The same trials searched again (a resumed search whose trials were not journaled, or
    an objective edited since) run again: no result of an earlier search comes back."""
    executor = _CachingExecutor()
    _CALLS.clear()
    first = tune.random_search(counted, SPACE, 3, seed=0, executor=executor)
    second = tune.random_search(counted, SPACE, 3, seed=0, executor=executor)
    assert len(_CALLS) == 6 and len(executor.cache) == 6
    assert [t.value for t in second.trials] == [t.value for t in first.trials]


class _StoppedExecutor(concurrent.futures.Executor):
    """Runs the first trial, then is shut down: the futures of the rest are cancelled (as
    Dask's are when the client closes)."""

    def __init__(self):
        self.submitted = 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        future = concurrent.futures.Future()
        if self.submitted == 1:
            future.set_result(fn(*args, **kwargs))
        else:
            future.cancel()
            future.set_running_or_notify_cancel()  # as an executor's worker does
        return future


def test_an_executor_shut_down_during_a_search_ends_it_and_keeps_the_finished_trials(tmp_path):
    journal = tmp_path / "j.jsonl"
    with pytest.raises(RuntimeError, match=r"the executor cancelled trial \d+ \(was it shut down"):
        tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, executor=_StoppedExecutor(),
                           journal=journal)
    trials = [rec for rec in map(json.loads, journal.read_text().splitlines()) if "number" in rec]
    assert len(trials) == 1 and trials[0]["status"] == "ok"
    resumed = tune.random_search(quadratic_log_lr, SPACE, 4, seed=0, journal=journal)
    assert [t.status for t in resumed.trials] == ["ok"] * 4
    assert [t.value for t in resumed.trials] == \
        [t.value for t in tune.random_search(quadratic_log_lr, SPACE, 4, seed=0).trials]
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(1 for rec in lines if "number" in rec) == 4


class _InlineExecutor(concurrent.futures.Executor):
    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _ClientLike:
    """Has submit and get_executor, as dask.distributed.Client does, but is no Executor."""

    def submit(self, fn, *args, **kwargs):
        raise AssertionError("never called")

    def get_executor(self):
        return _InlineExecutor()


def test_an_executor_argument_that_is_not_an_executor_is_named_with_the_way_on():
    with pytest.raises(TypeError, match=r"executor must be a concurrent.futures.Executor, got "
                                        r"_ClientLike: pass its executor, client.get_executor\(\)"):
        tune.random_search(quadratic_log_lr, SPACE, 2, executor=_ClientLike())
    with pytest.raises(ValueError, match=r"not both \(got n_jobs=-1 and an executor\)"):
        tune.random_search(quadratic_log_lr, SPACE, 2, n_jobs=-1, executor=_InlineExecutor())


def test_an_executor_whose_workers_cannot_load_the_objective_says_why():
    with pytest.raises(TypeError, match="could not load the objective.*not importable here.*"
                                        "importable on the executor's workers"):
        tune.random_search(LoadsOnlyInTheParent(), SPACE, 2, executor=_InlineExecutor())
    closure = tune.random_search(lambda p: 2 * p["x"], SPACE, 2, seed=0, executor=_InlineExecutor())
    assert [t.value for t in closure.trials] == [2 * t.params["x"] for t in closure.trials]


def test_a_foreign_executor_whose_futures_fail_fails_those_trials():
    result = tune.random_search(quadratic_log_lr, SPACE, 3, seed=0, executor=_FailingExecutor())
    assert [t.status for t in result.trials] == ["failed"] * 3
    assert all("KilledWorker" in t.error for t in result.trials)
