r"""DiffOPF: OPF warm starts sampled from a diffusion prior (Hoseinpour & Dvorkin), against DeepOPF.

The method composes the power-system layer with the diffusion core:

* **data** -- OPF records x_0 = (p_d, q_d, p_g, q_g) (loads and generators in the grid's order, per unit):
  loads x U(0.8, 1.0) with the power factor kept, linear cost coefficients x U(0.6, 1.4)
  (:func:`pfbook.power.datasets.ac_opf_dataset`); held-out test loads are a second dataset with another seed.
  The paper's grids are PGLib-OPF's (``pglib_opf_case5_pjm``, ``pglib_opf_case5_pjm__api``, ...; see
  :data:`GRID_LABELS`);
* **prior** -- a DDPM (Algorithm 1) over x_0 with the MLP denoiser of the diffusion core;
* **conditional sampling** (Algorithm 3) -- y = (p_d, q_d) = A x_0 with A a selection matrix; at every reverse
  step x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0) (:class:`~pfbook.diffusion.ObservationGuidance`; the paper prints a minus
  sign, which moves A x̂_0 away from y: a typo), or the inpainting variant
  (:class:`~pfbook.diffusion.ReplacementGuidance`); 250 samples per load in one batch;
* **DeepOPF** -- an MLP regressor (p_d, q_d) -> (p_g, q_g) trained with MSE on the same records;
* **historical records** -- the warm starts a lookup gives: the dispatch of the training records nearest the test
  load (:func:`nearest_records`), as many as DiffOPF draws;
* **evaluation** -- each warm start is projected on the power-flow manifold by the load-flow problem (20)
  (:mod:`pfbook.power.loadflow`), then judged by eq. (21a-c): optimality gap against the test record's OPF cost
  (with that record's cost coefficients), setpoint error (the objective of (20)), voltage violation, and the
  generator and branch limits of the solution; Table I takes the best sample per metric (the paper's oracle pick,
  which needs c*) and the pick a user can make without c* (:func:`user_pick`), and reports the mean and CVaR10%
  over test loads; Table II the sample complexity of eq. (16)-(19).
"""

from __future__ import annotations

import numpy as np
import torch

from pfbook.diffusion import (
    ClampGuidance,
    Compose,
    DiffusionModel,
    MLPDenoiser,
    Normaliser,
    ObservationGuidance,
    ReplacementGuidance,
    Trainer,
)
from pfbook.methods.diffopf.config import DiffOPFConfig
from pfbook.methods.diffopf.data import OPFRecords


# ---------------------------------------------------------------------------------------- the prior and sampling
def train_prior(cfg: DiffOPFConfig, data: OPFRecords, progress: bool = False) -> DiffusionModel:
    """The DDPM prior p_θ(x_0) over the joint records (Algorithm 1), standard-normalised features."""
    torch.manual_seed(cfg.seed)
    net = MLPDenoiser(data.train.shape[1], width=cfg.width, depth=cfg.depth, prediction=cfg.prediction)
    trainer = Trainer(
        net,
        cfg.schedule(),
        data.train,
        cfg.train_config(),
        normaliser=Normaliser.standard(data.train),
        layout=data.layout,
    )
    trainer.train(progress=progress)
    return trainer.result()


def conditional_guidance(
    dm: DiffusionModel,
    data: OPFRecords,
    loads: np.ndarray,
    kind: str = "observation",
    scale: float = 1.0,
    clip: float | None = None,
):
    """The guidance that conditions the prior on loads y = (p_d, q_d) (rows of ``loads``, one per sample).

    ``"observation"``: x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0) (Alg. 3, sign corrected) in model space;
    ``"replacement"``: the load entries of x̂_0 replaced by y and those of x_{t-1} re-noised (inpainting).
    ``clip`` (a share, e.g. 0.1) first clips x̂_0 into the training records' range widened by that share of it
    (the usual x̂_0 clipping of DDPM samplers): early in the reverse process x̂_0 = (x_t - sqrt(1-ᾱ_t) ε̂)/sqrt(ᾱ_t)
    divides the network's error by sqrt(ᾱ_t) ≈ 0.006, and on a grid with hundreds of features that error can
    throw a deterministic DDIM trajectory far off the data.
    """
    d = data.train.shape[1]
    pre = []
    if clip is not None:
        zt = dm.normaliser(torch.as_tensor(data.train, dtype=torch.float64))
        lo, hi = zt.min(0).values, zt.max(0).values
        pad = clip * (hi - lo)
        pre = [ClampGuidance((lo - pad).float(), (hi + pad).float())]
    m = 2 * data.n_load
    z = dm.normaliser(torch.as_tensor(np.pad(loads, ((0, 0), (0, d - m))), dtype=torch.float64))[:, :m].float()
    if kind == "observation":
        A = torch.zeros(m, d)
        A[torch.arange(m), torch.arange(m)] = 1.0
        return Compose(*pre, ObservationGuidance(A, z, scale=scale))
    if kind == "replacement":
        mask = torch.zeros(d, dtype=torch.bool)
        mask[:m] = True
        return Compose(*pre, ReplacementGuidance(mask, torch.nn.functional.pad(z, (0, d - m))))
    raise ValueError(f"unknown guidance {kind!r}; choose 'observation' or 'replacement'")


def sample_dispatch(
    cfg: DiffOPFConfig,
    dm: DiffusionModel,
    data: OPFRecords,
    loads: np.ndarray,
    n_draw: int | None = None,
    sampler: str | None = None,
    guidance: str | None = None,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``n_draw`` dispatches (p_g, q_g) per load row of ``loads`` (k, 2 n_load): arrays (k, n_draw, n_gen) each,
    plus the seconds sampling took. Loads are sampled ``cfg.loads_per_batch`` at a time, all their draws in one batch."""
    n_draw = n_draw or cfg.n_draw
    smp = cfg.make_sampler(sampler)
    gen = torch.Generator(device=dm.device).manual_seed(cfg.seed if seed is None else seed)  # one stream for all
    out, sec = [], 0.0
    for k in range(0, len(loads), cfg.loads_per_batch):
        y = np.repeat(loads[k : k + cfg.loads_per_batch], n_draw, axis=0)
        guide = conditional_guidance(dm, data, y, guidance or cfg.guidance, cfg.guidance_scale, cfg.clip_x0)
        x, seconds = dm.draw(len(y), smp, guidance=guide, generator=gen)
        out.append(x.reshape(-1, n_draw, x.shape[1]))
        sec += seconds
    x = np.concatenate(out)
    _, _, pg, qg = data.split(x)
    return pg, qg, sec
