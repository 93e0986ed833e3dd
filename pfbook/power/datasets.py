"""AC-OPF datasets: sampled loads (and costs), solved by MATPOWER's AC-OPF, stored as NPZ + JSON.

Each sample ``i`` draws, from a random generator seeded by ``(seed, i)`` alone,

* one factor per load from ``U(load_range)``, scaling that load's P and Q together (power factor kept), and
* optionally one factor per generator from ``U(cost_range)``, scaling its linear cost coefficient,

then solves the AC-OPF (:mod:`pfbook.power.opf`) warm-started from the optimum at the centre of the load range. Because every
sample depends on its index and the seed only, the dataset is the same however the work is split over
processes or a Dask cluster, and an interrupted run resumes exactly where it stopped.

Only converged solves are kept; failures are counted, their indices recorded in the metadata, and
further indices are drawn until ``n_samples`` solves have converged.

Stored schema (``.npz``, one row per sample, buses/loads/generators in the grid's order):

=============== ============ ==========================================================
array           shape        meaning
=============== ============ ==========================================================
p, q            (n, n_bus)   net injection per bus, generation minus demand (p.u.)
v, theta        (n, n_bus)   voltage magnitude (p.u.) and angle (rad)
pd, qd          (n, n_load)  demand per load (p.u.)
pg, qg          (n, n_gen)   generator output (p.u.)
cost            (n,)         optimal cost ($/h)
load_factors    (n, n_load)  the sampled load scaling
cost_factors    (n, n_gen)   the sampled linear-cost scaling (ones when not sampled)
sample_index    (n,)         the index that seeded the sample
=============== ============ ==========================================================

The JSON sidecar (same name, ``.json``) holds the grid, bus/load/generator order, units, ranges, seed,
solver, counts of failed solves, the package version and the NPZ's SHA-256. :meth:`OPFDataset.load` checks
the sidecar against the arrays (fields and their types, shapes, grid size and bus orders), not only the
checksum, so a sidecar of another dataset beside the NPZ is refused, and the cache generates it again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pfbook.config import available_cpus
from pfbook.io import DatasetError, StoredDataset, atomic_write_json, atomic_write_npz, check_writable, sha256_file
from pfbook.power.grids import Grid, load_grid

FORMAT = "pfbook.opf_dataset"
FORMAT_VERSION = 1
ARRAYS = ("p", "q", "v", "theta", "pd", "qd", "pg", "qg", "cost", "load_factors", "cost_factors", "sample_index")
UNITS = {
    "p": "p.u.",
    "q": "p.u.",
    "v": "p.u.",
    "theta": "rad",
    "pd": "p.u.",
    "qd": "p.u.",
    "pg": "p.u.",
    "qg": "p.u.",
    "cost": "$/h",
    "load_factors": "1",
    "cost_factors": "1",
    "sample_index": "1",
}
#: what each stored array has a column per (None: one value per sample)
_KIND = {
    "p": "bus",
    "q": "bus",
    "v": "bus",
    "theta": "bus",
    "pd": "load",
    "qd": "load",
    "pg": "gen",
    "qg": "gen",
    "load_factors": "load",
    "cost_factors": "gen",
    "cost": None,
    "sample_index": None,
}
#: give up when this share of attempts fails (the ranges are then unreasonable for the grid)
MAX_FAILURE_SHARE = 0.5


@dataclass(frozen=True)
class OPFDatasetSpec:
    """Everything that determines an AC-OPF dataset; two equal specs give identical files."""

    grid: str
    n_samples: int
    load_range: tuple[float, float] = (0.8, 1.0)
    cost_range: tuple[float, float] | None = None
    seed: int = 0
    grid_fingerprint: str = ""

    def __post_init__(self):
        _check_range("load_range", self.load_range)
        if self.cost_range is not None:
            _check_range("cost_range", self.cost_range)
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, (int, np.integer)) or self.n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {self.n_samples!r}: ask for at least "
                f"one sample (e.g. --samples 100)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def stem(self) -> str:
        return f"opf-{_safe(self.grid)}-n{self.n_samples}-s{self.seed}-{self.key}"

    def factors(self, index: int, n_load: int, n_gen: int) -> tuple[np.ndarray, np.ndarray]:
        """The load and cost factors of sample ``index`` (depend on seed and index only)."""
        rng = np.random.default_rng([self.seed, index])
        lf = rng.uniform(*self.load_range, size=n_load)
        cf = rng.uniform(*self.cost_range, size=n_gen) if self.cost_range is not None else np.ones(n_gen)
        return lf, cf


def _check_range(name: str, r: Sequence[float]) -> None:
    try:
        lo, hi = (float(x) for x in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {r!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got ({lo}, {hi})")
    if lo < 0 or hi < 0:
        raise ValueError(
            f"{name} must be non-negative scaling factors, got ({lo}, {hi}); e.g. 0.8 1.0 for 80-100 % of nominal"
        )
    if lo > hi:
        raise ValueError(f"{name} has low > high ({lo} > {hi}); give the lower bound first, e.g. {hi} {lo}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def grid_fingerprint(grid: Grid) -> str:
    """A hash of the grid data the OPF sees, so a dataset is never reused for an edited grid."""
    h = hashlib.sha256()
    for a in (
        grid.bus_ids,
        grid.bus_type,
        grid.pd,
        grid.qd,
        grid.gs,
        grid.bs,
        grid.vmin,
        grid.vmax,
        grid.f,
        grid.t,
        grid.r,
        grid.x,
        grid.b,
        grid.g,
        grid.ratio,
        grid.shift,
        grid.rate_a,
        grid.gen_bus,
        grid.pmin,
        grid.pmax,
        grid.qmin,
        grid.qmax,
        grid.cost_coef,
    ):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- dataset
class OPFDataset(StoredDataset):
    """A solved AC-OPF dataset: arrays by name (``ds.p``, ``ds.pg``, ...) plus its metadata ``ds.meta``."""

    what = "AC-OPF dataset"
    sidecar_types = {
        **StoredDataset.sidecar_types,
        "grid": str,
        "spec": dict,
        "n_samples": int,
        "n_failed": int,
        "n_attempted": int,
        "failed_indices": list,
        "bus_ids": list,
        "load_bus_ids": list,
        "gen_bus_ids": list,
        "shapes": dict,
        "load_range": list,
        "seed": int,
        "seconds": float,
    }

    @classmethod
    def layout(cls, meta: dict) -> dict[str, tuple]:
        """Rows: ``n_samples``; columns: one per bus, load or generator of the sidecar's orders."""
        n = meta["n_samples"]
        width = {"bus": len(meta["bus_ids"]), "load": len(meta["load_bus_ids"]), "gen": len(meta["gen_bus_ids"])}
        return {k: (n,) if _KIND[k] is None else (n, width[_KIND[k]]) for k in ARRAYS}

    @classmethod
    def consistency(cls, meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
        """The sidecar's own shapes, its settings (grid, n_samples) and its bus orders agree with each other and
        with the arrays."""
        problems, layout = [], cls.layout(meta)
        for k, shape in meta["shapes"].items():  # arrays the layout check passed, whose 'shapes' entry differs
            if k in arrays and layout.get(k) == arrays[k].shape and tuple(shape) != arrays[k].shape:
                problems.append(f"its 'shapes' gives {k!r} as {tuple(shape)}, the file holds {arrays[k].shape}")
        spec = meta["spec"]
        for k in ("grid", "n_samples", "seed"):
            if k in spec and spec[k] != meta[k]:
                problems.append(f"its {k!r} is {meta[k]!r} but its settings ('spec') say {spec[k]!r}")
        bus = set(map(str, meta["bus_ids"]))
        if len(bus) != len(meta["bus_ids"]):
            problems.append("its bus order 'bus_ids' lists a bus twice")
        for k in ("load_bus_ids", "gen_bus_ids"):
            stray = [b for b in meta[k] if str(b) not in bus]
            if stray:
                problems.append(f"its {k!r} names buses {stray[:5]} that are not in 'bus_ids'")
        if meta["n_failed"] != len(meta["failed_indices"]):
            problems.append(
                f"its 'n_failed' is {meta['n_failed']} but it lists {len(meta['failed_indices'])} 'failed_indices'"
            )
        if "sample_index" in arrays and len(np.unique(arrays["sample_index"])) != len(arrays["sample_index"]):
            problems.append("array 'sample_index' repeats a sample")
        return problems

    @classmethod
    def describe(cls, meta: dict) -> str:
        return (
            f"{meta['grid']}: {meta['n_samples']} samples, {len(meta['bus_ids'])} buses, "
            f"{len(meta['load_bus_ids'])} loads, {len(meta['gen_bus_ids'])} generators"
        )

    def check_grid(self, grid: Grid) -> None:
        """Refuse (:class:`DatasetError`) a dataset whose grid name, size or bus, load and generator orders are
        not those of ``grid``: the columns of the arrays follow the sidecar's orders, and the book reads them
        with ``grid``'s."""
        m, side = self.meta, self.path.with_suffix(".json").name if self.path is not None else "its metadata"
        ids = np.asarray(grid.bus_ids)
        want = {
            "grid": grid.name,
            "bus_ids": ids.tolist(),
            "load_bus_ids": ids[grid.load_bus].tolist(),
            "gen_bus_ids": ids[grid.gen_bus].tolist(),
        }
        what = {"grid": "grid", "bus_ids": "bus order", "load_bus_ids": "load order", "gen_bus_ids": "generator order"}
        diff = []
        for k, v in want.items():
            if m[k] == v:
                continue
            if k == "grid":
                diff.append(f"grid {m[k]!r}")
            elif len(m[k]) != len(v):
                diff.append(f"a {what[k]} of {len(m[k])} where {grid.name} has {len(v)}")
            else:
                i = next(i for i, (a, b) in enumerate(zip(m[k], v)) if a != b)
                diff.append(
                    f"a {what[k]} that differs from {grid.name}'s at position {i} ({m[k][i]!r} where "
                    f"{grid.name} has {v[i]!r})"
                )
        if diff:
            name = self.path.name if self.path is not None else "the dataset"
            raise DatasetError(
                f"{name} is not a dataset of grid {grid.name} ({grid.n_bus} buses): {side} gives "
                f"{'; '.join(diff)}; delete it and generate it again (or pass --force / force=True)"
            )

    def __len__(self) -> int:
        return len(self.arrays["cost"])

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"OPFDataset({m['grid']!r}: {len(self)} samples, {m['n_failed']} failed solves, "
            f"loads x U{tuple(m['load_range'])}, seed {m['seed']})"
        )

    @property
    def grid(self) -> Grid:
        return load_grid(self.meta["grid"])

    def features(self, names: Iterable[str] = ("p", "q", "v", "theta")) -> tuple[np.ndarray, list[str]]:
        """Concatenate per-sample arrays into one matrix, with a column name per feature (``p_3`` = bus 3)."""
        ids = {"bus": self.meta["bus_ids"], "load": self.meta["load_bus_ids"], "gen": self.meta["gen_bus_ids"]}
        kind = {n: k for n, k in _KIND.items() if k is not None}
        cols, blocks = [], []
        for n in names:
            if n not in kind:
                raise ValueError(f"unknown feature {n!r}; choose from {', '.join(kind)}")
            blocks.append(self.arrays[n])
            cols += [f"{n}_{b}" for b in ids[kind[n]]]
        return np.concatenate(blocks, axis=1), cols

    def to_frame(self, names: Iterable[str] = ("p", "q", "v", "theta", "pd", "qd", "pg", "qg")):
        """A wide pandas DataFrame, one row per sample (columns like ``p_3``), plus ``cost``."""
        import pandas as pd

        x, cols = self.features(names)
        df = pd.DataFrame(x, columns=cols, index=pd.Index(self.arrays["sample_index"], name="sample"))
        df["cost"] = self.arrays["cost"]
        return df

    @classmethod
    def load(
        cls, path: str | os.PathLike, expect: OPFDatasetSpec | None = None, grid: Grid | None = None
    ) -> "OPFDataset":
        """Open a dataset written by :func:`ac_opf_dataset`, checking it is whole, that its sidecar describes its
        arrays (fields, shapes, grid size, bus orders), and that it is what was asked for: made with the settings
        ``expect`` and (see :meth:`check_grid`) for the grid ``grid``."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        side = path.with_suffix(".json")
        fix = f"delete {path.name} and {side.name} and generate it again (or pass --force / force=True)"
        if not path.is_file():
            raise FileNotFoundError(f"dataset {str(path)!r} does not exist; generate it with `pfbook data opf`")
        if not side.is_file():
            raise DatasetError(f"dataset {path.name} has no metadata sidecar {side.name}: it is incomplete; {fix}")
        meta = cls.read_sidecar(side, fix)
        if meta.get("format") != FORMAT:
            raise DatasetError(f"{side.name} is not a pfbook AC-OPF dataset (format {meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{path.name} has format version {meta.get('format_version')}, this pfbook reads "
                f"{FORMAT_VERSION}; {fix}"
            )
        cls.check_sidecar(meta, side.name, fix)
        if sha256_file(path) != meta["sha256"]:
            raise DatasetError(
                f"dataset {path.name} is truncated or was modified (its checksum does not match {side.name}); {fix}"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ARRAYS}
        except Exception as e:
            raise DatasetError(f"dataset {path.name} cannot be read ({e}); {fix}") from None
        cls.check_arrays(meta, arrays, path.name, side.name, fix)
        if expect is not None:
            got = meta["spec"]
            want = json.loads(json.dumps(asdict(expect), default=list))
            diff = [k for k in want if got.get(k) != want[k]]
            if diff:
                raise DatasetError(
                    f"dataset {path.name} was made for {', '.join(f'{k}={got.get(k)!r}' for k in diff)} but "
                    f"{', '.join(f'{k}={want[k]!r}' for k in diff)} was asked; {fix}"
                )
        ds = cls(arrays, meta, path)
        if grid is not None:
            ds.check_grid(grid)
        return ds


# ---------------------------------------------------------------------------------------- solving
_WORKER_CACHE: dict[str, Any] = {}


def _solver_for(grid: Grid, load_range: tuple[float, float] = (1.0, 1.0)):
    """One OPF solver per grid and process, and the optimum every sample is warm-started from: the one at the centre
    of ``load_range`` (all loads scaled alike, nominal costs), else, if that does not converge, the nominal-load one.

    A reference in the middle of the sampled loads keeps the sensitivity prediction of :class:`pfbook.power.opf.ACOPF`
    within its safeguard: from the nominal optimum, loads x U(0.8, 1.0) on PGLib's case118 change the active set so
    much that every prediction was rejected (19.9 Ipopt iterations a sample); from the centre, 7.2
    (``benchmarks/bench_opf.py``, 20 samples: 18.0 against 6.8 solves/s per core there, 75.3 against 39.6 on
    MATPOWER's case118).
    """
    centre = 0.5 * (float(load_range[0]) + float(load_range[1]))
    key = (grid_fingerprint(grid), centre)
    hit = _WORKER_CACHE.get(key)
    if hit is None:
        from pfbook.power.opf import ACOPF

        solver = ACOPF(grid)
        reference = solver.solve(pd=grid.pd * centre, qd=grid.qd * centre) if centre != 1.0 else None
        if reference is None or not reference.success:
            reference = solver.solve()
        if not reference.success:
            raise RuntimeError(
                f"the AC-OPF of {grid.name} does not converge at nominal load "
                f"({reference.message}); pfbook cannot build a dataset for this case"
            )
        hit = _WORKER_CACHE[key] = (solver, reference)
    return hit


def solve_samples(grid: Grid, spec: OPFDatasetSpec, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Solve the samples with the given indices; returns arrays for all of them plus a ``success`` mask."""
    solver, reference = _solver_for(grid, spec.load_range)
    nb, nl, ng = grid.n_bus, grid.n_load, grid.n_gen
    out = {
        k: np.zeros((len(indices), w))
        for k, w in (
            ("p", nb),
            ("q", nb),
            ("v", nb),
            ("theta", nb),
            ("pd", nl),
            ("qd", nl),
            ("pg", ng),
            ("qg", ng),
            ("load_factors", nl),
            ("cost_factors", ng),
        )
    }
    out["cost"] = np.zeros(len(indices))
    out["sample_index"] = np.asarray(indices, dtype=np.int64)
    out["success"] = np.zeros(len(indices), dtype=bool)
    out["iterations"] = np.zeros(len(indices), dtype=np.int64)
    for row, i in enumerate(indices):
        lf, cf = spec.factors(int(i), nl, ng)
        pd_bus, qd_bus = grid.pd.copy(), grid.qd.copy()
        pd_bus[grid.load_bus] *= lf
        qd_bus[grid.load_bus] *= lf
        res = solver.solve(pd=pd_bus, qd=qd_bus, cost_factors=cf, warm_start=reference)
        out["load_factors"][row], out["cost_factors"][row] = lf, cf
        out["pd"][row], out["qd"][row] = pd_bus[grid.load_bus], qd_bus[grid.load_bus]
        out["success"][row] = res.success
        out["iterations"][row] = res.iterations
        if not res.success:
            continue
        out["pg"][row], out["qg"][row] = res.pg, res.qg
        out["v"][row], out["theta"][row] = res.vm, res.va
        out["p"][row] = grid.Cg @ res.pg - pd_bus
        out["q"][row] = grid.Cg @ res.qg - qd_bus
        out["cost"][row] = res.cost
    return out


def _solve_part(grid: Grid, spec: OPFDatasetSpec, indices: list[int], part_path: str) -> str:
    """Worker task: solve a chunk and write it atomically as one part file; returns its path."""
    atomic_write_npz(Path(part_path), solve_samples(grid, spec, indices))
    return part_path


class _Parts:
    """The chunk files of an unfinished dataset: what has been solved survives an interruption."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self) -> dict[int, dict[str, Any]]:
        done: dict[int, dict[str, Any]] = {}
        if not self.folder.is_dir():
            return done
        for f in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    part = {k: z[k] for k in z.files}
            except Exception:
                f.unlink()  # only atomic renames land here, but never trust a damaged part
                continue
            for row, i in enumerate(part["sample_index"]):
                done[int(i)] = {k: v[row] for k, v in part.items()}
        return done

    def path_for(self, indices: Sequence[int]) -> Path:
        return self.folder / f"part-{indices[0]:08d}-{indices[-1]:08d}.npz"


def _run_chunks(
    grid: Grid, spec: OPFDatasetSpec, chunks: list[list[int]], parts: _Parts, workers: int, scheduler: Any, bar
) -> None:
    failed = 0

    def report(path: str) -> None:
        nonlocal failed
        with np.load(path, allow_pickle=False) as z:
            failed += int((~z["success"]).sum())
            bar.update(len(z["sample_index"]))
        bar.set_postfix(failed=failed)

    jobs = [(c, str(parts.path_for(c))) for c in chunks]
    if scheduler is not None:
        from distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            grid_f = client.scatter(grid, broadcast=True)
            futures = [client.submit(_solve_part, grid_f, spec, c, p, pure=False) for c, p in jobs]
            for fut in as_completed(futures):
                report(fut.result())
        finally:
            if client is not scheduler:
                client.close()
    elif workers <= 1:
        for c, p in jobs:
            report(_solve_part(grid, spec, c, p))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # fork where it exists: workers then need no importable __main__ (scripts without a main guard,
        # notebooks) and start in milliseconds; the workers use numpy/Ipopt only, no threads of torch
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_solve_part, grid, spec, c, p) for c, p in jobs]
            try:
                for fut in as_completed(futures):
                    report(fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


def ac_opf_dataset(
    grid: "str | Grid | Any",
    n_samples: int,
    *,
    load_range: tuple[float, float] = (0.8, 1.0),
    cost_range: tuple[float, float] | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike = "data",
    workers: int | None = None,
    scheduler: Any = None,
    chunk_size: int = 25,
    progress: bool = True,
    force: bool = False,
) -> OPFDataset:
    """Generate (or reuse) an AC-OPF dataset of ``n_samples`` converged solves.

    Parameters
    ----------
    grid : a grid name (``"case118"``), ``.m`` path, pandapower net or :class:`~pfbook.power.grids.Grid`.
    n_samples : number of converged samples to keep.
    load_range : each load's P and Q are scaled by one factor from ``U(low, high)``.
    cost_range : if given, each generator's linear cost coefficient is scaled by a factor from ``U(low, high)``.
    seed : the dataset is a function of the seed (and grid and ranges) only.
    out_dir : folder for ``<name>.npz`` + ``<name>.json``; partial work lives in ``.<name>.parts/`` there.
    workers : parallel processes (default: all cores); 1 solves in this process.
    scheduler : a Dask scheduler address (``"tcp://host:8786"``) or ``distributed.Client``; overrides workers.
    chunk_size : samples per task (and per resumable part file).
    force : regenerate even if a matching dataset exists.
    """
    g = load_grid(grid)
    spec = OPFDatasetSpec(
        grid=g.name,
        n_samples=int(n_samples)
        if isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, bool)
        else n_samples,
        load_range=tuple(float(x) for x in load_range),
        cost_range=None if cost_range is None else tuple(float(x) for x in cost_range),
        seed=seed,
        grid_fingerprint=grid_fingerprint(g),
    )
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    workers = available_cpus() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir)
    check_writable(out)
    final = out / f"{spec.stem}.npz"
    if final.exists() and not force:
        try:
            return OPFDataset.load(final, expect=spec, grid=g)
        except DatasetError:
            pass  # incomplete or damaged: regenerate below
    parts = _Parts(out / f".{spec.stem}.parts")
    if force and parts.folder.exists():
        shutil.rmtree(parts.folder)
    parts.folder.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    done = parts.load()
    n_attempt = n_samples
    with tqdm(total=n_samples, desc=f"AC-OPF {g.name}", unit="solve", disable=not progress) as bar:
        while True:
            n_ok = sum(1 for i in range(n_attempt) if i in done and done[i]["success"])
            bar.n = min(sum(1 for i in range(n_attempt) if i in done), bar.total)
            bar.refresh()
            todo = [i for i in range(n_attempt) if i not in done]
            if not todo:
                if n_ok >= n_samples:
                    break
                n_failed = n_attempt - n_ok
                if n_failed > MAX_FAILURE_SHARE * n_attempt:
                    raise RuntimeError(
                        f"{n_failed} of {n_attempt} AC-OPF solves on {g.name} failed to converge with loads "
                        f"x U{spec.load_range}; the range is likely infeasible for this grid: narrow it "
                        f"(e.g. --load-range 0.8 1.0). Solved samples are kept in {parts.folder} for a rerun."
                    )
                bar.total += n_samples - n_ok
                n_attempt += n_samples - n_ok
                continue
            chunks = [todo[k : k + chunk_size] for k in range(0, len(todo), chunk_size)]
            _run_chunks(g, spec, chunks, parts, workers, scheduler, bar)
            done = parts.load()

    ok = sorted(i for i in range(n_attempt) if done[i]["success"])[:n_samples]
    failed = sorted(i for i in range(n_attempt) if not done[i]["success"] and i <= ok[-1])
    arrays = {k: np.stack([done[i][k] for i in ok]) for k in ARRAYS}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": json.loads(json.dumps(asdict(spec), default=list)),
        "grid": g.name,
        "grid_source": g.source,
        "base_mva": g.base_mva,
        "bus_ids": g.bus_ids.tolist(),
        "load_bus_ids": g.bus_ids[g.load_bus].tolist(),
        "gen_bus_ids": g.bus_ids[g.gen_bus].tolist(),
        "bus_order": "case file bus table order, isolated buses removed",
        "units": UNITS,
        "shapes": {k: list(a.shape) for k, a in arrays.items()},
        "n_samples": len(ok),
        "n_attempted": len(ok) + len(failed),
        "n_failed": len(failed),
        "failed_indices": failed,
        "load_range": list(spec.load_range),
        "cost_range": None if spec.cost_range is None else list(spec.cost_range),
        "seed": seed,
        "solver": {
            "name": "ipopt",
            "formulation": "MATPOWER AC-OPF (polynomial costs, |S| branch limits)",
            "warm_start": "optimum at the centre of the load range (else at nominal load)",
        },
        "pfbook_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_npz(final, arrays)
    meta["sha256"] = sha256_file(final)
    atomic_write_json(final.with_suffix(".json"), meta)
    shutil.rmtree(parts.folder, ignore_errors=True)
    return OPFDataset(arrays, meta, final)


def _version() -> str:
    from pfbook import __version__

    return __version__
