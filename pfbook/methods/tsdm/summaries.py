"""Published TSDM summaries (``book/results/<system>/``) and the tables across systems."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from pfbook.config import check_profile
from pfbook.evaluation.summaries import read_summaries, write_summary
from pfbook.io import DatasetError
from pfbook.methods.tsdm.config import TSDMConfig

# ---------------------------------------------------------------------------------------- results
SUMMARY_NAME = "tsdm-summary-{system}-{profile}.json"
#: what Table I scores: WLS states (eq. 36); summaries without the field scored the measurement channels
SCORED = "states"


def save_summary(
    folder: "str | Path", tables: Mapping[str, pd.DataFrame], cfg: TSDMConfig, profile: str, extra: dict | None = None
) -> Path:
    """Write the tables with the configuration to ``folder/tsdm-summary-<system>-<profile>.json`` (atomically)."""
    return write_summary(
        Path(folder) / SUMMARY_NAME.format(system=cfg.system, profile=check_profile(profile)),
        cfg,
        profile,
        {"system": cfg.system},
        tables={k: v.reset_index().to_dict(orient="records") for k, v in tables.items()},
        scored=SCORED,
        **(extra or {}),
    )


def tables_across(*folders: "str | Path", profile: str = "default", table: str = "table1") -> pd.DataFrame:
    """Table I (``"table1"``, SCADA systems) or Table III (``"table3"``, PMU systems) of every stored run.

    Reads ``<folder>/<grid>/tsdm-summary-<system>-<profile>.json`` in ``folders`` (first found per system wins, so a
    fresh run in ``runs/`` shadows a published one in ``book/results/``); rows are indexed by (system, scenario), with
    the run's date in the column ``run`` and what its Table I scores in ``scored`` (``"states"``; summaries written
    before the tables scored states say ``"measurements"``). A PMU system met in several runs is taken from the
    first.
    """
    if table not in ("table1", "table3"):
        raise ValueError(f"unknown table {table!r}; choose 'table1' (SCADA) or 'table3' (PMU)")
    frames, seen = [], set()
    for obj in read_summaries(folders, "tsdm-summary-*-{profile}.json", [check_profile(profile)], what="TSDM summary"):
        try:
            system = obj["system"] if table == "table1" else obj["pmu_case"]
            df = pd.DataFrame(obj["tables"][table]).set_index("index")
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(
                f"the {obj.get('system')} TSDM summary has no {table} ({err!r}); rerun the chapter "
                f"for it to rewrite the file"
            ) from None
        if system in seen:
            continue
        seen.add(system)
        df.index.name = "scenario"
        df = df.astype(float).assign(
            system=system, run=obj.get("created", "")[:10], scored=obj.get("scored", "measurements")
        )
        if table == "table3":
            df["SCADA run"] = obj.get("system", "")  # which chapter run the PMU table comes from
        frames.append(df.reset_index().set_index(["system", "scenario"]))
    return pd.concat(frames) if frames else pd.DataFrame()
