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

__all__ = ["main"]


def _split(cfg, X, y):
    """(Xtr, ytr, Xd, yd, Xte, yte), split as [data] says (seeded by data.seed)."""
    from .data import train_dev_test_split

    d = cfg["data"]
    ratios = d["ratios"] if d["ratios"] == "auto" else tuple(d["ratios"])
    return train_dev_test_split(X, y, ratios=ratios, stratify=d["stratify"], seed=d["seed"])


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
        cbs.append(callbacks.Checkpoint(os.path.join(out_dir, "checkpoints", "epoch-{epoch:03d}.npz"),
                                        every=tr["checkpoint_every"], keep_last=tr["keep_last"]))
    return cbs


def cmd_train(args) -> int:
    import pydl
    from .callbacks import History
    from .config import build_model, build_optimizer, build_schedule, load_config, load_data

    overrides = {}
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.lr is not None:
        overrides["optimizer.lr"] = args.lr
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    cfg = load_config(args.config, overrides)
    X, y = load_data(cfg)
    out = args.out
    epochs = cfg["training"]["epochs"]
    previous = None
    if args.resume:
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
        _refuse_overwriting_later_epochs(out, model.epoch)
        if args.config is not None:
            _note_ignored_sections(cfg, model, X.shape[1], y, args)
        splits = _split(cfg, X, y)  # raw: the model applies its own standardizer, if any
        optimizer = model.optimizer or build_optimizer(cfg)
        if args.lr is not None:
            optimizer.lr = args.lr
        start, previous = model.epoch, model.history
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
    os.makedirs(out, exist_ok=True)
    print(f"data: {cfg['data']['source']}  train {len(Xtr)} / dev {len(Xd)} / test {len(Xte)}")
    print(model)
    history = model.fit(Xtr, ytr, optimizer=optimizer, epochs=epochs,
                        batch_size=min(cfg["training"]["batch_size"], len(Xtr)),
                        validation_data=(Xd, yd), callbacks=_callbacks(cfg, out),
                        initial_epoch=start, verbose=0 if args.quiet else 1)
    if previous is not None:  # keep the curve of the run we resumed
        merged = History.from_dict(previous.to_dict())
        keep = [i for i, e in enumerate(merged.epoch) if e < start]
        merged.epoch = [merged.epoch[i] for i in keep] + history.epoch
        merged.history = {k: [v[i] for i in keep] + history.history.get(k, []) for k, v in
                          {**{k: [] for k in history.history}, **merged.history}.items()}
        merged.iterations = merged.iterations + history.iterations
        merged.best_epoch = history.best_epoch
        model.history = merged
    _report(model, (Xtr, ytr, Xd, yd, Xte, yte), out)
    return 0


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


def _checkpoints(out) -> list[str]:
    """The .npz file names in ``out``/checkpoints, sorted (none if it does not exist)."""
    ckpt = os.path.join(out, "checkpoints")
    return sorted(f for f in os.listdir(ckpt) if f.endswith(".npz") and not f.startswith(".")) \
        if os.path.isdir(ckpt) else []  # (not the temporary files of a save that was killed)


def _refuse_earlier_run(out) -> None:
    """A new run would overwrite an earlier run's checkpoints in ``out`` one by one (and
    delete them past keep_last) before it could fail: refuse, naming the way on."""
    ckpt = os.path.join(out, "checkpoints")
    found = _checkpoints(out)
    has_model = os.path.exists(os.path.join(out, "model.npz"))
    if found or has_model:
        hint = (f"resume it with --resume {os.path.join(ckpt, found[-1])}, " if found else "")
        held = ", ".join(["checkpoints"] * bool(found) + ["model.npz"] * has_model)
        raise ValueError(f"--out {out} already holds a run ({held}); {hint}or pass another "
                         f"--out, or delete {out}")


def _refuse_overwriting_later_epochs(out, start: int) -> None:
    """Resuming from epoch ``start`` into ``out`` rewrites its checkpoints after ``start``
    and its model.npz: refuse when those hold a later point of the run (an earlier
    checkpoint resumed with a new learning rate belongs in a directory of its own)."""
    import re

    import pydl

    later = [os.path.join("checkpoints", f) for f in _checkpoints(out)
             if (match := re.fullmatch(r"epoch-(\d+)\.npz", f)) and int(match.group(1)) > start]
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
    res = {name: model.evaluate(Xs, ys) for name, Xs, ys in
           (("train", Xtr, ytr), ("dev", Xd, yd), ("test", Xte, yte))}
    model_path = os.path.join(out, "model.npz")
    model.save(model_path)
    hist_path = os.path.join(out, "history.json")
    if model.history is not None:  # a full disk or an interrupt leaves the old one whole
        text = json.dumps(model.history.to_dict()).encode()
        atomic_write(hist_path, lambda f: f.write(text))
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

    cfg = load_config(args.config)
    space = build_space(cfg)
    if not space:
        raise ValueError(f"{args.config} has no [search.space] to search")
    s = cfg["search"]
    trials = args.trials if args.trials is not None else s["trials"]
    objective = functools.partial(_tune_objective, cfg=cfg)
    # What a trial's result depends on besides its params: the base config (the keys the space
    # does not set; [search] is the search's own) and the data. A journal written for other
    # values is refused instead of its trials being reused.
    X, y = load_data(cfg)
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
    os.makedirs(args.out, exist_ok=True)  # before the trials: a bad --out loses no search
    if not os.access(args.out, os.W_OK):
        raise PermissionError(13, "--out is not writable", args.out)
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
    X, y = load_data(cfg)
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


def main(argv=None) -> int:
    """Entry point of the ``pydl`` console script; returns the exit status."""
    from .config import ConfigError

    args = _parser().parse_args(argv)
    try:
        return args.func(args)
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
