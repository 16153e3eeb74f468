"""Tests for pydl.data: split, Standardizer, minibatches (incl. memory-mapped), augmentation."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings, strategies as st

from pydl.data import (Compose, GaussianNoise, HorizontalFlip, RandomRotation, RandomShift,
                       Standardizer, minibatches, train_dev_test_split)
from pydl.data import _rotate_images


def assert_close(actual, expected, atol, what):
    """assert_allclose that reports the worst element and its coordinates."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return
    diff = np.abs(actual - expected)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff[worst] <= atol, (f"{what}: worst |diff| {diff[worst]:.3g} at {worst}: "
                                 f"{actual[worst]} vs {expected[worst]}")


def id_data(m, n=3):
    """X (m, n) whose column 0 is the row id, y = id % 5 (so pairs can be checked)."""
    X = np.arange(m * n, dtype=np.float64).reshape(m, n)
    X[:, 0] = np.arange(m)
    return X, np.arange(m) % 5


# ---------------------------------------------------------------- train/dev/test split

@pytest.mark.parametrize("m, sizes", [
    (3, (1, 1, 1)),
    (10, (6, 2, 2)),
    (100, (60, 20, 20)),
    (101, (61, 20, 20)),
    (50_000, (30_000, 10_000, 10_000)),
    (50_004, (30_004, 10_000, 10_000)),
    (1_000_000, (980_000, 10_000, 10_000)),
])
def test_split_auto_sizes(m, sizes):
    X = np.zeros((m, 1), np.float32)
    y = np.zeros(m, np.int64)
    Xtr, ytr, Xd, yd, Xte, yte = train_dev_test_split(X, y, seed=0)
    assert (len(Xtr), len(Xd), len(Xte)) == sizes
    assert (len(ytr), len(yd), len(yte)) == sizes
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(m=st.integers(3, 300), w=st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_split_is_a_partition_with_requested_sizes(m, w, seed):
    ratios = tuple(v / sum(w) for v in w)
    X, y = id_data(m)
    try:
        parts = train_dev_test_split(X, y, ratios=ratios, seed=seed)
    except ValueError as e:  # only legitimate when rounding up dev/test leaves no train row
        assert "leave no training rows" in str(e)
        assert max(1, int(ratios[1] * m)) + max(1, int(ratios[2] * m)) >= m
        return
    Xtr, ytr, Xd, yd, Xte, yte = parts
    n_dev, n_test = (max(1, int(np.floor(r * m + 1e-9))) for r in ratios[1:])
    assert (len(Xd), len(Xte), len(Xtr)) == (n_dev, n_test, m - n_dev - n_test)
    ids = np.concatenate([Xtr[:, 0], Xd[:, 0], Xte[:, 0]])
    assert np.array_equal(np.sort(ids), np.arange(m))  # every row exactly once
    for Xs, ys in ((Xtr, ytr), (Xd, yd), (Xte, yte)):
        assert np.array_equal(ys, Xs[:, 0].astype(int) % 5)  # rows stay paired
        assert np.array_equal(Xs, X[Xs[:, 0].astype(int)])


def test_split_explicit_ratios_exact_counts():
    X, y = id_data(100)
    parts = train_dev_test_split(X, y, ratios=(0.7, 0.15, 0.15), seed=1)
    assert [len(p) for p in parts] == [70, 70, 15, 15, 15, 15]
    parts = train_dev_test_split(X, y, ratios=(1.0, 0.0, 0.0), seed=1)
    assert [len(p) for p in parts] == [100, 100, 0, 0, 0, 0]
    assert parts[2].shape == (0, 3)


def test_split_seeded_and_shuffled():
    X, y = id_data(200)
    a = train_dev_test_split(X, y, seed=3)
    b = train_dev_test_split(X, y, seed=3)
    c = train_dev_test_split(X, y, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0][:, 0], np.arange(120))  # shuffled, not the first rows
    # dev and test come from the same shuffled pool: both span the whole id range
    for part in (a[2], a[4]):
        assert part[:, 0].min() < 50 and part[:, 0].max() > 150


def test_split_no_shuffle_keeps_order():
    X, y = id_data(10)
    Xtr, ytr, Xd, yd, Xte, yte = train_dev_test_split(X, y, shuffle=False)
    assert np.array_equal(Xtr[:, 0], np.arange(6))
    assert np.array_equal(Xd[:, 0], [6, 7]) and np.array_equal(Xte[:, 0], [8, 9])
    assert np.array_equal(yte, [3, 4])


@pytest.mark.parametrize("seed", range(8))
def test_split_stratified_keeps_class_proportions(seed):
    m = 3000
    y = np.repeat([0, 1, 2, 3], [1800, 750, 300, 150])
    y = np.random.default_rng(100 + seed).permutation(y)
    X = np.arange(m, dtype=np.float64)[:, None]
    Xtr, ytr, Xd, yd, Xte, yte = train_dev_test_split(X, y, stratify=True, seed=seed)
    p = np.bincount(y) / m
    for name, ys, Xs in (("train", ytr, Xtr), ("dev", yd, Xd), ("test", yte, Xte)):
        counts = np.bincount(ys, minlength=4)
        worst = np.max(np.abs(counts - len(ys) * p))
        # an unstratified random split is off by ~sqrt(n p (1 - p)) ~ 10 rows here
        assert worst <= 2.0, f"{name}: class counts {counts}, expected {len(ys) * p}"
        assert np.array_equal(ys, y[Xs[:, 0].astype(int)])
    assert np.array_equal(np.sort(np.concatenate([Xtr, Xd, Xte])[:, 0]), np.arange(m))
    # the splits are shuffled, not sorted by class
    assert np.any(np.diff(ytr) < 0) and np.any(np.diff(yd) < 0)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(X=np.zeros(10), y=np.zeros(10)), ValueError, "X must be 2-D"),
    (dict(X=np.zeros((120, 2)), y=np.zeros(100)), ValueError,
     "y has 100 rows but X has 120; they must match"),
    (dict(X=np.zeros((2, 2)), y=np.zeros(2)), ValueError, "X has 2 rows"),
    (dict(ratios=(0.5, 0.3, 0.3)), ValueError, "ratios must sum to 1"),
    (dict(ratios=(0.6, 0.2)), ValueError, "ratios must have 3 entries"),
    (dict(ratios=(1.2, -0.1, -0.1)), ValueError, "ratios must be non-negative"),
    (dict(ratios=(0.0, 0.5, 0.5)), ValueError, "ratios: the train ratio must be > 0"),
    (dict(ratios="half"), ValueError, "ratios must be \"auto\""),
    (dict(ratios=5), TypeError, "ratios must be"),
    (dict(stratify=True, y=np.linspace(0, 1, 20)), TypeError, "stratify=True needs integer"),
    (dict(stratify=True, shuffle=False), ValueError, "stratify=True requires shuffle=True"),
    (dict(seed="abc"), TypeError, "seed must be"),
    (dict(shuffle="yes"), TypeError, "shuffle must be a bool"),
])
def test_split_bad_input(kwargs, exc, match):
    args = dict(X=np.zeros((20, 2)), y=np.arange(20) % 2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        train_dev_test_split(**args)


def test_split_small_ratios_round_up_to_one_row():
    parts = train_dev_test_split(np.zeros((3, 1)), np.zeros(3), ratios=(0.98, 0.01, 0.01))
    assert [len(p) for p in parts[::2]] == [1, 1, 1]


def test_split_ratios_leaving_no_train_rows():
    with pytest.raises(ValueError, match="ratios .* leave no training rows"):
        train_dev_test_split(np.zeros((3, 1)), np.zeros(3), ratios=(0.1, 0.8, 0.1))


# ---------------------------------------------------------------- Standardizer

def test_standardizer_matches_numpy_reference():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((500, 6)) * [1, 10, 0.1, 3, 1, 1] + [0, 5, -2, 100, 0, 0])
    X[:, 4] = 7.3   # constant feature
    X[:, 5] = 0.1   # constant whose float mean/std can round to a tiny non-zero
    X = X.astype(np.float32)
    s = Standardizer().fit(X)
    X64 = X.astype(np.float64)
    ref_mean = X64.sum(axis=0) / len(X64)
    ref_std = np.sqrt(((X64 - ref_mean) ** 2).sum(axis=0) / len(X64))  # ddof=0
    ref_std[4:] = 1.0
    assert_close(s.mean_, ref_mean, 1e-12, "mean_")
    assert_close(s.scale_, ref_std, 1e-12, "scale_")
    Z = s.transform(X)
    assert Z.dtype == np.float32 and Z.shape == X.shape
    assert np.all(np.isfinite(Z))
    assert_close(Z, (X64 - ref_mean) / ref_std, 1e-5, "transform")
    assert_close(Z[:, :4].mean(axis=0), np.zeros(4), 1e-5, "standardized mean")
    assert_close(Z[:, :4].std(axis=0), np.ones(4), 1e-5, "standardized std")
    assert_close(Z[:, 4:], 0.0 * Z[:, 4:], 1e-5, "constant features centred")
    assert_close(s.inverse_transform(Z), X, 1e-3, "inverse_transform")


def test_standardizer_dev_uses_train_statistics():
    rng = np.random.default_rng(1)
    Xtr = rng.standard_normal((200, 3))
    Xdev = rng.standard_normal((50, 3)) * 2 + 1
    s = Standardizer()
    Ztr = s.fit_transform(Xtr)
    assert Ztr.dtype == np.float64
    assert_close(s.transform(Xdev), (Xdev - Xtr.mean(0)) / Xtr.std(0), 1e-12, "dev transform")
    assert not np.allclose(s.transform(Xdev).mean(axis=0), 0, atol=0.1)
    # integer input -> float32 output
    assert s.transform(np.ones((2, 3), np.int64)).dtype == np.float32


def test_standardizer_state_roundtrip_through_npz(tmp_path):
    X = np.random.default_rng(2).standard_normal((40, 5)).astype(np.float32)
    s = Standardizer().fit(X)
    st_ = s.state()
    assert set(st_) == {"mean", "scale"} and st_["mean"].shape == (5,)
    np.savez(tmp_path / "s.npz", **{"std." + k: v for k, v in st_.items()})
    with np.load(tmp_path / "s.npz") as d:
        t = Standardizer.from_state({"mean": d["std.mean"], "scale": d["std.scale"]})
    assert np.array_equal(t.transform(X), s.transform(X))
    st_["mean"][:] = 99  # state() returns copies
    assert not np.any(s.mean_ == 99)
    assert repr(t) == "Standardizer(n_features=5)"
    assert repr(Standardizer()) == "Standardizer(not fitted)"


@pytest.mark.parametrize("state, match", [
    ({"mean": np.zeros(3)}, "keys 'mean' and 'scale'"),
    ({"mean": np.zeros(3), "scale": np.ones(4)}, r"state\['mean'\] has shape \(3,\)"),
    ({"mean": np.zeros((3, 1)), "scale": np.ones(3)}, r"state\['mean'\] must have shape"),
    ({"mean": np.array([0, np.nan, 0]), "scale": np.ones(3)}, r"state\['mean'\] contains NaN"),
    ({"mean": np.zeros(3), "scale": np.array([1, np.inf, 1])}, r"state\['scale'\] contains"),
    ({"mean": np.zeros(3), "scale": np.array([1, 0, 1])}, r"state\['scale'\] must be > 0"),
])
def test_standardizer_from_state_validates(state, match):
    with pytest.raises(ValueError, match=match):
        Standardizer.from_state(state)


def test_standardizer_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().state()
    s = Standardizer().fit(np.random.default_rng(0).standard_normal((10, 4)))
    with pytest.raises(ValueError, match="X has 3 features but the Standardizer was fitted on 4"):
        s.transform(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="X must be 2-D"):
        s.transform(np.zeros(4))
    with pytest.raises(ValueError, match="X contains NaN"):
        Standardizer().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="X has 0 rows"):
        Standardizer().fit(np.zeros((0, 3)))


@pytest.mark.parametrize("factor", [1e200, 1.5e308 / 3, 1e-200, 1e-310])
def test_standardizer_huge_and_tiny_features_match_scaled_reference(factor):
    """Columns near the float64 limits: the reference standardizes the unit data
    [[1], [-1], [0.3]] (the result does not depend on the factor), and the statistics
    are the unit ones times the factor."""
    U = np.array([[1.0, 3.0], [-1.0, -2.0], [0.3, 3.0]])
    ref_mean, ref_std = U.mean(axis=0), U.std(axis=0)
    s = Standardizer().fit(U * factor)
    assert_close(s.mean_ / factor, ref_mean, 1e-12, "mean_ / factor")
    assert_close(s.scale_ / factor, ref_std, 1e-12, "scale_ / factor")
    Z = s.transform(U * factor)
    assert_close(Z, (U - ref_mean) / ref_std, 1e-12, "transform")
    assert_close(s.inverse_transform(Z) / factor, U, 1e-12, "inverse_transform / factor")


def test_standardizer_near_float64_max_with_lopsided_column():
    X = np.array([[-1.5e308]] * 9 + [[1.5e308]])
    Z = Standardizer().fit_transform(X)
    U = X / 1e308
    assert_close(Z, (U - U.mean()) / U.std(), 1e-12, "transform")


def test_standardizer_is_unchanged_for_ordinary_data():
    X = np.random.default_rng(3).standard_normal((300, 4)) * [1, 1e3, 1e-3, 7] + [0, 1, -5, 1e4]
    s = Standardizer().fit(X)
    assert np.array_equal(s.mean_, X.sum(axis=0) / len(X))
    assert np.array_equal(s.scale_, np.sqrt(((X - s.mean_) ** 2).sum(axis=0) / len(X)))
    assert np.array_equal(s.transform(X), (X - s.mean_) / s.scale_)


def test_standardizer_result_out_of_range_is_a_clear_error():
    s = Standardizer().fit(np.array([[0.0], [1e-300]]))
    assert s.transform(np.array([[1.0]]))[0, 0] == pytest.approx(2e300 - 1)
    with pytest.raises(ValueError, match="X has values beyond the float32 range"):
        s.transform(np.array([[1.0]], dtype=np.float32))
    big = Standardizer().fit(np.array([[-1e308], [1e308]]))
    assert big.inverse_transform(np.array([[1.5]]))[0, 0] == pytest.approx(1.5e308)
    with pytest.raises(ValueError, match="Z has values beyond the float64 range"):
        big.inverse_transform(np.array([[10.0]]))


# ---------------------------------------------------------------- minibatches

def check_batches(batches, m, batch_size):
    """Every row once, pairs intact, all batches full except possibly the last."""
    sizes = [len(Xb) for Xb, _ in batches]
    expected = [batch_size] * (m // batch_size) + ([m % batch_size] if m % batch_size else [])
    assert sizes == expected
    ids = np.concatenate([Xb[:, 0] for Xb, _ in batches]).astype(int)
    assert np.array_equal(np.sort(ids), np.arange(m))
    for Xb, yb in batches:
        assert np.array_equal(yb, Xb[:, 0].astype(int) % 5)
    return ids


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 200), batch_size=st.integers(1, 250), shuffle=st.booleans(),
       seed=st.integers(0, 1000))
def test_minibatches_in_memory_cover_every_row_once(m, batch_size, shuffle, seed):
    X, y = id_data(m)
    ids = check_batches(list(minibatches(X, y, batch_size, shuffle=shuffle, seed=seed)),
                        m, batch_size)
    if not shuffle:
        assert np.array_equal(ids, np.arange(m))


def test_minibatches_seeded_and_shuffled():
    X, y = id_data(100)
    a = [Xb[:, 0] for Xb, _ in minibatches(X, y, 16, seed=5)]
    b = [Xb[:, 0] for Xb, _ in minibatches(X, y, 16, seed=5)]
    c = [Xb[:, 0] for Xb, _ in minibatches(X, y, 16, seed=6)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.arange(100))
    # a Generator keeps advancing: two epochs from one generator differ
    rng = np.random.default_rng(0)
    e1 = np.concatenate([Xb[:, 0] for Xb, _ in minibatches(X, y, 16, seed=rng)])
    e2 = np.concatenate([Xb[:, 0] for Xb, _ in minibatches(X, y, 16, seed=rng)])
    assert not np.array_equal(e1, e2)


@pytest.fixture(scope="module")
def small_npy(tmp_path_factory):
    d = tmp_path_factory.mktemp("mm")
    X, y = id_data(1000, n=4)
    np.save(d / "X.npy", X.astype(np.float32))
    np.save(d / "y.npy", y)
    return d / "X.npy", d / "y.npy"


@settings(max_examples=30, deadline=None)
@given(batch_size=st.integers(1, 300), k=st.integers(1, 5), shuffle=st.booleans(),
       seed=st.integers(0, 1000))
def test_minibatches_memmap_blocks(small_npy, batch_size, k, shuffle, seed):
    X = np.load(small_npy[0], mmap_mode="r")
    y = np.load(small_npy[1], mmap_mode="r")
    block = batch_size * k
    batches = list(minibatches(X, y, batch_size, shuffle=shuffle, seed=seed, block_rows=block))
    ids = check_batches(batches, 1000, batch_size)
    for Xb, yb in batches:
        assert type(Xb) is np.ndarray and type(yb) is np.ndarray  # read into memory
    if not shuffle:
        assert np.array_equal(ids, np.arange(1000))
    else:
        # rows are read block by block: a batch touches at most two blocks (the
        # leftover of one block plus the start of the next), never the whole file
        for Xb, _ in batches:
            assert len(np.unique(Xb[:, 0].astype(int) // block)) <= 2


def test_minibatches_memmap_is_shuffled_across_blocks(small_npy):
    X = np.load(small_npy[0], mmap_mode="r")
    y = np.load(small_npy[1], mmap_mode="r")
    first = [int(Xb[0, 0]) // 100 for Xb, _ in minibatches(X, y, 50, seed=1, block_rows=100)]
    blocks = list(dict.fromkeys(first))  # blocks in the order they were visited
    assert sorted(blocks) == list(range(10)) and blocks != list(range(10))
    a = [Xb for Xb, _ in minibatches(X, y, 50, seed=1, block_rows=100)]
    assert not np.array_equal(a[0][:, 0], np.sort(a[0][:, 0]))  # shuffled within a block


_BIG_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from pydl.data import minibatches

    X = np.load(sys.argv[1], mmap_mode="r")
    y = np.load(sys.argv[2], mmap_mode="r")
    m = X.shape[0]

    def vm_bytes():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    # allow what is mapped now (the file included) plus 250 MB: enough for a
    # few 32 MB blocks, not for a 400 MB in-memory copy of X
    limit = vm_bytes() + 250 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        np.array(X)
        loading_fails = False
    except MemoryError:
        loading_fails = True

    counts = np.zeros(m, np.int32)
    total = 0.0
    n_batches, sizes_ok, pairs_ok = 0, True, True
    first_ids = None
    batch_size = 1000
    for Xb, yb in minibatches(X, y, batch_size, shuffle=True, seed=0):
        ids = Xb[:, 0].astype(np.int64)
        if first_ids is None:
            first_ids = ids[:20].tolist()
        np.add.at(counts, ids, 1)
        total += float(Xb.sum(dtype=np.float64))
        pairs_ok &= bool(np.array_equal(yb, ids % 10))
        n_batches += 1
        sizes_ok &= len(Xb) == batch_size or n_batches == -(-m // batch_size)
    print(json.dumps(dict(loading_fails=loading_fails, each_row_once=bool(np.all(counts == 1)),
                          total=total, n_batches=n_batches, sizes_ok=bool(sizes_ok),
                          pairs_ok=pairs_ok, first_ids=first_ids)))
""")


def test_minibatches_memmap_larger_than_memory_limit(tmp_path):
    m, n = 1_000_000, 100  # float32: 400 MB
    xpath, ypath = tmp_path / "X.npy", tmp_path / "y.npy"
    X = np.lib.format.open_memmap(xpath, mode="w+", dtype=np.float32, shape=(m, n))
    total = 0.0
    chunk = 100_000
    for s in range(0, m, chunk):
        ids = np.arange(s, min(s + chunk, m))
        block = ((ids[:, None] * 7 + np.arange(n)) % 1013).astype(np.float32)
        block[:, 0] = ids
        X[s:s + len(ids)] = block
        total += float(block.sum(dtype=np.float64))
    X.flush()
    del X
    np.save(ypath, np.arange(m) % 10)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _BIG_SCRIPT, str(xpath), str(ypath)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, cwd=xpath.parent)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["loading_fails"], "the memory limit did not stop np.array(X); test is void"
    assert r["each_row_once"] and r["pairs_ok"] and r["sizes_ok"]
    assert r["n_batches"] == 1000
    assert r["total"] == total  # integers < 2**53: exact checksum
    assert r["first_ids"] != list(range(20))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
    (dict(batch_size=True), TypeError, "batch_size must be an int"),
    (dict(y=np.zeros(9)), ValueError, "y has 9 rows but X has 10; they must match"),
    (dict(X=np.zeros((0, 2)), y=np.zeros(0)), ValueError, "X has 0 rows"),
    (dict(seed=-1), ValueError, "seed must be a non-negative int"),
    (dict(block_rows=5, batch_size=2), ValueError, "block_rows must be a multiple"),
    (dict(block_rows=0), ValueError, "block_rows must be >= 1"),
])
def test_minibatches_bad_input_raises_at_call(kwargs, exc, match):
    args = dict(X=np.zeros((10, 2)), y=np.zeros(10), batch_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        minibatches(**args)  # no next(): validation is eager


# ---------------------------------------------------------------- augmentation

def images(m, shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((m, int(np.prod(shape)))).astype(dtype)


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (4, 6, 3)])
def test_horizontal_flip_reference(shape):
    Xb = images(50, shape)
    before = Xb.copy()
    ref = np.stack([row.reshape(shape)[:, ::-1].reshape(-1) for row in Xb])
    assert np.array_equal(HorizontalFlip(shape, p=1.0)(Xb, np.random.default_rng(0)), ref)
    assert np.array_equal(HorizontalFlip(shape, p=0.0)(Xb, np.random.default_rng(0)), Xb)
    out = HorizontalFlip(shape, p=0.5)(Xb, np.random.default_rng(1))
    flipped = np.all(out == ref, axis=1)
    assert np.all(flipped | np.all(out == Xb, axis=1))
    assert 10 <= flipped.sum() <= 40
    assert np.array_equal(Xb, before)  # input untouched


def shift_reference(img, dy, dx):
    H, W = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[i, j] = img[i - dy, j - dx]
    return out


@pytest.mark.parametrize("shape, s", [((8, 8), 1), ((6, 5), 2), ((4, 4, 2), 1)])
def test_random_shift_reference(shape, s):
    Xb = images(300, shape, dtype=np.float64) + 1.0  # > 0 so zero fill is visible
    out = RandomShift(shape, max_shift=s)(Xb, np.random.default_rng(2))
    assert out.shape == Xb.shape and out.dtype == Xb.dtype
    seen = set()
    for row, o in zip(Xb, out):
        img = row.reshape(shape)
        match = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                 if np.array_equal(shift_reference(img, dy, dx).reshape(-1), o)]
        assert len(match) == 1, f"row is not a unique shift of its input: {match}"
        seen.add(match[0])
    assert len(seen) == (2 * s + 1) ** 2  # every shift occurs in 300 draws
    assert np.array_equal(RandomShift(shape, max_shift=0)(Xb, np.random.default_rng(0)), Xb)


def test_random_shift_keeps_integer_dtype():
    Xb = (images(20, (8, 8)) * 16).astype(np.uint8)
    out = RandomShift((8, 8))(Xb, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == Xb.shape


@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (5, 6, 3)])
def test_rotate_images_matches_scipy(shape):
    Xb = images(6, shape, dtype=np.float64)
    img = Xb.reshape((6,) + shape[:2] + (shape[2] if len(shape) == 3 else 1,))
    angles = np.array([0.0, 90.0, -90.0, 12.5, -33.0, 180.0])
    got = _rotate_images(img, angles)
    for k, a in enumerate(angles):
        for c in range(img.shape[3]):
            ref = scipy.ndimage.rotate(img[k, :, :, c], a, reshape=False, order=1,
                                       mode="grid-constant", cval=0.0)
            assert_close(got[k, :, :, c], ref, 1e-12, f"rotate {a} deg channel {c}")
    if shape[0] == shape[1]:  # 90 degrees is np.rot90 (counter-clockwise as displayed)
        assert_close(got[1, :, :, 0], np.rot90(img[1, :, :, 0]), 1e-12, "rot90")
    assert_close(got[0], img[0], 1e-12, "0 degrees")


def test_random_rotation_draws_angles_in_range():
    shape = (8, 8)
    Xb = images(40, shape, dtype=np.float32)
    out = RandomRotation(shape, max_degrees=15.0)(Xb, np.random.default_rng(7))
    assert out.dtype == np.float32 and out.shape == Xb.shape
    angles = np.random.default_rng(7).uniform(-15.0, 15.0, size=40)  # same draw order
    assert np.all(np.abs(angles) <= 15.0)
    for row, o, a in zip(Xb.astype(np.float64), out, angles):
        ref = scipy.ndimage.rotate(row.reshape(shape), a, reshape=False, order=1,
                                   mode="grid-constant")
        assert_close(o.reshape(shape), ref, 1e-5, f"rotation by {a:.2f} deg")
    assert not np.allclose(out, Xb)
    assert_close(RandomRotation(shape, 0.0)(Xb, np.random.default_rng(0)), Xb, 1e-6, "0 deg")


def test_gaussian_noise_statistics():
    Xb = np.full((200, 500), 3.0, np.float32)
    out = GaussianNoise(0.5)(Xb, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.all(Xb == 3.0)
    noise = out.astype(np.float64) - 3.0
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    assert np.array_equal(GaussianNoise(0.0)(Xb, np.random.default_rng(0)), Xb)


@pytest.mark.parametrize("aug", [
    HorizontalFlip((8, 8)), RandomShift((8, 8), 2), RandomRotation((8, 8), 20.0),
    GaussianNoise(0.1),
    Compose([HorizontalFlip((8, 8)), RandomShift((8, 8)), RandomRotation((8, 8)),
             GaussianNoise(0.1)]),
])
def test_augmentations_seeded_new_array_same_shape_dtype(aug):
    Xb = images(64, (8, 8))
    before = Xb.copy()
    a = aug(Xb, np.random.default_rng(11))
    b = aug(Xb, np.random.default_rng(11))
    c = aug(Xb, np.random.default_rng(12))
    assert a.shape == Xb.shape and a.dtype == Xb.dtype
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.shares_memory(a, Xb) and np.array_equal(Xb, before)
    assert repr(aug).startswith(type(aug).__name__ + "(")


def test_compose_applies_in_order_with_shared_rng():
    Xb = images(32, (8, 8))
    augs = [RandomShift((8, 8)), GaussianNoise(0.2), HorizontalFlip((8, 8))]
    got = Compose(augs)(Xb, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    ref = Xb
    for a in augs:
        ref = a(ref, rng)
    assert np.array_equal(got, ref)
    empty = Compose([])(Xb, np.random.default_rng(0))
    assert np.array_equal(empty, Xb) and not np.shares_memory(empty, Xb)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: HorizontalFlip((8,)), ValueError, "image_shape must be"),
    (lambda: HorizontalFlip((8, 0)), ValueError, "image_shape must be"),
    (lambda: HorizontalFlip(8), TypeError, "image_shape must be"),
    (lambda: HorizontalFlip((8, 8), p=1.5), ValueError, "p must be in"),
    (lambda: HorizontalFlip((8, 8), p="a"), TypeError, "p must be a real"),
    (lambda: RandomShift((8, 8), max_shift=-1), ValueError, "max_shift must be in"),
    (lambda: RandomShift((8, 8), max_shift=8), ValueError, "max_shift must be in"),
    (lambda: RandomShift((8, 8), max_shift=1.0), TypeError, "max_shift must be an int"),
    (lambda: RandomRotation((8, 8), max_degrees=200), ValueError, "max_degrees must be in"),
    (lambda: RandomRotation((8, 8), max_degrees=float("nan")), ValueError, "max_degrees"),
    (lambda: GaussianNoise(-0.1), ValueError, "std must be >= 0"),
    (lambda: Compose([GaussianNoise(1.0), 3]), TypeError, r"augs\[1\] must be callable"),
    (lambda: Compose(5), TypeError, "augs must be a list"),
])
def test_augmentation_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_augmentation_bad_calls():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Xb rows have 63 values but image_shape \(8, 8\)"):
        HorizontalFlip((8, 8))(np.zeros((2, 63)), rng)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        RandomShift((8, 8))(np.zeros((2, 64)), 0)
    with pytest.raises(TypeError, match="Xb must be a floating array"):
        GaussianNoise(0.1)(np.zeros((2, 64), np.uint8), rng)
    with pytest.raises(TypeError, match="Xb must be a floating array"):
        RandomRotation((8, 8))(np.zeros((2, 64), np.int64), rng)
    with pytest.raises(ValueError, match="Xb must be 2-D"):
        GaussianNoise(0.1)(np.zeros(64), rng)
