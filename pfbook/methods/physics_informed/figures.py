"""Figures of the physics-informed chapter: the schedules (Fig. 3) and the diversity of generation."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from pfbook.diffusion import Schedule
from pfbook.methods.physics_informed.schedule import gamma
from pfbook.power.grids import Grid


# ---------------------------------------------------------------------------------------- figures
def plot_schedules(
    original: Schedule, learned: Schedule, fwd: Mapping[str, np.ndarray], gT: float, reverse: Mapping[str, np.ndarray]
):
    """Fig. 3: (a) learned vs original ᾱ_t, (b) forward imbalance vs t, (c) reverse imbalance against γ_{t-1}."""
    import matplotlib.pyplot as plt

    T = original.T
    steps = np.arange(1, T + 1)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    ax[0].plot(steps, original.alpha_bar.numpy(), label="original (linear β)")
    ax[0].plot(steps, learned.alpha_bar.detach().numpy(), label="learned (F_ω)")
    ax[0].set(xlabel="step t", ylabel="ᾱ_t", title="(a) schedules")
    bound = gamma(gT, T).numpy()
    for label, r in fwd.items():
        ax[1].plot(steps, r, label=label)
    ax[1].plot(steps, bound, "k--", lw=1, label="γ_t = t γ_T / T")
    ax[1].set(xlabel="step t", ylabel="mean R(x_t) (p.u.)", title="(b) forward process")
    for label, r in reverse.items():
        ax[2].plot(steps[::-1], r, label=label)  # r[i] is R(x_{t-1}) after the step from t = T - i
    ax[2].plot(steps, bound - gT / T, "k--", lw=1, label="bound γ_{t-1}")
    ax[2].set(xlabel="step t", ylabel="mean R(x_{t-1}) (p.u.)", yscale="log", title="(c) reverse process")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_diversity(arrays: Mapping[str, np.ndarray], grid: Grid, gen: int = 2, bins: int = 40):
    """Figs. 4-5: histograms of one generator's active output P_G (default the third, P_G3), real vs models."""
    import matplotlib.pyplot as plt

    if not 0 <= gen < grid.n_gen:
        raise ValueError(f"{grid.name} has generators 0..{grid.n_gen - 1}; got {gen}")
    col = 2 * grid.n_load + 2 * grid.n_bus + gen
    first = next(iter(arrays.values()))[:, col]
    lo, hi = min(a[:, col].min() for a in arrays.values()), max(a[:, col].max() for a in arrays.values())
    edges = np.linspace(lo, hi + 1e-12, bins + 1) if hi > lo else bins
    fig, axes = plt.subplots(1, len(arrays) - 1, figsize=(4.2 * (len(arrays) - 1), 3), squeeze=False)
    names = list(arrays)
    for ax, name in zip(axes[0], names[1:]):
        ax.hist(first, bins=edges, density=True, alpha=0.5, label=names[0])
        ax.hist(arrays[name][:, col], bins=edges, density=True, alpha=0.5, label=name)
        ax.set(xlabel=f"P_G{gen + 1} at bus {grid.bus_ids[grid.gen_bus[gen]]} (p.u.)", ylabel="density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
