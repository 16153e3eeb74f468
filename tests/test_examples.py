"""Smoke test of the example scripts: each ``examples/NN_*.py`` runs its ``--quick``
mode, prints its table and writes a PNG.

The scripts' names start with digits, so they are imported by path.
"""
import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import pydl  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# script stem -> row labels that must start a line of the printed table(s)
EXPECTED_ROWS = {
    "01_initialization": ["zeros", "random x1000", "he x10", "he", "all 0.5 (tanh)"],
    "02_regularization": ["none", "L2 (lambda=1)", "dropout (keep_prob=0.5)"],
    "03_gradient_checking": ["correct", "layer 3 forgets the L2 term", "layer 5 divides dW by m twice"],
    "04_optimizers": ["GD", "Momentum", "RMSprop", "Adam"],
    "05_batchnorm": ["0.1", "1"],
    "06_search": ["[0.0001, 0.001)", "[0.001, 0.01)", "[0.01, 0.1)", "[0.1, 1]",
                  "grid (log-spaced lr)", "random, loguniform lr", "random, uniform lr"],
    "07_softmax_digits": ["softmax regression 64-10", "MLP 64-128-10", "MLP 64-128-10 + BN + dropout"],
}


def load_example(stem):
    if str(EXAMPLES) not in sys.path:  # as `python examples/X.py` has it: for _common.py
        sys.path.insert(0, str(EXAMPLES))
    path = EXAMPLES / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"pydl_example_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """run(stem) -> (returned dict, printed text, out dir): each script runs once, in --quick mode."""
    cache = {}

    def run(stem):
        if stem not in cache:
            out_dir = tmp_path_factory.mktemp(stem)
            threads = pydl.get_num_threads()
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    result = load_example(stem).main(["--quick", "--out", str(out_dir)])
            finally:
                pydl.set_num_threads(threads)  # the examples set it (default 1); put it back
            cache[stem] = (result, buf.getvalue(), out_dir)
        return cache[stem]

    return run


def test_every_example_is_covered():
    assert sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py")) == sorted(EXPECTED_ROWS)


@pytest.mark.parametrize("stem", sorted(EXPECTED_ROWS))
def test_example_quick_run(stem, quick_run):
    result, out, out_dir = quick_run(stem)

    png = out_dir / f"{stem}.png"
    assert png.is_file(), f"{stem} did not write {png.name}"
    data = png.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert result["png"] == str(png)

    for label in EXPECTED_ROWS[stem]:
        # a table row: the label (numbers may be right-aligned), then two spaces and the next column
        assert re.search(rf"^ *{re.escape(label)} {{2,}}\S", out, re.MULTILINE), \
            f"{stem}: no table row for {label!r} in:\n{out}"
    assert "wall time:" in out


def test_initialization_zeros_keep_symmetry(quick_run):
    result, out, _ = quick_run("01_initialization")
    assert result["zeros"]["W1_rows_identical"]
    assert result["zeros"]["final_cost"] == pytest.approx(0.6931, abs=1e-3)  # log 2: a coin flip
    assert result["all 0.5 (tanh)"]["W1_rows_identical"] and result["all 0.5 (tanh)"]["W1_changed"]
    assert not result["he"]["W1_rows_identical"]
    assert "rows of W1 are identical" in out


def test_gradient_checking_catches_the_planted_bugs(quick_run):
    result, _, _ = quick_run("03_gradient_checking")
    assert result["correct"]["passed"]
    forgot, double = result["layer 3 forgets the L2 term"], result["layer 5 divides dW by m twice"]
    assert forgot["verdict"] == "bug" and double["verdict"] == "bug"
    assert max(forgot["per_parameter"], key=forgot["per_parameter"].get) == "3.W"
    assert max(double["per_parameter"], key=double["per_parameter"].get) == "5.W"
    assert "dropout" in result["dropout_refused"]


def test_search_decade_counts_cover_every_trial(quick_run):
    result, _, _ = quick_run("06_search")
    for name in ("grid (log-spaced lr)", "random, loguniform lr", "random, uniform lr"):
        assert sum(result[name]["decade_counts"]) == result[name]["n_trials"]
