"""Do pydl's OpenMP regions fight SciPy's OpenBLAS workers? Measure it.

OpenBLAS's (pthreads) workers spin for a while after each call before they sleep,
and libgomp's do the same after each parallel region. On a 2-core machine an OpenMP
region right after a GEMM (the dense forward epilogue) or a GEMM right after an
OpenMP region (the dense backward's dZ/db pass, then dW and dA_prev) then runs with
one more busy thread than there are cores.

    python bench/threads_interference.py            # all experiments, 2 threads
    python bench/threads_interference.py --quick    # fewer sizes and repeats
    python bench/threads_interference.py --only spin,dense,elementwise,env

Experiments:
  spin         CPU time that idle workers burn in the second after one call:
               NumPy's OpenBLAS, SciPy's OpenBLAS, pydl's OpenMP team.
  dense        dense forward+backward (relu) with pydl's OpenMP team at N threads
               versus 1 thread (SciPy's BLAS on N threads of its own in both, the way
               pydl ran before it split its products over its team), beside pydl as it
               runs (one pool) and the 3 raw sgemm calls.
  elementwise  an elementwise kernel (relu forward, in place) over n elements with 1
               versus N OpenMP threads, alone and right after a small GEMM: where is the
               break-even that kParallelMinWork (a cost-1 kernel) should sit at?
  env          the dense experiment again in child processes under OMP_WAIT_POLICY,
               GOMP_SPINCOUNT and OPENBLAS_THREAD_TIMEOUT settings (read at library
               load, hence the child processes). Note that importing pydl sets
               OMP_WAIT_POLICY=PASSIVE unless it is already set.

The OpenMP-only thread count is set through pydl._core.set_num_threads; this is a
diagnostic script, not
library code. It never imports torch, so pydl's libgomp is the only OpenMP runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import pydl._core
from pydl.benchmarks import kernels as compare

# pydl's OpenMP team alone (pydl.ops.set_num_threads also sets SciPy's BLAS back to one thread per call)
_omp = pydl._core.set_num_threads


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), min(samples)


# ----------------------------------------------------------------------------- spin


def spin_experiment(threads: int, log) -> list[dict]:
    import pydl.ops as ops
    from scipy.linalg.blas import sgemm

    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    c = np.empty_like(a)
    x = np.random.default_rng(1).random(1 << 22, dtype=np.float32)
    calls = {
        "numpy.matmul (NumPy's OpenBLAS)": lambda: np.matmul(a, a, out=c),
        "scipy sgemm (SciPy's OpenBLAS on its own threads)": compare.scipy_blas_threads(
            lambda: sgemm(1.0, a, a)),
        "pydl relu over 4M floats (libgomp team)": lambda: ops.activation_forward(x, x, "relu"),
    }
    rows = []
    for label, fn in calls.items():
        burnt = []
        for _ in range(3):
            fn()
            time.sleep(1.0)  # everything idle
            fn()
            t0 = time.process_time()
            time.sleep(1.0)
            burnt.append(time.process_time() - t0)
        rows.append({"call": label, "cpu_ms_after": [round(b * 1e3, 1) for b in burnt]})
        log(f"  spin: {label}: {rows[-1]['cpu_ms_after']} ms of CPU in the 1 s after a call")
    return rows


# ----------------------------------------------------------------------------- dense

DENSE_SIZES = [(64, 784, 256), (256, 1024, 1024), (1024, 1024, 1024), (1024, 4096, 4096)]
DENSE_SIZES_QUICK = [(256, 1024, 1024), (1024, 4096, 4096)]


def dense_experiment(threads: int, sizes, repeats: int, idle_wait: float, log) -> list[dict]:
    rows = []
    for m, n_in, n_out in sizes:
        case = compare.dense_case(m, n_in, n_out)
        v = case["variants"]
        pydl_fb = v["pydl"]

        def pydl_omp1():
            _omp(1)
            try:
                pydl_fb()
            finally:
                _omp(threads)

        # The two pools side by side, as before pydl split its products: SciPy's BLAS on
        # N threads of its own (scipy_blas_threads), pydl's OpenMP team on N or 1; and
        # pydl as it runs, one pool (its team runs the products in parts).
        variants = {
            f"pydl, OpenMP {threads} threads": compare.scipy_blas_threads(pydl_fb),
            "pydl, OpenMP 1 thread": compare.scipy_blas_threads(pydl_omp1),
            f"pydl, one pool of {threads} threads": pydl_fb,
            "raw sgemm x3": v["ref:sgemm x3 (scipy.linalg.blas)"],
        }
        load = compare.BackgroundLoad()
        samples = compare.measure_samples(variants, repeats, 2, 0.05, 0.15, idle_wait, load)
        raw = statistics.median(samples["raw sgemm x3"])
        row = {"size": f"{m} x {n_in} -> {n_out}", "background": load.fraction}
        for k, s in samples.items():
            med, mn = _stats(s)
            row[k] = {"median_ms": med * 1e3, "min_ms": mn * 1e3,
                      "gflops": case["flop"] / med / 1e9, "vs_raw": raw / med}
        rows.append(row)
        log("  dense " + row["size"] + ": " + ", ".join(
            f"{k} {row[k]['median_ms']:.3f} ms ({row[k]['vs_raw']:.2f}x raw)" for k in samples)
            + f"  [background {load.fraction if load.fraction is None else round(load.fraction, 3)}]")
        del case, v, variants
    return rows


# ----------------------------------------------------------------------------- elementwise


def elementwise_experiment(threads: int, exps, repeats: int, idle_wait: float, log) -> list[dict]:
    """relu in place over n floats: OpenMP 1 vs N threads, alone and after a GEMM.

    The kernel's own ``worth_parallel(count, 1)`` (count >= kParallelMinWork) keeps small n
    single-threaded whatever the team size, so n below the threshold shows no
    difference by construction; the interesting part is at and above it.
    """
    import pydl.ops as ops
    from scipy.linalg.blas import sgemm

    g = np.random.default_rng(0).random((192, 192), dtype=np.float32)
    gc_ = np.empty_like(g)

    @compare.scipy_blas_threads
    def gemm():
        sgemm(1.0, g, g, c=gc_, overwrite_c=1)

    rows = []
    for e in exps:
        n = 1 << e
        x = np.random.default_rng(e).standard_normal(n).astype(np.float32)

        def relu():
            ops.activation_forward(x, x, "relu")

        def gemm_relu():
            gemm()
            relu()

        def at(nthreads, fn):
            def call():
                _omp(nthreads)
                fn()
            return call

        variants = {
            "alone 1": at(1, relu), f"alone {threads}": at(threads, relu),
            "gemm only": at(threads, gemm),
            "after gemm 1": at(1, gemm_relu), f"after gemm {threads}": at(threads, gemm_relu),
        }
        samples = compare.measure_samples(variants, repeats, 2, 0.02, 0.12, idle_wait)
        _omp(threads)
        med = {k: statistics.median(s) for k, s in samples.items()}
        row = {"n": n,
               "alone_1_us": med["alone 1"] * 1e6,
               f"alone_{threads}_us": med[f"alone {threads}"] * 1e6,
               "after_gemm_1_us": (med["after gemm 1"] - med["gemm only"]) * 1e6,
               f"after_gemm_{threads}_us": (med[f"after gemm {threads}"] - med["gemm only"]) * 1e6,
               "gemm_us": med["gemm only"] * 1e6}
        rows.append(row)
        log(f"  relu n=2^{e}: alone 1t {row['alone_1_us']:.1f} us, {threads}t "
            f"{row[f'alone_{threads}_us']:.1f} us; after a GEMM 1t {row['after_gemm_1_us']:.1f} us, "
            f"{threads}t {row[f'after_gemm_{threads}_us']:.1f} us (GEMM {row['gemm_us']:.1f} us)")
    return rows


# ----------------------------------------------------------------------------- env

# pydl/__init__.py sets OMP_WAIT_POLICY=PASSIVE unless the user set it, so "pydl default"
# is passive; libgomp's own default (policy unset) spins 300000 times before sleeping,
# which GOMP_SPINCOUNT=300000 reproduces (GOMP_SPINCOUNT wins over the policy).
ENVS = {
    "pydl default (PASSIVE)": {},
    "libgomp default spin (GOMP_SPINCOUNT=300000)": {"GOMP_SPINCOUNT": "300000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "OMP_WAIT_POLICY=active": {"OMP_WAIT_POLICY": "active"},
    "libgomp spin + OPENBLAS_THREAD_TIMEOUT=4": {"GOMP_SPINCOUNT": "300000",
                                                 "OPENBLAS_THREAD_TIMEOUT": "4"},
    "PASSIVE + OPENBLAS_THREAD_TIMEOUT=4": {"OPENBLAS_THREAD_TIMEOUT": "4"},
}


def env_experiment(threads: int, sizes, repeats: int, idle_wait: float, log) -> list[dict]:
    rows = []
    for label, extra in ENVS.items():
        env = dict(os.environ)
        for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT"):
            env.pop(k, None)
        env.update(extra)
        size_arg = ";".join(f"{m},{a},{b}" for m, a, b in sizes)
        cmd = [sys.executable, __file__, "--child-dense", size_arg, "--threads", str(threads),
               "--repeats", str(repeats), "--idle-wait", str(idle_wait)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        dense_rows = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"env": label, "dense": dense_rows})
        log(f"  env {label}: " + "; ".join(
            f"{r['size']}: pydl {r[f'pydl, OpenMP {threads} threads']['vs_raw']:.2f}x raw, "
            f"omp1 {r['pydl, OpenMP 1 thread']['vs_raw']:.2f}x raw, "
            f"raw {r['raw sgemm x3']['median_ms']:.2f} ms" for r in dense_rows))
    return rows


# ----------------------------------------------------------------------------- report


def report(results: dict, threads: int) -> str:
    out = []
    if "spin" in results:
        out += ["### CPU burnt by idle workers in the second after one call", "",
                "| call | CPU ms (3 tries) |", "|---|---|"]
        out += [f"| {r['call']} | {r['cpu_ms_after']} |" for r in results["spin"]]
        out.append("")
    if "dense" in results:
        out += [f"### Dense fwd+bwd (relu, float32): SciPy's BLAS on {threads} threads of its "
                f"own beside OpenMP {threads} or 1, and pydl's one pool of {threads}", "",
                f"| size | raw sgemm x3 | pydl OpenMP {threads} | pydl OpenMP 1 | one pool | "
                f"OMP {threads} vs raw | OMP 1 vs raw | one pool vs raw | background CPU |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in results["dense"]:
            a, b, raw = r[f"pydl, OpenMP {threads} threads"], r["pydl, OpenMP 1 thread"], r["raw sgemm x3"]
            c = r[f"pydl, one pool of {threads} threads"]
            bg = "n/a" if r["background"] is None else f"{r['background']:.0%}"
            out.append(f"| {r['size']} | {raw['median_ms']:.3f} ms | {a['median_ms']:.3f} ms "
                       f"| {b['median_ms']:.3f} ms | {c['median_ms']:.3f} ms | {a['vs_raw']:.2f}x "
                       f"| {b['vs_raw']:.2f}x | {c['vs_raw']:.2f}x | {bg} |")
        out.append("")
    if "elementwise" in results:
        out += ["### relu in place over n float32: OpenMP 1 vs "
                f"{threads} threads (us; 'after GEMM' = time of GEMM+relu minus GEMM alone)", "",
                f"| n | alone 1t | alone {threads}t | after GEMM 1t | after GEMM {threads}t |",
                "|---|---|---|---|---|"]
        for r in results["elementwise"]:
            out.append(f"| {r['n']:,} | {r['alone_1_us']:.1f} | {r[f'alone_{threads}_us']:.1f} "
                       f"| {r['after_gemm_1_us']:.1f} | {r[f'after_gemm_{threads}_us']:.1f} |")
        out.append("")
    if "env" in results:
        out += ["### Dense fwd+bwd under wait-policy settings (median ms; x = raw / pydl)", "",
                "| env | size | raw sgemm x3 | pydl OMP " + str(threads) + " | pydl OMP 1 |",
                "|---|---|---|---|---|"]
        for e in results["env"]:
            for r in e["dense"]:
                a, b, raw = r[f"pydl, OpenMP {threads} threads"], r["pydl, OpenMP 1 thread"], r["raw sgemm x3"]
                out.append(f"| {e['env']} | {r['size']} | {raw['median_ms']:.3f} | "
                           f"{a['median_ms']:.3f} ({a['vs_raw']:.2f}x) | "
                           f"{b['median_ms']:.3f} ({b['vs_raw']:.2f}x) |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="spin,dense,elementwise,env")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--idle-wait", type=float, default=0.0,
                    help="wait up to this long before each round for other processes to go")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--child-dense", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import pydl.ops

    compare.set_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 9)

    def log(*a, **k):
        print(*a, file=sys.stderr, flush=True)

    if args.child_dense:
        sizes = [tuple(int(x) for x in s.split(",")) for s in args.child_dense.split(";")]
        rows = dense_experiment(args.threads, sizes, repeats, args.idle_wait, log)
        print(json.dumps(rows))
        return 0

    only = args.only.split(",")
    sizes = DENSE_SIZES_QUICK if args.quick else DENSE_SIZES
    results = {}
    env = compare.environment(args.threads)
    if "spin" in only:
        results["spin"] = spin_experiment(args.threads, log)
    if "dense" in only:
        results["dense"] = dense_experiment(args.threads, sizes, repeats, args.idle_wait, log)
    if "elementwise" in only:
        exps = range(12, 25, 2) if args.quick else range(12, 25)
        results["elementwise"] = elementwise_experiment(args.threads, exps, repeats,
                                                        args.idle_wait, log)
    if "env" in only:
        results["env"] = env_experiment(args.threads, sizes, repeats, args.idle_wait, log)
    print(f"{env['cpu']}, {env['cores']} cores, {args.threads} threads; pydl OpenMP "
          f"{pydl.ops.has_openmp}; BLAS pools: " + "; ".join(env["pools"]))
    print()
    print(report(results, args.threads))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
