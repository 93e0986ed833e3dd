"""Settings of the TSDM chapter: the systems of the paper's tables, its corruption scenarios, and :class:`TSDMConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from pfbook.config import ChapterConfig, check_profile
from pfbook.diffusion import Schedule, TrainConfig

#: SCADA systems of Table I and the number of buses in their attack region (paper: M = 24, 48, 96 channels)
SCADA_SYSTEMS: dict[str, int] = {"case30": 6, "case57": 10, "case118": 20}


#: PMU systems of Table III and the number of generators in their region (paper: M = 48, 120 channels)
PMU_SYSTEMS: dict[str, int] = {"ieee39": 5, "npcc": 13}


#: rows of Table III (PMU): label -> corruption kind of :mod:`pfbook.power.corruptions`; PMU channels are attacked
#: directly (they measure the states: U, θ, δ, E'_d, E'_q), with the paper's magnitudes
SCENARIOS: dict[str, str] = {
    "FDIA step": "step",
    "FDIA ramp": "ramp",
    "FDIA random": "random",
    "data loss RM": "rm",
    "data loss NM": "nm",
}

#: rows of Table I (SCADA): the FDIA rows attack the *states* (``"state step"``: |V| by 1-10 %, θ by 10-100 %,
#: carried into the measurements as h(x + c) - h(x)); "measurement offset" is a step of 1-10 % on measurement
#: channels (an attacker without the network model), kept as an extra row
SCADA_SCENARIOS: dict[str, str] = {
    "FDIA step": "state step",
    "FDIA ramp": "state ramp",
    "FDIA random": "state random",
    "measurement offset": "step",
    "data loss RM": "rm",
    "data loss NM": "nm",
}

#: share of the window an FDIA on states spans (one contiguous span at a random start)
ATTACK_SPAN = 0.5


#: (start day, number of days) of the SCADA data each profile uses: ci a summer week, default the first quarter,
#: paper the whole year of simbench's profiles
SCADA_DAYS: dict[str, tuple[int, int]] = {"ci": (154, 7), "default": (0, 91), "paper": (0, 366)}


#: (number of events, seconds simulated) of the PMU data each profile uses
PMU_EVENTS: dict[str, tuple[int, float]] = {"ci": (4, 5.0), "default": (160, 10.0), "paper": (400, 10.0)}


# ---------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TSDMConfig(ChapterConfig):
    """Settings of the TSDM chapter; :meth:`for_profile` builds one per profile and system.

    ``system`` is a SCADA grid (``case30``, ``case57``, ``case118``) or a PMU case (``ieee39``, ``npcc``).
    ``layout="channels"`` feeds the U-Net the M measurement channels as feature maps over time (a 1 x T image
    with M channels); ``"image"`` is the paper's M x T single-channel image (Fig. 3), 2-D convolutions across
    channels as well as time.
    """

    PROFILES = {
        "ci": {
            "window": 48,
            "stride": 6,
            "base": 16,
            "ov_samples": 8,
            "n_test": 4,
            "table_s": (5, 10),
            "n_timing": 2,
            "omega_sweep": (0.5, 1.0, 2.0),
            "R_sweep": (1, 2),
            "ratio_sweep": (0.05, 0.3),
            "n_sweep": 2,
            "baseline_steps": 60,
            "calibration_fraction": 0.15,
            "train": {"steps": 100, "batch_size": 8},
        },
        "default": {},
        "paper": {
            "layout": "image",
            "base": 64,
            "mults": (1, 2, 2),
            "ov_samples": 512,
            "n_test": 200,
            "n_timing": 50,
            "n_sweep": 100,
            "baseline_steps": 20_000,
            "train": {"steps": 50_000, "batch_size": 32, "lr": 2e-4, "ema_decay": 0.999},
        },
    }
    WHERE = "system"

    system: str = "case30"
    data_profile: str = "default"  # which prepared dataset to read (its days / events)
    region: int | None = None  # buses (SCADA) / generators (PMU) in the region; None: default
    window: int = 96  # T (SCADA: 96 = one day of 15 min; PMU paper: 120 = 4 s)
    stride: int = 8  # between training windows
    calibration_fraction: float = 0.1  # days / events for the 3σ calibration
    test_fraction: float = 0.2  # days / events held out for the tables
    N: int = 100  # diffusion steps (paper: 100)
    beta_start: float = 1e-3  # linear β over N = 100 steps (1e-4..0.02 rescaled by 1000/N)
    beta_end: float = 0.2
    layout: str = "channels"  # "channels" or "image" (paper)
    base: int = 32  # U-Net width
    mults: tuple[int, ...] = (1, 2)
    prediction: str = "epsilon_skip"  # the U-Net's output: "epsilon" or "epsilon_skip" (see notes)
    # 3000 optimiser steps (default profile, PMU: 4000; see special_cases) of 16 windows, lr 1e-3 constant,
    # EMA 0.995, gradients clipped to norm 1
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=16, lr=1e-3, lr_decay_every=None, ema_decay=0.995, grad_clip=1.0
        )
    )
    ov_samples: int = 64  # training windows per timestep for eq. 28
    s: int = 10  # DDIM subsequence length (paper: 10)
    omega: float = 1.0  # ω of eq. 33 (paper: 1.0)
    R: int = 2  # resamplings per step in stage 2 (paper: 2)
    sigma_k: float = 3.0  # the 3σ test of Algorithm 1 taken literally
    max_flagged: float = 0.1  # Algorithm 1: stage 2 runs when at least this share is flagged (paper: 10 %)
    rule: str = "keep"  # output rule: "keep" (unflagged entries kept, see TSDM.recover) or "algorithm1"
    false_flag_rate: float = 0.005  # "keep": the threshold flags this share of clean calibration entries
    detect_rounds: int = 2  # "keep": stage 1 rerun with the flagged entries left out of the guidance, this many times
    ratio: float = 0.1  # modified ratio of the tables
    n_test: int = 24  # test windows per table row
    table_s: tuple[int, ...] = (10, 20, 50)  # Table IV subsequence lengths
    n_timing: int = 8  # windows of Table IV
    omega_sweep: tuple[float, ...] = (0.1, 0.5, 1.0, 1.5, 2.0)
    R_sweep: tuple[int, ...] = (1, 2, 5, 10)
    ratio_sweep: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
    n_sweep: int = 12  # test windows per sweep point
    baseline_steps: int = 500  # optimiser steps of each baseline network
    seed: int = 0
    device: str = "cpu"

    @property
    def source(self) -> str:
        return "pmu" if self.system in PMU_SYSTEMS else "scada"

    @property
    def region_size(self) -> int:
        if self.region is not None:
            return int(self.region)
        table = PMU_SYSTEMS if self.source == "pmu" else SCADA_SYSTEMS
        return table.get(self.system, 6 if self.source == "scada" else 5)

    @classmethod
    def special_cases(cls, profile: str, cfg: "TSDMConfig") -> dict:
        """The dataset of the profile, and a PMU system's longer windows and training (the default data's 160 events,
        about 120 stable, keep improving held-out events up to a few thousand steps; on 40 events the priors
        memorised their training events past a few hundred); the ``ci`` profile's small regions."""
        pmu = cfg.system in PMU_SYSTEMS
        out = {
            "data_profile": check_profile(profile),
            "window": 120 if pmu else 96,
            "stride": 10 if pmu else 8,
            "train.steps": 4000 if pmu else 3000,
        }
        if profile == "ci":
            out["region"] = 3 if pmu else 4
        return out

    def schedule(self) -> Schedule:
        return Schedule.linear(self.N, self.beta_start, self.beta_end)

    def train_config(self) -> TrainConfig:
        return self.train

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["mults"] = list(self.mults)
        return d
