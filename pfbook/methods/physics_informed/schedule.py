"""The learned noise schedule (Wang, Upadhyay, Zaman & Srikantha, eq. 7): ᾱ_t fitted so that the forward
process's power imbalance grows along γ_t = γ_T t / T."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pfbook.diffusion import LearnedSchedule, Normaliser, Schedule, fit_schedule
from pfbook.diffusion.traces import forward_trace
from pfbook.methods.physics_informed.config import PhysicsInformedConfig
from pfbook.methods.physics_informed.data import PIData, imbalance_fn
from pfbook.power.grids import Grid


def gamma_T(grid: Grid, normaliser: Normaliser, n: int = 4096, seed: int = 0, clip: bool = True) -> float:
    """γ_T: the mean imbalance (p.u.) of pure Gaussian noise N(0, I) in model space, de-normalised (into C1-C4 with
    ``clip``, see :func:`imbalance_fn`) (Sec. IV-B1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, normaliser.shape[0], generator=g, dtype=torch.float64)
    return float(imbalance_fn(grid, normaliser, clip=clip)(z).mean())


def gamma(gT: float, T: int) -> torch.Tensor:
    """γ_1..γ_T with γ_t = t γ_T / T (eq. 10), float64, shape (T,): entry k is the bound at index k (step k+1)."""
    return gT * torch.arange(1, T + 1, dtype=torch.float64) / T


def original_schedule(cfg: PhysicsInformedConfig) -> Schedule:
    """Linear β from ``beta_start`` to ``beta_end`` over T steps (the paper's "original" ᾱ_t)."""
    return Schedule.linear(cfg.T, cfg.beta_start, cfg.beta_end)


# ---------------------------------------------------------------------------------------- learned schedule (eq. 11)
def learn_schedule(
    cfg: PhysicsInformedConfig, data: PIData, gT: float, progress: bool = False
) -> tuple[Schedule, LearnedSchedule, list[float]]:
    """Fit F_ω so that the forward process's mean imbalance follows γ_t = t γ_T / T (eq. 11).

    F_ω (hidden ``schedule_hidden``) maps a batch of normalised records to ᾱ_1..ᾱ_T, averaged over the batch;
    it starts from the original schedule. Returns the schedule for the whole training set, F_ω and the losses.
    """
    torch.manual_seed(cfg.seed)
    z = data.normaliser(torch.as_tensor(data.train, dtype=torch.float64)).float()
    net = LearnedSchedule(z.shape[1], cfg.T, hidden=cfg.schedule_hidden, init=original_schedule(cfg))
    R = data.imbalance_fn(torch.float32)
    losses = fit_schedule(
        net,
        z,
        R,
        gamma(gT, cfg.T),
        steps=cfg.schedule_steps,
        batch_size=cfg.schedule_batch,
        lr=cfg.schedule_lr,
        seed=cfg.seed,
        progress=progress,
    )
    with torch.no_grad():
        ab = torch.stack([net(z[k : k + 1024]) * len(z[k : k + 1024]) for k in range(0, len(z), 1024)]).sum(0) / len(z)
    return Schedule(ab.detach().cpu(), name="learned"), net, losses


def forward_imbalance(schedule: Schedule, data: PIData, n: int = 512, seed: int = 0) -> np.ndarray:
    """Mean R(x_t) of the forward process x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε at every step (Fig. 1, 3b)."""
    x0 = data.normaliser(torch.as_tensor(data.train[:n], dtype=torch.float64))
    R = data.imbalance_fn()
    return forward_trace(schedule, x0, lambda x_t, t: R(x_t), seed=seed)


def _prev_excess(
    R: Callable[[torch.Tensor], torch.Tensor],
    schedule: Schedule,
    x0_hat: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    gT: float,
) -> torch.Tensor:
    """max(R(x̂_{t-1}) - γ_{t-1}, 0) per record: x̂_{t-1} the posterior mean given x̂_0, γ_{t-1} = (step - 1) γ_T / T
    for timestep index ``t`` (step t + 1; γ_0 = 0 at the last step, where x̂_{t-1} is x̂_0)."""
    x_hat = schedule.q_posterior(x0_hat, x_t, t)[0]
    bound = gT * t.to(x_hat.dtype) / schedule.T
    return torch.relu(R(x_hat) - bound.to(x_hat.device))


def physics_floor(schedule: Schedule, data: PIData, gT: float, n: int = 256, seed: int = 0) -> np.ndarray:
    """The physics loss a *perfect* denoiser would pay at every step: max(R(x̄_{t-1}) - γ_{t-1}, 0) averaged over
    records, x̄_{t-1} the posterior mean of q(x_{t-1} | x_t, x_0) with the true x_0. Zero where the schedule keeps
    the forward imbalance under the line; the part of :func:`physics_loss` no model can remove."""
    x0 = data.normaliser(torch.as_tensor(data.train[:n], dtype=torch.float64))
    R = data.imbalance_fn()

    def excess(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return _prev_excess(R, schedule, x0, x_t, torch.full((len(x0),), t, dtype=torch.long), gT)

    return forward_trace(schedule, x0, excess, seed=seed)
