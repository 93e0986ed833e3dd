"""AC-OPF records as diffusion-model data: the (p, q, v, θ) layout, its train/test split and its physics.

Shared by the chapters that model power-flow records (the primer and the constrained-diffusion method):
the record layout of Hoseinpour & Dvorkin (every bus's p, q, v, θ), the nodal mismatch of records in physical units,
and R_H / H of model-space samples for guidance (Hoseinpour & Dvorkin, eq. 8a-8b and 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pfbook.config import data_dir
from pfbook.diffusion import Layout, Normaliser, denormalised
from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import grid_tensors, nodal_mismatch

#: Record layout: every bus's net active and reactive injection, voltage magnitude and angle.
FEATURES = ("p", "q", "v", "theta")


@dataclass
class RecordData:
    """The records split into training and held-out rows, with their layout."""

    grid: Grid
    train: np.ndarray
    test: np.ndarray
    columns: list[str]
    layout: Layout
    dataset: object


def load_data(cfg, progress: bool = False) -> RecordData:
    """AC-OPF records of ``cfg.grid`` (any config with grid, n_samples, load_range, seed, test_fraction) (generated once, then read from the data folder), split by a seeded shuffle."""
    from pfbook.power.datasets import ac_opf_dataset

    ds = ac_opf_dataset(
        cfg.grid, cfg.n_samples, load_range=cfg.load_range, seed=cfg.seed, out_dir=data_dir(), progress=progress
    )
    x, cols = ds.features(FEATURES)
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_test = max(2, int(round(cfg.test_fraction * len(x))))
    grid = load_grid(cfg.grid)
    return RecordData(
        grid=grid,
        train=x[order[n_test:]],
        test=x[order[:n_test]],
        columns=cols,
        layout=Layout(features=tuple(cols), grid=grid.name, shape=(len(cols),)),
        dataset=ds,
    )


def split_features(x: torch.Tensor, n_bus: int) -> tuple[torch.Tensor, ...]:
    """(p, q, v, θ) from records laid out as in :data:`FEATURES` (each (..., n_bus))."""
    return tuple(x[..., k * n_bus : (k + 1) * n_bus] for k in range(len(FEATURES)))


def mismatch(grid: Grid, x, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodal active and reactive mismatch (p.u.) of records ``x`` in physical units, each (..., n_bus)."""
    x = torch.as_tensor(x, dtype=dtype)
    gt = grid_tensors(grid, x.device, dtype)
    return nodal_mismatch(gt, *split_features(x, grid.n_bus))


def max_mismatch(grid: Grid, x) -> np.ndarray:
    """Per record, the largest |ΔP| or |ΔQ| over buses (p.u., float64)."""
    dp, dq = mismatch(grid, x)
    return torch.maximum(dp.abs().amax(-1), dq.abs().amax(-1)).cpu().numpy()


def imbalance_residual(
    grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """R_H(x̂_0) = Σ_b ΔP_b² + ΔQ_b² (Hoseinpour & Dvorkin, eq. 10) of model-space x̂_0, computed in per unit.

    The de-normalisation happens inside, so :class:`~pfbook.diffusion.GradientGuidance` steps in model
    space on a residual in physical units. The physics runs in ``dtype`` (float64 by default: a float32
    mismatch bottoms out near 1e-5 p.u.), and gradients flow back to the model's float32.
    """
    gt = grid_tensors(grid, device, dtype)

    def residual(x: torch.Tensor) -> torch.Tensor:
        dp, dq = nodal_mismatch(gt, *split_features(x, grid.n_bus))
        return (dp * dp + dq * dq).sum(-1)

    return denormalised(residual, normaliser, dtype=dtype)


def mismatch_constraint(
    grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """H(x̂_0) = (ΔP, ΔQ) per bus (p.u.), shape (B, 2 n_bus), of model-space x̂_0: the constraints H = 0."""
    gt = grid_tensors(grid, device, dtype)

    def constraint(x: torch.Tensor) -> torch.Tensor:
        dp, dq = nodal_mismatch(gt, *split_features(x, grid.n_bus))
        return torch.cat([dp, dq], dim=-1)

    return denormalised(constraint, normaliser, dtype=dtype)
