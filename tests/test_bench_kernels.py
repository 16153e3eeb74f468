"""pydl.benchmarks.kernels: how a round times its variants (the timing harness of
bench/compare.py), with SciPy's BLAS and pydl's thread count faked."""
import pytest

import pydl.ops as ops
from pydl.benchmarks import kernels


@pytest.fixture
def blas_setting(monkeypatch):
    """SciPy's BLAS thread count as a list of one int, set through a fake that records every
    switch in blas_setting.switches; pydl's thread count is 3."""
    setting = [1]
    switches = []

    def fake_set(n):
        switches.append(n)
        previous, setting[0] = setting[0], n
        return previous

    monkeypatch.setattr(ops, "_set_scipy_blas_threads", fake_set)
    monkeypatch.setattr(ops, "get_num_threads", lambda: 3)
    return setting, switches


def test_the_raw_blas_reference_switches_threads_once_per_turn_not_inside_timed_calls(
        blas_setting):
    setting, switches = blas_setting
    seen = {"ref": [], "other": []}
    ref = kernels.scipy_blas_threads(lambda: seen["ref"].append(setting[0]))
    samples = kernels.measure_samples(
        {"ref": ref, "other": lambda: seen["other"].append(setting[0])},
        repeats=3, warmup=5, min_time=0.0)
    assert [len(v) for v in samples.values()] == [3, 3]
    # warm-up and calibration in one turn, then one turn per round: 4 turns for 9 calls
    assert len(seen["ref"]) == 9
    assert switches == [3, 1] * 4
    assert set(seen["ref"]) == {3} and set(seen["other"]) == {1}


def test_the_raw_blas_reference_called_on_its_own_switches_around_the_call(blas_setting):
    setting, switches = blas_setting
    seen = []
    ref = kernels.scipy_blas_threads(lambda: seen.append(setting[0]))
    ref()
    with ref.turn():
        ref()
        ref()
    assert seen == [3, 3, 3] and switches == [3, 1, 3, 1] and setting == [1]


def test_a_blas_that_pydl_cannot_set_is_left_alone(monkeypatch):
    asked = []
    monkeypatch.setattr(ops, "_set_scipy_blas_threads", lambda n: asked.append(n) or 0)
    monkeypatch.setattr(ops, "get_num_threads", lambda: 3)
    calls = []
    ref = kernels.scipy_blas_threads(lambda: calls.append(1))
    ref()
    with ref.turn():
        ref()
    assert calls == [1, 1] and asked == [3, 3]  # asked once a turn, never set back to 0
