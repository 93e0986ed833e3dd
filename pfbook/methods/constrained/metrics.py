"""Scoring generated power-flow records: operating limits, per-feature W1/σ, nodal mismatch."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pfbook.evaluation.distances import mean_w1_over_sigma, sliced_wasserstein, standardise, w1_over_sigma
from pfbook.methods.constrained.records import mismatch, split_features
from pfbook.power.grids import Grid


# ---------------------------------------------------------------------------------------- evaluation
def within_limits(
    grid: Grid, x: np.ndarray, load_range: tuple[float, float] = (0.8, 1.0), tol: float = 1e-4
) -> np.ndarray:
    """Per record: voltages within [vmin, vmax] and injections a generator could make, all within ``tol`` p.u.

    A sample carries net injections, not generator outputs. At a generator bus the output is p + pd, with pd
    the bus's demand, which lies in ``load_range`` x nominal; the record passes if some demand in that range
    puts the summed outputs of the bus's generators within their summed [Pmin, Pmax] and [Qmin, Qmax].
    """
    p, q, v, _ = split_features(np.asarray(x), grid.n_bus)
    ok = ((v >= grid.vmin - tol) & (v <= grid.vmax + tol)).all(1)
    lo_f, hi_f = load_range
    for inj, dem, gmin, gmax in ((p, grid.pd, grid.pmin, grid.pmax), (q, grid.qd, grid.qmin, grid.qmax)):
        smin, smax = np.zeros(grid.n_bus), np.zeros(grid.n_bus)
        np.add.at(smin, grid.gen_bus, gmin)
        np.add.at(smax, grid.gen_bus, gmax)
        d_lo, d_hi = np.minimum(lo_f * dem, hi_f * dem), np.maximum(lo_f * dem, hi_f * dem)
        b = np.unique(grid.gen_bus)
        # exists d in [d_lo, d_hi] with smin <= inj + d <= smax  <=>  smin - d_hi <= inj <= smax - d_lo
        ok &= ((inj[:, b] >= smin[b] - d_hi[b] - tol) & (inj[:, b] <= smax[b] - d_lo[b] + tol)).all(1)
    return ok


def feature_w1(
    samples: Mapping[str, np.ndarray], reference: np.ndarray, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """W1/σ of every feature to ``reference``, one column per set of samples (NaN: a constant feature, see
    :func:`pfbook.evaluation.distances.varying_features`)."""
    rows = {name: w1_over_sigma(x, reference) for name, x in samples.items()}
    return pd.DataFrame(rows, index=list(columns) if columns is not None else None)


def w1_standard_error(x: np.ndarray, reference: np.ndarray, n_boot: int = 20, seed: int = 0) -> float:
    """Bootstrap standard error of the mean W1/σ of samples ``x`` against ``reference``: the scale below which two
    sample sets' distances to the data cannot be told apart (both ``x`` and ``reference`` are resampled)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        xb, rb = x[rng.integers(0, len(x), len(x))], reference[rng.integers(0, len(reference), len(reference))]
        values.append(mean_w1_over_sigma(xb, rb))
    return float(np.std(values, ddof=1))


def bus_mismatch(grid: Grid, samples: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean and 99th percentile of |ΔP| and |ΔQ| (p.u.) per bus, for each set of samples."""
    out = {}
    for name, x in samples.items():
        dp, dq = (a.abs().numpy() for a in mismatch(grid, x))
        out[name] = pd.DataFrame(
            {
                "mean |ΔP|": dp.mean(0),
                "p99 |ΔP|": np.quantile(dp, 0.99, axis=0),
                "mean |ΔQ|": dq.mean(0),
                "p99 |ΔQ|": np.quantile(dq, 0.99, axis=0),
            },
            index=pd.Index(grid.bus_ids, name="bus"),
        )
    return pd.concat(out, axis=1, names=["samples", "statistic"])


def evaluate(
    grid: Grid,
    samples: Mapping[str, np.ndarray],
    reference: np.ndarray,
    train: np.ndarray | None = None,
    seconds: Mapping[str, float] | None = None,
    load_range: tuple[float, float] = (0.8, 1.0),
    tol: float = 1e-3,
) -> pd.DataFrame:
    """The comparison table: one row per set of samples, all judged against the held-out ``reference``.

    Columns: mean per-feature W1/σ and sliced Wasserstein (both in units of the reference's std per feature);
    mean and 99th percentile of |ΔP| and |ΔQ| over buses and samples (p.u.); the share of samples whose largest
    mismatch is below ``tol`` p.u.; the share within voltage and generator limits (:func:`within_limits`);
    seconds to draw them. With ``train`` the first row is the training records themselves, the real-vs-real
    scale of the distances (sampling noise, not model error).
    """
    sets = ({"real (training records)": train} if train is not None else {}) | dict(samples)
    seconds = seconds or {}
    rows = {}
    for name, x in sets.items():
        dp, dq = (a.abs().numpy() for a in mismatch(grid, x))
        worst = np.maximum(dp.max(1), dq.max(1))
        rows[name] = {
            "W1/σ": mean_w1_over_sigma(x, reference),
            "sliced W/σ": sliced_wasserstein(*standardise(x, reference)),
            "mean |ΔP|": dp.mean(),
            "p99 |ΔP|": np.quantile(dp, 0.99),
            "mean |ΔQ|": dq.mean(),
            "p99 |ΔQ|": np.quantile(dq, 0.99),
            f"share max|ΔS|<{tol:g}": float((worst < tol).mean()),
            "share within limits": float(within_limits(grid, x, load_range).mean()),
            "seconds": seconds.get(name, np.nan),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
