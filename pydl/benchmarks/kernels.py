"""pydl kernels against a NumPy reference and PyTorch CPU, in one run, one table.

    python -m pydl.benchmarks.kernels       # full sizes, 2 threads (or bench/compare.py)
    python bench/compare.py --quick         # small sizes, few repeats (a smoke test)
    python bench/compare.py --threads 1 --only dense,adam --json out.json

Every peer runs with the same thread count (``pydl.ops.set_num_threads``,
``torch.set_num_threads``, threadpoolctl for NumPy's OpenBLAS, and SciPy's OpenBLAS on
that many threads of its own for the raw sgemm reference: ``scipy_blas_threads``)
and in its fastest configuration we know of: for each benchmark several PyTorch
variants are timed (autograd, direct ATen calls, ``out=`` calls, Adam
``fused=True`` and ``foreach=True``) and the fastest one is the "torch" column.
PyTorch is optional: without it (or with ``--no-torch``) its column reads n/a
and the goals are judged on the rest.

Timing: ``time.perf_counter``, garbage collection off, warm-up calls first, then
``repeats`` rounds in which every variant of a benchmark runs once in turn
(round-robin, so a slow spell of the machine hits all of them alike); a round
calls a fast kernel ``number`` times so that it lasts at least ``min_time``.
The table gives the median over rounds of the time of one call.

All pydl outputs are allocated before timing; pydl kernels write into them.
The NumPy reference is the straightforward formula with ``out=`` where NumPy
allows it. The "raw sgemm" reference for the dense goal is the 3 GEMMs of a
dense forward+backward alone (Z = X W^T, dW = dZ^T X, dX = dZ W), timed both as
``scipy.linalg.blas.sgemm`` (SciPy's OpenBLAS, the library pydl calls) and as
``numpy.matmul`` into preallocated outputs (NumPy's own OpenBLAS); the faster
of the two is the reference.

The module imports nothing from pydl at import time, so it can be moved; the
entry point is ``main(argv=None)``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# ----------------------------------------------------------------------------- sizes

FULL = {
    "dense": dict(m=1024, n_in=4096, n_out=4096),
    "adam": dict(n=10_000_000),
    "batchnorm": dict(m=1024, n=4096),
    "softmax_xent": dict(m=1024, C=1000),
}
QUICK = {
    "dense": dict(m=256, n_in=1024, n_out=1024),
    "adam": dict(n=1_000_000),
    "batchnorm": dict(m=256, n=1024),
    "softmax_xent": dict(m=256, C=1000),
}
BENCHMARKS = tuple(FULL)


# ----------------------------------------------------------------------------- environment


def import_torch(enabled: bool = True):
    """torch, or None when it is absent or disabled."""
    if not enabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def set_threads(n: int, torch=None) -> None:
    """The same thread count for pydl (its OpenMP team, which also runs its products in
    parts), NumPy's BLAS and torch. SciPy's BLAS stays on one thread per call, pydl's
    setting: a reference that times it on threads of its own wraps its calls in
    ``scipy_blas_threads``."""
    from threadpoolctl import threadpool_limits

    import pydl.ops
    threadpool_limits(limits=n, user_api="blas")  # every BLAS loaded so far, NumPy's too
    pydl.ops.set_num_threads(n)  # after it: SciPy's back to one thread per call
    if torch is not None:
        torch.set_num_threads(n)


class scipy_blas_threads:
    """fn with SciPy's BLAS on pydl's thread count, as threads of its own (the reference of
    raw BLAS calls), and back to one thread per call after it.

    Switching SciPy's BLAS takes ~7 us each way, which would count in the time of a small
    product: ``measure_samples`` (and ``bench/gemm_sweep.py``) switch once per turn of the
    variant, ``with ref.turn(): ...``, and calls inside a turn run fn alone. A call outside a
    turn switches and switches back around fn."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn
        self._inside = False

    @contextlib.contextmanager
    def turn(self):
        import pydl.ops

        previous = pydl.ops._set_scipy_blas_threads(pydl.ops.get_num_threads())
        self._inside = True
        try:
            yield
        finally:
            self._inside = False
            if previous:
                pydl.ops._set_scipy_blas_threads(previous)

    def __call__(self) -> None:
        if self._inside:
            self.fn()
            return
        with self.turn():
            self.fn()


def _turn(fn: Callable[[], object]):
    """The context a variant's turn runs in: its own (``scipy_blas_threads.turn``) or none."""
    turn = getattr(fn, "turn", None)
    return turn() if turn is not None else contextlib.nullcontext()


def environment(threads: int, torch=None) -> dict:
    from threadpoolctl import threadpool_info

    import scipy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import pydl._core
    import pydl.ops

    core = pydl._core.__file__
    try:
        import hashlib

        with open(core, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(core)))
        build = f"{os.path.basename(core)} sha256 {digest}, built {built}"
    except OSError:
        build = core
    return {
        "pydl_core": build,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "pydl_openmp": bool(pydl.ops.has_openmp),
        "pools": [
            f"{p.get('internal_api')} {p.get('version')} ({p.get('prefix')}, {p.get('num_threads')} threads)"
            for p in threadpool_info()
        ],
    }


# ----------------------------------------------------------------------------- timing


class BackgroundLoad:
    """Share of the machine's CPU time that other processes used while it was open.

    Benchmarks on a shared machine are only meaningful when this is near 0: a
    multi-threaded kernel whose threads wait for each other at a barrier slows down
    many times over when one of its threads is descheduled. Use it as a context
    manager, or ``start()``/``stop()`` around several timed stretches (sleeps in
    between are then not counted). Linux only (/proc/stat, 10 ms ticks); elsewhere
    ``fraction`` is None.
    """

    def __init__(self):
        self._wall = self._other = 0.0
        self._ok = True
        self._start = None

    def start(self):
        self._start = self._sample()

    def stop(self):
        end = self._sample()
        if self._start is None or end is None:
            self._ok = False
            return
        (w0, b0, o0), (w1, b1, o1) = self._start, end
        self._wall += (w1 - w0) * (os.cpu_count() or 1)
        self._other += max(0.0, (b1 - b0) - (o1 - o0))
        self._start = None

    def add(self, other: "BackgroundLoad") -> None:
        """Counts other's timed stretches in this one too."""
        self._wall += other._wall
        self._other += other._other
        self._ok = self._ok and other._ok

    @property
    def fraction(self) -> float | None:
        if not self._ok or self._wall <= 0:
            return None
        return min(1.0, self._other / self._wall)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / hz
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system


def wait_idle(timeout: float, window: float = 0.25, threshold: float = 0.05) -> bool:
    """Waits (up to timeout seconds) until other processes use < threshold of the CPU
    for two windows in a row; True if they did. No-op (True) when timeout <= 0."""
    if timeout <= 0:
        return True
    deadline = time.perf_counter() + timeout
    quiet = 0
    while time.perf_counter() < deadline:
        with BackgroundLoad() as load:
            time.sleep(window)
        if load.fraction is None:
            return True
        quiet = quiet + 1 if load.fraction < threshold else 0
        if quiet >= 2:
            return True
    return False


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per round so that a round lasts at least min_time."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_time / max(dt, 1e-9) * 1.1))


def measure_samples(variants: dict[str, Callable[[], object]], repeats: int, warmup: int,
                    min_time: float, settle: float = 0.0, idle_wait: float = 0.0,
                    load: BackgroundLoad | None = None,
                    max_background: float = 0.15, rewarm: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each variant in each round, variants interleaved round-robin.

    Before each variant's turn in a round: ``settle`` seconds of sleep, so that the
    worker threads the previous variant woke (OpenBLAS's spin for a while after each
    call, OpenMP's likewise) have gone idle and do not steal cores from this one, then
    untimed calls for ``rewarm`` seconds (at least one) to wake this variant's own pools:
    on a VM whose idle vCPUs halt (the guest's haltpoll governor) thread wake-ups stay
    slow for ~40 ms after a sleep, which would tax fast variants (many short calls, each
    waking its team) more than slow ones. A variant with a ``turn`` context
    (``scipy_blas_threads``) runs its warm-up, calibration and each round's calls inside
    it, so that what the turn sets up is not timed. ``load`` (if given) accumulates
    the other processes' CPU share over the timed stretches only.

    With ``idle_wait`` > 0 (for shared machines), each round first waits up to that
    long for other processes to leave the CPU, and a round during whose timed
    stretches they took more than ``max_background`` of it is thrown away and run
    again (at most ``2 * repeats`` extra rounds).
    """
    numbers = {}
    for name, fn in variants.items():
        time.sleep(settle)
        with _turn(fn):
            for _ in range(warmup):
                fn()
            numbers[name] = _calibrate(fn, min_time)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    load = load if load is not None else BackgroundLoad()
    retries = 2 * repeats if idle_wait > 0 else 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        done = 0
        while done < repeats:
            wait_idle(idle_wait)
            round_load = BackgroundLoad()
            got = {}
            for name, fn in variants.items():
                number = numbers[name]
                if settle:
                    time.sleep(settle)
                with _turn(fn):
                    if settle:
                        t_end = time.perf_counter() + rewarm
                        fn()
                        while time.perf_counter() < t_end:
                            fn()
                    round_load.start()
                    t0 = time.perf_counter()
                    for _ in range(number):
                        fn()
                    got[name] = (time.perf_counter() - t0) / number
                    round_load.stop()
            noisy = round_load.fraction is not None and round_load.fraction > max_background
            if noisy and retries > 0:
                retries -= 1
                continue
            load.add(round_load)
            for name, t in got.items():
                samples[name].append(t)
            done += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


# ----------------------------------------------------------------------------- cases

STREAM = "ref:stream a += b (numpy)"


def _stream_add(n: int, dtype) -> tuple[Callable[[], object], float]:
    """A streaming reference, a += b over n elements, and the bytes it moves (12 per
    float32 element: read a and b, write a): the bandwidth a simple kernel gets here."""
    a = np.ones(n, dtype)
    b = np.full(n, 1e-7, dtype)

    def stream_add():
        np.add(a, b, out=a)

    return stream_add, 3.0 * n * np.dtype(dtype).itemsize
# Each case builder allocates everything up front and returns {variant: callable}.
# Variant names start with "pydl", "numpy", "torch" or "ref:" (a reference that is
# not a peer, e.g. raw sgemm or a streaming add).


def dense_case(m: int, n_in: int, n_out: int, torch=None, dtype=np.float32) -> dict:
    """Dense forward+backward with ReLU: 3 GEMMs plus the fused epilogues.

    Forward A = relu(X W^T + b); backward from dA: dZ = dA * (A > 0), db = sum dZ,
    dW = dZ^T X, dX = dZ W.
    """
    import pydl.ops as ops
    from scipy.linalg.blas import dgemm, sgemm

    rng = np.random.default_rng(0)
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.1).astype(dtype)
    dA = rng.standard_normal((m, n_out)).astype(dtype)
    A = np.empty((m, n_out), dtype)
    dZ = dA.copy()  # pydl's dense_backward takes dA in dZ and leaves dZ there; relu's
    # mask is idempotent (A does not change between calls), so no refill is needed.
    dW = np.empty_like(W)
    db = np.empty_like(b)
    dX = np.empty_like(X)

    def pydl_fb():
        ops.dense_forward(A, X, W, b, "relu")
        ops.dense_backward(dX, dW, db, dZ, A, X, W, "relu")

    Zn = np.empty((m, n_out), dtype)
    An = np.empty((m, n_out), dtype)
    mask = np.empty((m, n_out), bool)
    dZn = np.empty((m, n_out), dtype)
    dWn = np.empty_like(W)
    dbn = np.empty_like(b)
    dXn = np.empty_like(X)

    def numpy_fb():
        np.matmul(X, W.T, out=Zn)
        np.add(Zn, b, out=Zn)
        np.maximum(Zn, 0, out=An)
        np.greater(An, 0, out=mask)
        np.multiply(dA, mask, out=dZn)
        np.sum(dZn, axis=0, out=dbn)
        np.matmul(dZn.T, X, out=dWn)
        np.matmul(dZn, W, out=dXn)

    # Raw GEMMs of the same shapes. Row-major C = A B is column-major C^T = B^T A^T;
    # the .T views are Fortran-contiguous, so f2py passes them without copies.
    gemm = sgemm if dtype == np.float32 else dgemm
    Zr = np.empty((m, n_out), dtype)
    dWr = np.empty_like(W)
    dXr = np.empty_like(X)

    def raw_scipy():
        gemm(1.0, W.T, X.T, trans_a=1, c=Zr.T, overwrite_c=1)     # Z = X W^T
        gemm(1.0, X.T, dZ.T, trans_b=1, c=dWr.T, overwrite_c=1)   # dW = dZ^T X
        gemm(1.0, W.T, dZ.T, c=dXr.T, overwrite_c=1)              # dX = dZ W

    def raw_numpy():
        np.matmul(X, W.T, out=Zr)
        np.matmul(dZ.T, X, out=dWr)
        np.matmul(dZ, W, out=dXr)

    variants = {"pydl": pydl_fb, "numpy": numpy_fb,
                "ref:sgemm x3 (scipy.linalg.blas)": scipy_blas_threads(raw_scipy),
                "ref:matmul x3 (numpy, out=)": raw_numpy}
    if torch is not None:
        F = torch.nn.functional
        tX = torch.from_numpy(X.copy()).requires_grad_()
        lin = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        tdA = torch.from_numpy(dA.copy())
        params = (tX, lin.weight, lin.bias)

        def torch_autograd():
            y = F.relu(lin(tX))
            torch.autograd.grad(y, params, tdA)

        Xd, Wd, bd = tX.detach(), lin.weight.detach(), lin.bias.detach()
        tZ = torch.empty(m, n_out)
        tmask = torch.empty(m, n_out, dtype=torch.bool)
        tdZ = torch.empty(m, n_out)
        tdW = torch.empty(n_out, n_in)
        tdb = torch.empty(n_out)
        tdX = torch.empty(m, n_in)

        def torch_out():
            with torch.no_grad():
                torch.addmm(bd, Xd, Wd.t(), out=tZ)
                tZ.relu_()
                torch.gt(tZ, 0, out=tmask)
                torch.mul(tdA, tmask, out=tdZ)
                torch.sum(tdZ, 0, out=tdb)
                torch.mm(tdZ.t(), Xd, out=tdW)
                torch.mm(tdZ, Wd, out=tdX)

        variants["torch (Linear+ReLU, autograd)"] = torch_autograd
        variants["torch (addmm/mm out=, no_grad)"] = torch_out
    return {"variants": variants, "flop": 6.0 * m * n_in * n_out,
            "size": f"{m} x {n_in} -> {n_out} {np.dtype(dtype).name}, relu"}


def adam_case(n: int, torch=None, dtype=np.float32) -> dict:
    """One Adam step over n parameters (theta, v, s updated in place; grad read)."""
    import pydl.ops as ops

    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal(n).astype(dtype)
    v = np.zeros(n, dtype)
    s = np.zeros(n, dtype)
    step = [0]

    def pydl_adam():
        step[0] += 1
        ops.adam_step(theta, v, s, grad, lr, b1, b2, eps, step[0])

    thn, vn, sn = theta.copy(), v.copy(), s.copy()
    tmp = np.empty(n, dtype)
    tmp2 = np.empty(n, dtype)
    nstep = [0]

    def numpy_adam():
        nstep[0] += 1
        t = nstep[0]
        np.multiply(vn, b1, out=vn)
        np.multiply(grad, 1 - b1, out=tmp)
        np.add(vn, tmp, out=vn)
        np.multiply(sn, b2, out=sn)
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, 1 - b2, out=tmp)
        np.add(sn, tmp, out=sn)
        np.sqrt(sn, out=tmp)
        np.multiply(tmp, 1.0 / np.sqrt(1 - b2**t), out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(vn, tmp, out=tmp2)
        np.multiply(tmp2, lr / (1 - b1**t), out=tmp2)
        np.subtract(thn, tmp2, out=thn)

    stream_add, stream_bytes = _stream_add(n, dtype)
    variants = {"pydl": pydl_adam, "numpy": numpy_adam, STREAM: stream_add}
    if torch is not None:
        for label, kw in (("fused=True", {"fused": True}), ("foreach=True", {"foreach": True})):
            p = torch.nn.Parameter(torch.from_numpy(theta.copy()))
            p.grad = torch.from_numpy(grad.copy())
            try:
                opt = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, **kw)
                opt.step()
            except (RuntimeError, TypeError, ValueError):
                continue  # this torch has no such implementation on CPU
            variants[f"torch (Adam {label})"] = opt.step
    return {"variants": variants, "bytes": 28.0 * n, "stream_bytes": stream_bytes,
            "size": f"{n:,} params {np.dtype(dtype).name}"}


def batchnorm_case(m: int, n: int, torch=None, dtype=np.float32) -> dict:
    """Batch norm in training mode, forward + backward (no activation)."""
    import pydl.ops as ops

    eps, momentum = 1e-5, 0.9
    rng = np.random.default_rng(0)
    Z = (rng.standard_normal((m, n)) * 2 + 0.5).astype(dtype)
    gamma = (1 + 0.1 * rng.standard_normal(n)).astype(dtype)
    beta = (0.1 * rng.standard_normal(n)).astype(dtype)
    dout = rng.standard_normal((m, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    mean = np.empty(n, dtype)
    invstd = np.empty(n, dtype)
    rmean = np.zeros(n, dtype)
    rvar = np.ones(n, dtype)
    dZ = np.empty((m, n), dtype)
    dgamma = np.empty(n, dtype)
    dbeta = np.empty(n, dtype)

    def pydl_bn():
        ops.batchnorm_forward_train(out, mean, invstd, rmean, rvar, Z, gamma, beta, momentum, eps)
        ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd)

    nrm, nrv = rmean.copy(), rvar.copy()
    xc = np.empty((m, n), dtype)
    nx = np.empty((m, n), dtype)
    no = np.empty((m, n), dtype)
    ndz = np.empty((m, n), dtype)
    tmp = np.empty((m, n), dtype)

    def numpy_bn():
        mu = Z.mean(axis=0)
        np.subtract(Z, mu, out=xc)
        np.multiply(xc, xc, out=tmp)
        var = tmp.mean(axis=0)
        inv = 1.0 / np.sqrt(var + eps)
        np.multiply(xc, inv, out=nx)
        np.multiply(nx, gamma, out=no)
        np.add(no, beta, out=no)
        nrm[:] = momentum * nrm + (1 - momentum) * mu
        nrv[:] = momentum * nrv + (1 - momentum) * var * (m / (m - 1))
        dbeta_ = dout.sum(axis=0)
        np.multiply(dout, nx, out=tmp)
        dgamma_ = tmp.sum(axis=0)
        np.multiply(nx, dgamma_, out=tmp)
        np.multiply(dout, m, out=ndz)
        np.subtract(ndz, dbeta_, out=ndz)
        np.subtract(ndz, tmp, out=ndz)
        np.multiply(ndz, gamma * inv / m, out=ndz)

    # over arrays 4x the size of one (m, n) array: beyond the L3 cache of most machines
    stream_add, stream_bytes = _stream_add(4 * m * n, dtype)
    variants = {"pydl": pydl_bn, "numpy": numpy_bn, STREAM: stream_add}
    if torch is not None:
        F = torch.nn.functional
        tZ = torch.from_numpy(Z.copy()).requires_grad_()
        tw = torch.from_numpy(gamma.copy()).requires_grad_()
        tb = torch.from_numpy(beta.copy()).requires_grad_()
        trm = torch.zeros(n)
        trv = torch.ones(n)
        tdout = torch.from_numpy(dout.copy())

        def torch_autograd():
            y = F.batch_norm(tZ, trm, trv, tw, tb, training=True, momentum=1 - momentum, eps=eps)
            torch.autograd.grad(y, (tZ, tw, tb), tdout)

        aten = torch.ops.aten
        Zd, wd, bd = tZ.detach(), tw.detach(), tb.detach()

        def torch_aten():
            with torch.no_grad():
                y, smean, sinv = aten.native_batch_norm(Zd, wd, bd, trm, trv, True, 1 - momentum, eps)
                aten.native_batch_norm_backward(tdout, Zd, wd, trm, trv, smean, sinv, True, eps,
                                                [True, True, True])

        # the same two aten kernels writing into preallocated outputs, as pydl does
        tout, tsm, tsi = torch.empty(m, n), torch.empty(n), torch.empty(n)
        tgi, tgw, tgb = torch.empty(m, n), torch.empty(n), torch.empty(n)

        def torch_aten_out():
            with torch.no_grad():
                aten.native_batch_norm.out(Zd, wd, bd, trm, trv, True, 1 - momentum, eps,
                                           out=tout, save_mean=tsm, save_invstd=tsi)
                aten.native_batch_norm_backward.out(tdout, Zd, wd, trm, trv, tsm, tsi, True, eps,
                                                    [True, True, True], out0=tgi, out1=tgw,
                                                    out2=tgb)

        variants["torch (F.batch_norm, autograd)"] = torch_autograd
        variants["torch (aten native_batch_norm[_backward])"] = torch_aten
        try:
            torch_aten_out()
            variants["torch (aten native_batch_norm[_backward].out, preallocated)"] = torch_aten_out
        except (RuntimeError, TypeError, AttributeError):
            pass  # this torch has no such overloads
    # Nominal traffic of a two-pass batch norm without activation: forward reads Z twice
    # and writes out, backward reads dout and Z twice and writes dZ: 8 (m, n) arrays. (pydl's
    # second passes read column panels from cache and its outputs bypass it, so what it
    # moves to and from memory is nearer 5.)
    isz = np.dtype(dtype).itemsize
    return {"variants": variants, "size": f"{m} x {n} {np.dtype(dtype).name}, training",
            "bytes": 8.0 * m * n * isz, "stream_bytes": stream_bytes}


def softmax_xent_case(m: int, C: int, torch=None, dtype=np.float32) -> dict:
    """Softmax cross-entropy from logits with integer labels: cost and dZ."""
    import pydl.ops as ops

    rng = np.random.default_rng(0)
    Z = (rng.standard_normal((m, C)) * 3).astype(dtype)
    labels = rng.integers(0, C, m).astype(np.int64)
    dZ = np.empty((m, C), dtype)

    def pydl_ce():
        return ops.softmax_cross_entropy(dZ, Z, labels=labels)

    rows = np.arange(m)
    ndz = np.empty((m, C), dtype)

    def numpy_ce():
        zmax = Z.max(axis=1, keepdims=True)
        np.subtract(Z, zmax, out=ndz)
        np.exp(ndz, out=ndz)
        ssum = ndz.sum(axis=1, keepdims=True)
        lse = np.log(ssum[:, 0]) + zmax[:, 0]
        cost = float(np.mean(lse - Z[rows, labels]))
        np.multiply(ndz, 1.0 / (ssum * m), out=ndz)
        ndz[rows, labels] -= 1.0 / m
        return cost

    variants = {"pydl": pydl_ce, "numpy": numpy_ce}
    if torch is not None:
        F = torch.nn.functional
        tZ = torch.from_numpy(Z.copy()).requires_grad_()
        ty = torch.from_numpy(labels.copy())

        def torch_autograd():
            loss = F.cross_entropy(tZ, ty)
            torch.autograd.grad(loss, tZ)
            return loss

        aten = torch.ops.aten
        Zd = tZ.detach()
        one = torch.ones(())

        def torch_aten():
            with torch.no_grad():
                ls = aten._log_softmax(Zd, 1, False)
                loss, total = aten.nll_loss_forward(ls, ty, None, 1, -100)
                gls = aten.nll_loss_backward(one, ls, ty, None, 1, -100, total)
                aten._log_softmax_backward_data(gls, ls, 1, Zd.dtype)
            return loss

        variants["torch (F.cross_entropy, autograd)"] = torch_autograd
        variants["torch (aten log_softmax+nll_loss)"] = torch_aten
    return {"variants": variants, "size": f"{m} x {C} {np.dtype(dtype).name}, int labels"}


CASES = {
    "dense": dense_case,
    "adam": adam_case,
    "batchnorm": batchnorm_case,
    "softmax_xent": softmax_xent_case,
}

TITLES = {
    "dense": "Dense fwd+bwd",
    "adam": "Adam step",
    "batchnorm": "BatchNorm train fwd+bwd",
    "softmax_xent": "Softmax CE fwd+bwd",
}


# ----------------------------------------------------------------------------- goals


@dataclass
class Row:
    key: str
    title: str
    size: str
    times: dict[str, float]
    pydl: float
    numpy: float
    torch: float | None
    torch_variant: str | None
    goal: str
    met: bool
    derived: dict = field(default_factory=dict)
    background: float | None = None  # CPU share other processes used meanwhile
    fastest: dict = field(default_factory=dict)  # variant -> min over rounds


def _fastest(times: dict[str, float], prefix: str) -> tuple[str | None, float | None]:
    cands = {k: v for k, v in times.items() if k.startswith(prefix)}
    if not cands:
        return None, None
    k = min(cands, key=cands.get)
    return k, cands[k]


def _bandwidths(case: dict, times: dict[str, float], p: float) -> tuple[float, float]:
    """GB/s of pydl (case["bytes"] per call) and of the streaming reference."""
    return case["bytes"] / p / 1e9, case["stream_bytes"] / times[STREAM] / 1e9


def judge(key: str, case: dict, times: dict[str, float]) -> Row:
    """Applies the goal of benchmark `key` to its measured times."""
    tv, tt = _fastest(times, "torch")
    p, n = times["pydl"], times["numpy"]
    vs_torch = tt / p if tt is not None else None
    derived: dict = {}
    if key == "dense":
        rv, rt = _fastest(times, "ref:")
        ratio = rt / p
        derived = {"pydl GFLOP/s": case["flop"] / p / 1e9,
                   "raw reference": rv[4:], "raw GFLOP/s": case["flop"] / rt / 1e9,
                   "pydl / raw GFLOP/s": ratio}
        for k, t in times.items():
            derived[f"GFLOP/s {k}"] = case["flop"] / t / 1e9
        ok = ratio >= 0.9 and (vs_torch is None or vs_torch > 1.0)
        goal = f">= 0.9x raw sgemm GFLOP/s (got {ratio:.2f}x) and > torch"
    elif key == "adam":
        bw, sbw = _bandwidths(case, times, p)
        derived = {"pydl GB/s (28 B/param)": bw, "stream a += b GB/s (12 B/elem)": sbw,
                   "pydl / stream bandwidth": bw / sbw}
        ok = bw / sbw >= 0.85 and (vs_torch is None or vs_torch >= 1.0)
        goal = f">= torch fused and >= 0.85x stream add GB/s (got {bw / sbw:.2f}x)"
    elif key == "batchnorm":
        bw, sbw = _bandwidths(case, times, p)
        derived = {"pydl GB/s (8 arrays moved)": bw, "stream a += b GB/s": sbw,
                   "pydl / stream bandwidth": bw / sbw}
        ok = vs_torch is None or vs_torch >= 2.5
        goal = f">= 2.5x torch (bandwidth {bw / sbw:.2f}x stream add)"
    elif key == "softmax_xent":
        ok = vs_torch is None or vs_torch >= 2.0
        goal = ">= 2x torch"
    else:  # pragma: no cover
        raise KeyError(key)
    if vs_torch is None:
        goal += " (torch absent: judged without it)"
    return Row(key, TITLES[key], case["size"], times, p, n, tt, tv, goal, ok, derived)


# ----------------------------------------------------------------------------- output


def _ms(t: float | None) -> str:
    if t is None:
        return "n/a"
    return f"{t * 1e3:.3f} ms" if t < 1.0 else f"{t:.3f} s"


def _x(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def markdown(rows: list[Row]) -> str:
    out = ["| benchmark | pydl median | numpy median | torch median | pydl/numpy speed-up "
           "| pydl/torch speed-up | goal | met? |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r.title} ({r.size}) | {_ms(r.pydl)} | {_ms(r.numpy)} | {_ms(r.torch)} "
            f"| {_x(r.numpy / r.pydl)} | {_x(r.torch / r.pydl if r.torch else None)} "
            f"| {r.goal} | {'yes' if r.met else 'NO'} |")
    return "\n".join(out)


def details(rows: list[Row]) -> str:
    out = ["| benchmark | variant | median | min | median vs pydl |", "|---|---|---|---|---|"]
    for r in rows:
        for k, t in r.times.items():
            mark = " (fastest torch)" if k == r.torch_variant else ""
            out.append(f"| {r.title} | {k}{mark} | {_ms(t)} | {_ms(r.fastest.get(k))} "
                       f"| {t / r.pydl:.2f}x |")
    derived = [f"- {r.title}: other processes' CPU share during it = "
               + ("n/a" if r.background is None else f"{r.background:.1%}") for r in rows]
    derived += [f"- {r.title}: " + ", ".join(
        f"{k} = {v:.2f}" if isinstance(v, float) else f"{k} = {v}" for k, v in r.derived.items())
        for r in rows if r.derived]
    return "\n".join(out + [""] + derived)


# ----------------------------------------------------------------------------- main


def run(only=BENCHMARKS, quick=False, threads=2, use_torch=True, repeats=None, warmup=None,
        min_time=None, settle=0.15, idle_wait=0.0, log=print) -> tuple[dict, list[Row]]:
    """Runs the benchmarks; returns (environment, rows)."""
    import pydl.ops  # noqa: F401  (load pydl's OpenMP runtime before torch's)

    torch = import_torch(use_torch)
    set_threads(threads, torch)
    sizes = QUICK if quick else FULL
    repeats = repeats or (5 if quick else 11)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    min_time = min_time or (0.005 if quick else 0.05)
    env = environment(threads, torch)
    rows = []
    for key in only:
        case = CASES[key](**sizes[key], torch=torch)
        log(f"# {TITLES[key]} ({case['size']}): {len(case['variants'])} variants ...",
            file=sys.stderr)
        load = BackgroundLoad()
        samples = measure_samples(case["variants"], repeats, warmup, min_time, settle,
                                  idle_wait, load)
        times = {k: statistics.median(v) for k, v in samples.items()}
        row = judge(key, case, times)
        row.fastest = {k: min(v) for k, v in samples.items()}
        row.background = load.fraction
        if load.fraction is not None and load.fraction > 0.05:
            log(f"  warning: other processes used {load.fraction:.0%} of the CPU during this "
                "benchmark; its times are not reliable", file=sys.stderr)
        rows.append(row)
        del case
        gc.collect()
    return env, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    ap.add_argument("--threads", type=int, default=2, help="threads for every peer (default 2)")
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 11, quick 5)")
    ap.add_argument("--settle", type=float, default=0.15,
                    help="seconds of sleep before each variant's turn, so that the previous "
                         "variant's spinning BLAS/OpenMP workers are idle (default 0.15)")
    ap.add_argument("--idle-wait", type=float, default=0.0, metavar="SECONDS",
                    help="before each round wait up to this long for other processes to "
                         "leave the CPU (for shared machines; default 0: do not wait)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in CASES]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {list(CASES)}")

    env, rows = run(only, quick=args.quick, threads=args.threads, use_torch=not args.no_torch,
                    repeats=args.repeats, settle=args.settle, idle_wait=args.idle_wait)
    print(f"pydl vs NumPy vs PyTorch: {env['cpu']}, {env['cores']} cores, "
          f"{env['threads']} threads; numpy {env['numpy']}, scipy {env['scipy']}, "
          f"torch {env['torch'] or 'absent'}; pydl OpenMP {env['pydl_openmp']}"
          + ("; QUICK sizes (goals are set for full sizes)" if args.quick else ""))
    print("BLAS pools: " + "; ".join(env["pools"]))
    print(f"pydl core: {env['pydl_core']}")
    print()
    print(markdown(rows))
    print()
    print(details(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "quick": args.quick,
                       "rows": [r.__dict__ for r in rows]}, f, indent=1, default=str)
    if args.strict and not all(r.met for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
