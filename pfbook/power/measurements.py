"""SCADA measurement data: a year of real load and renewable profiles, solved by AC power flow.

Profiles. :func:`simbench_profiles` reads the yearly profiles that the ``simbench`` package ships
inside its wheel (``simbench/networks/1-complete_data-mixed-all-0-sw/LoadProfile.csv`` and
``RESProfile.csv``: the year 2016 at 15 minutes, 35 136 steps, no network access). Each load
profile is divided by its annual maximum, so the case's nominal demand is the annual peak; each PV
(``PV1``-``PV8``) and wind (``WP1``-``WP12``) profile is divided by its maximum, so it is the output
per unit of installed capacity.

Mapping (:class:`ScadaSpec`, all deterministic given ``seed``):

* every load bus gets one load profile drawn with ``numpy.random.default_rng(seed)`` from
  ``load_profiles`` (default: simbench's aggregated HV/MV profiles that stay positive); reactive
  demand keeps the
  case's power factor (simbench's HV reactive profiles are net values with a different sign
  convention, so they are not used); the time stamps are simbench's (local time, 2016);
* ``n_renewable`` non-reference generators (those alone on their bus, largest ``pmax`` first) become
  renewable plants, alternately wind and PV with profiles drawn from ``wind_profiles``/``pv_profiles``;
  their capacity is shared so that installed renewables equal ``renewable_share`` x the total
  nominal demand; they inject ``capacity x profile`` and keep the generator's voltage set point
  (voltage-controlling plants: turning the largest machines into PQ injections makes some cases,
  e.g. case57 at winter peaks, lose voltage stability);
* the remaining (conventional) generators are rescaled every step by one factor so that they
  cover demand minus renewables, the reference bus absorbing the losses; scaling generation with
  load keeps the power flow solvable the whole year (scaling only the loads of large cases lets the
  slack absorb gigawatts and diverge).

Power flow. :func:`newton_pf` solves the AC power flow in polar coordinates for a whole batch of
time steps at once: chord iterations from the Jacobian of the batch's mean operating point (one
matrix product per iteration for the batch), then full Newton-Raphson (dense batched Jacobians) for
any step that has not converged; PV buses hold ``|V|`` at the case's set points, the reference bus
holds ``|V|`` and ``theta = 0``. Every step meets ``tol`` = 1e-10 p.u. or the dataset is refused.

Channels. For an area (default all buses; ``area_size=k`` takes the ``k`` buses nearest
``area_center`` by breadth-first search) the channels are, in this order: ``P_i`` and ``Q_i`` (net
injections of the area's buses), ``P_ij`` and ``Q_ij`` (from-end flows of branches with both ends
in the area), ``U_i`` (voltage magnitudes); ``meta["channels"]`` lists them. Measurement noise is
Gaussian with standard deviation ``noise[kind] x |z|`` (relative; defaults 1 % for powers, 0.2 % for
voltages). Windows are days: ``y0`` has shape ``(n_days, M, 96)``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pfbook.config import available_cpus
from pfbook.io import DatasetError, StoredDataset, atomic_write_json, atomic_write_npz, check_writable, sha256_file
from pfbook.power.datasets import _safe, grid_fingerprint
from pfbook.power.grids import Grid, load_grid

STEPS_PER_DAY = 96
SIMBENCH_CASE = "1-complete_data-mixed-all-0-sw"
# simbench's aggregated HV/MV load profiles that stay positive all year (hv_mixed2/3 are net of
# embedded generation and go negative, so they are left out of the default)
DEFAULT_LOAD_PROFILES = ("hv_mixed1", "hv_urban", "mv_rural", "mv_semiurb", "mv_urban", "mv_comm", "mv_add1", "mv_add2")
DEFAULT_PV_PROFILES = tuple(f"PV{i}" for i in range(1, 9))
DEFAULT_WIND_PROFILES = tuple(f"WP{i}" for i in range(1, 13))
FORMAT = 1


class ProfileError(DatasetError):
    """A load or renewable profile that is not available offline."""


# ---------------------------------------------------------------------- profiles


def simbench_profile_dir() -> Path:
    """Folder of simbench's shipped profile CSVs, or a ProfileError saying how to get them."""
    try:
        import simbench
    except ImportError:
        raise ProfileError(
            "the SCADA profiles come from the 'simbench' package, which is not installed; "
            "install pfbook's dependencies (pip install -e .)"
        ) from None
    folder = Path(simbench.__file__).parent / "networks" / SIMBENCH_CASE
    for name in ("LoadProfile.csv", "RESProfile.csv"):
        if not (folder / name).is_file():
            raise ProfileError(
                f"simbench {getattr(simbench, '__version__', '?')} ships no {name} under "
                f"{folder}; pfbook needs a simbench release that includes its profiles (>=1.5)"
            )
    return folder


@lru_cache(maxsize=8)
def _read_profiles(kind: str, names: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    folder = simbench_profile_dir()
    file = folder / ("LoadProfile.csv" if kind == "load" else "RESProfile.csv")
    header = pd.read_csv(file, sep=";", nrows=0).columns
    cols = [f"{n}_pload" if kind == "load" else n for n in names]
    missing = [n for n, c in zip(names, cols) if c not in header]
    if missing:
        avail = (
            sorted(c[:-6] for c in header if c.endswith("_pload"))
            if kind == "load"
            else [c for c in header if c != "time"]
        )
        raise ProfileError(
            f"{kind} profile(s) {', '.join(missing)} not in simbench's {file.name}; available: {', '.join(avail)}"
        )
    df = pd.read_csv(file, sep=";", usecols=["time", *cols])
    times = tuple(df["time"].astype(str))
    a = df[cols].to_numpy(dtype=float)
    peak = a.max(axis=0)
    if (peak <= 0).any():
        raise ProfileError(f"{kind} profile(s) {[n for n, p in zip(names, peak) if p <= 0]} are all zero")
    return a / peak, times


def simbench_profiles(kind: str, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Normalised profiles ``(35136, len(names))`` (each divided by its maximum) and the time stamps.

    ``kind`` is ``"load"`` (active-power load profiles such as ``"H0-A"`` or ``"hv_mixed1"``) or
    ``"res"`` (``"PV1"``-``"PV8"``, ``"WP1"``-``"WP12"``, ...).
    """
    if kind not in ("load", "res"):
        raise ValueError(f"profile kind must be 'load' or 'res'; got {kind!r}")
    a, times = _read_profiles(kind, tuple(names))
    return a.copy(), list(times)


# ---------------------------------------------------------------------- power flow


def newton_pf(
    Ybus,
    bus_type: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    vm0: np.ndarray,
    tol: float = 1e-10,
    max_iter: int = 20,
    chord_iter: int = 40,
) -> dict[str, np.ndarray]:
    """Batched AC power flow: chord iterations from a shared Jacobian, then Newton-Raphson where needed.

    ``p, q`` (B, n): specified net injections (p.u.; only those of PQ buses and the ``p`` of PV buses
    are used); ``vm0`` (B, n) or (n,): voltage magnitudes, held at PV and reference buses.
    ``bus_type``: 1 PQ, 2 PV, 3 reference (angle 0).

    Steps of a batch are close to each other (consecutive 15-minute steps), so the power flow of the
    batch's mean injection is solved by Newton first, its Jacobian is inverted once, and every step
    is iterated from that solution with this fixed Jacobian (``chord_iter`` iterations at most, each a
    matrix product for the whole batch). Steps that have not reached ``tol`` by then continue with full
    Newton-Raphson (dense batched Jacobians, ``max_iter`` iterations at most) from a flat start. The
    result meets ``tol`` on the max-norm mismatch either way. Returns ``vm, va`` (B, n), the resulting
    injections ``p, q`` at every bus, ``success`` (B,) and ``iterations`` (B,: chord + Newton).
    The iterations are those of the power-flow kernel, :func:`pfbook.power.powerflow.power_flow`.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from pfbook.power.powerflow import DenseKernel, bus_roles, power_flow

    _, pvpq, pq = bus_roles(bus_type)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=float))
    p, q = t(np.atleast_2d(p)), t(np.atleast_2d(q))
    # the matrices are small: one thread each is fastest, and many times faster on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            r = power_flow(DenseKernel.from_ybus(Ybus), p, q, t(vm0), pvpq, pq, tol, max_iter, chord_iter)
    finally:
        torch.set_num_threads(threads)
    return {k: v.numpy() for k, v in r.items()}


# ---------------------------------------------------------------------- spec


@dataclass(frozen=True)
class ScadaSpec:
    """What a SCADA dataset is made of; validated on construction."""

    grid: str
    start_day: int = 0
    n_days: int = 366
    n_renewable: int = 4
    renewable_share: float = 0.3
    area_center: int | None = None  # external bus number; None: the reference bus
    area_size: int | None = None  # None: every bus
    noise: dict = field(default_factory=lambda: {"P": 0.01, "Q": 0.01, "U": 0.002})
    load_profiles: tuple = DEFAULT_LOAD_PROFILES
    pv_profiles: tuple = DEFAULT_PV_PROFILES
    wind_profiles: tuple = DEFAULT_WIND_PROFILES
    seed: int = 0

    def __post_init__(self):
        days = 35136 // STEPS_PER_DAY
        if not (0 <= self.start_day < days) or not (1 <= self.n_days <= days - self.start_day):
            raise ValueError(
                f"days must lie within the profile year (366 days): start_day={self.start_day}, n_days={self.n_days}"
            )
        if self.n_renewable < 0:
            raise ValueError(f"n_renewable must be >= 0; got {self.n_renewable}")
        if not (0 <= self.renewable_share < 1):
            raise ValueError(f"renewable_share must lie in [0, 1); got {self.renewable_share}")
        if self.area_size is not None and self.area_size < 1:
            raise ValueError(f"area_size must be a positive number of buses; got {self.area_size}")
        bad = {k: v for k, v in self.noise.items() if k not in ("P", "Q", "U") or not (0 <= float(v) < 1)}
        if bad or set(self.noise) != {"P", "Q", "U"}:
            raise ValueError(f"noise must give relative standard deviations in [0, 1) for P, Q and U; got {self.noise}")
        for name in ("load_profiles", "pv_profiles", "wind_profiles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"{name} must name at least one profile")

    def key(self) -> str:
        d = asdict(self)
        return json.dumps(d, sort_keys=True)

    def stem(self) -> str:
        import hashlib

        h = hashlib.sha256(self.key().encode()).hexdigest()[:10]
        return f"scada-{_safe(self.grid)}-d{self.start_day}+{self.n_days}-{h}"


@dataclass
class Scenario:
    """The per-step bus injections of a spec (before the power flow)."""

    load_profile: list[str]  # per load (grid.load_bus order)
    renewable_gen: list[int]  # generator indices converted to renewables
    renewable_kind: list[str]  # "wind" / "pv"
    renewable_profile: list[str]
    renewable_capacity: np.ndarray  # p.u.
    load_factor: np.ndarray  # (steps, n_load)
    renewable_factor: np.ndarray  # (steps, n_ren)
    times: list[str]


def scenario(grid: Grid, spec: ScadaSpec) -> Scenario:
    """Profiles assigned to the grid's loads and renewables (deterministic given ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    s0, s1 = spec.start_day * STEPS_PER_DAY, (spec.start_day + spec.n_days) * STEPS_PER_DAY
    load_names = [spec.load_profiles[i] for i in rng.integers(0, len(spec.load_profiles), grid.n_load)]
    lp, times = simbench_profiles("load", spec.load_profiles)
    col = {n: i for i, n in enumerate(spec.load_profiles)}
    load_factor = lp[s0:s1][:, [col[n] for n in load_names]]
    counts = np.bincount(grid.gen_bus, minlength=grid.n_bus)
    cand = [
        g for g in np.argsort(-grid.pmax, kind="stable") if grid.gen_bus[g] != grid.ref and counts[grid.gen_bus[g]] == 1
    ]
    gens = sorted(int(g) for g in cand[: spec.n_renewable]) if spec.renewable_share > 0 else []
    kinds = ["wind" if i % 2 == 0 else "pv" for i in range(len(gens))]
    names = [str(rng.choice(spec.wind_profiles if k == "wind" else spec.pv_profiles)) for k in kinds]
    if gens:
        rp, _ = simbench_profiles("res", tuple(dict.fromkeys(names)))
        rcol = {n: i for i, n in enumerate(dict.fromkeys(names))}
        ren_factor = rp[s0:s1][:, [rcol[n] for n in names]]
    else:
        ren_factor = np.zeros((s1 - s0, 0))
    total = float(grid.load_p.sum())
    cap = np.full(len(gens), spec.renewable_share * total / max(len(gens), 1))
    return Scenario(load_names, gens, kinds, names, cap, load_factor, ren_factor, times[s0:s1])


def injections(grid: Grid, sc: Scenario) -> dict[str, np.ndarray]:
    """Per-step demand ``pd, qd`` (steps, n_bus), generation ``pg`` (steps, n_gen), specified net
    injections ``p, q`` (steps, n_bus), the power flow's ``bus_type`` and voltage set points ``vm0``."""
    steps = sc.load_factor.shape[0]
    pd = np.zeros((steps, grid.n_bus))
    qd = np.zeros((steps, grid.n_bus))
    pd[:, grid.load_bus] = grid.load_p * sc.load_factor
    qd[:, grid.load_bus] = grid.load_q * sc.load_factor
    ren = np.asarray(sc.renewable_gen, dtype=int)
    conv = np.setdiff1d(np.arange(grid.n_gen), ren)
    p_ren = sc.renewable_factor * sc.renewable_capacity
    pg0 = np.clip(grid.pg0[conv], 0, None)
    if pg0.sum() <= 0:
        pg0 = np.clip(grid.pmax[conv], 0, None)
    k = (pd.sum(axis=1) - p_ren.sum(axis=1)) / pg0.sum()
    pg = np.zeros((steps, grid.n_gen))
    pg[:, conv] = np.clip(k, 0, None)[:, None] * pg0
    pg[:, ren] = p_ren
    p = pg @ grid.Cg.T.toarray() - pd
    q = -qd
    bus_type = grid.bus_type.copy()
    vm0 = np.ones(grid.n_bus)
    vm0[grid.gen_bus] = grid.vg
    return dict(pd=pd, qd=qd, pg=pg, p=p, q=q, bus_type=bus_type, vm0=vm0)


def area_buses(grid: Grid, center: int | None = None, size: int | None = None) -> np.ndarray:
    """Bus indices of the area: the ``size`` buses nearest ``center`` (external number) by BFS."""
    if size is None or size >= grid.n_bus:
        return np.arange(grid.n_bus)
    ids = list(np.asarray(grid.bus_ids).tolist())
    if center is None:
        c = grid.ref
    elif center in ids:
        c = ids.index(center)
    else:
        raise ValueError(f"area_center {center} is not a bus of {grid.name}")
    adj: dict[int, set] = {i: set() for i in range(grid.n_bus)}
    for a, b in zip(grid.f, grid.t):
        adj[int(a)].add(int(b))
        adj[int(b)].add(int(a))
    order, seen = [c], {c}
    i = 0
    while i < len(order) and len(order) < size:
        for nb in sorted(adj[order[i]]):
            if nb not in seen:
                seen.add(nb)
                order.append(nb)
        i += 1
    return np.array(sorted(order[:size]))


def channel_layout(grid: Grid, buses: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Channel descriptions and the branches inside the area."""
    inside = np.zeros(grid.n_bus, bool)
    inside[buses] = True
    br = np.flatnonzero(inside[grid.f] & inside[grid.t])
    ids = np.asarray(grid.bus_ids)
    ch = [dict(kind="P_i", bus=int(ids[b])) for b in buses] + [dict(kind="Q_i", bus=int(ids[b])) for b in buses]
    ch += [
        dict(kind=k, branch=int(l), from_bus=int(ids[grid.f[l]]), to_bus=int(ids[grid.t[l]]))
        for k in ("P_ij", "Q_ij")
        for l in br
    ]
    ch += [dict(kind="U_i", bus=int(ids[b])) for b in buses]
    return ch, br


def channels_from_states(
    grid: Grid, buses: np.ndarray, branches: np.ndarray, vm: np.ndarray, va: np.ndarray
) -> np.ndarray:
    """Noise-free channel values ``(..., M)`` for states ``vm, va`` ``(..., n_bus)``."""
    V = vm * np.exp(1j * va)
    S = V * np.conj(V @ grid.Ybus.T.toarray())
    Sf = V[..., grid.f[branches]] * np.conj(V @ grid.Yf[branches].T.toarray())
    return np.concatenate([S.real[..., buses], S.imag[..., buses], Sf.real, Sf.imag, vm[..., buses]], axis=-1)


# ---------------------------------------------------------------------- generation


def _solve_days(grid: Grid, spec: ScadaSpec, days: list[int], part_path: str | None = None) -> dict:
    """Power flows of whole days (day indices relative to ``spec.start_day``)."""
    import dataclasses

    sc = scenario(grid, spec)
    rows = np.concatenate([np.arange(d * STEPS_PER_DAY, (d + 1) * STEPS_PER_DAY) for d in days])
    sc = dataclasses.replace(
        sc,
        load_factor=sc.load_factor[rows],
        renewable_factor=sc.renewable_factor[rows],
        times=[sc.times[i] for i in rows],
    )
    inj = injections(grid, sc)
    r = newton_pf(grid.Ybus, inj["bus_type"], inj["p"], inj["q"], inj["vm0"])
    out = dict(
        day=np.asarray(days),
        vm=r["vm"],
        va=r["va"],
        p=r["p"],
        q=r["q"],
        success=r["success"],
        iterations=r["iterations"],
    )
    if part_path is not None:
        atomic_write_npz(Path(part_path), out)
        return {"path": part_path}
    return out


class ScadaDataset(StoredDataset):
    """A SCADA dataset: arrays (``y0``, ``y0_clean``, ``vm``, ``va``, ...) and metadata ``meta``."""

    what = "SCADA dataset"
    sidecar_values = {"format": FORMAT, "kind": "scada"}
    sidecar_types = {
        **StoredDataset.sidecar_types,
        "grid": str,
        "spec": dict,
        "spec_key": str,
        "shape": dict,
        "channels": list,
        "bus_ids": list,
        "area_bus_ids": list,
        "load_profile": dict,
        "renewables": list,
    }

    @classmethod
    def layout(cls, meta: dict) -> dict[str, tuple]:
        """Windows ``y0`` (days, channels, steps of a day) and states (steps, buses), as ``shape`` gives them."""
        D, M, S = meta["shape"]["y0"]
        T, nb = meta["shape"]["states"]
        return dict(
            y0=(D, M, S),
            y0_clean=(D, M, S),
            vm=(T, nb),
            va=(T, nb),
            p=(T, nb),
            q=(T, nb),
            iterations=(T,),
            load_factor=(T, len(meta["load_profile"])),
            renewable_factor=(T, len(meta["renewables"])),
            area_bus=(len(meta["area_bus_ids"]),),
            area_branch=(None,),
        )

    @classmethod
    def consistency(cls, meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
        """``shape`` against the channel list, the bus order, the day length and the settings."""
        (D, M, S), (T, nb), spec = meta["shape"]["y0"], meta["shape"]["states"], meta["spec"]
        problems = []
        if M != len(meta["channels"]):
            problems.append(f"its 'shape' gives {M} channels, its 'channels' list {len(meta['channels'])}")
        if nb != len(meta["bus_ids"]):
            problems.append(f"its 'shape' gives states of {nb} buses, its 'bus_ids' {len(meta['bus_ids'])}")
        if S != STEPS_PER_DAY or T != D * S:
            problems.append(f"its 'shape' gives {D} days of {S} steps and {T} states; a day has {STEPS_PER_DAY}")
        for k, v in (("grid", meta["grid"]), ("n_days", D)):
            if k in spec and spec[k] != v:
                problems.append(f"it describes {k} {v!r} but its settings ('spec') say {spec[k]!r}")
        return problems

    @classmethod
    def describe(cls, meta: dict) -> str:
        D, M, _ = meta["shape"]["y0"]
        return f"{meta['grid']}: {D} day{'s' if D != 1 else ''}, {M} channels, {len(meta['bus_ids'])} buses"

    def __len__(self) -> int:
        return int(self.arrays["y0"].shape[0])

    def __repr__(self) -> str:
        return (
            f"ScadaDataset({self.meta['grid']}, {len(self)} days, M={self.arrays['y0'].shape[1]}, "
            f"path={str(self.path)!r})"
        )

    @property
    def channels(self) -> list[dict]:
        return self.meta["channels"]

    @property
    def grid(self) -> Grid:
        return load_grid(self.meta["grid"])

    @classmethod
    def load(cls, path: str | os.PathLike, expect: ScadaSpec | None = None) -> "ScadaDataset":
        return cls.read(path, None if expect is None else expect.key())


def scada_dataset(
    grid: str | Grid,
    *,
    start_day: int = 0,
    n_days: int = 366,
    n_renewable: int = 4,
    renewable_share: float = 0.3,
    area_center: int | None = None,
    area_size: int | None = None,
    noise: dict | None = None,
    load_profiles: Sequence[str] = DEFAULT_LOAD_PROFILES,
    pv_profiles: Sequence[str] = DEFAULT_PV_PROFILES,
    wind_profiles: Sequence[str] = DEFAULT_WIND_PROFILES,
    seed: int = 0,
    out_dir: str | os.PathLike = "data",
    workers: int | None = None,
    scheduler: Any = None,
    days_per_part: int = 8,
    progress: bool = True,
    overwrite: bool = False,
) -> ScadaDataset:
    """Generate (or load from cache) a SCADA dataset; see the module docstring for what it holds.

    Days are solved in parts of ``days_per_part`` days, in ``workers`` processes (default: the CPU
    cores) or on a Dask ``scheduler`` (address or ``distributed.Client``), with a progress bar. Parts
    land atomically in a folder beside the output, so an interrupted run resumes; the dataset itself
    is written atomically as ``<stem>.npz`` + ``<stem>.json`` (with the NPZ's SHA-256) and reused when
    the spec matches.
    """
    from tqdm.auto import tqdm

    g = grid if isinstance(grid, Grid) else load_grid(grid)
    spec = ScadaSpec(
        grid=g.name,
        start_day=start_day,
        n_days=n_days,
        n_renewable=n_renewable,
        renewable_share=renewable_share,
        area_center=area_center,
        area_size=area_size,
        noise=dict(noise) if noise is not None else {"P": 0.01, "Q": 0.01, "U": 0.002},
        load_profiles=tuple(load_profiles),
        pv_profiles=tuple(pv_profiles),
        wind_profiles=tuple(wind_profiles),
        seed=seed,
    )
    out_dir = Path(out_dir)
    check_writable(out_dir)
    path = out_dir / f"{spec.stem()}.npz"
    if path.is_file() and not overwrite:
        try:
            return ScadaDataset.load(path, expect=spec)
        except DatasetError:
            pass
    sc = scenario(g, spec)  # fails early and clearly if a profile is missing
    buses = area_buses(g, area_center, area_size)
    layout, branches = channel_layout(g, buses)

    parts_dir = out_dir / f".{spec.stem()}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    chunks = [list(range(d, min(d + days_per_part, n_days))) for d in range(0, n_days, days_per_part)]
    part_of = {c[0]: parts_dir / f"part-{c[0]:04d}-{c[-1]:04d}.npz" for c in chunks}
    t0 = time.perf_counter()
    workers = available_cpus() if workers is None else max(1, int(workers))
    with tqdm(total=n_days * STEPS_PER_DAY, desc=f"SCADA power flow {g.name}", unit="pf", disable=not progress) as bar:
        todo = []
        for c in chunks:
            p = part_of[c[0]]
            try:
                with np.load(p, allow_pickle=False) as z:
                    ok = list(z["day"]) == c
            except Exception:
                ok = False
            if ok:
                bar.update(len(c) * STEPS_PER_DAY)
            else:
                todo.append(c)
        jobs = [(c, str(part_of[c[0]])) for c in todo]
        if scheduler is not None:
            from distributed import Client, as_completed

            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            try:
                grid_f = client.scatter(g, broadcast=True)
                futs = {client.submit(_solve_days, grid_f, spec, c, p, pure=False): c for c, p in jobs}
                for fut in as_completed(futs):
                    fut.result()
                    bar.update(len(futs[fut]) * STEPS_PER_DAY)
            finally:
                if client is not scheduler:
                    client.close()
        elif workers <= 1 or len(jobs) <= 1:
            for c, p in jobs:
                _solve_days(g, spec, c, p)
                bar.update(len(c) * STEPS_PER_DAY)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = {pool.submit(_solve_days, g, spec, c, p): c for c, p in jobs}
                try:
                    for fut in as_completed(futs):
                        fut.result()
                        bar.update(len(futs[fut]) * STEPS_PER_DAY)
                except BaseException:
                    for fut in futs:
                        fut.cancel()
                    raise
    seconds = time.perf_counter() - t0
    res: dict[str, list] = {k: [] for k in ("vm", "va", "p", "q", "success", "iterations")}
    for c in chunks:
        with np.load(part_of[c[0]], allow_pickle=False) as z:
            for k in res:
                res[k].append(z[k])
    r = {k: np.concatenate(v) for k, v in res.items()}
    if not r["success"].all():
        bad = np.flatnonzero(~r["success"])
        raise DatasetError(
            f"the power flow of {g.name} did not converge at {len(bad)} of {r['success'].size} "
            f"steps (first: {sc.times[bad[0]]}); lower renewable_share or check the grid"
        )

    clean = channels_from_states(g, buses, branches, r["vm"], r["va"])  # (steps, M)
    rel = np.array([spec.noise[ch["kind"][0]] for ch in layout])
    noise_rng = np.random.default_rng([spec.seed, 1])
    noisy = clean + noise_rng.standard_normal(clean.shape) * rel * np.abs(clean)
    D, M = n_days, clean.shape[1]

    def win(a):
        return a.reshape(D, STEPS_PER_DAY, -1).transpose(0, 2, 1)

    arrays = dict(
        y0=win(noisy).astype(np.float32),
        y0_clean=win(clean).astype(np.float32),
        vm=r["vm"],
        va=r["va"],
        p=r["p"],
        q=r["q"],
        iterations=r["iterations"].astype(np.int16),
        load_factor=sc.load_factor.astype(np.float32),
        renewable_factor=sc.renewable_factor.astype(np.float32),
        area_bus=buses,
        area_branch=branches,
    )
    atomic_write_npz(path, arrays)
    ids = np.asarray(g.bus_ids)
    meta = dict(
        format=FORMAT,
        kind="scada",
        grid=g.name,
        grid_fingerprint=grid_fingerprint(g),
        spec=asdict(spec),
        spec_key=spec.key(),
        shape=dict(y0=[D, M, STEPS_PER_DAY], states=[D * STEPS_PER_DAY, g.n_bus]),
        channels=layout,
        bus_ids=ids.tolist(),
        area_bus_ids=ids[buses].tolist(),
        time_start=sc.times[0],
        time_stop=sc.times[-1],
        resolution_minutes=15,
        profile_source=f"simbench {_simbench_version()} ({SIMBENCH_CASE}/LoadProfile.csv, RESProfile.csv), "
        "year 2016, each profile divided by its maximum",
        load_profile={int(ids[b]): n for b, n in zip(g.load_bus, sc.load_profile)},
        renewables=[
            dict(gen=int(gi), bus=int(ids[g.gen_bus[gi]]), kind=k, profile=n, capacity_pu=float(c))
            for gi, k, n, c in zip(sc.renewable_gen, sc.renewable_kind, sc.renewable_profile, sc.renewable_capacity)
        ],
        noise=dict(model="gaussian, std = noise[kind] * |value|", **spec.noise),
        power_flow=dict(
            method="batched polar power flow: chord iterations from a shared Jacobian, Newton-Raphson where needed",
            tol=1e-10,
            max_iterations=int(r["iterations"].max()),
            seconds=seconds,
            per_second=D * STEPS_PER_DAY / max(seconds, 1e-9),
        ),
        units="per unit on the case's base MVA; angles in rad",
        sha256=sha256_file(path),
    )
    atomic_write_json(path.with_suffix(".json"), meta)
    import shutil

    shutil.rmtree(parts_dir, ignore_errors=True)
    return ScadaDataset(arrays, meta, path)


def _simbench_version() -> str:
    try:
        from importlib.metadata import version

        return version("simbench")
    except Exception:
        return "?"
