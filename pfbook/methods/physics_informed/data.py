"""The physics-informed DDPM's data: AC-OPF records normalised within the operating bounds, and their
power imbalance R(x) (Wang, Upadhyay, Zaman & Srikantha, eq. 5-6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pfbook.config import data_dir
from pfbook.diffusion import Layout, Normaliser, denormalised
from pfbook.methods.physics_informed.config import PhysicsInformedConfig
from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import grid_tensors, injections, mismatch_magnitude, nodal_mismatch

#: Record layout (Wang et al., Sec. IV-A): demand at load buses, voltage at every bus, generation per generator.
FEATURES = ("pd", "qd", "v", "theta", "pg", "qg")


# ---------------------------------------------------------------------------------------- data
@dataclass
class PIData:
    """Records in the paper's layout split into training and held-out rows, their bounds and normaliser."""

    grid: Grid
    train: np.ndarray
    test: np.ndarray
    columns: list[str]
    layout: Layout
    low: np.ndarray  # operating bounds C1-C4 per feature (physical units)
    high: np.ndarray
    normaliser: Normaliser
    dataset: object
    clip: bool = True  # R of model-space records clips them into C1-C4 first (:func:`imbalance_fn`)

    def imbalance_fn(self, dtype: torch.dtype = torch.float64) -> Callable[[torch.Tensor], torch.Tensor]:
        """R of model-space records as these data read them (their normaliser and clip; :func:`imbalance_fn`)."""
        return imbalance_fn(self.grid, self.normaliser, dtype=dtype, clip=self.clip)


def split_record(x, grid: Grid) -> tuple:
    """(P_D, Q_D, |V|, φ, P_G, Q_G) of records in :data:`FEATURES` layout (works on arrays and tensors)."""
    sizes = (grid.n_load, grid.n_load, grid.n_bus, grid.n_bus, grid.n_gen, grid.n_gen)
    if x.shape[-1] != sum(sizes):
        raise ValueError(
            f"a {grid.name} record has {sum(sizes)} features (P_D, Q_D at {grid.n_load} loads, |V|, φ "
            f"at {grid.n_bus} buses, P_G, Q_G at {grid.n_gen} generators), got {x.shape[-1]}"
        )
    out, k = [], 0
    for s in sizes:
        out.append(x[..., k : k + s])
        k += s
    return tuple(out)


def operating_bounds(
    grid: Grid, load_range: tuple[float, float], theta: np.ndarray, angle_margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature [low, high] of C1-C4 (physical units) in :data:`FEATURES` order.

    Demand: ``load_range`` x nominal (the range the data were drawn from); |V|: [V_min, V_max]; P_G, Q_G:
    the generator limits. MATPOWER cases carry no bus-angle limits, so C4 is the angle range of the records
    ``theta`` (n, n_bus) widened by ``angle_margin`` of that range on each side; the reference angle is fixed.
    """
    lo_f, hi_f = load_range
    pd_a, pd_b = lo_f * grid.load_p, hi_f * grid.load_p
    qd_a, qd_b = lo_f * grid.load_q, hi_f * grid.load_q
    th_lo, th_hi = theta.min(0), theta.max(0)
    pad = angle_margin * (th_hi - th_lo)
    low = np.concatenate([np.minimum(pd_a, pd_b), np.minimum(qd_a, qd_b), grid.vmin, th_lo - pad, grid.pmin, grid.qmin])
    high = np.concatenate(
        [np.maximum(pd_a, pd_b), np.maximum(qd_a, qd_b), grid.vmax, th_hi + pad, grid.pmax, grid.qmax]
    )
    return low.astype(np.float64), high.astype(np.float64)


def make_normaliser(low: np.ndarray, high: np.ndarray) -> Normaliser:
    """The bounds onto [0, 1] per feature (Wang et al.: the sigmoid output is de-normalised into C1-C4)."""
    return Normaliser.minmax(low=low, high=high)


def load_data(cfg: PhysicsInformedConfig, progress: bool = False) -> PIData:
    """AC-OPF records of ``cfg.grid`` with loads and costs sampled (generated once, then read from the data folder)."""
    from pfbook.power.datasets import ac_opf_dataset

    ds = ac_opf_dataset(
        cfg.grid,
        cfg.n_samples,
        load_range=cfg.load_range,
        cost_range=cfg.cost_range,
        seed=cfg.seed,
        out_dir=data_dir(),
        progress=progress,
    )
    x, cols = ds.features(FEATURES)
    grid = load_grid(cfg.grid)
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_test = max(2, int(round(cfg.test_fraction * len(x))))
    train, test = x[order[n_test:]], x[order[:n_test]]
    low, high = operating_bounds(grid, cfg.load_range, split_record(train, grid)[3], cfg.angle_margin)
    return PIData(
        grid=grid,
        train=train,
        test=test,
        columns=cols,
        layout=Layout(features=tuple(cols), grid=grid.name, shape=(len(cols),)),
        low=low,
        high=high,
        normaliser=make_normaliser(low, high),
        dataset=ds,
        clip=cfg.clip_to_bounds,
    )


# ---------------------------------------------------------------------------------------- imbalance (eq. 7)
def imbalance(grid, x: torch.Tensor) -> torch.Tensor:
    """R(x) = mean over buses of |S_i| (p.u.) for records ``x`` (..., dim) in physical units (eq. 7).

    S_i = (P_G - P_D)_i + j (Q_G - Q_D)_i - V_i conj(Σ_j Y_ij V_j), with the full bus admittance (shunts
    included). Batched over any leading shape and differentiable.
    """
    g = load_grid(grid) if not isinstance(grid, Grid) else grid
    gt = grid_tensors(g, x.device, x.dtype)
    pd_, qd_, v, th, pg, qg = split_record(x, g)
    p, q = injections(gt, pg, qg, pd_, qd_)
    dp, dq = nodal_mismatch(gt, p, q, v, th)
    return mismatch_magnitude(dp, dq).mean(-1)


def imbalance_fn(
    grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64, clip: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """R of model-space records: de-normalise, then :func:`imbalance` in ``dtype`` (gradients flow back).

    With ``clip`` a record is first clipped to [0, 1], i.e. de-normalised *into* the operating bounds C1-C4: a
    coordinate of a noisy record beyond a bound (a voltage above V_max, a generator beyond its limit) is read as
    that bound. Samples of the sigmoid-output models lie inside already and are unchanged; for the noisy records of
    the forward process, for γ_T and for the posterior mean x̂_(t-1) it keeps the imbalance that of an operating
    point within C1-C4. Without it, noise reaches far outside the bounds and R grows with how far.
    """
    physical = denormalised(lambda x: imbalance(grid, x), normaliser, dtype=dtype)

    def R(z: torch.Tensor) -> torch.Tensor:
        return physical(z.clamp(0.0, 1.0) if clip else z)

    return R


def mismatch_fn(
    grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64
) -> Callable[[torch.Tensor], torch.Tensor]:
    """(ΔP, ΔQ) per bus (B, 2 n_bus) of model-space records: the constraints H(x) = 0 of C5."""

    def H(x: torch.Tensor) -> torch.Tensor:
        gt = grid_tensors(grid, x.device, x.dtype)
        pd_, qd_, v, th, pg, qg = split_record(x, grid)
        p, q = injections(gt, pg, qg, pd_, qd_)
        return torch.cat(nodal_mismatch(gt, p, q, v, th), dim=-1)

    return denormalised(H, normaliser, dtype=dtype)
