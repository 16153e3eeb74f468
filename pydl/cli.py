"""The ``pydl`` command (also ``python -m pydl``): train, tune, gradcheck, bench.

    pydl train [CONFIG.toml] [--epochs N] [--lr X] [--resume CHECKPOINT] [--out DIR] [--seed S] [--quiet]
    pydl tune CONFIG.toml [--trials N] [--jobs K] [--scheduler ADDRESS] [--journal FILE] [--out DIR]
    pydl gradcheck [CONFIG.toml] [--examples M] [--coordinates K]
    pydl bench [--quick]

Without a config, ``train`` runs the default job: an MLP with batch norm, dropout and Adam
on the shipped digits data, split train/dev/test and standardized. Configs are TOML (see
``pydl.config`` and examples/configs/).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .callbacks import Callback, History

__all__ = ["main"]


def _split(cfg, X, y):
    """(Xtr, ytr, Xd, yd, Xte, yte), split as [data] says (seeded by data.seed)."""
    from .config import _split_ratios
    from .data import train_dev_test_split

    d = cfg["data"]
    return train_dev_test_split(X, y, ratios=_split_ratios(cfg), stratify=d["stratify"],
                                seed=d["seed"])


def _standardizer(cfg, Xtr):
    """The Standardizer fit on the training rows, if [data] standardize; else None."""
    from .data import Standardizer

    return Standardizer().fit(Xtr) if cfg["data"]["standardize"] else None


def _standardized(cfg, X, y):
    """The splits, standardized on the training rows if [data] says so (for a model that
    has no standardizer of its own)."""
    Xtr, ytr, Xd, yd, Xte, yte = _split(cfg, X, y)
    std = _standardizer(cfg, Xtr)
    if std is not None:
        Xtr, Xd, Xte = (std.transform(a) for a in (Xtr, Xd, Xte))
    return Xtr, ytr, Xd, yd, Xte, yte


def _callbacks(cfg, out_dir, with_checkpoints=True):
    from . import callbacks
    from .config import build_schedule

    tr = cfg["training"]
    cbs = []
    sched = build_schedule(cfg)
    if sched is not None:
        cbs.append(callbacks.LRScheduler(sched))
    if tr["patience"] > 0:
        cbs.append(callbacks.EarlyStopping("dev_loss", patience=tr["patience"], restore_best=True))
    if with_checkpoints:
        literal = out_dir.replace("{", "{{").replace("}", "}}")  # a directory, not a template
        cbs.append(callbacks.Checkpoint(os.path.join(literal, "checkpoints", "epoch-{epoch:03d}.npz"),
                                        every=tr["checkpoint_every"], keep_last=tr["keep_last"]))
    return cbs


def cmd_train(args) -> int:
    import pydl
    from .config import (build_model, build_optimizer, build_schedule, check_test_split,
                         load_config, load_data)

    overrides = {}
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.lr is not None:
        overrides["optimizer.lr"] = args.lr
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    if args.resume is not None and not args.resume:
        raise ValueError("--resume is empty: pass a checkpoint .npz, or leave --resume out to "
                         "start a new run")
    if args.resume is not None and args.seed is not None:
        raise ValueError("--seed has no effect with --resume: the run continues with the "
                         "checkpoint's seed (leave --seed out, or start a new run)")
    cfg = load_config(args.config, overrides)
    check_test_split(cfg, args.config)  # before training: the report needs test rows
    X, y = load_data(cfg, args.config)
    out = args.out
    epochs = cfg["training"]["epochs"]
    continued = None
    if args.resume is not None:
        model = pydl.load(args.resume)
        if model.n_in != X.shape[1]:
            raise ValueError(f"checkpoint {args.resume} expects {model.n_in} features, the data has {X.shape[1]}")
        try:
            model._check_y(y, X.shape[0])
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {args.resume} does not fit the labels of the data: {e}") from None
        if model.epoch >= epochs:  # nothing to train: leave OUT (model, history, checkpoints) as it is
            print(f"the checkpoint has already trained {model.epoch} epochs (>= --epochs {epochs}); "
                  f"nothing to do, nothing written to {out}")
            return 0
        _refuse_another_run(out, args.resume)
        _refuse_overwriting_later_epochs(out, model.epoch)
        if args.config is not None:
            _note_ignored_sections(cfg, model, X.shape[1], y, args)
        splits = _split(cfg, X, y)  # raw: the model applies its own standardizer, if any
        optimizer = model.optimizer or build_optimizer(cfg)
        if args.lr is not None:
            optimizer.lr = args.lr
        start = model.epoch
        if model.history is not None:  # the checkpoints and model.npz keep the whole curve
            continued = _ContinuedHistory(model.history, start)
        sched = build_schedule(cfg)
        if sched is None:
            print(f"resuming {args.resume} at epoch {start} (lr {optimizer.lr:g})")
        else:  # the LRScheduler sets lr = schedule(epoch), with lr0 = optimizer.lr (or --lr)
            print(f"resuming {args.resume} at epoch {start} (lr {sched(start):g}: the schedule "
                  f"{sched!r} at epoch {start})")
    else:
        _refuse_earlier_run(out)
        splits = _split(cfg, X, y)  # raw: the model standardizes every input with its own
        model = build_model(cfg, X.shape[1], y, args.config)
        model.standardizer = _standardizer(cfg, splits[0])
        optimizer, start = build_optimizer(cfg), 0
    Xtr, ytr, Xd, yd, Xte, yte = splits
    # before training: an --out that cannot take the run's files loses no training
    _check_writable(os.path.join(out, "checkpoints"), "--out")  # (and out itself)
    print(f"data: {cfg['data']['source']}  train {len(Xtr)} / dev {len(Xd)} / test {len(Xte)}")
    print(model)
    model.fit(Xtr, ytr, optimizer=optimizer, epochs=epochs,
              batch_size=min(cfg["training"]["batch_size"], len(Xtr)),
              validation_data=(Xd, yd),
              callbacks=[continued] * (continued is not None) + _callbacks(cfg, out),
              initial_epoch=start, verbose=0 if args.quiet else 1)
    _report(model, (Xtr, ytr, Xd, yd, Xte, yte), out)
    return 0


class _ContinuedHistory(Callback):
    """For a resumed run, first in the callback list (so that Checkpoint saves what it
    sets): ``model.history`` becomes the resumed run's curve before epoch ``start``
    followed by this fit's, at every epoch's end and at the end of training, so that every
    checkpoint and model.npz hold the whole curve (resuming twice loses no epochs)."""

    def __init__(self, previous: History, start: int):
        keep = [i for i, e in enumerate(previous.epoch) if e < start]
        self.epoch = [previous.epoch[i] for i in keep]  # the resumed run's part, once
        self.history = {k: [v[i] for i in keep] for k, v in previous.history.items()}
        self.iterations = list(previous.iterations)
        self.run = None

    def on_train_begin(self, model, epochs, initial_epoch, steps_per_epoch):
        self.run = model.history  # fit's own History

    def on_epoch_end(self, model, epoch, logs):
        self._merge(model)

    def on_train_end(self, model):
        self._merge(model)

    def _merge(self, model) -> None:
        """model.history = the resumed part + fit's; best_epoch as EarlyStopping (after
        this callback) last wrote it into the merged copy."""
        run, best = self.run, model.history.best_epoch
        merged = History()
        merged.epoch = self.epoch + run.epoch
        merged.history = {k: self.history.get(k, []) + run.history.get(k, [])
                          for k in {**self.history, **run.history}}
        merged.iterations = self.iterations + run.iterations
        merged.best_epoch = run.best_epoch if run.best_epoch is not None else best
        merged.completed = run.completed
        model.history = merged


def _check_writable(directory, option) -> None:
    """Create ``directory`` if needed and write a file in it, naming ``option`` if that
    fails (a permission check alone would pass for root on a read-only mount)."""
    import tempfile

    try:
        os.makedirs(directory, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        raise type(e)(e.errno, f"{option} {directory} is not writable: {e.strerror}") from None


def _note_ignored_sections(cfg, model, n_in: int, y, args) -> None:
    """A resumed run trains the checkpoint's network with its optimizer: say so on stderr when
    the config describes another one, instead of ignoring its [model] or [optimizer]
    silently."""
    from .config import build_model, build_optimizer

    def layers(arch):
        return arch["layers"], arch["loss"], arch["dtype"]
    ignored = []
    try:  # (a [model] that cannot fit the data is as unused as another network)
        same = layers(build_model(cfg, n_in, y, args.config).architecture()) == layers(model.architecture())
    except (TypeError, ValueError):
        same = False
    if not same:
        ignored.append("[model]")
    config_opt, mine = build_optimizer(cfg), model.optimizer
    if mine is not None:  # (not lr: it moves with a schedule, and --lr sets it)
        theirs, ours = config_opt.hyperparameters(), mine.hyperparameters()
        if type(config_opt) is not type(mine) or any(
                v != ours.get(k) for k, v in theirs.items() if k != "lr"):
            ignored.append("[optimizer]")
    if ignored:
        print(f"pydl train: note: --resume continues the checkpoint's network and optimizer; "
              f"{' and '.join(ignored)} of {args.config} describe{'s' if len(ignored) == 1 else ''} "
              "others and are not used", file=sys.stderr)


def _checkpoint_epoch(name) -> int | None:
    """The epoch in a checkpoint's file name (epoch-007.npz, epoch-1000.npz), else None."""
    import re

    match = re.fullmatch(r"epoch-(\d+)\.npz", name)
    return int(match.group(1)) if match else None


def _checkpoints(out) -> list[str]:
    """The .npz file names in ``out``/checkpoints (none if it does not exist), by epoch
    (epoch-999 before epoch-1000), then other names."""
    ckpt = os.path.join(out, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    names = [f for f in os.listdir(ckpt) if f.endswith(".npz") and not f.startswith(".")]
    # (not the temporary files of a save that was killed)
    return sorted(names, key=lambda f: (_checkpoint_epoch(f) is None, _checkpoint_epoch(f) or 0, f))


def _refuse_earlier_run(out) -> None:
    """A new run would overwrite an earlier run's checkpoints in ``out`` one by one (and
    delete them past keep_last) before it could fail: refuse, naming the way on."""
    ckpt = os.path.join(out, "checkpoints")
    found = _checkpoints(out)
    has_model = os.path.exists(os.path.join(out, "model.npz"))
    if found or has_model:
        epochs = [f for f in found if _checkpoint_epoch(f) is not None]
        hint = (f"resume it with --resume {os.path.join(ckpt, epochs[-1])}, " if epochs else "")
        held = ", ".join(["checkpoints"] * bool(found) + ["model.npz"] * has_model)
        raise ValueError(f"--out {out} already holds a run ({held}); {hint}or pass another "
                         f"--out, or delete {out}")


def _refuse_another_run(out, resume) -> None:
    """Resuming writes model.npz, history.json and checkpoints into ``out``: refuse when it
    holds a run that the checkpoint ``resume`` is not a file of (its checkpoints directory
    or its model.npz), which resuming would overwrite."""
    found = _checkpoints(out)
    has_model = os.path.exists(os.path.join(out, "model.npz"))
    if not (found or has_model):
        return
    home = os.path.realpath(os.path.dirname(os.path.abspath(resume)))
    name = os.path.basename(resume)
    if (home == os.path.realpath(out) and name == "model.npz") or \
            home == os.path.realpath(os.path.join(out, "checkpoints")):
        return
    held = ", ".join(["checkpoints"] * bool(found) + ["model.npz"] * has_model)
    raise ValueError(f"--out {out} holds another run ({held}), which --resume {resume} does "
                     f"not come from; resuming there would overwrite it: pass another --out, "
                     f"or delete {out}")


def _refuse_overwriting_later_epochs(out, start: int) -> None:
    """Resuming from epoch ``start`` into ``out`` rewrites its checkpoints after ``start``
    and its model.npz: refuse when those hold a later point of the run (an earlier
    checkpoint resumed with a new learning rate belongs in a directory of its own)."""
    import pydl

    later = [os.path.join("checkpoints", f) for f in _checkpoints(out)
             if (_checkpoint_epoch(f) or 0) > start]
    final = os.path.join(out, "model.npz")
    if os.path.exists(final):
        try:
            final_epoch = pydl.load(final).epoch
        except (OSError, ValueError):  # unreadable: nothing there to keep
            final_epoch = -1
        if final_epoch > start:
            later.append(f"model.npz at epoch {final_epoch}")
    if later:
        raise ValueError(f"--out {out} holds later epochs of this run ({', '.join(later)}); "
                         f"resuming from epoch {start} there would overwrite them: pass another "
                         f"--out (e.g. --out {out.rstrip(os.sep)}-from-{start}), or delete them")


def _report(model, splits, out):
    from .diagnose import bias_variance
    from .model import atomic_write

    Xtr, ytr, Xd, yd, Xte, yte = splits
    model_path = os.path.join(out, "model.npz")
    model.save(model_path)  # first: a failure below loses no training
    hist_path = os.path.join(out, "history.json")
    if model.history is not None:  # a full disk or an interrupt leaves the old one whole
        text = json.dumps(model.history.to_dict()).encode()
        atomic_write(hist_path, lambda f: f.write(text))
    res = {name: model.evaluate(Xs, ys) for name, Xs, ys in
           (("train", Xtr, ytr), ("dev", Xd, yd), ("test", Xte, yte))}
    print()
    print(f"{'split':<6} {'loss':>10} {'accuracy':>10}" if model.loss.classification else f"{'split':<6} {'loss':>10}")
    for name, r in res.items():
        acc = f" {r['accuracy']:>10.4f}" if "accuracy" in r else ""
        print(f"{name:<6} {r['loss']:>10.4f}{acc}")
    if model.loss.classification:
        diag = bias_variance(1 - res["train"]["accuracy"], 1 - res["dev"]["accuracy"])
        print()
        print(diag)
    print()
    print(f"model:      {model_path}")
    if model.history is not None:
        print(f"history:    {hist_path}")
        try:
            import matplotlib

            matplotlib.use("Agg")
            from .plot import learning_curves

            png = os.path.join(out, "learning_curves.png")
            fig = learning_curves(model.history)
            atomic_write(png, lambda f: fig.savefig(f, format="png"))
            import matplotlib.pyplot as plt

            plt.close(fig)
            print(f"curves:     {png}")
        except ImportError:
            print("curves:     (no PNG: matplotlib is not installed; pip install matplotlib)")
    ckpt = os.path.join(out, "checkpoints")
    if os.path.isdir(ckpt):
        print(f"checkpoints: {ckpt}")


def _tune_objective(params, cfg):
    """One search trial: train the configured job with params applied; dev metrics."""
    from .config import build_model, build_optimizer, load_data, with_params

    c = with_params(cfg, params)
    X, y = load_data(c)
    Xtr, ytr, Xd, yd, _, _ = _standardized(c, X, y)
    model = build_model(c, X.shape[1], y)
    h = model.fit(Xtr, ytr, optimizer=build_optimizer(c), epochs=c["training"]["epochs"],
                  batch_size=min(c["training"]["batch_size"], len(Xtr)), validation_data=(Xd, yd),
                  callbacks=_callbacks(c, None, with_checkpoints=False), verbose=0)
    r = model.evaluate(Xd, yd)
    out = {"dev_loss": r["loss"], "train_loss": h.history["loss"][-1], "epochs": len(h.epoch)}
    if "accuracy" in r:
        out["dev_accuracy"] = r["accuracy"]
    return out


def cmd_tune(args) -> int:
    import functools

    from . import tune
    from .config import _infer_loss, build_space, check_loss, load_config, load_data

    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (worker processes), got {args.jobs}")
    # --trials through the config, so that its checks (coarse_to_fine's rounds) see it
    cfg = load_config(args.config, None if args.trials is None else {"search.trials": args.trials})
    space = build_space(cfg)
    if not space:
        raise ValueError(f"{args.config} has no [search.space] to search")
    s = cfg["search"]
    trials = s["trials"]
    objective = functools.partial(_tune_objective, cfg=cfg)
    # What a trial's result depends on besides its params: the base config (the keys the space
    # does not set; [search] is the search's own) and the data. A journal written for other
    # values is refused instead of its trials being reused.
    X, y = load_data(cfg, args.config)
    context = {f"{section}.{key}": value for section, values in cfg.items() if section != "search"
               for key, value in values.items() if f"{section}.{key}" not in space}
    context["data.fingerprint"] = _fingerprint(X, y)
    losses = space["model.loss"].options if isinstance(space.get("model.loss"), tune.Choice) else \
        [space.get("model.loss", cfg["model"]["loss"]) or _infer_loss(y)[0]]
    for loss in losses:  # before any trial runs, not in every one
        check_loss(loss, y, args.config)
    if s["metric"] == "dev_accuracy" and "mse" in losses:
        raise ValueError(f"search.metric = 'dev_accuracy' in {args.config} needs classification, but the "
                         "loss is mse (real-valued labels); use dev_loss or train_loss")
    _refuse_earlier_search(args.out, args.journal)
    _check_writable(args.out, "--out")  # before the trials: a bad --out loses no search
    executor = client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
        executor = client.get_executor()
    common = dict(direction=s["direction"], metric=s["metric"], executor=executor, journal=args.journal,
                  n_jobs=1 if executor is not None else args.jobs, seed=cfg["training"]["seed"],
                  context=context)
    try:
        if s["method"] == "coarse_to_fine":
            rounds = s["rounds"]
            result = tune.coarse_to_fine(objective, space, rounds=rounds,
                                         trials_per_round=max(1, trials // rounds), **common)
        else:
            result = tune.random_search(objective, space, trials, **common)
    finally:
        if client is not None:
            client.close()
    csv = os.path.join(args.out, "search.csv")
    result.to_csv(csv)
    print(result)
    print(f"\ntrials: {csv}")
    if not result.ok_trials:
        print(f"pydl tune: error: every trial failed; the first: {result.trials[0].error}", file=sys.stderr)
        return 1
    return 0


def _refuse_earlier_search(out, journal) -> None:
    """A new search would replace an earlier one's table in ``out``: refuse, unless it
    resumes a journal (the search then rewrites its own table, every trial kept)."""
    table = os.path.join(out, "search.csv")
    if os.path.exists(table) and not (journal and os.path.exists(journal)):
        raise ValueError(f"--out {out} already holds a search's results ({table}); pass another "
                         "--out, or resume a search run with --journal by passing its journal "
                         f"again, or delete {table}")


def _fingerprint(X, y) -> str:
    """Shapes, dtypes and a SHA-256 of the data's bytes."""
    import hashlib

    h = hashlib.sha256()
    for a in (X, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape} {a.dtype.str};".encode())
        h.update(a.tobytes())
    return f"X {tuple(X.shape)}, y {tuple(np.shape(y))}, sha256 {h.hexdigest()[:16]}"


def cmd_gradcheck(args) -> int:
    from . import nn
    from .config import build_model, load_config, load_data
    from .gradcheck import gradient_check

    cfg = load_config(args.config)
    X, y = load_data(cfg, args.config)
    Xtr, ytr, *_ = _standardized(cfg, X, y)
    model = build_model(cfg, X.shape[1], y, args.config).astype(np.float64)
    dropout = any(isinstance(l, nn.Dropout) and l.keep_prob < 1 for l in model.layers)
    if dropout:
        print("note: dropout is turned off for the check (its masks are random)")
    if args.examples < 1:
        raise ValueError(f"--examples must be >= 1, got {args.examples}")
    if args.coordinates is not None and args.coordinates < 1:
        raise ValueError(f"--coordinates must be >= 1, got {args.coordinates}")
    m = min(args.examples, len(Xtr))
    result = gradient_check(model, Xtr[:m], ytr[:m], disable_dropout=True,
                            coordinates=args.coordinates, seed=0)
    print(result)
    return 0 if result.passed else 1


def cmd_bench(args) -> int:
    from .benchmarks import main as bench_main

    return bench_main(["--quick"] if args.quick else [])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydl", description="Train, tune and check dense neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model (default: the digits job)")
    t.add_argument("config", nargs="?", help="TOML config (default: built-in digits job)")
    t.add_argument("--epochs", type=int, help="total epochs (a resumed run continues up to this)")
    t.add_argument("--lr", type=float, help="learning rate (overrides the config and a checkpoint); with a "
                   "[schedule] it is the schedule's initial rate lr0, so a resumed run continues at the "
                   "schedule's rate for its epoch")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint .npz")
    t.add_argument("--out", default="pydl-run", help="output directory (default: pydl-run)")
    t.add_argument("--seed", type=int, help="training seed")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    u = sub.add_parser("tune", help="hyperparameter search described in a config")
    u.add_argument("config", help="TOML config with a [search] section")
    u.add_argument("--trials", type=int, help="number of trials (overrides the config)")
    u.add_argument("--jobs", type=int, default=1, help="worker processes on this machine")
    u.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (tcp://host:8786)")
    u.add_argument("--journal", metavar="FILE", help="JSON-lines journal; rerun to resume")
    u.add_argument("--out", default="pydl-tune", help="output directory (default: pydl-tune)")
    u.set_defaults(func=cmd_tune)
    g = sub.add_parser("gradcheck", help="gradient-check the configured model in float64")
    g.add_argument("config", nargs="?", help="TOML config (default: built-in digits job)")
    g.add_argument("--examples", type=int, default=16, help="batch size of the check (default 16)")
    g.add_argument("--coordinates", type=int, default=None, help="check k sampled coordinates")
    g.set_defaults(func=cmd_gradcheck)
    b = sub.add_parser("bench", help="benchmark ratios against NumPy and PyTorch")
    b.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    b.set_defaults(func=cmd_bench)
    return p


def _resume_hint(args) -> str:
    """How to go on after an interrupt: the last checkpoint of a train run, the journal of
    a search."""
    if args.command == "train":
        found = [f for f in _checkpoints(args.out) if _checkpoint_epoch(f) is not None]
        if found:
            last = os.path.join(args.out, "checkpoints", found[-1])
            seed = " (and without --seed)" if args.seed is not None else ""
            return f"; the last checkpoint is {last}: rerun the command with --resume {last}{seed}"
    if args.command == "tune" and args.journal:
        return f"; the finished trials are in {args.journal}: rerun the same command to go on"
    return ""


def main(argv=None) -> int:
    """Entry point of the ``pydl`` console script; returns the exit status."""
    from .config import ConfigError

    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # what was saved stays: say where to go on from
        print(f"\npydl {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"pydl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # TrainingDiverged: nothing of the run was saved as model.npz
        print(f"pydl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of the output went away (pydl tune ... | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except OSError as e:  # a read-only or full disk, an --out that is a file: names the path
        print(f"pydl {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
