"""Figures of the constrained-diffusion chapter: joint marginals and the violation per bus."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pfbook.methods.constrained.records import mismatch
from pfbook.power.grids import Grid


# ---------------------------------------------------------------------------------------- figures (Figs. 5 and 6)
def plot_joint(arrays: Mapping[str, np.ndarray], grid: Grid, buses: Sequence[int], max_points: int = 1500):
    """(p_b, q_b) per bus, one panel each (Fig. 5): points coloured by a Gaussian KDE of their own set's density."""
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    n = grid.n_bus
    fig, axes = plt.subplots(len(arrays), len(buses), figsize=(2.6 * len(buses), 2.4 * len(arrays)), squeeze=False)
    for i, (label, x) in enumerate(arrays.items()):
        for j, b in enumerate(buses):
            pq = x[:max_points, [b, n + b]].T
            try:
                dens = gaussian_kde(pq)(pq)
            except (np.linalg.LinAlgError, ValueError):  # a point mass (a bus at a limit) has no density
                dens = np.ones(pq.shape[1])
            ax = axes[i][j]
            ax.scatter(pq[0], pq[1], c=dens, s=3, cmap="viridis")
            ax.set_title(f"{label}, bus {grid.bus_ids[b]}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(arrays) - 1:
                ax.set_xlabel("p (p.u.)", fontsize=8)
            if j == 0:
                ax.set_ylabel("q (p.u.)", fontsize=8)
    for j in range(len(buses)):  # one scale per bus: the real data's
        col = [axes[i][j] for i in range(len(arrays))]
        lims = col[0].get_xlim(), col[0].get_ylim()
        for ax in col[1:]:
            ax.set_xlim(lims[0]), ax.set_ylim(lims[1])
    fig.tight_layout()
    return fig


def plot_violation_per_bus(
    grid: Grid, arrays: Mapping[str, np.ndarray], buses: Sequence[int], floor: float = 1e-10, bins: int = 30
):
    """Histograms of the active-balance violation |ΔP_b| per bus on a log axis, one panel per bus (Fig. 6)."""
    import matplotlib.pyplot as plt

    dps = {label: np.log10(np.maximum(mismatch(grid, x)[0].abs().numpy(), floor)) for label, x in arrays.items()}
    allv = np.concatenate([d[:, buses].ravel() for d in dps.values()])
    edges = np.linspace(allv.min(), allv.max() + 1e-9, bins + 1)
    fig, axes = plt.subplots(1, len(buses), figsize=(2.6 * len(buses), 2.4), squeeze=False, sharex=True)
    for ax, b in zip(axes[0], buses):
        for label, d in dps.items():
            ax.hist(d[:, b], bins=edges, histtype="step", lw=1.4, label=label)
        ax.set_title(f"bus {grid.bus_ids[b]}", fontsize=8)
        ax.set_xlabel("log10 |ΔP| (p.u.)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("samples")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
