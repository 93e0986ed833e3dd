"""Two-sample distances for judging generated samples against real ones.

* :func:`mmd_rbf` -- the unbiased squared maximum mean discrepancy with a sum of Gaussian kernels
  (Gretton et al. 2012, eq. 3); zero in expectation when the two samples come from one distribution.
* :func:`sliced_wasserstein` -- the 1-Wasserstein distance averaged over random 1-D projections
  (Bonneel et al. 2015), cheap in any dimension.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to(torch.float64).cpu()


def mmd_rbf(x, y, bandwidths: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0), max_n: int = 4000) -> float:
    """Unbiased MMD² between samples ``x`` (n, d) and ``y`` (m, d) under k = Σ_h exp(-|a - b|² / (2 h²)).

    Bandwidths are in the data's units (use normalised data). At most ``max_n`` rows of each are used.
    """
    x, y = _t(x).flatten(1)[:max_n], _t(y).flatten(1)[:max_n]
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two samples on each side")

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D 1-Wasserstein distance between the projected samples."""
    x, y = _t(x).flatten(1), _t(y).flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    q = torch.linspace(0, 1, 512, dtype=torch.float64)
    px, py = torch.quantile(x @ u, q, dim=0), torch.quantile(y @ u, q, dim=0)
    return float((px - py).abs().mean())
