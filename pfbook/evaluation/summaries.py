"""Chapter summaries: the tables of a run with its configuration, written as JSON and read back across grids.

A method chapter stores what it computed in ``runs/<grid>/<name>-summary-<profile>.json`` (one file per profile, so
a ``ci`` smoke run never overwrites a ``default`` or ``paper`` result); the book publishes chosen files under
``book/results/<grid>/``. Readers search several folders in order and the first summary found for a (grid, profile)
wins, so a fresh run shadows the published one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from pfbook.config import PROFILES, check_profile
from pfbook.io import DatasetError, atomic_write_json, json_safe


def write_summary(path: Path, cfg: Any, profile: str, identity: dict, **content: Any) -> Path:
    """A chapter's result file at ``path``: ``identity`` (e.g. the grid), the profile, the configuration
    (``cfg.to_dict()``), the date, then ``content`` (its tables and extras), made JSON-safe and written atomically."""
    import time

    obj = {
        **identity,
        "profile": profile,
        "config": cfg.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **content,
    }
    return atomic_write_json(path, json_safe(obj))


def read_summaries(folders, pattern: str, profiles, what: str = "chapter summary") -> list[dict]:
    """The chapter summaries ``<folder>/<grid>/<pattern with {profile}>`` of ``folders``, searched in order; the first
    one found for a (grid or system, profile) wins, so a fresh run in ``runs/`` shadows the book's published result. A file
    that is not one (``what`` names the kind in the error) is a :class:`DatasetError` naming the file."""
    out, seen = [], set()
    for folder in folders:
        for profile in profiles:
            for path in sorted(Path(folder).glob(f"*/{pattern.format(profile=profile)}")):
                try:
                    obj = json.loads(path.read_text())
                    key = (obj["grid"] if "grid" in obj else obj["system"], obj["profile"])
                except (ValueError, KeyError, TypeError) as err:
                    raise DatasetError(
                        f"{path} is not a {what} ({err!r}); delete it or rerun the chapter for its grid to rewrite it"
                    ) from None
                if key not in seen:
                    seen.add(key)
                    out.append(obj)
    return out


def summary_table(folders, pattern: str, profiles, level: str):
    """The ``table`` of every summary :func:`read_summaries` finds, stacked as one DataFrame indexed by
    (grid, profile, ``level``), ``level`` naming the rows of each table."""
    import pandas as pd

    frames = []
    for obj in read_summaries(folders, pattern, profiles):
        df = pd.DataFrame.from_dict(obj["table"], orient="index").astype(float)
        df.index.name = level
        frames.append(df.assign(grid=obj["grid"], profile=obj["profile"]).reset_index())
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames).set_index(["grid", "profile", level])


def save_table_summary(
    folder: "str | Path", pattern: str, table, cfg: Any, profile: str, extra: dict | None = None
) -> Path:
    """``table`` (a DataFrame, one row per model or sample set) with its configuration, written atomically to
    ``folder/<pattern with {profile}>``, identified by ``cfg.grid``."""
    return write_summary(
        Path(folder) / pattern.format(profile=check_profile(profile)),
        cfg,
        profile,
        {"grid": cfg.grid},
        table=table.to_dict(orient="index"),
        **(extra or {}),
    )


def load_table_summaries(folders: Sequence["str | Path"], pattern: str, profiles: Sequence[str] | None, level: str):
    """Every table summary :func:`save_table_summary` wrote under ``folders`` (first folder first) for ``profiles``
    (default: all), stacked as one DataFrame indexed by (grid, profile, ``level``)."""
    return summary_table(folders, pattern, [check_profile(p) for p in (profiles or PROFILES)], level)
