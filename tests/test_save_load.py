"""model.save(path) / pydl.load(path): round trips (theta, BatchNorm running stats,
optimizer and its state, epoch, step, standardizer, history), exact resumption of
training, and refusal (ValueError) of damaged, hand-edited, foreign or pickled files.
Loading never unpickles.
"""
import json
import os

import numpy as np
import pytest

import pydl
from pydl import nn, optim
from pydl.data import Standardizer


def data(m=150, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 10)).astype(np.float32)
    y = (X[:, :3] + 0.3 * rng.standard_normal((m, 3))).argmax(axis=1)
    return X, y


def bn_dropout_model(seed=0, dtype=np.float32):
    return pydl.Sequential([nn.Dense(10, 16, use_bias=False), nn.BatchNorm(16), nn.ReLU(),
                            nn.Dropout(keep_prob=0.7), nn.Dense(16, 8, l2=0.01), nn.BatchNorm(8, momentum=0.8),
                            nn.Tanh(), nn.Dropout(rate=0.25), nn.Dense(8, 3)], seed=seed, dtype=dtype)


def trained(tmp_path, opt=None, dtype=np.float32):
    X, y = data()
    model = bn_dropout_model(dtype=dtype)
    model.fit(X, y, optimizer=opt or optim.Adam(lr=0.01), epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def assert_same_model(a, b):
    assert a.architecture() == b.architecture()
    assert a.theta.dtype == b.theta.dtype and np.array_equal(a.theta, b.theta)
    sa, sb = a._state_arrays(), b._state_arrays()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), f"state {k} differs"
    assert (a.epoch, a.step, a.seed) == (b.epoch, b.step, b.seed)


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_opt", [lambda: optim.Adam(lr=0.01, weight_decay=1e-3, decoupled=True),
                                      lambda: optim.Momentum(lr=0.05, nesterov=True),
                                      lambda: optim.RMSprop(lr=0.003), lambda: optim.SGD(lr=0.1)],
                         ids=["adamw", "nesterov", "rmsprop", "sgd"])
def test_round_trip(tmp_path, dtype, make_opt):
    model, path = trained(tmp_path, make_opt(), dtype)
    assert model.step == 10 and model.epoch == 2
    assert not np.allclose(model.layers[1].running_mean, 0)
    loaded = pydl.load(path)
    assert_same_model(model, loaded)
    assert loaded.dtype == dtype
    # views still point into the loaded theta
    assert np.shares_memory(loaded.layers[0].W, loaded.theta)
    o, lo = model.optimizer, loaded.optimizer
    assert type(lo) is type(o) and lo.hyperparameters() == o.hyperparameters() and lo.t == o.t == 10
    assert lo.state.keys() == o.state.keys()
    for k in o.state:
        assert lo.state[k].dtype == dtype and np.array_equal(lo.state[k], o.state[k])
    X, _ = data(20, seed=5)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.history.to_dict() == model.history.to_dict()


def test_round_trip_without_optimizer_and_with_standardizer(tmp_path):
    model = pydl.mlp([10, 6, 3], seed=4)
    X, _ = data()
    model.standardizer = Standardizer().fit(X)
    path = tmp_path / "fresh.npz"
    model.save(path)
    loaded = pydl.load(path)
    assert_same_model(model, loaded)
    assert loaded.optimizer is None and loaded.history is None
    assert np.array_equal(loaded.standardizer.mean_, model.standardizer.mean_)
    assert np.array_equal(loaded.standardizer.scale_, model.standardizer.scale_)


def test_save_accepts_str_and_leaves_no_temporary_files(tmp_path):
    model = pydl.mlp([10, 6, 3], seed=0)
    model.save(str(tmp_path / "a.npz"))
    model.save(tmp_path / "a.npz")          # overwrite
    assert os.listdir(tmp_path) == ["a.npz"]
    with pytest.raises(FileNotFoundError):
        pydl.load(tmp_path / "missing.npz")


def test_save_into_a_missing_directory_names_the_file_asked_for(tmp_path):
    target = tmp_path / "nodir" / "model.npz"
    with pytest.raises(FileNotFoundError, match=r"cannot save .*nodir/model\.npz") as info:
        pydl.mlp([10, 6, 3], seed=0).save(target)
    assert ".tmp-" not in str(info.value) and not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("make_opt", [lambda: optim.Adam(lr=0.01), lambda: optim.Momentum(lr=0.05, nesterov=True)],
                         ids=["adam", "nesterov"])
def test_resume_is_bitwise_identical(tmp_path, make_opt):
    """2 epochs, save, load, 2 more == 4 in one go (dropout + BN + shuffling + partial batch)."""
    X, y = data()
    full = bn_dropout_model()
    h_full = full.fit(X, y, optimizer=make_opt(), epochs=4, batch_size=32, verbose=0)

    first = bn_dropout_model()
    first.fit(X, y, optimizer=make_opt(), epochs=2, batch_size=32, verbose=0)
    first.save(tmp_path / "half.npz")
    loaded = pydl.load(tmp_path / "half.npz")
    h2 = loaded.fit(X, y, optimizer=loaded.optimizer, epochs=4, initial_epoch=2, batch_size=32, verbose=0)

    diff = np.abs(loaded.theta - full.theta).max()
    assert np.array_equal(loaded.theta, full.theta), f"resumed theta differs (max |diff| {diff:.3g})"
    assert_same_model(full, loaded)
    for k in full.optimizer.state:
        assert np.array_equal(full.optimizer.state[k], loaded.optimizer.state[k])
    assert h2.epoch == [2, 3]
    assert h2.iterations == h_full.iterations[10:]

    # and resuming the original (unsaved) model in memory gives the same, too
    first.fit(X, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    assert np.array_equal(first.theta, full.theta)


def test_batchnorm_that_does_not_track_running_stats_still_does_not_after_a_load(tmp_path):
    """track_running_stats is part of the layer's architecture: saved, loaded and copied
    (a resumed run leaves the running estimates alone, as the uninterrupted one does)."""
    model = pydl.Sequential([nn.Dense(5, 8, use_bias=False),
                             nn.BatchNorm(8, track_running_stats=False), nn.ReLU(),
                             nn.Dense(8, 3)], seed=0)
    model.save(tmp_path / "m.npz")
    for copy in (pydl.load(tmp_path / "m.npz"), model.copy(), model.astype(np.float64)):
        assert copy.layers[1].track_running_stats is False
    X, y = data()
    loaded = pydl.load(tmp_path / "m.npz")
    loaded.fit(X[:, :5], y % 3, epochs=1, batch_size=32, verbose=0)
    assert (loaded.layers[1].running_mean == 0).all() and (loaded.layers[1].running_var == 1).all()
    with pytest.raises(TypeError, match="track_running_stats must be a bool"):
        nn.BatchNorm(8, track_running_stats="no")


def test_resume_with_a_fresh_optimizer_differs(tmp_path):
    """Guards the test above: the optimizer state matters, so resuming without it differs."""
    X, y = data()
    full = bn_dropout_model()
    full.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=4, batch_size=32, verbose=0)
    half = bn_dropout_model()
    half.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=2, batch_size=32, verbose=0)
    half.save(tmp_path / "h.npz")
    loaded = pydl.load(tmp_path / "h.npz")
    loaded.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    assert not np.array_equal(loaded.theta, full.theta)


# ------------------------------------------------------------------------------ refusals
def small_saved(tmp_path):
    X, y = data(40)
    model = pydl.Sequential([nn.Dense(10, 4, use_bias=False), nn.BatchNorm(4), nn.ReLU(), nn.Dense(4, 3)],
                            seed=0)
    model.fit(X, y, optimizer=optim.Adam(lr=0.01), epochs=1, batch_size=20, verbose=0)
    path = tmp_path / "small.npz"
    model.save(path)
    return model, path


def entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def edited(tmp_path, path, edit_meta=None, **replace):
    arrays = entries(path)
    if edit_meta is not None:
        meta = json.loads(arrays["meta"].tobytes().decode())
        edit_meta(meta)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for k, v in replace.items():
        k = k.replace("__", "/")
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    out = tmp_path / "edited.npz"
    write_npz(out, arrays)
    return out


def refused(path, pattern=None):
    with pytest.raises(ValueError, match=pattern) as info:
        pydl.load(path)
    assert "not a valid pydl model file" in str(info.value)
    return str(info.value)


def test_edit_helper_round_trips(tmp_path):
    """Guards the tests below: an unedited rewrite loads fine."""
    model, path = small_saved(tmp_path)
    assert_same_model(model, pydl.load(edited(tmp_path, path, lambda meta: None)))


@pytest.mark.parametrize("keep", [0, 3, 100, 0.5, -1])
def test_truncated_file_refused(tmp_path, keep):
    _, path = small_saved(tmp_path)
    data_ = path.read_bytes()
    n = int(len(data_) * keep) if isinstance(keep, float) else (len(data_) + keep if keep < 0 else keep)
    (tmp_path / "t.npz").write_bytes(data_[:n])
    refused(tmp_path / "t.npz")


def test_corrupted_theta_byte_refused(tmp_path):
    model, path = small_saved(tmp_path)
    data_ = bytearray(path.read_bytes())
    where = bytes(data_).find(model.theta.tobytes())
    assert where > 0
    for off in (0, model.theta.nbytes // 2, model.theta.nbytes - 1):
        bad = bytearray(data_)
        bad[where + off] ^= 0x10
        (tmp_path / "c.npz").write_bytes(bad)
        refused(tmp_path / "c.npz")


def test_every_single_byte_corruption_is_refused_or_harmless(tmp_path):
    """Flip each byte of a saved file in turn: load must raise ValueError or give back the
    very same model (bytes such as zip timestamps do not matter) - never another exception
    and never a silently different model."""
    model, path = small_saved(tmp_path)
    data_ = path.read_bytes()
    target = tmp_path / "flip.npz"
    other = {}
    harmless = 0
    for i in range(len(data_)):
        bad = bytearray(data_)
        bad[i] ^= 0xFF
        target.write_bytes(bad)
        try:
            loaded = pydl.load(target)
        except ValueError:
            continue
        except Exception as e:  # noqa: BLE001
            other.setdefault(type(e).__name__, []).append(i)
            continue
        same = (np.array_equal(loaded.theta, model.theta) and loaded.epoch == model.epoch
                and loaded.step == model.step and loaded.architecture() == model.architecture()
                and all(np.array_equal(a, b) for a, b in zip(loaded._state_arrays().values(),
                                                              model._state_arrays().values()))
                and loaded.optimizer.t == model.optimizer.t
                and all(np.array_equal(loaded.optimizer.state[k], model.optimizer.state[k])
                        for k in model.optimizer.state))
        if not same:
            other.setdefault("loaded a different model", []).append(i)
        harmless += 1
    assert not other, {k: v[:10] for k, v in other.items()}
    assert harmless < len(data_) // 5, f"{harmless} of {len(data_)} byte flips went unnoticed"


def test_non_npz_files_refused(tmp_path):
    (tmp_path / "text.npz").write_text("hello, this is not a model\n")
    refused(tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    refused(tmp_path / "empty.npz")
    np.save(tmp_path / "array.npy", np.arange(10.0))
    refused(tmp_path / "array.npy")
    write_npz(tmp_path / "other.npz", {"a": np.arange(3)})
    refused(tmp_path / "other.npz", "meta")
    import zipfile
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("readme.txt", "just a zip")
    refused(tmp_path / "zip.npz")


class _Payload:
    """Unpickling this creates a marker file: proof that something unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_npz_with_pickled_objects_refused_and_never_unpickled(tmp_path):
    model, path = small_saved(tmp_path)
    marker = tmp_path / "UNPICKLED"
    arrays = entries(path)
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(str(marker))
    for key in ("meta", "theta", "extra"):
        a = dict(arrays)
        a[key] = obj
        out = tmp_path / f"pickled-{key}.npz"
        with open(out, "wb") as f:
            np.savez(f, **a)             # savez pickles object arrays
        refused(out)
        assert not marker.exists(), f"loading {key} unpickled an object"


@pytest.mark.parametrize("case", [
    "architecture_width", "architecture_extra_layer", "architecture_unknown_layer", "architecture_missing",
    "dtype", "version", "format", "epoch_negative", "step_string", "optimizer_type", "optimizer_t",
    "optimizer_hyper", "loss",
])
def test_hand_edited_meta_refused(tmp_path, case):
    _, path = small_saved(tmp_path)

    def edit(meta):
        arch = meta["architecture"]
        if case == "architecture_width":
            arch["layers"][-1]["config"]["n_out"] = 4           # theta length no longer matches
        elif case == "architecture_extra_layer":
            arch["layers"].insert(3, {"type": "Dense", "config": {"n_in": 4, "n_out": 4}})
        elif case == "architecture_unknown_layer":
            arch["layers"][2]["type"] = "Softplus"
        elif case == "architecture_missing":
            del meta["architecture"]
        elif case == "dtype":
            arch["dtype"] = "float64"
        elif case == "version":
            meta["version"] = 99
        elif case == "format":
            meta["format"] = "something-else"
        elif case == "epoch_negative":
            meta["epoch"] = -1
        elif case == "step_string":
            meta["step"] = "3"
        elif case == "optimizer_type":
            meta["optimizer"]["type"] = "Adagrad"
        elif case == "optimizer_t":
            meta["optimizer"]["t"] = -2
        elif case == "optimizer_hyper":
            meta["optimizer"]["hyperparameters"]["beta1"] = 1.5
        elif case == "loss":
            arch["loss"] = "hinge"

    refused(edited(tmp_path, path, edit))


@pytest.mark.parametrize("case", ["optimizer_not_dict", "history_not_dict", "meta_not_object",
                                  "hyperparameters_list", "arrays_name"])
def test_malformed_meta_structure_refused(tmp_path, case):
    _, path = small_saved(tmp_path)
    if case == "meta_not_object":
        out = edited(tmp_path, path, meta=np.frombuffer(b"[1, 2, 3]", dtype=np.uint8))
    else:
        def edit(meta):
            if case == "optimizer_not_dict":
                meta["optimizer"] = 5
            elif case == "history_not_dict":
                meta["history"] = [1, 2]
            elif case == "hyperparameters_list":
                meta["optimizer"]["hyperparameters"] = [0.1]
            elif case == "arrays_name":
                meta["optimizer"]["type"] = ["Adam"]
        out = edited(tmp_path, path, edit)
    refused(out)


@pytest.mark.parametrize("case", ["theta_missing", "theta_short", "theta_dtype", "theta_nan", "theta_2d",
                                  "state_missing", "state_shape", "state_inf", "optimizer_array_short",
                                  "optimizer_array_missing", "meta_garbage", "meta_missing",
                                  "standardizer_bad"])
def test_edited_arrays_refused(tmp_path, case):
    model, path = small_saved(tmp_path)
    theta = model.theta
    rv = "state/1.running_var"
    changes = {
        "theta_missing": {"theta": None},
        "theta_short": {"theta": theta[:-1]},
        "theta_dtype": {"theta": theta.astype(np.float64)},
        "theta_nan": {"theta": np.where(np.arange(theta.size) == 3, np.nan, theta).astype(theta.dtype)},
        "theta_2d": {"theta": theta.reshape(1, -1)},
        "state_missing": {rv: None},
        "state_shape": {rv: np.ones(5, np.float32)},
        "state_inf": {rv: np.full(4, np.inf, np.float32)},
        "optimizer_array_short": {"optimizer/v": np.zeros(theta.size - 1, np.float32)},
        "optimizer_array_missing": {"optimizer/s": None},
        "meta_garbage": {"meta": np.frombuffer(b"\xff\xfe{not json", dtype=np.uint8)},
        "meta_missing": {"meta": None},
        "standardizer_bad": {"standardizer/mean": np.zeros(10), "standardizer/scale": -np.ones(10)},
    }[case]
    arrays = entries(path)
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    out = tmp_path / "e.npz"
    write_npz(out, arrays)
    refused(out)



# ------------------------------------------------------------------------------ hostile files
def small_meta(path):
    return json.loads(entries(path)["meta"].tobytes().decode())


def meta_bytes(meta):
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def write_npz_with_deflated(path, arrays, name, shape, dtype=np.float64):
    """arrays as np.savez writes them, plus entry ``name`` of zeros with ``shape``, deflated:
    a few hundred KB that would decompress to shape's full size."""
    import io
    import zipfile

    write_npz(path, arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z, z.open(name + ".npy", "w") as f:
        f.write(header.getvalue())
        chunk = bytes(1 << 22)
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        while left:
            f.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def peak_bytes_of(fn):
    """Peak of the memory traced by tracemalloc (numpy reports its arrays to it) during fn()."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("n", [5000, 30000, 10**6, 2**40])
def test_huge_architecture_with_a_tiny_theta_is_refused_before_allocating(tmp_path, n):
    """A 700-byte file whose architecture is Dense(n, n) (+ BatchNorm(n)) with a theta of 3:
    refused from theta's header, without building (let alone initializing) the model."""
    meta = {"format": "pydl-model", "version": 1, "epoch": 0, "step": 0,
            "architecture": {"layers": [{"type": "Dense", "config": {"n_in": n, "n_out": n}},
                                        {"type": "BatchNorm", "config": {"n": n}}],
                             "loss": "mse", "seed": 0, "dtype": "float32"}}
    out = tmp_path / "big.npz"
    write_npz(out, {"theta": np.zeros(3, np.float32), "meta": meta_bytes(meta)})
    assert out.stat().st_size < 1000
    peak = peak_bytes_of(lambda: refused(out, "architecture|theta"))
    assert peak < 2**20, f"refusing a {out.stat().st_size}-byte file allocated {peak} bytes"


def test_theta_whose_header_claims_more_than_the_architecture_needs_is_never_read(tmp_path):
    _, path = small_saved(tmp_path)
    arrays = entries(path)
    del arrays["theta"]
    out = tmp_path / "e.npz"
    write_npz_with_deflated(out, arrays, "theta", (2**24,), np.float32)   # 64 MB of zeros
    assert out.stat().st_size < 2**20
    peak = peak_bytes_of(lambda: refused(out, r"theta has shape \(16777216,\) float32, the architecture needs"))
    assert peak < 8 * 2**20, f"peak {peak} bytes"


@pytest.mark.parametrize("name", ["optimizer/s", "state/1.running_var", "standardizer/mean"])
def test_state_entry_whose_header_claims_too_much_is_never_read(tmp_path, name):
    model, path = small_saved(tmp_path)
    model.standardizer = Standardizer().fit(data(40)[0])
    model.save(path)
    arrays = entries(path)
    del arrays[name]
    out = tmp_path / "e.npz"
    write_npz_with_deflated(out, arrays, name, (2**24,), arrays["theta"].dtype if "std" not in name else np.float64)
    peak = peak_bytes_of(lambda: refused(out, rf"{name} has shape \(16777216,\)"))
    assert peak < 8 * 2**20, f"peak {peak} bytes"


def test_unused_entries_are_not_read(tmp_path):
    """An unknown (here compressed, 128 MB when read) entry is ignored, not decompressed."""
    model, path = small_saved(tmp_path)
    out = tmp_path / "junk.npz"
    write_npz_with_deflated(out, entries(path), "junk", (2**24,))
    assert out.stat().st_size < 2**20
    loaded = []
    peak = peak_bytes_of(lambda: loaded.append(pydl.load(out)))
    assert peak < 8 * 2**20, f"peak {peak} bytes"
    assert_same_model(model, loaded[0])


def test_entry_claiming_more_than_the_file_holds_is_refused(tmp_path):
    """A header claiming 2**40 elements in a stored (uncompressed) entry of a few bytes."""
    import io
    import zipfile

    _, path = small_saved(tmp_path)
    arrays = entries(path)
    del arrays["theta"]
    out = tmp_path / "e.npz"
    write_npz(out, arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    with zipfile.ZipFile(out, "a") as z:
        z.writestr("theta.npy", header.getvalue() + bytes(64))
    refused(out, "entry 'theta' claims shape \\(1099511627776,\\) float32, more than the file holds")


@pytest.mark.parametrize("case", ["epoch_inf", "epoch_nan", "iterations_str", "history_values_not_list",
                                  "best_epoch_dict", "epoch_str"])
def test_history_with_impossible_values_refused(tmp_path, case):
    """json accepts Infinity/NaN: int(inf) raised a raw OverflowError."""
    _, path = small_saved(tmp_path)
    history = {"epoch_inf": {"epoch": [float("inf")]}, "epoch_nan": {"epoch": [float("nan")]},
               "iterations_str": {"iterations": "123"}, "history_values_not_list": {"history": {"loss": 5}},
               "best_epoch_dict": {"best_epoch": {"x": [1]}}, "epoch_str": {"epoch": "12"}}[case]
    out = edited(tmp_path, path, lambda meta: meta.__setitem__("history", history))
    refused(out, "its history is invalid")


@pytest.mark.parametrize("text", [b"[" * 100000, b'{"a":' * 100000, b'{"format": 1' + b"0" * 5000 + b"}"],
                         ids=["deep-list", "deep-object", "5000-digit-int"])
def test_pathological_json_meta_refused(tmp_path, text):
    """Deep nesting raised RecursionError; a 5000-digit integer raises Python's int limit."""
    _, path = small_saved(tmp_path)
    refused(edited(tmp_path, path, meta=np.frombuffer(text, dtype=np.uint8)), "its metadata is not JSON")


@pytest.mark.parametrize("opt", [optim.Adam(lr=0.01), optim.RMSprop(lr=0.01)], ids=["adam", "rmsprop"])
def test_negative_second_moment_refused(tmp_path, opt):
    """s (an EWA of g^2) < 0 loaded fine and the next fit raised TrainingDiverged."""
    X, y = data(40)
    model = pydl.mlp([10, 4, 3], seed=0)
    model.fit(X, y, optimizer=opt, epochs=1, batch_size=20, verbose=0)
    model.save(tmp_path / "m.npz")
    s = entries(tmp_path / "m.npz")["optimizer/s"].copy()
    s[3] = -1.0
    refused(edited(tmp_path, tmp_path / "m.npz", optimizer__s=s), r"optimizer state s .* negative")
    s[3] = 0.0   # zero is a valid second moment (e.g. a parameter whose gradient was always 0)
    pydl.load(edited(tmp_path, tmp_path / "m.npz", optimizer__s=s))


def test_negative_running_var_refused(tmp_path):
    """running_var = -1 loaded fine and predict then gave NaN logits."""
    model, path = small_saved(tmp_path)
    rv = entries(path)["state/1.running_var"].copy()
    rv[0] = -1.0
    refused(edited(tmp_path, path, **{"state/1.running_var": rv}),
            r"state 1.running_var \(a variance\) has negative values")
    rv[0] = 0.0
    loaded = pydl.load(edited(tmp_path, path, **{"state/1.running_var": rv}))
    assert np.isfinite(loaded.forward(data(5)[0])).all()


@pytest.mark.parametrize("field, value", [("step", 10**30), ("step", 2**63 - 1), ("epoch", 2**64),
                                          ("t", 10**30), ("t", 2**63 - 1), ("t", -1), ("t", 2.0),
                                          ("t", None), ("step", True)])
def test_counters_beyond_int64_refused(tmp_path, field, value):
    """step and t are incremented before use as int64: 10**30 loaded and failed only at
    the next step."""
    _, path = small_saved(tmp_path)

    def edit(meta):
        (meta["optimizer"] if field == "t" else meta)[field] = value
    name = "optimizer step count t" if field == "t" else field
    refused(edited(tmp_path, path, edit), rf"{name} must be an integer in \[0, 2\*\*63 - 1\)")


def test_largest_counters_load_and_train(tmp_path):
    X, y = data(40)
    model, path = small_saved(tmp_path)

    def edit(meta):
        meta["step"] = meta["optimizer"]["t"] = 2**63 - 2
    loaded = pydl.load(edited(tmp_path, path, edit))
    loaded.fit(X, y, epochs=1, batch_size=40, verbose=0)
    assert loaded.step == loaded.optimizer.t == 2**63 - 1


@pytest.mark.parametrize("case", ["seed_missing", "n_params", "optimizer_extra_array", "standardizer_width",
                                  "standardizer_half", "meta_2d", "layer_type_list"])
def test_other_impossible_files_refused(tmp_path, case):
    model, path = small_saved(tmp_path)
    if case == "seed_missing":       # Sequential would draw a new seed: other masks and shuffles
        out = edited(tmp_path, path, lambda meta: meta["architecture"].pop("seed"))
    elif case == "n_params":
        out = edited(tmp_path, path, lambda meta: meta.__setitem__("n_params", model.n_params + 1))
    elif case == "optimizer_extra_array":
        out = edited(tmp_path, path, **{"optimizer/u": model.theta})
    elif case == "standardizer_width":  # the model takes 10 features
        out = edited(tmp_path, path, **{"standardizer/mean": np.zeros(9), "standardizer/scale": np.ones(9)})
    elif case == "standardizer_half":
        out = edited(tmp_path, path, **{"standardizer/mean": np.zeros(10)})
    elif case == "meta_2d":
        out = edited(tmp_path, path, meta=entries(path)["meta"].reshape(1, -1))
    else:
        out = edited(tmp_path, path, lambda meta: meta["architecture"]["layers"][0].__setitem__("type", ["Dense"]))
    refused(out)


def test_a_corrupt_file_never_raises_anything_but_the_clear_value_error(tmp_path):
    """More red-team edits of the metadata: each gives the clear ValueError (never
    MemoryError, OverflowError, RecursionError or an unhashable-type TypeError)."""
    _, path = small_saved(tmp_path)
    edits = [lambda m: m["architecture"]["layers"][0]["config"].update(n_in=2**70),
             lambda m: m["architecture"]["layers"][0]["config"].update(n_in=10**6, n_out=10**6),
             lambda m: m["architecture"].__setitem__("loss", ["mse"]),
             lambda m: m["architecture"].__setitem__("dtype", {"names": ["a"], "formats": ["f4"]}),
             lambda m: m["architecture"].__setitem__("layers", [[]]),
             lambda m: m.__setitem__("optimizer", {"type": ["Adam"]}),
             lambda m: m.__setitem__("history", {"epoch": [1e308 * 10]})]
    for edit in edits:
        refused(edited(tmp_path, path, edit))


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
@pytest.mark.parametrize("proc", [True, False], ids=["proc-status", "os-umask"])
def test_saved_files_follow_the_umask(tmp_path, monkeypatch, umask, proc):
    import pydl.model

    calls = []
    if not proc:  # no /proc/self/status (e.g. macOS): fall back to os.umask
        def no_proc(*args, **kwargs):
            calls.append(args)
            raise OSError("no /proc")
        monkeypatch.setattr(pydl.model, "open", no_proc, raising=False)
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 2
    model = pydl.mlp([3, 4, 2], seed=0)
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w"):
            pass
        model.save(tmp_path / "model.npz")
        model.fit(X, y, epochs=1, batch_size=10, verbose=0,
                  callbacks=[pydl.callbacks.Checkpoint(tmp_path / "ck" / "m-{epoch}.npz")])
        assert os.umask(umask) == umask, "saving changed the umask"
    finally:
        os.umask(old)
    assert proc or calls, "the os.umask fallback was not exercised"
    want = 0o666 & ~umask
    assert os.stat(tmp_path / "plain.txt").st_mode & 0o777 == want
    for f in (tmp_path / "model.npz", tmp_path / "ck" / "m-1.npz"):
        assert os.stat(f).st_mode & 0o777 == want, f"{f}: {oct(os.stat(f).st_mode & 0o777)} != {oct(want)}"


def test_save_where_chmod_is_refused_still_saves_and_closes_the_file(tmp_path, monkeypatch):
    """Some mounts (FUSE, CIFS) refuse a chmod: the mode is best effort, the save is not."""
    import os

    model = pydl.mlp([3, 4, 2], seed=0)

    def refuse(fd, mode):
        raise PermissionError("chmod not permitted here")

    monkeypatch.setattr(os, "fchmod", refuse)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(5):
        model.save(tmp_path / f"m{i}.npz")
    assert len(os.listdir("/proc/self/fd")) == before
    np.testing.assert_array_equal(pydl.load(tmp_path / "m4.npz").theta, model.theta)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_atomic_write_that_fails_leaves_the_file_and_no_temporary(tmp_path):
    from pydl.model import atomic_write
    path = tmp_path / "history.json"
    path.write_bytes(b"the earlier run")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left") as info:
        atomic_write(str(path), half_then_fail)
    assert f"cannot save {str(path)!r}" in str(info.value)  # names the file, not just errno 28
    assert info.value.errno == 28
    assert path.read_bytes() == b"the earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]
    atomic_write(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"


@pytest.mark.parametrize("name", ["", "adir", "adir/"])
def test_save_to_a_directory_or_no_name_is_refused_naming_it(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    model = pydl.mlp([3, 2], seed=0)
    with pytest.raises(IsADirectoryError, match="expected a file name") as info:
        model.save(name)
    assert info.value.filename == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
    assert not list((tmp_path / "adir").iterdir()) and not list(tmp_path.parent.glob(".tmp-*"))


def test_save_refuses_another_models_optimizer_state(tmp_path):
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    a, b = pydl.mlp([3, 4, 2], seed=0), pydl.mlp([3, 8, 2], seed=0)
    b.fit(X, y, epochs=1, verbose=0)
    a.optimizer = b.optimizer
    with pytest.raises(ValueError, match="state 'v' has 50 float32 entries but theta has 26"):
        a.save(tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()
