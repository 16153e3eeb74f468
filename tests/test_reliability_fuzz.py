"""Fuzz pydl.ops: random shapes (tiny to big enough for the OpenMP paths), dtypes, strides
(non-contiguous views, Fortran order, negative strides), read-only outputs, None and lists in
place of arrays, NaN/inf/huge values, and random hyperparameters.

For every call an oracle written from the binding rules (same float dtype everywhere,
C-contiguous, exact shapes, writable outputs, non-empty axes, hyperparameters in range)
says whether it is valid. A valid call must succeed and, on finite inputs, match a float64
NumPy reference; an invalid one must raise TypeError or ValueError. Either way the process
must survive (run it under tools/sanitize.sh for ASan/UBSan).

1,000+ examples when the environment variable CI is set, 200 otherwise.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import g_ref, gprime_of_a
from pydl import ops

N_EXAMPLES = 1200 if os.environ.get("CI") else 200
STATS = {"valid": 0, "invalid": 0, "checked against NumPy": 0}
ACTS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"]


# ------------------------------------------------------------------ references (float64)
def softmax64(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# Each op: arrays (name -> (shape from dims, role)), how dims are read from the arrays, the
# hyperparameters, and a reference returning {output name: expected} (+ "return").
# Roles: in, out (written), inout (read and written), opt_* (None allowed), labels.
def _dense_fwd_ref(a, h):
    return {"A": g_ref(a["A_prev"] @ a["W"].T + (0 if a["b"] is None else a["b"]), h["activation"], h["alpha"])}


def _dense_bwd_ref(a, h):
    dZ = a["dZ"] * gprime_of_a(a["A"], h["activation"], h["alpha"])
    m = a["A_prev"].shape[0]
    out = {"dZ": dZ, "dW": dZ.T @ a["A_prev"] + h["l2"] / m * a["W"] + h["l1"] / (2 * m) * np.sign(a["W"])}
    if a["db"] is not None:
        out["db"] = dZ.sum(axis=0)
    if a["dA_prev"] is not None:
        out["dA_prev"] = dZ @ a["W"]
    return out


def _bn_train_ref(a, h):
    Z = a["Z"]
    m = Z.shape[0]
    mu, var = Z.mean(axis=0), Z.var(axis=0)
    inv = 1 / np.sqrt(var + h["eps"])
    xhat = (Z - mu) * inv
    out = {"mean": mu, "invstd": inv,
           "out": g_ref(a["gamma"] * xhat + a["beta"], h["activation"], h["alpha"])}
    if a["running_mean"] is not None:
        mom = h["momentum"]
        out["running_mean"] = mom * a["running_mean"] + (1 - mom) * mu
        out["running_var"] = mom * a["running_var"] + (1 - mom) * (var * m / (m - 1) if m > 1 else var)
    return out


def _bn_eval_ref(a, h):
    xhat = (a["Z"] - a["running_mean"]) / np.sqrt(a["running_var"] + h["eps"])
    return {"out": g_ref(a["gamma"] * xhat + a["beta"], h["activation"], h["alpha"])}


def _bn_bwd_ref(a, h):
    gr = a["dout"] * gprime_of_a(a["out"], h["activation"], h["alpha"])
    m = gr.shape[0]
    xhat = (a["Z"] - a["mean"]) * a["invstd"]
    dbeta, dgamma = gr.sum(axis=0), (gr * xhat).sum(axis=0)
    return {"dbeta": dbeta, "dgamma": dgamma,
            "dZ": a["gamma"] * a["invstd"] / m * (m * gr - dbeta - xhat * dgamma)}


def _sce_ref(a, h):
    Z = a["Z"]
    m, C = Z.shape
    Y = np.eye(C)[a["labels"]] if a.get("labels") is not None else a["Y"]
    lse = np.log(np.exp(Z - Z.max(axis=1, keepdims=True)).sum(axis=1)) + Z.max(axis=1)
    out = {"return": float((Y * (lse[:, None] - Z)).sum() / m)}
    if a["dZ"] is not None:
        out["dZ"] = (softmax64(Z) - Y) / m
    return out


def _sig_ref(a, h):
    Z, Y = a["Z"], a["Y"]
    m = Z.shape[0]
    out = {"return": float((np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).sum() / m)}
    if a["dZ"] is not None:
        out["dZ"] = (1 / (1 + np.exp(-Z)) - Y) / m
    return out


def _mse_ref(a, h):
    d = a["Yhat"] - a["Y"]
    out = {"return": float((d * d).mean())}
    if a["dZ"] is not None:
        out["dZ"] = 2 * d / d.size
    return out


def _momentum_ref(a, h):
    gr = a["grad"] + h["weight_decay"] * a["theta"]
    v = h["beta"] * a["v"] + (1 - h["beta"]) * gr
    step = h["beta"] * v + (1 - h["beta"]) * gr if h["nesterov"] else v
    return {"v": v, "theta": a["theta"] - h["lr"] * step}


def _rmsprop_ref(a, h):
    gr = a["grad"] + h["weight_decay"] * a["theta"]
    s = h["beta"] * a["s"] + (1 - h["beta"]) * gr * gr
    return {"s": s, "theta": a["theta"] - h["lr"] * gr / (np.sqrt(s) + h["eps"])}


def _adam_ref(a, h):
    th = a["theta"]
    gr = a["grad"] + (0 if h["decoupled"] else h["weight_decay"]) * th
    v = h["beta1"] * a["v"] + (1 - h["beta1"]) * gr
    s = h["beta2"] * a["s"] + (1 - h["beta2"]) * gr * gr
    vhat, shat = v / (1 - h["beta1"] ** h["t"]), s / (1 - h["beta2"] ** h["t"])
    new = th - h["lr"] * vhat / (np.sqrt(shat) + h["eps"])
    if h["decoupled"]:
        new = new - h["lr"] * h["weight_decay"] * th
    return {"v": v, "s": s, "theta": new}


MN = lambda d: (d["m"], d["n"])  # noqa: E731
N = lambda d: (d["n"],)  # noqa: E731

OPS = {
    "dense_forward": dict(
        arrays={"A": (lambda d: (d["m"], d["n_out"]), "out"), "A_prev": (lambda d: (d["m"], d["n_in"]), "in"),
                "W": (lambda d: (d["n_out"], d["n_in"]), "in"), "b": (lambda d: (d["n_out"],), "opt_in")},
        dims=lambda a: dict(m=a["A_prev"].shape[0], n_in=a["A_prev"].shape[1], n_out=a["W"].shape[0]),
        source={"A_prev": 2, "W": 2}, hypers=["activation", "alpha"], ref=_dense_fwd_ref),
    "dense_backward": dict(
        arrays={"dA_prev": (lambda d: (d["m"], d["n_in"]), "opt_out"), "dW": (lambda d: (d["n_out"], d["n_in"]), "out"),
                "db": (lambda d: (d["n_out"],), "opt_out"), "dZ": (lambda d: (d["m"], d["n_out"]), "inout"),
                "A": (lambda d: (d["m"], d["n_out"]), "in"), "A_prev": (lambda d: (d["m"], d["n_in"]), "in"),
                "W": (lambda d: (d["n_out"], d["n_in"]), "in")},
        dims=lambda a: dict(m=a["A_prev"].shape[0], n_in=a["A_prev"].shape[1], n_out=a["W"].shape[0]),
        source={"A_prev": 2, "W": 2}, hypers=["activation", "alpha", "l2", "l1"], ref=_dense_bwd_ref),
    "activation_forward": dict(
        arrays={"A": (lambda d: d["shape"], "out"), "Z": (lambda d: d["shape"], "in")},
        dims=lambda a: dict(shape=a["Z"].shape), source={"Z": None}, hypers=["activation", "alpha"],
        ref=lambda a, h: {"A": g_ref(a["Z"], h["activation"], h["alpha"])}),
    "activation_backward": dict(
        arrays={"dZ": (lambda d: d["shape"], "out"), "dA": (lambda d: d["shape"], "in"), "A": (lambda d: d["shape"], "in")},
        dims=lambda a: dict(shape=a["A"].shape), source={"A": None}, hypers=["activation", "alpha"],
        ref=lambda a, h: {"dZ": a["dA"] * gprime_of_a(a["A"], h["activation"], h["alpha"])}),
    "weight_penalty": dict(
        arrays={"W": (lambda d: d["shape"], "in")}, dims=lambda a: dict(shape=a["W"].shape), source={"W": None},
        hypers=["l2", "l1", "m"],
        ref=lambda a, h: {"return": float((h["l2"] * (a["W"] ** 2).sum() + h["l1"] * np.abs(a["W"]).sum()) / (2 * h["m"]))}),
    "batchnorm_forward_train": dict(
        arrays={"out": (MN, "out"), "mean": (N, "out"), "invstd": (N, "out"),
                "running_mean": (N, "opt_inout"), "running_var": (N, "opt_inout_pos"), "Z": (MN, "in"),
                "gamma": (N, "in"), "beta": (N, "in")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2},
        hypers=["momentum", "eps", "activation", "alpha"], ref=_bn_train_ref),
    "batchnorm_forward_eval": dict(
        arrays={"out": (MN, "out"), "Z": (MN, "in"), "gamma": (N, "in"), "beta": (N, "in"),
                "running_mean": (N, "in"), "running_var": (N, "in_pos")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2},
        hypers=["eps", "activation", "alpha"], ref=_bn_eval_ref),
    "batchnorm_backward": dict(
        arrays={"dZ": (MN, "out"), "dgamma": (N, "out"), "dbeta": (N, "out"), "dout": (MN, "in"),
                "out": (MN, "in"), "Z": (MN, "in"), "gamma": (N, "in"), "mean": (N, "in"),
                "invstd": (N, "in_pos")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2},
        hypers=["activation", "alpha"], ref=_bn_bwd_ref),
    "softmax_cross_entropy": dict(
        arrays={"dZ": (MN, "opt_out"), "Z": (MN, "in"), "labels": (lambda d: (d["m"],), "labels")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2}, hypers=[], ref=_sce_ref),
    "softmax_cross_entropy_onehot": dict(
        arrays={"dZ": (MN, "opt_out"), "Z": (MN, "in"), "Y": (MN, "in")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2}, hypers=[], ref=_sce_ref),
    "softmax": dict(
        arrays={"P": (MN, "out"), "Z": (MN, "in")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2}, hypers=[],
        ref=lambda a, h: {"P": softmax64(a["Z"])}),
    "sigmoid_cross_entropy": dict(
        arrays={"dZ": (MN, "opt_out"), "Z": (MN, "in"), "Y": (MN, "in01")},
        dims=lambda a: dict(m=a["Z"].shape[0], n=a["Z"].shape[1]), source={"Z": 2}, hypers=[], ref=_sig_ref),
    "mean_squared_error": dict(
        arrays={"dZ": (lambda d: d["shape"], "opt_out"), "Yhat": (lambda d: d["shape"], "in"),
                "Y": (lambda d: d["shape"], "in")},
        dims=lambda a: dict(shape=a["Yhat"].shape), source={"Yhat": None}, hypers=[], ref=_mse_ref),
    "dropout_forward": dict(
        arrays={"out": (lambda d: d["shape"], "out"), "A": (lambda d: d["shape"], "in")},
        dims=lambda a: dict(shape=a["A"].shape), source={"A": None}, hypers=["seed", "step", "layer", "keep_prob"],
        ref=None),
    "sgd_step": dict(
        arrays={"theta": (lambda d: (d["p"],), "inout"), "grad": (lambda d: (d["p"],), "in")},
        dims=lambda a: dict(p=a["theta"].shape[0]), source={"theta": 1}, hypers=["lr", "weight_decay"],
        ref=lambda a, h: {"theta": a["theta"] - h["lr"] * (a["grad"] + h["weight_decay"] * a["theta"])}),
    "momentum_step": dict(
        arrays={"theta": (lambda d: (d["p"],), "inout"), "v": (lambda d: (d["p"],), "inout"),
                "grad": (lambda d: (d["p"],), "in")},
        dims=lambda a: dict(p=a["theta"].shape[0]), source={"theta": 1},
        hypers=["lr", "beta", "nesterov", "weight_decay"], ref=_momentum_ref),
    "rmsprop_step": dict(
        arrays={"theta": (lambda d: (d["p"],), "inout"), "s": (lambda d: (d["p"],), "inout_pos"),
                "grad": (lambda d: (d["p"],), "in")},
        dims=lambda a: dict(p=a["theta"].shape[0]), source={"theta": 1},
        hypers=["lr", "beta", "eps", "weight_decay"], ref=_rmsprop_ref),
    "adam_step": dict(
        arrays={"theta": (lambda d: (d["p"],), "inout"), "v": (lambda d: (d["p"],), "inout"),
                "s": (lambda d: (d["p"],), "inout_pos"), "grad": (lambda d: (d["p"],), "in")},
        dims=lambda a: dict(p=a["theta"].shape[0]), source={"theta": 1},
        hypers=["lr", "beta1", "beta2", "eps", "t", "weight_decay", "decoupled"], ref=_adam_ref),
}

# hyperparameter -> (valid values strategy, invalid values (raise TypeError/ValueError))
_unit_open = st.floats(0, 1, exclude_max=True)


def _weight(hi):
    """A rate or penalty weight: 0, or a normal number of either dtype up to hi (below
    float32's smallest normal one the kernels would see 0: refused)."""
    return st.one_of(st.just(0.0), st.floats(float(np.finfo(np.float32).tiny), hi))


HYPERS = {
    "activation": (st.sampled_from(ACTS), ["swish", "", 3, None]),
    "alpha": (st.floats(1e-3, 0.999), [0.0, 1.0, -0.1, math.nan, "0.1"]),
    "l2": (_weight(10), [-1e-9, 5e-324, math.inf, math.nan, True]),
    "l1": (_weight(10), [-1.0, 5e-324, math.inf]),
    "m": (st.integers(1, 1000), [0, -1, 2**31, 1.5, None]),
    "momentum": (st.floats(0, 1), [-0.1, 1.1, math.nan]),
    "eps": (st.floats(1e-8, 1e-1), [0.0, -1e-5, math.inf, math.nan]),
    "seed": (st.integers(0, 2**64 - 1), [-1, 2**64, 0.5, "1"]),
    "step": (st.integers(0, 2**64 - 1), [-1, 2**64]),
    "layer": (st.integers(0, 2**64 - 1), [-3, 2**70]),
    "keep_prob": (st.floats(1e-3, 1), [0.0, -0.5, 1.0000001, math.nan, math.inf, None]),
    "lr": (_weight(1), [-1e-3, 5e-324, math.nan, math.inf, "0.1", None]),
    "weight_decay": (_weight(0.1), [-0.1, 5e-324, math.inf]),
    "beta": (_unit_open, [1.0, -0.1, math.nan]),
    "beta1": (_unit_open, [1.0, 2.0, math.nan]),
    "beta2": (_unit_open, [1.0, -1e-12, math.inf]),
    "t": (st.integers(1, 1000), [0, -5, 1.0]),
    "nesterov": (st.booleans(), []),
    "decoupled": (st.booleans(), []),
}

BAD_DTYPES = [np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, object, ">f8", "<U3"]


def _values(rng, shape, role, poison):
    if role.endswith("_pos"):
        a = rng.uniform(0.1, 3.0, shape)
    elif role == "in01":
        a = rng.uniform(0, 1, shape)
    else:
        a = rng.uniform(-3, 3, shape)
    if poison and a.size:
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e300])
    return a


def _mutate(a, kind, rng):
    """A broken (or, by chance, still valid) version of array a."""
    if kind == "dtype":
        d = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
        with np.errstate(all="ignore"):
            return a.astype(d) if d != "<U3" else a.astype(np.int64).astype(d)
    if kind == "other_float":
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64)
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else np.zeros(2, a.dtype)
        view = big[..., ::2] if a.ndim else big[::2]
        view[...] = a
        return view
    if kind == "reversed":
        return a[::-1] if a.ndim else a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if kind == "grow":
        if a.ndim == 0:
            return a.reshape(1)
        ax = int(rng.integers(a.ndim))
        return np.concatenate([a, a[(slice(None),) * ax + (slice(0, 1),)]], axis=ax)
    if kind == "shrink":
        if a.ndim == 0:
            return a
        ax = int(rng.integers(a.ndim))
        return a[(slice(None),) * ax + (slice(0, a.shape[ax] - 1),)]
    if kind == "empty":
        return a[:0] if a.ndim else a
    if kind == "extra_axis":
        return a[None]
    if kind == "drop_axis":
        return a[0] if a.ndim and a.shape[0] else a.reshape(-1)
    if kind == "none":
        return None
    if kind == "list":
        return a.tolist()
    raise AssertionError(kind)


MUTATIONS = ["dtype", "other_float", "strided", "reversed", "fortran", "readonly", "grow", "shrink",
             "empty", "extra_axis", "drop_axis", "none", "list"]


@st.composite
def calls(draw):
    name = draw(st.sampled_from(sorted(OPS)))
    spec = OPS[name]
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    big = draw(st.integers(0, 9)) == 0  # large enough for the OpenMP paths
    dims = dict(m=draw(st.integers(1, 5)), n_in=draw(st.integers(1, 6)), n_out=draw(st.integers(1, 6)),
                n=draw(st.integers(1, 7)), p=draw(st.integers(1, 40)))
    if big:
        # m * n >= 2^19: common.hpp's worth_parallel for the cheapest kernels
        dims.update(m=draw(st.integers(1030, 1100)), n=draw(st.integers(510, 530)),
                    n_out=draw(st.integers(510, 530)), p=draw(st.integers(2**19, 2**19 + 17)))
    ndim = draw(st.integers(1, 3))
    dims["shape"] = (dims["m"], dims["n"], 2)[:ndim] if not big else (dims["m"], dims["n"])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    poison = draw(st.integers(0, 7)) == 0
    args, mutated = {}, {}
    for arg, (shape_of, role) in spec["arrays"].items():
        shape = shape_of(dims)
        if role == "labels":
            C = dims["n"]
            a = rng.integers(0, C, shape).astype(np.int64)
            if draw(st.integers(0, 9)) == 0:  # out of range
                a[rng.integers(a.size)] = draw(st.sampled_from([-1, C, 2**40, -2**63]))
        else:
            with np.errstate(over="ignore"):  # poison 1e30 / -1e300 overflows float32: fine
                a = _values(rng, shape, role, poison and role in ("in", "inout", "in01")).astype(dtype)
            if role.startswith("opt") and draw(st.integers(0, 3)) == 0:
                a = None
        if a is not None and draw(st.integers(0, 11)) == 0:
            kind = draw(st.sampled_from(MUTATIONS))
            with np.errstate(all="ignore"):
                a = _mutate(a, kind, rng)
            mutated[arg] = kind
        args[arg] = a
    if name == "batchnorm_forward_train" and draw(st.integers(0, 9)) == 0:
        args["running_var"] = None  # only one of the pair: invalid
        mutated["running_var"] = "half_pair"
    hypers = {}
    for h in spec["hypers"]:
        valid, invalid = HYPERS[h]
        if invalid and draw(st.integers(0, 14)) == 0:
            hypers[h] = draw(st.sampled_from(invalid))
            mutated[h] = "hyper"
        else:
            hypers[h] = draw(valid)
    return name, dtype, dims, args, hypers, mutated, poison


def _valid(name, dims, args, hypers, mutated):
    """Whether the bindings must accept the call (mirror of their rules)."""
    spec = OPS[name]
    for h in hypers:
        if mutated.get(h) == "hyper" and not (h == "alpha" and hypers.get("activation") != "leaky_relu"):
            return False
    arrays = spec["arrays"]
    for arg, a in args.items():
        role = arrays[arg][1]
        if a is None:
            if not role.startswith("opt"):
                return False
            continue
        if not isinstance(a, np.ndarray):
            return False
    if name == "batchnorm_forward_train" and (args["running_mean"] is None) != (args["running_var"] is None):
        return False
    for src, nd in spec["source"].items():
        if nd is not None and args[src].ndim != nd:
            return False
    try:
        got = spec["dims"](args)
    except (IndexError, AttributeError):
        return False
    full = dict(dims, **got)
    dtype = args[next(iter(spec["source"]))].dtype  # the kernel's type comes from this one
    if dtype != np.dtype(np.float32) and dtype != np.dtype(np.float64):
        return False
    for arg, a in args.items():
        if a is None:
            continue
        shape_of, role = arrays[arg]
        if a.shape != shape_of(full) or 0 in a.shape or a.ndim == 0:
            return False
        if not a.flags.c_contiguous:
            return False
        if role == "labels":
            if a.dtype != np.int64 or (a.size and (a.min() < 0 or a.max() >= full["n"])):
                return False
            continue
        if a.dtype != dtype:
            return False
        if ("out" in role) and not a.flags.writeable:
            return False
    return True


def _call(name, args, hypers):
    fn = getattr(ops, name.replace("_onehot", ""))
    if name.startswith("softmax_cross_entropy"):
        return fn(args["dZ"], args["Z"], labels=args.get("labels"), Y=args.get("Y"))
    return fn(**args, **hypers)


@settings(max_examples=N_EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=calls())
def test_fuzz_ops(case):
    name, dtype, dims, args, hypers, mutated, poison = case
    valid = _valid(name, dims, args, hypers, mutated)
    before = {k: np.array(v, dtype=np.float64) for k, v in args.items()
              if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    with np.errstate(all="ignore"):
        if not valid:
            STATS["invalid"] += 1
            with pytest.raises((TypeError, ValueError)):
                _call(name, args, hypers)
            return
        STATS["valid"] += 1
        result = _call(name, args, hypers)
    if poison:
        return  # survived; no reference for NaN/inf arithmetic
    STATS["checked against NumPy"] += 1
    if name == "dropout_forward":
        tol = 1e-6
        A, out, kp = before["A"], args["out"].astype(np.float64), hypers["keep_prob"]
        kept = out != 0
        np.testing.assert_allclose(out[kept], A[kept] / kp, rtol=tol)
        again = np.empty_like(args["out"])
        ops.dropout_backward(again, args["A"], hypers["seed"], hypers["step"], hypers["layer"], kp)
        assert np.array_equal(again, args["out"]), "backward regenerated another mask"
        return
    dtype = args[next(iter(OPS[name]["source"]))].dtype
    tol = 1e-9 if dtype == np.float64 else 1e-3
    inputs = before | {k: v for k, v in args.items() if k not in before}
    expected = OPS[name]["ref"](inputs, hypers)
    # magnitude of the terms summed (the reference on |inputs|): float error is relative to it
    with np.errstate(all="ignore"):
        sizes = OPS[name]["ref"]({k: (np.abs(v) if k in before else v) for k, v in inputs.items()}, hypers)
    for key, want in expected.items():
        got = result if key == "return" else args[key]
        want = np.asarray(want, dtype=np.float64)
        scale = 1.0 + float(np.nan_to_num(np.abs(np.asarray(sizes[key], dtype=np.float64))).max())
        if want.size:
            scale = max(scale, 1.0 + float(np.abs(want).max()))
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=tol, atol=tol * scale,
                                   err_msg=f"{name} {key} ({dtype}, dims {dims}, hypers {hypers})")


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[reliability fuzz] {sum(STATS[k] for k in ('valid', 'invalid'))} calls of pydl.ops: "
          f"{STATS['invalid']} refused cleanly, {STATS['valid']} accepted, "
          f"{STATS['checked against NumPy']} checked against NumPy")
