"""TOML job configurations for the ``pydl`` command.

A config has the sections below; every key is optional and a wrong key or value is a
``ConfigError`` naming the key and the file::

    [data]
    source = "digits"          # digits | moons | circles | spirals | file
    path = "train.npz"         # source = "file": .npz with X and y, .csv (label last), or
    # x_path/y_path = "X.npy"/"y.npy"  (two .npy files); class labels 0..K-1, K <= rows
    n_samples = 600            # generated sets (at most 10,000,000)
    noise = 0.2
    n_classes = 3              # spirals
    ratios = "auto"            # or [0.6, 0.2, 0.2] (dev > 0; test > 0 for pydl train)
    stratify = false
    standardize = true
    seed = 0

    [model]
    hidden = [128]             # hidden layer widths
    activation = "relu"        # relu | leaky_relu | tanh | sigmoid
    batchnorm = true
    keep_prob = 0.8
    l2 = 0.0
    init = "auto"
    loss = "softmax_cross_entropy"   # default from the labels: whole numbers (or one-hot
    #                                  rows) are classes, others mse; "mse" also takes
    #                                  whole-number targets (counts)

    [optimizer]
    name = "adam"              # sgd | momentum | rmsprop | adam, then its hyperparameters
    lr = 0.001

    [schedule]
    name = "inverse_time"      # constant | inverse_time | exponential | inverse_sqrt | staircase
    decay_rate = 0.1

    [training]
    epochs = 30
    batch_size = 64
    seed = 0
    patience = 5               # early stopping on dev_loss; 0 = off
    checkpoint_every = 1
    keep_last = 3

    [search]                   # for ``pydl tune``
    method = "random"          # random | coarse_to_fine
    trials = 20
    rounds = 3                 # coarse_to_fine
    metric = "dev_loss"
    direction = "minimize"
    [search.space]             # "section.key" = distribution or constant
    "optimizer.lr" = { dist = "loguniform", low = 1e-4, high = 1e-1 }
    "model.hidden" = { dist = "choice", values = [[64], [128]] }
"""
from __future__ import annotations

import codecs
import copy
import inspect
import math
import os
import warnings
import zipfile
import zlib

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import numpy as np

__all__ = ["ConfigError", "DEFAULTS", "load_config", "validate_config", "load_data", "check_test_split",
           "build_model", "build_optimizer", "build_schedule", "build_space", "with_params"]


class ConfigError(ValueError):
    """A config key or value is wrong (the message names it and the file)."""


DEFAULTS = {
    "data": {"source": "digits", "path": None, "x_path": None, "y_path": None, "n_samples": 600,
             "noise": 0.2, "n_classes": 3, "ratios": "auto", "stratify": False,
             "standardize": True, "seed": 0},
    "model": {"hidden": [128], "activation": "relu", "batchnorm": True, "keep_prob": 0.8,
              "l2": 0.0, "init": "auto", "loss": None},
    "optimizer": {"name": "adam", "lr": 1e-3},
    "schedule": {"name": "constant"},
    "training": {"epochs": 30, "batch_size": 64, "seed": 0, "patience": 5,
                 "checkpoint_every": 1, "keep_last": 3},
    "search": {"method": "random", "trials": 20, "rounds": 3, "metric": "dev_loss",
               "direction": "minimize", "space": {}},
}
_OPEN_SECTIONS = {"optimizer", "schedule"}   # keys depend on the chosen name
_TYPES = {
    ("data", "source"): str, ("data", "n_samples"): int, ("data", "noise"): float,
    ("data", "n_classes"): int, ("data", "stratify"): bool, ("data", "standardize"): bool,
    ("data", "seed"): int, ("model", "hidden"): list, ("model", "activation"): str,
    ("model", "batchnorm"): bool, ("model", "keep_prob"): float, ("model", "l2"): float,
    ("model", "init"): str, ("model", "loss"): str, ("data", "path"): str, ("data", "x_path"): str,
    ("data", "y_path"): str, ("training", "epochs"): int, ("training", "batch_size"): int,
    ("training", "seed"): int, ("training", "patience"): int, ("training", "checkpoint_every"): int,
    ("training", "keep_last"): int, ("search", "method"): str, ("search", "trials"): int,
    ("search", "rounds"): int, ("search", "metric"): str, ("search", "direction"): str,
    ("search", "space"): dict,
}


def _where(path) -> str:
    return f" in {path}" if path else ""


def load_config(path=None, overrides: dict | None = None) -> dict:
    """The defaults, updated by the TOML file at ``path`` (if any), then ``overrides``
    ({"section.key": value}); validated."""
    cfg = copy.deepcopy(DEFAULTS)
    raw = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        try:  # a byte order mark (as some Windows editors write) is skipped; tomllib refuses it
            raw = tomllib.loads(data[bom:].decode("utf-8"))
        except UnicodeDecodeError as e:
            at = bom + e.start
            line = data.count(b"\n", 0, at) + 1
            what = " (it is a zip archive, e.g. a model .npz)" if data[:2] == b"PK" else ""
            raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text{what}: byte "
                              f"0x{data[at]:02x} at position {at} (line {line})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    for section, values in raw.items():
        if section not in cfg:
            raise ConfigError(f"unknown section [{section}]{_where(path)}; expected one of {sorted(cfg)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table{_where(path)}")
        for key, value in values.items():
            if key not in cfg[section] and section not in _OPEN_SECTIONS:
                raise ConfigError(f"unknown key {section}.{key}{_where(path)}; expected one of "
                                  f"{sorted(cfg[section])}")
            cfg[section][key] = value
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        cfg[section][key] = value
    validate_config(cfg, path)
    return cfg


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def validate_config(cfg: dict, path=None) -> None:
    """Check types and values; raise ConfigError naming the key and file."""
    w = _where(path)
    for (section, key), typ in _TYPES.items():
        v = cfg[section].get(key)
        if v is None:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if typ is float else \
            isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if not ok:
            raise ConfigError(f"{section}.{key} must be {_TYPE_WORDS[typ]}, got {v!r}{w}")
    d, mdl, tr, s = cfg["data"], cfg["model"], cfg["training"], cfg["search"]
    if d["source"] not in ("digits", "moons", "circles", "spirals", "file"):
        raise ConfigError(f"data.source must be digits, moons, circles, spirals or file, got {d['source']!r}{w}")
    if d["source"] == "file" and not (d.get("path") or (d.get("x_path") and d.get("y_path"))):
        raise ConfigError(f"data.source = 'file' needs data.path or data.x_path and data.y_path{w}")
    if not (d["ratios"] == "auto" or (isinstance(d["ratios"], list) and len(d["ratios"]) == 3)):
        raise ConfigError(f"data.ratios must be 'auto' or [train, dev, test], got {d['ratios']!r}{w}")
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in mdl["hidden"]):
        raise ConfigError(f"model.hidden must be a list of positive integers, got {mdl['hidden']!r}{w}")
    if mdl["activation"] not in ("relu", "leaky_relu", "tanh", "sigmoid"):
        raise ConfigError(f"model.activation must be relu, leaky_relu, tanh or sigmoid, got {mdl['activation']!r}{w}")
    if not 0 < mdl["keep_prob"] <= 1:
        raise ConfigError(f"model.keep_prob must be in (0, 1], got {mdl['keep_prob']!r}{w}")
    if mdl["l2"] < 0:
        raise ConfigError(f"model.l2 must be >= 0, got {mdl['l2']!r}{w}")
    if not math.isfinite(mdl["l2"]):
        raise ConfigError(f"model.l2 must be a finite number >= 0, got {mdl['l2']!r}{w}")
    from .init import INITIALIZERS
    from .losses import LOSSES

    if mdl.get("loss") is not None and mdl["loss"] not in LOSSES:
        raise ConfigError(f"model.loss must be one of {sorted(LOSSES)}, got {mdl['loss']!r}{w}")
    if mdl["init"] != "auto" and mdl["init"] not in INITIALIZERS:
        raise ConfigError(f"model.init must be 'auto' or one of {list(INITIALIZERS)}, got {mdl['init']!r}{w}")
    if isinstance(d["ratios"], list):
        r = d["ratios"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in r):
            raise ConfigError(f"data.ratios must be non-negative and finite, got {r!r}{w}")
        if abs(sum(r) - 1.0) > 1e-9 or r[0] == 0:
            raise ConfigError(f"data.ratios must sum to 1 with a train ratio > 0, got {r!r}{w}")
        # Every command that trains needs dev rows: pydl train validates (and stops early)
        # on them each epoch, pydl tune scores its trials on them. A test ratio of 0 is left
        # to the command: pydl tune never uses the test rows (see check_test_split).
        if r[1] == 0:
            raise ConfigError(f"data.ratios must give dev a ratio > 0 (training is validated on the "
                              f"dev rows), got {r!r}{w}")
    if not (math.isfinite(d["noise"]) and d["noise"] >= 0):
        raise ConfigError(f"data.noise must be a finite number >= 0, got {d['noise']!r}{w}")
    for section, key, lo in (("data", "n_samples", 3), ("data", "n_classes", 2), ("data", "seed", 0),
                             ("training", "seed", 0), ("search", "trials", 1), ("search", "rounds", 1)):
        v = cfg[section][key]
        if v is not None and v < lo:
            raise ConfigError(f"{section}.{key} must be >= {lo}, got {v!r}{w}")
    if d["n_samples"] is not None and d["n_samples"] > _MAX_SAMPLES:
        raise ConfigError(f"data.n_samples must be <= {_MAX_SAMPLES:,}, got {d['n_samples']!r}{w}")
    if d["source"] == "spirals" and d["n_classes"] is not None and d["n_samples"] is not None \
            and d["n_classes"] > d["n_samples"]:
        raise ConfigError(f"data.n_classes = {d['n_classes']} needs data.n_samples >= {d['n_classes']} "
                          f"(one sample per class), got data.n_samples = {d['n_samples']}{w}")
    for key in ("epochs", "batch_size", "checkpoint_every", "keep_last"):
        if tr[key] < 1:
            raise ConfigError(f"training.{key} must be >= 1, got {tr[key]!r}{w}")
    if tr["patience"] < 0:
        raise ConfigError(f"training.patience must be >= 0, got {tr['patience']!r}{w}")
    if s["method"] not in ("random", "coarse_to_fine"):
        raise ConfigError(f"search.method must be random or coarse_to_fine, got {s['method']!r}{w}")
    if s["direction"] not in ("minimize", "maximize"):
        raise ConfigError(f"search.direction must be minimize or maximize, got {s['direction']!r}{w}")
    if s["method"] == "coarse_to_fine":
        top_k = _coarse_to_fine_top_k()
        if s["trials"] // s["rounds"] < top_k:
            raise ConfigError(f"search.method = 'coarse_to_fine' keeps the best {top_k} trials of each of "
                              f"search.rounds = {s['rounds']} rounds, so search.trials must be >= "
                              f"{top_k * s['rounds']} ({top_k} per round), got {s['trials']}{w}")
    try:
        build_optimizer(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[optimizer]: {e}{w}") from None
    try:
        build_schedule(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[schedule]: {e}{w}") from None
    if s["metric"] not in METRICS:
        raise ConfigError(f"search.metric must be one of {list(METRICS)} (what a trial reports), "
                          f"got {s['metric']!r}{w}")
    try:
        space = build_space(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"[search.space]: {e}{w}") from None
    _validate_space_values(cfg, space, w)


METRICS = ("dev_loss", "dev_accuracy", "train_loss", "epochs")   # what a `pydl tune` trial reports
# A generated set (moons, circles, spirals) is 2-D points: 10 million rows are 160 MB of
# float64, far beyond what these toy sets are for, and a larger count is a typo.
_MAX_SAMPLES = 10_000_000


def _coarse_to_fine_top_k() -> int:
    """The top_k of the rounds `pydl tune` runs (tune.coarse_to_fine's default)."""
    from . import tune

    return inspect.signature(tune.coarse_to_fine).parameters["top_k"].default


def _space_values(value) -> list:
    """The values of one space entry that must be valid config values: an interval's ends,
    every choice, or the constant itself."""
    from . import tune

    if isinstance(value, tune.Choice):
        return list(value.options)
    if isinstance(value, (tune.RandInt, tune.Uniform, tune.LogUniform, tune.OneMinusLogUniform)):
        return [value.low, value.high]
    return [value]


def _validate_space_values(cfg: dict, space: dict, w: str) -> None:
    """Each space key must name a config key, and each end of its range (each choice) must be a
    valid value of it: the config is validated with that value substituted."""
    base = copy.deepcopy(cfg)
    base["search"]["space"] = {}
    for dotted, value in space.items():
        section, key = dotted.split(".", 1)
        if section not in _OPEN_SECTIONS and key not in DEFAULTS[section]:
            raise ConfigError(f"[search.space]: {dotted!r} is not a config key; valid {section} keys are "
                              f"{', '.join(f'{section}.{k}' for k in sorted(DEFAULTS[section]))}{w}")
        # The other space keys as a trial may set them: a key such as optimizer.beta is
        # valid only with the optimizer.name that takes it, so each value is checked with
        # every choice of its section's name (and the other keys at their first values).
        others = {k: _space_values(v)[0] for k, v in space.items() if k != dotted}
        name_key = f"{section}.name"
        names = _space_values(space[name_key]) if name_key in space and name_key != dotted else [None]
        for v in _space_values(value):
            errors = []
            for name in names:
                params = {**others, dotted: v, **({name_key: name} if name is not None else {})}
                try:
                    validate_config(with_params(base, params))
                    break
                except ConfigError as e:
                    errors.append(e)
            else:
                raise ConfigError(f"[search.space]: {dotted!r} = {value!r} can take the value {v!r}, "
                                  f"which the config refuses: {errors[0]}{w}") from None


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # a zip's first entry, or an empty zip
# what a truncated or corrupt .npz/.npy raises from numpy, zipfile or zlib
_CORRUPT = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _load_array_file(p: str, key: str):
    """The arrays of the data file p (named by the config key ``key``): {"X", "y"} from a
    .npz, {"": array} from a .npy or .csv. Every failure is a one-line ConfigError naming
    the key and the file."""
    if not os.path.exists(p):
        raise ConfigError(f"{key}: data file {p} does not exist")
    ext = os.path.splitext(p)[1].lower()
    if ext not in (".npz", ".npy", ".csv"):
        raise ConfigError(f"{key}: data file {p} must be .npz, .npy or .csv")
    if ext == ".csv":
        try:
            with warnings.catch_warnings():  # numpy warns of an empty file: said below instead
                warnings.simplefilter("ignore")
                arr = np.loadtxt(p, delimiter=",", ndmin=2)
        except (OSError, ValueError) as e:  # (UnicodeDecodeError is a ValueError)
            raise ConfigError(f"{key}: cannot read {p} as CSV ({e}); it must hold numbers only, "
                              "no header row, the label in the last column") from None
        if arr.size == 0:
            raise ConfigError(f"{key}: {p} holds no rows")
        return {"": arr}
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {p}: {e.strerror or e}") from None
    kind = "a .npz (a zip archive of .npy arrays)" if ext == ".npz" else "a .npy array file"
    if not head.startswith(_ZIP_MAGIC if ext == ".npz" else _NPY_MAGIC):
        raise ConfigError(f"{key}: {p} is not a readable .{ext[1:]} file: it does not start as {kind}")
    try:
        if ext == ".npy":
            return {"": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            if "X" not in z.files or "y" not in z.files:
                raise ConfigError(f"{key}: {p} must hold arrays named X and y, has {z.files}")
            return {"X": z["X"], "y": z["y"]}
    except ConfigError:
        raise
    except _CORRUPT as e:
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise ConfigError(f"{key}: {p} holds Python objects (pickled data), which pydl does not "
                              "load; save numeric arrays") from None
        reason = str(e) or type(e).__name__
        raise ConfigError(f"{key}: {p} is not a readable .{ext[1:]} file (truncated or corrupt: "
                          f"{reason})") from None


def _load_one_array(p: str, key: str):
    """The array of the .npy or .csv file p (named by the config key ``key``)."""
    arrays = _load_array_file(p, key)
    if "" not in arrays:  # a .npz holds both: data.path takes it
        raise ConfigError(f"{key}: {p} is a .npz (X and y together); give it as data.path, or "
                          "give data.x_path and data.y_path as .npy or .csv")
    return arrays[""]


def _read_file_data(d: dict):
    """(X, y) of data.path (or data.x_path and data.y_path), checked: X (m, n) numbers with
    n >= 1, y (m,) or (m, k) numbers, a label column (m, 1) flattened to (m,); every
    failure is a ConfigError naming the key and the file."""
    if d.get("path"):
        p = d["path"]
        xkey = ykey = "data.path"
        arrays = _load_array_file(p, "data.path")
        if "X" in arrays:
            X, y = arrays["X"], arrays["y"]
            xwhat, ywhat = f"X in {p}", f"the labels (y) in {p}"
        else:
            arr = arrays[""]
            if arr.ndim != 2 or arr.shape[1] < 2:
                ncols = arr.shape[1] if arr.ndim == 2 else 1
                raise ConfigError(f"data.path: {p} has {ncols} column{'s' * (ncols != 1)}; it needs the "
                                  "features then the label, at least 2 columns")
            X, y = arr[:, :-1], arr[:, -1]
            xwhat, ywhat = f"the features of {p}", f"the labels (last column) of {p}"
    else:
        xp, yp = d["x_path"], d["y_path"]
        xkey, ykey = "data.x_path", "data.y_path"
        X, y = (_load_one_array(p, key) for key, p in ((xkey, xp), (ykey, yp)))
        xwhat, ywhat = f"X in {xp}", f"the labels (y) in {yp}"
    if X.ndim != 2 or X.shape[1] < 1:
        raise ConfigError(f"{xkey}: {xwhat} must be a 2-D array (rows, features) with at least one "
                          f"feature, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ConfigError(f"{xkey}: {xwhat} must be numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ConfigError(f"{xkey}: {xwhat} must be finite numbers; row {i}, column {j} holds {X[i, j].item()}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a label column (m, 1): the same labels as (m,)
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] < 2):
        raise ConfigError(f"{ykey}: {ywhat} must have shape (m,) (one label per row) or (m, k) "
                          f"(one-hot), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ConfigError(f"{ykey}: {ywhat} are {y.shape[0]} rows but {xwhat} has {X.shape[0]} rows; "
                          "they must match")
    if y.dtype.kind not in "biuf":
        example = f" (e.g. {y.flat[0].item()!r})" if y.size else ""
        raise ConfigError(f"{ykey}: {ywhat} must be numbers, got dtype {y.dtype}{example}; give class "
                          "labels as integers 0..K-1")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        i = np.argwhere(~np.isfinite(y))[0]
        raise ConfigError(f"{ykey}: {ywhat} must be finite numbers; row {i[0]} holds {y[tuple(i)].item()}")
    return X, y, ykey, ywhat


def _check_class_labels(y, m: int, ykey: str, ywhat: str) -> None:
    """Labels that will be read as classes 0..K-1 (integer values in one column) must be
    >= 0 with K <= m, the number of rows. That bound is the convention of the generated
    sets (make_spirals: n_samples >= n_classes, one per class): a K beyond the rows is a
    mistake (ids, or integer targets, instead of class indices), and it keeps the output
    layer (hidden[-1] x K weights) no larger than one hidden layer's activations over the
    whole data, instead of a label such as 1e9 asking for hundreds of GiB."""
    if y.ndim != 1 or _infer_loss(y)[0] != "softmax_cross_entropy" or not y.size:
        return
    lo, hi = y.min(), y.max()
    if lo < 0:
        i = int(np.argmax(y < 0))
        raise ConfigError(f"{ykey}: {ywhat} are class labels, which must be integers 0..K-1; row {i} "
                          f"holds {y[i].item()!r}")
    if int(hi) >= m:
        i = int(np.argmax(y))
        raise ConfigError(f"{ykey}: {ywhat} are class labels 0..K-1 with K <= the number of rows ({m}); "
                          f"row {i} holds {y[i].item()!r}, which would make {int(hi) + 1} classes "
                          "(for real-valued targets, set model.loss = \"mse\")")


def _check_splits(cfg: dict, m: int, key: str, where: str) -> None:
    """ConfigError naming ``key``, the data's key (too few rows), or data.ratios (a split
    left without rows) when the m rows of the data (``where``: its file and the config)
    cannot be split train/dev/test, before anything trains on them."""
    from .data import _split_sizes

    d = cfg["data"]
    if m < 3:
        raise ConfigError(f"{key}: the data{where} has {m} row{'s' * (m != 1)}; a train/dev/test "
                          "split needs at least 3")
    try:
        _split_sizes(m, _split_ratios(cfg))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"data.ratios: {e}{where}") from None


def _split_ratios(cfg: dict):
    """data.ratios as pydl.data.train_dev_test_split takes it ("auto" or a tuple)."""
    r = cfg["data"]["ratios"]
    return r if r == "auto" else tuple(r)


def check_test_split(cfg: dict, path=None) -> None:
    """ConfigError naming data.ratios when the test ratio is 0 (for a command that reports
    test metrics, such as pydl train: pydl tune scores on dev only, and takes it)."""
    r = cfg["data"]["ratios"]
    if isinstance(r, list) and r[2] == 0:
        raise ConfigError(f"data.ratios must give test a ratio > 0 (pydl train reports the test "
                          f"metrics), got {r!r}{_where(path)}")


def load_data(cfg: dict, path=None):
    """(X, y) of the configured source, checked to split as data.ratios says (``path``: the
    config file, named in errors). A file's labels must be finite numbers, class labels
    0..K-1 with K <= its number of rows; a label column (m, 1) is returned as (m,)."""
    from . import datasets

    d = cfg["data"]
    src = d["source"]
    if src == "digits":
        X, y = datasets.load_digits()
    elif src == "moons":
        X, y = datasets.make_moons(d["n_samples"], noise=d["noise"], seed=d["seed"])
    elif src == "circles":
        X, y = datasets.make_circles(d["n_samples"], noise=d["noise"], seed=d["seed"])
    elif src == "spirals":
        X, y = datasets.make_spirals(d["n_samples"], noise=d["noise"], seed=d["seed"], n_classes=d["n_classes"])
    else:
        X, y, ykey, ywhat = _read_file_data(d)
        key = "data.path" if d.get("path") else "data.x_path"
        _check_splits(cfg, X.shape[0], key, f" ({d.get('path') or d['x_path']}){_where(path)}")
        if cfg["model"].get("loss") in (None, "softmax_cross_entropy"):
            _check_class_labels(y, X.shape[0], ykey, ywhat)
        return X, y
    _check_splits(cfg, X.shape[0], "data.n_samples", _where(path))
    return X, y


def _infer_loss(y) -> tuple[str, int]:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y must be numeric labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y must be finite numbers; it holds NaN or inf")
    if y.ndim == 2 and y.shape[1] > 1:
        return "softmax_cross_entropy", y.shape[1]
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        return "mse", 1 if y.ndim == 1 else y.shape[1]
    k = int(y.max()) + 1 if y.size else 2
    return "softmax_cross_entropy", max(k, 2)


def _losses_for(y) -> list:
    """The losses whose output layer build_model can fit to the labels y."""
    y = np.asarray(y)
    loss, _ = _infer_loss(y)
    column = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    in01 = bool(y.size) and y.dtype.kind in "biuf" and bool(np.all((y >= 0) & (y <= 1)))
    if not column:
        return ["softmax_cross_entropy", "mse"]
    # mse fits any column of numbers: whole-number targets (counts, ages) too
    fits = ["softmax_cross_entropy", "mse"] if loss == "softmax_cross_entropy" else ["mse"]
    return fits + (["sigmoid_cross_entropy"] if in01 else [])


def _describe_labels(y) -> str:
    y = np.asarray(y)
    loss, k = _infer_loss(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return f"{y.shape[1]} columns per example"
    if loss == "softmax_cross_entropy":
        return f"class labels 0..{k - 1}"
    return "real-valued targets"


def check_loss(loss: str, y, path=None) -> None:
    """ConfigError naming model.loss (and the config file) when ``loss`` cannot fit labels y."""
    fits = _losses_for(y)
    if loss not in fits:
        raise ConfigError(f"model.loss = {loss!r} does not fit the labels ({_describe_labels(y)}); "
                          f"losses that fit them: {', '.join(fits)}{_where(path)}")


def build_model(cfg: dict, n_in: int, y, path=None):
    """An mlp() from [model] for inputs of width n_in and labels y (``path``: the config
    file, named in errors)."""
    from .model import mlp

    mdl = cfg["model"]
    loss, n_out = _infer_loss(y)
    if mdl.get("loss"):
        check_loss(mdl["loss"], y, path)
        loss = mdl["loss"]
        if loss == "sigmoid_cross_entropy":
            n_out = 1
        elif loss == "mse":  # one output per target column (whole-number targets too)
            n_out = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    return mlp([n_in, *mdl["hidden"], n_out], activation=mdl["activation"], batchnorm=mdl["batchnorm"],
               keep_prob=mdl["keep_prob"], l2=mdl["l2"], init=mdl["init"], loss=loss,
               seed=cfg["training"]["seed"])


def build_optimizer(cfg: dict):
    from .optim import get_optimizer

    opt = dict(cfg["optimizer"])
    name = opt.pop("name", "adam")
    return get_optimizer(name, **opt)


_SCHEDULES = {"constant": "Constant", "inverse_time": "InverseTimeDecay", "exponential": "ExponentialDecay",
              "inverse_sqrt": "InverseSqrtDecay", "staircase": "StaircaseDecay"}


def build_schedule(cfg: dict):
    """A pydl.schedules object whose lr0 is optimizer.lr, or None for a constant rate."""
    from . import schedules

    sch = dict(cfg["schedule"])
    name = sch.pop("name", "constant")
    if not isinstance(name, str) or name not in _SCHEDULES:
        raise ValueError(f"schedule.name must be one of {sorted(_SCHEDULES)}, got {name!r}")
    if name == "constant":
        if sch:
            raise ValueError(f"a constant schedule takes no keys, got {sorted(sch)}")
        return None
    cls = getattr(schedules, _SCHEDULES[name])
    params = list(inspect.signature(cls).parameters.values())[1:]  # after lr0 (optimizer.lr)
    unknown = sorted(set(sch) - {p.name for p in params})
    if unknown:
        raise ValueError(f"schedule {name!r} takes no key {', '.join(map(repr, unknown))}; its keys "
                         f"are {', '.join(p.name for p in params)} (lr0 is optimizer.lr)")
    missing = [p.name for p in params if p.default is p.empty and p.name not in sch]
    if missing:
        raise ValueError(f"schedule {name!r} needs {', '.join('schedule.' + k for k in missing)}")
    return cls(cfg["optimizer"].get("lr", 1e-3), **sch)


def build_space(cfg: dict) -> dict:
    """{"section.key": distribution or constant} from [search.space]."""
    from . import tune

    space = {}
    for key, spec in cfg["search"]["space"].items():
        if "." not in key or key.split(".", 1)[0] not in ("model", "optimizer", "schedule", "training", "data"):
            raise ValueError(f"search.space key {key!r} must be 'section.key', e.g. 'optimizer.lr'")
        if isinstance(spec, dict):
            spec = dict(spec)
            dist = spec.pop("dist", None)
            if not isinstance(dist, str):
                raise ValueError(f"{key}: dist must be a str (uniform, loguniform, one_minus_loguniform, "
                                 f"randint or choice), got {dist!r}")
            makers = {"uniform": tune.uniform, "loguniform": tune.loguniform,
                      "one_minus_loguniform": tune.one_minus_loguniform, "randint": tune.randint}
            if dist in makers:
                if set(spec) != {"low", "high"}:
                    raise ValueError(f"{key}: {dist} needs exactly low and high, got {sorted(spec)}")
                space[key] = makers[dist](spec["low"], spec["high"])
            elif dist == "choice":
                if set(spec) != {"values"}:
                    raise ValueError(f"{key}: choice needs values = [...]")
                space[key] = tune.choice(spec["values"])
            else:
                raise ValueError(f"{key}: dist must be uniform, loguniform, one_minus_loguniform, randint "
                                 f"or choice, got {dist!r}")
        else:
            space[key] = spec
    return space


def with_params(cfg: dict, params: dict) -> dict:
    """A copy of cfg with {"section.key": value} applied."""
    out = copy.deepcopy(cfg)
    for dotted, value in params.items():
        section, key = dotted.split(".", 1)
        out[section][key] = value
    return out
