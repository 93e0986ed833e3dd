"""Published DiffOPF summaries (``book/results/<grid>/``) and the tables across grids."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from pfbook.config import check_profile
from pfbook.evaluation.summaries import read_summaries, write_summary
from pfbook.methods.diffopf.config import GRID_LABELS, DiffOPFConfig

# ---------------------------------------------------------------------------------------- results
SUMMARY_NAME = "diffopf-summary-{profile}.json"


def save_summary(
    folder: "str | Path",
    tables: Mapping[str, pd.DataFrame],
    cfg: DiffOPFConfig,
    profile: str,
    extra: dict | None = None,
) -> Path:
    """Write the tables with the configuration to ``folder/diffopf-summary-<profile>.json`` (atomically), with the
    ``sources`` of the grids (where each grid's case file comes from; ``extra`` may give them for several grids)."""
    from pfbook.power.grids import load_grid

    extra = {"sources": {cfg.grid: load_grid(cfg.grid).source}, **(extra or {})}
    return write_summary(
        Path(folder) / SUMMARY_NAME.format(profile=check_profile(profile)),
        cfg,
        profile,
        {"grid": cfg.grid},
        tables={k: v.reset_index().astype(object).to_dict(orient="split") for k, v in tables.items()},
        **extra,
    )


def _frame(split: Mapping) -> pd.DataFrame:
    """A table written by :func:`save_summary` back as a DataFrame (two-level columns when it had them)."""
    cols = [tuple(c) if isinstance(c, list) else c for c in split["columns"]]
    df = pd.DataFrame(
        split["data"], columns=pd.MultiIndex.from_tuples(cols) if cols and isinstance(cols[0], tuple) else cols
    )
    return df


def speed_across(*folders: "str | Path", profile: str = "default") -> pd.DataFrame:
    """Per grid of the stored summaries (first folder first), the sampler with the fewest network calls among
    those within tolerance of the reference in the summary's speed table, and its seconds per 250-sample batch:
    sampling, load flows and the two together (CPU or GPU, as the run was made; ``device`` says which)."""
    rows = {}
    for obj in read_summaries(folders, SUMMARY_NAME, [check_profile(profile)], what="DiffOPF summary"):
        if "steps" in obj.get("tables", {}):
            st = _frame(obj["tables"]["steps"]).set_index("index")
            ok = st[st["within"].astype(bool)]
            name = ok.index[int(np.argmin(ok["network calls"].to_numpy()))]
            r, n = st.loc[name], obj["config"]["n_draw"]
            rows[GRID_LABELS.get(obj["grid"], obj["grid"])] = {
                "reference": st.index[0],
                "fewest within": name,
                "sampling s": r["sampling s per load"] * 250 / n,
                "load flow s": r["load flow s per load"] * 250 / n,
                "s per 250-sample batch": r["s per 250-sample batch"],
                "device": obj["config"]["device"],
                "run": obj.get("created", "")[:10],
            }
    return pd.DataFrame.from_dict(rows, orient="index")


#: the index levels of the tables a summary holds
TABLE_INDEX = {"table1": ("test case", "solver"), "table2": ("test case", "ε %")}


def load_tables(*folders: "str | Path", profile: str = "default", table: str = "table1") -> pd.DataFrame:
    """Rows of ``table`` ("table1" or "table2") from every ``<folder>/<grid>/diffopf-summary-<profile>.json``.

    ``folders`` are searched in order and the first row found for an index (test case, solver) or (test case, ε %)
    wins, so a fresh run in ``runs/`` shadows the published one in ``book/results/``. A column ``run`` holds each
    row's date. Files written before the chapter ran on PGLib-OPF's grids (they carry no ``sources``) hold
    MATPOWER's cases under the paper's labels; their rows are labelled "... (MATPOWER)".
    """
    if table not in TABLE_INDEX:
        raise ValueError(f"unknown table {table!r}; choose one of {sorted(TABLE_INDEX)}")
    names = TABLE_INDEX[table]
    rows, seen = [], set()
    for folder in folders:
        for obj in read_summaries([folder], SUMMARY_NAME, [check_profile(profile)], what="DiffOPF summary"):
            try:
                df = _frame(obj["tables"][table])
                df = df.set_index([c for c in df.columns if (c[0] if isinstance(c, tuple) else c) in names])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"the {obj['grid']} summary in {folder} is not a DiffOPF summary with {table} "
                    f"({err!r}); delete it or rerun the chapter for its grid to rewrite it"
                ) from None
            df.index.names = list(names)
            if "sources" not in obj:
                # written before the chapter ran on PGLib-OPF's grids: every grid of such a file is MATPOWER's
                df = df.rename(index=lambda s: s if "(MATPOWER)" in s else f"{s} (MATPOWER)", level=0)
            keep = [k for k in df.index if k not in seen]
            seen.update(keep)
            rows.append(df.loc[keep].assign(run=obj.get("created", "")[:10]))
    if not rows:
        return pd.DataFrame()
    return pd.concat(rows)
