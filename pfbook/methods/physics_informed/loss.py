"""The physics-informed loss (Wang, Upadhyay, Zaman & Srikantha, eq. 8-9) and how active it is during training."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from pfbook.diffusion import DiffusionModel, LossContext, Normaliser
from pfbook.methods.physics_informed.data import PIData, imbalance_fn
from pfbook.methods.physics_informed.schedule import _prev_excess
from pfbook.power.grids import Grid


def physics_activity(dm: DiffusionModel, data: PIData, gT: float, n: int = 256, seed: int = 0) -> pd.DataFrame:
    """Where a trained model's physics loss acts: for every step t, over ``n`` training records noised as in
    training, the share of records whose one-step estimate x̂_{t-1} (the posterior mean given the model's x̂_0, as
    in :func:`physics_loss` with ``on="prev"``) lies above γ_{t-1}, and the mean excess max(R(x̂_{t-1}) - γ_{t-1}, 0)
    (p.u.). Rows indexed by step t = 1..T; the loss the model pays in training is the mean of ``excess`` over t."""
    g = torch.Generator().manual_seed(seed)
    x0 = dm.normaliser(torch.as_tensor(data.train[:n], dtype=torch.float64)).to(dm.device)
    R = imbalance_fn(data.grid, dm.normaliser, clip=data.clip)
    T = dm.schedule.T
    share, excess = np.empty(T), np.empty(T)
    dm.model.eval()
    with torch.no_grad():
        for t in range(T):
            tt = torch.full((len(x0),), t, dtype=torch.long, device=dm.device)
            noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype).to(dm.device)
            x_t = dm.schedule.q_sample(x0, tt, noise)
            e = _prev_excess(R, dm.schedule, dm.model(x_t.float(), tt).double(), x_t, tt, gT)
            share[t], excess[t] = float((e > 0).double().mean()), float(e.mean())
    return pd.DataFrame(
        {"share above bound": share, "excess (p.u.)": excess}, index=pd.RangeIndex(1, T + 1, name="step t")
    )


# ---------------------------------------------------------------------------------------- physics-informed training
def physics_loss(
    grid: Grid,
    normaliser: Normaliser,
    gT: float,
    eta: float = 1.0,
    on: str = "prev",
    dtype: torch.dtype = torch.float32,
    clip: bool = True,
) -> Callable[[LossContext], dict[str, torch.Tensor]]:
    """η max(R(x̂) - γ, 0) averaged over the batch (eq. 8-9), for the core trainer's extra-loss hook.

    ``on="prev"``: x̂ = x̂_{t-1}, the posterior mean of q(x_{t-1} | x_t, x̂_0) (the model's one-step reverse
    estimate), against γ_{t-1} (γ_0 = 0: at the last step x̂_{t-1} is x̂_0 and must balance). ``on="x0"``: x̂_0
    against 0 at every t (the ablation). R is computed in ``dtype`` on the de-normalised sample (float32 resolves
    imbalances to about 1e-5 p.u., far below the bounds it is compared with; evaluation uses float64); ``clip`` as
    in :func:`imbalance_fn` (γ_T must have been measured alike).
    """
    if on not in ("prev", "x0"):
        raise ValueError(f"on must be 'prev' or 'x0', got {on!r}")
    R = imbalance_fn(grid, normaliser, dtype=dtype, clip=clip)

    def loss(ctx: LossContext) -> dict[str, torch.Tensor]:
        if on == "prev":
            excess = _prev_excess(R, ctx.schedule, ctx.x0_hat, ctx.x_t, ctx.t, gT)
        else:
            excess = torch.relu(R(ctx.x0_hat))  # against γ_0 = 0 at every t
        return {"physics": (eta * excess.mean()).to(ctx.x0.dtype)}

    return loss
