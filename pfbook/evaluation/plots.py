"""Figures shared by the chapters (seaborn on matplotlib). Each returns the matplotlib figure."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

LABELS = {
    "p": "net active injection p (p.u.)",
    "q": "net reactive injection q (p.u.)",
    "v": "voltage magnitude v (p.u.)",
    "theta": "voltage angle θ (rad)",
    "pg": "active generation (p.u.)",
    "qg": "reactive generation (p.u.)",
    "pd": "active demand (p.u.)",
    "qd": "reactive demand (p.u.)",
}


def pick_buses(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` columns that vary most (ties broken by order): the buses worth looking at."""
    spread = values.std(0)
    varies = np.flatnonzero(spread > 1e-7 * (1 + np.abs(values).mean(0)))  # skip buses pinned at a limit
    order = varies[np.argsort(-spread[varies], kind="stable")]
    return np.sort(order[: min(k, len(order))]) if len(order) else np.arange(min(k, values.shape[1]))


def bus_marginals(
    arrays: dict[str, np.ndarray],
    bus_ids: Sequence[int],
    feature: str = "p",
    buses: Sequence[int] | None = None,
    max_buses: int = 8,
    hue: str | None = None,
    bins: int = 30,
    height: float = 1.9,
):
    """Histograms of one per-bus feature, one panel per bus.

    ``arrays`` maps a label (e.g. "real", "synthetic") to an ``(n, n_bus)`` array; several labels overlay.
    ``buses`` are column indices; by default the ``max_buses`` most variable buses of the first array.
    """
    first = next(iter(arrays.values()))
    cols = np.asarray(buses) if buses is not None else pick_buses(first, max_buses)
    frames = [
        pd.DataFrame(
            {
                "bus": np.repeat([f"bus {bus_ids[c]}" for c in cols], len(a)),
                "value": a[:, cols].T.ravel(),
                "data": label,
            }
        )
        for label, a in arrays.items()
    ]
    df = pd.concat(frames, ignore_index=True)
    g = sns.displot(
        df,
        x="value",
        col="bus",
        hue="data" if len(arrays) > 1 else hue,
        kind="hist",
        bins=bins,
        stat="density",
        common_norm=False,
        common_bins=False,
        element="step",
        col_wrap=min(4, len(cols)),
        height=height,
        aspect=1.2,
        facet_kws=dict(sharex=False, sharey=False),
    )
    g.set_titles("{col_name}")
    g.set_xlabels(LABELS.get(feature, feature))
    return g.figure


def voltage_profile(
    v: np.ndarray, bus_ids: Sequence[int], vmin: np.ndarray, vmax: np.ndarray, ax: plt.Axes | None = None
):
    """Box plot of voltage magnitude per bus, with the voltage limits."""
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 2 + 0.18 * len(bus_ids)), 3.2))
    pos = np.arange(len(bus_ids))
    ax.boxplot(v, positions=pos, widths=0.6, showfliers=False, medianprops=dict(color="C0"))
    ax.step(np.r_[pos, pos[-1] + 1] - 0.5, np.r_[vmin, vmin[-1]], where="post", color="C3", lw=1, label="limits")
    ax.step(np.r_[pos, pos[-1] + 1] - 0.5, np.r_[vmax, vmax[-1]], where="post", color="C3", lw=1)
    step = max(1, len(bus_ids) // 30)
    ax.set_xticks(pos[::step], [str(b) for b in np.asarray(bus_ids)[::step]], fontsize=7)
    ax.set_xlabel("bus")
    ax.set_ylabel(LABELS["v"])
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure


def log_histogram(
    values: dict[str, np.ndarray], xlabel: str, ax: plt.Axes | None = None, bins: int = 40, floor: float = 1e-16
):
    """Histograms of positive quantities on a log10 axis (e.g. residuals), one per label."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    allv = np.concatenate([np.log10(np.maximum(v, floor)) for v in values.values()])
    edges = np.linspace(allv.min(), allv.max() + 1e-9, bins + 1)
    for label, v in values.items():
        ax.hist(np.log10(np.maximum(v, floor)), bins=edges, histtype="step", lw=1.5, label=label)
    ax.set_xlabel(f"log10 {xlabel}")
    ax.set_ylabel("samples")
    if len(values) > 1:
        ax.legend(fontsize=8)
    return ax.figure
