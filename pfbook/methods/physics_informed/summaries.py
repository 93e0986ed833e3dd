"""Published physics-informed summaries (``book/results/<grid>/``) and the table across grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from pfbook.evaluation.summaries import load_table_summaries, save_table_summary
from pfbook.methods.physics_informed.config import PhysicsInformedConfig

SUMMARY_NAME = "physics-informed-summary-{profile}.json"


def save_summary(
    folder: "str | Path", table: pd.DataFrame, cfg: PhysicsInformedConfig, profile: str, extra: dict | None = None
) -> Path:
    """Write ``table`` with its configuration to ``folder/physics-informed-summary-<profile>.json`` (atomically)."""
    return save_table_summary(folder, SUMMARY_NAME, table, cfg, profile, extra)


def load_summaries(*folders: "str | Path", profiles: Sequence[str] | None = None) -> pd.DataFrame:
    """Every ``<folder>/<grid>/physics-informed-summary-<profile>.json`` as one table indexed by (grid, profile, model).

    ``folders`` are searched in order and the first summary found for a (grid, profile) wins, so a fresh run in
    ``runs/`` shadows the published one in ``book/results/``.
    """
    return load_table_summaries(folders, SUMMARY_NAME, profiles, "model")
