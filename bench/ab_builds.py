"""Two builds of pydl's compiled core, timed against each other in one process.

On a machine whose speed drifts (this 2-core VM: up to 1.6x within minutes), a kernel
change measured by two runs of bench/compare.py mostly measures the drift. This loads
both builds of ``pydl._core`` into one process and times the pydl variant of each kernel
benchmark with one build, then the other, round after round (variants interleaved as in
pydl.benchmarks.kernels), and reports each build's median and the median of the
per-round ratios A / B (> 1: B is faster).

    pip wheel --no-deps -w /tmp/old <old checkout>   # unzip: pydl/_core*.so
    python bench/ab_builds.py /tmp/old/pydl/_core*.so "$(python -c 'import pydl._core as c; print(c.__file__)')"
    python bench/ab_builds.py A.so B.so --only batchnorm --rounds 30 --threads 1

The builds must take the same arguments (pydl.ops calls whichever is current). A build
from before "One pool of threads" (bench/README.md) runs here with SciPy's BLAS on one
thread per call, as the current pydl.ops sets it, and its products whole: its dense
products are then timed on one thread.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics

import pydl
from pydl import ops
from pydl.benchmarks import kernels


def load_core(path: str, tag: str):
    """A build of pydl._core from its file, as a module of its own.

    CPython keeps one module per name for extensions like this one (single-phase init):
    loading a second file as "pydl._core" hands back the first. Each build therefore gets a
    name of its own (the file's init function, PyInit__core, only needs the last part).
    """
    spec = importlib.util.spec_from_file_location(f"pydl_ab_{tag}._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_core(core, fn):
    """fn with pydl.ops calling `core`."""
    def call():
        ops._core = core
        fn()
    return call


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="the first build (a _core*.so file)")
    p.add_argument("b", help="the second build")
    p.add_argument("--only", default=",".join(kernels.BENCHMARKS),
                   help=f"comma-separated subset of {','.join(kernels.BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="the quick (smaller) sizes")
    p.add_argument("--rounds", type=int, default=20, help="rounds (default 20)")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds of sleep before each turn, as compare.py's --settle")
    args = p.parse_args(argv)
    installed = ops._core
    cores = {"A": load_core(args.a, "a"), "B": load_core(args.b, "b")}
    if cores["A"] is cores["B"] or cores["A"] is installed or cores["B"] is installed:
        raise SystemExit("ab_builds: the builds did not load as separate modules")
    pydl.set_num_threads(args.threads)
    for core in cores.values():
        core.set_num_threads(args.threads)
    sizes = kernels.QUICK if args.quick else kernels.FULL
    print(f"A = {args.a}\nB = {args.b}\n{args.threads} threads, {args.rounds} rounds")
    try:
        for key in args.only.split(","):
            fn = kernels.CASES[key](**sizes[key])["variants"]["pydl"]
            variants = {name: with_core(core, fn) for name, core in cores.items()}
            samples = kernels.measure_samples(variants, args.rounds, warmup=2, min_time=0.05,
                                              settle=args.settle)
            a, b = samples["A"], samples["B"]
            ratios = [x / y for x, y in zip(a, b)]
            print(f"{kernels.TITLES[key]}: A {statistics.median(a) * 1e3:.3f} ms, "
                  f"B {statistics.median(b) * 1e3:.3f} ms, per-round A/B median "
                  f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    finally:
        ops._core = installed


if __name__ == "__main__":
    main()
