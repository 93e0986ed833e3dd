"""Settings of the physics-informed DDPM chapter, and the paper's published numbers it is compared with."""

from __future__ import annotations

from dataclasses import dataclass, field

from pfbook.config import ChapterConfig
from pfbook.diffusion import TrainConfig

#: Table I of the paper: mean power imbalance (p.u.) of generated samples.
PAPER_TABLE_I = {
    "case14": {"GAN + physics": 0.009, "DDPM, no physics": 0.25, "DDPM + physics, original ᾱ": 0.11, "proposed": 0.013},
    "case30": {"GAN + physics": 0.015, "DDPM, no physics": 0.34, "DDPM + physics, original ᾱ": 0.09, "proposed": 0.017},
}


#: Sec. IV-B1: the imbalance of pure Gaussian noise the paper measured (p.u.)
PAPER_GAMMA_T = {"case14": 2.75, "case30": 2.87}


#: Sec. IV-A: records per grid in the paper
PAPER_SAMPLES = {"case14": 70_000, "case30": 100_000}


MODELS = ("GAN + physics", "DDPM, no physics", "DDPM + physics, original ᾱ", "proposed")


@dataclass(frozen=True)
class PhysicsInformedConfig(ChapterConfig):
    """Settings of the physics-informed DDPM chapter; :meth:`for_profile` builds one per profile.

    ``physics_on`` chooses the sample the physics loss is evaluated on: ``"prev"`` (the model's one-step
    reverse estimate x̂_{t-1}, the posterior mean given x̂_0, against γ_{t-1}) or ``"x0"`` (x̂_0 against γ_0 = 0).
    """

    PROFILES = {
        "ci": {
            "n_samples": 300,
            "widths": (64, 32, 16, 8, 16, 32, 64),
            "time_dim": 32,
            "gamma_samples": 1024,
            "schedule_hidden": (64, 32),
            "schedule_steps": 30,
            "schedule_batch": 32,
            "schedule_lr": 1e-2,
            "gan_noise": 16,
            "gan_widths": (64, 64),
            "gan_steps": 250,
            "gan_batch": 128,
            "gan_lr": 1e-3,
            "n_generate": 200,
            "ablations": False,
            "guidance_last": 0.025,
            "guidance_inner_steps": 1,
            "train": {"steps": 250, "batch_size": 128, "lr": 2e-3, "lr_decay_every": None, "ema_decay": 0.98},
        },
        "default": {},
        "paper": {
            "schedule_steps": 2000,
            "schedule_batch": 1024,
            "gan_steps": 100_000,
            "gan_batch": 1024,
            "n_generate": 5000,
            "train": {"steps": 100_000, "batch_size": 1024, "lr": 1e-4, "lr_decay_every": None, "ema_decay": None},
        },
    }

    grid: str = "case14"
    n_samples: int = 16_000  # AC-OPF records (paper: 70 000 for case14, 100 000 for case30)
    load_range: tuple[float, float] = (0.8, 1.2)
    cost_range: tuple[float, float] = (0.5, 1.5)
    test_fraction: float = 0.2  # records held out to judge samples against
    angle_margin: float = 0.1  # C4 bounds: the records' angle range widened by this share per side
    clip_to_bounds: bool = True  # R of a noisy record: clipped into C1-C4 first (see imbalance_fn)
    T: int = 200  # paper: 200 steps
    beta_start: float = 5e-4  # original schedule: Ho et al.'s 1e-4 -> 0.02 at T = 1000,
    beta_end: float = 0.1  # rescaled by 1000 / T (ᾱ_T ≈ 4e-5 as the paper quotes)
    widths: tuple[int, ...] = (256, 128, 64, 32, 64, 128, 256)  # paper, Sec. IV-B2
    time_dim: int = 128
    # per DDPM: 3000 optimiser steps of 256 records, lr 1e-3 x 0.5 every 1000 steps, EMA 0.995
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=256, lr=1e-3, lr_decay_every=1000, lr_decay=0.5, ema_decay=0.995
        )
    )
    eta: float = 1.0  # weight of the physics loss (paper: 1)
    physics_on: str = "prev"  # "prev": x̂_{t-1} vs γ_{t-1}; "x0": x̂_0 vs 0
    gamma_samples: int = 4096  # Gaussian draws behind γ_T
    schedule_hidden: tuple[int, ...] = (512, 256)  # F_ω (paper)
    schedule_steps: int = 200
    schedule_batch: int = 128  # paper: 1024
    schedule_lr: float = 3e-3
    gan_noise: int = 64
    gan_widths: tuple[int, ...] = (512, 512, 256)  # generator; the discriminator mirrors it
    gan_steps: int = 3000
    gan_batch: int = 256
    gan_lr: float = 2e-4
    gan_eta: float = 1.0  # weight of the GAN's physics loss R(G(z))
    n_generate: int = 1000  # samples per model
    ablations: bool = True  # also train x̂_0-loss and learned-schedule-without-physics models
    guidance_last: float = 0.1  # share of the last reverse steps with the projection guidance
    guidance_inner_steps: int = 2
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def special_cases(cls, profile: str, cfg: "PhysicsInformedConfig") -> dict:
        """The ``paper`` profile trains on as many records as the paper had for the grid (:data:`PAPER_SAMPLES`)."""
        return {"n_samples": PAPER_SAMPLES.get(cfg.grid, 100_000)} if profile == "paper" else {}

    def __post_init__(self):
        super().__post_init__()
        if self.physics_on not in ("prev", "x0"):
            raise ValueError(
                f"physics_on must be 'prev' (x̂_(t-1) vs γ_(t-1)) or 'x0' (x̂_0 vs 0), got {self.physics_on!r}"
            )
        if not 0 <= self.guidance_last <= 1:
            raise ValueError(f"guidance_last is a share of the reverse steps in [0, 1], got {self.guidance_last}")

    def train_config(self) -> TrainConfig:
        return self.train
