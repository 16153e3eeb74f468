"""Bad input to every kernel (pydl.ops): a TypeError/ValueError whose message names the
argument, raised before any kernel runs (outputs untouched), never a crash.

Each op has a valid call (SPECS); every array argument is then replaced, one at a time, by
a broken version (None, a list, a wrong dtype, another float dtype, non-contiguous,
read-only, wrong shape or ndim, empty), and every hyperparameter by a bad value.
"""
import pickle
import re

import numpy as np
import pytest

from pydl import ops

M, N_IN, N_OUT, C, P = 5, 4, 3, 6, 12


def _r(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, shape).astype(dtype)


# Per op: a valid call for a float dtype, the outputs (must be writable), the optional
# arrays (None allowed), and the arrays whose shape the sizes are taken from (a wrong
# shape there shows up as a mismatch of another argument, which the message names).
SPECS = {
    "dense_forward": dict(
        make=lambda t: dict(A=_r(M, N_OUT, dtype=t), A_prev=_r(M, N_IN, dtype=t),
                            W=_r(N_OUT, N_IN, dtype=t), b=_r(N_OUT, dtype=t),
                            activation="leaky_relu", alpha=0.1),
        out={"A"}, optional={"b"}, sizes={"A_prev", "W"}),
    "dense_backward": dict(
        make=lambda t: dict(dA_prev=_r(M, N_IN, dtype=t), dW=_r(N_OUT, N_IN, dtype=t),
                            db=_r(N_OUT, dtype=t), dZ=_r(M, N_OUT, dtype=t),
                            A=_r(M, N_OUT, dtype=t), A_prev=_r(M, N_IN, dtype=t),
                            W=_r(N_OUT, N_IN, dtype=t), activation="leaky_relu", alpha=0.1,
                            l2=0.1, l1=0.1),
        out={"dA_prev", "dW", "db", "dZ"}, optional={"dA_prev", "db"}, sizes={"A_prev", "W"}),
    "activation_forward": dict(
        make=lambda t: dict(A=_r(M, N_OUT, dtype=t), Z=_r(M, N_OUT, dtype=t),
                            activation="leaky_relu", alpha=0.1),
        out={"A"}, optional=set(), sizes={"Z"}),
    "activation_backward": dict(
        make=lambda t: dict(dZ=_r(M, N_OUT, dtype=t), dA=_r(M, N_OUT, dtype=t),
                            A=_r(M, N_OUT, dtype=t), activation="leaky_relu", alpha=0.1),
        out={"dZ"}, optional=set(), sizes={"A"}),
    "weight_penalty": dict(
        make=lambda t: dict(W=_r(N_OUT, N_IN, dtype=t), l2=0.1, l1=0.1, m=M),
        out=set(), optional=set(), sizes={"W"}),
    "batchnorm_forward_train": dict(
        make=lambda t: dict(out=_r(M, N_OUT, dtype=t), mean=_r(N_OUT, dtype=t), invstd=_r(N_OUT, dtype=t),
                            running_mean=_r(N_OUT, dtype=t), running_var=_r(N_OUT, dtype=t),
                            Z=_r(M, N_OUT, dtype=t), gamma=_r(N_OUT, dtype=t),
                            beta=_r(N_OUT, dtype=t), momentum=0.9, eps=1e-5,
                            activation="leaky_relu", alpha=0.1),
        out={"out", "mean", "invstd", "running_mean", "running_var"},
        optional={"running_mean", "running_var"},  # only together (tested separately)
        sizes={"Z"}),
    "batchnorm_forward_eval": dict(
        make=lambda t: dict(out=_r(M, N_OUT, dtype=t), Z=_r(M, N_OUT, dtype=t),
                            gamma=_r(N_OUT, dtype=t), beta=_r(N_OUT, dtype=t),
                            running_mean=_r(N_OUT, dtype=t), running_var=_r(N_OUT, dtype=t),
                            eps=1e-5, activation="leaky_relu", alpha=0.1),
        out={"out"}, optional=set(), sizes={"Z"}),
    "batchnorm_backward": dict(
        make=lambda t: dict(dZ=_r(M, N_OUT, dtype=t), dgamma=_r(N_OUT, dtype=t),
                            dbeta=_r(N_OUT, dtype=t), dout=_r(M, N_OUT, dtype=t),
                            out=_r(M, N_OUT, dtype=t), Z=_r(M, N_OUT, dtype=t),
                            gamma=_r(N_OUT, dtype=t), mean=_r(N_OUT, dtype=t),
                            invstd=_r(N_OUT, dtype=t), activation="leaky_relu", alpha=0.1),
        out={"dZ", "dgamma", "dbeta"}, optional=set(), sizes={"Z"}),
    "softmax_cross_entropy": dict(
        make=lambda t: dict(dZ=_r(M, C, dtype=t), Z=_r(M, C, dtype=t),
                            labels=np.arange(M, dtype=np.int64) % C),
        out={"dZ"}, optional={"dZ", "labels"}, sizes={"Z"}),  # labels xor Y: tested below
    "softmax_cross_entropy_onehot": dict(
        make=lambda t: dict(dZ=_r(M, C, dtype=t), Z=_r(M, C, dtype=t), Y=_r(M, C, dtype=t)),
        out={"dZ"}, optional={"dZ", "Y"}, sizes={"Z"}),
    "softmax": dict(
        make=lambda t: dict(P=_r(M, C, dtype=t), Z=_r(M, C, dtype=t)),
        out={"P"}, optional=set(), sizes={"Z"}),
    "sigmoid_cross_entropy": dict(
        make=lambda t: dict(dZ=_r(M, 1, dtype=t), Z=_r(M, 1, dtype=t), Y=_r(M, 1, dtype=t)),
        out={"dZ"}, optional={"dZ"}, sizes={"Z"}),
    "mean_squared_error": dict(
        make=lambda t: dict(dZ=_r(M, 2, dtype=t), Yhat=_r(M, 2, dtype=t), Y=_r(M, 2, dtype=t)),
        out={"dZ"}, optional={"dZ"}, sizes={"Yhat"}),
    "dropout_forward": dict(
        make=lambda t: dict(out=_r(M, N_OUT, dtype=t), A=_r(M, N_OUT, dtype=t), seed=1, step=2,
                            layer=3, keep_prob=0.8),
        out={"out"}, optional=set(), sizes={"A"}),
    "dropout_backward": dict(
        make=lambda t: dict(dA=_r(M, N_OUT, dtype=t), dout=_r(M, N_OUT, dtype=t), seed=1,
                            step=2, layer=3, keep_prob=0.8),
        out={"dA"}, optional=set(), sizes={"dout"}),
    "sgd_step": dict(
        make=lambda t: dict(theta=_r(P, dtype=t), grad=_r(P, dtype=t), lr=0.1,
                            weight_decay=0.01),
        out={"theta"}, optional=set(), sizes={"theta"}),
    "momentum_step": dict(
        make=lambda t: dict(theta=_r(P, dtype=t), v=_r(P, dtype=t), grad=_r(P, dtype=t),
                            lr=0.1, beta=0.9, nesterov=True, weight_decay=0.01),
        out={"theta", "v"}, optional=set(), sizes={"theta"}),
    "rmsprop_step": dict(
        make=lambda t: dict(theta=_r(P, dtype=t), s=_r(P, dtype=t), grad=_r(P, dtype=t),
                            lr=0.1, beta=0.9, eps=1e-8, weight_decay=0.01),
        out={"theta", "s"}, optional=set(), sizes={"theta"}),
    "adam_step": dict(
        make=lambda t: dict(theta=_r(P, dtype=t), v=_r(P, dtype=t), s=_r(P, dtype=t),
                            grad=_r(P, dtype=t), lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                            t=3, weight_decay=0.01, decoupled=True),
        out={"theta", "v", "s"}, optional=set(), sizes={"theta"}),
}


def op_of(name):
    return getattr(ops, name.replace("_onehot", ""))


def arrays_of(kwargs):
    return [k for k, v in kwargs.items() if isinstance(v, np.ndarray)]


def names_regex(*names):
    """A message that starts with one of the names as a whole word ("A must ...", not
    "A_prev must ..."; not a name buried in a signature dump)."""
    return r"^(" + "|".join(re.escape(n) for n in names) + r")(?![\w])"


def call_expecting(name, kwargs, exc, names):
    """Call op `name`, expect exc naming one of `names`, and outputs left untouched."""
    before = {k: v.copy() for k, v in kwargs.items()
              if isinstance(v, np.ndarray) and k in SPECS[name]["out"]}
    with pytest.raises(exc, match=names_regex(*names)):
        op_of(name)(**kwargs)
    for k, v in before.items():
        assert np.array_equal(kwargs[k], v), f"{k} was written before the error"


def test_every_valid_call_runs():
    for name, spec in SPECS.items():
        for t in (np.float32, np.float64):
            op_of(name)(**spec["make"](t))


# ------------------------------------------------------------------ broken arrays


def _noncontiguous(a):
    """Same shape and values, every other element of a bigger buffer."""
    big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view


def _mutations(a, is_float):
    """(kind, broken array, expected exception) for array a."""
    other = np.float32 if a.dtype == np.float64 else np.float64
    out = [("None", None, TypeError), ("list", a.tolist(), TypeError),
           ("strided", _noncontiguous(a), ValueError),
           ("extra_row", np.concatenate([a, a[:1]]), ValueError),
           ("extra_axis", a[None], ValueError),
           ("empty", a[:0], ValueError)]
    if is_float:
        out += [(f"dtype_{d}", a.astype(d), TypeError)
                for d in ("int64", "int32", "float16", "complex128", "object", "bool")]
        out += [("mixed_float", a.astype(other), TypeError),
                ("bigendian", a.astype(a.dtype.newbyteorder(">")), TypeError)]
    else:
        out += [(f"dtype_{d}", a.astype(d), TypeError) for d in ("int32", "float64", "uint64")]
    if a.ndim == 2 and min(a.shape) > 1:
        # a transpose: the right shape, Fortran order
        out.append(("transposed", np.ascontiguousarray(a.T).T, ValueError))
    return out


def _array_cases():
    for name, spec in SPECS.items():
        for t in (np.float64, np.float32):
            kwargs = spec["make"](t)
            for arg in arrays_of(kwargs):
                a = kwargs[arg]
                for kind, _, _ in _mutations(a, a.dtype.kind == "f"):
                    if kind == "None" and arg in spec["optional"]:
                        continue  # valid
                    if name == "weight_penalty" and kind in ("extra_row", "extra_axis",
                                                             "mixed_float"):
                        continue  # W may have any shape and either float dtype
                    yield pytest.param(name, t, arg, kind, id=f"{name}-{t.__name__}-{arg}-{kind}")
                if arg in spec["out"]:
                    yield pytest.param(name, t, arg, "readonly",
                                       id=f"{name}-{t.__name__}-{arg}-readonly")


@pytest.mark.parametrize("name, dtype, arg, kind", list(_array_cases()))
def test_broken_array_argument_is_named(name, dtype, arg, kind):
    spec = SPECS[name]
    kwargs = spec["make"](dtype)
    a = kwargs[arg]
    if kind == "readonly":
        a.setflags(write=False)
        bad, exc = a, ValueError
    else:
        bad, exc = {k: (b, e) for k, b, e in _mutations(a, a.dtype.kind == "f")}[kind]
    kwargs[arg] = bad
    names = [arg]
    if kind in ("extra_row", "extra_axis") and arg in spec["sizes"]:
        names = arrays_of(spec["make"](dtype))  # the sizes come from arg: others mismatch
    if kind == "mixed_float" and arg in spec["sizes"] | {"A_prev", "dout"}:
        names = arrays_of(spec["make"](dtype))  # arg sets the call's dtype: others mismatch
    call_expecting(name, kwargs, exc, names)


def test_messages_say_what_is_expected():
    A, X, W = np.empty((5, 3)), np.empty((5, 4)), np.empty((3, 5))
    with pytest.raises(ValueError, match=r"W must have shape \(3, 4\), got \(3, 5\)"):
        ops.dense_forward(A, X, W)
    with pytest.raises(TypeError, match=r"W must have dtype float64 \(that of A_prev\), got float32"):
        ops.dense_forward(A, X, np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="A_prev must be float32 or float64, got int64"):
        ops.dense_forward(A, np.zeros((5, 4), np.int64), W)
    with pytest.raises(ValueError, match="A must be C-contiguous"):
        ops.dense_forward(np.empty((3, 5)).T, X, np.empty((3, 4)))
    with pytest.raises(ValueError, match="A must be writable"):
        A.setflags(write=False)
        ops.dense_forward(A, X, np.empty((3, 4)))
    with pytest.raises(TypeError, match="W must be a numpy array, got NoneType"):
        ops.dense_forward(np.empty((5, 3)), X, None)
    with pytest.raises(ValueError, match=r"grad must have shape \(10,\), got \(9,\)"):
        ops.sgd_step(np.zeros(10), np.zeros(9), 0.1)


@pytest.mark.parametrize("opt, state", [(o, b) for o in ("sgd_step", "momentum_step",
                                                        "rmsprop_step", "adam_step")
                                        for b in ("v", "s", "grad") if b in SPECS[o]["make"](float)])
@pytest.mark.parametrize("length", [P - 1, P + 1, 2 * P])
def test_optimizer_buffers_of_another_length(opt, state, length):
    kwargs = SPECS[opt]["make"](np.float64)
    kwargs[state] = np.zeros(length)
    call_expecting(opt, kwargs, ValueError, [state])


def test_pickled_arrays_are_accepted():
    # Arrays that went through pickle (Dask, multiprocessing) carry a copy of the dtype
    # object; an identity check on the dtype refused them with "must have dtype float64,
    # got float64".
    for t in (np.float32, np.float64):
        kwargs = SPECS["dense_backward"]["make"](t)
        kwargs = {k: pickle.loads(pickle.dumps(v)) for k, v in kwargs.items()}
        ops.dense_backward(**kwargs)
        labels = pickle.loads(pickle.dumps(np.array([0, 2, 1])))
        assert np.isfinite(ops.softmax_cross_entropy(None, _r(3, 4, dtype=t), labels=labels))


def test_sliced_but_contiguous_views_are_accepted():
    big = _r(10, N_IN)
    A = np.empty((M, N_OUT))
    ops.dense_forward(A, big[2:2 + M], _r(N_OUT, N_IN))  # row slice: still C-contiguous
    assert np.isfinite(A).all()


# ------------------------------------------------------------------ bad hyperparameters

NAN, INF = float("nan"), float("inf")
HYPER = [
    ("dense_forward", "activation", "softplus", ValueError),
    ("dense_forward", "activation", None, ValueError),
    ("dense_forward", "alpha", NAN, ValueError),
    ("dense_forward", "alpha", 0.0, ValueError),
    ("dense_forward", "alpha", 1.0, ValueError),
    ("dense_forward", "alpha", "0.1", TypeError),
    ("dense_backward", "l2", NAN, ValueError),
    ("dense_backward", "l2", INF, ValueError),
    ("dense_backward", "l2", -1.0, ValueError),
    ("dense_backward", "l1", -INF, ValueError),
    ("dense_backward", "l1", None, TypeError),
    ("dense_backward", "alpha", INF, ValueError),
    ("activation_forward", "activation", "ReLU", ValueError),
    ("activation_backward", "alpha", -0.5, ValueError),
    ("weight_penalty", "l2", NAN, ValueError),
    ("weight_penalty", "l1", -0.1, ValueError),
    ("weight_penalty", "m", 0, ValueError),
    ("weight_penalty", "m", 2**31, ValueError),
    ("weight_penalty", "m", 2.0, TypeError),
    ("weight_penalty", "m", True, TypeError),
    ("batchnorm_forward_train", "momentum", NAN, ValueError),
    ("batchnorm_forward_train", "momentum", 1.5, ValueError),
    ("batchnorm_forward_train", "momentum", -0.1, ValueError),
    ("batchnorm_forward_train", "eps", 0.0, ValueError),
    ("batchnorm_forward_train", "eps", INF, ValueError),
    ("batchnorm_forward_train", "eps", NAN, ValueError),
    ("batchnorm_forward_train", "activation", "gelu", ValueError),
    ("batchnorm_forward_eval", "eps", -1e-5, ValueError),
    ("batchnorm_backward", "alpha", NAN, ValueError),
    ("dropout_forward", "keep_prob", 0.0, ValueError),
    ("dropout_forward", "keep_prob", -0.2, ValueError),
    ("dropout_forward", "keep_prob", 1.0000001, ValueError),
    ("dropout_forward", "keep_prob", NAN, ValueError),
    ("dropout_forward", "keep_prob", INF, ValueError),
    ("dropout_forward", "seed", -1, ValueError),
    ("dropout_forward", "seed", 2**64, ValueError),
    ("dropout_forward", "step", 1.0, TypeError),
    ("dropout_forward", "layer", -3, ValueError),
    ("dropout_backward", "keep_prob", 2.0, ValueError),
    ("dropout_backward", "step", 2**64, ValueError),
    ("sgd_step", "lr", NAN, ValueError),
    ("sgd_step", "lr", INF, ValueError),
    ("sgd_step", "lr", -0.1, ValueError),
    ("sgd_step", "weight_decay", NAN, ValueError),
    ("momentum_step", "beta", 1.0, ValueError),
    ("momentum_step", "beta", NAN, ValueError),
    ("momentum_step", "lr", "fast", TypeError),
    ("rmsprop_step", "beta", -0.1, ValueError),
    ("rmsprop_step", "eps", 0.0, ValueError),
    ("rmsprop_step", "eps", NAN, ValueError),
    ("adam_step", "beta1", 1.0, ValueError),
    ("adam_step", "beta2", NAN, ValueError),
    ("adam_step", "eps", -1e-8, ValueError),
    ("adam_step", "t", 0, ValueError),
    ("adam_step", "t", 2**63, ValueError),
    ("adam_step", "t", 1.5, TypeError),
    ("adam_step", "t", True, TypeError),
    ("adam_step", "weight_decay", INF, ValueError),
    ("adam_step", "lr", np.float32("nan"), ValueError),
    # an int beyond float's range
    ("dense_forward", "alpha", 10**400, ValueError),
    ("adam_step", "lr", 10**400, ValueError),
    # eps below the dtype's normal range acts as 0 (subnormals are 0 in the optimizer steps)
    ("rmsprop_step", "eps", 1e-310, ValueError),
    ("adam_step", "eps", 1e-310, ValueError),
    ("batchnorm_forward_train", "eps", 1e-310, ValueError),
    ("batchnorm_forward_eval", "eps", 5e-324, ValueError),
    # flags must be bools: "no" would be truthy
    ("dense_forward", "batch_invariant", 1, TypeError),
    ("sgd_step", "check", "yes", TypeError),
    ("momentum_step", "nesterov", "no", TypeError),
    ("rmsprop_step", "check", None, TypeError),
    ("adam_step", "decoupled", "no", TypeError),
    ("adam_step", "check", 1, TypeError),
]


@pytest.mark.parametrize("name, param, value, exc", HYPER,
                         ids=[f"{n}-{p}-{v!r}" for n, p, v, _ in HYPER])
def test_bad_hyperparameter_is_named(name, param, value, exc):
    for t in (np.float64, np.float32):
        kwargs = SPECS[name]["make"](t)
        kwargs[param] = value
        call_expecting(name, kwargs, exc, [param])


def test_numpy_scalar_hyperparameters_are_accepted():
    kwargs = SPECS["adam_step"]["make"](np.float32)
    kwargs.update(lr=np.float32(0.01), beta1=np.float64(0.9), t=np.int64(2))
    ops.adam_step(**kwargs)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), (2**31, ValueError),
                                    (ops._thread_limit() + 1, ValueError), (10**5, ValueError),
                                    (1.0, TypeError), (None, TypeError)])
def test_bad_thread_count_is_named(n, exc):
    before = ops.get_num_threads()
    with pytest.raises(exc, match=names_regex("n")):
        ops.set_num_threads(n)
    assert ops.get_num_threads() == before


def test_thread_limit_allows_oversubscription():
    """OpenMP ends the process when it cannot start a thread (40000 threads here), so the
    count is capped, but well above the cores."""
    import os
    assert ops._thread_limit() >= max(64, 4 * len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("name, low_ok", [("adam_step", 1e-30), ("rmsprop_step", 1e-30),
                                          ("batchnorm_forward_train", 1e-30),
                                          ("batchnorm_forward_eval", 1e-30)])
def test_eps_must_be_a_normal_number_of_the_dtype(name, low_ok):
    """1e-40 is subnormal in float32 (0 to the optimizer steps) but normal in float64;
    1e39 is inf in float32."""
    for value in (1e-40, 1e39):
        call_expecting(name, dict(SPECS[name]["make"](np.float32), eps=value), ValueError, ["eps"])
        op_of(name)(**dict(SPECS[name]["make"](np.float64), eps=value))
    op_of(name)(**dict(SPECS[name]["make"](np.float32), eps=low_ok))


@pytest.mark.parametrize("name, param", [("dense_backward", "l2"), ("dense_backward", "l1"),
                                         ("weight_penalty", "l2"), ("weight_penalty", "l1"),
                                         ("sgd_step", "lr"), ("sgd_step", "weight_decay"),
                                         ("momentum_step", "lr"), ("momentum_step", "weight_decay"),
                                         ("rmsprop_step", "lr"), ("rmsprop_step", "weight_decay"),
                                         ("adam_step", "lr"), ("adam_step", "weight_decay")])
def test_rates_and_penalties_must_fit_the_dtype(name, param):
    """1e39 is inf in float32, where the kernels compute (l2 = 1e39 made dW NaN wherever W is
    0); float64 holds it, and float32 takes its largest finite number. Below the dtype's
    smallest normal number a rate acts as 0: refused (0 itself is a valid penalty weight)."""
    call_expecting(name, dict(SPECS[name]["make"](np.float32), **{param: 1e39}), ValueError,
                   [param])
    op_of(name)(**dict(SPECS[name]["make"](np.float64), **{param: 1e39}))
    op_of(name)(**dict(SPECS[name]["make"](np.float32), **{param: float(np.finfo(np.float32).max)}))
    # below the normal range the kernels see 0 (1e-40 rounds to a float32 subnormal)
    for dtype, tiny in ((np.float32, 1e-40), (np.float64, 1e-320)):
        call_expecting(name, dict(SPECS[name]["make"](dtype), **{param: tiny}), ValueError,
                       [param])
        op_of(name)(**dict(SPECS[name]["make"](dtype), **{param: float(np.finfo(dtype).tiny)}))
    op_of(name)(**dict(SPECS[name]["make"](np.float64), **{param: 1e-40}))


def test_gemm_kernel_needs_a_dtype():
    with pytest.raises(TypeError, match="dtype"):
        ops.gemm_kernel(4, 4, 4, dtype=None)


# ------------------------------------------------------------------ labels and pairs


@pytest.mark.parametrize("bad", [C, -1, 2**40, -(2**62)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_labels_out_of_range_raise(bad, dtype):
    kwargs = SPECS["softmax_cross_entropy"]["make"](dtype)
    kwargs["labels"][2] = bad
    with pytest.raises(ValueError, match=r"labels: 1 of them are outside \[0, 6\)"):
        ops.softmax_cross_entropy(**kwargs)
    kwargs["dZ"] = None
    with pytest.raises(ValueError, match="labels"):
        ops.softmax_cross_entropy(**kwargs)


def test_all_labels_out_of_range_on_a_large_batch():
    # big enough that the rows are split between threads (>= 2^19 elements: common.hpp)
    m, c = 180_000, 3
    labels = np.full(m, 7, dtype=np.int64)
    with pytest.raises(ValueError, match=f"labels: {m} of them are outside"):
        ops.softmax_cross_entropy(np.empty((m, c)), _r(m, c), labels=labels)


def test_labels_and_Y_exactly_one():
    Z, Y, labels = _r(M, C), _r(M, C), np.zeros(M, dtype=np.int64)
    with pytest.raises(ValueError, match=r"exactly one of labels .* and Y"):
        ops.softmax_cross_entropy(None, Z)
    with pytest.raises(ValueError, match=r"exactly one of labels .* and Y"):
        ops.softmax_cross_entropy(None, Z, labels=labels, Y=Y)


def test_running_stats_must_be_both_arrays_or_both_none():
    for drop in ("running_mean", "running_var"):
        kwargs = SPECS["batchnorm_forward_train"]["make"](np.float64)
        kwargs[drop] = None
        with pytest.raises(ValueError, match="running_mean and running_var must both be"):
            ops.batchnorm_forward_train(**kwargs)


def test_aliasing_allowed_where_documented():
    # documented in-place uses must keep working after all these checks
    Z = _r(M, N_OUT)
    ops.activation_forward(Z, Z, "tanh")
    ops.activation_backward(Z, Z, _r(M, N_OUT), "tanh")
    ops.softmax(Z, Z)
    ops.dropout_forward(Z, Z, 0, 0, 0, 0.5)
    d = _r(M, N_OUT)
    ops.batchnorm_backward(d, np.empty(N_OUT), np.empty(N_OUT), d, _r(M, N_OUT), _r(M, N_OUT),
                           _r(N_OUT), _r(N_OUT), _r(N_OUT))


# ------------------------------------------------------------------ overlapping arrays

# (op, output, input) pairs where the output may be the input itself: elementwise kernels,
# and batch norm's backward, whose dZ may hold dout.
IN_PLACE = {("activation_forward", "A", "Z"), ("activation_backward", "dZ", "dA"),
            ("activation_backward", "dZ", "A"), ("batchnorm_forward_eval", "out", "Z"),
            ("batchnorm_backward", "dZ", "dout"), ("softmax", "P", "Z"),
            ("dropout_forward", "out", "A"), ("dropout_backward", "dA", "dout")}


def _overlap_cases(dtypes=(np.float64, np.float32)):
    for name, spec in SPECS.items():
        for dtype in dtypes:
            kwargs = spec["make"](dtype)
            for out in sorted(spec["out"]):
                for other in arrays_of(kwargs):
                    # (int64 labels overlap only float64 arrays)
                    if other != out and kwargs[other].itemsize == kwargs[out].itemsize:
                        yield name, out, other, dtype


@pytest.mark.parametrize("name, out, other, dtype", list(_overlap_cases()))
def test_an_output_overlapping_another_argument_is_refused(name, out, other, dtype):
    """An output sharing memory with another argument (here: both views of one buffer,
    the other one element further on) is refused naming one of the two; the kernels would
    read values they had already overwritten."""
    kwargs = SPECS[name]["make"](dtype)
    a, b = kwargs[out], kwargs[other]
    buf = np.zeros(a.size + b.size, dtype)
    kwargs[out] = buf[:a.size].reshape(a.shape)
    kwargs[other] = buf[1:1 + b.size].view(b.dtype).reshape(b.shape)
    kwargs[out][...] = a
    kwargs[other][...] = b
    call_expecting(name, kwargs, ValueError, [out, other])


def _same_array_cases():
    for name, out, other, dtype in _overlap_cases():
        kwargs = SPECS[name]["make"](dtype)
        if kwargs[out].shape == kwargs[other].shape and kwargs[other].dtype == dtype:
            yield name, out, other, dtype


@pytest.mark.parametrize("name, out, other, dtype", list(_same_array_cases()))
def test_an_output_that_is_another_argument_works_only_in_place(name, out, other, dtype):
    """The same array as output and input: the documented in-place uses give what separate
    arrays give; any other pair is refused."""
    kwargs = SPECS[name]["make"](dtype)
    if (name, out, other) not in IN_PLACE:
        kwargs[out] = kwargs[other]
        call_expecting(name, kwargs, ValueError, [out, other])
        return
    separate = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    separate[out] = kwargs[other].copy()  # what the in-place call starts from
    ret_sep = op_of(name)(**separate)
    kwargs[out] = kwargs[other]
    ret_in = op_of(name)(**kwargs)
    np.testing.assert_array_equal(kwargs[out], separate[out])
    if isinstance(ret_sep, float):
        assert ret_in == ret_sep
