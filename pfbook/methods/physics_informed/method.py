"""Physics-informed DDPM with a learned noise schedule (Wang, Upadhyay, Zaman & Srikantha, seed 003).

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
  comparable size (:func:`train_gan`); :func:`evaluate` builds Table I with the numbers the paper leaves out
  (share within C1-C4 and C6, distances to held-out records);
* **beyond the paper** -- seed 000's idea at sampling time on top of the physics-informed model: a Gauss-Newton
  projection of x̂_0 onto the power-flow equations over the last reverse steps, taken in logit space so that it
  stays within C1-C4 (:func:`projection_guidance`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pfbook.config import PROFILES, check_profile, data_dir
from pfbook.diffusion import (DDPMSampler, DiffusionModel, Guidance, GuidanceState, Layout, LearnedSchedule, LossContext,
                        Normaliser, ProjectionGuidance, Schedule, TrainConfig, Trainer, UNetMLPDenoiser, fit_schedule)
from pfbook.evaluation.distances import mmd_rbf, sliced_wasserstein
from pfbook.power.grids import Grid, load_grid
from pfbook.io import summary_table, write_summary
from pfbook.power.physics import grid_tensors, injections, limit_violations, mismatch_magnitude, nodal_mismatch

__all__ = ["FEATURES", "PAPER_TABLE_I", "PAPER_GAMMA_T", "PhysicsInformedConfig", "PIData", "load_data",
           "split_record", "operating_bounds", "make_normaliser", "imbalance", "imbalance_fn", "mismatch_fn",
           "gamma_T", "gamma", "original_schedule", "learn_schedule", "forward_imbalance", "physics_floor", "physics_loss",
           "physics_activity",
           "train_ddpm", "VARIANTS", "ABLATIONS", "train_models", "Generator", "Discriminator", "GAN", "train_gan", "draw", "reverse_imbalance",
           "LogitProjection", "projection_guidance", "within_bounds", "within_branch_limits", "evaluate", "save_summary",
           "load_summaries", "plot_schedules", "plot_diversity"]

#: Record layout (seed 003, Sec. IV-A): demand at load buses, voltage at every bus, generation per generator.
FEATURES = ("pd", "qd", "v", "theta", "pg", "qg")

#: Table I of the paper: mean power imbalance (p.u.) of generated samples.
PAPER_TABLE_I = {
    "case14": {"GAN + physics": 0.009, "DDPM, no physics": 0.25, "DDPM + physics, original ᾱ": 0.11,
               "proposed": 0.013},
    "case30": {"GAN + physics": 0.015, "DDPM, no physics": 0.34, "DDPM + physics, original ᾱ": 0.09,
               "proposed": 0.017},
}
#: Sec. IV-B1: the imbalance of pure Gaussian noise the paper measured (p.u.)
PAPER_GAMMA_T = {"case14": 2.75, "case30": 2.87}
#: Sec. IV-A: records per grid in the paper
PAPER_SAMPLES = {"case14": 70_000, "case30": 100_000}

MODELS = ("GAN + physics", "DDPM, no physics", "DDPM + physics, original ᾱ", "proposed")


@dataclass(frozen=True)
class PhysicsInformedConfig:
    """Settings of the physics-informed DDPM chapter; :meth:`for_profile` builds one per profile.

    ``physics_on`` chooses the sample the physics loss is evaluated on: ``"prev"`` (the model's one-step
    reverse estimate x̂_{t-1}, the posterior mean given x̂_0, against γ_{t-1}) or ``"x0"`` (x̂_0 against γ_0 = 0).
    """

    grid: str = "case14"
    n_samples: int = 16_000                       # AC-OPF records (paper: 70 000 for case14, 100 000 for case30)
    load_range: tuple[float, float] = (0.8, 1.2)
    cost_range: tuple[float, float] = (0.5, 1.5)
    test_fraction: float = 0.2                    # records held out to judge samples against
    angle_margin: float = 0.1                     # C4 bounds: the records' angle range widened by this share per side
    clip_to_bounds: bool = True                   # R of a noisy record: clipped into C1-C4 first (see imbalance_fn)
    T: int = 200                                  # paper: 200 steps
    beta_start: float = 5e-4                      # original schedule: Ho et al.'s 1e-4 -> 0.02 at T = 1000,
    beta_end: float = 0.1                         # rescaled by 1000 / T (ᾱ_T ≈ 4e-5 as the paper quotes)
    widths: tuple[int, ...] = (256, 128, 64, 32, 64, 128, 256)   # paper, Sec. IV-B2
    time_dim: int = 128
    steps: int = 3000                             # optimiser steps per DDPM
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay_every: int | None = 1000
    lr_decay: float = 0.5
    ema_decay: float | None = 0.995
    eta: float = 1.0                              # weight of the physics loss (paper: 1)
    physics_on: str = "prev"                      # "prev": x̂_{t-1} vs γ_{t-1}; "x0": x̂_0 vs 0
    gamma_samples: int = 4096                     # Gaussian draws behind γ_T
    schedule_hidden: tuple[int, ...] = (512, 256) # F_ω (paper)
    schedule_steps: int = 200
    schedule_batch: int = 128                     # paper: 1024
    schedule_lr: float = 3e-3
    gan_noise: int = 64
    gan_widths: tuple[int, ...] = (512, 512, 256)  # generator; the discriminator mirrors it
    gan_steps: int = 3000
    gan_batch: int = 256
    gan_lr: float = 2e-4
    gan_eta: float = 1.0                          # weight of the GAN's physics loss R(G(z))
    n_generate: int = 1000                        # samples per model
    ablations: bool = True                        # also train x̂_0-loss and learned-schedule-without-physics models
    guidance_last: float = 0.1                    # share of the last reverse steps with the projection guidance
    guidance_inner_steps: int = 2
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def for_profile(cls, profile: str, grid: str = "case14", seed: int = 0,
                    device: str = "cpu") -> "PhysicsInformedConfig":
        base = replace(cls(), grid=grid, seed=seed, device=device)
        return {
            "ci": replace(base, n_samples=300, widths=(64, 32, 16, 8, 16, 32, 64), time_dim=32, steps=250,
                          batch_size=128, lr=2e-3, lr_decay_every=None, ema_decay=0.98, gamma_samples=1024,
                          schedule_hidden=(64, 32), schedule_steps=30, schedule_batch=32, schedule_lr=1e-2,
                          gan_noise=16, gan_widths=(64, 64), gan_steps=250, gan_batch=128, gan_lr=1e-3,
                          n_generate=200, ablations=False, guidance_last=0.025, guidance_inner_steps=1),
            "default": base,
            "paper": replace(base, n_samples=PAPER_SAMPLES.get(grid, 100_000), steps=100_000, batch_size=1024,
                             lr=1e-4, lr_decay_every=None, ema_decay=None, schedule_steps=2000, schedule_batch=1024,
                             gan_steps=100_000, gan_batch=1024, n_generate=5000),
        }[check_profile(profile)]

    def __post_init__(self):
        if self.physics_on not in ("prev", "x0"):
            raise ValueError(f"physics_on must be 'prev' (x̂_(t-1) vs γ_(t-1)) or 'x0' (x̂_0 vs 0), "
                             f"got {self.physics_on!r}")
        if not 0 <= self.guidance_last <= 1:
            raise ValueError(f"guidance_last is a share of the reverse steps in [0, 1], got {self.guidance_last}")

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_settings(self)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- data
@dataclass
class PIData:
    """Records in the paper's layout split into training and held-out rows, their bounds and normaliser."""

    grid: Grid
    train: np.ndarray
    test: np.ndarray
    columns: list[str]
    layout: Layout
    low: np.ndarray            # operating bounds C1-C4 per feature (physical units)
    high: np.ndarray
    normaliser: Normaliser
    dataset: object
    clip: bool = True          # R of model-space records clips them into C1-C4 first (:func:`imbalance_fn`)

    def imbalance_fn(self, dtype: torch.dtype = torch.float64) -> Callable[[torch.Tensor], torch.Tensor]:
        """R of model-space records as these data read them (their normaliser and clip; :func:`imbalance_fn`)."""
        return imbalance_fn(self.grid, self.normaliser, dtype=dtype, clip=self.clip)


def split_record(x, grid: Grid) -> tuple:
    """(P_D, Q_D, |V|, φ, P_G, Q_G) of records in :data:`FEATURES` layout (works on arrays and tensors)."""
    sizes = (grid.n_load, grid.n_load, grid.n_bus, grid.n_bus, grid.n_gen, grid.n_gen)
    if x.shape[-1] != sum(sizes):
        raise ValueError(f"a {grid.name} record has {sum(sizes)} features (P_D, Q_D at {grid.n_load} loads, |V|, φ "
                         f"at {grid.n_bus} buses, P_G, Q_G at {grid.n_gen} generators), got {x.shape[-1]}")
    out, k = [], 0
    for s in sizes:
        out.append(x[..., k:k + s])
        k += s
    return tuple(out)


def operating_bounds(grid: Grid, load_range: tuple[float, float], theta: np.ndarray,
                     angle_margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
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
    low = np.concatenate([np.minimum(pd_a, pd_b), np.minimum(qd_a, qd_b), grid.vmin, th_lo - pad,
                          grid.pmin, grid.qmin])
    high = np.concatenate([np.maximum(pd_a, pd_b), np.maximum(qd_a, qd_b), grid.vmax, th_hi + pad,
                           grid.pmax, grid.qmax])
    return low.astype(np.float64), high.astype(np.float64)


def make_normaliser(low: np.ndarray, high: np.ndarray) -> Normaliser:
    """The bounds onto [0, 1] per feature (seed 003: the sigmoid output is de-normalised into C1-C4)."""
    return Normaliser.minmax(low=low, high=high)


def load_data(cfg: PhysicsInformedConfig, progress: bool = False) -> PIData:
    """AC-OPF records of ``cfg.grid`` with loads and costs sampled (generated once, then read from the data folder)."""
    from pfbook.power.datasets import ac_opf_dataset

    ds = ac_opf_dataset(cfg.grid, cfg.n_samples, load_range=cfg.load_range, cost_range=cfg.cost_range,
                        seed=cfg.seed, out_dir=data_dir(), progress=progress)
    x, cols = ds.features(FEATURES)
    grid = load_grid(cfg.grid)
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_test = max(2, int(round(cfg.test_fraction * len(x))))
    train, test = x[order[n_test:]], x[order[:n_test]]
    low, high = operating_bounds(grid, cfg.load_range, split_record(train, grid)[3], cfg.angle_margin)
    return PIData(grid=grid, train=train, test=test, columns=cols,
                  layout=Layout(features=tuple(cols), grid=grid.name, shape=(len(cols),)), low=low, high=high,
                  normaliser=make_normaliser(low, high), dataset=ds, clip=cfg.clip_to_bounds)


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


def imbalance_fn(grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64, clip: bool = True
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """R of model-space records: de-normalise, then :func:`imbalance` in ``dtype`` (gradients flow back).

    With ``clip`` a record is first clipped to [0, 1], i.e. de-normalised *into* the operating bounds C1-C4: a
    coordinate of a noisy record beyond a bound (a voltage above V_max, a generator beyond its limit) is read as
    that bound. Samples of the sigmoid-output models lie inside already and are unchanged; for the noisy records of
    the forward process, for γ_T and for the posterior mean x̂_(t-1) it keeps the imbalance that of an operating
    point within C1-C4. Without it, noise reaches far outside the bounds and R grows with how far.
    """
    def R(z: torch.Tensor) -> torch.Tensor:
        z = z.to(dtype)
        return imbalance(grid, normaliser.inverse(z.clamp(0.0, 1.0) if clip else z))

    return R


def mismatch_fn(grid: Grid, normaliser: Normaliser, dtype: torch.dtype = torch.float64
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """(ΔP, ΔQ) per bus (B, 2 n_bus) of model-space records: the constraints H(x) = 0 of C5."""
    def H(z: torch.Tensor) -> torch.Tensor:
        x = normaliser.inverse(z.to(dtype))
        gt = grid_tensors(grid, x.device, x.dtype)
        pd_, qd_, v, th, pg, qg = split_record(x, grid)
        p, q = injections(gt, pg, qg, pd_, qd_)
        return torch.cat(nodal_mismatch(gt, p, q, v, th), dim=-1)

    return H


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
def learn_schedule(cfg: PhysicsInformedConfig, data: PIData, gT: float,
                   progress: bool = False) -> tuple[Schedule, LearnedSchedule, list[float]]:
    """Fit F_ω so that the forward process's mean imbalance follows γ_t = t γ_T / T (eq. 11).

    F_ω (hidden ``schedule_hidden``) maps a batch of normalised records to ᾱ_1..ᾱ_T, averaged over the batch;
    it starts from the original schedule. Returns the schedule for the whole training set, F_ω and the losses.
    """
    torch.manual_seed(cfg.seed)
    z = data.normaliser(torch.as_tensor(data.train, dtype=torch.float64)).float()
    net = LearnedSchedule(z.shape[1], cfg.T, hidden=cfg.schedule_hidden, init=original_schedule(cfg))
    R = data.imbalance_fn(torch.float32)
    losses = fit_schedule(net, z, R, gamma(gT, cfg.T), steps=cfg.schedule_steps, batch_size=cfg.schedule_batch,
                          lr=cfg.schedule_lr, seed=cfg.seed, progress=progress)
    with torch.no_grad():
        ab = torch.stack([net(z[k:k + 1024]) * len(z[k:k + 1024]) for k in range(0, len(z), 1024)]).sum(0) / len(z)
    return Schedule(ab.detach().cpu(), name="learned"), net, losses


def forward_imbalance(schedule: Schedule, data: PIData, n: int = 512, seed: int = 0) -> np.ndarray:
    """Mean R(x_t) of the forward process x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε at every step (Fig. 1, 3b)."""
    g = torch.Generator().manual_seed(seed)
    x0 = data.normaliser(torch.as_tensor(data.train[:n], dtype=torch.float64))
    R = data.imbalance_fn()
    out = np.empty(schedule.T)
    for t in range(schedule.T):
        out[t] = float(R(schedule.q_sample(x0, t, generator=g)).mean())
    return out


def _prev_excess(R: Callable[[torch.Tensor], torch.Tensor], schedule: Schedule, x0_hat: torch.Tensor,
                 x_t: torch.Tensor, t: torch.Tensor, gT: float) -> torch.Tensor:
    """max(R(x̂_{t-1}) - γ_{t-1}, 0) per record: x̂_{t-1} the posterior mean given x̂_0, γ_{t-1} = (step - 1) γ_T / T
    for timestep index ``t`` (step t + 1; γ_0 = 0 at the last step, where x̂_{t-1} is x̂_0)."""
    x_hat = schedule.q_posterior(x0_hat, x_t, t)[0]
    bound = gT * t.to(x_hat.dtype) / schedule.T
    return torch.relu(R(x_hat) - bound.to(x_hat.device))


def physics_floor(schedule: Schedule, data: PIData, gT: float, n: int = 256, seed: int = 0) -> np.ndarray:
    """The physics loss a *perfect* denoiser would pay at every step: max(R(x̄_{t-1}) - γ_{t-1}, 0) averaged over
    records, x̄_{t-1} the posterior mean of q(x_{t-1} | x_t, x_0) with the true x_0. Zero where the schedule keeps
    the forward imbalance under the line; the part of :func:`physics_loss` no model can remove."""
    g = torch.Generator().manual_seed(seed)
    x0 = data.normaliser(torch.as_tensor(data.train[:n], dtype=torch.float64))
    R = data.imbalance_fn()
    out = np.empty(schedule.T)
    for t in range(schedule.T):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        out[t] = float(_prev_excess(R, schedule, x0, schedule.q_sample(x0, t, generator=g), tt, gT).mean())
    return out


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
    return pd.DataFrame({"share above bound": share, "excess (p.u.)": excess},
                        index=pd.RangeIndex(1, T + 1, name="step t"))


# ---------------------------------------------------------------------------------------- physics-informed training
def physics_loss(grid: Grid, normaliser: Normaliser, gT: float, eta: float = 1.0, on: str = "prev",
                 dtype: torch.dtype = torch.float32, clip: bool = True
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
            excess = torch.relu(R(ctx.x0_hat))                           # against γ_0 = 0 at every t
        return {"physics": (eta * excess.mean()).to(ctx.x0.dtype)}

    return loss


def train_ddpm(cfg: PhysicsInformedConfig, data: PIData, schedule: Schedule, physics: bool = True,
               gT: float | None = None, on: str | None = None, progress: bool = False) -> tuple[DiffusionModel, Trainer]:
    """The U-Net MLP with sigmoid output (predicting x̂_0 in [0, 1]) trained on ``data.train``; with ``physics``
    the loss of :func:`physics_loss` is added (``gT`` required; ``on`` defaults to ``cfg.physics_on``)."""
    torch.manual_seed(cfg.seed)
    net = UNetMLPDenoiser(len(data.columns), widths=cfg.widths, time_dim=cfg.time_dim, output="sigmoid",
                          prediction="x0")
    extra = None
    if physics:
        if gT is None:
            raise ValueError("physics-informed training needs γ_T (gamma_T(...)) for the bounds γ_t")
        extra = physics_loss(data.grid, data.normaliser, gT, cfg.eta, on or cfg.physics_on, clip=data.clip)
    trainer = Trainer(net, schedule, data.train, cfg.train_config(), normaliser=data.normaliser, layout=data.layout,
                      extra_loss=extra)
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


def train_models(cfg: PhysicsInformedConfig, data: PIData, gT: float, learned: Schedule,
                 progress: bool = False) -> tuple[dict[str, DiffusionModel], dict[str, Trainer], dict[str, float]]:
    """Every DDPM of Table I (and, with ``cfg.ablations``, the ablations): models, trainers and training seconds."""
    schedules = {"original": original_schedule(cfg), "learned": learned}
    models, trainers, seconds = {}, {}, {}
    for name, (sched, phys, on) in (VARIANTS | (ABLATIONS if cfg.ablations else {})).items():
        t0 = time.perf_counter()
        models[name], trainers[name] = train_ddpm(cfg, data, schedules[sched], physics=phys, gT=gT, on=on,
                                                  progress=progress)
        seconds[name] = time.perf_counter() - t0
    return models, trainers, seconds


def draw(dm: DiffusionModel, n: int, guidance=None, seed: int = 0,
         callback=None) -> tuple[np.ndarray, float]:
    """``n`` DDPM samples in physical units (float64 NumPy) and the seconds they took."""
    gen = torch.Generator(device=dm.device).manual_seed(seed)
    t0 = time.perf_counter()
    x = dm.sample(n, DDPMSampler(dm.schedule), guidance=guidance, generator=gen, callback=callback)
    return x.double().cpu().numpy(), time.perf_counter() - t0


def reverse_imbalance(dm: DiffusionModel, grid: Grid, n: int = 256, seed: int = 0,
                      guidance=None, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Samples and the mean R of x_{t-1} after every reverse step, ordered by step t = T..1 (Fig. 3c); ``clip`` as
    in :func:`imbalance_fn` (the last entry, R of the samples, does not depend on it)."""
    R = imbalance_fn(grid, dm.normaliser, clip=clip)
    trace: list[float] = []

    def record(state, x_prev):
        trace.append(float(R(x_prev).mean()))

    x, _ = draw(dm, n, guidance=guidance, seed=seed, callback=record)
    return x, np.asarray(trace)


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
            raise ValueError(f"{name!r}: need the trace of at least the last two reverse steps "
                             f"(reverse_imbalance), got shape {trace.shape}")
        rows[name] = {"R(x_1) (p.u.)": trace[-2], "R(x_0) (p.u.)": trace[-1], "reduction": trace[-2] / trace[-1]}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------------------- seed 000's guidance
class LogitProjection(Guidance):
    """x̂_0 projected onto C5 (ΔP = ΔQ = 0) in logit space: u = logit(x̂_0), u' = u - λ Jᵀ(J Jᵀ)⁻¹ H(sigmoid(u)).

    The Gauss-Newton step of :class:`~pfbook.diffusion.ProjectionGuidance`, taken on the sigmoid's input rather than
    on x̂_0, so the corrected x̂_0 = sigmoid(u') stays inside (0, 1), i.e. inside C1-C4, and a feature near one of
    its bounds moves little (the sigmoid is flat there). Computed in float64.
    """

    def __init__(self, constraint: Callable[[torch.Tensor], torch.Tensor], scale=1.0, inner_steps: int = 1,
                 damping: float = 1e-10, eps: float = 1e-9):
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
    """Seed 000's sampling-time correction on this model: over the last ``guidance_last`` share of the reverse
    steps, ``guidance_inner_steps`` Gauss-Newton steps of x̂_0 onto C5 in logit space (:class:`LogitProjection`)."""
    last = max(1, int(round(cfg.guidance_last * cfg.T)))

    def scale(t: int, T: int) -> float:
        return 1.0 if t < last else 0.0

    return LogitProjection(mismatch_fn(grid, normaliser), scale=scale, inner_steps=cfg.guidance_inner_steps)


# ---------------------------------------------------------------------------------------- physics-informed GAN
def _mlp(sizes: Sequence[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """G(z): noise to a normalised record in (0, 1) through a sigmoid (within C1-C4, as the DDPMs)."""

    def __init__(self, noise: int, dim: int, widths: Sequence[int]):
        super().__init__()
        self.noise = noise
        self.net = _mlp([noise, *widths, dim], nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class Discriminator(nn.Module):
    def __init__(self, dim: int, widths: Sequence[int]):
        super().__init__()
        self.net = _mlp([dim, *widths, 1], lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class GAN:
    """A trained generator with its normaliser; :meth:`sample` returns records in physical units."""

    generator: Generator
    normaliser: Normaliser
    losses: pd.DataFrame

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        dev = next(self.generator.parameters()).device
        with torch.no_grad():
            z = torch.randn(n, self.generator.noise, generator=g).to(dev)
            return self.normaliser.inverse(self.generator(z).double()).cpu().numpy()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())


def train_gan(cfg: PhysicsInformedConfig, data: PIData, progress: bool = False) -> GAN:
    """Physics-informed GAN (the paper's baseline, after Wang & Srikantha 2022): non-saturating GAN loss plus
    ``gan_eta`` R(G(z)) on the generator, on the same normalised records as the DDPMs."""
    from tqdm.auto import tqdm

    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    dim = len(data.columns)
    G = Generator(cfg.gan_noise, dim, cfg.gan_widths).to(dev)
    D = Discriminator(dim, tuple(reversed(cfg.gan_widths))).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    x = data.normaliser(torch.as_tensor(data.train, dtype=torch.float64)).float().to(dev)
    R = data.imbalance_fn(torch.float32)
    bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for _ in tqdm(range(cfg.gan_steps), desc="GAN", disable=not progress):
        real = x[torch.randint(len(x), (cfg.gan_batch,), generator=gen).to(dev)]
        noise = torch.randn(cfg.gan_batch, cfg.gan_noise, generator=gen).to(dev)
        fake = G(noise)
        d_real, d_fake = D(real), D(fake.detach())
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_gen = D(fake)
        adv = bce(d_gen, torch.ones_like(d_gen))
        phys = R(fake).mean().to(adv.dtype)
        loss_g = adv + cfg.gan_eta * phys
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        rows.append((loss_d.item(), adv.item(), phys.item()))
    G.eval()
    return GAN(G, data.normaliser, pd.DataFrame(rows, columns=["discriminator", "generator (adversarial)",
                                                              "generator (physics R)"]))


# ---------------------------------------------------------------------------------------- evaluation
def within_bounds(x: np.ndarray, low: np.ndarray, high: np.ndarray, tol: float = 1e-6,
                  atol: float = 1e-5) -> np.ndarray:
    """Per record: every feature within its C1-C4 bound, up to ``tol`` of the bound's width or ``atol`` (p.u., rad),
    whichever is larger (a fixed feature, such as the reference angle, has a bound of width zero)."""
    slack = np.maximum(tol * (high - low), atol)
    return ((x >= low - slack) & (x <= high + slack)).all(1)


def within_branch_limits(grid: Grid, x: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Per record: every branch's apparent power within its rating at both ends (C6), within ``tol`` p.u."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    _, _, v, th, _, _ = split_record(xt, grid)
    viol = limit_violations(grid_tensors(grid, "cpu", torch.float64), v, th)["branch"]
    return (viol <= tol).all(-1).numpy()


def _varying(reference: np.ndarray) -> np.ndarray:
    return reference.std(0) > 1e-6


def distances(x: np.ndarray, reference: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean per-feature W1/σ, sliced Wasserstein and MMD² of standardised records against ``reference``."""
    from scipy.stats import wasserstein_distance

    keep = _varying(reference)
    mu, sd = reference.mean(0)[keep], reference.std(0)[keep]
    a, b = (x[:, keep] - mu) / sd, (reference[:, keep] - mu) / sd
    w1 = float(np.mean([wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])]))
    return {"W1/σ": w1, "sliced W/σ": sliced_wasserstein(a, b, seed=seed),
            "MMD²": mmd_rbf(a[:2000], b[:2000], bandwidths=(1.0, 2.0, 5.0, 10.0))}


def evaluate(data: PIData, samples: Mapping[str, np.ndarray], paper: Mapping[str, float] | None = None,
             seconds: Mapping[str, float] | None = None, real_row: bool = True) -> pd.DataFrame:
    """Table I and beyond: one row per set of samples, judged against the held-out records.

    Columns: mean imbalance R (p.u., eq. 7) and its median and 99th percentile, the paper's Table I value,
    the share within C1-C4, the share within the branch limits C6, distances to the held-out records (per
    feature W1 and sliced Wasserstein in units of the real std, MMD² of the standardised records) and seconds.
    With ``real_row`` the first row is the training records themselves: R of a solved OPF (solver tolerance)
    and the real-vs-real scale of the distances.
    """
    sets = ({"real (training records)": data.train[:len(data.test) * 4]} if real_row else {}) | dict(samples)
    paper, seconds = paper or {}, seconds or {}
    rows = {}
    for name, x in sets.items():
        r = imbalance(data.grid, torch.as_tensor(x, dtype=torch.float64)).numpy()
        rows[name] = {"mean R (p.u.)": r.mean(), "median R": np.median(r), "p99 R": np.quantile(r, 0.99),
                      "paper mean R": paper.get(name, np.nan),
                      "share within C1-C4": float(within_bounds(x, data.low, data.high).mean()),
                      "share within C6": float(within_branch_limits(data.grid, x).mean()),
                      **distances(x, data.test), "seconds": seconds.get(name, np.nan)}
    return pd.DataFrame.from_dict(rows, orient="index")


SUMMARY_NAME = "physics-informed-summary-{profile}.json"


def save_summary(folder: "str | Path", table: pd.DataFrame, cfg: PhysicsInformedConfig, profile: str,
                 extra: dict | None = None) -> Path:
    """Write ``table`` with its configuration to ``folder/physics-informed-summary-<profile>.json`` (atomically)."""
    return write_summary(Path(folder) / SUMMARY_NAME.format(profile=check_profile(profile)), cfg, profile,
                         {"grid": cfg.grid}, table=table.to_dict(orient="index"), **(extra or {}))


def load_summaries(*folders: "str | Path", profiles: Sequence[str] | None = None) -> pd.DataFrame:
    """Every ``<folder>/<grid>/physics-informed-summary-<profile>.json`` as one table indexed by (grid, profile, model).

    ``folders`` are searched in order and the first summary found for a (grid, profile) wins, so a fresh run in
    ``runs/`` shadows the published one in ``book/results/``.
    """
    return summary_table(folders, SUMMARY_NAME, [check_profile(p) for p in (profiles or PROFILES)], "model")


# ---------------------------------------------------------------------------------------- figures
def plot_schedules(original: Schedule, learned: Schedule, fwd: Mapping[str, np.ndarray], gT: float,
                   reverse: Mapping[str, np.ndarray]):
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
        ax[2].plot(steps[::-1], r, label=label)               # r[i] is R(x_{t-1}) after the step from t = T - i
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
