"""DiffOPF's data: OPF records x_0 = (p_d, q_d, p_g, q_g) per unit, and the PJM-API-style load variant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pfbook.config import data_dir
from pfbook.diffusion import Layout
from pfbook.methods.diffopf.config import DiffOPFConfig
from pfbook.power.grids import Grid, load_grid


@dataclass
class OPFRecords:
    """Training records x_0 = (p_d, q_d, p_g, q_g) and the held-out test records, with their layout."""

    grid: Grid
    train: np.ndarray  # (n, 2 n_load + 2 n_gen)
    test: dict  # arrays of the test dataset: pd, qd, pg, qg, cost, cost_factors, v, ...
    columns: list[str]
    n_load: int
    n_gen: int
    layout: Layout
    datasets: tuple

    @property
    def load_cols(self) -> slice:
        return slice(0, 2 * self.n_load)

    @property
    def gen_cols(self) -> slice:
        return slice(2 * self.n_load, 2 * self.n_load + 2 * self.n_gen)

    def test_loads(self) -> np.ndarray:
        return np.concatenate([self.test["pd"], self.test["qd"]], axis=1)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """(pd, qd, pg, qg) of records laid out as ``train``."""
        nl, ng = self.n_load, self.n_gen
        return x[..., :nl], x[..., nl : 2 * nl], x[..., 2 * nl : 2 * nl + ng], x[..., 2 * nl + ng :]


FEATURES = ("pd", "qd", "pg", "qg")


def load_records(cfg: DiffOPFConfig, progress: bool = False, out_dir: "str | Path | None" = None) -> OPFRecords:
    """The training dataset (seed ``cfg.seed``) and the test dataset (seed ``cfg.seed + 1``), generated once
    (in ``out_dir``, by default the data folder of :func:`pfbook.config.data_dir`)."""
    from pfbook.power.datasets import ac_opf_dataset

    g = load_grid(cfg.grid)
    kw = dict(load_range=cfg.load_range, cost_range=cfg.cost_range, out_dir=out_dir or data_dir(), progress=progress)
    train = ac_opf_dataset(g, cfg.n_samples, seed=cfg.seed, **kw)
    test = ac_opf_dataset(g, cfg.n_test, seed=cfg.seed + 1, **kw)
    x, cols = train.features(FEATURES)
    return OPFRecords(
        grid=g,
        train=x,
        test=dict(test.arrays),
        columns=cols,
        n_load=g.n_load,
        n_gen=g.n_gen,
        layout=Layout(features=tuple(cols), grid=g.name, shape=(len(cols),)),
        datasets=(train, test),
    )
