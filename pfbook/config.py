"""Run profiles and per-chapter configuration objects.

Every chapter takes ``profile`` in its papermill ``parameters`` cell:

* ``ci``      -- the whole notebook in about a minute on 2 CPU cores (what the test suite runs);
* ``default`` -- what the book build runs on a laptop CPU: results that already show the effect;
* ``paper``   -- the paper's own sizes and hyperparameters, meant for a GPU.

A chapter's settings are a dataclass built by ``for_profile``; the notebook and the command line both
build it the same way and store it (``asdict``) next to every result so a run can be reproduced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

#: The run profiles every chapter understands.
PROFILES: tuple[str, ...] = ("ci", "default", "paper")

#: Environment variable that selects the profile when none is given explicitly (nbmake uses it).
PROFILE_ENV = "PFBOOK_PROFILE"

#: Environment variable that overrides where datasets are stored.
DATA_ENV = "PFBOOK_DATA"


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one): the default number of
    worker processes for dataset generation and the load-flow solves."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        return os.cpu_count() or 1


def default_profile() -> str:
    """The profile named by ``$PFBOOK_PROFILE``, or ``"default"``."""
    return check_profile(os.environ.get(PROFILE_ENV, "default"))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The folder holding ``_toc.yml``, searched from ``start`` (default: the working folder) upward."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_toc.yml").is_file():
            return d
    return None


def published_results() -> Path:
    """The book's published results, ``book/results/<grid>/``: chapter summaries of batch runs over grids."""
    root = book_root()
    return (root / "book" / "results") if root is not None else Path("results")


def data_dir() -> Path:
    """Where datasets live: ``$PFBOOK_DATA``, else the book's ``data/`` folder, else ``./data``.

    Chapters run in ``book/`` and the command line at the repository root; both find the same folder.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    root = book_root()
    return (root / "data") if root is not None else Path("data")


@dataclass(frozen=True)
class OPFDataConfig:
    """The AC-OPF dataset of the "Power flow and AC-OPF data" chapter."""

    grid: str = "case5"
    n_samples: int = 1000                    # converged AC-OPF solves to keep
    load_range: tuple[float, float] = (0.8, 1.0)   # per-load scaling of nominal (P, Q), power factor kept
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str, grid: str = "case5", seed: int = 0) -> "OPFDataConfig":
        n = {"ci": 60, "default": 1000, "paper": 5000}[check_profile(profile)]
        return replace(cls(), grid=grid, n_samples=n, seed=seed)


def apply_overrides(cfg, overrides: "dict | None"):
    """``cfg`` (a chapter's settings dataclass) with the fields named in ``overrides`` replaced.

    This is how a chapter's papermill parameter ``overrides`` (and ``pfbook rerun --set KEY=VALUE``) changes single
    settings of a profile, e.g. ``{"n_test": 100, "n_draw": 250}``. Values are checked against the field's
    current type (an int where an int is, a tuple from a list); an unknown field is an error that lists the
    known ones.
    """
    from dataclasses import fields, is_dataclass

    if not overrides:
        return cfg
    if not is_dataclass(cfg):
        raise TypeError(f"overrides apply to a settings dataclass, not {type(cfg).__name__}")
    if not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of setting -> value; got {type(overrides).__name__}")
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{type(cfg).__name__} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings are: {', '.join(sorted(known))}")
    changes = {}
    for name, value in overrides.items():
        current = getattr(cfg, name)
        changes[name] = _coerce(name, value, current)
    return replace(cfg, **changes)


def _coerce(name: str, value, current):
    """``value`` converted to the type of ``current`` where that is safe, else a ValueError naming the setting."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    elif isinstance(current, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    else:
        return value
    raise ValueError(f"setting {name!r} expects a {type(current).__name__} (now {current!r}); got {value!r}")
