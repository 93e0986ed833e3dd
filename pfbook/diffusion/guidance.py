"""Guidance: small objects applied at every reverse step between the model call and the sampler step.

A sampler calls the denoiser, forms a :class:`GuidanceState` holding the consistent pair (ε̂, x̂_0) for the
current x_t, passes it through the guidance, then takes its step from the edited state; a guidance may also
edit the new sample after the step (:meth:`Guidance.after_step`, used by inpainting). Guidance sees tensors
in the model's (normalised) space; a residual written in physical units is wrapped with :func:`denormalised`.
The pair (ε̂, x̂_0) is kept consistent through x_t = sqrt(ᾱ_t) x̂_0 + sqrt(1 - ᾱ_t) ε̂, so editing one
updates the other and every sampler reads the same guided prediction.

Kinds provided (compose them with :class:`Compose`):

* :class:`GradientGuidance` -- x̂_0' = x̂_0 - λ_t ∇R(x̂_0) for any differentiable residual R
  (Hoseinpour & Dvorkin, eq. 15 and Algorithm 3; Chung et al. 2022's manifold-constrained gradient);
* :class:`ProjectionGuidance` -- x̂_0' = x̂_0 - λ_t Jᵀ(J Jᵀ)⁻¹ H(x̂_0), the Gauss-Newton form of the same
  idea for a vector of constraints H(x) = 0 (the minimum-norm correction of the linearised constraints);
* :class:`ObservationGuidance` -- x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0), a step of A x̂_0 toward an observation y
  (DiffOPF, Hoseinpour & Dvorkin, Alg. 3; the paper prints a minus sign, a typo: only + moves A x̂_0 toward y);
* :class:`ReplacementGuidance` -- known entries of x̂_0 replaced, and re-noised to the next x_t
  (inpainting: Lugmayr et al. 2022, RePaint; TSDM masked imputation, Pei et al. eq. 34);
* :class:`NoiseCorrectionGuidance` -- ε̂ = ε_θ - ω sqrt(1 - ᾱ_t)(y_t - x_t) with y_t = sqrt(ᾱ_t) y_0 + sqrt(1 - ᾱ_t) ε_θ
  (TSDM stage 1, Pei et al. eq. 32-33);
* :class:`ClampGuidance` -- x̂_0 clipped into a box (e.g. [0, 1] for min-max-normalised data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from pfbook.diffusion.schedules import Schedule


@dataclass
class GuidanceState:
    """What a guidance sees at one reverse step (all tensors in model space, batch first)."""

    x_t: torch.Tensor
    t: int  # current timestep index (0-based)
    t_prev: int  # the index the step goes to; -1 for the final step to x_0
    eps: torch.Tensor  # ε̂
    x0: torch.Tensor  # x̂_0, consistent with (x_t, ε̂)
    schedule: Schedule
    cond: torch.Tensor | None = None
    step_index: int = 0  # 0 for the first (noisiest) step
    n_steps: int = 1
    generator: torch.Generator | None = None

    def with_x0(self, x0: torch.Tensor) -> "GuidanceState":
        """A state whose x̂_0 is ``x0`` and whose ε̂ is the noise consistent with it."""
        return replace(self, x0=x0, eps=self.schedule.predict_eps(self.x_t, self.t, x0))

    def with_eps(self, eps: torch.Tensor) -> "GuidanceState":
        """A state whose ε̂ is ``eps`` and whose x̂_0 is Tweedie's estimate from it."""
        return replace(self, eps=eps, x0=self.schedule.predict_x0(self.x_t, self.t, eps))


class Guidance:
    """Base class: ``__call__`` edits the prediction before the step, ``after_step`` the new sample."""

    def __call__(self, state: GuidanceState) -> GuidanceState:
        return state

    def after_step(self, x_prev: torch.Tensor, state: GuidanceState) -> torch.Tensor:
        return x_prev


class Compose(Guidance):
    """Apply guidances in order (before the step, and again in order after it)."""

    def __init__(self, *guidances: Guidance):
        flat: list[Guidance] = []
        for g in guidances:
            if not isinstance(g, Guidance):
                raise TypeError(f"Compose takes Guidance objects, got {type(g).__name__}")
            flat.extend(g.guidances if isinstance(g, Compose) else [g])
        self.guidances = flat

    def __call__(self, state: GuidanceState) -> GuidanceState:
        for g in self.guidances:
            state = g(state)
        return state

    def after_step(self, x_prev: torch.Tensor, state: GuidanceState) -> torch.Tensor:
        for g in self.guidances:
            x_prev = g.after_step(x_prev, state)
        return x_prev

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.guidances))})"


def denormalised(
    fn: Callable[[torch.Tensor], torch.Tensor], normaliser, dtype: torch.dtype | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> fn(normaliser.inverse(z))``: a residual in physical units, callable on model-space tensors.

    Gradients flow through the (affine) inverse, so :class:`GradientGuidance` steps in model space on a
    residual computed in physical units (per unit, radians). With ``dtype`` (e.g. ``torch.float64``) ``z`` is
    cast first, so the de-normalisation and the residual run in that precision and gradients flow back to the
    model's own.
    """

    def residual(z: torch.Tensor) -> torch.Tensor:
        return fn(normaliser.inverse(z if dtype is None else z.to(dtype)))

    return residual


def _scale_at(scale, t: int, T: int) -> float:
    return float(scale(t, T)) if callable(scale) else float(scale)


def _corrected(
    state: GuidanceState, scale, inner_steps: int, step: Callable[[float, torch.Tensor], torch.Tensor]
) -> GuidanceState:
    """``state`` with x̂_0 moved ``inner_steps`` times by x̂_0 <- x̂_0 - step(λ_t, x̂_0); unchanged where λ_t = 0."""
    lam = _scale_at(scale, state.t, state.schedule.T)
    if lam == 0.0:
        return state
    x0 = state.x0
    for _ in range(inner_steps):
        x0 = x0 - step(lam, x0)
    return state.with_x0(x0)


def ramp(lam_max: float, power: float = 1.0, lam_min: float = 0.0) -> Callable[[int, int], float]:
    """λ_t growing as t -> 0: λ_min + (λ_max - λ_min) (1 - t/T)^power (constant λ: pass a number)."""
    if lam_max < 0 or lam_min < 0 or power < 0:
        raise ValueError("guidance scales and the ramp power must be non-negative")

    def scale(t: int, T: int) -> float:
        return lam_min + (lam_max - lam_min) * (1 - t / T) ** power

    return scale


class GradientGuidance(Guidance):
    """x̂_0' = x̂_0 - λ_t ∇_{x̂_0} R(x̂_0) (Hoseinpour & Dvorkin, eq. 15; Algorithm 3, line 4).

    ``residual`` maps a batch of x̂_0 (model space) to one value per sample (or their sum); samples do not
    interact, so the gradient of the batch sum is each sample's own gradient. ``scale`` is λ: a number or a
    function ``(t, T) -> λ_t`` (see :func:`ramp`). ``max_step`` caps each sample's step norm, which keeps a
    residual that is steep far from feasibility (early, noisy x̂_0) from throwing the sample away;
    ``inner_steps`` repeats the step with the gradient re-evaluated.
    """

    def __init__(
        self,
        residual: Callable[[torch.Tensor], torch.Tensor],
        scale=1.0,
        max_step: float | None = None,
        inner_steps: int = 1,
    ):
        if not callable(residual):
            raise TypeError("residual must be a callable mapping x0 (B, ...) to residuals")
        if not callable(scale) and (not math.isfinite(float(scale)) or float(scale) < 0):
            raise ValueError(f"guidance scale must be a finite non-negative number or a function, got {scale!r}")
        if max_step is not None and max_step <= 0:
            raise ValueError("max_step must be positive (or None for no cap)")
        if inner_steps < 1:
            raise ValueError("inner_steps must be >= 1")
        self.residual, self.scale, self.max_step, self.inner_steps = residual, scale, max_step, inner_steps

    def gradient(self, x0: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x0.detach().requires_grad_(True)
            r = self.residual(z)
            (g,) = torch.autograd.grad(r.sum(), z)
        return g

    def _capped_step(self, lam: float, x0: torch.Tensor) -> torch.Tensor:
        """λ ∇R(x̂_0), its norm per sample capped at ``max_step``."""
        step = lam * self.gradient(x0)
        if self.max_step is not None:
            norm = step.flatten(1).norm(dim=1).clamp(min=1e-30)
            step = step * (self.max_step / norm).clamp(max=1.0).reshape(-1, *[1] * (step.dim() - 1))
        return step

    def __call__(self, state: GuidanceState) -> GuidanceState:
        return _corrected(state, self.scale, self.inner_steps, self._capped_step)

    def __repr__(self) -> str:
        return f"GradientGuidance(scale={self.scale!r}, max_step={self.max_step})"


class ProjectionGuidance(Guidance):
    """x̂_0' = x̂_0 - λ_t Jᵀ(J Jᵀ + δ I)⁻¹ H(x̂_0): a damped Gauss-Newton step toward the constraint set H = 0.

    ``constraint`` maps x̂_0 (B, ...) to constraint values (B, m) that should be zero; J is their Jacobian per
    sample (m backward passes). With λ = 1 this is the minimum-norm correction that zeroes the linearised H:
    for a linear H it is the exact projection (as :class:`ObservationGuidance` with default λ), and for a
    nonlinear H it converges in a few steps where a plain gradient step on ||H||² crawls along the
    directions in which H is flat. It is the Newton form of Hoseinpour & Dvorkin's eq. 15; λ_t as in :class:`GradientGuidance`.
    """

    def __init__(
        self, constraint: Callable[[torch.Tensor], torch.Tensor], scale=1.0, damping: float = 1e-8, inner_steps: int = 1
    ):
        if not callable(constraint):
            raise TypeError("constraint must be a callable mapping x0 (B, ...) to values (B, m)")
        if not callable(scale) and (not math.isfinite(float(scale)) or float(scale) < 0):
            raise ValueError(f"guidance scale must be a finite non-negative number or a function, got {scale!r}")
        if damping < 0 or inner_steps < 1:
            raise ValueError("damping must be >= 0 and inner_steps >= 1")
        self.constraint, self.scale, self.damping, self.inner_steps = constraint, scale, float(damping), inner_steps

    def correction(self, x0: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x0.detach().requires_grad_(True)
            h = self.constraint(z).reshape(len(z), -1)
            m = h.shape[1]
            # one backward pass per constraint: samples are independent, so the batch sum gives each its own row
            rows = [
                torch.autograd.grad(h[:, i].sum(), z, retain_graph=i + 1 < m)[0].reshape(len(z), -1) for i in range(m)
            ]
        J = torch.stack(rows, dim=1).double()  # (B, m, d)
        JJt = J @ J.transpose(1, 2)
        JJt = JJt + self.damping * torch.eye(m, dtype=J.dtype, device=J.device)
        w = torch.linalg.solve(JJt, h.detach().double().unsqueeze(-1))  # (B, m, 1)
        return (J.transpose(1, 2) @ w).squeeze(-1).to(x0.dtype).reshape(x0.shape)

    def __call__(self, state: GuidanceState) -> GuidanceState:
        return _corrected(state, self.scale, self.inner_steps, lambda lam, x0: lam * self.correction(x0))

    def __repr__(self) -> str:
        return f"ProjectionGuidance(scale={self.scale!r}, damping={self.damping:g})"


class ObservationGuidance(Guidance):
    """x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0): one gradient step of ½||y - A x||² (DiffOPF, Hoseinpour & Dvorkin, Alg. 3, sign corrected).

    ``A`` has shape (m, dim) and acts on flattened samples; ``y`` is (m,) or (B, m). The default λ is
    1/σ_max(A)², the largest step that never overshoots; for A with orthonormal rows it is 1 and the step
    is the exact projection onto {A x = y}. Build it from physical-unit ``A, y`` with :meth:`in_model_space`.
    """

    def __init__(self, A: torch.Tensor, y: torch.Tensor, scale: float | None = None):
        A = torch.as_tensor(A)
        if A.dim() != 2:
            raise ValueError(f"A must be a matrix (m, dim), got shape {tuple(A.shape)}")
        y = torch.as_tensor(y, dtype=A.dtype)
        if y.shape[-1] != A.shape[0]:
            raise ValueError(f"y has {y.shape[-1]} entries per sample but A has {A.shape[0]} rows")
        if scale is None:
            smax = torch.linalg.matrix_norm(A.to(torch.float64), ord=2).item()
            if smax == 0:
                raise ValueError("A is zero: there is nothing to observe")
            scale = 1.0 / smax**2
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale must be a finite non-negative number, got {scale}")
        self.A, self.y, self.scale = A, y, float(scale)

    @classmethod
    def in_model_space(cls, A, y, normaliser, scale: float | None = None) -> "ObservationGuidance":
        """From A x = y in physical units, with x = shift + scale ⊙ z: (A diag(scale)) z = y - A shift."""
        A = torch.as_tensor(A, dtype=torch.float64)
        s, m = normaliser.scale.flatten(), normaliser.shift.flatten()
        return cls(A * s[None, :], torch.as_tensor(y, dtype=torch.float64) - A @ m, scale)

    def __call__(self, state: GuidanceState) -> GuidanceState:
        x0 = state.x0
        flat = x0.flatten(1)
        A, y = self.A.to(flat), self.y.to(flat)
        r = y - flat @ A.T
        return state.with_x0((flat + self.scale * r @ A).reshape(x0.shape))

    def __repr__(self) -> str:
        return f"ObservationGuidance(m={self.A.shape[0]}, scale={self.scale:.3g})"


class ReplacementGuidance(Guidance):
    """Inpainting: the entries where ``mask`` is true are known to equal ``values`` (model space).

    Before the step, x̂_0's known entries are replaced, so the step's mean uses them; after the step, the
    known entries of x_{t-1} are replaced by a fresh draw of q(x_{t-1} | x_0 = values), so known and generated
    entries carry the same noise level (Pei et al., eq. 34). At the final step the known entries are exact.
    ``mask`` and ``values`` broadcast against the batch (one pattern for all, or one per sample).
    """

    def __init__(self, mask: torch.Tensor, values: torch.Tensor):
        self.mask = torch.as_tensor(mask, dtype=torch.bool)
        self.values = torch.as_tensor(values)

    def _on(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            mask = torch.broadcast_to(self.mask.to(x.device), x.shape)
            values = torch.broadcast_to(self.values.to(x.device, x.dtype), x.shape)
        except RuntimeError:
            raise ValueError(
                f"mask {tuple(self.mask.shape)} / values {tuple(self.values.shape)} do not broadcast "
                f"to samples of shape {tuple(x.shape)}"
            ) from None
        return mask, values

    def __call__(self, state: GuidanceState) -> GuidanceState:
        mask, values = self._on(state.x0)
        return state.with_x0(torch.where(mask, values, state.x0))

    def after_step(self, x_prev: torch.Tensor, state: GuidanceState) -> torch.Tensor:
        mask, values = self._on(x_prev)
        if state.t_prev < 0:
            return torch.where(mask, values, x_prev)
        known = state.schedule.q_sample(values, state.t_prev, generator=state.generator)
        return torch.where(mask, known, x_prev)

    def __repr__(self) -> str:
        return f"ReplacementGuidance(known={int(self.mask.sum())} entries)"


class NoiseCorrectionGuidance(Guidance):
    """TSDM stage-1 correction (Pei et al., eq. 32-33): ε̂ = ε_θ - ω sqrt(1 - ᾱ_t) (y_t - x_t).

    With y_t = sqrt(ᾱ_t) y_0 + sqrt(1 - ᾱ_t) ε_θ this moves x̂_0 toward the measurement y_0 by
    ω (1 - ᾱ_t)(y_0 - x̂_0): strongly while the sample is noisy, hardly at all near the end, so the
    model's prior decides the details and a corrupted y_0 shows as a residual x̂_0 - y_0. ``mask`` (optional)
    limits the correction to observed entries.
    """

    def __init__(self, y0: torch.Tensor, omega: float = 1.0, mask: torch.Tensor | None = None):
        if not (math.isfinite(omega) and omega >= 0):
            raise ValueError(f"omega must be a finite non-negative number, got {omega}")
        self.y0, self.omega = torch.as_tensor(y0), float(omega)
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)

    def __call__(self, state: GuidanceState) -> GuidanceState:
        ab = state.schedule.at("alpha_bar", state.t, state.x_t)
        y0 = self.y0.to(state.x_t.device, state.x_t.dtype)
        y_t = math.sqrt(ab) * y0 + math.sqrt(1 - ab) * state.eps
        corr = self.omega * math.sqrt(1 - ab) * (y_t - state.x_t)
        if self.mask is not None:
            corr = corr * self.mask.to(corr.device)
        return state.with_eps(state.eps - corr)


class ClampGuidance(Guidance):
    """x̂_0 clipped into [low, high] (per feature or scalar), e.g. [0, 1] for min-max-normalised data."""

    def __init__(self, low: "float | torch.Tensor", high: "float | torch.Tensor"):
        self.low, self.high = torch.as_tensor(low), torch.as_tensor(high)
        if (self.high < self.low).any():
            raise ValueError("ClampGuidance needs low <= high")

    def __call__(self, state: GuidanceState) -> GuidanceState:
        x0 = state.x0
        return state.with_x0(torch.clamp(x0, self.low.to(x0), self.high.to(x0)))


__all__: Sequence[str] = (
    "GuidanceState",
    "Guidance",
    "Compose",
    "GradientGuidance",
    "ProjectionGuidance",
    "ObservationGuidance",
    "ReplacementGuidance",
    "NoiseCorrectionGuidance",
    "ClampGuidance",
    "denormalised",
    "ramp",
)
