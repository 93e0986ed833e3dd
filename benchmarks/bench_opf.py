"""Benchmark pfbook's AC-OPF (pfbook.power.opf) against PYPOWER's runopf on the same random loads.

For every grid, ``--samples`` load cases are drawn as in the dataset generator: every load's active
and reactive demand is multiplied by its own factor U(0.8, 1.0) (``--low``/``--high``). Each case is
solved in this one process by

* pfbook, warm-started from the optimum at the centre of the load range (what the dataset generator does),
  from the nominal-load optimum (what it did before), and from the cold start (for reference), and
* a plain loop over ``pypower.api.runopf`` (MATPOWER's MIPS interior point, ported to Python).

Times are process CPU times, so "solves/s per core" does not depend on what else the machine runs.
BLAS and OpenMP pools are limited to one thread *before* numpy is imported (the environment
variables below); with tiny matrices more threads only add synchronisation, and one thread per
process is how the generator runs its workers. The pfbook setup (building the solver and solving
the nominal case) is reported separately: a worker pays it once.

Usage::

    python benchmarks/bench_opf.py --grids case14 case57 case118 --samples 20 --seed 0
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _draw_loads(grid, n: int, seed: int, lo: float, hi: float) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = np.ones(grid.n_bus)
        f[grid.load_bus] = rng.uniform(lo, hi, grid.n_load)
        out.append((grid.pd * f, grid.qd * f))
    return out


def bench_grid(name: str, samples: int, seed: int, lo: float, hi: float) -> dict:
    from pfbook.power.grids import load_grid
    from pfbook.power.opf import ACOPF, pypower_runopf

    grid = load_grid(name)
    loads = _draw_loads(grid, samples, seed, lo, hi)

    t0 = time.process_time()
    opf = ACOPF(grid)
    centre = 0.5 * (lo + hi)
    reference = opf.solve(grid.pd * centre, grid.qd * centre)
    setup = time.process_time() - t0
    nominal = opf.solve()

    res: dict = {"grid": name, "samples": samples, "setup_s": setup, "nominal_ok": nominal.success}
    for mode, start in (("warm", reference), ("nominal", nominal), ("cold", None)):
        costs, its, fails = [], [], 0
        t0, w0 = time.process_time(), time.perf_counter()
        for pd, qd in loads:
            r = opf.solve(pd, qd, warm_start=start)
            costs.append(r.cost if r.success else np.nan)
            its.append(r.iterations)
            fails += not r.success
        res[mode] = {
            "cpu_s": time.process_time() - t0,
            "wall_s": time.perf_counter() - w0,
            "cost": np.array(costs),
            "iters": np.array(its),
            "fails": fails,
        }

    pypower_runopf(grid)  # warm-up: imports, first-call overheads
    costs, its, fails = [], [], 0
    t0, w0 = time.process_time(), time.perf_counter()
    for pd, qd in loads:
        r = pypower_runopf(grid, pd, qd)
        ok = bool(r["success"])
        costs.append(float(r["f"]) if ok else np.nan)
        its.append(int(r["raw"]["output"]["iterations"]))
        fails += not ok
    res["pypower"] = {
        "cpu_s": time.process_time() - t0,
        "wall_s": time.perf_counter() - w0,
        "cost": np.array(costs),
        "iters": np.array(its),
        "fails": fails,
    }
    return res


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b) / np.abs(b)
    return float(np.nanmax(d)) if np.any(np.isfinite(d)) else float("nan")


def print_table(rows: list[dict], file=sys.stdout) -> None:
    hdr = (
        f"{'grid':<24} {'N':>4} | {'pfbook warm':>11} {'it':>5} {'fail':>4} | {'from nominal':>12} {'it':>5} | "
        f"{'pfbook cold':>11} {'it':>5} "
        f"{'fail':>4} | {'PYPOWER':>8} {'it':>5} {'fail':>4} | {'warm/PP':>7} {'nom/PP':>7} {'cold/PP':>7} | "
        f"{'max rel dcost':>13} | {'setup':>7}"
    )
    print(hdr, file=file)
    print("-" * len(hdr), file=file)
    for r in rows:
        n = r["samples"]
        w, m, c, p = r["warm"], r["nominal"], r["cold"], r["pypower"]
        rate = {k: n / r[k]["cpu_s"] for k in ("warm", "nominal", "cold", "pypower")}
        dcost = max(_rel(w["cost"], p["cost"]), _rel(m["cost"], p["cost"]), _rel(c["cost"], p["cost"]))
        print(
            f"{r['grid']:<24} {n:>4} | {rate['warm']:>9.1f}/s {w['iters'].mean():>5.1f} {w['fails']:>4} | "
            f"{rate['nominal']:>10.1f}/s {m['iters'].mean():>5.1f} | "
            f"{rate['cold']:>9.1f}/s {c['iters'].mean():>5.1f} {c['fails']:>4} | "
            f"{rate['pypower']:>6.1f}/s {p['iters'].mean():>5.1f} {p['fails']:>4} | "
            f"{rate['warm'] / rate['pypower']:>6.1f}x {rate['nominal'] / rate['pypower']:>6.1f}x "
            f"{rate['cold'] / rate['pypower']:>6.1f}x | "
            f"{dcost:>13.1e} | {r['setup_s'] * 1e3:>5.0f}ms",
            file=file,
        )
    print(
        "\nsolves/s per core from process CPU time (BLAS/OpenMP limited to 1 thread); 'it': mean Ipopt / "
        "PIPS iterations; 'warm': from the optimum at the centre of the load range (the dataset generator's "
        "start), 'from nominal': from the nominal-load optimum; 'max rel dcost': largest |cost - cost_PYPOWER| / "
        "cost_PYPOWER over the pfbook modes and all samples; 'setup': pfbook solver construction + reference "
        "solve (once per worker).",
        file=file,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--grids",
        nargs="+",
        default=[
            "case14",
            "case57",
            "case118",
            "pglib_opf_case5_pjm",
            "pglib_opf_case14_ieee",
            "pglib_opf_case24_ieee_rts",
            "pglib_opf_case118_ieee",
        ],
    )
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--low", type=float, default=0.8, help="lower end of the per-load factor (default 0.8)")
    ap.add_argument("--high", type=float, default=1.0, help="upper end of the per-load factor (default 1.0)")
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples must be at least 1")
    rows = []
    for name in args.grids:
        rows.append(bench_grid(name, args.samples, args.seed, args.low, args.high))
        print(f"  done {name}", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
