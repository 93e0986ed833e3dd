"""TSDM's data: measurement windows y_0 ∈ R^{M×T} of one region of a system, split in time.

For SCADA the channels P_i, Q_i, U_i of the ``region`` buses nearest the reference bus and P_ij, Q_ij of the
branches between them, T = 96 samples of 15 min; for PMU the channels of the first ``region`` generators with a PMU
(P_G, Q_G, I, γ, δ, E'_d, E'_q) and U, θ of their terminal buses, T samples at 30 Hz. Windows are split into
training, calibration and test windows: SCADA in time, by day; PMU by event, a seeded split stratified by the kind of
event and, for the events at or near the region, by where they hit it (:func:`event_strata`, :func:`split_events`), so
that the three parts come from the same event distribution and every kind of excursion of the test events has
training examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pfbook.config import check_profile, data_dir
from pfbook.io import DatasetError
from pfbook.methods.tsdm.config import PMU_EVENTS, SCADA_DAYS, TSDMConfig


# ---------------------------------------------------------------------------------------- data
@dataclass
class Windows:
    """Measurement windows of one region, in physical units (per unit, rad), split for training and testing.

    ``train``/``calibration``/``test`` are ``(n, M, T)``; ``channels`` describes the M rows; ``test_steps`` holds,
    for SCADA, the dataset time step of each test window's first column (for the state estimation; for PMU, the
    dataset's event index x 10^6 + first sample), and ``channel_index`` the rows of the dataset's channel list the
    region keeps. ``split`` records, for PMU, which events went where (see :func:`_pmu_windows`); None for SCADA.
    """

    system: str
    source: str
    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    channels: list[dict]
    channel_index: np.ndarray
    test_steps: np.ndarray
    dataset: object = None
    state_bus: np.ndarray | None = None  # SCADA: the region's buses (internal indices), whose |V| and θ are its states
    train_steps: tuple[int, int] | None = None  # SCADA: the dataset steps of the training days
    split: dict | None = None

    # ------------------------------------------------------------------ states (SCADA)
    def _need_states(self) -> None:
        if self.source != "scada" or self.state_bus is None:
            raise ValueError(
                "states are defined for SCADA windows (bus voltages of the region); PMU channels are states"
            )

    def state_names(self) -> list[str]:
        """``|V| bus i`` then ``θ bus i`` for the region's buses: the rows of :meth:`test_states`."""
        self._need_states()
        ids = np.asarray(self.dataset.grid.bus_ids)[self.state_bus]
        return [f"|V| bus {b}" for b in ids] + [f"θ bus {b}" for b in ids]

    def _states_at(self, steps: np.ndarray) -> np.ndarray:
        """(|V|, θ - θ_ref) of the region's buses at dataset ``steps`` (..., ) -> (..., S)."""
        ds, ref = self.dataset, self.dataset.grid.ref
        vm, va = np.asarray(ds.arrays["vm"])[steps], np.asarray(ds.arrays["va"])[steps]
        va = va - va[..., ref : ref + 1]
        return np.concatenate([vm[..., self.state_bus], va[..., self.state_bus]], axis=-1)

    def test_states(self, n: int | None = None) -> np.ndarray:
        """The power-flow states ``(n, S, T)`` of the first ``n`` test windows (|V| in p.u., θ in rad relative to
        the reference bus); the measurements of :attr:`test` were made from them."""
        self._need_states()
        starts = self.test_steps if n is None else self.test_steps[:n]
        steps = starts[:, None] + np.arange(self.shape[1])[None, :]
        return self._states_at(steps).transpose(0, 2, 1)

    def train_states(self) -> np.ndarray:
        """The states ``(S, steps)`` of the training days (for the weights of eq. 36)."""
        self._need_states()
        return self._states_at(np.arange(*self.train_steps)).T

    def attackable_states(self) -> np.ndarray:
        """Boolean ``(S,)``: the states an attacker can shift through the region's measurements alone.

        Those whose shift moves only channels the windows keep (so ``h(x + c) - h(x)`` touches nothing outside
        the region, and no zero injection of a bus without load or generation, which the windows drop as
        constant), found by shifting each state once; the reference bus's angle, 0 by definition, is not one."""
        self._need_states()
        grid = self.dataset.grid
        out = np.concatenate([np.ones(len(self.state_bus), bool), self.state_bus != grid.ref])
        # a shift must move only channels the windows keep: not those of buses outside the region, nor one the
        # windows leave out as constant (a bus without load or generation injects exactly 0, which gives it away)
        from pfbook.power.measurements import channels_from_states

        ds = self.dataset
        buses, branches = np.asarray(ds.arrays["area_bus"]), np.asarray(ds.arrays["area_branch"])
        vm0, va0 = np.array(ds.arrays["vm"][self.train_steps[0]]), np.array(ds.arrays["va"][self.train_steps[0]])
        base = channels_from_states(grid, buses, branches, vm0, va0)
        kept = np.zeros(base.shape[-1], dtype=bool)
        kept[self.channel_index] = True
        nb = len(self.state_bus)
        for i in np.flatnonzero(out):
            vm, va = vm0.copy(), va0.copy()
            b = self.state_bus[i % nb]
            if i < nb:
                vm[b] *= 1.05
            else:
                va[b] += 0.05
            moved = np.abs(channels_from_states(grid, buses, branches, vm, va) - base) > 1e-12
            out[i] = not (moved & ~kept).any()
        return out

    def measure(self, window: int, states: np.ndarray) -> np.ndarray:
        """The noise-free region channels ``(M, T)`` of test window ``window`` if the region's states were
        ``states`` ``(S, T)`` (the other buses' states as in the power flow): the measurement function h."""
        from pfbook.power.measurements import channels_from_states

        self._need_states()
        ds, T, nb = self.dataset, self.shape[1], len(self.state_bus)
        steps = self.test_steps[window] + np.arange(T)
        vm, va = np.array(ds.arrays["vm"])[steps], np.array(ds.arrays["va"])[steps]
        ref = ds.grid.ref
        states = np.asarray(states, dtype=np.float64)
        vm[:, self.state_bus] = states[:nb].T
        va[:, self.state_bus] = states[nb:].T + va[:, ref : ref + 1]
        full = channels_from_states(
            ds.grid, np.asarray(ds.arrays["area_bus"]), np.asarray(ds.arrays["area_branch"]), vm, va
        )
        return full[:, self.channel_index].T

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.train.shape[1:])

    def describe(self) -> str:
        M, T = self.shape
        return (
            f"{self.system} ({self.source.upper()}): M = {M} channels x T = {T} samples; "
            f"{len(self.train)} training, {len(self.calibration)} calibration, {len(self.test)} test windows"
        )

    def channel_names(self) -> list[str]:
        return [channel_name(c) for c in self.channels]


def channel_name(ch: dict) -> str:
    if "branch" in ch:
        return f"{ch['kind']} {ch['from_bus']}-{ch['to_bus']}"
    if "gen" in ch and ch["kind"] not in ("U", "theta"):
        return f"{ch['kind']} {ch['gen']}"
    return f"{ch['kind']} bus {ch['bus']}"


def _slide(series: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``(n, M, window)`` cut from ``(M, L)`` every ``stride`` steps, and their start indices."""
    L = series.shape[1]
    if L < window:
        return np.zeros((0, series.shape[0], window)), np.zeros(0, dtype=int)
    starts = np.arange(0, L - window + 1, stride)
    return np.stack([series[:, s : s + window] for s in starts]), starts


def _split_counts(n: int, calibration: float, test: float) -> tuple[int, int, int]:
    n_test = max(1, int(round(test * n)))
    n_cal = max(1, int(round(calibration * n)))
    n_train = n - n_test - n_cal
    if n_train < 1:
        raise DatasetError(
            f"{n} days/events are too few to split into training, calibration and test parts; "
            f"prepare a larger dataset (profile 'default')"
        )
    return n_train, n_cal, n_test


#: seed of the PMU event split (fixed, so that priors trained with different seeds see the same events)
SPLIT_SEED = 0

#: events this many branches or fewer from a region generator's terminal bus are "near" the region
NEAR_HOPS = 2


def _event_buses(event: dict, topology: dict) -> list[str]:
    kind, element = event["kind"], str(event["element"])
    if kind == "fault":
        return [element]
    if kind == "line_trip":
        return list(topology["lines"].get(element, ()))
    where = topology["loads" if kind == "load_change" else "generators"].get(element)
    return [where] if where is not None else []


def _nearest_region_bus(region_buses: Sequence[str], topology: dict, hops: int) -> dict[str, str]:
    """Bus -> the region terminal bus nearest to it, for the buses at most ``hops`` branches away (breadth-first
    from all region buses at once; ties go to the region bus listed first)."""
    adj: dict[str, list[str]] = {}
    for a, b in topology["lines"].values():
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    nearest = {b: b for b in dict.fromkeys(region_buses)}
    front = list(nearest)
    for _ in range(hops):
        nxt = []
        for b in front:
            for c in adj.get(b, ()):
                if c not in nearest:
                    nearest[c] = nearest[b]
                    nxt.append(c)
        front = nxt
    return nearest


def event_strata(
    events: Sequence[dict], region: Sequence[dict], topology: dict | None = None, hops: int = NEAR_HOPS
) -> list[tuple[str, ...]]:
    """The stratum of each PMU event for :func:`split_events`.

    ``region`` lists the region's generators (``{"gen", "bus"}``, as in a dataset's ``meta["generators"]``). A trip
    of a region generator is ``("gen_trip", <generator>)``: its own channels (P_G, I, δ, E'_d, E'_q) do what no other
    event shows. An event at most ``hops`` branches from a region terminal bus (a fault at a bus, a line with an end,
    a load or a tripped generator there; ``topology`` as :func:`pfbook.power.pmu.topology` gives it) is
    ``(<kind>, "near bus <b>")``, ``b`` the nearest region bus: its largest excursions are on the channels of the
    generators there. Every other event is ``(<kind>,)``. Without ``topology`` only the region's generator trips are
    told apart.
    """
    gens = {str(g["gen"]) for g in region}
    near = _nearest_region_bus([str(g["bus"]) for g in region], topology, hops) if topology else {}
    out = []
    for e in events:
        kind = str(e["kind"])
        if kind == "gen_trip" and str(e["element"]) in gens:
            out.append((kind, str(e["element"])))
            continue
        hits = [near[b] for b in _event_buses(e, topology) if b in near] if topology else []
        out.append((kind, f"near bus {hits[0]}") if hits else (kind,))
    return out


def _apportion(
    total: int, ideal: np.ndarray, cap: np.ndarray, order: np.ndarray, start: np.ndarray | None = None
) -> np.ndarray:
    """Whole counts per group, at most ``cap``, adding up to ``total`` where the caps allow: ``start`` (default: the
    floors of ``ideal``), then one at a time to the group furthest below its ideal share (ties: the one first in
    ``order``, a ranking of the groups)."""
    q = np.minimum(np.floor(ideal + 1e-9).astype(int), cap) if start is None else start.copy()
    while q.sum() < total and (q < cap).any():
        gap = np.where(q < cap, ideal - q, -np.inf)
        best = np.flatnonzero(gap == gap.max())
        q[best[np.argmin(order[best])]] += 1
    return q


def _quotas(n_test: int, n_cal: int, size: np.ndarray, room: np.ndarray, order: np.ndarray):
    """Test and calibration counts per group of ``size`` events, shares of ``n_test``/``n_cal`` in proportion to the
    sizes; at most ``room`` of a group's events first, more only where the totals need them."""
    ideal_test, ideal_cal = size * n_test / size.sum(), size * n_cal / size.sum()
    q_test = _apportion(n_test, ideal_test, room, order)
    q_cal = _apportion(n_cal, ideal_cal, room - q_test, order)
    q_test = _apportion(n_test, ideal_test, size - q_cal, order, start=q_test)  # no-ops unless the events are
    q_cal = _apportion(n_cal, ideal_cal, size - q_test, order, start=q_cal)  # too few
    return q_test, q_cal


def split_events(
    strata: Sequence[tuple], calibration: float, test: float, seed: int = SPLIT_SEED
) -> dict[str, np.ndarray | list]:
    """A seeded split of events into ``train``, ``calibration`` and ``test`` (ascending positions in ``strata``),
    stratified by ``strata`` (one tuple per event, its kind first; see :func:`event_strata`).

    The part sizes are those of the split in time (:func:`_split_counts`). They are shared out first among the
    kinds (``stratum[0]``), then within each kind among its strata, in proportion to their sizes (largest
    remainders); every stratum keeps at least one event for training, so every stratum of the calibration and test
    parts has training examples (a stratum of one event is a training event). Which of a stratum's events go where
    is drawn from ``default_rng(seed)``. Only when the events are too few for that (every stratum a single event, as
    in the ``ci`` profile) do strata give up their last event; they are listed under ``unmatched``. The same strata
    and seed give the same split.
    """
    n = len(strata)
    n_train, n_cal, n_test = _split_counts(n, calibration, test)
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[int]] = {}
    for i in rng.permutation(n):
        groups.setdefault(tuple(strata[i]), []).append(int(i))
    keys = sorted(groups, key=repr)
    order = rng.permutation(len(keys))  # ranks that break ties between strata
    size = np.array([len(groups[k]) for k in keys])
    kinds = sorted({k[0] for k in keys}, key=repr)
    of_kind = [np.array([j for j, k in enumerate(keys) if k[0] == kind]) for kind in kinds]
    k_test, k_cal = _quotas(
        n_test,
        n_cal,
        np.array([size[j].sum() for j in of_kind]),
        np.array([(size[j] - 1).sum() for j in of_kind]),
        np.array([order[j].min() for j in of_kind]),
    )
    q_test, q_cal = np.zeros(len(keys), dtype=int), np.zeros(len(keys), dtype=int)
    for j, t, c in zip(of_kind, k_test, k_cal):
        q_test[j], q_cal[j] = _quotas(int(t), int(c), size[j], size[j] - 1, order[j])
    out: dict[str, list[int]] = {"train": [], "calibration": [], "test": []}
    for k, a, b in zip(keys, q_test, q_cal):
        members = groups[k]
        out["test"] += members[:a]
        out["calibration"] += members[a : a + b]
        out["train"] += members[a + b :]
    split: dict[str, np.ndarray | list] = {part: np.sort(np.asarray(v, dtype=int)) for part, v in out.items()}
    split["unmatched"] = [k for k, a, b in zip(keys, q_test, q_cal) if a + b == len(groups[k])]
    return split


def _constant(train: np.ndarray) -> np.ndarray:
    """Channels that never change over the training windows (zero-injection buses, the reference angle)."""
    sd = train.std(axis=(0, 2))
    return sd <= 1e-7 * (1 + np.abs(train).mean(axis=(0, 2)))


def scada_data(system: str, profile: str, out_dir: Path | None = None, progress: bool = False):
    """The SCADA dataset of ``system`` with the days of ``profile`` (the one ``pfbook data prepare`` makes)."""
    from pfbook.power.measurements import scada_dataset

    start_day, n_days = SCADA_DAYS[check_profile(profile)]
    return scada_dataset(
        system,
        start_day=start_day,
        n_days=n_days,
        seed=0,
        out_dir=out_dir if out_dir is not None else data_dir(),
        progress=progress,
    )


def pmu_data(system: str, profile: str, out_dir: Path | None = None, progress: bool = False):
    """The PMU dataset of ``system`` with the events of ``profile`` (the one ``pfbook data prepare`` makes)."""
    from pfbook.power.pmu import pmu_dataset

    n_events, t_end = PMU_EVENTS[check_profile(profile)]
    return pmu_dataset(
        system, n_events, t_end=t_end, seed=0, out_dir=out_dir if out_dir is not None else data_dir(), progress=progress
    )


def load_windows(cfg: TSDMConfig, dataset=None, out_dir: Path | None = None, progress: bool = False) -> Windows:
    """Cut the configured region's windows from the prepared dataset (generated and cached if missing)."""
    if cfg.source == "scada":
        ds = dataset if dataset is not None else scada_data(cfg.system, cfg.data_profile, out_dir, progress)
        return _scada_windows(cfg, ds)
    ds = dataset if dataset is not None else pmu_data(cfg.system, cfg.data_profile, out_dir, progress)
    return _pmu_windows(cfg, ds)


def _scada_windows(cfg: TSDMConfig, ds) -> Windows:
    from pfbook.power.measurements import area_buses

    grid = ds.grid
    area = set(np.asarray(grid.bus_ids)[area_buses(grid, None, cfg.region_size)].tolist())
    keep = [
        i
        for i, c in enumerate(ds.channels)
        if (c.get("bus") in area) or ("branch" in c and c["from_bus"] in area and c["to_bus"] in area)
    ]
    y = np.asarray(ds.arrays["y0"], dtype=np.float64)[:, keep]  # (days, M, 96)
    D = y.shape[0]
    n_train, n_cal, n_test = _split_counts(D, cfg.calibration_fraction, cfg.test_fraction)
    series = y.transpose(1, 0, 2).reshape(len(keep), -1)  # (M, D*96), days are consecutive
    steps_per_day = y.shape[2]
    cut = np.cumsum([0, n_train, n_cal, n_test]) * steps_per_day
    if cfg.window > n_train * steps_per_day:
        raise DatasetError(f"a window of {cfg.window} steps is longer than the {n_train} training days")
    train, _ = _slide(series[:, cut[0] : cut[1]], cfg.window, cfg.stride)
    cal, _ = _slide(series[:, cut[1] : cut[2]], cfg.window, max(1, cfg.window // 2))
    test, starts = _slide(series[:, cut[2] : cut[3]], cfg.window, max(1, cfg.window // 2))
    const = _constant(train)
    idx = np.asarray(keep)[~const]
    return Windows(
        cfg.system,
        "scada",
        train[:, ~const],
        cal[:, ~const],
        test[:, ~const],
        [ds.channels[i] for i in idx],
        idx,
        starts + cut[2],
        ds,
        state_bus=np.asarray(area_buses(grid, None, cfg.region_size)),
        train_steps=(int(cut[0]), int(cut[1])),
    )


def _pmu_windows(cfg: TSDMConfig, ds, seed: int = SPLIT_SEED) -> Windows:
    """The region's windows of a PMU dataset, its events split by :func:`split_events` into strata of
    :func:`event_strata` (where the events lie: the dataset's ``meta["topology"]`` if it has one, else the ANDES
    case's, :func:`pfbook.power.pmu.topology`).

    Events whose simulation failed (``success = False``: islanding, instability, divergence; their data are NaN) are
    left out before the split and recorded under ``split["excluded"]``. ``split`` holds the dataset event indices of
    each part (``train``, ``calibration``, ``test``), the stratum of every split event (``strata``, dataset index ->
    label), the strata without a training event (``unmatched``, empty unless the data are very few), the ``seed``,
    and per part the dataset event index of every window (``window_events``).
    """
    gens = [g["gen"] for g in ds.meta["generators"][: cfg.region_size]]
    buses = {g["bus"] for g in ds.meta["generators"][: cfg.region_size]}
    keep = [
        i
        for i, c in enumerate(ds.channels)
        if c.get("gen") in gens or (c["kind"] in ("U", "theta") and c.get("bus") in buses)
    ]
    ok = np.flatnonzero(np.asarray(ds.arrays["success"], dtype=bool))
    data = np.asarray(ds.arrays["data"], dtype=np.float64)[:, keep]  # (events, M, samples)
    if cfg.window > data.shape[2]:
        raise DatasetError(f"a window of {cfg.window} samples is longer than the {data.shape[2]} samples per event")
    topo = ds.meta.get("topology")
    if topo is None and "case" in ds.meta:
        from pfbook.power.pmu import topology

        topo = topology(ds.meta["case"])
    region = ds.meta["generators"][: cfg.region_size]
    strata = event_strata([ds.meta["events"][i] for i in ok], region, topo)
    chosen = split_events(strata, cfg.calibration_fraction, cfg.test_fraction, seed)
    parts = {k: ok[chosen[k]] for k in ("train", "calibration", "test")}  # dataset event indices

    def cut(events, stride):
        pieces = [_slide(data[e], cfg.window, stride) for e in events]
        return (
            np.concatenate([p[0] for p in pieces]),
            np.concatenate([e * 10**6 + p[1] for e, p in zip(events, pieces)]),
        )

    train, train_steps = cut(parts["train"], cfg.stride)
    cal, cal_steps = cut(parts["calibration"], max(1, cfg.window // 2))
    test, starts = cut(parts["test"], max(1, cfg.window // 2))
    const = _constant(train)
    idx = np.asarray(keep)[~const]
    split = dict(
        seed=int(seed),
        train=parts["train"],
        calibration=parts["calibration"],
        test=parts["test"],
        excluded=np.flatnonzero(~np.asarray(ds.arrays["success"], dtype=bool)),
        strata={int(i): s for i, s in zip(ok, strata)},
        unmatched=chosen["unmatched"],
        window_events={
            "train": train_steps // 10**6,
            "calibration": cal_steps // 10**6,
            "test": starts // 10**6,
        },
    )
    return Windows(
        cfg.system,
        "pmu",
        train[:, ~const],
        cal[:, ~const],
        test[:, ~const],
        [ds.channels[i] for i in idx],
        idx,
        starts,
        ds,
        split=split,
    )
