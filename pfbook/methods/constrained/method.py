"""Domain-constrained diffusion for power-flow records (Hoseinpour & Dvorkin).

The method composes the power-system layer (:mod:`pfbook.power.physics`) with the diffusion core
(:mod:`pfbook.diffusion`):

* **data** -- AC-OPF records x_0 = (p, q, v, θ) at every bus, loads scaled U(0.8, 1.0) of nominal
  (:func:`pfbook.power.datasets.ac_opf_dataset`), per unit and radians, in the grid's bus order;
* **model** -- the appendix's MLP ε_θ(x_t, t) with the linear β schedule (T = 1000, β 1e-4 -> 0.02), trained
  with Algorithm 1 (:class:`ConstrainedConfig` holds the sizes per profile);
* **guided sampling** (Algorithm 3) -- at every reverse step Tweedie's x̂_0 (eq. 6) is moved down the gradient
  of R_H(x̂_0) = ||H(x̂_0)||² (eq. 15), H the active and reactive nodal balance with shunts (eq. 8a-8b),
  computed in per unit on the *de-normalised* x̂_0 (:func:`guidance`); the posterior-mean step then uses the
  corrected x̂_0. λ_t is a schedule (:func:`lambda_schedule`);
* **beyond the paper** -- :func:`newton_projection`, a few batched Newton steps of the power-flow equations from a
  sample, which makes it satisfy them to 1e-8 p.u.; :func:`evaluate`, the comparison table the paper lacks.

The helpers the primer chapter already has (record layout and loading, mismatch of records, R_H and H in physical
units) come from :mod:`pfbook.methods.constrained.records`, the layer both chapters share.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.diffusion import DiffusionModel, GradientGuidance, MLPDenoiser, Normaliser, Trainer, make_sampler, ramp
from pfbook.methods.constrained.config import ConstrainedConfig
from pfbook.methods.constrained.metrics import evaluate
from pfbook.methods.constrained.records import imbalance_residual, mismatch_constraint
from pfbook.power.grids import Grid


# ---------------------------------------------------------------------------------------- model and guidance
def train_model(cfg: ConstrainedConfig, data, progress: bool = False) -> tuple[DiffusionModel, Trainer]:
    """The appendix MLP trained on ``data.train`` (Algorithm 1) with a standard normaliser; returns (model, trainer)."""
    normaliser = Normaliser.standard(data.train)
    torch.manual_seed(cfg.seed)
    net = MLPDenoiser(len(data.columns), width=cfg.width, depth=cfg.depth, prediction=cfg.prediction)
    trainer = Trainer(net, cfg.schedule(), data.train, cfg.train_config(), normaliser=normaliser, layout=data.layout)
    trainer.train(progress=progress)
    return trainer.result(), trainer


def lambda_schedule(cfg: ConstrainedConfig, scale: float | None = None):
    """c_t of ``cfg`` (``scale`` replaces c_max): a constant when ``guidance_power`` is 0, else a ramp to t = 0.

    c_t is λ_t in units of the step 1/L that the curvature of R_H allows (:func:`curvature`); λ_t = c_t / L.
    """
    c = cfg.guidance_scale if scale is None else float(scale)
    if cfg.guidance_power == 0 and cfg.guidance_min == 0:
        return c
    return ramp(c, cfg.guidance_power, min(cfg.guidance_min, c))


def curvature(grid: Grid, normaliser: Normaliser, records: np.ndarray, n: int = 20) -> float:
    """L = 2 σ_max(J)², the largest curvature of R_H = ||H||² in model space, median over ``n`` real records.

    J is the Jacobian of H = (ΔP, ΔQ) with respect to the normalised record. A gradient step λ ∇R_H is stable
    for λ < 2/L; L differs by orders of magnitude between grids (line impedances, per-unit bases), so the chapter
    sets λ_t = c_t / L and the reader chooses c_t in (0, 2) once for every grid.
    """
    H = mismatch_constraint(grid, normaliser)
    z = normaliser(torch.as_tensor(np.asarray(records[:n]), dtype=torch.float64))
    Ls = [
        2 * torch.linalg.matrix_norm(torch.autograd.functional.jacobian(lambda u: H(u[None])[0], zi), ord=2).item() ** 2
        for zi in z
    ]
    return float(np.median(Ls))


def guidance(
    grid: Grid,
    normaliser: Normaliser,
    scale=1.0,
    L: float = 1.0,
    max_step: float | None = 1.0,
    inner_steps: int = 1,
    device: str = "cpu",
) -> GradientGuidance | None:
    """Algorithm 3's correction x̂_0' = x̂_0 - λ_t ∇ R_H(x̂_0), R_H = Σ_b ΔP_b² + ΔQ_b² in p.u.² on de-normalised x̂_0.

    ``scale`` is c_t (a number or ``(t, T) -> c_t``) and λ_t = c_t / ``L`` (see :func:`curvature`; ``L = 1``
    makes ``scale`` λ itself). ``inner_steps`` repeats the step with the gradient re-evaluated (the residual is
    ill-conditioned: one step fixes the stiff P-θ directions, the flat ones need several). ``max_step`` caps a
    sample's step norm in model space, which keeps the early, blurred x̂_0 (far from feasible, steep R_H) from
    being thrown away. Returns ``None`` for a scale of 0 (unguided).
    """
    if not callable(scale) and float(scale) == 0.0:
        return None
    lam = (lambda t, T: scale(t, T) / L) if callable(scale) else float(scale) / L
    return GradientGuidance(
        imbalance_residual(grid, normaliser, device=device), scale=lam, max_step=max_step, inner_steps=inner_steps
    )


def make_guidance(
    cfg: ConstrainedConfig, grid: Grid, normaliser: Normaliser, L: float, scale: float | None = None
) -> GradientGuidance | None:
    """:func:`guidance` with the chapter's settings (``scale`` replaces c_max of ``cfg``)."""
    return guidance(
        grid,
        normaliser,
        lambda_schedule(cfg, scale),
        L=L,
        max_step=cfg.guidance_max_step,
        inner_steps=cfg.guidance_inner_steps,
        device=cfg.device,
    )


def sweep(
    cfg: ConstrainedConfig,
    dm: DiffusionModel,
    grid: Grid,
    L: float,
    reference: np.ndarray,
    scales: Sequence[float] | None = None,
    samplers: Sequence[str] | None = None,
    done: Mapping[tuple[str, float], tuple[np.ndarray, float]] | None = None,
) -> pd.DataFrame:
    """Fidelity, feasibility and time for every (sampler, c) pair: the :func:`evaluate` columns, one row each.

    ``done`` holds samples already drawn, keyed by (sampler, c), with their seconds; they are judged, not redrawn.
    """
    done = dict(done or {})
    rows = []
    for sname in samplers or cfg.sweep_samplers:
        smp = make_sampler(sname, cfg.schedule())
        for c in scales if scales is not None else cfg.sweep_scales:
            if (sname, c) not in done:
                done[(sname, c)] = dm.draw(
                    cfg.n_generate, smp, guidance=make_guidance(cfg, grid, dm.normaliser, L, c), seed=cfg.seed
                )
            x, sec = done[(sname, c)]
            row = evaluate(grid, {"x": x}, reference, seconds={"x": sec}, load_range=cfg.load_range)
            rows.append(row.assign(sampler=sname, c=c, **{"network calls": smp.n_steps}))
    return pd.concat(rows).set_index(["sampler", "c"])
