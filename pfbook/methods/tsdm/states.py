"""Scoring on states, as eq. 36 of Pei et al. does: WLS state estimates from (recovered) SCADA measurements.

The control centre turns measurements into states by weighted least squares; an attack or a recovery matters
through the states it leads to. For every time step of a test window the estimator
(:func:`pfbook.power.estimation.wls_estimate`, which reproduces pandapower's WLS) receives the whole grid's SCADA
measurements: outside the region the measurements as they were received (uncorrupted), inside it the region's
channels as given (corrupted, or recovered by a method; lost entries are left out). Standard deviations are the
measurement noise of the dataset (relative: 1 % of |P|, |Q| with a floor of 10^-3 p.u., 0.2 % of |U|); an entry a
method filled in for a lost one is a pseudo-measurement, with the spread of its channel from one sample to the
next (:func:`pseudo_std`), as state estimators treat forecast values. The
region's states (|V| and θ relative to the reference bus) are compared with the power-flow states the
measurements were made from, with eq. 36's weights m_i = (100 / rms_i)^2 (rms_i over the training days), so the
error is in percent of each state's typical magnitude; constant states (the reference angle) are not scored.
"""

from __future__ import annotations

import numpy as np

from pfbook.methods.tsdm.metric import channel_weights
from pfbook.methods.tsdm.windows import Windows

#: floor of |z| in the relative standard deviation of a power measurement (p.u.), as in the chapter's estimator
POWER_FLOOR = 1e-3


def state_weights(train_states: np.ndarray) -> np.ndarray:
    """m_i of eq. 36 for states ``(S, steps)``: (100 / rms_i)^2, and 0 for a state that never changes."""
    x = np.asarray(train_states, dtype=np.float64)
    return np.where(x.std(axis=1) > 1e-9, channel_weights(x[None]), 0.0)


def measurement_std(channels: list[dict], z: np.ndarray, noise: dict) -> np.ndarray:
    """WLS standard deviations of measurements ``z`` (..., K): the dataset's relative noise times |z|."""
    kinds = np.array([c["kind"][0] for c in channels])
    rel = np.array([float(noise[k]) for k in kinds])
    floor = np.where(kinds == "U", 1.0, POWER_FLOOR)
    return rel * np.maximum(np.abs(np.nan_to_num(z)), floor)


def pseudo_std(windows: Windows) -> np.ndarray:
    """Standard deviation ``(M,)`` of a pseudo-measurement (an entry filled in for a lost one): per channel, the RMS
    change between consecutive 15-minute samples of the training windows, what a value known only from its context
    can be off by."""
    return np.sqrt(np.mean(np.diff(np.asarray(windows.train, dtype=np.float64), axis=2) ** 2, axis=(0, 2)))


def estimate_states(
    windows: Windows, region: np.ndarray, n: int | None = None, pseudo: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WLS states ``(n, S, T)`` of the first test windows, the region's channels replaced by ``region`` ``(n, M, T)``
    (NaN: not received), which steps converged ``(n, T)`` (states are NaN where not), and the WLS objective
    J(x̂) = Σ ((z - h(x̂)) / σ)² of every step ``(n, T)``: the statistic of the residual (bad-data) test.

    ``pseudo`` (boolean ``(n, M, T)``) marks entries that were filled in for lost ones: they enter as
    pseudo-measurements with the standard deviation of :func:`pseudo_std` instead of the measurement noise."""
    from pfbook.power.estimation import wls_estimate

    if windows.source != "scada":
        raise ValueError("states are estimated from SCADA windows; PMU channels are states already")
    region = np.asarray(region, dtype=np.float64)
    n = len(region) if n is None else int(n)
    M, T = windows.shape
    if region.shape != (n, M, T):
        raise ValueError(f"region measurements must have shape ({n}, {M}, {T}); got {region.shape}")
    ds = windows.dataset
    full = np.asarray(ds.arrays["y0"], dtype=np.float64)  # (days, K, 96)
    series = full.transpose(1, 0, 2).reshape(full.shape[1], -1)  # (K, steps)
    steps = windows.test_steps[:n, None] + np.arange(T)[None, :]  # (n, T)
    z = series[:, steps].transpose(1, 2, 0).copy()  # (n, T, K)
    z[:, :, windows.channel_index] = region.transpose(0, 2, 1)
    z = z.reshape(n * T, -1)
    std = measurement_std(ds.channels, z, ds.meta["spec"]["noise"]).reshape(n, T, -1)
    if pseudo is not None:
        pseudo = np.asarray(pseudo, dtype=bool)
        if pseudo.shape != region.shape:
            raise ValueError(
                f"pseudo must have the shape of the region measurements {region.shape}; got {pseudo.shape}"
            )
        region_std = std[:, :, windows.channel_index]
        wide = np.maximum(region_std, pseudo_std(windows)[None, None, :])
        std[:, :, windows.channel_index] = np.where(pseudo.transpose(0, 2, 1), wide, region_std)
    res = wls_estimate(ds.grid, z, ds.channels, std.reshape(n * T, -1))
    ref = ds.grid.ref
    va = res.va - res.va[:, ref : ref + 1]
    st = np.concatenate([res.vm[:, windows.state_bus], va[:, windows.state_bus]], axis=1)
    st[~res.converged] = np.nan
    return st.reshape(n, T, -1).transpose(0, 2, 1), res.converged.reshape(n, T), res.objective.reshape(n, T)


def state_rmse(truth: np.ndarray, estimate: np.ndarray, weights: np.ndarray) -> float:
    """Eq. 36 on states: sqrt( 1/(S T) Σ_i m_i Σ_j (s_ij - s̃_ij)^2 ) over the scored states (m_i > 0) and the
    time steps whose estimate converged (NaN columns are left out; all NaN gives NaN)."""
    s, e = np.asarray(truth, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if s.shape != e.shape:
        raise ValueError(f"truth {s.shape} and estimate {e.shape} differ in shape")
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    s, e, w = s[..., keep, :], e[..., keep, :], w[keep]
    ok = np.isfinite(e).all(axis=-2)  # (..., T): steps that converged
    if not ok.any():
        return float("nan")
    sq = w[:, None] * (s - e) ** 2  # (..., S, T)
    return float(np.sqrt(np.mean(np.moveaxis(sq, -2, -1)[ok])))
