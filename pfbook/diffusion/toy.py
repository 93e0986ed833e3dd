"""Distributions whose answer is known, for checking the diffusion core end to end.

:func:`ring_of_gaussians` is the usual 2-D test of mode coverage: k equal-weight Gaussians on a circle.
A sampler that drops a mode, or shifts weight between modes, shows up in :func:`mode_weights`; one that
blurs the modes shows up in the share of samples far from every centre and in :func:`~pfbook.evaluation.distances.mmd_rbf`.
:func:`gaussian_eps` is the exact noise predictor for Gaussian data, so anything computed from a model
(e.g. the optimal variance of TSDM eq. 28) can be compared with its closed form.
"""

from __future__ import annotations

import math

import torch

from pfbook.diffusion.schedules import Schedule


def ring_centres(k: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The k centres (k, 2) evenly spaced on a circle of ``radius``."""
    if k < 1 or radius <= 0:
        raise ValueError("need k >= 1 modes on a circle of positive radius")
    a = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return torch.stack([radius * torch.cos(a), radius * torch.sin(a)], dim=1)


def ring_of_gaussians(
    n: int, k: int = 8, radius: float = 2.0, std: float = 0.1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws (n, 2) from the equal-weight mixture of k isotropic Gaussians on a ring, and their modes."""
    centres = ring_centres(k, radius)
    labels = torch.randint(0, k, (n,), generator=generator)
    x = centres[labels] + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x, labels


def mode_weights(x: torch.Tensor, centres: torch.Tensor, max_dist: float) -> tuple[torch.Tensor, float]:
    """Share of samples nearest to each centre (among those within ``max_dist`` of it), and the share further away."""
    x = torch.as_tensor(x, dtype=torch.float64)
    d = torch.cdist(x, centres.to(x))
    dmin, nearest = d.min(1)
    near = dmin <= max_dist
    counts = torch.bincount(nearest[near], minlength=len(centres)).to(torch.float64)
    return counts / max(len(x), 1), float((~near).double().mean())


def gaussian_eps(mean: torch.Tensor, var: float, schedule: Schedule):
    """The exact ε-predictor E[ε | x_t] for data ~ N(mean, var I): a 'model' with the denoiser signature.

    With x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε, E[ε | x_t] = sqrt(1 - ᾱ)(x_t - sqrt(ᾱ) mean) / (ᾱ var + 1 - ᾱ).
    """

    def model(x: torch.Tensor, t, cond=None) -> torch.Tensor:
        ab = schedule.at("alpha_bar", t, x)
        ab = ab if isinstance(ab, torch.Tensor) else torch.tensor(ab, dtype=x.dtype)
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean.to(x)) / (ab * var + 1 - ab)

    return model


def gaussian_posterior_variance(var: float, schedule: Schedule) -> torch.Tensor:
    """Var[x_0 | x_t] per coordinate for data ~ N(m, var I): var (1 - ᾱ_t) / (ᾱ_t var + 1 - ᾱ_t)."""
    ab = schedule.alpha_bar.detach()
    return var * (1 - ab) / (ab * var + 1 - ab)
