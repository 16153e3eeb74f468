"""Learning-rate schedules: formulas vs NumPy references, JSON round trips, bad input."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydl import schedules as S

EPOCHS = np.arange(51, dtype=np.float64)  # e = 0..50


def _assert_close(name, got, want, rtol=1e-12):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    worst = int(np.argmax(err))
    assert err[worst] <= rtol, (
        f"{name}: worst relative error {err[worst]:.3e} at epoch {worst}: "
        f"got {got[worst]!r}, want {want[worst]!r}")


# (schedule, NumPy reference over EPOCHS written from the formula)
CASES = [
    (S.Constant(0.3), np.full_like(EPOCHS, 0.3)),
    (S.InverseTimeDecay(0.2, decay_rate=1.0), 0.2 / (1.0 + 1.0 * EPOCHS)),
    (S.InverseTimeDecay(0.05, decay_rate=0.0), np.full_like(EPOCHS, 0.05)),
    (S.InverseTimeDecay(1.5, decay_rate=0.37), 1.5 / (1.0 + 0.37 * EPOCHS)),
    (S.ExponentialDecay(0.1), 0.1 * 0.95 ** EPOCHS),
    (S.ExponentialDecay(0.1, base=0.5), 0.1 * 0.5 ** EPOCHS),
    (S.ExponentialDecay(0.7, base=1.0), np.full_like(EPOCHS, 0.7)),
    (S.InverseSqrtDecay(0.1), 0.1 * 1.0 / np.sqrt(EPOCHS + 1.0)),
    (S.InverseSqrtDecay(0.01, k=3.0), 0.01 * 3.0 / np.sqrt(EPOCHS + 1.0)),
    (S.StaircaseDecay(0.1, decay_rate=1.0, interval=1), 0.1 / (1.0 + np.floor(EPOCHS))),
    (S.StaircaseDecay(0.1, decay_rate=0.5, interval=10), 0.1 / (1.0 + 0.5 * np.floor(EPOCHS / 10))),
    (S.StaircaseDecay(2.0, decay_rate=3.0, interval=7), 2.0 / (1.0 + 3.0 * np.floor(EPOCHS / 7))),
]


@pytest.mark.parametrize("sched, want", CASES, ids=[repr(c[0]) for c in CASES])
def test_formula_matches_numpy_reference(sched, want):
    got = [sched(e) for e in range(51)]
    assert all(type(v) is float for v in got)
    _assert_close(repr(sched), got, want)


def test_numpy_integer_epochs_are_accepted():
    sched = S.InverseTimeDecay(0.1, 1.0)
    assert sched(np.int64(3)) == sched(3) == pytest.approx(0.025)
    assert sched(np.uint8(3)) == sched(3)


def test_staircase_is_flat_within_an_interval_and_steps_at_its_end():
    sched = S.StaircaseDecay(0.1, decay_rate=1.0, interval=5)
    assert len({sched(e) for e in range(5)}) == 1
    assert sched(4) > sched(5)
    assert sched(5) == sched(9) == pytest.approx(0.05)


def test_staircase_with_interval_one_is_inverse_time():
    a = S.StaircaseDecay(0.3, decay_rate=0.2, interval=1)
    b = S.InverseTimeDecay(0.3, decay_rate=0.2)
    assert [a(e) for e in range(30)] == [b(e) for e in range(30)]


@settings(max_examples=60, deadline=None)
@given(lr0=st.floats(1e-6, 10.0), rate=st.floats(0.0, 5.0), e=st.integers(0, 10_000))
def test_decays_are_positive_and_non_increasing(lr0, rate, e):
    for sched in (S.InverseTimeDecay(lr0, rate), S.InverseSqrtDecay(lr0),
                  S.StaircaseDecay(lr0, rate, 3), S.ExponentialDecay(lr0, 0.999)):
        assert 0.0 < sched(e) <= lr0 * (1 + 1e-12)
        assert sched(e + 1) <= sched(e)


# --------------------------------------------------------------------------- bad epochs


@pytest.mark.parametrize("epoch, err", [
    (-1, ValueError), (-100, ValueError), (1.5, TypeError), (2.0, TypeError),
    (np.float64(1.0), TypeError), ("3", TypeError), (None, TypeError), (True, TypeError),
])
def test_bad_epoch_is_rejected(epoch, err):
    for sched in (S.Constant(0.1), S.InverseTimeDecay(0.1, 1.0), S.ExponentialDecay(0.1),
                  S.InverseSqrtDecay(0.1), S.StaircaseDecay(0.1, 1.0, 2),
                  S.as_schedule(lambda e: 0.1)):
        with pytest.raises(err, match="epoch"):
            sched(epoch)


# --------------------------------------------------------------------------- bad hyperparameters


@pytest.mark.parametrize("make, name", [
    (lambda: S.Constant(0.0), "lr0"),
    (lambda: S.Constant(-0.1), "lr0"),
    (lambda: S.Constant(math.nan), "lr0"),
    (lambda: S.Constant(math.inf), "lr0"),
    (lambda: S.InverseTimeDecay(0.1, -0.5), "decay_rate"),
    (lambda: S.InverseTimeDecay(0.1, math.nan), "decay_rate"),
    (lambda: S.InverseTimeDecay(-1.0, 1.0), "lr0"),
    (lambda: S.ExponentialDecay(0.1, base=0.0), "base"),
    (lambda: S.ExponentialDecay(0.1, base=1.01), "base"),
    (lambda: S.ExponentialDecay(0.1, base=-0.5), "base"),
    (lambda: S.ExponentialDecay(0.1, base=math.inf), "base"),
    (lambda: S.InverseSqrtDecay(0.1, k=0.0), "k"),
    (lambda: S.InverseSqrtDecay(0.1, k=-2.0), "k"),
    (lambda: S.StaircaseDecay(0.1, 1.0, 0), "interval"),
    (lambda: S.StaircaseDecay(0.1, 1.0, -3), "interval"),
    (lambda: S.StaircaseDecay(0.1, -1.0, 2), "decay_rate"),
])
def test_bad_hyperparameter_value(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda: S.Constant("0.1"), "lr0"),
    (lambda: S.Constant(None), "lr0"),
    (lambda: S.Constant(True), "lr0"),
    (lambda: S.InverseTimeDecay(0.1, [1.0]), "decay_rate"),
    (lambda: S.StaircaseDecay(0.1, 1.0, 2.5), "interval"),
    (lambda: S.StaircaseDecay(0.1, 1.0, 2.0), "interval"),
    (lambda: S.StaircaseDecay(0.1, 1.0, True), "interval"),
])
def test_bad_hyperparameter_type(make, name):
    with pytest.raises(TypeError, match=name):
        make()


def test_numpy_scalars_are_accepted_as_hyperparameters():
    sched = S.StaircaseDecay(np.float32(0.5), np.float64(1.0), np.int32(2))
    assert sched(2) == pytest.approx(0.25)
    assert type(sched.lr0) is float and type(sched.interval) is int
    json.dumps(sched.to_dict())  # plain Python types, JSON-ready


# --------------------------------------------------------------------------- as_schedule


def test_as_schedule_number_becomes_constant():
    sched = S.as_schedule(0.01)
    assert isinstance(sched, S.Constant) and sched(0) == sched(99) == 0.01
    assert isinstance(S.as_schedule(1), S.Constant)
    assert isinstance(S.as_schedule(np.float32(0.5)), S.Constant)


def test_as_schedule_passes_schedules_through():
    sched = S.ExponentialDecay(0.1)
    assert S.as_schedule(sched) is sched


def test_as_schedule_wraps_callables_and_checks_their_values():
    sched = S.as_schedule(lambda e: 0.1 * 0.5 ** e)
    assert isinstance(sched, S.FunctionSchedule)
    assert sched(3) == pytest.approx(0.0125)
    assert S.as_schedule(lambda e: np.float32(0.25))(0) == 0.25
    assert S.as_schedule(lambda e: np.array(0.25))(0) == 0.25

    for bad in (0.0, -1.0, math.nan, math.inf, "0.1", None, [0.1], np.array([0.1]), True):
        sched = S.as_schedule(lambda e, bad=bad: 0.1 if e < 4 else bad)
        assert sched(3) == 0.1
        with pytest.raises(ValueError, match="epoch 4"):
            sched(4)


def test_as_schedule_accepts_a_dict():
    assert S.as_schedule({"name": "InverseSqrtDecay", "lr0": 0.2, "k": 2.0}) == \
        S.InverseSqrtDecay(0.2, k=2.0)


@pytest.mark.parametrize("bad", ["0.1", None, [0.1], True])
def test_as_schedule_rejects_other_objects(bad):
    with pytest.raises(TypeError):
        S.as_schedule(bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan])
def test_as_schedule_rejects_bad_numbers(bad):
    with pytest.raises(ValueError, match="lr0"):
        S.as_schedule(bad)


# --------------------------------------------------------------------------- repr / JSON


@pytest.mark.parametrize("sched", [c[0] for c in CASES], ids=[repr(c[0]) for c in CASES])
def test_to_dict_round_trips_through_json(sched):
    d = sched.to_dict()
    assert d["name"] == type(sched).__name__
    restored = S.from_dict(json.loads(json.dumps(d)))
    assert type(restored) is type(sched) and restored == sched
    assert type(sched).from_dict(d) == sched
    assert [restored(e) for e in range(51)] == [sched(e) for e in range(51)]


def test_repr_shows_class_and_hyperparameters():
    assert repr(S.StaircaseDecay(0.1, 0.5, 10)) == \
        "StaircaseDecay(lr0=0.1, decay_rate=0.5, interval=10)"
    assert repr(S.ExponentialDecay(0.1)) == "ExponentialDecay(lr0=0.1, base=0.95)"
    assert repr(S.Constant(1)) == "Constant(lr0=1.0)"

    def my_decay(e):
        return 0.1

    assert "my_decay" in repr(S.as_schedule(my_decay))


def test_equality_and_hash():
    assert S.InverseTimeDecay(0.1, 1.0) == S.InverseTimeDecay(0.1, 1)
    assert S.InverseTimeDecay(0.1, 1.0) != S.InverseTimeDecay(0.1, 2.0)
    assert S.InverseTimeDecay(0.1, 1.0) != S.StaircaseDecay(0.1, 1.0, 1)
    assert len({S.Constant(0.1), S.Constant(0.1), S.Constant(0.2)}) == 2


def test_callable_schedule_cannot_be_saved():
    sched = S.as_schedule(lambda e: 0.1)
    with pytest.raises(TypeError, match="cannot save.*built-in"):
        sched.to_dict()


@pytest.mark.parametrize("d, match", [
    ({"lr0": 0.1}, "name"),
    ({"name": "CosineDecay", "lr0": 0.1}, "unknown schedule name 'CosineDecay'"),
    ({"name": "InverseTimeDecay", "lr0": 0.1}, "decay_rate"),
    ({"name": "Constant", "lr0": 0.1, "extra": 1}, "extra"),
    ({"name": "FunctionSchedule", "fn": None}, "unknown schedule name"),
])
def test_from_dict_rejects_bad_descriptions(d, match):
    with pytest.raises(ValueError, match=match):
        S.from_dict(d)


def test_from_dict_on_subclass_checks_the_name():
    with pytest.raises(ValueError, match="not a Constant"):
        S.Constant.from_dict(S.ExponentialDecay(0.1).to_dict())
    with pytest.raises(TypeError):
        S.from_dict("Constant")


def test_from_dict_validates_values():
    with pytest.raises(ValueError, match="base"):
        S.from_dict({"name": "ExponentialDecay", "lr0": 0.1, "base": 2.0})


# --------------------------------------------------------------------------- values out of range


@pytest.mark.parametrize("sched, epoch", [
    (S.ExponentialDecay(1e-3, base=1e-200), 2),            # 1e-403 underflows to 0
    (S.InverseTimeDecay(1e-3, decay_rate=1e308), 2),        # 1 + 2e308 overflows, lr -> 0
    (S.StaircaseDecay(1e-3, decay_rate=1e308, interval=1), 2),
    (S.ExponentialDecay(1.0, base=0.5), 10**400),           # base**e overflows the float conversion
    (S.InverseTimeDecay(1.0, decay_rate=0.5), 10**400),
    (S.InverseSqrtDecay(1.0), 10**400),
])
def test_value_that_is_not_a_positive_float_raises_naming_schedule_and_epoch(sched, epoch):
    with pytest.raises(ValueError) as info:
        sched(epoch)
    msg = str(info.value)
    assert repr(sched) in msg and f"epoch {epoch}" in msg


def test_value_just_before_underflow_is_still_returned():
    sched = S.ExponentialDecay(1e-3, base=1e-200)
    assert sched(1) == pytest.approx(1e-203, rel=1e-12)


@pytest.mark.parametrize("lr0, k", [(1e200, 1e200), (1e-200, 1e-200)])
def test_inverse_sqrt_start_value_must_be_a_positive_float(lr0, k):
    with pytest.raises(ValueError, match=r"lr0 \* k"):
        S.InverseSqrtDecay(lr0, k=k)


def test_underflowing_schedule_stops_fit_before_the_optimizer_sees_zero():
    import pydl
    from pydl import callbacks, optim

    X, y = pydl.datasets.make_moons(40, seed=0)
    model = pydl.mlp([2, 4, 2], seed=0, dtype=np.float64)  # (float32: 1e-203 at epoch 1)
    sched = S.ExponentialDecay(1e-3, base=1e-200)
    with pytest.raises(ValueError, match=r"ExponentialDecay\(.*epoch 2"):
        model.fit(X, y, optimizer=optim.SGD(lr=0.1), epochs=4, verbose=0,
                  callbacks=[callbacks.LRScheduler(sched)])


@pytest.mark.parametrize("name", [["x"], None, 3])
def test_from_dict_rejects_a_name_that_is_not_a_string(name):
    with pytest.raises(TypeError, match="'name' must be a str"):
        S.Schedule.from_dict({"name": name})
