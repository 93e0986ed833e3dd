"""Scoring warm starts as Hoseinpour & Dvorkin do (eq. 21a-c), and their Tables I and II (eq. 16-19)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pfbook.methods.diffopf.config import GRID_LABELS
from pfbook.power.grids import Grid
from pfbook.power.loadflow import LoadFlowProblem

# ---------------------------------------------------------------------------------------- evaluation (eq. 20-21)
#: Largest limit violation (p.u.) of a load-flow solution that still counts as within every limit.
LIMIT_TOL = 1e-4


def evaluate_warm_starts(
    grid: Grid,
    test: Mapping[str, np.ndarray],
    pg: np.ndarray,
    qg: np.ndarray,
    loads: slice | np.ndarray | None = None,
    device: str = "cpu",
    **solve_kw,
) -> dict:
    """Solve (20) from every warm start and compute eq. (21a-c) against the test records, and the limits.

    ``pg, qg``: (k, n, n_gen) warm starts for the first k test records (or those indexed by ``loads``).
    Returns arrays (k, n): ``cost`` ($/h, with the record's cost coefficients), ``gap_usd`` |c(p̃_g*) - c*|,
    ``gap_pct`` (% of c*), ``gap_signed_pct`` (c - c*)/c* in % (negative: cheaper than the OPF, possible because
    problem (20) holds no operating limit), ``setpoint`` ||p̃_g* - p_g||² + ||q̃_g* - q_g||² (p.u.²), ``vviol``
    (eq. 21c: the norm of the voltages' excess over their limits, p.u.), ``gviol`` (the same norm for the
    generators' P and Q limits), ``bviol`` (the largest branch overload over its MVA rating, p.u.), ``within``
    (every violation at most :data:`LIMIT_TOL`) and ``converged``; metrics of failed solves are NaN. Also
    ``seconds`` of the load-flow solves and ``lf`` the result.
    """
    import torch

    from pfbook.power.physics import limit_violations

    k, n, ng = pg.shape
    idx = np.arange(k) if loads is None else np.arange(len(test["cost"]))[loads][:k]
    pd_ = np.repeat(test["pd"][idx], n, axis=0)
    qd_ = np.repeat(test["qd"][idx], n, axis=0)
    lf = LoadFlowProblem(grid, device).solve(pg.reshape(-1, ng), qg.reshape(-1, ng), pd_, qd_, **solve_kw)
    cf = np.repeat(test["cost_factors"][idx], n, axis=0)
    cost = grid.generation_cost(lf.pg, cf).reshape(k, n)
    cstar = test["cost"][idx][:, None]
    as_t = lambda a: torch.as_tensor(np.nan_to_num(a), dtype=torch.float64)
    lim = limit_violations(grid, as_t(lf.v), as_t(lf.theta), as_t(lf.pg), as_t(lf.qg))
    lim = {key: val.numpy() for key, val in lim.items()}
    # eq. (21c): the norms of the excess above and below the limits, added (not the norm of their sum)
    vviol = np.linalg.norm(np.maximum(0, lf.v - grid.vmax), axis=1) + np.linalg.norm(
        np.maximum(0, grid.vmin - lf.v), axis=1
    )
    gviol = np.sqrt((lim["pg"] ** 2).sum(1) + (lim["qg"] ** 2).sum(1))
    bviol = lim["branch"].max(1) if lim["branch"].shape[1] else np.zeros(len(vviol))
    ok = lf.converged.reshape(k, n)
    within = ok & (
        np.maximum.reduce([lim["v"].max(1), lim["pg"].max(1, initial=0), lim["qg"].max(1, initial=0), bviol]).reshape(
            k, n
        )
        <= LIMIT_TOL
    )
    nan = lambda a: np.where(ok, a, np.nan)
    return {
        "cost": nan(cost),
        "gap_usd": nan(np.abs(cost - cstar)),
        "gap_pct": nan(100 * np.abs(cost - cstar) / cstar),
        "gap_signed_pct": nan(100 * (cost - cstar) / cstar),
        "setpoint": nan(lf.distance.reshape(k, n)),
        "vviol": nan(vviol.reshape(k, n)),
        "gviol": nan(gviol.reshape(k, n)),
        "bviol": nan(bviol.reshape(k, n)),
        "within": within,
        "converged": ok,
        "cstar": cstar[:, 0],
        "seconds": lf.seconds,
        "lf": lf,
    }


def user_pick(ev: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per load, the warm start a user can pick without knowing c*: the cheapest whose load-flow solution is
    within every limit, else the one violating least (voltage, generator and branch violations summed); -1 where
    no load flow converged."""
    cost = np.where(ev["within"], ev["cost"], np.inf)
    viol = np.where(
        ev["converged"], np.nan_to_num(ev["vviol"]) + np.nan_to_num(ev["gviol"]) + np.nan_to_num(ev["bviol"]), np.inf
    )
    pick = np.where(ev["within"].any(1), np.argmin(cost, axis=1), np.argmin(viol, axis=1))
    return np.where(ev["converged"].any(1), pick, -1)


def oracle_pick(ev: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per load, the paper's pick: the warm start whose cost is nearest c* (it needs the test record's c*)."""
    gap = np.where(ev["converged"], ev["gap_usd"], np.inf)
    return np.where(ev["converged"].any(1), np.argmin(gap, axis=1), -1)


def _at(a: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """``a[i, pick[i]]`` per load (NaN where the pick is -1)."""
    out = a[np.arange(len(pick)), np.maximum(pick, 0)].astype(float)
    return np.where(pick >= 0, out, np.nan)


def prior_balance(grid: Grid, test: Mapping[str, np.ndarray], pg: np.ndarray) -> dict[str, float]:
    """How far the sampled dispatch itself (before the load flow) is from the power balance and the limits.

    ``balance error``: mean |Σp_g - (Σp_d + losses)| (p.u.) with the losses of the test record's own OPF solution
    (Σp_g* - Σp_d); ``p_g outside limits``: the share of sampled p_g entries outside [Pmin, Pmax] (by 1e-4 p.u.).
    """
    k = pg.shape[0]
    pd_total = test["pd"][:k].sum(1)
    losses = test["pg"][:k].sum(1) - pd_total
    err = np.abs(pg.sum(-1) - (pd_total + losses)[:, None])
    out = (pg < grid.pmin - 1e-4) | (pg > grid.pmax + 1e-4)
    return {
        "balance error (p.u., mean)": float(err.mean()),
        "losses (p.u., mean)": float(losses.mean()),
        "p_g outside limits (share)": float(out.mean()),
    }


def _cvar(a: np.ndarray, q: float = 0.1) -> float:
    """Mean of the worst (largest) ``q`` share of ``a`` (at least one value)."""
    a = np.sort(a[np.isfinite(a)])[::-1]
    if len(a) == 0:
        return float("nan")
    return float(a[: max(1, int(math.ceil(q * len(a))))].mean())


def best_per_load(ev: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The best sample per load for each metric (minimum over converged samples; NaN if none converged)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {
                m: np.nanmin(ev[m], axis=1)
                for m in ("gap_usd", "gap_pct", "setpoint", "vviol", "gviol", "bviol")
                if m in ev
            }


def table_one(results: Mapping[str, Mapping[str, np.ndarray]], grid_label: str = "") -> pd.DataFrame:
    """Table I: per solver, the mean and CVaR10% over test loads of the best sample's metrics (eq. 21a-c), as the
    paper reports them (each metric's own best sample, which needs the test record's c*), and beside them

    * the signed gap of the sample nearest c* (``signed, oracle pick``) and the share of warm starts whose
      load-flow cost is below c* (problem (20) enforces no limit, so a solution can undercut the OPF);
    * the generator-limit and branch-rating violations of the load-flow solutions (best per load);
    * the pick a user can make without c* (:func:`user_pick`): its signed gap and whether it is within every
      limit;
    * the share of load-flow solves that converged and the loads with no converged warm start.
    """
    rows = {}
    for solver, ev in results.items():
        b = best_per_load(ev)
        oracle, user = oracle_pick(ev), user_pick(ev)
        user_gap = _at(ev["gap_signed_pct"], user)
        rows[(grid_label, solver)] = {
            ("Optimality gap [$]", "Mean"): np.nanmean(b["gap_usd"]),
            ("Optimality gap [$]", "CVaR10%"): _cvar(b["gap_usd"]),
            ("Optimality gap [%]", "Mean"): np.nanmean(b["gap_pct"]),
            ("Optimality gap [%]", "CVaR10%"): _cvar(b["gap_pct"]),
            ("Optimality gap [%]", "signed, oracle pick"): np.nanmean(_at(ev["gap_signed_pct"], oracle)),
            ("Optimality gap [%]", "warm starts below c*"): float(
                np.nanmean(np.where(ev["converged"], ev["gap_signed_pct"] < 0, np.nan))
            ),
            ("Setpoint error [p.u.²]", "Mean"): np.nanmean(b["setpoint"]),
            ("Setpoint error [p.u.²]", "CVaR10%"): _cvar(b["setpoint"]),
            ("Voltage violation [p.u.]", "Mean"): np.nanmean(b["vviol"]),
            ("Voltage violation [p.u.]", "CVaR10%"): _cvar(b["vviol"]),
            ("Generator violation [p.u.]", "Mean"): np.nanmean(b["gviol"]),
            ("Branch overload [p.u.]", "Mean"): np.nanmean(b["bviol"]),
            ("User pick (no c*)", "gap % (mean)"): np.nanmean(user_gap),
            ("User pick (no c*)", "|gap| % CVaR10%"): _cvar(np.abs(user_gap)),
            ("User pick (no c*)", "within limits"): float(np.mean(_at(ev["within"], user) == 1)),
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
        rows[(case, solver)] = {
            ("Optimality gap [$]", "Mean"): v[0],
            ("Optimality gap [%]", "Mean"): v[1],
            ("Optimality gap [$]", "CVaR10%"): v[2],
            ("Optimality gap [%]", "CVaR10%"): v[3],
            ("Setpoint error [p.u.²]", "Mean"): v[4],
            ("Setpoint error [p.u.²]", "CVaR10%"): v[5],
            ("Voltage violation [p.u.]", "Mean"): v[6],
            ("Voltage violation [p.u.]", "CVaR10%"): v[7],
        }
    order = pd.MultiIndex.from_tuples(
        [
            (m, s)
            for m in ("Optimality gap [$]", "Optimality gap [%]", "Setpoint error [p.u.²]", "Voltage violation [p.u.]")
            for s in ("Mean", "CVaR10%")
        ]
    )
    index = (
        pd.MultiIndex.from_tuples(list(rows), names=["test case", "solver"])
        if rows
        else pd.MultiIndex.from_arrays([[], []], names=["test case", "solver"])
    )
    return pd.DataFrame([[r[c] for c in order] for r in rows.values()], index=index, columns=order, dtype=float)


def table_two(
    ev: Mapping[str, np.ndarray],
    eps: Sequence[float] = (0.5, 1, 2, 5),
    deltas: Sequence[float] = (0.9, 0.95, 0.99),
    grid_label: str = "",
) -> pd.DataFrame:
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
    "PJM 5-Bus": {
        0.5: (0.07, 32, 28, 41, 27, 63, 45),
        1: (0.49, 4, 4, 5, 4, 7, 5),
        2: (0.77, 2, 2, 3, 3, 4, 4),
        5: (0.94, 1, 1, 1, 1, 1, 1),
    },
    "IEEE 118-Bus": {
        0.5: (0.02, 135, 1, 175, 3, 269, 2),
        1: (0.03, 71, 3, 93, 3, 142, 4),
        2: (0.05, 42, 2, 54, 3, 83, 4),
        5: (0.17, 13, 1, 17, 5, 26, 2),
    },
}


def paper_table_two() -> pd.DataFrame:
    rows = {}
    for case, d in _PAPER_T2.items():
        for e, v in d.items():
            rows[(case, e)] = {
                ("", "p_ε"): v[0],
                ("δ=0.9", "M"): v[1],
                ("δ=0.9", "N_ε"): v[2],
                ("δ=0.95", "M"): v[3],
                ("δ=0.95", "N_ε"): v[4],
                ("δ=0.99", "M"): v[5],
                ("δ=0.99", "N_ε"): v[6],
            }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "ε %"])
    return df


#: Differences below these do not count against a sampler in :func:`steps_tradeoff`.
WITHIN_FLOOR = {"gap % (mean)": 1e-3, "setpoint (mean)": 1e-6, "vviol (mean)": 1e-4}
