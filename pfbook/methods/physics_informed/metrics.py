"""Scoring generated records: operating limits, branch limits and two-sample distances (Table I)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from pfbook.evaluation.distances import mean_w1_over_sigma, mmd_rbf, sliced_wasserstein, standardise
from pfbook.methods.physics_informed.data import PIData, imbalance, split_record
from pfbook.power.grids import Grid
from pfbook.power.physics import grid_tensors, limit_violations


# ---------------------------------------------------------------------------------------- evaluation
def within_bounds(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, tol: float = 1e-6, atol: float = 1e-5
) -> np.ndarray:
    """Per record: every feature within its C1-C4 bound, up to ``tol`` of the bound's width or ``atol`` (p.u., rad),
    whichever is larger (a fixed feature, such as the reference angle, has a bound of width zero)."""
    slack = np.maximum(tol * (high - low), atol)
    return ((x >= low - slack) & (x <= high + slack)).all(1)


def within_branch_limits(grid: Grid, x: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Per record: every branch's apparent power within its rating at both ends (C6), within ``tol`` p.u."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    _, _, v, th, _, _ = split_record(xt, grid)
    viol = limit_violations(grid_tensors(grid, "cpu", torch.float64), v, th)["branch"]
    return (viol <= tol).all(-1).numpy()


def distances(x: np.ndarray, reference: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean per-feature W1/σ, sliced Wasserstein and MMD² of standardised records against ``reference`` (constant
    features left out, :func:`pfbook.evaluation.distances.varying_features`)."""
    a, b = standardise(x, reference)
    return {
        "W1/σ": mean_w1_over_sigma(x, reference),
        "sliced W/σ": sliced_wasserstein(a, b, seed=seed),
        "MMD²": mmd_rbf(a[:2000], b[:2000], bandwidths=(1.0, 2.0, 5.0, 10.0)),
    }


def evaluate(
    data: PIData,
    samples: Mapping[str, np.ndarray],
    paper: Mapping[str, float] | None = None,
    seconds: Mapping[str, float] | None = None,
    real_row: bool = True,
) -> pd.DataFrame:
    """Table I and beyond: one row per set of samples, judged against the held-out records.

    Columns: mean imbalance R (p.u., eq. 7) and its median and 99th percentile, the paper's Table I value,
    the share within C1-C4, the share within the branch limits C6, distances to the held-out records (per
    feature W1 and sliced Wasserstein in units of the real std, MMD² of the standardised records) and seconds.
    With ``real_row`` the first row is the training records themselves: R of a solved OPF (solver tolerance)
    and the real-vs-real scale of the distances.
    """
    sets = ({"real (training records)": data.train[: len(data.test) * 4]} if real_row else {}) | dict(samples)
    paper, seconds = paper or {}, seconds or {}
    rows = {}
    for name, x in sets.items():
        r = imbalance(data.grid, torch.as_tensor(x, dtype=torch.float64)).numpy()
        rows[name] = {
            "mean R (p.u.)": r.mean(),
            "median R": np.median(r),
            "p99 R": np.quantile(r, 0.99),
            "paper mean R": paper.get(name, np.nan),
            "share within C1-C4": float(within_bounds(x, data.low, data.high).mean()),
            "share within C6": float(within_branch_limits(data.grid, x).mean()),
            **distances(x, data.test),
            "seconds": seconds.get(name, np.nan),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
