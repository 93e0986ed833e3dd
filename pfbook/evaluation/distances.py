"""Two-sample distances for judging generated samples against real ones.

* :func:`mmd_rbf` -- the unbiased squared maximum mean discrepancy with a sum of Gaussian kernels
  (Gretton et al. 2012, eq. 3); zero in expectation when the two samples come from one distribution.
* :func:`sliced_wasserstein` -- the 1-Wasserstein distance averaged over random 1-D projections
  (Bonneel et al. 2015), cheap in any dimension;
* :func:`w1_over_sigma` -- the 1-Wasserstein distance of every feature in units of the reference's standard
  deviation (W1/σ), and :func:`mean_w1_over_sigma`, its mean over the varying features.

Distances in units of the reference's spread need a rule for features that do not spread, and there is one,
:func:`varying_features`: a feature whose standard deviation in the *reference* is at most :data:`CONSTANT_STD`
(in the data's own units: p.u., rad) is constant -- fixed (a reference-bus angle) or held at a limit to solver
tolerance -- and is left out of W1/σ (NaN per feature) and out of the data :func:`standardise` gives the sliced
distance and MMD. Its errors belong to other columns (limits, mismatch); divided by a rounding-sized σ they would
swamp the mean. Features that vary a little (a voltage that sometimes sits at its limit) stay in.
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
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


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


#: a reference feature with a standard deviation at most this (in the data's units) is constant; see the module notes
CONSTANT_STD = 1e-6


def varying_features(reference, min_std: float = CONSTANT_STD) -> np.ndarray:
    """Boolean mask of the features of ``reference`` (n, d) whose standard deviation exceeds ``min_std``."""
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 2:
        raise ValueError(f"reference must be a 2-D array of samples x features, got shape {ref.shape}")
    return ref.std(0) > min_std


def standardise(x, reference, min_std: float = CONSTANT_STD) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``reference`` on the varying features only, centred and scaled by the reference's mean and std."""
    x, ref = np.asarray(x, dtype=float), np.asarray(reference, dtype=float)
    if x.ndim != 2 or x.shape[1] != ref.shape[1]:
        raise ValueError(f"samples of shape {x.shape} do not match the reference's {ref.shape[1]} features")
    keep = varying_features(ref, min_std)
    mu, sd = ref.mean(0)[keep], ref.std(0)[keep]
    return (x[:, keep] - mu) / sd, (ref[:, keep] - mu) / sd


def w1_over_sigma(x, reference, min_std: float = CONSTANT_STD) -> np.ndarray:
    """Per feature, the 1-Wasserstein distance between ``x`` and ``reference`` divided by the reference's std;
    NaN for a constant feature (:func:`varying_features`)."""
    from scipy.stats import wasserstein_distance

    x, ref = np.asarray(x, dtype=float), np.asarray(reference, dtype=float)
    if x.ndim != 2 or ref.ndim != 2 or x.shape[1] != ref.shape[1]:
        raise ValueError(f"samples of shape {x.shape} do not match the reference's shape {ref.shape}")
    keep, std = varying_features(ref, min_std), ref.std(0)
    return np.array(
        [wasserstein_distance(x[:, j], ref[:, j]) / std[j] if keep[j] else np.nan for j in range(ref.shape[1])]
    )


def mean_w1_over_sigma(x, reference, min_std: float = CONSTANT_STD) -> float:
    """The mean of :func:`w1_over_sigma` over the varying features (0 for identical samples, 1 for a shift by σ)."""
    w = w1_over_sigma(x, reference, min_std)
    if np.isnan(w).all():
        raise ValueError("every feature of the reference is constant: W1/σ is undefined")
    return float(np.nanmean(w))
