"""PMU data: ANDES time-domain simulations of power-system events, sampled at 30 Hz.

Cases (:data:`PMU_CASES`, both shipped inside the ``andes`` wheel, read offline): ``ieee39``
(``ieee39/ieee39_full.xlsx``: 10 GENROU machines with exciters, governors and stabilisers) and
``npcc`` (``npcc/npcc.xlsx``: the NPCC 140-bus system, 27 GENROU and 21 classical GENCLS machines).
ANDES generates its model code on first use (a few seconds, into ``~/.andes``); nothing is fetched.

PMU placement (deterministic, recorded in the metadata):

* ``ieee39``: 13 PMUs: the 10 generator terminal buses and the 3 remaining buses with the most
  branches;
* ``npcc``: 30 PMUs at generator terminal buses: the 27 GENROU terminals, then the 3 GENCLS machines
  of largest rating.

Channels, in this order (``meta["channels"]``): per generator with a PMU, ``P_G``, ``Q_G`` (its
electrical output), ``I`` and ``gamma`` (magnitude and angle of its terminal current, from
``I e^{j gamma} = conj(S / V)``); per PMU bus ``U`` and ``theta``; per GENROU generator the states the
paper recovers, ``delta``, ``e1d`` (E'_d) and ``e1q`` (E'_q); per classical machine ``delta``. All
per unit on the system base (angles in rad). ANDES's variable-step output is interpolated onto a
uniform 30 Hz grid ``t = 0, 1/30, ..., t_end`` (samples just after an event keep the post-event value:
the event instants are part of ANDES's own time grid).

Events (:func:`make_events`, drawn per event index from ``seed``): ``fault`` (three-phase fault at a
bus that is not a generator terminal, reactance ``xf`` in 0.005-0.05 p.u., cleared after
50-100 ms), ``line_trip`` (a line opened, reclosed 50-100 ms later or not at all), ``gen_trip``
(a GENROU machine disconnected) and ``load_change`` (a load disconnected), all at ``t = 1 s``.
Events that make the simulation fail (islanding, instability, divergence) are kept in the file with
``success = False`` and NaN data, never silently dropped.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pfbook.config import available_cpus
from pfbook.io import DatasetError, StoredDataset, atomic_write_json, atomic_write_npz, check_writable, sha256_file

PMU_CASES: dict[str, dict[str, Any]] = {
    "ieee39": dict(file="ieee39/ieee39_full.xlsx", n_pmu=13, paper="IEEE 39-bus, PMUs at 13 buses"),
    "npcc": dict(file="npcc/npcc.xlsx", n_pmu=30, paper="NPCC 140-bus, PMUs at 30 generator terminal buses"),
}
EVENT_KINDS = ("fault", "line_trip", "gen_trip", "load_change")
FORMAT = 1


class CaseError(DatasetError):
    """A PMU case that ANDES does not ship here."""


def case_file(case: str) -> str:
    """Path of the ANDES case file, or a CaseError naming the cases that exist."""
    if case not in PMU_CASES:
        raise CaseError(f"unknown PMU case {case!r}; choose one of {', '.join(PMU_CASES)}")
    try:
        import andes
    except ImportError:
        raise CaseError(
            "PMU data need the 'andes' package, which is not installed; install pfbook's "
            "dependencies (pip install -e .)"
        ) from None
    path = andes.get_case(PMU_CASES[case]["file"], check=False)
    if not path or not os.path.isfile(path):
        raise CaseError(f"ANDES {andes.__version__} does not ship {PMU_CASES[case]['file']} (looked at {path})")
    return path


@dataclass(frozen=True)
class Event:
    kind: str
    element: str  # ANDES idx of the bus / line / generator / load
    t_start: float = 1.0
    duration: float | None = None  # fault clearing or line reclosing time after t_start; None: permanent
    xf: float | None = None  # fault reactance (p.u.)

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; choose one of {', '.join(EVENT_KINDS)}")


def _load(case: str, setup: bool = False):
    import andes

    andes.config_logger(stream_level=40)
    ss = andes.load(case_file(case), setup=False, no_output=True, default_config=True)
    for i in range(ss.Toggle.n):  # the case's own scripted events are switched off
        ss.Toggle.u.v[i] = 0
    if setup:
        ss.setup()
    return ss


def make_events(case: str, n: int, seed: int = 0, kinds: Sequence[str] = EVENT_KINDS, ss=None) -> list[Event]:
    """``n`` events cycling through ``kinds``; each drawn from ``default_rng([seed, i])``."""
    ss = ss if ss is not None else _load(case)
    terminals = {str(b) for m in ("GENROU", "GENCLS") if getattr(ss, m, None) is not None for b in getattr(ss, m).bus.v}
    buses = [b for b in ss.Bus.idx.v if str(b) not in terminals]  # faults away from generator terminals
    lines = list(ss.Line.idx.v)
    gens = list(ss.GENROU.idx.v)
    loads = list(ss.PQ.idx.v)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = kinds[i % len(kinds)]
        if kind == "fault":
            ev = Event(
                kind,
                str(buses[rng.integers(len(buses))]),
                duration=float(rng.uniform(0.05, 0.1)),
                xf=float(rng.uniform(0.005, 0.05)),
            )
        elif kind == "line_trip":
            ev = Event(
                kind,
                str(lines[rng.integers(len(lines))]),
                duration=float(rng.uniform(0.05, 0.1)) if rng.random() < 0.5 else None,
            )
        elif kind == "gen_trip":
            ev = Event(kind, str(gens[rng.integers(len(gens))]))
        else:
            ev = Event(kind, str(loads[rng.integers(len(loads))]))
        out.append(ev)
    return out


@functools.lru_cache(maxsize=None)
def topology(case: str) -> dict[str, dict]:
    """Where the elements of ``case`` connect, read from the ANDES case (cached): ``lines`` (idx -> (bus1, bus2)),
    ``loads`` (idx -> bus) and ``generators`` (GENROU and GENCLS idx -> terminal bus), all as strings. The event
    split of TSDM's PMU windows uses it to find the events near a region (a dataset's events name these idx)."""
    ss = _load(case)
    gens = {}
    for m in ("GENROU", "GENCLS"):
        model = getattr(ss, m, None)
        if model is not None:
            gens.update({str(g): str(b) for g, b in zip(model.idx.v, model.bus.v)})
    return dict(
        lines={str(i): (str(a), str(b)) for i, a, b in zip(ss.Line.idx.v, ss.Line.bus1.v, ss.Line.bus2.v)},
        loads={str(i): str(b) for i, b in zip(ss.PQ.idx.v, ss.PQ.bus.v)},
        generators=gens,
    )


def _idx(model, name: str):
    """ANDES idx values may be ints or strings: find the stored one that prints as ``name``."""
    for v in model.idx.v:
        if str(v) == name:
            return v
    raise ValueError(f"{model.class_name} has no element {name!r}")


def pmu_layout(ss, case: str) -> dict[str, Any]:
    """PMU buses, generators with PMUs and the channel list (see the module docstring)."""
    n_pmu = PMU_CASES[case]["n_pmu"]
    gens = [("GENROU", g, ss.GENROU.bus.v[i]) for i, g in enumerate(ss.GENROU.idx.v)]
    if getattr(ss, "GENCLS", None) is not None and ss.GENCLS.n:
        cls = sorted(range(ss.GENCLS.n), key=lambda i: -float(ss.GENCLS.Sn.v[i]))
        gens += [("GENCLS", ss.GENCLS.idx.v[i], ss.GENCLS.bus.v[i]) for i in cls]
    gens = gens[:n_pmu]
    buses = list(dict.fromkeys(b for _, _, b in gens))
    if len(buses) < n_pmu:
        deg: dict[Any, int] = {}
        for a, b in zip(ss.Line.bus1.v, ss.Line.bus2.v):
            deg[a] = deg.get(a, 0) + 1
            deg[b] = deg.get(b, 0) + 1
        rest = sorted((b for b in ss.Bus.idx.v if b not in buses), key=lambda b: (-deg.get(b, 0), str(b)))
        buses += rest[: n_pmu - len(buses)]
    ch = []
    for m, g, b in gens:
        ch += [dict(kind=k, gen=str(g), model=m, bus=str(b)) for k in ("P_G", "Q_G", "I", "gamma")]
    ch += [dict(kind=k, bus=str(b)) for b in buses for k in ("U", "theta")]
    for m, g, b in gens:
        states = ("delta", "e1d", "e1q") if m == "GENROU" else ("delta",)
        ch += [dict(kind=k, gen=str(g), model=m, bus=str(b)) for k in states]
    return dict(
        buses=[str(b) for b in buses],
        generators=[dict(model=m, gen=str(g), bus=str(b)) for m, g, b in gens],
        channels=ch,
    )


def simulate(case: str, event: Event, t_end: float = 10.0, fs: float = 30.0) -> dict[str, Any]:
    """One ANDES time-domain run; returns ``data`` (M, n_samples), ``t``, ``success`` and the layout."""
    ss = _load(case)
    layout = pmu_layout(ss, case)
    t1 = event.t_start
    if event.kind == "fault":
        ss.add("Fault", dict(bus=_idx(ss.Bus, event.element), tf=t1, tc=t1 + event.duration, xf=event.xf))
    elif event.kind == "line_trip":
        dev = _idx(ss.Line, event.element)
        ss.add("Toggle", dict(model="Line", dev=dev, t=t1))
        if event.duration is not None:
            ss.add("Toggle", dict(model="Line", dev=dev, t=t1 + event.duration))
    elif event.kind == "gen_trip":
        ss.add("Toggle", dict(model="GENROU", dev=_idx(ss.GENROU, event.element), t=t1))
    else:
        ss.add("Toggle", dict(model="PQ", dev=_idx(ss.PQ, event.element), t=t1))
    ss.setup()
    t = np.arange(int(round(t_end * fs)) + 1) / fs
    M = len(layout["channels"])
    ok = bool(ss.PFlow.run())
    if ok:
        ss.TDS.config.tf = t_end
        ss.TDS.config.tstep = 1.0 / fs
        ss.TDS.config.no_tqdm = 1
        ok = bool(ss.TDS.run()) and ss.exit_code == 0
    if not ok or ss.dae.ts.t[-1] < t_end - 1e-9:
        return dict(data=np.full((M, len(t)), np.nan), t=t, success=False, layout=layout)
    ts = ss.dae.ts
    tt = np.asarray(ts.t)
    # keep the last sample of repeated instants (the post-event value), then interpolate onto t
    keep = np.r_[np.diff(tt) > 0, True]
    tt, X, Y = tt[keep], np.asarray(ts.x)[keep], np.asarray(ts.y)[keep]

    def series(arr, addr):
        return np.interp(t, tt, arr[:, addr])

    bus_pos = {str(b): i for i, b in enumerate(ss.Bus.idx.v)}
    rows = []
    cache: dict[tuple, np.ndarray] = {}
    for c in layout["channels"]:
        k = c["kind"]
        if k in ("U", "theta"):
            i = bus_pos[c["bus"]]
            rows.append(series(Y, (ss.Bus.v if k == "U" else ss.Bus.a).a[i]))
            continue
        model = getattr(ss, c["model"])
        gi = [str(v) for v in model.idx.v].index(c["gen"])
        if k in ("delta", "e1d", "e1q"):
            rows.append(series(X, getattr(model, k).a[gi]))
            continue
        key = (c["model"], gi)
        if key not in cache:
            P = series(Y, model.Pe.a[gi]) if hasattr(model, "Pe") else np.zeros_like(t)
            Q = series(Y, model.Qe.a[gi]) if hasattr(model, "Qe") else np.zeros_like(t)
            bi = bus_pos[c["bus"]]
            U = series(Y, ss.Bus.v.a[bi])
            th = series(Y, ss.Bus.a.a[bi])
            cache[key] = np.stack([P, Q, np.hypot(P, Q) / U, th - np.arctan2(Q, P)])
        rows.append(cache[key][("P_G", "Q_G", "I", "gamma").index(k)])
    return dict(data=np.stack(rows), t=t, success=True, layout=layout)


def _run_one(case: str, event: Event, t_end: float, fs: float, part: str) -> str:
    """Simulate one event and write it atomically to ``part`` (an interrupted dataset resumes from these)."""
    r = simulate(case, event, t_end, fs)
    atomic_write_npz(Path(part), dict(data=r["data"], success=np.array(r["success"])))
    return part


def _read_part(part: Path, shape: tuple[int, int]) -> tuple[np.ndarray, bool] | None:
    try:
        with np.load(part, allow_pickle=False) as z:
            data, ok = z["data"], bool(z["success"])
    except Exception:
        return None
    return (data, ok) if data.shape == shape else None


class PMUDataset(StoredDataset):
    """PMU records ``data`` (n_events, M, n_samples), ``t``, ``success`` and metadata ``meta``."""

    what = "PMU dataset"
    sidecar_values = {"format": FORMAT, "kind": "pmu"}
    sidecar_types = {
        **StoredDataset.sidecar_types,
        "case": str,
        "spec_key": str,
        "fs": float,
        "t_end": float,
        "events": list,
        "channels": list,
        "n_failed": int,
        "buses": list,
        "generators": list,
    }

    @classmethod
    def layout(cls, meta: dict) -> dict[str, tuple]:
        """``data`` (events, channels, samples of ``t_end`` s at ``fs`` Hz), ``t`` and ``success``."""
        E, S = len(meta["events"]), int(round(meta["t_end"] * meta["fs"])) + 1
        return dict(data=(E, len(meta["channels"]), S), t=(S,), success=(E,))

    @classmethod
    def consistency(cls, meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
        """The settings key against the case, event count and sampling, and ``n_failed`` against ``success``."""
        problems = []
        try:
            key = json.loads(meta["spec_key"])
        except ValueError:
            key = None
        if not isinstance(key, dict):
            return ["its 'spec_key' is not the JSON of the settings"]
        for k, v in (
            ("case", meta["case"]),
            ("n_events", len(meta["events"])),
            ("t_end", meta["t_end"]),
            ("fs", meta["fs"]),
        ):
            if k in key and key[k] != v:
                problems.append(f"it describes {k} {v!r} but its settings ('spec_key') say {key[k]!r}")
        if "success" in arrays and arrays["success"].ndim == 1 and meta["n_failed"] != int((~arrays["success"]).sum()):
            problems.append(
                f"its 'n_failed' is {meta['n_failed']}, the file holds {int((~arrays['success']).sum())} failed events"
            )
        return problems

    @classmethod
    def describe(cls, meta: dict) -> str:
        E = len(meta["events"])
        return (
            f"{meta['case']}: {E} event{'s' if E != 1 else ''}, {len(meta['channels'])} channels, "
            f"{meta['t_end']:g} s at {meta['fs']:g} Hz"
        )

    def __len__(self) -> int:
        return int(self.arrays["data"].shape[0])

    def __repr__(self) -> str:
        return (
            f"PMUDataset({self.meta['case']}, {len(self)} events, M={self.arrays['data'].shape[1]}, "
            f"{self.meta['fs']:g} Hz, path={str(self.path)!r})"
        )

    @property
    def channels(self) -> list[dict]:
        return self.meta["channels"]

    @classmethod
    def load(cls, path: str | os.PathLike, expect_key: str | None = None) -> "PMUDataset":
        return cls.read(path, expect_key)


def pmu_dataset(
    case: str,
    n_events: int,
    *,
    t_end: float = 10.0,
    fs: float = 30.0,
    seed: int = 0,
    kinds: Sequence[str] = EVENT_KINDS,
    out_dir: str | os.PathLike = "data",
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PMUDataset:
    """Simulate ``n_events`` events of ``case`` (or load them from cache) in parallel processes or on
    a Dask ``scheduler`` (address or ``distributed.Client``), with a progress bar; results are written
    atomically as ``pmu-<case>-....npz`` + ``.json`` (with the NPZ's SHA-256) and reused when the
    settings match. Each event lands atomically in a parts folder beside the output as it finishes, so
    an interrupted run resumes where it stopped."""
    import hashlib

    from tqdm.auto import tqdm

    if n_events < 1:
        raise ValueError(f"n_events must be positive; got {n_events}")
    if not (t_end > 1.0 and fs > 0):
        raise ValueError(f"t_end must exceed the event time 1 s and fs be positive; got t_end={t_end}, fs={fs}")
    case_file(case)
    kinds = tuple(kinds)
    for k in kinds:
        if k not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {k!r}; choose from {', '.join(EVENT_KINDS)}")
    key = json.dumps(
        dict(case=case, n_events=n_events, t_end=t_end, fs=fs, seed=seed, kinds=kinds, format=FORMAT), sort_keys=True
    )
    out_dir = Path(out_dir)
    check_writable(out_dir)
    path = out_dir / f"pmu-{case}-{n_events}ev-{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"
    if path.is_file() and not overwrite:
        try:
            return PMUDataset.load(path, expect_key=key)
        except DatasetError:
            pass
    ss = _load(case)
    events = make_events(case, n_events, seed, kinds, ss=ss)
    layout = pmu_layout(ss, case)
    results: dict[int, tuple[np.ndarray, bool]] = {}
    shape = (len(layout["channels"]), int(round(t_end * fs)) + 1)
    parts_dir = out_dir / f".{path.stem}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    part = [str(parts_dir / f"event-{i:06d}.npz") for i in range(n_events)]
    workers = available_cpus() if workers is None else max(1, int(workers))
    t0 = time.perf_counter()
    with tqdm(total=n_events, desc=f"ANDES {case}", unit="event", disable=not progress) as bar:
        for i in range(n_events):  # events simulated before an interruption are kept
            done = _read_part(Path(part[i]), shape)
            if done is not None:
                results[i] = done
                bar.update(1)
        todo = [i for i in range(n_events) if i not in results]

        def collect(i: int) -> None:
            got = _read_part(Path(part[i]), shape)
            if got is None:
                raise DatasetError(f"simulation of event {i} ({events[i]}) wrote no readable result")
            results[i] = got
            bar.update(1)

        if scheduler is not None:
            from distributed import Client, as_completed

            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            try:
                futs = {client.submit(_run_one, case, events[i], t_end, fs, part[i], pure=False): i for i in todo}
                for fut in as_completed(futs):
                    fut.result()
                    collect(futs[fut])
            finally:
                if client is not scheduler:
                    client.close()
        elif workers <= 1 or len(todo) <= 1:
            for i in todo:
                _run_one(case, events[i], t_end, fs, part[i])
                collect(i)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: ANDES's generated code and numba caches are not fork-safe everywhere
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(_run_one, case, events[i], t_end, fs, part[i]): i for i in todo}
                try:
                    for fut in as_completed(futs):
                        fut.result()
                        collect(futs[fut])
                except BaseException:
                    for fut in futs:
                        fut.cancel()
                    raise
    seconds = time.perf_counter() - t0
    data = np.stack([results[i][0] for i in range(n_events)])
    success = np.array([results[i][1] for i in range(n_events)])
    t = np.arange(data.shape[-1]) / fs
    arrays = dict(data=data, t=t, success=success)
    atomic_write_npz(path, arrays)
    import andes

    meta = dict(
        format=FORMAT,
        kind="pmu",
        case=case,
        case_file=PMU_CASES[case]["file"],
        paper=PMU_CASES[case]["paper"],
        andes_version=andes.__version__,
        spec_key=key,
        fs=fs,
        t_end=t_end,
        seed=seed,
        events=[asdict(e) for e in events],
        n_failed=int((~success).sum()),
        seconds=seconds,
        units="per unit on the system base; angles in rad",
        **layout,
        sha256=sha256_file(path),
    )
    atomic_write_json(path.with_suffix(".json"), meta)
    import shutil

    shutil.rmtree(parts_dir, ignore_errors=True)
    return PMUDataset(arrays, meta, path)
