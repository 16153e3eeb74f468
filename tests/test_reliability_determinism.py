"""Determinism and threads at the level of a whole training run.

- same seed, same thread count: bitwise the same theta, BatchNorm statistics and Adam
  moments (dropout, shuffling and BatchNorm all on);
- 1 vs 2 threads (pydl.set_num_threads): bitwise the same shuffles and dropout masks, theta
  equal to float32 rounding (a product may run in OpenBLAS at 2 threads and in pydl's own
  kernel at 1, which sum in another order; see ops.gemm_kernel);
- two models trained at once in two Python threads give exactly the sequential results (no
  hidden global state, and at 2 threads whichever products hold the team's bands), and the
  kernels release the GIL.

Sizes are chosen so that the OpenMP kernels really split the work (batch 256 x 512 hidden
units = 2^17 elements: BatchNorm sums over 2 row chunks). The kernel-level thread tests are in
test_kernels_threads.py.
"""
import sys
import threading
import time

import numpy as np
import pytest

import pydl
from conftest import run_in_lockstep
from pydl import nn, ops, optim

M, N_IN, HIDDEN, C, BATCH = 1024, 64, 512, 10, 256


@pytest.fixture(autouse=True)
def restore_threads():
    n = pydl.get_num_threads()
    yield
    pydl.set_num_threads(n)


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M, N_IN)).astype(np.float32)
    y = rng.integers(0, C, M)
    return X, y


def build(seed=0):
    """Dense -> BatchNorm -> tanh -> Dropout -> Dense: tanh is never exactly 0, so the zeros
    of the dropout output are exactly its mask."""
    return pydl.Sequential([nn.Dense(N_IN, HIDDEN, use_bias=False), nn.BatchNorm(HIDDEN), nn.Tanh(),
                            nn.Dropout(keep_prob=0.7), nn.Dense(HIDDEN, C)], seed=seed)


class Spy:
    """Identity augment recording every mini-batch (which rows, in which order)."""

    def __init__(self):
        self.batches = []

    def __call__(self, Xb, rng):
        self.batches.append(Xb.copy())
        return Xb


def train(threads, epochs=2, seed=0, spy=None):
    pydl.set_num_threads(threads)
    X, y = data()
    model = build(seed)
    model.fit(X, y, optimizer=optim.Adam(lr=1e-3), epochs=epochs, batch_size=BATCH, verbose=0,
              augment=spy)
    return model


def assert_bitwise(a, b):
    assert np.array_equal(a.theta, b.theta), (
        f"theta differs in {int((a.theta != b.theta).sum())} of {a.theta.size} entries")
    for (k, x), (_, z) in zip(a._state_arrays().items(), b._state_arrays().items()):
        assert np.array_equal(x, z), k
    for k, v in a.optimizer.state.items():
        assert np.array_equal(v, b.optimizer.state[k]), k
    assert a.history.iterations == b.history.iterations


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_threads_is_bitwise_identical(threads):
    a, b = train(threads), train(threads)
    assert_bitwise(a, b)
    c = train(threads, seed=1)
    assert not np.array_equal(a.theta, c.theta), "the seed must matter"


@pytest.mark.skipif(not ops.has_openmp, reason="built without OpenMP")
def test_one_and_two_threads_same_shuffles_and_masks_theta_to_rounding():
    spy1, spy2 = Spy(), Spy()
    one = train(1, spy=spy1)
    two = train(2, spy=spy2)
    assert pydl.get_num_threads() == 2
    # the shuffles: the same rows in the same order in every mini-batch
    assert len(spy1.batches) == len(spy2.batches) == 2 * M // BATCH
    for b1, b2 in zip(spy1.batches, spy2.batches):
        assert np.array_equal(b1, b2)
    # trained parameters agree to float32 rounding (whichever GEMM ran, see the docstring)
    np.testing.assert_allclose(two.theta, one.theta, rtol=1e-4, atol=1e-5)
    for (k, x), (_, z) in zip(one._state_arrays().items(), two._state_arrays().items()):
        np.testing.assert_allclose(z, x, rtol=1e-4, atol=1e-5, err_msg=k)
    # the dropout masks: the same parameters, step and input give the same zeros
    X, _ = data()
    masks = {}
    for threads in (1, 2):
        pydl.set_num_threads(threads)
        model = one.copy()
        model.step = 5
        model.forward(X[:BATCH], training=True)
        out = model.layers[3]._bufs["out"]
        assert out.shape == (BATCH, HIDDEN)
        masks[threads] = out == 0
    assert np.array_equal(masks[1], masks[2])
    assert 0.25 < masks[1].mean() < 0.35, "keep_prob 0.7 drops about 30%"


@pytest.mark.skipif(not ops.has_openmp, reason="built without OpenMP")
def test_costs_are_the_same_on_every_call_with_more_threads_than_cores():
    """The loss kernels sum per-thread partial costs; added in the order threads finish
    (omp atomic), the last bits changed from call to call with > 2 threads."""
    pydl.set_num_threads(4)
    rng = np.random.default_rng(0)
    # 2^19 elements: enough for every loss to run in parallel (common.hpp, worth_parallel)
    Z = rng.standard_normal((26215, 20)).astype(np.float32)
    Y = rng.standard_normal((26215, 20)).astype(np.float32)
    labels = rng.integers(0, 20, 26215)
    for name, call in [("mean_squared_error", lambda: ops.mean_squared_error(None, Z, Y)),
                       ("softmax_cross_entropy", lambda: ops.softmax_cross_entropy(None, Z, labels=labels)),
                       ("sigmoid_cross_entropy", lambda: ops.sigmoid_cross_entropy(None, Z, (Y > 0).astype(np.float32)))]:
        values = {call() for _ in range(300)}
        assert len(values) == 1, f"{name} gave {len(values)} different costs for the same input"


@pytest.mark.parametrize("threads", [1, 2])
def test_two_models_trained_at_once_in_two_threads_equal_sequential_training(threads):
    """At 2 threads the products (256 x 512 x 64 and up) are cut into bands, which the
    threads' products share: one that finds them taken computes its bands itself, with the
    same bits."""
    pydl.set_num_threads(threads)
    X, y = data()
    configs = [dict(seed=0, lr=1e-3, batch_size=128), dict(seed=1, lr=3e-3, batch_size=64),
               dict(seed=0, lr=1e-3, batch_size=128)]

    def run(cfg, out, i):
        model = build(cfg["seed"])
        model.fit(X, y, optimizer=optim.Adam(lr=cfg["lr"]), epochs=2, batch_size=cfg["batch_size"],
                  verbose=0)
        out[i] = model

    sequential = {}
    for i, cfg in enumerate(configs):
        run(cfg, sequential, i)
    concurrent, errors = {}, []

    def guarded(cfg, i):
        try:
            run(cfg, concurrent, i)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(cfg, i)) for i, cfg in enumerate(configs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i in range(len(configs)):
        assert_bitwise(concurrent[i], sequential[i])
    assert_bitwise(concurrent[0], concurrent[2])


def _progress_during(call, total=0.3):
    """Run call() repeatedly in a thread for about `total` seconds while this thread counts
    loop iterations. Returns [(duration, iterations of this thread in the middle half of that
    call)] per call: a kernel that held the GIL would leave the middle of its calls empty (the
    worker can lose the GIL between its own bytecodes, but not inside the C++ call)."""
    stamps, calls = [], []

    def worker():
        t_end = time.perf_counter() + total
        while time.perf_counter() < t_end and len(calls) < 50:
            t0 = time.perf_counter()
            call()
            calls.append((t0, time.perf_counter()))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # this thread hands the GIL back quickly
    try:
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive():
            stamps.append(time.perf_counter())
        t.join()
    finally:
        sys.setswitchinterval(old)
    stamps = np.array(stamps)
    out = []
    for t0, t1 in calls:
        d = t1 - t0
        out.append((d, int(((stamps > t0 + d / 4) & (stamps < t1 - d / 4)).sum())))
    return out


@pytest.mark.parametrize("kernel", ["dense_forward", "batchnorm_forward_train", "dropout_forward",
                                    "adam_step", "softmax_cross_entropy"])
def test_kernels_release_the_gil(kernel):
    """If a kernel held the GIL, this thread could not run while it computes."""
    pydl.set_num_threads(1)
    rng = np.random.default_rng(0)
    m, n = (2048, 1024) if kernel == "dense_forward" else (4096, 2048)
    Z = rng.standard_normal((m, n)).astype(np.float32)
    out = np.empty_like(Z)
    if kernel == "dense_forward":
        W = rng.standard_normal((n, n)).astype(np.float32)
        call = lambda: ops.dense_forward(out, Z, W, None, "tanh")  # noqa: E731
    elif kernel == "batchnorm_forward_train":
        vec = [np.ones(n, np.float32) for _ in range(6)]
        call = lambda: ops.batchnorm_forward_train(out, *vec[:4], Z, vec[4], vec[5])  # noqa: E731
    elif kernel == "dropout_forward":
        call = lambda: ops.dropout_forward(out, Z, 1, 2, 3, 0.5)  # noqa: E731
    elif kernel == "adam_step":
        theta, v, s, g = (rng.standard_normal(4 * m * n).astype(np.float32) for _ in range(4))
        s = np.abs(s)
        call = lambda: ops.adam_step(theta, v, s, g, 1e-3, 0.9, 0.999, 1e-8, 3)  # noqa: E731
    else:
        labels = rng.integers(0, n, m)
        call = lambda: ops.softmax_cross_entropy(out, Z, labels=labels)  # noqa: E731
    calls = _progress_during(call)
    # A Python loop iteration takes ~1 us, so the middle half of a 2 ms call leaves room for
    # hundreds of them; the arrays are sized so that even a fast machine needs > 2 ms per call.
    long_calls = [(d, k) for d, k in calls if d >= 0.002]
    assert long_calls, f"{kernel}: every call took < 2 ms ({calls}); use bigger arrays"
    ran = sum(k for _, k in long_calls)
    assert ran > 10, (f"{kernel}: another Python thread ran only {ran} loop iterations in the middle "
                      f"of {len(long_calls)} calls ({sum(d for d, _ in long_calls):.2f} s): "
                      "the GIL is held")


def test_predictions_from_two_threads_at_once_on_one_model_are_each_their_own(monkeypatch):
    """Evaluation writes new arrays, not a layer's training buffers: two threads held together
    inside each dense and batch-norm kernel (a barrier after each call) still get exactly
    the predictions each would get alone (joblib's threads predicting chunks, say)."""
    pydl.set_num_threads(2)
    model = build(0)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((300, N_IN)).astype(np.float32) for _ in range(2)]
    alone = [model.predict_proba(X) for X in inputs]
    got = run_in_lockstep(monkeypatch, ops, ["dense_forward", "batchnorm_forward_eval"],
                          [lambda X=X: model.predict_proba(X) for X in inputs])
    for i in range(2):
        np.testing.assert_array_equal(got[i], alone[i])
