"""Scoring warm starts as Hoseinpour & Dvorkin do (eq. 21a-c), and their Tables I and II (eq. 16-19)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pfbook.power.grids import Grid
from pfbook.power.loadflow import LoadFlowProblem
from pfbook.methods.diffopf.config import GRID_LABELS


# ---------------------------------------------------------------------------------------- evaluation (eq. 20-21)
def evaluate_warm_starts(grid: Grid, test: Mapping[str, np.ndarray], pg: np.ndarray, qg: np.ndarray,
                         loads: slice | np.ndarray | None = None, device: str = "cpu", **solve_kw) -> dict:
    """Solve (20) from every warm start and compute eq. (21a-c) against the test records.

    ``pg, qg``: (k, n, n_gen) warm starts for the first k test records (or those indexed by ``loads``).
    Returns arrays (k, n): ``cost`` ($/h, with the record's cost coefficients), ``gap_usd`` |c(p̃_g*) - c*|,
    ``gap_pct`` (% of c*), ``setpoint`` ||p̃_g* - p_g||² + ||q̃_g* - q_g||² (p.u.²), ``vviol`` (p.u.), and
    ``converged``; metrics of failed solves are NaN. Also ``seconds`` of the load-flow solves, ``lf`` the result.
    """
    k, n, ng = pg.shape
    idx = np.arange(k) if loads is None else np.arange(len(test["cost"]))[loads][:k]
    pd_ = np.repeat(test["pd"][idx], n, axis=0)
    qd_ = np.repeat(test["qd"][idx], n, axis=0)
    lf = LoadFlowProblem(grid, device).solve(pg.reshape(-1, ng), qg.reshape(-1, ng), pd_, qd_, **solve_kw)
    cf = np.repeat(test["cost_factors"][idx], n, axis=0)
    cost = grid.generation_cost(lf.pg, cf).reshape(k, n)
    cstar = test["cost"][idx][:, None]
    v = lf.v
    vviol = (np.linalg.norm(np.maximum(0, v - grid.vmax), axis=1) + np.linalg.norm(np.maximum(0, grid.vmin - v), axis=1))
    ok = lf.converged.reshape(k, n)
    nan = lambda a: np.where(ok, a, np.nan)
    return {"cost": nan(cost), "gap_usd": nan(np.abs(cost - cstar)), "gap_pct": nan(100 * np.abs(cost - cstar) / cstar),
            "setpoint": nan(lf.distance.reshape(k, n)), "vviol": nan(vviol.reshape(k, n)), "converged": ok,
            "cstar": cstar[:, 0], "seconds": lf.seconds, "lf": lf}


def _cvar(a: np.ndarray, q: float = 0.1) -> float:
    """Mean of the worst (largest) ``q`` share of ``a`` (at least one value)."""
    a = np.sort(a[np.isfinite(a)])[::-1]
    if len(a) == 0:
        return float("nan")
    return float(a[:max(1, int(math.ceil(q * len(a))))].mean())


def best_per_load(ev: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The best sample per load for each metric (minimum over converged samples; NaN if none converged)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {m: np.nanmin(ev[m], axis=1) for m in ("gap_usd", "gap_pct", "setpoint", "vviol")}


def table_one(results: Mapping[str, Mapping[str, np.ndarray]], grid_label: str = "") -> pd.DataFrame:
    """Table I: per solver, the mean and CVaR10% over test loads of the best sample's metrics (eq. 21a-c),
    with the share of load-flow solves that converged and the loads with no converged warm start."""
    rows = {}
    for solver, ev in results.items():
        b = best_per_load(ev)
        rows[(grid_label, solver)] = {
            ("Optimality gap [$]", "Mean"): np.nanmean(b["gap_usd"]), ("Optimality gap [$]", "CVaR10%"): _cvar(b["gap_usd"]),
            ("Optimality gap [%]", "Mean"): np.nanmean(b["gap_pct"]), ("Optimality gap [%]", "CVaR10%"): _cvar(b["gap_pct"]),
            ("Setpoint error [p.u.²]", "Mean"): np.nanmean(b["setpoint"]),
            ("Setpoint error [p.u.²]", "CVaR10%"): _cvar(b["setpoint"]),
            ("Voltage violation [p.u.]", "Mean"): np.nanmean(b["vviol"]),
            ("Voltage violation [p.u.]", "CVaR10%"): _cvar(b["vviol"]),
            ("Load flow", "converged share"): float(ev["converged"].mean()),
            ("Load flow", "loads without a solution"): int((~ev["converged"].any(1)).sum()),
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "solver"])
    return df


#: Table I of the paper (PGLib cases): (gap $, gap %, setpoint, voltage) x (mean, CVaR10%).
_PAPER_T1 = {
    ("PJM", "DiffOPF"): (8.0, 0.1, 46.1, 0.3, 0.000, 0.000, 0.132, 0.310),
    ("PJM", "DeepOPF"): (1091.3, 8.6, 4134.4, 33.5, 0.004, 0.012, 0.389, 0.680),
    ("PJM-API", "DiffOPF"): (504.0, 0.7, 1246.5, 1.9, 0.009, 0.019, 0.002, 0.022),
    ("PJM-API", "DeepOPF"): (1142.1, 1.7, 2873.2, 4.3, 0.044, 0.160, 0.264, 1.191),
    ("IEEE 14-Bus", "DiffOPF"): (3.4, 0.2, 13.3, 0.6, 0.000, 0.000, 0.002, 0.011),
    ("IEEE 14-Bus", "DeepOPF"): (4.6, 0.2, 15.5, 0.7, 0.000, 0.000, 0.004, 0.013),
    ("IEEE 24-Bus", "DiffOPF"): (1.8, 0.0, 5.7, 0.0, 0.000, 0.000, 0.004, 0.016),
    ("IEEE 24-Bus", "DeepOPF"): (290.3, 0.6, 718.8, 1.4, 0.000, 0.002, 0.017, 0.038),
    ("IEEE 118-Bus", "DiffOPF"): (95.3, 0.1, 378.1, 0.5, 0.000, 0.000, 0.007, 0.036),
    ("IEEE 118-Bus", "DeepOPF"): (8620.5, 10.9, 18333.4, 23.8, 0.350, 3.500, 1.087, 4.430),
}


def paper_table_one(grids: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table I in the layout of :func:`table_one` (rows for the labels of ``grids``)."""
    labels = None if grids is None else {GRID_LABELS.get(g, g) for g in grids}
    rows = {}
    for (case, solver), v in _PAPER_T1.items():
        if labels is not None and case not in labels:
            continue
        rows[(case, solver)] = {("Optimality gap [$]", "Mean"): v[0], ("Optimality gap [%]", "Mean"): v[1],
                                ("Optimality gap [$]", "CVaR10%"): v[2], ("Optimality gap [%]", "CVaR10%"): v[3],
                                ("Setpoint error [p.u.²]", "Mean"): v[4], ("Setpoint error [p.u.²]", "CVaR10%"): v[5],
                                ("Voltage violation [p.u.]", "Mean"): v[6], ("Voltage violation [p.u.]", "CVaR10%"): v[7]}
    order = pd.MultiIndex.from_tuples([(m, s) for m in ("Optimality gap [$]", "Optimality gap [%]",
                                                         "Setpoint error [p.u.²]", "Voltage violation [p.u.]")
                                       for s in ("Mean", "CVaR10%")])
    index = pd.MultiIndex.from_tuples(list(rows), names=["test case", "solver"]) if rows else \
        pd.MultiIndex.from_arrays([[], []], names=["test case", "solver"])
    return pd.DataFrame([[r[c] for c in order] for r in rows.values()], index=index, columns=order, dtype=float)


def table_two(ev: Mapping[str, np.ndarray], eps: Sequence[float] = (0.5, 1, 2, 5),
              deltas: Sequence[float] = (0.9, 0.95, 0.99), grid_label: str = "") -> pd.DataFrame:
    """Table II: p_ε, the bound M ≥ log(1-δ)/log(1-p_ε) (eq. 19) and the empirical N_ε per δ.

    A sample is ε-close when its load-flow cost is within ε % of the test record's OPF cost, |c - c*| ≤ ε c*/100
    (failed solves are not close). p_ε is the mean over loads of the share of close samples (Sec. VI-D).
    N_ε(δ) is the empirical counterpart of M: the smallest N such that a share δ of the test loads has a close
    sample among its first N draws (``>n`` when that share is never reached within the n draws).
    """
    gap = np.where(ev["converged"], ev["gap_pct"], np.inf)
    n = gap.shape[1]
    rows = {}
    for e in eps:
        close = gap <= e
        p = float(close.mean(1).mean())
        first = np.where(close.any(1), close.argmax(1) + 1, np.inf)
        row = {("", "p_ε"): p}
        for d in deltas:
            M = math.ceil(math.log(1 - d) / math.log(1 - p)) if 0 < p < 1 else (1 if p >= 1 else math.inf)
            q = np.quantile(first, d, method="inverted_cdf")
            row[(f"δ={d}", "M")] = M
            row[(f"δ={d}", "N_ε")] = int(q) if np.isfinite(q) else f">{n}"
        rows[(grid_label, e)] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "ε %"])
    return df


#: Table II of the paper: ε -> (p_ε, M and N_ε for δ = 0.9, 0.95, 0.99).
_PAPER_T2 = {
    "PJM 5-Bus": {0.5: (0.07, 32, 28, 41, 27, 63, 45), 1: (0.49, 4, 4, 5, 4, 7, 5), 2: (0.77, 2, 2, 3, 3, 4, 4),
                  5: (0.94, 1, 1, 1, 1, 1, 1)},
    "IEEE 118-Bus": {0.5: (0.02, 135, 1, 175, 3, 269, 2), 1: (0.03, 71, 3, 93, 3, 142, 4),
                     2: (0.05, 42, 2, 54, 3, 83, 4), 5: (0.17, 13, 1, 17, 5, 26, 2)},
}


def paper_table_two() -> pd.DataFrame:
    rows = {}
    for case, d in _PAPER_T2.items():
        for e, v in d.items():
            rows[(case, e)] = {("", "p_ε"): v[0], ("δ=0.9", "M"): v[1], ("δ=0.9", "N_ε"): v[2], ("δ=0.95", "M"): v[3],
                               ("δ=0.95", "N_ε"): v[4], ("δ=0.99", "M"): v[5], ("δ=0.99", "N_ε"): v[6]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "ε %"])
    return df


#: Differences below these do not count against a sampler in :func:`steps_tradeoff`.
WITHIN_FLOOR = {"gap % (mean)": 1e-3, "setpoint (mean)": 1e-6, "vviol (mean)": 1e-4}
