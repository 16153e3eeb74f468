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

