"""The one Python boundary to the compiled core ``pydl._core``.

Every function here checks its hyperparameters (finite, in range) and turns names into
the codes the kernels take; the core itself checks every array (dtype float32/float64,
the same for all float arrays of a call, C-contiguous, exact shape, writable outputs)
and raises ``TypeError``/``ValueError`` naming the argument before any kernel runs.
Kernels release the GIL.

Shapes: m = batch size, n_in = input features, n_out = output features, n = features,
C = classes. Row-major; weights ``W`` are (n_out, n_in). Outputs come first, as in the
kernels; a function whose docstring says "in place" overwrites that argument. An output
never shares memory with another argument (ValueError) unless it is that argument itself
where the kernel works in place: activations, dropout, softmax and batch norm's
evaluation forward elementwise, batch norm's backward over dout.
"""
from __future__ import annotations

import contextlib
import math
import os
from numbers import Integral, Real

import numpy as np

from . import _core

__all__ = [
    "ACTIVATIONS", "activation_code",
    "dense_forward", "dense_backward", "activation_forward", "activation_backward",
    "weight_penalty",
    "batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward",
    "softmax_cross_entropy", "softmax", "sigmoid_cross_entropy", "mean_squared_error",
    "dropout_forward", "dropout_backward",
    "sgd_step", "momentum_step", "rmsprop_step", "adam_step",
    "set_num_threads", "get_num_threads", "has_openmp", "gemm_kernel", "gemm_parts", "blas_core",
]

ACTIVATIONS = {"identity": 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4}
has_openmp: bool = bool(_core.has_openmp)
# pydl's own GEMM kernel: its vector width in bytes (64: AVX-512, 32: AVX), 0 if not built
own_gemm_vector_bytes: int = int(_core.own_gemm_vector_bytes)
has_own_gemm: bool = own_gemm_vector_bytes > 0


def activation_code(name: str) -> int:
    """Kernel code of an activation name (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def _real(name: str, value, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False) -> float:
    """A finite real in the interval; raises naming the argument otherwise."""
    if type(value) is not float:  # fast path: plain floats skip the ABC checks
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        try:
            value = float(value)
        except OverflowError:  # an int (or Fraction) beyond float's range
            raise ValueError(f"{name} must be finite, got a number too large for a float") from None
    if (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi) \
            and value - value == 0.0:
        return value
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if hi == math.inf:
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")


def _bool(name: str, value) -> bool:
    """A bool (or NumPy bool); any other truthy value is refused rather than taken as True."""
    if value is True or value is False or isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


# The normal range of the arrays' dtype. eps must lie in it: a smaller one is 0 to the
# kernels (it rounds to 0 in float32, or the optimizer steps count a subnormal as 0), and 0
# gives 0/0 where a gradient or a variance is 0. eps, rates and penalty weights above its
# top are inf in float32.
_FLOAT_RANGE = {np.dtype(t): (float(np.finfo(t).tiny), float(np.finfo(t).max))
                for t in (np.float32, np.float64)}


_FLOAT32_MAX = _FLOAT_RANGE[np.dtype(np.float32)][1]


def _eps(value, like) -> float:
    """eps > 0 (float), within the normal range of ``like``'s dtype when that is float32/64."""
    eps = _real("eps", value, 0.0, lo_open=True)
    lim = _FLOAT_RANGE.get(getattr(like, "dtype", None))
    if lim is not None and not lim[0] <= eps <= lim[1]:
        raise ValueError(f"eps must be in [{lim[0]:.4g}, {lim[1]:.4g}] for {like.dtype} arrays "
                         f"(a normal number: smaller ones act as 0), got {eps}")
    return eps


_FLOAT32_TINY = _FLOAT_RANGE[np.dtype(np.float32)][0]


def _factor(name: str, value, like) -> float:
    """A finite real >= 0 (a rate or a penalty's weight) that ``like``'s dtype can hold: 0
    or a normal number. The kernels compute in that dtype, where a larger one is inf (and
    inf * 0 is NaN) and a smaller one is 0 (rounded, or a subnormal, which they flush)."""
    v = _real(name, value, 0.0)
    if _FLOAT32_TINY <= v <= _FLOAT32_MAX or v == 0.0:  # within every dtype's normal range
        return v
    lim = _FLOAT_RANGE.get(getattr(like, "dtype", None))
    if lim is not None and v > lim[1]:
        raise ValueError(f"{name} must be at most {lim[1]:.4g} for {like.dtype} arrays (the "
                         f"largest finite {like.dtype}), got {v}")
    if lim is not None and v < lim[0]:
        raise ValueError(f"{name} must be at least {lim[0]:.4g} for {like.dtype} arrays (the "
                         f"smallest normal {like.dtype}: a smaller one acts as 0), got {v}")
    return v


def _int(name: str, value, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """An integer in [lo, hi] (hi: what the C++ parameter holds); raises naming it otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


_INT_MAX = 2**31 - 1


def _name_non_array(optional=(), **arrays) -> None:
    """Raise a TypeError naming the first argument that is not a NumPy array (None allowed
    for the names in ``optional``).

    Called only after _core refused its arguments with a TypeError: pybind11's own message
    lists the whole signature, not the culprit. Costs nothing on the normal path.
    """
    for name, value in arrays.items():
        if value is None and name in optional:
            continue
        if not isinstance(value, np.ndarray):
            want = "a numpy array or None" if name in optional else "a numpy array"
            raise TypeError(f"{name} must be {want}, got {type(value).__name__}") from None


def _alpha(activation: str, alpha) -> float:
    if activation == "leaky_relu":
        return _real("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    return 0.0


# ------------------------------------------------------------------ dense


def dense_forward(A, A_prev, W, b=None, activation="identity", alpha=0.01,
                  batch_invariant=False):
    """A = g(A_prev @ W.T + b), the activation fused as an epilogue.

    A (m, n_out) is written; A_prev (m, n_in); W (n_out, n_in); b (n_out,) or None.
    ``alpha`` is the leaky_relu slope (in (0, 1)).

    ``batch_invariant=True`` computes each row of A from its row of A_prev alone, the same
    bits whatever else is in the batch (A[i] equals the result for A_prev[i:i+1]): pydl's
    own GEMM kernel, in row blocks over the threads. Inference uses it so that a
    prediction does not depend on the batch. Where that kernel is not built (an x86-64
    build without AVX, e.g. ``-DPYDL_NATIVE=OFF``, or ARM: ``has_own_gemm`` is False) it is
    the BLAS, whose bits may depend on m.
    """
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    batch_invariant = _bool("batch_invariant", batch_invariant)
    try:
        _core.dense_forward(A, A_prev, W, b, code, alpha, batch_invariant)
    except TypeError:
        _name_non_array(("b",), A=A, A_prev=A_prev, W=W, b=b)
        raise
    return A


def dense_backward(dA_prev, dW, db, dZ, A, A_prev, W, activation="identity", alpha=0.01,
                   l2=0.0, l1=0.0):
    """Gradients of a dense layer from the gradient w.r.t. its output.

    In place: dZ holds dA = dJ/dA (m, n_out) on entry and dZ = dA * g'(A) on return.
    Writes  db = sum_i dZ[i] (n_out,) (or None to skip),
            dW = dZ.T @ A_prev + (l2/m) W + (l1/(2m)) sign(W)  (n_out, n_in),
            dA_prev = dZ @ W  (m, n_in) (or None for the first layer).
    A (m, n_out) is the layer's output g(Z); A_prev (m, n_in); W (n_out, n_in).
    """
    l2, l1 = _factor("l2", l2, W), _factor("l1", l1, W)
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.dense_backward(dA_prev, dW, db, dZ, A, A_prev, W, code, alpha, l2, l1)
    except TypeError:
        _name_non_array(("dA_prev", "db"), dA_prev=dA_prev, dW=dW, db=db, dZ=dZ, A=A,
                        A_prev=A_prev, W=W)
        raise
    return dA_prev, dW, db


def activation_forward(A, Z, activation, alpha=0.01):
    """A = g(Z) elementwise; A may be Z (in place). Same shape, any ndim."""
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.activation_forward(A, Z, code, alpha)
    except TypeError:
        _name_non_array(A=A, Z=Z)
        raise
    return A


def activation_backward(dZ, dA, A, activation, alpha=0.01):
    """dZ = dA * g'(Z), with g' written in terms of A = g(Z); dZ may be dA."""
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.activation_backward(dZ, dA, A, code, alpha)
    except TypeError:
        _name_non_array(dZ=dZ, dA=dA, A=A)
        raise
    return dZ


def weight_penalty(W, l2=0.0, l1=0.0, m=1) -> float:
    """Regularization cost of one weight matrix: l2/(2m) ||W||_F^2 + l1/(2m) sum |W|.
    l2 and l1 as dense_backward takes them (0, or normal numbers of W's dtype)."""
    l2, l1, m = _factor("l2", l2, W), _factor("l1", l1, W), _int("m", m, 1, _INT_MAX)
    try:
        return _core.weight_penalty(W, l2, l1, m)
    except TypeError:
        _name_non_array(W=W)
        raise


# ------------------------------------------------------------------ batch norm


def batchnorm_forward_train(out, mean, invstd, running_mean, running_var, Z, gamma, beta,
                            momentum=0.9, eps=1e-5, activation="identity", alpha=0.01):
    """Batch norm in training mode, per feature j over the batch, then g.

    mu = mean(Z[:, j]), var = mean((Z[:, j] - mu)^2) (biased), invstd = 1/sqrt(var + eps),
    xhat = (Z - mu) * invstd, out = g(gamma * xhat + beta).
    running_mean = momentum*running_mean + (1-momentum)*mu, running_var likewise with the
    unbiased variance var*m/(m-1); pass None for both to leave them untouched
    (gradient checking). out, Z (m, n); mean, invstd, running_* (n,).
    xhat is not stored: ``batchnorm_backward`` recomputes it from Z, mean and invstd, so Z
    must stay unchanged until then (and out must not be Z).
    """
    momentum = _real("momentum", momentum, 0.0, 1.0)
    eps = _eps(eps, Z)
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.batchnorm_forward_train(out, mean, invstd, running_mean, running_var, Z, gamma,
                                      beta, momentum, eps, code, alpha)
    except TypeError:
        _name_non_array(("running_mean", "running_var"), out=out, mean=mean, invstd=invstd,
                        running_mean=running_mean, running_var=running_var, Z=Z, gamma=gamma,
                        beta=beta)
        raise
    return out


def batchnorm_forward_eval(out, Z, gamma, beta, running_mean, running_var, eps=1e-5,
                           activation="identity", alpha=0.01):
    """out = g(gamma * (Z - running_mean) / sqrt(running_var + eps) + beta), (m, n)."""
    eps = _eps(eps, Z)
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.batchnorm_forward_eval(out, Z, gamma, beta, running_mean, running_var, eps, code,
                                     alpha)
    except TypeError:
        _name_non_array(out=out, Z=Z, gamma=gamma, beta=beta, running_mean=running_mean,
                        running_var=running_var)
        raise
    return out


def batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd,
                       activation="identity", alpha=0.01):
    """Batch norm backward in closed form, from the forward pass's Z, out, mean and invstd.

    g = dout * g'(out); xhat = (Z - mean) * invstd; dbeta = sum_i g; dgamma = sum_i g*xhat;
    dZ = gamma*invstd/m * (m*g - dbeta - xhat*dgamma), (m, n). dZ may be dout (in place);
    otherwise dout is only read.
    """
    code, alpha = activation_code(activation), _alpha(activation, alpha)
    try:
        _core.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd, code,
                                 alpha)
    except TypeError:
        _name_non_array(dZ=dZ, dgamma=dgamma, dbeta=dbeta, dout=dout, out=out, Z=Z,
                        gamma=gamma, mean=mean, invstd=invstd)
        raise
    return dZ


# ------------------------------------------------------------------ losses


def softmax_cross_entropy(dZ, Z, labels=None, Y=None) -> float:
    """J = -(1/m) sum_i sum_j Y_ij log softmax(Z)_ij from logits Z (m, C), stable.

    Labels are integer ids ``labels`` (m,) int64 in [0, C) or one-hot rows ``Y`` (m, C):
    exactly one. Writes dZ = (softmax(Z) - Y)/m (m, C) unless dZ is None. Returns J.
    A label outside [0, C) raises ValueError after the pass: dZ is then written already
    (the rows with a bad label are 0), so treat it as garbage.
    """
    try:
        return _core.softmax_cross_entropy(dZ, Z, labels, Y)
    except TypeError:
        _name_non_array(("dZ", "labels", "Y"), dZ=dZ, Z=Z, labels=labels, Y=Y)
        raise


def softmax(P, Z):
    """P = exp(Z - max) / sum exp(Z - max), row-wise; (m, C); P may be Z."""
    try:
        _core.softmax(P, Z)
    except TypeError:
        _name_non_array(P=P, Z=Z)
        raise
    return P


def sigmoid_cross_entropy(dZ, Z, Y) -> float:
    """J = (1/m) sum max(z,0) - z*y + log(1 + exp(-|z|)) from logits Z (m, k), targets Y.

    Writes dZ = (sigmoid(Z) - Y)/m unless dZ is None. Returns J.
    """
    try:
        return _core.sigmoid_cross_entropy(dZ, Z, Y)
    except TypeError:
        _name_non_array(("dZ",), dZ=dZ, Z=Z, Y=Y)
        raise


def mean_squared_error(dZ, Yhat, Y) -> float:
    """J = mean((Yhat - Y)^2) over all elements; dZ = 2 (Yhat - Y) / Yhat.size."""
    try:
        return _core.mean_squared_error(dZ, Yhat, Y)
    except TypeError:
        _name_non_array(("dZ",), dZ=dZ, Yhat=Yhat, Y=Y)
        raise


# ------------------------------------------------------------------ dropout


def _key(name, value) -> int:
    return _int(name, value, 0, 2**64 - 1)


def dropout_forward(out, A, seed, step, layer, keep_prob):
    """Inverted dropout: D = U[0,1) < keep_prob, out = A * D / keep_prob.

    U comes from a counter-based generator keyed by (seed, step, layer) and the element
    index, so the mask does not depend on the thread count. out may be A.
    """
    kp = _real("keep_prob", keep_prob, 0.0, 1.0, lo_open=True)
    seed, step, layer = _key("seed", seed), _key("step", step), _key("layer", layer)
    try:
        _core.dropout_forward(out, A, seed, step, layer, kp)
    except TypeError:
        _name_non_array(out=out, A=A)
        raise
    return out


def dropout_backward(dA, dout, seed, step, layer, keep_prob):
    """dA = dout * D / keep_prob with the mask D of the same (seed, step, layer)."""
    kp = _real("keep_prob", keep_prob, 0.0, 1.0, lo_open=True)
    seed, step, layer = _key("seed", seed), _key("step", step), _key("layer", layer)
    try:
        _core.dropout_backward(dA, dout, seed, step, layer, kp)
    except TypeError:
        _name_non_array(dA=dA, dout=dout)
        raise
    return dA


# ------------------------------------------------------------------ optimizers


_STEP_RETURNS = """
    Returns True when every new value (theta and the state) is finite, with a margin: at
    most half the dtype's largest finite value in magnitude. With ``check=True`` the update
    is first computed without storing anything and applied only if so: False then leaves
    every array unchanged (one more read of the arrays).

    On x86 the step counts subnormal numbers (below 1.2e-38 in float32) as 0, read and
    written: a parameter whose gradient stays 0 has its state decay into them, and each
    operation on one costs an Intel core ~100 cycles (Adam over 2410 floats: 45-95 us
    instead of 4). The calling thread's floating-point mode is as before afterwards."""


def sgd_step(theta, grad, lr, weight_decay=0.0, check=False) -> bool:
    """theta -= lr * (grad + weight_decay * theta). theta, grad (P,)."""
    lr, weight_decay = _factor("lr", lr, theta), _factor("weight_decay", weight_decay, theta)
    try:
        return bool(_core.sgd_step(theta, grad, lr, weight_decay, _bool("check", check)))
    except TypeError:
        _name_non_array(theta=theta, grad=grad)
        raise


def momentum_step(theta, v, grad, lr, beta=0.9, nesterov=False, weight_decay=0.0,
                  check=False) -> bool:
    """v = beta v + (1-beta) g; theta -= lr v (Nesterov: lr (beta v + (1-beta) g)).
    theta, v, grad (P,)."""
    lr, beta = _factor("lr", lr, theta), _real("beta", beta, 0.0, 1.0, hi_open=True)
    weight_decay = _factor("weight_decay", weight_decay, theta)
    try:
        return bool(_core.momentum_step(theta, v, grad, lr, beta, _bool("nesterov", nesterov),
                                        weight_decay, _bool("check", check)))
    except TypeError:
        _name_non_array(theta=theta, v=v, grad=grad)
        raise


def rmsprop_step(theta, s, grad, lr, beta=0.9, eps=1e-8, weight_decay=0.0, check=False) -> bool:
    """s = beta s + (1-beta) g^2; theta -= lr g / (sqrt(s) + eps). theta, s, grad (P,)."""
    lr, beta = _factor("lr", lr, theta), _real("beta", beta, 0.0, 1.0, hi_open=True)
    eps, weight_decay = _eps(eps, theta), _factor("weight_decay", weight_decay, theta)
    try:
        return bool(_core.rmsprop_step(theta, s, grad, lr, beta, eps, weight_decay,
                                       _bool("check", check)))
    except TypeError:
        _name_non_array(theta=theta, s=s, grad=grad)
        raise


def adam_step(theta, v, s, grad, lr, beta1, beta2, eps, t, weight_decay=0.0, decoupled=False,
              check=False) -> bool:
    """Adam with bias correction (t counts steps from 1). theta, v, s, grad (P,).

    v = b1 v + (1-b1) g; s = b2 s + (1-b2) g^2; theta -= lr (v/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps).
    weight_decay adds w*theta to g (L2), or with decoupled=True (AdamW) theta -= lr*w*theta.
    """
    lr = _factor("lr", lr, theta)
    beta1 = _real("beta1", beta1, 0.0, 1.0, hi_open=True)
    beta2 = _real("beta2", beta2, 0.0, 1.0, hi_open=True)
    eps, t = _eps(eps, theta), _int("t", t, 1)
    weight_decay = _factor("weight_decay", weight_decay, theta)
    try:
        return bool(_core.adam_step(theta, v, s, grad, lr, beta1, beta2, eps, t, weight_decay,
                                    _bool("decoupled", decoupled), _bool("check", check)))
    except TypeError:
        _name_non_array(theta=theta, v=v, s=s, grad=grad)
        raise


for _step in (sgd_step, momentum_step, rmsprop_step, adam_step):
    if _step.__doc__:  # None under python -OO
        _step.__doc__ += _STEP_RETURNS
del _step


# ------------------------------------------------------------------ threads

def _thread_limit() -> int:
    """The largest count set_num_threads takes: 4 per CPU this process may run on, and
    at least 64."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(64, 4 * cpus)


def set_num_threads(n: int) -> None:
    """Use n threads for pydl's work: its OpenMP kernels and its matrix products.

    Importing pydl sets SciPy's OpenBLAS (the BLAS pydl calls) to one thread per call, and
    pydl cuts each large product into one part per thread of its own (``gemm_parts``). All
    of pydl's parallel work then runs on one pool of threads, which sleep when idle
    (OpenBLAS's spin after each call and fight the next kernel for the cores, and on a busy
    machine a product on both pools waited out a time slice at every call). With SciPy's
    and NumPy's wheels NumPy's BLAS is another library, left alone; where both load one
    OpenBLAS (a Linux distribution's, conda's), NumPy's products run on one thread too.

    This keeps SciPy's BLAS at one thread; if something else raises it
    (``threadpoolctl.threadpool_limits``), pydl runs its products whole on the BLAS's
    threads until this is called again. Where SciPy's BLAS is not an OpenBLAS pydl can set
    (another BLAS, or an OpenBLAS built with OpenMP, whose calls from pydl's threads run
    on one thread anyway), this sets every BLAS's pool to n through threadpoolctl instead,
    and products run whole. n is at most 4 per CPU this process may run on (and at least
    64 is allowed): OpenMP ends the process when it cannot start a thread.
    """
    n = _int("n", n, 1, _thread_limit())
    _core.set_num_threads(n)
    if not _core.pin_blas_threads():
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int:
    """Threads pydl's kernels and products use."""
    return int(_core.get_num_threads())


def gemm_parts(M: int, N: int, K: int) -> int:
    """Into how many parts the product C (M, N) = op(A) (M, K) @ op(B) (K, N) is cut now,
    each a band of C's columns (of its rows when M > N) computed on one of pydl's threads:
    for a product of at least 2^20 multiply-adds while SciPy's BLAS runs on one thread (see
    ``set_num_threads``), the thread count, at most one part per whole 16 columns (rows)
    and at most half of OpenBLAS's MAX_THREADS; else 1. The bands are whole blocks of 16
    spread evenly, the partial block last. (While other Python threads' products hold the
    team's count of bands, a product computes the same parts one after another on its own
    thread: the same bits.)"""
    M, N, K = _int("M", M, 0, _INT_MAX), _int("N", N, 0, _INT_MAX), _int("K", K, 0, _INT_MAX)
    return int(_core.gemm_parts(M, N, K))


def _gemm_bands_run() -> int:
    """For tests: how many bands of cut products this process has computed."""
    return int(_core.gemm_bands_run())


@contextlib.contextmanager
def _held_gemm_bands():
    """For tests: within the block the team's count of bands counts as in progress, as when
    other Python threads' products hold it (process-wide)."""
    n = 1 << 20
    _core.hold_gemm_bands(n)
    try:
        yield
    finally:
        _core.hold_gemm_bands(-n)


def _blas_library() -> str:
    """The file of the OpenBLAS library SciPy loaded ("" for another BLAS, or if pydl
    cannot tell)."""
    return str(_core.blas_library())


def _set_scipy_blas_threads(n: int) -> int:
    """For references in bench/: SciPy's OpenBLAS runs each call on n threads of its own
    (pydl's products then run whole on them too) until set back to 1, or until
    ``set_num_threads``. Returns the count it had; 0 (and nothing is set) where pydl
    cannot set that BLAS (see ``set_num_threads``)."""
    return int(_core.set_blas_pool(_int("n", n, 1, _thread_limit())))


def gemm_kernel(M: int, N: int, K: int, dtype="float32") -> str:
    """Which kernel runs the product C (M, N) = op(A) (M, K) @ op(B) (K, N) now: "own"
    (pydl's single-threaded kernel, for products where it beats the BLAS) or "blas" (SciPy's
    BLAS). A dense layer's three products (forward, dW, dA_prev) have (M, N, K) = (m, n_out,
    n_in), (n_out, n_in, m) and (m, n_in, n_out). For a product cut into parts
    (``gemm_parts``) it names the kernel of the first part (a narrower last one may take
    the other). The answer depends on the BLAS's kernels (``blas_core()``) and on its
    thread count.
    """
    M, N, K = _int("M", M, 0, _INT_MAX), _int("N", N, 0, _INT_MAX), _int("K", K, 0, _INT_MAX)
    dt = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) is float64
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return "own" if _core.gemm_runs_own(M, N, K, dt == np.float64) else "blas"


@contextlib.contextmanager
def _forced_gemm_kernel(kernel: str):
    """For tests: within the block every product runs in `kernel` ("own" or "blas")
    whatever the rule says (process-wide; "own" raises where this build has no own kernel)."""
    codes = {"own": 1, "blas": 2}
    if kernel not in codes:
        raise ValueError(f"kernel: expected 'own' or 'blas', got {kernel!r}")
    if kernel == "own" and not has_own_gemm:
        raise RuntimeError("kernel: this build has no own GEMM kernel (needs AVX or AVX-512)")
    previous = _core.force_gemm_kernel(codes[kernel])
    try:
        yield
    finally:
        _core.force_gemm_kernel(previous)


def blas_core() -> str:
    """OpenBLAS's name for the kernels it runs on this CPU ("SkylakeX", "Haswell", "Zen",
    ...), or "" when SciPy's BLAS is not an OpenBLAS that tells (pydl then treats it as
    having 512-bit kernels)."""
    return str(_core.blas_core())


def set_stream_threshold(nbytes: int) -> int:
    """Kernels whose arrays total >= nbytes write their output with non-temporal stores.

    Such an output goes around the caches (no read for ownership, and it does not evict
    the inputs that a second pass reads again). The default is 3/4 of the CPU's largest
    cache, as glibc's memcpy, counting at most 32 MB of it (a VM may report its host's whole
    L3, shared with other tenants). 0 streams every output, a huge value none. The values
    computed are the same either way. Returns the previous threshold. (Batch norm's
    training forward and backward use it.)
    """
    return int(_core.set_stream_threshold(_int("nbytes", nbytes, 0, 2**62)))


def get_stream_threshold() -> int:
    """The current ``set_stream_threshold`` value, in bytes."""
    return int(_core.get_stream_threshold())


def _scratch_growth_count() -> int:
    """For tests: how many times a kernel's scratch buffer has grown, over all threads. Each
    thread that calls kernels keeps their working arrays (per-feature sums, partial sums, a
    packed panel) and grows them only for a larger call, so repeating a call adds nothing."""
    return int(_core.scratch_growth_count())


@contextlib.contextmanager
def _failing_scratch_growths(count: int):
    """For tests: within the block the next ``count`` scratch growths, on any thread, fail
    as an exhausted memory would (the kernel raises MemoryError); disarmed on leaving."""
    _core.fail_scratch_growths(int(count))
    try:
        yield
    finally:
        _core.fail_scratch_growths(0)


def batchnorm_panel_shape() -> tuple:
    """(bytes, prefetch, by_columns): batch norm's training kernels pass over a large batch
    on several threads one column panel of ``bytes`` bytes of each row at a time, prefetching
    the next panel when ``prefetch``. With ``by_columns`` each thread owns a contiguous range
    of columns and its panels; otherwise the threads share each panel, split by rows. Chosen
    from the size of CPU 0's L2 cache as sysfs reports it (whether or not other CPUs share
    it): (4096, False, True) from 2 MB, (512, True, False) from 1 MB, else (2048, False,
    False). The results do not depend on it, bit for bit."""
    nbytes, prefetch, by_columns = _core.get_panel_shape()
    return int(nbytes), bool(prefetch), bool(by_columns)


@contextlib.contextmanager
def _forced_panel_shape(nbytes: int, prefetch: bool, by_columns: bool = False):
    """For tests: within the block batch norm's panels are ``nbytes`` wide (a multiple of
    64), prefetch, and are owned by one thread each as told, whatever the cache
    (process-wide)."""
    nbytes = _int("nbytes", nbytes, 64, 2**20)
    if nbytes % 64:
        raise ValueError(f"nbytes: expected a multiple of 64, got {nbytes}")
    previous = _core.force_panel_shape(nbytes, bool(prefetch), bool(by_columns))
    try:
        yield
    finally:
        _core.force_panel_shape(previous & ~63, bool(previous & 1), bool(previous & 2))
