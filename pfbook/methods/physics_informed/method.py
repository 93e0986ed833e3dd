"""Physics-informed DDPM with a learned noise schedule (Wang, Upadhyay, Zaman & Srikantha).

The method composes the power-system layer (:mod:`pfbook.power.physics`) with the diffusion core
(:mod:`pfbook.diffusion`):

* **data** -- AC-OPF records x = (P_D, Q_D at load buses, |V|, φ at all buses, P_G, Q_G at generators),
  loads U(0.8, 1.2) of nominal and linear generator costs U(0.5, 1.5) of default
  (:func:`pfbook.power.datasets.ac_opf_dataset`), per unit and radians; normalised to [0, 1] within the operating
  bounds C1-C4 (:func:`operating_bounds`);
* **imbalance** -- R(x) = mean over buses of |S_i| (eq. 7), S_i the complex nodal mismatch with the full bus
  admittance (:func:`imbalance`, :func:`imbalance_fn`); γ_T the mean R of pure Gaussian noise and
  γ_t = t γ_T / T (eq. 10, :func:`gamma_T`, :func:`gamma`);
* **learned schedule** -- the auxiliary network F_ω (hidden 512, 256) trained so that the forward process's
  imbalance grows linearly (eq. 11): :class:`pfbook.diffusion.LearnedSchedule` fitted by
  :func:`pfbook.diffusion.fit_schedule` with R as the statistic (:func:`learn_schedule`);
* **physics-informed training** -- L = L_DDPM + η max(R(x̂_{t-1}) - γ_{t-1}, 0) (eq. 8-9) through the core
  trainer's extra-loss hook (:func:`physics_loss`), with the U-Net MLP of Sec. IV-B2 ending in a sigmoid;
* **baselines** -- DDPM without physics, DDPM + physics with the original schedule and a physics-informed GAN of
  comparable size (:func:`train_gan`); :func:`~pfbook.methods.physics_informed.metrics.evaluate` builds Table I with the numbers the paper leaves out
  (share within C1-C4 and C6, distances to held-out records);
* **beyond the paper** -- Hoseinpour & Dvorkin's idea at sampling time on top of the physics-informed model: a Gauss-Newton
  projection of x̂_0 onto the power-flow equations over the last reverse steps, taken in logit space so that it
  stays within C1-C4 (:func:`projection_guidance`).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch

from pfbook.diffusion import (
    DiffusionModel,
    Guidance,
    GuidanceState,
    Normaliser,
    ProjectionGuidance,
    Schedule,
    Trainer,
    UNetMLPDenoiser,
)
from pfbook.diffusion.traces import reverse_trace
from pfbook.methods.physics_informed.config import PhysicsInformedConfig
from pfbook.methods.physics_informed.data import PIData, imbalance_fn, mismatch_fn
from pfbook.methods.physics_informed.loss import physics_loss
from pfbook.methods.physics_informed.schedule import original_schedule
from pfbook.power.grids import Grid


def train_ddpm(
    cfg: PhysicsInformedConfig,
    data: PIData,
    schedule: Schedule,
    physics: bool = True,
    gT: float | None = None,
    on: str | None = None,
    progress: bool = False,
) -> tuple[DiffusionModel, Trainer]:
    """The U-Net MLP with sigmoid output (predicting x̂_0 in [0, 1]) trained on ``data.train``; with ``physics``
    the loss of :func:`physics_loss` is added (``gT`` required; ``on`` defaults to ``cfg.physics_on``)."""
    torch.manual_seed(cfg.seed)
    net = UNetMLPDenoiser(
        len(data.columns), widths=cfg.widths, time_dim=cfg.time_dim, output="sigmoid", prediction="x0"
    )
    extra = None
    if physics:
        if gT is None:
            raise ValueError("physics-informed training needs γ_T (gamma_T(...)) for the bounds γ_t")
        extra = physics_loss(data.grid, data.normaliser, gT, cfg.eta, on or cfg.physics_on, clip=data.clip)
    trainer = Trainer(
        net, schedule, data.train, cfg.train_config(), normaliser=data.normaliser, layout=data.layout, extra_loss=extra
    )
    trainer.train(progress=progress)
    return trainer.result(), trainer


#: the DDPM variants of Table I (and the ablations): schedule ("original"/"learned"), physics loss, its sample
VARIANTS = {
    "DDPM, no physics": ("original", False, None),
    "DDPM + physics, original ᾱ": ("original", True, None),
    "proposed": ("learned", True, None),
}


ABLATIONS = {
    "learned ᾱ, no physics": ("learned", False, None),
    "proposed, x̂0 loss": ("learned", True, "x0"),
}


def train_models(
    cfg: PhysicsInformedConfig, data: PIData, gT: float, learned: Schedule, progress: bool = False
) -> tuple[dict[str, DiffusionModel], dict[str, Trainer], dict[str, float]]:
    """Every DDPM of Table I (and, with ``cfg.ablations``, the ablations): models, trainers and training seconds."""
    schedules = {"original": original_schedule(cfg), "learned": learned}
    models, trainers, seconds = {}, {}, {}
    for name, (sched, phys, on) in (VARIANTS | (ABLATIONS if cfg.ablations else {})).items():
        t0 = time.perf_counter()
        models[name], trainers[name] = train_ddpm(
            cfg, data, schedules[sched], physics=phys, gT=gT, on=on, progress=progress
        )
        seconds[name] = time.perf_counter() - t0
    return models, trainers, seconds


def reverse_imbalance(
    dm: DiffusionModel, grid: Grid, n: int = 256, seed: int = 0, guidance=None, clip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """DDPM samples and the mean R of x_{t-1} after every reverse step, ordered by step t = T..1 (Fig. 3c); ``clip``
    as in :func:`imbalance_fn` (the last entry, R of the samples, does not depend on it)."""
    x, _, trace = reverse_trace(
        dm, None, n, imbalance_fn(grid, dm.normaliser, clip=clip), on="x_prev", guidance=guidance, seed=seed
    )
    return x, trace


def last_step(reverse: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """What the last reverse step does, per model, from the traces of :func:`reverse_imbalance`: the mean R of x_1
    (the sample entering step 1), of x_0 (the sample itself, the model's x̂_0 from x_1) and their quotient, the
    step's reduction. The quotient of two models' final imbalances factors exactly into the quotient of their R(x_1)
    times the inverse quotient of their reductions: how much the schedule leaves for the last step, and how much
    of it the model removes there."""
    rows = {}
    for name, trace in reverse.items():
        trace = np.asarray(trace, dtype=float)
        if trace.ndim != 1 or len(trace) < 2:
            raise ValueError(
                f"{name!r}: need the trace of at least the last two reverse steps "
                f"(reverse_imbalance), got shape {trace.shape}"
            )
        rows[name] = {"R(x_1) (p.u.)": trace[-2], "R(x_0) (p.u.)": trace[-1], "reduction": trace[-2] / trace[-1]}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------- Hoseinpour & Dvorkin's guidance
class LogitProjection(Guidance):
    """x̂_0 projected onto C5 (ΔP = ΔQ = 0) in logit space: u = logit(x̂_0), u' = u - λ Jᵀ(J Jᵀ)⁻¹ H(sigmoid(u)).

    The Gauss-Newton step of :class:`~pfbook.diffusion.ProjectionGuidance`, taken on the sigmoid's input rather than
    on x̂_0, so the corrected x̂_0 = sigmoid(u') stays inside (0, 1), i.e. inside C1-C4, and a feature near one of
    its bounds moves little (the sigmoid is flat there). Computed in float64.
    """

    def __init__(
        self,
        constraint: Callable[[torch.Tensor], torch.Tensor],
        scale=1.0,
        inner_steps: int = 1,
        damping: float = 1e-10,
        eps: float = 1e-9,
    ):
        self.proj = ProjectionGuidance(lambda u: constraint(torch.sigmoid(u)), scale=scale, damping=damping)
        self.scale, self.inner_steps, self.eps = scale, int(inner_steps), float(eps)

    def __call__(self, state: GuidanceState) -> GuidanceState:
        lam = float(self.scale(state.t, state.schedule.T)) if callable(self.scale) else float(self.scale)
        if lam == 0.0:
            return state
        u = torch.logit(state.x0.double().clamp(self.eps, 1 - self.eps))
        for _ in range(self.inner_steps):
            u = u - lam * self.proj.correction(u)
        return state.with_x0(torch.sigmoid(u).to(state.x0.dtype))

    def __repr__(self) -> str:
        return f"LogitProjection(inner_steps={self.inner_steps})"


def projection_guidance(cfg: PhysicsInformedConfig, grid: Grid, normaliser: Normaliser) -> LogitProjection:
    """Hoseinpour & Dvorkin's sampling-time correction on this model: over the last ``guidance_last`` share of the reverse
    steps, ``guidance_inner_steps`` Gauss-Newton steps of x̂_0 onto C5 in logit space (:class:`LogitProjection`)."""
    last = max(1, int(round(cfg.guidance_last * cfg.T)))

    def scale(t: int, T: int) -> float:
        return 1.0 if t < last else 0.0

    return LogitProjection(mismatch_fn(grid, normaliser), scale=scale, inner_steps=cfg.guidance_inner_steps)
