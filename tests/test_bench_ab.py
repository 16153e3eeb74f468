"""bench/ab_builds.py: two builds of the core in one process (here two copies of the installed one)."""
import importlib.util
import re
import shutil
from pathlib import Path

import pydl._core
from pydl import ops

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ab_builds.py"


def load_script():
    spec = importlib.util.spec_from_file_location("ab_builds", SCRIPT)
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    return ab


def test_each_build_loads_as_its_own_module(tmp_path):
    # loading a second file under the installed core's name would return the installed core:
    # the A/B comparison would then time one build against itself
    ab = load_script()
    copy = tmp_path / Path(pydl._core.__file__).name
    shutil.copy(pydl._core.__file__, copy)
    a = ab.load_core(pydl._core.__file__, "a")
    b = ab.load_core(str(copy), "b")
    assert a is not b and a is not pydl._core and b is not pydl._core
    assert Path(b.__file__) == copy and b.softmax is not a.softmax


def test_ab_builds_times_both_and_restores_the_core(capsys, tmp_path):
    ab = load_script()
    before, threads = ops._core, ops.get_num_threads()
    path = pydl._core.__file__
    copy = tmp_path / Path(path).name
    shutil.copy(path, copy)
    try:
        ab.main([path, str(copy), "--only", "softmax_xent", "--quick", "--rounds", "2",
                 "--threads", "1"])
    finally:
        ops.set_num_threads(threads)
    assert ops._core is before
    out = capsys.readouterr().out
    m = re.search(r"Softmax CE fwd\+bwd: A ([\d.]+) ms, B ([\d.]+) ms, per-round A/B median ([\d.]+)", out)
    assert m, out
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0
    # the same build against itself: the ratio is 1 up to timing noise
    assert 0.2 < float(m.group(3)) < 5
