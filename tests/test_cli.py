"""The pydl command: train (default job, config, resume), tune, gradcheck, config errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl.cli import main

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "configs")


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_default_job_writes_report_and_artifacts(tmp_path, capsys):
    code, out, err = run(["train", "--epochs", "3", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    for line in ("train", "dev", "test"):
        assert any(l.split()[:1] == [line] for l in out.splitlines()), out
    assert "avoidable bias" in out and "variance" in out and "next:" in out
    model = pydl.load(tmp_path / "model.npz")
    assert model.epoch == 3 and model.optimizer is not None and model.standardizer is not None
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["epoch"] == [0, 1, 2]
    ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
    assert ckpts == ["epoch-001.npz", "epoch-002.npz", "epoch-003.npz"]
    png = (tmp_path / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_trained_model_takes_raw_features_and_standardizes_them_itself(tmp_path, capsys):
    """model.npz keeps the Standardizer fit on the training rows and applies it to every
    input: the loaded model scores raw test rows as the run reported, and equals a model
    trained on rows standardized beforehand (the same bits)."""
    from pydl.cli import _split
    from pydl.config import build_model, build_optimizer, load_config, load_data
    from pydl.data import Standardizer

    code, out, err = run(["train", "--epochs", "2", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    test_line = next(l for l in out.splitlines() if l.split()[:1] == ["test"])
    model = pydl.load(tmp_path / "model.npz")
    cfg = load_config(None)
    Xtr, ytr, Xd, yd, Xte, yte = _split(cfg, *load_data(cfg))
    r = model.evaluate(Xte, yte)
    assert test_line.split()[1:] == [f"{r['loss']:.4f}", f"{r['accuracy']:.4f}"]
    std = Standardizer().fit(Xtr)
    assert np.array_equal(model.standardizer.mean_, std.mean_)
    np.testing.assert_array_equal(model.predict_proba(Xte),
                                  pydl.load(tmp_path / "model.npz").predict_proba(Xte))
    plain = build_model(cfg, Xtr.shape[1], ytr)  # no standardizer: given standardized rows
    plain.fit(std.transform(Xtr), ytr, optimizer=build_optimizer(cfg), epochs=2,
              batch_size=min(cfg["training"]["batch_size"], len(Xtr)),
              validation_data=(std.transform(Xd), yd), verbose=0)
    np.testing.assert_array_equal(plain.theta, model.theta)
    np.testing.assert_array_equal(plain.predict_proba(std.transform(Xte)), model.predict_proba(Xte))


def test_resume_continues_exactly_where_the_checkpoint_left(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(["train", "--epochs", "4", "--out", str(full), "--quiet"], capsys)[0] == 0
    assert run(["train", "--epochs", "2", "--out", str(part), "--quiet"], capsys)[0] == 0
    code, out, err = run(["train", "--epochs", "4", "--resume", str(part / "checkpoints" / "epoch-002.npz"),
                          "--out", str(part), "--quiet"], capsys)
    assert code == 0, err
    assert "resuming" in out
    a, b = pydl.load(full / "model.npz"), pydl.load(part / "model.npz")
    np.testing.assert_array_equal(a.theta, b.theta)
    assert b.history.epoch == [0, 1, 2, 3]


def test_resume_over_later_epochs_of_the_run_is_refused_and_writes_nothing(tmp_path, capsys):
    """Resuming epoch 2 of a 4-epoch run into its own --out would rewrite epochs 3-4 and
    model.npz: refused, every file as it was; into another --out it runs."""
    run_dir = tmp_path / "run"
    assert run(["train", "--epochs", "4", "--out", str(run_dir), "--quiet"], capsys)[0] == 0
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    resume = str(run_dir / "checkpoints" / "epoch-002.npz")
    code, _, err = run(["train", "--epochs", "4", "--lr", "0.01", "--resume", resume,
                        "--out", str(run_dir), "--quiet"], capsys)
    assert code != 0
    assert "holds later epochs of this run" in err and "epoch-003.npz" in err
    assert "model.npz at epoch 4" in err and f"--out {run_dir}-from-2" in err
    assert sorted(p for p in run_dir.rglob("*") if p.is_file()) == files
    assert all(p.read_bytes() == data for p, data in before.items())
    branch = tmp_path / "branch"
    code, _, err = run(["train", "--epochs", "4", "--lr", "0.01", "--resume", resume,
                        "--out", str(branch), "--quiet"], capsys)
    assert code == 0, err
    assert pydl.load(branch / "model.npz").optimizer.lr == 0.01
    # from the run's last epoch, into the same --out, it goes on
    code, _, err = run(["train", "--epochs", "5", "--resume", str(run_dir / "model.npz"),
                        "--out", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert pydl.load(run_dir / "model.npz").epoch == 5
    assert (run_dir / "checkpoints" / "epoch-004.npz").read_bytes() == before[
        run_dir / "checkpoints" / "epoch-004.npz"]


def test_resume_with_new_learning_rate(tmp_path, capsys):
    assert run(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"], capsys)[0] == 0
    code, out, _ = run(["train", "--epochs", "2", "--lr", "0.0005", "--resume",
                        str(tmp_path / "model.npz"), "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "lr 0.0005" in out
    assert pydl.load(tmp_path / "model.npz").optimizer.lr == 0.0005


@pytest.mark.parametrize("text, needle", [
    ("[model]\nhiden = [3]\n", "model.hiden"),
    ("[modle]\n", "[modle]"),
    ("[model]\nkeep_prob = 1.5\n", "model.keep_prob"),
    ("[optimizer]\nname = 'adam'\nlr = -1.0\n", "lr"),
    ("[training]\nepochs = 'ten'\n", "training.epochs"),
    ("[data]\nsource = 'imagenet'\n", "data.source"),
    ("[model\n", "not valid TOML"),
    ("[data]\nsource = 'file'\npath = 5\n", "data.path"),
    ("[model]\nloss = ['x']\n", "model.loss"),
    ("[schedule]\nname = ['x']\n", "schedule.name"),
    ("[search.space]\n\"optimizer.lr\" = { dist = ['uniform'], low = 0, high = 1 }\n", "optimizer.lr: dist"),
])
def test_bad_config_is_an_error_naming_key_and_file(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, out, err = run(["train", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err
    if "TOML" not in needle:
        assert str(cfg) in err


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run(["train", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "does not exist" in err


def test_train_from_npz_file_config(tmp_path, capsys):
    X, y = pydl.datasets.make_circles(300, noise=0.05, seed=0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\nsource = 'file'\npath = '{tmp_path / 'd.npz'}'\n"
                   "[model]\nhidden = [16]\nbatchnorm = false\nkeep_prob = 1.0\n[training]\nepochs = 40\n"
                   "batch_size = 32\npatience = 0\n[optimizer]\nname = 'adam'\nlr = 0.01\n")
    code, out, err = run(["train", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0, err
    test_acc = float([l for l in out.splitlines() if l.startswith("test ")][0].split()[2])
    assert test_acc >= 0.9


def test_shipped_configs_are_valid():
    from pydl.config import load_config

    names = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".toml"))
    assert names
    for name in names:
        load_config(os.path.join(CONFIGS, name))


def test_gradcheck_command(capsys):
    code, out, _ = run(["gradcheck", os.path.join(CONFIGS, "digits.toml"), "--coordinates", "300"], capsys)
    assert code == 0
    assert "great" in out and "dropout is turned off" in out


def test_tune_command_with_journal_resumes(tmp_path, capsys):
    journal = tmp_path / "j.jsonl"
    cfg = tmp_path / "s.toml"
    cfg.write_text("[data]\nsource = 'moons'\nn_samples = 200\n[model]\nhidden = [8]\nbatchnorm = false\n"
                   "keep_prob = 1.0\n[training]\nepochs = 3\npatience = 0\n[search]\ntrials = 3\n"
                   "[search.space]\n\"optimizer.lr\" = { dist = 'loguniform', low = 1e-3, high = 1e-1 }\n")
    code, out, err = run(["tune", str(cfg), "--journal", str(journal), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "3 trials (3 ok" in out
    assert len(journal.read_text().strip().splitlines()) >= 3
    assert (tmp_path / "search.csv").exists()
    code, out, err = run(["tune", str(cfg), "--journal", str(journal), "--trials", "4", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "4 trials" in out


def test_a_new_search_into_an_earlier_searchs_out_is_refused_and_keeps_its_table(tmp_path, capsys):
    cfg, out = tmp_path / "s.toml", tmp_path / "results"
    cfg.write_text(SEARCH + LR)
    code, _, err = run(["tune", str(cfg), "--trials", "2", "--out", str(out)], capsys)
    assert code == 0, err
    table = (out / "search.csv").read_bytes()
    journal = tmp_path / "j.jsonl"
    code, _, err = run(["tune", str(cfg), "--trials", "3", "--journal", str(journal), "--out",
                        str(out)], capsys)
    assert code == 2 and "already holds a search's results" in err and "Traceback" not in err
    assert (out / "search.csv").read_bytes() == table and not journal.exists()
    assert sorted(p.name for p in out.iterdir()) == ["search.csv"]


def test_python_dash_m_pydl_help(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pydl", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0
    for cmd in ("train", "tune", "gradcheck", "bench"):
        assert cmd in r.stdout


def test_importing_from_a_source_tree_without_the_core_says_so(tmp_path):
    """`import pydl` inside an uninstalled checkout finds pydl/ but no compiled _core."""
    src = os.path.dirname(pydl.__file__)
    pkg = tmp_path / "pydl"
    pkg.mkdir()
    for name in os.listdir(src):
        if name.endswith(".py"):
            (pkg / name).write_bytes(open(os.path.join(src, name), "rb").read())
    # -S: no site-packages, so neither an installed pydl nor an editable install's import
    # hook can stand in for the copy in the working directory
    p = subprocess.run([sys.executable, "-S", "-c", "import pydl"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "is not in" in p.stderr and "source tree" in p.stderr and "pip install" in p.stderr


def test_training_table_handles_failed_and_absent_peers():
    from pydl.benchmarks.training import table

    failed = {"error": ["RuntimeError: boom"]}
    text = table({"small": {"pydl": failed, "numpy": {"samples_per_s": 4e5, "seconds": 1.0}},
                  "medium": {"pydl": failed, "torch": {"samples_per_s": 2e4, "peak_mb": 18.0}},
                  "wide": {"pydl": {"gflops": 190.0, "raw_sgemm_gflops": 200.0}}})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["small"].rstrip(" |").endswith("no") and rows["medium"].rstrip(" |").endswith("no")
    assert "torch absent: judged without it" in rows["wide"] and rows["wide"].rstrip(" |").endswith("yes")


TINY = ("[data]\nsource = 'moons'\nn_samples = 60\n[model]\nhidden = [4]\nbatchnorm = false\n"
        "keep_prob = 1.0\n[training]\nepochs = 2\npatience = 0\n")
SPIRALS3 = TINY.replace("source = 'moons'", "source = 'spirals'\nn_classes = 3")


def _files(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_with_no_epochs_left_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "o"
    assert run(["train", str(cfg), "--epochs", "3", "--out", str(out), "--quiet"], capsys)[0] == 0
    before = _files(out)
    for epochs in ("2", "3"):
        code, text, err = run(["train", str(cfg), "--epochs", epochs, "--out", str(out), "--quiet",
                               "--resume", str(out / "checkpoints" / "epoch-003.npz")], capsys)
        assert code == 0, err
        assert "nothing to do" in text and "nothing written" in text
        assert _files(out) == before  # model.npz, history.json, checkpoints byte-identical


def test_diverged_training_is_a_one_line_error_and_keeps_the_earlier_model(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "o"
    assert run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)[0] == 0
    model, history = (out / "model.npz").read_bytes(), (out / "history.json").read_bytes()
    code, _, err = run(["train", str(cfg), "--lr", "1e30", "--epochs", "5", "--out", str(out), "--quiet",
                        "--resume", str(out / "model.npz")], capsys)
    assert code == 1
    assert "error: training diverged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "model.npz").read_bytes() == model and (out / "history.json").read_bytes() == history


def test_a_new_run_into_an_earlier_runs_out_is_refused_and_writes_nothing(tmp_path, capsys):
    """A new run would overwrite the earlier run's checkpoints one by one (and delete those
    past keep_last) before it could fail or be stopped: it is refused, pointing at --resume."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "o"
    assert run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any("checkpoints" in str(p) for p in before)
    code, _, err = run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert code != 0
    assert f"--out {out} already holds a run" in err and "--resume" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # another --out, or the same one resumed, still works
    assert run(["train", str(cfg), "--out", str(tmp_path / "o2"), "--quiet"], capsys)[0] == 0


def test_loss_that_does_not_fit_the_labels_says_which_do(tmp_path, capsys):
    """Labels 0..2: sigmoid cross-entropy (labels in [0, 1]) does not fit them."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(SPIRALS3.replace("hidden = [4]", "hidden = [4]\nloss = 'sigmoid_cross_entropy'"))
    code, _, err = run(["train", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert "model.loss = 'sigmoid_cross_entropy' does not fit the labels" in err
    assert "softmax_cross_entropy, mse" in err
    assert str(cfg) in err


@pytest.mark.parametrize("space", ["", "\"model.loss\" = { dist = 'choice', values = ['softmax_cross_entropy', 'sigmoid_cross_entropy'] }\n"])
def test_tune_checks_the_loss_against_the_labels_before_any_trial(tmp_path, capsys, space):
    cfg = tmp_path / "s.toml"
    text = SEARCH.replace(TINY, SPIRALS3) + LR + space
    cfg.write_text(text if space else text.replace("hidden = [4]",
                                                   "hidden = [4]\nloss = 'sigmoid_cross_entropy'"))
    code, out, err = run(["tune", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "model.loss = 'sigmoid_cross_entropy' does not fit the labels" in err and str(cfg) in err
    assert "trial" not in out


def test_an_out_that_is_a_file_is_an_error_naming_it(tmp_path, capsys):
    cfg, out = tmp_path / "c.toml", tmp_path / "taken"
    cfg.write_text(TINY)
    out.write_text("not a directory")
    code, _, err = run(["train", str(cfg), "--out", str(out / "run"), "--quiet"], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"pydl train: error:" in err and str(out) in err
    assert out.read_text() == "not a directory"


def test_resume_with_a_schedule_prints_the_rate_it_will_use(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY + "[schedule]\nname = 'exponential'\nbase = 0.5\n")
    out = tmp_path / "o"
    assert run(["train", str(cfg), "--epochs", "3", "--out", str(out), "--quiet"], capsys)[0] == 0
    code, text, err = run(["train", str(cfg), "--epochs", "4", "--lr", "0.01", "--out", str(out), "--quiet",
                           "--resume", str(out / "model.npz")], capsys)
    assert code == 0, err
    assert "resuming" in text and "(lr 0.00125" in text  # lr0 = 0.01, times 0.5**3 at epoch 3
    assert pydl.load(out / "model.npz").history.history["lr"][-1] == pytest.approx(0.00125)


SEARCH = TINY + "[search]\ntrials = 2\n[search.space]\n"
LR = "\"optimizer.lr\" = { dist = 'loguniform', low = 1e-3, high = 1e-1 }\n"


def test_tune_journal_refuses_a_different_base_config(tmp_path, capsys):
    journal, cfg = tmp_path / "j.jsonl", tmp_path / "s.toml"
    cfg.write_text(SEARCH + LR)
    assert run(["tune", str(cfg), "--journal", str(journal), "--out", str(tmp_path)], capsys)[0] == 0
    saved = journal.read_bytes()
    cfg.write_text((SEARCH + LR).replace("epochs = 2", "epochs = 3").replace("hidden = [4]", "hidden = [8]"))
    code, out, err = run(["tune", str(cfg), "--journal", str(journal), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "belongs to a different search" in err
    assert "training.epochs: journal has 2, this call has 3" in err and "model.hidden" in err
    assert journal.read_bytes() == saved


@pytest.mark.parametrize("space, needle", [
    ("\"model.hiden\" = { dist = 'choice', values = [[2], [64]] }\n", "'model.hiden' is not a config key"),
    ("\"model.keep_prob\" = { dist = 'uniform', low = 0.5, high = 2 }\n", "model.keep_prob"),
    ("\"training.epochs\" = { dist = 'uniform', low = 1, high = 3 }\n", "training.epochs"),
    ("\"optimizer.bta1\" = { dist = 'uniform', low = 0.5, high = 0.9 }\n", "optimizer.bta1"),
])
def test_tune_space_is_checked_against_the_config_up_front(tmp_path, capsys, space, needle):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SEARCH + space)
    code, _, err = run(["tune", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert needle in err and str(cfg) in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_tune_metric_is_checked_up_front(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text((SEARCH + LR).replace("trials = 2", "trials = 2\nmetric = 'dev_acc'"))
    code, _, err = run(["tune", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "search.metric" in err and "dev_accuracy" in err


def test_tune_exits_nonzero_when_every_trial_failed(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SEARCH.replace("epochs = 2", "epochs = 3")
                   + "\"optimizer.lr\" = { dist = 'loguniform', low = 1e29, high = 1e30 }\n")
    code, out, err = run(["tune", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 1
    assert "(0 ok, 2 failed)" in out and "every trial failed" in err and "diverged" in err


@pytest.mark.parametrize("flag, value", [("--examples", "0"), ("--coordinates", "0")])
def test_gradcheck_counts_must_be_positive(tmp_path, capsys, flag, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    code, _, err = run(["gradcheck", str(cfg), flag, value], capsys)
    assert code == 2 and f"{flag} must be >= 1" in err


@pytest.mark.parametrize("space", [
    '"optimizer.name" = "momentum"\n"optimizer.beta" = { dist = "uniform", low = 0.8, high = 0.99 }\n',
    '"schedule.name" = "exponential"\n"schedule.base" = { dist = "uniform", low = 0.5, high = 0.9 }\n',
])
def test_tune_space_keys_that_depend_on_another_space_key_are_accepted(tmp_path, capsys, space):
    """optimizer.beta exists only for the optimizer.name that the space itself sets."""
    from pydl.config import load_config

    cfg = tmp_path / "s.toml"
    cfg.write_text(TINY + "[search]\ntrials = 2\n[search.space]\n" + space)
    load_config(str(cfg))  # no ConfigError


def test_tune_space_that_gives_an_optimizer_a_key_it_lacks_is_refused(tmp_path):
    """With name a choice of adam and momentum, the trials drawing adam would get a beta
    that Adam does not take: refused up front, naming the value."""
    from pydl.config import ConfigError, load_config

    cfg = tmp_path / "s.toml"
    cfg.write_text(TINY + "[search]\ntrials = 2\n[search.space]\n"
                   '"optimizer.name" = { dist = "choice", values = ["adam", "momentum"] }\n'
                   '"optimizer.beta" = { dist = "uniform", low = 0.8, high = 0.99 }\n')
    with pytest.raises(ConfigError, match=r"'optimizer.name' .* value 'adam'.*beta"):
        load_config(str(cfg))


def test_temporary_files_of_a_killed_save_are_not_a_run(tmp_path, capsys):
    """A save killed midway leaves checkpoints/.tmp-*.npz: neither a run to refuse nor a
    checkpoint to suggest resuming from."""
    cfg, out = tmp_path / "c.toml", tmp_path / "o"
    cfg.write_text(TINY)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".tmp-abc123.npz").write_bytes(b"PK\x03\x04 cut")
    assert run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)[0] == 0
    code, _, err = run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and ".tmp-" not in err and "epoch-" in err


def test_tune_checks_its_out_before_any_trial(tmp_path, capsys):
    cfg, taken = tmp_path / "s.toml", tmp_path / "taken"
    cfg.write_text(SEARCH + LR)
    taken.write_text("a file")
    journal = tmp_path / "j.jsonl"
    code, out, err = run(["tune", str(cfg), "--journal", str(journal), "--out", str(taken / "results")],
                         capsys)
    assert code == 1 and "Traceback" not in err and str(taken) in err
    assert not journal.exists()                   # refused before the search ran


def test_resume_notes_a_config_whose_model_or_optimizer_is_not_the_checkpoints(tmp_path, capsys):
    cfg, other = tmp_path / "c.toml", tmp_path / "other.toml"
    cfg.write_text(TINY)
    assert run(["train", str(cfg), "--out", str(tmp_path / "a"), "--quiet"], capsys)[0] == 0
    ckpt = sorted((tmp_path / "a" / "checkpoints").glob("epoch-*.npz"))[-1]
    resume = ["train", "--resume", str(ckpt), "--epochs", "4", "--quiet"]
    code, _, err = run([*resume[:1], str(cfg), *resume[1:], "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "note" not in err                 # the config it was trained with
    other.write_text(TINY.replace("hidden = [4]", "hidden = [6, 6]"))
    code, _, err = run([*resume[:1], str(other), *resume[1:], "--out", str(tmp_path / "c")], capsys)
    assert code == 0 and "[model] of" in err and str(other) in err and "[optimizer]" not in err


def test_resume_on_labels_the_checkpoint_cannot_fit_names_the_checkpoint(tmp_path, capsys):
    cfg, spirals = tmp_path / "c.toml", tmp_path / "s.toml"
    cfg.write_text(TINY)
    assert run(["train", str(cfg), "--out", str(tmp_path / "a"), "--quiet"], capsys)[0] == 0
    ckpt = sorted((tmp_path / "a" / "checkpoints").glob("epoch-*.npz"))[-1]
    spirals.write_text(TINY.replace("source = 'moons'", "source = 'spirals'\nn_classes = 3"))
    code, _, err = run(["train", str(spirals), "--resume", str(ckpt), "--epochs", "4", "--out",
                        str(tmp_path / "b"), "--quiet"], capsys)
    assert code == 2 and f"checkpoint {ckpt} does not fit the labels" in err
    assert not (tmp_path / "b").exists()


def _files(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_into_another_runs_out_is_refused_and_writes_nothing(tmp_path, capsys):
    """Resuming run a into run b's --out would replace b's model.npz, history and curves:
    refused, b's files as they were."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["train", str(cfg), "--out", str(a), "--quiet"], capsys)[0] == 0
    assert run(["train", str(cfg), "--epochs", "1", "--out", str(b), "--quiet"], capsys)[0] == 0
    before = _files(b)
    code, _, err = run(["train", str(cfg), "--epochs", "3", "--resume",
                        str(a / "checkpoints" / "epoch-002.npz"), "--out", str(b), "--quiet"], capsys)
    assert code == 2 and f"--out {b} holds another run" in err
    assert _files(b) == before


def test_resuming_twice_keeps_the_whole_learning_curve(tmp_path, capsys):
    """The checkpoints of a resumed run hold the curve from epoch 0, so that resuming one of
    them (after a second interrupt) loses no epochs."""
    cfg, r = tmp_path / "tiny.toml", tmp_path / "r"
    cfg.write_text(TINY)
    assert run(["train", str(cfg), "--out", str(r), "--quiet"], capsys)[0] == 0
    assert run(["train", str(cfg), "--epochs", "3", "--resume", str(r / "model.npz"),
                "--out", str(r), "--quiet"], capsys)[0] == 0
    assert pydl.load(r / "checkpoints" / "epoch-003.npz").history.epoch == [0, 1, 2]
    code, _, err = run(["train", str(cfg), "--epochs", "4", "--resume",
                        str(r / "checkpoints" / "epoch-003.npz"), "--out", str(r), "--quiet"], capsys)
    assert code == 0, err
    model = pydl.load(r / "model.npz")
    assert model.history.epoch == [0, 1, 2, 3] and len(model.history["loss"]) == 4
    assert json.loads((r / "history.json").read_text())["epoch"] == [0, 1, 2, 3]


def test_braces_in_out_are_part_of_the_directory_name(tmp_path, capsys):
    cfg, out = tmp_path / "tiny.toml", tmp_path / "run{epoch}"
    cfg.write_text(TINY)
    code, _, err = run(["train", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["run{epoch}", "tiny.toml"]
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch-001.npz", "epoch-002.npz"]


def test_the_resume_hint_names_the_latest_checkpoint_past_epoch_999(tmp_path, capsys):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for epoch in (999, 1000, 1001):
        (ckpt / f"epoch-{epoch:03d}.npz").write_bytes(b"")
    code, _, err = run(["train", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and f"--resume {ckpt / 'epoch-1001.npz'}," in err


def test_an_out_that_cannot_take_checkpoints_is_refused_before_training(tmp_path, capsys,
                                                                       monkeypatch):
    def trained(*args, **kwargs):
        raise AssertionError("training ran")
    monkeypatch.setattr(pydl.Sequential, "fit", trained)
    (tmp_path / "checkpoints").write_text("a file where the checkpoints go")
    code, _, err = run(["train", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and f"--out {tmp_path / 'checkpoints'} is not writable" in err


@pytest.mark.parametrize("argv, needle", [
    (["--resume", ""], "--resume is empty"),
    (["--resume", "x.npz", "--seed", "3"], "--seed has no effect with --resume"),
])
def test_resume_arguments_that_would_be_ignored_are_refused(tmp_path, capsys, argv, needle):
    code, _, err = run(["train", "--out", str(tmp_path / "o"), "--quiet", *argv], capsys)
    assert code == 2 and needle in err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_is_one_line_naming_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from pydl.callbacks import Checkpoint

    saved = Checkpoint.on_epoch_end

    def save_then_interrupt(self, model, epoch, logs):
        saved(self, model, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoint, "on_epoch_end", save_then_interrupt)
    code, _, err = run(["train", "--epochs", "5", "--out", str(tmp_path), "--quiet"], capsys)
    last = tmp_path / "checkpoints" / "epoch-002.npz"
    assert code == 130 and "Traceback" not in err
    assert err.strip() == (f"pydl train: interrupted; the last checkpoint is {last}: rerun the "
                           f"command with --resume {last}")
    assert pydl.load(last).epoch == 2


def test_a_run_whose_report_fails_has_saved_its_model_first(tmp_path, capsys, monkeypatch):
    def broken(self, X, y):
        raise ValueError("evaluation failed")
    monkeypatch.setattr(pydl.Sequential, "evaluate", broken)
    code, _, err = run(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and "evaluation failed" in err
    assert pydl.load(tmp_path / "model.npz").epoch == 1
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [0]


@pytest.mark.parametrize("flag, value", [("--trials", "0"), ("--jobs", "0")])
def test_tune_counts_must_be_positive_naming_the_option(tmp_path, capsys, flag, value):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SEARCH + LR)
    code, _, err = run(["tune", str(cfg), flag, value, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{flag} must be >= 1" in err


def test_a_test_ratio_of_zero_is_refused_before_training(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.replace("[data]\n", "[data]\nratios = [0.9, 0.1, 0.0]\n"))
    code, _, err = run(["train", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and "data.ratios must give test a ratio > 0" in err
    assert not (tmp_path / "o").exists()


def test_tune_trials_from_the_command_line_meet_the_configs_checks(tmp_path, capsys):
    """--trials goes through the config: coarse_to_fine's rounds need 3 trials each."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(SEARCH.replace("[search]\n", "[search]\nmethod = 'coarse_to_fine'\nrounds = 3\n")
                   .replace("trials = 2", "trials = 9") + LR)
    code, _, err = run(["tune", str(cfg), "--trials", "6", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "search.trials must be >= 9" in err


def test_a_resumed_run_with_early_stopping_keeps_its_best_epoch(tmp_path, capsys):
    cfg, r = tmp_path / "c.toml", tmp_path / "r"
    cfg.write_text(TINY.replace("patience = 0", "patience = 50"))
    assert run(["train", str(cfg), "--out", str(r), "--quiet"], capsys)[0] == 0
    code, _, err = run(["train", str(cfg), "--epochs", "5", "--resume", str(r / "model.npz"),
                        "--out", str(r), "--quiet"], capsys)
    assert code == 0, err
    model = pydl.load(r / "model.npz")
    assert model.history.epoch == [0, 1, 2, 3, 4]
    best = model.history.best_epoch
    assert best is not None and 2 <= best <= 4  # EarlyStopping counts from the resumed epoch
    assert json.loads((r / "history.json").read_text())["best_epoch"] == best
    assert model.history["dev_loss"][best] == min(model.history["dev_loss"][2:])


def test_a_stray_npz_in_checkpoints_is_not_named_as_the_last_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "epoch-004.npz").write_bytes(b"")
    (ckpt / "best.npz").write_bytes(b"")
    code, _, err = run(["train", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and f"--resume {ckpt / 'epoch-004.npz'}," in err


def test_whole_number_targets_train_as_regression_with_mse(tmp_path, capsys):
    """Integer targets (counts) read as classes by default; model.loss = 'mse' trains one
    output on them instead (before, mse was refused for whole numbers)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    np.savez(tmp_path / "d.npz", X=X, y=rng.integers(0, 500, 80))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\nsource = 'file'\npath = '{tmp_path / 'd.npz'}'\n[training]\nepochs = 1\n")
    code, _, err = run(["train", str(cfg), "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 2 and "set model.loss = \"mse\"" in err
    cfg.write_text(cfg.read_text() + "[model]\nloss = 'mse'\n")
    code, _, err = run(["train", str(cfg), "--out", str(tmp_path / "b"), "--quiet"], capsys)
    assert code == 0, err
    model = pydl.load(tmp_path / "b" / "model.npz")
    assert model.loss.name == "mse" and model.n_out == 1
