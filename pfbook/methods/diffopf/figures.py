"""Figures of the DiffOPF chapter: marginals of the sampled dispatch and the cost/feasibility trade-off."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pfbook.methods.diffopf.data import OPFRecords
from pfbook.methods.diffopf.history import nearest_records


# ---------------------------------------------------------------------------------------- figures
def plot_marginals(
    data: OPFRecords,
    pg_samples: np.ndarray,
    pg_deep: np.ndarray,
    load_index: int,
    gens: Sequence[int] | None = None,
    n_history: int = 300,
):
    """Fig. 3: marginals of the active dispatch for one test load: the historical records with the nearest loads
    (grey; the lookup of Table I's historical row, :func:`~pfbook.methods.diffopf.history.nearest_records`), DiffOPF's samples (blue) and DeepOPF's
    point (red)."""
    import matplotlib.pyplot as plt

    g = data.grid
    _, _, pg_tr, _ = data.split(data.train)
    pg_near = nearest_records(data, data.test_loads()[[load_index]], k=n_history)[0][0]
    if gens is None:
        gens = [j for j in np.argsort(-pg_tr.std(0)) if pg_tr[:, j].std() > 1e-4][:4]
    fig, axes = plt.subplots(1, len(gens), figsize=(3.0 * len(gens), 2.6), squeeze=False)
    for ax, j in zip(axes[0], gens):
        lo = min(pg_near[:, j].min(), pg_samples[:, j].min())
        hi = max(pg_near[:, j].max(), pg_samples[:, j].max())
        edges = np.linspace(lo, hi + 1e-9, 30)
        ax.hist(pg_near[:, j], bins=edges, density=True, color="0.6", alpha=0.7, label="history (nearest loads)")
        ax.hist(pg_samples[:, j], bins=edges, density=True, histtype="step", lw=1.8, color="tab:blue", label="DiffOPF")
        ax.axvline(pg_deep[j], color="tab:red", lw=2, label="DeepOPF")
        ax.set_title(f"generator {j + 1} (bus {g.bus_ids[g.gen_bus[j]]})", fontsize=9)
        ax.set_xlabel("p_g (p.u.)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_tradeoff(ev: Mapping[str, np.ndarray], ev_deep: Mapping[str, np.ndarray], load_index: int):
    """Fig. 4: optimality gap vs voltage violation over one load's samples, the best picks and DeepOPF marked."""
    import matplotlib.pyplot as plt

    gap, vv = ev["gap_pct"][load_index], ev["vviol"][load_index]
    ok = np.isfinite(gap) & np.isfinite(vv)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.scatter(gap[ok], vv[ok], s=10, alpha=0.6, color="tab:blue", label=f"DiffOPF ({ok.sum()} solved warm starts)")
    if ok.any():
        cand = np.flatnonzero(ok)
        i = cand[np.lexsort((vv[cand], gap[cand]))[0]]  # smallest gap (ties: smaller violation)
        j = cand[np.lexsort((gap[cand], vv[cand]))[0]]  # smallest violation (ties: smaller gap)
        ax.scatter(gap[i], vv[i], marker="*", s=220, color="tab:red", label="min optimality gap", zorder=3)
        ax.scatter(gap[j], vv[j], marker="D", s=80, color="tab:green", label="min voltage violation", zorder=3)
    dg, dv = ev_deep["gap_pct"][load_index, 0], ev_deep["vviol"][load_index, 0]
    if np.isfinite(dg):
        ax.scatter(dg, dv, marker="X", s=140, color="gold", edgecolor="k", label="DeepOPF", zorder=3)
    ax.set_xlabel("optimality gap (%)")
    ax.set_ylabel("voltage violation (p.u.)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
