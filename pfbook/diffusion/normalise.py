"""Feature normalisers that travel with a diffusion model.

Diffusion models assume data of roughly unit scale (the forward process ends at N(0, I)), while power-system
records mix per-unit powers, voltages near 1 and angles of a few milliradians. Every model is trained in a
normalised space ``z = (x - shift) / scale`` and its checkpoint stores ``shift`` and ``scale``:

* :meth:`Normaliser.standard` -- zero mean, unit standard deviation per feature;
* :meth:`Normaliser.minmax` -- the data range (or given bounds, e.g. operating limits) onto [0, 1]
  (Wang et al. normalise to [0, 1] within the operating bounds and ends its network in a sigmoid).

Features whose spread is below ``min_scale`` (a reference-bus angle, a generator pinned at a limit) get
``scale = min_scale`` rather than 1: they are constants, and a model error of 0.1 in normalised units must
stay negligible in physical units (0.1 * min_scale), not become 0.1 p.u.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

KINDS = ("identity", "standard", "minmax")


class Normaliser:
    """The affine map ``z = (x - shift) / scale``; works on tensors and NumPy arrays.

    ``shift`` and ``scale`` have the shape of one sample (``(dim,)`` for feature vectors, ``(M, 1)`` for
    per-channel statistics of ``M x T`` matrices) and broadcast over the leading batch axes.
    """

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor, kind: str = "standard"):
        shift = torch.as_tensor(shift, dtype=torch.float64)
        scale = torch.as_tensor(scale, dtype=torch.float64)
        if shift.shape != scale.shape:
            raise ValueError(f"shift and scale differ in shape: {tuple(shift.shape)} vs {tuple(scale.shape)}")
        if not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError("every scale must be finite and positive")
        if kind not in KINDS:
            raise ValueError(f"unknown normaliser kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.shift, self.scale, self.kind = shift, scale, kind
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def identity(cls, shape: "int | tuple[int, ...]") -> "Normaliser":
        return cls(torch.zeros(shape), torch.ones(shape), kind="identity")

    @classmethod
    def standard(cls, x, min_scale: float = 1e-6, pool: Sequence[int] = ()) -> "Normaliser":
        """Zero mean and unit standard deviation per feature of ``x`` (n, ...).

        ``pool`` lists further axes of ``x`` (besides the sample axis 0) that share statistics, e.g.
        ``pool=(2,)`` for one mean and std per channel of ``(n, M, T)`` measurement matrices.
        """
        x, dims = _as_data(x), _pool_dims(x, pool)
        return cls(
            x.mean(dims, keepdim=True)[0],
            x.std(dims, unbiased=False, keepdim=True)[0].clamp(min=min_scale),
            kind="standard",
        )

    @classmethod
    def minmax(
        cls,
        x=None,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        feature_range: tuple[float, float] = (0.0, 1.0),
        min_scale: float = 1e-6,
    ) -> "Normaliser":
        """Map [low, high] per feature onto ``feature_range``; bounds default to the data's min and max."""
        if (low is None or high is None) and x is None:
            raise ValueError("minmax needs the data x or both bounds low and high")
        a, b = feature_range
        if not b > a:
            raise ValueError(f"feature_range must be increasing, got {feature_range}")
        lo = torch.as_tensor(low, dtype=torch.float64) if low is not None else _as_data(x).min(0).values
        hi = torch.as_tensor(high, dtype=torch.float64) if high is not None else _as_data(x).max(0).values
        if (hi < lo).any():
            raise ValueError("minmax bounds have high < low for some feature")
        scale = ((hi - lo) / (b - a)).clamp(min=min_scale)
        return cls(lo - a * scale, scale, kind="minmax")

    @classmethod
    def fit(cls, kind: str, x) -> "Normaliser":
        """``kind`` in ``"standard"``, ``"minmax"``, ``"identity"``, fitted on ``x``."""
        if kind == "standard":
            return cls.standard(x)
        if kind == "minmax":
            return cls.minmax(x)
        if kind == "identity":
            return cls.identity(tuple(_as_data(x).shape[1:]))
        raise ValueError(f"unknown normaliser kind {kind!r}; choose one of {', '.join(KINDS)}")

    # ------------------------------------------------------------------ maps
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.shift.shape)

    def _on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = (self.shift.to(like.device, like.dtype), self.scale.to(like.device, like.dtype))
        return hit

    def __call__(self, x):
        """Physical units -> model space."""
        return self.forward(x)

    def forward(self, x):
        if isinstance(x, np.ndarray):
            return (x - self.shift.numpy()) / self.scale.numpy()
        shift, scale = self._on(x)
        return (x - shift) / scale

    def inverse(self, z):
        """Model space -> physical units (differentiable: guidance residuals may call it)."""
        if isinstance(z, np.ndarray):
            return z * self.scale.numpy() + self.shift.numpy()
        shift, scale = self._on(z)
        return z * scale + shift

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift.clone(), "scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Normaliser":
        return cls(state["shift"], state["scale"], kind=state["kind"])

    def __repr__(self) -> str:
        return f"Normaliser({self.kind!r}, shape={self.shape})"


def _as_data(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to(torch.float64).cpu()
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"expected data of shape (n_samples, ...features), got {tuple(x.shape)}")
    return x


def _pool_dims(x, pool: Sequence[int]) -> tuple[int, ...]:
    nd = np.ndim(x)
    for a in pool:
        if not 1 <= a < nd:
            raise ValueError(f"pool axes must be feature axes 1..{nd - 1} of the data, got {a}")
    return (0, *sorted(set(pool)))
