"""The diffusion core shared by the book's four methods.

It sees tensors and callables only, never grids or power flows (those are composed in by the methods):

* :mod:`~pfbook.diffusion.schedules` -- linear, cosine and learned noise schedules, q(x_t | x_0), posteriors;
* :mod:`~pfbook.diffusion.denoisers` -- ε_θ(x_t, t, cond): the MLP of Hoseinpour & Dvorkin, the U-Net MLP of Wang et al.,
  the conv U-Net of Pei et al. (TSDM);
* :mod:`~pfbook.diffusion.normalise` -- feature normalisers stored with the model;
* :mod:`~pfbook.diffusion.training` -- Algorithm 1 with an extra-loss hook, EMA, checkpoints, resume;
* :mod:`~pfbook.diffusion.samplers` -- DDPM, DDIM on subsequences, DDIM with TSDM's optimal variance;
* :mod:`~pfbook.diffusion.guidance` -- edits of (ε̂, x̂_0) between the model call and the step;
* :mod:`~pfbook.diffusion.traces` -- a caller's statistic recorded along the forward or the reverse process;
* :mod:`~pfbook.diffusion.toy` -- known-answer targets (the distances that judge samples are in :mod:`pfbook.evaluation`).
"""

from pfbook.diffusion.denoisers import (
    ConvUNetDenoiser,
    Denoiser,
    MLPDenoiser,
    UNetMLPDenoiser,
    build_denoiser,
    timestep_embedding,
)
from pfbook.diffusion.guidance import (
    ClampGuidance,
    Compose,
    GradientGuidance,
    Guidance,
    GuidanceState,
    NoiseCorrectionGuidance,
    ObservationGuidance,
    ProjectionGuidance,
    ReplacementGuidance,
    denormalised,
    ramp,
)
from pfbook.diffusion.normalise import Normaliser
from pfbook.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    OptimalVariance,
    Sampler,
    ddim_timesteps,
    estimate_optimal_variance,
    make_sampler,
    predict,
)
from pfbook.diffusion.schedules import (
    LearnedSchedule,
    Schedule,
    cosine_alpha_bar,
    fit_schedule,
    linear_betas,
    make_schedule,
)
from pfbook.diffusion.traces import forward_trace, reverse_trace
from pfbook.diffusion.training import (
    DiffusionModel,
    Layout,
    LossContext,
    TrainConfig,
    Trainer,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    train,
)

__all__ = [
    "Schedule",
    "LearnedSchedule",
    "linear_betas",
    "cosine_alpha_bar",
    "make_schedule",
    "fit_schedule",
    "Denoiser",
    "MLPDenoiser",
    "UNetMLPDenoiser",
    "ConvUNetDenoiser",
    "build_denoiser",
    "timestep_embedding",
    "Normaliser",
    "TrainConfig",
    "Trainer",
    "train",
    "Layout",
    "LossContext",
    "DiffusionModel",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_device",
    "Sampler",
    "DDPMSampler",
    "DDIMSampler",
    "OptimalVariance",
    "estimate_optimal_variance",
    "ddim_timesteps",
    "make_sampler",
    "predict",
    "Guidance",
    "GuidanceState",
    "Compose",
    "GradientGuidance",
    "ProjectionGuidance",
    "ObservationGuidance",
    "ReplacementGuidance",
    "NoiseCorrectionGuidance",
    "ClampGuidance",
    "denormalised",
    "ramp",
    "forward_trace",
    "reverse_trace",
]
