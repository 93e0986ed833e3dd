"""Settings of the DiffOPF chapter: the paper's grids, their labels, and :class:`DiffOPFConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from pfbook.config import ChapterConfig
from pfbook.diffusion import Schedule, TrainConfig, make_sampler
from pfbook.power.grids import load_grid

#: The paper's grids (PGLib-OPF v23.07, the paper's ref. [29]) and their labels in its tables; MATPOWER's case118,
#: a different grid under the same name (see the chapter), is a second, labelled setting.
GRID_LABELS = {
    "pglib_opf_case5_pjm": "PJM",
    "pglib_opf_case5_pjm__api": "PJM-API",
    "pglib_opf_case14_ieee": "IEEE 14-Bus",
    "pglib_opf_case24_ieee_rts": "IEEE 24-Bus",
    "pglib_opf_case118_ieee": "IEEE 118-Bus",
    "case118": "IEEE 118-Bus (MATPOWER)",
}


# ---------------------------------------------------------------------------------------- configuration
#: Grids the chapter runs besides its main grid, per profile (its ``grids`` parameter overrides them); the other
#: profiles show other grids from their stored summaries (``runs/`` and ``book/results/``).
PROFILE_GRIDS = {
    "ci": (),
    "default": (),
    "paper": (
        "pglib_opf_case5_pjm",
        "pglib_opf_case5_pjm__api",
        "pglib_opf_case14_ieee",
        "pglib_opf_case24_ieee_rts",
        "pglib_opf_case118_ieee",
        "case118",
    ),
}


#: Grids with more buses than this are judged on fewer test loads and draws in the ``default`` profile.
LARGE_GRID = 30


#: The ``default`` profile's changes on those grids (settings as :func:`pfbook.config.apply_overrides` reads them).
LARGE_GRID_DEFAULT = {
    "n_test": 10,
    "n_draw": 50,
    "train.steps": 4000,
    "sweep_loads": 5,
    "step_sweep": ("DDPM", "DDIM 100", "DDIM 20", "DDIM 10"),
    "loads_per_batch": 10,
}


#: The denoiser output on grids of more than :data:`LARGE_GRID` buses, in every profile: ε̂ = sqrt(1-ᾱ_t) x_t + MLP
#: (on case118 it halves the best-of-50 optimality gap of a plain ε-network; on case5 the plain one samples as
#: well with 20 DDIM steps as with the 1000 of DDPM, the skip version does not).
LARGE_GRID_PREDICTION = "epsilon_skip"


@dataclass(frozen=True)
class DiffOPFConfig(ChapterConfig):
    """Settings of the DiffOPF chapter; :meth:`for_profile` builds one per profile (comments: the paper's value)."""

    PROFILES = {
        "ci": {
            "n_samples": 200,
            "n_test": 8,
            "width": 128,
            "depth": 3,
            "n_draw": 40,
            "sampler": "DDIM 20",
            "deepopf_steps": 400,
            "step_sweep": ("DDIM 50", "DDIM 10"),
            "sweep_loads": 4,
            "loads_per_batch": 8,
            "train": {"steps": 600, "batch_size": 128, "lr": 2e-3, "lr_decay_every": 300, "ema_decay": 0.99},
        },
        "default": {},
        "paper": {
            "width": 500,
            "depth": 6,
            "sampler": "DDPM",
            "deepopf_steps": 20_000,
            "sweep_loads": 100,
            "train": {"steps": 150_000, "lr": 1e-4, "lr_decay_every": 15_000, "ema_decay": None},
        },
    }

    grid: str = "pglib_opf_case5_pjm"  # the paper's PJM 5-bus (PGLib-OPF)
    n_samples: int = 5000  # training records (paper: 5000)
    n_test: int = 100  # held-out test loads (paper: 100)
    load_range: tuple[float, float] = (0.8, 1.0)
    cost_range: tuple[float, float] = (0.6, 1.4)
    T: int = 1000  # linear β schedule (DDPM defaults)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    width: int = 256  # MLP denoiser (paper: not stated; constrained diffusion uses 500 x 6)
    depth: int = 4
    prediction: str = "epsilon"  # denoiser output; grids above LARGE_GRID buses: "epsilon_skip"
    # 8000 optimiser steps of 500 records, lr 1e-3 x 0.6 every 2000 steps, EMA 0.999 (DeepOPF uses its batch size)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=8000, batch_size=500, lr=1e-3, lr_decay_every=2000, lr_decay=0.6, ema_decay=0.999
        )
    )
    n_draw: int = 250  # samples per load (paper: 250)
    sampler: str = "DDIM 100"  # "DDPM" (all T steps; paper) or "DDIM <steps>"
    guidance: str = "observation"  # "observation" (Alg. 3) or "replacement" (inpainting)
    guidance_scale: float = 1.0  # λ in model space; 1 = projection onto A x̂_0 = y
    clip_x0: float | None = 0.1  # x̂_0 clipped to the records' range widened by this share; None: off
    loads_per_batch: int = 20  # test loads sampled together (20 x 250 = 5000 rows)
    deepopf_width: int = 256
    deepopf_depth: int = 3
    deepopf_steps: int = 3000
    deepopf_lr: float = 1e-3
    step_sweep: tuple[str, ...] = ("DDPM", "DDIM 100", "DDIM 50", "DDIM 20", "DDIM 10")
    sweep_loads: int = 8  # test loads in the sampler-steps trade-off (one batch each)
    loadflow_workers: int | None = None  # processes for the CPU load-flow solves; None: one per CPU core
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def special_cases(cls, profile: str, cfg: "DiffOPFConfig") -> dict:
        """A grid of more than :data:`LARGE_GRID` buses gets :data:`LARGE_GRID_PREDICTION` in every profile and, in the
        ``default`` profile, is judged on fewer loads and draws (:data:`LARGE_GRID_DEFAULT`): its load-flow solves
        cost about 0.04 CPU-seconds each on 118 buses (sparse backend of :mod:`pfbook.power.loadflow`), and 25 000
        of them would add a quarter of an hour per grid to the book build."""
        if load_grid(cfg.grid).n_bus <= LARGE_GRID:
            return {}
        return {"prediction": LARGE_GRID_PREDICTION, **(LARGE_GRID_DEFAULT if profile == "default" else {})}

    def schedule(self) -> Schedule:
        return Schedule.linear(self.T, self.beta_start, self.beta_end)

    def train_config(self) -> TrainConfig:
        return self.train

    def make_sampler(self, name: str | None = None):
        """The sampler ``name`` (default: ``sampler``), "DDPM" or "DDIM <steps>", on this chapter's schedule."""
        return make_sampler(name or self.sampler, self.schedule())
