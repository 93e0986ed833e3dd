"""The "Diffusion models for power-system data" chapter: its settings per profile and its few helpers.

This module is part of the outer layer: it joins the power-system layer (datasets, the torch physics) with the
diffusion core (which knows nothing of grids), so that the chapter stays a handful of calls.

The data are AC-OPF solutions x = (p, q, v, θ) per bus (case5: 20 features), the setting of Hoseinpour & Dvorkin; the
physics residual used to judge and to guide samples is the nodal mismatch of :func:`pfbook.power.physics.nodal_mismatch`
in per unit, computed from de-normalised samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.config import ChapterConfig
from pfbook.diffusion import DiffusionModel, Normaliser, Sampler, Schedule, TrainConfig, denormalised
from pfbook.diffusion.traces import forward_trace, reverse_trace
from pfbook.evaluation.distances import mean_w1_over_sigma, mmd_rbf
from pfbook.methods.constrained.records import (  # noqa: F401
    FEATURES,
    RecordData,
    imbalance_residual,
    load_data,
    max_mismatch,
    mismatch,
    mismatch_constraint,
    split_features,
)
from pfbook.power.grids import Grid

PrimerData = RecordData

#: the record layout of Hoseinpour & Dvorkin: net injections, voltage magnitude and angle at every bus


@dataclass(frozen=True)
class PrimerConfig(ChapterConfig):
    """Settings of the primer chapter (one per profile; ``for_profile`` builds them)."""

    PROFILES = {
        "ci": {
            "n_samples": 200,
            "width": 128,
            "depth": 3,
            "n_generate": 400,
            "ddim_steps": (10, 50, 200),
            "train": {"steps": 1200, "batch_size": 128, "lr": 2e-3, "lr_decay_every": 400, "ema_decay": 0.99},
        },
        "default": {},
        "paper": {
            "n_samples": 5000,
            "width": 500,
            "depth": 6,
            "n_generate": 5000,
            "ddim_steps": (10, 20, 50, 100, 250, 500),
            "train": {"steps": 150_000, "lr": 1e-4, "lr_decay_every": 15_000, "ema_decay": 0.9999},
        },
    }

    grid: str = "case5"
    n_samples: int = 1000  # AC-OPF records (loads x U(load_range), as in Hoseinpour & Dvorkin)
    load_range: tuple[float, float] = (0.8, 1.0)
    test_fraction: float = 0.2  # records held out to judge samples against
    T: int = 1000  # diffusion steps, linear β 1e-4 -> 0.02 (Hoseinpour & Dvorkin)
    width: int = 256  # MLP width (Hoseinpour & Dvorkin: 500)
    depth: int = 4  # hidden layers (Hoseinpour & Dvorkin: 6)
    # 6000 optimiser steps of 500 records, lr 1e-3 x γ = 0.6 (Hoseinpour & Dvorkin) every 1500 steps, EMA 0.999
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=6000, batch_size=500, lr=1e-3, lr_decay_every=1500, lr_decay=0.6, ema_decay=0.999
        )
    )
    n_generate: int = 2000  # samples drawn per sampler
    ddim_steps: tuple[int, ...] = (10, 20, 50, 100, 250)
    guidance_scale: float = 1.0  # λ of the gradient guidance (model space; R in p.u.²)
    seed: int = 0
    device: str = "cpu"

    def train_config(self) -> TrainConfig:
        return self.train


# ---------------------------------------------------------------------------------------- data
# ---------------------------------------------------------------------------------------- the chapter's tables
def forward_imbalance(
    grid: Grid, x: np.ndarray, normaliser: Normaliser, schedule: Schedule, timesteps: Sequence[int], seed: int = 0
) -> pd.DataFrame:
    """Mean nodal mismatch magnitude (p.u.) of real records noised to each t, de-normalised (Wang et al., Fig. 1)."""
    z = normaliser(torch.as_tensor(x, dtype=torch.float64))
    S = mismatch_magnitude(grid, normaliser)
    trace = forward_trace(schedule, z, lambda x_t, t: S(x_t), timesteps, seed=seed)
    return pd.DataFrame(
        {
            "t": [int(t) for t in timesteps],
            "alpha_bar": [float(schedule.alpha_bar[int(t)]) for t in timesteps],
            "mean |S| (p.u.)": trace,
        }
    )


def mismatch_magnitude(grid: Grid, normaliser: Normaliser):
    """|S_b| = sqrt(ΔP_b² + ΔQ_b²) per bus (p.u., float64) of model-space records, de-normalised first."""

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        dp, dq = mismatch(grid, x)
        return torch.sqrt(dp**2 + dq**2)

    return denormalised(magnitude, normaliser, dtype=torch.float64)


def judge(x: np.ndarray, reference: np.ndarray, normaliser: Normaliser, grid: Grid) -> dict:
    """Distribution distances to ``reference`` and the physics residual of samples ``x`` (physical units)."""
    worst = max_mismatch(grid, x)
    return {
        "W1/σ": mean_w1_over_sigma(x, reference),
        "MMD²": mmd_rbf(normaliser(torch.as_tensor(x)), normaliser(torch.as_tensor(reference)), max_n=2000),
        "median max|ΔS| (p.u.)": float(np.median(worst)),
        "p90 max|ΔS| (p.u.)": float(np.quantile(worst, 0.9)),
    }


def compare_samplers(
    dm: DiffusionModel,
    samplers: Mapping[str, Sampler],
    reference: np.ndarray,
    grid: Grid,
    n: int,
    seed: int = 0,
    guidance=None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Draw ``n`` samples with each sampler; time it; judge it against held-out ``reference`` records.

    Columns: network calls, seconds, mean per-feature W1 in std units, MMD² (normalised features), median and
    90th percentile of the per-sample largest nodal mismatch (p.u.). Returns the table and the samples
    (physical units).
    """
    rows, out = [], {}
    for name, sampler in samplers.items():
        y, seconds = dm.draw(n, sampler, guidance=guidance, seed=seed)
        rows.append(
            {
                "sampler": name,
                "network calls": sampler.n_steps,
                "seconds": seconds,
                **judge(y, reference, dm.normaliser, grid),
            }
        )
        out[name] = y
    return pd.DataFrame(rows).set_index("sampler"), out


def residual_trajectory(
    dm: DiffusionModel, sampler: Sampler, grid: Grid, n: int, guidance=None, seed: int = 0
) -> pd.DataFrame:
    """Mean nodal mismatch |S| (p.u.) of the (guided) x̂_0 at every reverse step, for one batch of ``n``."""
    _, ts, trace = reverse_trace(
        dm, sampler, n, mismatch_magnitude(grid, dm.normaliser), on="x0", guidance=guidance, seed=seed
    )
    return pd.DataFrame({"t": ts, "mean |S| of x̂0 (p.u.)": trace})


def plot_marginals(arrays: Mapping[str, np.ndarray], columns: Sequence[str], which: Sequence[int], bins: int = 30):
    """Histograms of the columns ``which``, one panel each, with bins fitted to each column's own range."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(which), figsize=(3.2 * len(which), 2.6), squeeze=False)
    for ax, j in zip(axes[0], which):
        first = next(iter(arrays.values()))[:, j]
        lo, hi = np.quantile(first, [0.001, 0.999])
        pad = 0.25 * (hi - lo) + 1e-12
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        for label, a in arrays.items():
            ax.hist(
                np.clip(a[:, j], edges[0], edges[-1]), bins=edges, density=True, histtype="step", lw=1.4, label=label
            )
        ax.set(xlabel=columns[j], yticks=[])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_quality_vs_time(table: pd.DataFrame, n: int):
    """Two panels against sampling time: W1/σ to held-out records, and the median largest mismatch.

    Rows without a time (the training-records reference) become a dashed line in the first panel.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
    timed = table.dropna(subset=["seconds"])
    for name, row in timed.iterrows():
        mark = "s" if name.startswith("DDPM") else ("^" if "OV" in name else "o")
        for a, col in zip(ax, ("W1/σ", "median max|ΔS| (p.u.)")):
            a.scatter(row["seconds"], row[col], marker=mark)
            a.annotate(name, (row["seconds"], row[col]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, row in table.drop(timed.index).iterrows():
        ax[0].axhline(row["W1/σ"], color="grey", lw=1, ls="--", label=name)
    if len(table) > len(timed):
        ax[0].legend(fontsize=7, loc="upper right")
    ax[0].set(xscale="log", xlabel=f"seconds for {n} samples", ylabel="W1/σ to held-out records")
    ax[1].set(xscale="log", yscale="log", xlabel=f"seconds for {n} samples", ylabel="median max |ΔS| (p.u.)")
    fig.tight_layout()
    return fig
