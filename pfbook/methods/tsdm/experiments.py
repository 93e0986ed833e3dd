"""The TSDM chapter's experiments: the corruptions of the tables (FDIA on states for SCADA), Tables I, III and IV
scored on states (eq. 36) and on measurements, the sweeps of Figs. 14-15, and pandapower's WLS state estimation
before and after recovery for the figures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.io import DatasetError
from pfbook.methods.tsdm.config import ATTACK_SPAN, SCADA_SCENARIOS, SCENARIOS
from pfbook.methods.tsdm.method import TSDM, Recovery
from pfbook.methods.tsdm.metric import weighted_rmse
from pfbook.methods.tsdm.states import POWER_FLOOR, estimate_states, state_rmse, state_weights
from pfbook.methods.tsdm.windows import Windows
from pfbook.power.corruptions import ATTACKS, LOSSES, STATE_ATTACKS, corrupt_batch, paper_magnitudes, state_fdia


# ---------------------------------------------------------------------------------------- corruptions
def corrupt_windows(
    windows: Windows, kind: str, ratio: "float | Sequence[float]", n: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, corrupted, mask)`` for the first ``n`` test windows; window ``i`` draws from
    ``default_rng([seed, i])``.

    ``kind`` ``"state step"``, ``"state ramp"``, ``"state random"`` (SCADA): an FDIA on a share ``ratio`` of the
    region's attackable states (:meth:`Windows.attackable_states`), |V| by 1-10 % and θ by 10-100 % of their
    values over half the window, carried into the measurements as h(x + c) - h(x)
    (:func:`~pfbook.power.corruptions.state_fdia`); the mask marks the measurement entries it changed. The other
    kinds are those of :mod:`pfbook.power.corruptions` applied to the channels, FDIA magnitudes as in the paper
    (1-10 % of a channel's scale, 10-100 % for angles); data loss writes NaN.
    """
    truth = windows.test if n is None else windows.test[:n]
    if len(truth) == 0:
        raise DatasetError("there are no test windows; prepare a larger dataset")
    if kind.startswith("state "):
        shape = kind.split(" ", 1)[1]
        if shape not in STATE_ATTACKS:
            raise ValueError(
                f"unknown FDIA on states {kind!r}; choose one of {', '.join('state ' + k for k in STATE_ATTACKS)}"
            )
        states = windows.test_states(len(truth))
        eligible = windows.attackable_states()
        nb = len(windows.state_bus)
        mags = paper_magnitudes(["U_i"] * nb + ["theta"] * nb)  # |V| 1-10 %, θ 10-100 %
        ratios = np.broadcast_to(np.asarray(ratio, dtype=float), (len(truth),))
        y, mask = np.empty_like(truth), np.zeros(truth.shape, dtype=bool)
        for i in range(len(truth)):
            c = state_fdia(
                shape,
                states[i],
                truth[i],
                lambda x, i=i: windows.measure(i, x),
                ratio=float(ratios[i]),
                magnitude=mags,
                rng=np.random.default_rng([seed, i]),
                eligible=eligible,
                span_share=ATTACK_SPAN,
            )
            y[i], mask[i] = c
        return truth, y, mask
    kw = {}
    if kind in ("step", "ramp", "random"):
        kw["magnitude"] = paper_magnitudes(windows.channels)
    elif kind not in ATTACKS + LOSSES:
        raise ValueError(f"unknown corruption {kind!r}")
    y, mask, _ = corrupt_batch(truth, kind, ratio, seed=seed, **kw)
    return truth, y, mask


def scenarios_for(windows: Windows) -> dict[str, str]:
    """The rows of the system's table: :data:`SCADA_SCENARIOS` (Table I) or :data:`SCENARIOS` (PMU, Table III)."""
    return dict(SCADA_SCENARIOS if windows.source == "scada" else SCENARIOS)


# ---------------------------------------------------------------------------------------- scoring
class Scorer:
    """Scores recovered windows of the first ``n`` test windows: eq. 36 on the states (SCADA: WLS states from
    the recovered measurements, :mod:`pfbook.methods.tsdm.states`) and on the measurement channels.

    PMU channels are themselves the dynamic states (U, θ, δ, E'_d, E'_q) and the outputs they determine, so a PMU
    system is scored on its channels: ``score(x)["states"]`` is then the channel error."""

    def __init__(self, windows: Windows, weights: np.ndarray, n: int | None = None):
        self.windows, self.weights = windows, np.asarray(weights, dtype=np.float64)
        self.n = len(windows.test) if n is None else min(int(n), len(windows.test))
        self.scada = windows.source == "scada"
        if self.scada:
            self.truth_states = windows.test_states(self.n)
            self.state_weights = state_weights(windows.train_states())

    def states(self, x: np.ndarray, lost: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """WLS states of recovered (or corrupted: NaN entries left out) region measurements, convergence and the
        residual-test statistic (:func:`~pfbook.methods.tsdm.states.estimate_states`); entries filled in where
        ``lost`` are pseudo-measurements."""
        return estimate_states(self.windows, x, self.n, pseudo=lost)

    def score(self, truth: np.ndarray, x: np.ndarray, lost: np.ndarray | None = None) -> dict[str, float]:
        """``{"states", "measurements", "converged"}``: eq. 36 on states (SCADA) and on channels (NaN where the
        input has lost entries), and the share of time steps whose state estimate converged. ``lost`` marks the
        entries that were lost (a method's values there enter the state estimate as pseudo-measurements)."""
        x = np.asarray(x, dtype=np.float64)
        meas = weighted_rmse(truth, x, self.weights) if np.isfinite(x).all() else float("nan")
        if not self.scada:
            return {"states": meas, "measurements": meas, "converged": 1.0}
        est, ok, _ = self.states(x, lost)
        return {
            "states": state_rmse(self.truth_states, est, self.state_weights),
            "measurements": meas,
            "converged": float(ok.mean()),
        }


#: reference columns of the tables: the input as received, and (SCADA) the measurements before the corruption
CORRUPTED, UNCORRUPTED = "corrupted", "uncorrupted"
#: the ablation column: Algorithm 1 taken literally (x_0' whole when under 10 % is flagged)
ALGORITHM1 = "TSDM, Algorithm 1"
#: the oracle column: stage 2 told the true corrupted entries
ORACLE = "TSDM, true mask"
#: the history column
HISTORY = "nearest training window"


@dataclass
class RecoveryTables:
    """What :func:`recovery_table` returns: eq. 36 on states (``states``; PMU: on channels), on measurement
    channels (``measurements``), seconds per window (``seconds``) and the share of converged state estimates
    (``converged``), each scenarios x methods."""

    states: pd.DataFrame
    measurements: pd.DataFrame
    seconds: pd.DataFrame
    converged: pd.DataFrame


def _as_array(out) -> np.ndarray:
    return np.asarray(out.x if isinstance(out, Recovery) else out, dtype=np.float64)


def recovery_table(
    methods: Mapping[str, Callable],
    windows: Windows,
    weights: np.ndarray,
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
    scenarios: Mapping[str, str] | None = None,
    oracles: Mapping[str, Callable] | None = None,
    progress: bool = False,
) -> RecoveryTables:
    """Tables I/III: eq. 36 per scenario (rows) and method (columns), on states and on measurements.

    ``methods`` map a name to ``f(y, mask)``: ``y`` ``(n, M, T)`` physical with NaN where lost, ``mask`` the lost
    entries for data-loss rows and ``None`` for attacks (an attack's location is unknown to a method); ``f``
    returns the repaired windows or a :class:`Recovery`. ``oracles`` are called ``f(y, true_mask)`` on every row
    (e.g. stage 2 told the true corrupted entries: the floor of any detector). The column ``"corrupted"`` scores
    the input as received (lost entries left out of the state estimate), ``"uncorrupted"`` (SCADA) the
    measurements before the corruption: the error of the estimator itself. On data-loss rows the values a method
    fills in enter the state estimate as pseudo-measurements (:func:`~pfbook.methods.tsdm.states.pseudo_std`).
    ``scenarios`` default to :func:`scenarios_for`.
    """
    from tqdm.auto import tqdm

    scenarios = scenarios_for(windows) if scenarios is None else dict(scenarios)
    scorer = Scorer(windows, weights, n)
    tables = {k: {} for k in ("states", "measurements", "seconds", "converged")}
    clean = None
    todo = [(label, kind) for label, kind in scenarios.items()]
    bar = tqdm(total=len(todo) * (len(methods) + len(oracles or {})), desc="recovery table", disable=not progress)
    for label, kind in todo:
        truth, y, mask = corrupt_windows(windows, kind, ratio, scorer.n, seed)
        cells = {CORRUPTED: (y, float("nan"))}
        if scorer.scada:
            clean = clean or scorer.score(truth, truth)
        for name, fn in methods.items():
            t0 = time.perf_counter()
            out = fn(y, mask if kind in LOSSES else None)
            cells[name] = (_as_array(out), (time.perf_counter() - t0) / len(truth))
            bar.update()
        for name, fn in (oracles or {}).items():
            t0 = time.perf_counter()
            out = fn(y, mask)
            cells[name] = (_as_array(out), (time.perf_counter() - t0) / len(truth))
            bar.update()
        lost = mask if kind in LOSSES else None
        for col, (x, sec) in cells.items():
            sc = scorer.score(truth, x, lost)
            tables["states"].setdefault(label, {})[col] = sc["states"]
            tables["measurements"].setdefault(label, {})[col] = sc["measurements"]
            tables["converged"].setdefault(label, {})[col] = sc["converged"]
            tables["seconds"].setdefault(label, {})[col] = sec
        if clean is not None:
            tables["states"][label][UNCORRUPTED] = clean["states"]
            tables["converged"][label][UNCORRUPTED] = clean["converged"]
    bar.close()
    frames = {k: pd.DataFrame(v).T for k, v in tables.items()}
    frames["seconds"] = frames["seconds"].drop(columns=[CORRUPTED])
    return RecoveryTables(**frames)


def speed_table(
    model: TSDM,
    windows: Windows,
    weights: np.ndarray,
    s_values: Sequence[int],
    kind: str | None = None,
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Table IV: eq. 36 (states; PMU: channels) and seconds per window of the two-stage recovery with DDPM on all
    N steps, plain DDIM on s steps and DDIM with the optimal variance (TSDM) on s steps, plus unguided DDPM
    samples. ``kind`` defaults to the step FDIA of the system's table. Columns ``model``, ``s``, ``rmse`` (states),
    ``measurements`` (channels), ``seconds``."""
    kind = scenarios_for(windows)["FDIA step"] if kind is None else kind
    scorer = Scorer(windows, weights, n)
    truth, y, mask = corrupt_windows(windows, kind, ratio, scorer.n, seed)
    m = mask if kind in LOSSES else None
    rows = []

    def row(name, s, x, sec):
        sc = scorer.score(truth, x)
        rows.append(dict(model=name, s=int(s), rmse=sc["states"], measurements=sc["measurements"], seconds=sec))

    t0 = time.perf_counter()
    free = model.dm.sample(
        len(truth),
        model.sampler("ddpm"),
        guidance=model.clamp(),
        generator=torch.Generator(device=model.dm.device).manual_seed(seed),
        denormalise=True,
    )
    sec = time.perf_counter() - t0
    row("DDPM, unguided", model.cfg.N, free.detach().double().cpu().numpy().reshape(truth.shape), sec / len(truth))
    r = model.recover(y, m, sampler="ddpm", seed=seed)
    row("DDPM", model.cfg.N, r.x, r.seconds / len(truth))
    for s in s_values:
        for name, kind_ in (("DDIM", "ddim"), ("TSDM", "tsdm")):
            r = model.recover(y, m, sampler=kind_, s=s, seed=seed)
            row(name, s, r.x, r.seconds / len(truth))
    return pd.DataFrame(rows)


def omega_sweep(
    model: TSDM,
    windows: Windows,
    weights: np.ndarray,
    omegas: Sequence[float],
    kinds: Sequence[str] | None = None,
    ratio: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig. 14(a): mean eq. 36 error (states; PMU: channels) of TSDM over FDIA step/ramp/random for each ω, with
    the outlier test recalibrated at every ω (:meth:`TSDM.threshold`); columns ``weighted RMSE`` and ``k``."""
    sc = scenarios_for(windows)
    kinds = [sc["FDIA step"], sc["FDIA ramp"], sc["FDIA random"]] if kinds is None else list(kinds)
    scorer = Scorer(windows, weights, n)
    data = [corrupt_windows(windows, k, ratio, scorer.n, seed) for k in kinds]
    out = {}
    for w in omegas:
        errs = []
        for t, y, _ in data:
            r = model.recover(y, None, omega=w, seed=seed)
            errs.append(scorer.score(t, r.x)["states"])
        out[float(w)] = {"weighted RMSE": float(np.mean(errs)), "k": r.k}
    return pd.DataFrame(out).T.rename_axis("ω")


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
    """Fig. 14(b): mean eq. 36 error (states; PMU: channels) of TSDM over RM/NM data loss, and seconds per
    window, for each R."""
    scorer = Scorer(windows, weights, n)
    data = [corrupt_windows(windows, k, ratio, scorer.n, seed) for k in kinds]
    out = {}
    for R in Rs:
        res = [
            (scorer.score(t, (r := model.recover(y, m, R=R, seed=seed)).x, m)["states"], r.seconds / len(t))
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
    kinds: Mapping[str, str] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig. 15: eq. 36 error (states; PMU: channels) against the modified ratio, per corruption family and method
    (long table, with the corrupted input as the method ``"corrupted"``). ``kinds`` default to the system's step
    FDIA and RM data loss."""
    if kinds is None:
        kinds = {"FDIA": scenarios_for(windows)["FDIA step"], "data loss": "rm"}
    scorer = Scorer(windows, weights, n)
    rows = []
    for family, kind in kinds.items():
        for ratio in ratios:
            truth, y, mask = corrupt_windows(windows, kind, ratio, scorer.n, seed)
            cells = {CORRUPTED: y}
            for name, fn in methods.items():
                cells[name] = _as_array(fn(y, mask if kind in LOSSES else None))
            lost = mask if kind in LOSSES else None
            for name, x in cells.items():
                err = scorer.score(truth, x, lost)["states"]
                rows.append(dict(family=family, ratio=float(ratio), method=name, rmse=err))
    return pd.DataFrame(rows)


BASELINES = ("LSTM", "ADMM", "VAE", "GAN")


def wins_table(tables: pd.DataFrame) -> pd.DataFrame:
    """Per system, how the paper's claims fare in a stack of Table I or III (:func:`tables_across`).

    ``tables`` is indexed by (system, scenario) with a column per method. One row per system: the number of
    scenarios, those where TSDM's error is at most every baseline's (``"TSDM best"``), the FDIA rows and those
    where TSDM's error is at most a third of the corrupted input's (``"FDIA <= corrupted / 3"``, when the column
    ``corrupted`` is there), and the smallest ratio min(VAE, GAN) / TSDM over the scenarios
    (``"VAE, GAN / TSDM (least)"``; the paper reports several times). Systems keep their order in ``tables``;
    an empty ``tables`` gives an empty frame.
    """
    cols = ["rows", "TSDM best", "FDIA rows", "FDIA <= corrupted / 3", "VAE, GAN / TSDM (least)"]
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
    if CORRUPTED in tables.columns:
        fdia = pd.Series(tables.index.get_level_values(1).str.startswith("FDIA"), index=tables.index)
        third = fdia & (tables["TSDM"] <= tables[CORRUPTED] / 3)
        out["FDIA rows"] = fdia.groupby(level=0, sort=False).sum()
        out["FDIA <= corrupted / 3"] = third.groupby(level=0, sort=False).sum()
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
                    sd = std[kind[0]] * max(abs(v), POWER_FLOOR if kind != "U_i" else 1.0) * scale
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
