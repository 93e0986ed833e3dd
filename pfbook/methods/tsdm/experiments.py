"""The TSDM chapter's experiments: Tables I, III and IV, the sweeps of Figs. 14-15, and WLS state estimation
before and after recovery."""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.io import DatasetError
from pfbook.methods.tsdm.config import SCENARIOS
from pfbook.methods.tsdm.method import TSDM, Recovery
from pfbook.methods.tsdm.metric import weighted_rmse
from pfbook.methods.tsdm.windows import Windows
from pfbook.power.corruptions import ATTACKS, LOSSES, corrupt_batch, paper_magnitudes


# ---------------------------------------------------------------------------------------- experiments
def corrupt_windows(
    windows: Windows, kind: str, ratio: "float | Sequence[float]", n: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, corrupted, mask)`` for the first ``n`` test windows: FDIA magnitudes as in the paper (1-10 % of
    a channel's scale, 10-100 % for angles); data loss writes NaN."""
    truth = windows.test if n is None else windows.test[:n]
    if len(truth) == 0:
        raise DatasetError("there are no test windows; prepare a larger dataset")
    kw = {}
    if kind in ("step", "ramp", "random"):
        kw["magnitude"] = paper_magnitudes(windows.channels)
    elif kind not in ATTACKS + LOSSES:
        raise ValueError(f"unknown corruption {kind!r}")
    y, mask, _ = corrupt_batch(truth, kind, ratio, seed=seed, **kw)
    return truth, y, mask


#: the column of a :class:`Recovery` with every entry stage 1 did not flag kept as measured (beyond the paper)
KEPT = "TSDM, unflagged kept"


def _run(
    name: str, method: Callable, y: np.ndarray, kind: str, mask: np.ndarray
) -> dict[str, tuple[np.ndarray, float]]:
    """Run one method; a method returning a :class:`Recovery` gives two columns (``name`` and :data:`KEPT`)."""
    t0 = time.perf_counter()
    out = method(y, mask if kind in LOSSES else None)
    sec = time.perf_counter() - t0
    if isinstance(out, Recovery):
        return {name: (out.x, sec), KEPT: (np.where(out.flagged, out.x, y), sec)}
    return {name: (np.asarray(out, dtype=np.float64), sec)}


def recovery_table(
    methods: Mapping[str, Callable],
    windows: Windows,
    weights: np.ndarray,
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
    scenarios: Mapping[str, str] = SCENARIOS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables I/III: weighted RMSE (eq. 36) per scenario (rows) and method (columns), and the seconds per window.

    ``methods`` map a name to ``f(y, mask)``: ``y`` ``(n, M, T)`` physical with NaN where lost, ``mask`` the lost
    entries for data-loss rows and ``None`` for attacks (an attack's location is unknown to a method); ``f``
    returns the repaired windows or a :class:`Recovery` (which adds the column :data:`KEPT`: the paper returns
    x_0' whole when stage 2 is skipped, this column keeps the unflagged entries as measured).
    The column "corrupted" scores the corrupted windows themselves (attacks only).
    """
    rows, secs = {}, {}
    for label, kind in scenarios.items():
        truth, y, mask = corrupt_windows(windows, kind, ratio, n, seed)
        row = {"corrupted": weighted_rmse(truth, y, weights) if kind not in LOSSES else float("nan")}
        srow = {}
        for name, fn in methods.items():
            for col, (x, sec) in _run(name, fn, y, kind, mask).items():
                row[col], srow[col] = weighted_rmse(truth, x, weights), sec / len(truth)
        rows[label], secs[label] = row, srow
    return pd.DataFrame(rows).T, pd.DataFrame(secs).T


def speed_table(
    model: TSDM,
    windows: Windows,
    weights: np.ndarray,
    s_values: Sequence[int],
    kind: str = "step",
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Table IV: weighted RMSE and seconds per window of the two-stage recovery with DDPM on all N steps, plain
    DDIM on s steps and DDIM with the optimal variance (TSDM) on s steps, plus unguided DDPM samples."""
    truth, y, mask = corrupt_windows(windows, kind, ratio, n, seed)
    m = mask if kind in LOSSES else None
    rows = []
    t0 = time.perf_counter()
    free = model.dm.sample(
        len(truth),
        model.sampler("ddpm"),
        guidance=model.clamp(),
        generator=torch.Generator(device=model.dm.device).manual_seed(seed),
        denormalise=True,
    )
    sec = time.perf_counter() - t0
    free = free.detach().double().cpu().numpy().reshape(truth.shape)
    rows.append(
        dict(model="DDPM, unguided", s=model.cfg.N, rmse=weighted_rmse(truth, free, weights), seconds=sec / len(truth))
    )
    r = model.recover(y, m, sampler="ddpm", seed=seed)
    rows.append(
        dict(model="DDPM", s=model.cfg.N, rmse=weighted_rmse(truth, r.x, weights), seconds=r.seconds / len(truth))
    )
    for s in s_values:
        for name, kind_ in (("DDIM", "ddim"), ("TSDM", "tsdm")):
            r = model.recover(y, m, sampler=kind_, s=s, seed=seed)
            rows.append(
                dict(model=name, s=int(s), rmse=weighted_rmse(truth, r.x, weights), seconds=r.seconds / len(truth))
            )
    return pd.DataFrame(rows)


def omega_sweep(
    model: TSDM,
    windows: Windows,
    weights: np.ndarray,
    omegas: Sequence[float],
    kinds: Sequence[str] = ("step", "ramp", "random"),
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> pd.Series:
    """Fig. 14(a): mean weighted RMSE of TSDM over FDIA step/ramp/random for each ω."""
    data = [corrupt_windows(windows, k, ratio, n, seed) for k in kinds]
    out = {}
    for w in omegas:
        out[float(w)] = float(
            np.mean([weighted_rmse(t, model.recover(y, None, omega=w, seed=seed).x, weights) for t, y, _ in data])
        )
    return pd.Series(out, name="weighted RMSE").rename_axis("ω")


def resample_sweep(
    model: TSDM,
    windows: Windows,
    weights: np.ndarray,
    Rs: Sequence[int],
    kinds: Sequence[str] = ("rm", "nm"),
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig. 14(b): mean weighted RMSE of TSDM over RM/NM data loss, and seconds per window, for each R."""
    data = [corrupt_windows(windows, k, ratio, n, seed) for k in kinds]
    out = {}
    for R in Rs:
        res = [
            (weighted_rmse(t, (r := model.recover(y, m, R=R, seed=seed)).x, weights), r.seconds / len(t))
            for t, y, m in data
        ]
        out[int(R)] = {
            "weighted RMSE": float(np.mean([e for e, _ in res])),
            "seconds": float(np.mean([s for _, s in res])),
        }
    return pd.DataFrame(out).T.rename_axis("R")


def ratio_sweep(
    methods: Mapping[str, Callable],
    windows: Windows,
    weights: np.ndarray,
    ratios: Sequence[float],
    kinds: Mapping[str, str] = {"FDIA": "step", "data loss": "rm"},
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig. 15: weighted RMSE against the modified ratio, per corruption family and method (long table)."""
    rows = []
    for family, kind in kinds.items():
        for ratio in ratios:
            truth, y, mask = corrupt_windows(windows, kind, ratio, n, seed)
            for name, fn in methods.items():
                for col, (x, _) in _run(name, fn, y, kind, mask).items():
                    rows.append(
                        dict(family=family, ratio=float(ratio), method=col, rmse=weighted_rmse(truth, x, weights))
                    )
    return pd.DataFrame(rows)


BASELINES = ("LSTM", "ADMM", "VAE", "GAN")


def wins_table(tables: pd.DataFrame) -> pd.DataFrame:
    """Per system, how the paper's claims fare in a stack of Table I or III (:func:`tables_across`).

    ``tables`` is indexed by (system, scenario) with a column per method. One row per system: the number of
    scenarios, those where TSDM's error is at most every baseline's (``"TSDM best"``) and the same for
    TSDM with unflagged entries kept (``"kept best"``, when that column is there), and the smallest ratio
    min(VAE, GAN) / TSDM over the scenarios (``"VAE, GAN / TSDM (least)"``; the paper reports several times).
    Systems keep their order in ``tables``; an empty ``tables`` gives an empty frame.
    """
    cols = ["rows", "TSDM best", "kept best", "VAE, GAN / TSDM (least)"]
    if tables.empty:
        return pd.DataFrame(columns=cols)
    missing = [c for c in (*BASELINES, "TSDM") if c not in tables.columns]
    if missing:
        raise ValueError(f"the tables have no column(s) {', '.join(missing)}")
    level = tables.index.get_level_values(0)
    order = list(dict.fromkeys(level))
    by = tables.groupby(level=0, sort=False)
    base = tables[list(BASELINES)].min(axis=1)
    out = pd.DataFrame({"rows": by.size(), "TSDM best": (tables["TSDM"] <= base).groupby(level=0, sort=False).sum()})
    if KEPT in tables.columns:
        out["kept best"] = (tables[KEPT] <= base).groupby(level=0, sort=False).sum()
    out["VAE, GAN / TSDM (least)"] = (
        (tables[["VAE", "GAN"]].min(axis=1) / tables["TSDM"]).groupby(level=0, sort=False).min()
    )
    out.index.name = tables.index.names[0]
    return out.reindex(order)


# ---------------------------------------------------------------------------------------- state estimation
def state_estimation(
    windows: Windows,
    variants: Mapping[str, np.ndarray],
    window: int = 0,
    steps: Sequence[int] | None = None,
    std: Mapping[str, float] | None = None,
    return_states: bool = False,
):
    """WLS static state estimation (pandapower's ``estimate``) of SCADA time steps of one test window.

    Every variant maps a name to the region's measurements of that window ``(M, T)`` (NaN: not received); the
    channels outside the region come from the uncorrupted dataset. Measurements are every bus's P_i, Q_i
    (load convention, MW/Mvar) and U_i; branch flows are left out (pandapower's line numbering differs from the
    case's branch order once transformers are split off). Returns, per variant, the RMSE over buses and steps of
    |V| (p.u.) and of θ (degrees, relative to the reference bus) against the power-flow states, and the share of
    steps that converged. With ``return_states`` also the states themselves: ``{"power flow": ..., name: ...}``,
    each ``{"vm": (steps, buses), "va": (steps, buses)}`` (θ in degrees relative to the reference bus; NaN where
    an estimate did not converge), and the steps, for :func:`plot_states`.
    """
    if windows.source != "scada":
        raise ValueError("state estimation needs SCADA windows (bus injections and voltages)")
    import warnings

    from pandapower.converter.pypower import from_ppc
    from pandapower.estimation import estimate

    ds = windows.dataset
    grid = ds.grid
    std = {"P": 0.01, "Q": 0.01, "U": 0.002} if std is None else dict(std)
    full = np.asarray(ds.arrays["y0"], dtype=np.float64)
    series = full.transpose(1, 0, 2).reshape(full.shape[1], -1)  # (all channels, steps)
    vm_true, va_true = np.asarray(ds.arrays["vm"]), np.asarray(ds.arrays["va"])
    start = int(windows.test_steps[window])
    T = windows.shape[1]
    steps = list(range(T)) if steps is None else [int(s) for s in steps]
    chans = ds.channels
    pos = {(c["kind"], c.get("bus")): i for i, c in enumerate(chans) if c["kind"] in ("P_i", "Q_i", "U_i")}
    region_row = {int(ci): r for r, ci in enumerate(windows.channel_index)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = from_ppc(grid.to_ppc(), f_hz=60)
    base = grid.base_mva
    cols, dtypes = list(net.measurement.columns), net.measurement.dtypes.to_dict()
    rows = []
    ref = grid.ref
    states = {
        "power flow": {
            "vm": vm_true[[start + j for j in steps]],
            "va": np.degrees(np.stack([va_true[start + j] - va_true[start + j][ref] for j in steps])),
        }
    }

    def rmse(est: Mapping[str, np.ndarray], key: str, ok: np.ndarray) -> float:
        """Over buses and the converged steps, against the power flow (NaN if no step converged)."""
        err = est[key][ok] - states["power flow"][key][ok]
        return float(np.sqrt(np.mean(err**2))) if ok.any() else float("nan")

    for name, region in variants.items():
        converged = np.zeros(len(steps), dtype=bool)
        states[name] = {key: np.full((len(steps), grid.n_bus), np.nan) for key in ("vm", "va")}
        for row, j in enumerate(steps):
            k = start + j
            meas = []
            for b, bus_id in enumerate(np.asarray(grid.bus_ids).tolist()):
                for kind, mtype, scale, sign in (
                    ("P_i", "p", base, -1.0),
                    ("Q_i", "q", base, -1.0),
                    ("U_i", "v", 1.0, 1.0),
                ):
                    ci = pos[(kind, bus_id)]
                    v = region[region_row[ci], j] if ci in region_row else series[ci, k]
                    if not np.isfinite(v):
                        continue
                    sd = std[kind[0]] * max(abs(v), 1e-3 if kind != "U_i" else 1.0) * scale
                    meas.append(
                        {
                            "name": None,
                            "measurement_type": mtype,
                            "element_type": "bus",
                            "element": b + 1,
                            "value": sign * v * scale,
                            "std_dev": sd,
                            "side": None,
                        }
                    )
            net.measurement = pd.DataFrame(meas, columns=cols).astype(dtypes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    success = estimate(net, init="flat", tolerance=1e-6, maximum_iterations=50)
                except Exception:
                    success = False
            if not success:
                continue
            converged[row] = True
            est = net.res_bus_est.loc[np.arange(1, grid.n_bus + 1)]
            # angles relative to the reference bus: the dataset's power flow puts it at 0, pandapower at the
            # case's own reference angle (30° in case118)
            va_est = est["va_degree"].to_numpy()
            states[name]["vm"][row], states[name]["va"][row] = est["vm_pu"].to_numpy(), va_est - va_est[ref]
        rows.append(
            {
                "measurements": name,
                "RMSE |V| (p.u.)": rmse(states[name], "vm", converged),
                "RMSE θ (deg)": rmse(states[name], "va", converged),
                "converged": float(converged.mean()),
            }
        )
    table = pd.DataFrame(rows).set_index("measurements")
    return (table, states, steps) if return_states else table
