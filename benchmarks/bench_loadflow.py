"""Dense against sparse backend of the batched load-flow solver (:mod:`pfbook.power.loadflow`) on the same warm starts.

The warm starts are DiffOPF's test records (:func:`pfbook.methods.diffopf.load_records`, the ``default`` profile of
``--grid``): their OPF dispatch with multiplicative noise on p_g and additive noise on q_g (``--noise``, p.u.),
cycling through the records until ``--batch`` rows, each with its record's loads. Both backends solve the whole
batch once, on the CPU, and the script prints, side by side: seconds per batch and per warm start, the speed-up,
failures, median KKT iterations, and the largest difference between the two backends' solutions (over warm
starts both solved). The sparse backend also runs with the careful Levenberg-Marquardt setting (``lm_stall=1e-10``:
every penalty weight run to its last iteration) next to the default (1e-6, failures retried carefully), and with
the warm starts split over ``--workers`` processes (default: one per CPU core) next to one process. Single-threaded
by default, as a CPU worker of the book build runs. With ``--against OTHER/pfbook/power/loadflow.py`` it instead
loads that other version of the solver next to this one and solves the batch with each in turn, in one process
(``--repeat`` times, alternating which goes first), and prints per backend the wall and CPU seconds of every run
and the ratio of solves per second, this version over the other (medians), with the largest difference between
their solutions. Usage::

    python benchmarks/bench_loadflow.py                          # case118, 250 warm starts
    python benchmarks/bench_loadflow.py --grid case57 --batch 500 --threads 2 --workers 4
    python benchmarks/bench_loadflow.py --against ../old/pfbook/power/loadflow.py --repeat 2
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time

import numpy as np
import torch

from pfbook.methods import diffopf as do
from pfbook.power.loadflow import LoadFlowProblem, worker_count


def warm_starts(grid: str, batch: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    """(pg, qg, pd, qd), ``batch`` rows: the test records' dispatch perturbed by noise, with their loads."""
    data = do.load_records(do.DiffOPFConfig.for_profile("default", grid=grid))
    t = data.test
    idx = np.arange(batch) % len(t["pg"])
    rng = np.random.default_rng(seed)
    pg = t["pg"][idx] * (1 + noise * rng.standard_normal((batch, t["pg"].shape[1])))
    qg = t["qg"][idx] + noise * rng.standard_normal((batch, t["qg"].shape[1]))
    return pg, qg, t["pd"][idx], t["qd"][idx]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="case118")
    ap.add_argument("--batch", type=int, default=250, help="warm starts solved at once")
    ap.add_argument("--noise", type=float, default=0.05, help="relative noise on p_g, absolute (p.u.) on q_g")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--backends", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse"])
    ap.add_argument("--workers", type=int, default=None, help="processes for the split solve (default: CPU cores)")
    ap.add_argument("--against", metavar="LOADFLOW_PY", help="another version's loadflow.py to time this one against")
    ap.add_argument("--repeat", type=int, default=2, help="solves per version and backend with --against")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    pg, qg, pd, qd = warm_starts(args.grid, args.batch, args.noise, args.seed)
    print(
        f"torch {torch.__version__}, CPU ({platform.processor() or platform.machine()}), {args.threads} thread(s); "
        f"{args.grid}, {args.batch} warm starts (test records, noise {args.noise}, seed {args.seed})"
    )
    if args.against:
        return against(args, (pg, qg, pd, qd))
    results = {}
    for backend in args.backends:
        t0 = time.perf_counter()
        lf = LoadFlowProblem(args.grid, backend=backend)
        setup = time.perf_counter() - t0
        results[backend] = (lf.solve(pg, qg, pd, qd), setup)
        if backend == "sparse":  # the Levenberg-Marquardt stage run to the end of every weight, as before 1e-6
            results["sparse, careful LM"] = (lf.solve(pg, qg, pd, qd, lm_stall=1e-10), setup)
        workers = worker_count(args.workers, args.batch)
        if workers > 1:
            results[f"{backend}, {workers} workers"] = (lf.solve(pg, qg, pd, qd, workers=workers), setup)

    header = (
        f"{'backend':>18} {'s/batch':>9} {'ms/warm start':>14} {'setup s':>8} {'failed':>7} {'retried':>8} "
        f"{'median iters':>13}"
    )
    print(header)
    print("-" * len(header))
    for backend, (r, setup) in results.items():
        print(
            f"{backend:>18} {r.seconds:>9.2f} {1e3 * r.seconds / args.batch:>14.1f} {setup:>8.2f} {r.n_failed:>7d} "
            f"{r.retried:>8d} {np.median(r.iterations):>13.0f}"
        )
    if "sparse, careful LM" in results:
        (q, _), (c, _) = results["sparse"], results["sparse, careful LM"]
        both = q.converged & c.converged
        print(
            f"LM stall 1e-6 against 1e-10 (sparse): {c.seconds / q.seconds:.2f}x faster; largest |Δpg| over "
            f"{int(both.sum())} warm starts {float(np.abs(q.pg - c.pg)[both].max(initial=0.0)):.1e}"
        )
    for backend in args.backends:
        split = next((k for k in results if k.startswith(f"{backend}, ") and k.endswith("workers")), None)
        if split:
            (a, _), (b, _) = results[backend], results[split]
            print(
                f"{split} against one process ({backend}): {a.seconds / b.seconds:.2f}x faster; same converged "
                f"flags: {np.array_equal(a.converged, b.converged)}; largest |Δpg| "
                f"{float(np.abs(a.pg - b.pg)[a.converged & b.converged].max(initial=0.0)):.1e}"
            )
    if "dense" in results and "sparse" in results:
        (a, _), (b, _) = results["dense"], results["sparse"]
        both = a.converged & b.converged
        diff = {
            key: float(np.abs(getattr(a, key) - getattr(b, key))[both].max(initial=0.0))
            for key in ("pg", "qg", "v", "theta")
        }
        print(
            f"speed-up sparse/dense: {a.seconds / b.seconds:.1f}x; same converged flags: "
            f"{np.array_equal(a.converged, b.converged)}; largest |dense - sparse| over {int(both.sum())} "
            "warm starts solved by both: " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items())
        )


def against(args, batch) -> None:
    """This version of the solver against ``args.against``, solved in turn in this process (one worker)."""
    import pfbook.power.loadflow as this

    spec = importlib.util.spec_from_file_location("other_loadflow", args.against)
    if spec is None:
        raise SystemExit(f"--against must name a loadflow.py file; got {args.against!r}")
    other = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other  # dataclasses look their module up while it loads
    spec.loader.exec_module(other)
    for backend in args.backends:
        runs: dict[str, list] = {"this": [], "other": []}
        for i in range(args.repeat):
            order = [("this", this), ("other", other)] if i % 2 else [("other", other), ("this", this)]
            for label, mod in order:
                lf = mod.LoadFlowProblem(args.grid, backend=backend)
                c0, w0 = time.process_time(), time.perf_counter()
                r = lf.solve(*batch, workers=1)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                runs[label].append((wall, cpu, r))
                print(f"{backend:>6} {label:>5}: wall {wall:7.2f} s, CPU {cpu:7.2f} s, {r.n_failed} failed")
        med = lambda label, k, runs=runs: float(np.median([run[k] for run in runs[label]]))
        a, b = runs["this"][0][2], runs["other"][0][2]
        diff = max(float(np.abs(getattr(a, key) - getattr(b, key)).max()) for key in ("pg", "qg", "v", "theta"))
        print(
            f"{backend}: solves per second, this version over the other (medians): wall "
            f"{med('other', 0) / med('this', 0):.3f}, CPU {med('other', 1) / med('this', 1):.3f}; same converged "
            f"flags: {np.array_equal(a.converged, b.converged)}; largest |this - other| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
