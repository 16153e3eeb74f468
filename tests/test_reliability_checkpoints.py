"""Crash-safe checkpoints: SIGKILL a training process at 20+ random moments; the newest
checkpoint always loads, and resuming from it again and again reaches bitwise the theta
(and BatchNorm statistics and Adam moments) of an uninterrupted run.

Damaged, truncated, hand-edited and pickled checkpoint files are covered in
test_save_load.py; here: what a crash leaves behind, and checkpoints of another model.
"""
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pydl
from pydl import optim

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")

# A "zygote": imports pydl once, then for every request forks a child that resumes from the
# newest checkpoint in a directory (or starts fresh) and trains to EPOCHS with a checkpoint
# every epoch, saving the final model. The test SIGKILLs the children. Children run with one
# thread (and the zygote never runs a kernel), so forking is safe and runs are bitwise
# reproducible.
ZYGOTE = textwrap.dedent(r"""
    import os, re, sys, traceback
    import numpy as np
    import pydl
    from pydl import optim
    from pydl.callbacks import Checkpoint

    EPOCHS = int(sys.argv[1])
    CKPT = re.compile(r"ck-(\d+)\.npz")

    def newest(ckdir):
        found = [(int(m.group(1)), f) for f in os.listdir(ckdir) if (m := CKPT.fullmatch(f))]
        return os.path.join(ckdir, max(found)[1]) if found else None

    def train(ckdir, final):
        pydl.set_num_threads(1)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((256, 32)).astype(np.float32)
        y = rng.integers(0, 4, 256)
        path = newest(ckdir)
        if path is None:
            model = pydl.mlp([32, 64, 64, 4], batchnorm=True, keep_prob=0.9, seed=1)
            opt, start = optim.Adam(lr=1e-3), 0
        else:
            model = pydl.load(path)
            opt, start = model.optimizer, model.epoch
        model.fit(X, y, optimizer=opt, epochs=EPOCHS, initial_epoch=start, batch_size=32,
                  verbose=0, callbacks=[Checkpoint(os.path.join(ckdir, "ck-{epoch:05d}.npz"))])
        model.save(final)

    for line in sys.stdin:
        ckdir, final = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                train(ckdir, final)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
""")

EPOCHS = 600
KILLS = 22
CKPT = re.compile(r"ck-(\d+)\.npz")


class Zygote:
    def __init__(self, tmp_path):
        script = tmp_path / "zygote.py"
        script.write_text(ZYGOTE)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(script), str(EPOCHS)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    def _line(self, timeout=120):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the training process hung"
        line = self.proc.stdout.readline()
        assert line, f"the zygote died (exit {self.proc.poll()})"
        return int(line)

    def start(self, ckdir, final):
        self.proc.stdin.write(f"{ckdir} {final}\n")
        self.proc.stdin.flush()
        return self._line()

    def status(self):
        return self._line()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def newest(ckdir):
    found = [(int(m.group(1)), f) for f in os.listdir(ckdir) if (m := CKPT.fullmatch(f))]
    return (max(found)[0], ckdir / max(found)[1]) if found else (0, None)


def assert_same(a, b):
    assert a.epoch == b.epoch and a.step == b.step
    assert np.array_equal(a.theta, b.theta), (
        f"theta differs in {int((a.theta != b.theta).sum())} of {a.theta.size} entries")
    for (k, x), (_, z) in zip(a._state_arrays().items(), b._state_arrays().items()):
        assert np.array_equal(x, z), k
    assert a.optimizer.t == b.optimizer.t
    for k, v in a.optimizer.state.items():
        assert np.array_equal(v, b.optimizer.state[k]), k


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    zygote = Zygote(tmp_path)
    try:
        ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
        ref_dir.mkdir()
        run_dir.mkdir()
        t0 = time.monotonic()
        zygote.start(ref_dir, tmp_path / "ref.npz")
        assert zygote.status() == 0, "the uninterrupted run failed"
        t_ref = time.monotonic() - t0
        # a leftover of an earlier crash: a half-written temporary file must confuse nothing
        (run_dir / ".tmp-leftover.npz").write_bytes(b"PK\x03\x04 half a zip")

        rng = np.random.default_rng(int(time.time()))
        kills, newest_epochs, tmp_seen = 0, [], set()
        while kills < KILLS:
            pid = zygote.start(run_dir, tmp_path / "run.npz")
            # random moment: while loading, training or writing a checkpoint. The delays
            # add up to at most a third of an uninterrupted run, so the run cannot finish
            # first (even if the machine gets up to 3x faster meanwhile).
            time.sleep(rng.uniform(0.0, t_ref / (3 * KILLS)))
            os.kill(pid, signal.SIGKILL)
            status = zygote.status()
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"the run ended on its own (status {status}) before kill {kills + 1}")
            kills += 1
            epoch, path = newest(run_dir)
            if path is not None:  # the newest checkpoint always loads, and is what it says
                m = pydl.load(path)
                assert m.epoch == epoch and np.isfinite(m.theta).all()
            assert not newest_epochs or epoch >= newest_epochs[-1], "a checkpoint went missing"
            newest_epochs.append(epoch)
            tmp_seen |= {f for f in os.listdir(run_dir) if f.startswith(".tmp-")} - {".tmp-leftover.npz"}
        assert newest_epochs[-1] > 0, "no checkpoint was ever written before a kill"

        zygote.start(run_dir, tmp_path / "run.npz")  # resume once more, to the end
        assert zygote.status() == 0, "resuming after the last kill failed"
    finally:
        zygote.close()

    ref, run = pydl.load(tmp_path / "ref.npz"), pydl.load(tmp_path / "run.npz")
    assert ref.epoch == run.epoch == EPOCHS
    assert_same(run, ref)
    # every checkpoint left on disk loads and matches the uninterrupted run's of that epoch
    names = sorted(f for f in os.listdir(run_dir) if CKPT.fullmatch(f))
    assert len(names) == EPOCHS
    for name in names[:: max(1, len(names) // 40)] + names[-3:]:
        assert_same(pydl.load(run_dir / name), pydl.load(ref_dir / name))
    print(f"\n[reliability checkpoints] {kills} SIGKILLs; newest checkpoint after each kill: "
          f"epochs {newest_epochs}; {len(tmp_seen)} killed mid-write (temporary files left); "
          f"uninterrupted run {t_ref:.1f} s")


def test_leftover_temporary_files_confuse_nothing(tmp_path):
    """What a crash mid-write leaves (.tmp-*.npz) neither breaks saving to the same target,
    nor Checkpoint's keep_last rotation; the file itself is refused with a clear error."""
    X = np.random.default_rng(0).standard_normal((32, 5)).astype(np.float32)
    y = np.arange(32) % 3
    model = pydl.mlp([5, 8, 3], seed=0)
    model.fit(X, y, optimizer=optim.Adam(1e-2), epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    full = (tmp_path / "m.npz").read_bytes()
    for i, cut in enumerate((0, 10, len(full) // 2, len(full) - 1)):
        (tmp_path / f".tmp-crash{i}.npz").write_bytes(full[:cut])
        with pytest.raises(ValueError, match="is not a valid pydl model file"):
            pydl.load(tmp_path / f".tmp-crash{i}.npz")
    cb = pydl.callbacks.Checkpoint(tmp_path / "ck-{epoch}.npz", keep_last=2)
    model.fit(X, y, optimizer=model.optimizer, epochs=5, initial_epoch=1, batch_size=8, verbose=0,
              callbacks=[cb])
    kept = sorted(f.name for f in tmp_path.glob("ck-*.npz"))
    assert kept == ["ck-4.npz", "ck-5.npz"]
    assert len(list(tmp_path.glob(".tmp-*"))) == 4, "save touched another process's temporary file"
    assert_same(pydl.load(tmp_path / "ck-5.npz"), model)


def test_checkpoint_of_another_architecture_is_refused_when_resuming(tmp_path):
    X = np.random.default_rng(0).standard_normal((32, 5)).astype(np.float32)
    y = np.arange(32) % 3
    small = pydl.mlp([5, 8, 3], seed=0)
    small.fit(X, y, optimizer=optim.Adam(1e-2), epochs=1, batch_size=8, verbose=0)
    small.save(tmp_path / "small.npz")
    loaded = pydl.load(tmp_path / "small.npz")
    other = pydl.mlp([5, 16, 3], seed=0)
    with pytest.raises(ValueError, match=r"optimizer state has 75 float32 entries but theta has 147"):
        other.fit(X, y, optimizer=loaded.optimizer, epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"X has 7 features but the model expects 5"):
        loaded.fit(np.ones((32, 7), np.float32), y, optimizer=loaded.optimizer, epochs=2,
                   initial_epoch=loaded.epoch, batch_size=8, verbose=0)
    wide = pydl.mlp([7, 8, 3], seed=0)
    wide.save(tmp_path / "wide.npz")
    from pydl import cli

    assert cli.main(["train", "--resume", str(tmp_path / "wide.npz"), "--epochs", "1",
                     "--out", str(tmp_path / "out"), "--quiet"]) == 2  # digits has 64 features
