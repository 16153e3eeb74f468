"""Kernels allocate nothing inside a training step once buffers exist (DESIGN, "Native
core"): their working arrays (per-feature sums, partial sums, a packed GEMM panel) live in
per-thread scratch buffers that grow only for a larger call, and what a buffer held before
never leaks into a result."""
import pathlib
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import pydl
from pydl import nn, ops, optim

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"

# The batch-norm pass kinds (csrc/common.hpp: panel_shape), forced whatever this CPU's L2.
PANEL_KINDS = {
    "shared 512 B panels, prefetch": (512, True, False),
    "shared 2048 B panels": (2048, False, False),
    "own columns, 4096 B panels": (4096, False, True),
}


def in_new_thread(fn):
    """fn() on a new thread, whose scratch buffers start empty; returns its value."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised on the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def training_loop(dtype, steps):
    """A model whose step runs every kernel that uses scratch: dense backward with a bias
    (its sums), batch norm over 256 x 2048 (large enough for the threads and the panels;
    forward, backward and evaluation), dropout, softmax cross-entropy, Adam, and
    batch-invariant prediction (own_gemm's packed panel, where built)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 64)).astype(dtype)
    y = rng.integers(0, 10, 256)
    model = pydl.Sequential([
        nn.Dense(64, 2048, init="he"), nn.BatchNorm(2048), nn.ReLU(),
        nn.Dropout(keep_prob=0.8), nn.Dense(2048, 10, init="xavier"),
    ], loss="softmax_cross_entropy", seed=0, dtype=dtype)
    opt = optim.Adam(lr=1e-3)

    def step():
        model.forward_backward(X, y)
        opt.step(model)
        model.predict(X[:32], batch_invariant=True)

    step()
    step()
    after_warmup = ops._scratch_growth_count()
    for _ in range(steps):
        step()
    return after_warmup, ops._scratch_growth_count()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", list(PANEL_KINDS))
def test_a_training_step_grows_no_scratch_once_warm(restore_threads, dtype, n_threads, kind):
    pydl.set_num_threads(n_threads)

    def loop():
        assert pydl.get_num_threads() == n_threads  # the count holds on every thread
        return training_loop(dtype, steps=5)

    with ops._forced_panel_shape(*PANEL_KINDS[kind]):
        before = ops._scratch_growth_count()
        after_warmup, after_steps = in_new_thread(loop)
    assert after_warmup > before, "the kernels did not take their buffers from scratch"
    assert after_steps == after_warmup, f"{after_steps - after_warmup} growths in 5 steps"


def test_a_new_thread_gets_its_own_buffers(restore_threads):
    pydl.set_num_threads(1)
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((64, 300)).astype(np.float32)
    dZ, A = np.empty_like(Z), np.empty_like(Z)
    W = rng.standard_normal((300, 300)).astype(np.float32)
    db, dW = np.empty(300, np.float32), np.empty_like(W)
    call = lambda: ops.dense_backward(None, dW, db, dZ, A, Z, W)  # noqa: E731
    A[:] = Z
    call()  # warms this thread's buffers
    warm = ops._scratch_growth_count()
    call()
    assert ops._scratch_growth_count() == warm
    in_new_thread(call)
    assert ops._scratch_growth_count() > warm  # the new thread's own, not this one's


def test_softmax_cost_ignores_a_previous_calls_partial_sums(restore_threads):
    """The cost is summed from one partial per thread. On 3 threads a batch of 49 rows goes
    out in ranges of 32 (rounded to 16s), so thread 2 gets no rows: its slot must count 0,
    not what a larger batch left there."""
    pydl.set_num_threads(3)
    rng = np.random.default_rng(2)
    big = rng.standard_normal((1024, 1000)).astype(np.float32) * 3
    ops.softmax_cross_entropy(np.empty_like(big), big, labels=rng.integers(0, 1000, 1024))
    m, C = 49, 16384  # m * C >= 2^19: on the threads
    Z = rng.standard_normal((m, C)).astype(np.float32) * 3
    labels = rng.integers(0, C, m)
    cost = ops.softmax_cross_entropy(np.empty_like(Z), Z, labels=labels)
    Zd = Z.astype(np.float64)
    lse = np.log(np.exp(Zd - Zd.max(1, keepdims=True)).sum(1)) + Zd.max(1)
    expected = np.mean(lse - Zd[np.arange(m), labels])
    np.testing.assert_allclose(cost, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", list(PANEL_KINDS))
def test_batchnorm_gives_the_same_bits_after_other_sizes(restore_threads, kind):
    """A reused buffer holds the last call's sums: a call after wider and narrower ones
    returns the bits of the same call on a fresh thread."""
    pydl.set_num_threads(2)
    rng = np.random.default_rng(3)

    def bn(m, n):
        Z = (rng.standard_normal((m, n)) * 2 + 1).astype(np.float32)
        dout = rng.standard_normal((m, n)).astype(np.float32)
        gamma, beta = np.ones(n, np.float32), np.zeros(n, np.float32)
        out, dZ = np.empty_like(Z), np.empty_like(Z)
        mean, invstd = np.empty(n, np.float32), np.empty(n, np.float32)
        dgamma, dbeta = np.empty(n, np.float32), np.empty(n, np.float32)
        ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, gamma, beta)
        ops.batchnorm_backward(dZ, dgamma, dbeta, dout, out, Z, gamma, mean, invstd)
        return out, dZ, dgamma, dbeta

    with ops._forced_panel_shape(*PANEL_KINDS[kind]):
        rng = np.random.default_rng(3)
        fresh = in_new_thread(lambda: bn(512, 3000))
        rng = np.random.default_rng(3)
        bn(1024, 4096)
        bn(300, 17)
        rng = np.random.default_rng(3)
        reused = bn(512, 3000)
    for a, b in zip(fresh, reused):
        np.testing.assert_array_equal(a, b)


# In a new process, so that no thread has a packed panel yet and a regression (an exception
# leaving an OpenMP region terminates the process) fails this test instead of ending pytest.
_WORKER_OOM = """
import numpy as np, pydl
from pydl import ops
pydl.set_num_threads(2)
rng = np.random.default_rng(0)
A_prev, W = rng.standard_normal((256, 300)), rng.standard_normal((200, 300))
b = rng.standard_normal(200)
A = np.full((256, 200), 7.0)
with ops._failing_scratch_growths(2):  # both threads' first pack (own_gemm, gemm_rows)
    try:
        ops.dense_forward(A, A_prev, W, b, activation="relu", batch_invariant=True)
        print("no error")
    except MemoryError:
        print("MemoryError")
ops.dense_forward(A, A_prev, W, b, activation="relu", batch_invariant=True)
np.testing.assert_allclose(A, np.maximum(A_prev @ W.T + b, 0.0), rtol=1e-12, atol=1e-12)
print("then right")
"""


@pytest.mark.skipif(not (ops.has_own_gemm and ops.has_openmp),
                    reason="no parallel region takes scratch memory in this build")
def test_a_failed_allocation_on_a_worker_thread_raises_memoryerror(tmp_path):
    """own_gemm packs its panel in each worker's scratch inside the parallel region; an
    allocation that fails there raises MemoryError on the caller (it used to terminate
    the interpreter), and the next call, with memory, computes the right product."""
    r = subprocess.run([sys.executable, "-c", _WORKER_OOM], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)  # not the checkout: the installed pydl
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.split() == ["MemoryError", "then", "right"]


def test_a_failed_allocation_on_the_calling_thread_raises_memoryerror(restore_threads):
    """Batch norm takes its sums before its parallel region: MemoryError, and the same
    call then succeeds with the float64 reference's statistics."""
    pydl.set_num_threads(2)
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((64, 300)) * 3 + 1
    out = np.empty_like(Z)
    mean, invstd = np.empty(300), np.empty(300)
    one, zero = np.ones(300), np.zeros(300)

    def run():
        with ops._failing_scratch_growths(1):
            with pytest.raises(MemoryError):
                ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, one, zero)
        ops.batchnorm_forward_train(out, mean, invstd, None, None, Z, one, zero)

    in_new_thread(run)  # a new thread: its buffers must grow
    np.testing.assert_allclose(mean, Z.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(Z.var(axis=0) + 1e-5), rtol=1e-12)


def test_kernel_sources_allocate_only_through_scratch():
    """The rule above, kept: no container or heap call in the kernels' sources (the
    bindings convert arguments and may build error messages)."""
    pattern = re.compile(r"std::vector|\b(malloc|calloc|realloc)\(|\.resize\(|\bnew\s+\w")
    sources = sorted(p for p in CSRC.glob("*.[ch]pp") if p.name != "bindings.cpp")
    assert len(sources) >= 10, f"csrc/ not found next to tests/: {CSRC}"
    found = [f"{p.name}:{i}: {line.strip()}" for p in sources
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line.split("//")[0])]
    assert not found, "allocations outside scratch:\n" + "\n".join(found)
