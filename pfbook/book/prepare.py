"""Data the chapters need, generated before the book is built.

``make book`` runs ``pfbook data prepare --profile default`` before ``jupyter-book build``, and
``make test`` runs it with ``--profile ci`` before the notebooks are executed, so that a chapter
finds its datasets already on disk (and cached) instead of generating them inside a notebook cell.

A chapter that needs a dataset registers a *recipe* here, in this module, with :func:`dataset`::

    @dataset("opf-case5", "AC-OPF solutions of case5 for the constrained-diffusion chapter")
    def _opf_case5(profile: str, data_dir: Path, progress: bool):
        from pfbook.power.datasets import ac_opf_dataset       # import inside: keeps the CLI fast

        n = {"ci": 200, "default": 5000, "paper": 5000}[profile]
        return ac_opf_dataset("case5", n, out_dir=data_dir, progress=progress)

A recipe receives the profile name, the data folder and whether to show progress, and returns
what it wrote: a path, a list of paths, or an object with a ``.path`` attribute (such as the result
of :func:`pfbook.power.datasets.ac_opf_dataset`). Recipes must be idempotent: the dataset generators
cache their output, so running ``prepare`` twice costs nothing the second time.

Recipes live here rather than beside the code they call because this module is part of the
package's outermost layer (the command line and the book); lower layers never import it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfbook.config import PROFILES, ChapterConfig, check_profile
from pfbook.config import data_dir as default_data_dir


@dataclass(frozen=True)
class OPFDataConfig(ChapterConfig):
    """The AC-OPF dataset of the "Power flow and AC-OPF data" chapter."""

    PROFILES = {"ci": {"n_samples": 60}, "default": {}, "paper": {"n_samples": 5000}}

    grid: str = "case5"
    n_samples: int = 1000  # converged AC-OPF solves to keep
    load_range: tuple[float, float] = (0.8, 1.0)  # per-load scaling of nominal (P, Q), power factor kept
    seed: int = 0


@dataclass(frozen=True)
class DataRecipe:
    """One dataset a chapter needs: a name, a line of help, and the function that makes it."""

    name: str
    help: str
    make: Callable[[str, Path, bool], Any]
    profiles: tuple[str, ...] = PROFILES


@dataclass
class Prepared:
    """What one recipe produced."""

    name: str
    paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0


_RECIPES: dict[str, DataRecipe] = {}


def dataset(name: str, help: str, profiles: Iterable[str] = PROFILES):
    """Register the decorated function as the recipe ``name`` (run for the given profiles only)."""
    profiles = tuple(check_profile(p) for p in profiles)

    def register(make: Callable[[str, Path, bool], Any]) -> Callable[[str, Path, bool], Any]:
        if name in _RECIPES:
            raise ValueError(f"a data recipe named {name!r} is already registered")
        _RECIPES[name] = DataRecipe(name=name, help=help, make=make, profiles=profiles)
        return make

    return register


def recipes(profile: str | None = None) -> list[DataRecipe]:
    """The registered recipes, in registration order; only those run for ``profile`` if given."""
    if profile is not None:
        check_profile(profile)
    return [r for r in _RECIPES.values() if profile is None or profile in r.profiles]


def _paths(result: Any) -> list[Path]:
    if result is None:
        return []
    if isinstance(result, (str, os.PathLike)):
        return [Path(result)]
    if hasattr(result, "path"):
        return [Path(result.path)]
    if isinstance(result, Iterable):
        return [p for item in result for p in _paths(item)]
    raise TypeError(
        f"a data recipe returned {type(result).__name__}; return a path, a list of "
        f"paths or an object with a .path attribute"
    )


def prepare(
    profile: str = "default",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    only: Iterable[str] | None = None,
) -> list[Prepared]:
    """Make sure ``data_dir`` exists and run every recipe registered for ``profile``.

    ``data_dir`` defaults to :func:`pfbook.config.data_dir` (``$PFBOOK_DATA``, else the book's
    ``data/``), the folder the chapters read from. ``only`` runs the named recipes instead, at the sizes of
    ``profile`` even where the book build needs them in other profiles only (e.g. ``scada-tsdm`` for a TSDM
    rerun on case57 with ``default``); an unknown name is a ``ValueError``.
    """
    check_profile(profile)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    todo = recipes(profile)
    if only is not None:
        only = list(only)
        unknown = [n for n in only if n not in _RECIPES]
        if unknown:
            known = ", ".join(_RECIPES) or "none registered yet"
            raise ValueError(f"unknown data recipe(s) {', '.join(unknown)}; known: {known}")
        todo = [r for r in _RECIPES.values() if r.name in only]
    done = []
    for recipe in todo:
        t0 = time.perf_counter()
        result = recipe.make(profile, data_dir, progress)
        done.append(Prepared(recipe.name, _paths(result), time.perf_counter() - t0))
    return done


# ---------------------------------------------------------------------- recipes
# Chapters register the datasets they need below (see the module docstring).


def _opf(cfg, data_dir: Path, progress: bool):
    """The AC-OPF dataset a chapter config (grid, n_samples, load_range, seed) describes."""
    from pfbook.power.datasets import ac_opf_dataset  # imported here: keeps the command line fast

    return ac_opf_dataset(
        cfg.grid, cfg.n_samples, load_range=cfg.load_range, seed=cfg.seed, out_dir=data_dir, progress=progress
    )


@dataset("opf-case5", "AC-OPF solutions of case5 for the chapter 'Power flow and AC-OPF data' and the primer")
def _opf_case5(profile: str, data_dir: Path, progress: bool):
    return _opf(OPFDataConfig.for_profile(profile, grid="case5"), data_dir, progress)


@dataset("scada-case30", "SCADA measurements of case30 driven by simbench profiles, for 'Measurement data'")
def _scada_case30(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.tsdm.config import SCADA_DAYS  # imported here: keeps the command line fast
    from pfbook.power.measurements import scada_dataset

    start_day, n_days = SCADA_DAYS[profile]
    return scada_dataset("case30", start_day=start_day, n_days=n_days, seed=0, out_dir=data_dir, progress=progress)


@dataset("opf-constrained", "AC-OPF solutions (p, q, v, θ) of PGLib's PJM 5-bus for 'Domain-constrained diffusion'")
def _opf_constrained(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.constrained import ConstrainedConfig  # imported here: keeps the command line fast

    return _opf(ConstrainedConfig.for_profile(profile, grid=ConstrainedConfig.grid), data_dir, progress)


@dataset("pmu-ieee39", "ANDES PMU records of IEEE 39-bus events, for 'Measurement data'")
def _pmu_ieee39(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.tsdm.config import PMU_EVENTS  # imported here: keeps the command line fast
    from pfbook.power.pmu import pmu_dataset

    n_events, t_end = PMU_EVENTS[profile]
    return pmu_dataset("ieee39", n_events, t_end=t_end, seed=0, out_dir=data_dir, progress=progress)


@dataset(
    "opf-diffopf",
    "AC-OPF records (p_d, q_d, p_g, q_g) with sampled loads and linear costs, and held-out test loads, for 'DiffOPF'",
)
def _opf_diffopf(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.diffopf import PROFILE_GRIDS, DiffOPFConfig, load_records  # imported here: keeps the CLI fast

    grids = dict.fromkeys((DiffOPFConfig.grid, *PROFILE_GRIDS[profile]))  # the chapter's main grid first
    return [
        ds
        for g in grids
        for ds in load_records(DiffOPFConfig.for_profile(profile, grid=g), progress=progress, out_dir=data_dir).datasets
    ]


@dataset(
    "opf-physics-informed",
    "AC-OPF records of case14 (loads U(0.8, 1.2), costs U(0.5, 1.5)) for 'Physics-informed DDPM'",
)
def _opf_physics_informed(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.physics_informed import PhysicsInformedConfig
    from pfbook.power.datasets import ac_opf_dataset  # imported here: keeps the command line fast

    cfg = PhysicsInformedConfig.for_profile(profile, grid="case14")
    return ac_opf_dataset(
        cfg.grid,
        cfg.n_samples,
        load_range=cfg.load_range,
        cost_range=cfg.cost_range,
        seed=cfg.seed,
        out_dir=data_dir,
        progress=progress,
    )


@dataset(
    "scada-tsdm",
    "SCADA measurements of case57 and case118 for 'TSDM recovery' (case30: scada-case30)",
    profiles=("paper",),
)
def _scada_tsdm(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.tsdm import scada_data  # imported here: keeps the command line fast

    return [scada_data(g, profile, data_dir, progress) for g in ("case57", "case118")]


@dataset("pmu-npcc", "ANDES PMU records of NPCC 140-bus events, for 'TSDM recovery'", profiles=("paper",))
def _pmu_npcc(profile: str, data_dir: Path, progress: bool):
    from pfbook.methods.tsdm import pmu_data  # imported here: keeps the command line fast

    return pmu_data("npcc", profile, data_dir, progress)
