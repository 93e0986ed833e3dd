"""Figures of the TSDM chapter: traces (Figs. 8-13), sweeps (Figs. 14-15) and estimated states."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------------------------- figures
def plot_traces(
    truth: np.ndarray,
    corrupted: np.ndarray,
    recovered: Mapping[str, np.ndarray],
    channels: Sequence[int],
    names: Sequence[str],
    dt: float,
    unit: str = "h",
    title: str = "",
):
    """Clean / corrupted / recovered traces of a few channels of one window (Figs. 8-13)."""
    import matplotlib.pyplot as plt

    t = np.arange(truth.shape[-1]) * dt
    fig, axes = plt.subplots(1, len(channels), figsize=(3.2 * len(channels), 2.6), squeeze=False)
    for ax, c in zip(axes[0], channels):
        ax.plot(t, truth[c], color="k", lw=1.6, label="clean")
        ax.plot(t, corrupted[c], color="tab:red", lw=1.0, ls=":", label="corrupted")
        for (label, x), col in zip(recovered.items(), ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
            ax.plot(t, x[c], color=col, lw=1.1, label=label)
        ax.set_title(names[c], fontsize=8)
        ax.set_xlabel(f"time ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_sweep(omega: pd.Series, R: pd.DataFrame, ratios: pd.DataFrame):
    """Fig. 14 (ω and R) and Fig. 15 (error against the modified ratio) side by side."""
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(ratios["family"]))
    fig, axes = plt.subplots(1, 2 + len(fams), figsize=(3.3 * (2 + len(fams)), 2.8))
    axes[0].plot(omega.index, omega.values, "o-")
    axes[0].set(xlabel="ω", ylabel="weighted RMSE (%)", title="Fig. 14(a): FDIA")
    axes[1].plot(R.index, R["weighted RMSE"], "o-")
    axes[1].set(xlabel="R", ylabel="weighted RMSE (%)", title="Fig. 14(b): data loss")
    for ax, fam in zip(axes[2:], fams):
        d = ratios[ratios["family"] == fam]
        for name, g in d.groupby("method", sort=False):
            ax.plot(100 * g["ratio"], g["rmse"], "o-", label=name)
        ax.set(xlabel="modified ratio (%)", ylabel="weighted RMSE (%)", title=f"Fig. 15: {fam}")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_states(
    states: Mapping[str, Mapping[str, np.ndarray]], row: int = 0, bus_ids: Sequence | None = None, title: str = ""
):
    """Figs. 8-10: the estimated |V| and θ of every bus at one time step (``row`` of :func:`state_estimation`'s
    states), the power-flow states against each variant's estimate (attacked, repaired by TSDM, by the GAN)."""
    import matplotlib.pyplot as plt

    truth = states["power flow"]
    n = truth["vm"].shape[1]
    x = np.arange(n)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3))
    for k, (key, label) in enumerate((("vm", "|V| (p.u.)"), ("va", "θ (deg, from the reference bus)"))):
        ax[k].plot(x, truth[key][row], "k-", lw=2.5, alpha=0.35, label="power flow")
        for name, st in states.items():
            if name != "power flow":
                ax[k].plot(x, st[key][row], marker=".", lw=0.9, label=name)
        ax[k].set(xlabel="bus", ylabel=label)
        if bus_ids is not None and n <= 40:
            ax[k].set_xticks(x[:: max(1, n // 15)], [str(b) for b in list(bus_ids)[:: max(1, n // 15)]])
    ax[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
