"""bench/ab_builds.py: two builds of the core in one process (here the installed one twice)."""
import importlib.util
import re
from pathlib import Path

import pydl._core
from pydl import ops

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ab_builds.py"


def test_ab_builds_times_both_and_restores_the_core(capsys):
    spec = importlib.util.spec_from_file_location("ab_builds", SCRIPT)
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    before, threads = ops._core, ops.get_num_threads()
    path = pydl._core.__file__
    try:
        ab.main([path, path, "--only", "softmax_xent", "--quick", "--rounds", "2", "--threads", "1"])
    finally:
        ops.set_num_threads(threads)
    assert ops._core is before
    out = capsys.readouterr().out
    m = re.search(r"Softmax CE fwd\+bwd: A ([\d.]+) ms, B ([\d.]+) ms, per-round A/B median ([\d.]+)", out)
    assert m, out
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0
    # the same build against itself: the ratio is 1 up to timing noise
    assert 0.2 < float(m.group(3)) < 5
