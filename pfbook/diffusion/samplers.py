"""Reverse-process samplers: DDPM ancestral, DDIM on a subsequence, and DDIM with the optimal variance.

Every sampler runs the same loop (the diffusers form)::

    x = x_T ~ N(0, I)
    for t in timesteps:                       # descending
        ε̂, x̂_0 = model(x, t, cond)           # one network call
        state = guidance(state)               # edits ε̂ / x̂_0 (pfbook.diffusion.guidance)
        x = step(state)                       # the sampler's update rule
        x = guidance.after_step(x, state)

and knows nothing about what the data mean. The update rules:

* :class:`DDPMSampler` -- Algorithm 2 of Ho et al. 2020 (Hoseinpour & Dvorkin, Alg. 2 / eq. 7): x_{t-1} = c_1 x̂_0 + c_2 x_t + σ_t z,
  with σ_t² = β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t). Hoseinpour & Dvorkin write σ_t = β̃_t; that is the variance, not the
  standard deviation, and this sampler uses it as the variance (``variance="beta"`` gives Ho's other choice β_t).
* :class:`DDIMSampler` -- Song et al. 2021, eq. 12, on a subsequence τ of s steps:
  x_{τ_{i-1}} = sqrt(ᾱ_{τ_{i-1}}) x̂_0 + sqrt(1 - ᾱ_{τ_{i-1}} - σ²) ε̂ + σ z with
  σ² = η² (1 - ᾱ_{τ_{i-1}})/(1 - ᾱ_{τ_i}) (1 - ᾱ_{τ_i}/ᾱ_{τ_{i-1}}); η = 1 and s = T is exactly DDPM's posterior.
* ``DDIMSampler(..., optimal_variance=ov)`` -- TSDM (Pei et al., eq. 27-31 and Appendix B; Bao et al. 2022,
  Analytic-DPM): x̂_0 is treated as uncertain with variance σ̄²_t = (1 - ᾱ_t)/ᾱ_t (1 - E||ε_θ(x_t, t)||²/d)
  (eq. 28), estimated once from data by :func:`estimate_optimal_variance`; the step adds Γ_t² σ̄²_t to its
  variance, Γ_t = sqrt(ᾱ_{τ_{i-1}}) - sqrt(1 - ᾱ_{τ_{i-1}} - σ²) sqrt(ᾱ_t / (1 - ᾱ_t)) (eq. 29; with η = 0 this is eq. 30).

No noise is added on the final step to x_0 (Algorithm 2, line 4: z = 0 at t = 1).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pfbook.diffusion.guidance import Guidance, GuidanceState
from pfbook.diffusion.schedules import Schedule


def predict(
    model: Callable, x: torch.Tensor, t: "int | torch.Tensor", cond: torch.Tensor | None, schedule: Schedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, x̂_0) from one model call, whichever of the two the model predicts (``model.prediction``)."""
    tt = t if isinstance(t, torch.Tensor) else torch.tensor(t, device=x.device)
    out = model(x, tt, cond)
    kind = getattr(model, "prediction", "epsilon")
    if kind == "x0":
        return schedule.predict_eps(x, t, out), out
    if kind == "epsilon_skip":
        out = out + schedule.gaussian_eps(x, t)
    return out, schedule.predict_x0(x, t, out)


class Sampler(abc.ABC):
    """Base class: the loop. Subclasses set ``self.timesteps`` (descending) and implement :meth:`step`."""

    timesteps: list[int]

    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"a sampler needs a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule.detach()
        ab = self.schedule.alpha_bar
        self._ab = [float(a) for a in ab]  # Python floats: the step arithmetic costs nothing

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else self._ab[t]

    @abc.abstractmethod
    def step(self, state: GuidanceState) -> torch.Tensor:
        """x_{t_prev} from the (guided) state at t: the one thing each sampler defines."""

    @property
    def n_steps(self) -> int:
        return len(self.timesteps)

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def sample(
        self,
        model: Callable,
        shape: Sequence[int],
        *,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
        cond: torch.Tensor | None = None,
        progress: bool = False,
        x_T: torch.Tensor | None = None,
        resample: int = 1,
        device: "str | torch.device | None" = None,
        dtype: torch.dtype = torch.float32,
        callback: Callable[[GuidanceState, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Draw a batch of samples of ``shape`` (batch first) in model space.

        ``generator`` makes the draw reproducible (it must live on ``device``); ``x_T`` starts from given
        noise; ``resample`` > 1 re-noises x_{t-1} back to x_t and repeats the step (RePaint's resampling,
        the R of Pei et al.), which lets inpainted entries harmonise with the known ones; ``callback(state, x_prev)``
        sees every step (for plots of the trajectory).
        """
        if resample < 1:
            raise ValueError(f"resample must be >= 1, got {resample}")
        if device is None:
            device = next(iter(getattr(model, "parameters", lambda: iter([]))()), torch.empty(0)).device
        x = self._noise(torch.empty(tuple(shape), device=device, dtype=dtype), generator) if x_T is None else x_T
        if cond is not None and cond.shape[0] != x.shape[0]:
            raise ValueError(f"cond has {cond.shape[0]} rows for a batch of {x.shape[0]} samples")
        from tqdm.auto import tqdm

        ts = self.timesteps
        for i in tqdm(range(len(ts)), desc=type(self).__name__, disable=not progress, leave=False):
            t, t_prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
            for r in range(resample):
                eps, x0 = predict(model, x, t, cond, self.schedule)
                state = GuidanceState(
                    x_t=x,
                    t=t,
                    t_prev=t_prev,
                    eps=eps,
                    x0=x0,
                    schedule=self.schedule,
                    cond=cond,
                    step_index=i,
                    n_steps=len(ts),
                    generator=generator,
                )
                if guidance is not None:
                    state = guidance(state)
                x_prev = self.step(state)
                if guidance is not None:
                    x_prev = guidance.after_step(x_prev, state)
                if r + 1 < resample and t_prev >= 0:
                    # forward from τ_{i-1} back to τ_i: q(x_t | x_{t_prev}) = N(sqrt(a) x, (1 - a) I), a = ᾱ_t/ᾱ_prev
                    a = self.alpha_bar(t) / self.alpha_bar(t_prev)
                    x = math.sqrt(a) * x_prev + math.sqrt(1 - a) * self._noise(x_prev, generator)
                else:
                    break
            if callback is not None:
                callback(state, x_prev)
            x = x_prev
        return x


class DDPMSampler(Sampler):
    """Ancestral sampling through all T steps (Ho et al. 2020, Alg. 2; Hoseinpour & Dvorkin, Alg. 2 and 3)."""

    def __init__(self, schedule: Schedule, variance: str = "posterior"):
        super().__init__(schedule)
        if variance not in ("posterior", "beta"):
            raise ValueError(f"variance must be 'posterior' (β̃_t) or 'beta' (β_t), got {variance!r}")
        self.variance = variance
        s = self.schedule
        self.timesteps = list(range(s.T - 1, -1, -1))
        self._c0 = s.posterior_mean_coef_x0.tolist()
        self._ct = s.posterior_mean_coef_xt.tolist()
        var = s.posterior_variance if variance == "posterior" else s.betas
        self._std = var.sqrt().tolist()

    def step(self, state: GuidanceState) -> torch.Tensor:
        t = state.t
        mean = self._c0[t] * state.x0 + self._ct[t] * state.x_t
        if state.t_prev < 0:
            return mean
        return mean + self._std[t] * self._noise(mean, state.generator)

    def __repr__(self) -> str:
        return f"DDPMSampler(T={self.schedule.T}, variance={self.variance!r})"


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """A descending subsequence τ of ``steps`` indices from 0..T-1 that starts at T-1 and ends at 0.

    ``"uniform"``: evenly spaced (Song et al. 2021); ``"quadratic"``: denser near t = 0, where samples
    take their final shape (Song et al. 2021, Appendix D.2).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"DDIM needs a positive integer number of steps, got {steps!r}")
    if steps > T:
        raise ValueError(f"DDIM cannot take {steps} steps on a schedule of T={T} steps; choose steps <= {T}")
    if steps == 1:
        return [T - 1]
    if spacing == "uniform":
        ts = np.linspace(0, T - 1, steps)
    elif spacing == "quadratic":
        ts = np.linspace(0, math.sqrt(T - 1), steps) ** 2
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose 'uniform' or 'quadratic'")
    ts = np.round(ts).astype(int)
    # rounding can merge neighbours near t = 0 (quadratic spacing): spread them back out, keeping 0 and T-1
    for i in range(1, steps):
        ts[i] = max(ts[i], ts[i - 1] + 1)
    for i in range(steps - 2, -1, -1):
        ts[i] = min(ts[i], ts[i + 1] - 1)
    return [int(t) for t in ts[::-1]]


@dataclass
class OptimalVariance:
    """σ̄²_t of TSDM eq. 28 at the timesteps where it was estimated (NaN elsewhere), with its bounds.

    ``raw`` is the Monte-Carlo value of (1 - ᾱ_t)/ᾱ_t (1 - E||ε_θ||²/d); ``value`` is it clipped into
    [0, ``upper``] with ``upper`` = min((1 - ᾱ_t)/ᾱ_t, mean per-feature variance of the data): the average
    posterior variance of x_0 given x_t can exceed neither (Bao et al. 2022, Thm. 2; law of total variance).
    """

    raw: torch.Tensor
    value: torch.Tensor
    upper: torch.Tensor
    n_samples: int

    def at(self, t: int) -> float:
        v = float(self.value[t])
        if math.isnan(v):
            raise ValueError(
                f"the optimal variance was not estimated at timestep {t}; estimate it on this "
                f"sampler's timesteps (estimate_optimal_variance(..., timesteps=sampler.timesteps))"
            )
        return v

    def state_dict(self) -> dict:
        return {
            "raw": self.raw.clone(),
            "value": self.value.clone(),
            "upper": self.upper.clone(),
            "n_samples": int(self.n_samples),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "OptimalVariance":
        return cls(state["raw"], state["value"], state["upper"], int(state["n_samples"]))


ESTIMATORS = ("eq28", "residual")


@torch.no_grad()
def estimate_optimal_variance(
    model: Callable,
    schedule: Schedule,
    data: torch.Tensor,
    timesteps: Sequence[int] | None = None,
    n_samples: int | None = None,
    batch_size: int = 4096,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    estimator: str = "residual",
) -> OptimalVariance:
    """Estimate σ̄²_t = (1 - ᾱ_t)/ᾱ_t (1 - E_{x_t}||ε_θ(x_t, t)||²/d) (TSDM eq. 28) from model-space data.

    Done once per trained model and stored (Pei et al.: "calculated based on normal dataset ... and saved
    offline"). ``timesteps`` defaults to all T; ``n_samples`` limits how many data rows are noised per step.

    ``estimator="eq28"`` averages ||ε_θ||² as the paper writes. For the ideal ε_θ = E[ε | x_t] the same
    quantity is ``(1 - ᾱ_t)/ᾱ_t E||ε - ε_θ||²/d = E||x_0 - x̂_0||²/d`` (law of total variance), which
    ``estimator="residual"`` (the default) averages instead: it is non-negative by construction and its
    Monte-Carlo error is not multiplied by (1 - ᾱ_t)/ᾱ_t at high noise, where eq. 28 needs very many samples.
    For an imperfect model it also counts the model's own error, which is the uncertainty the step must carry.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown optimal-variance estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    T = schedule.T
    ts = list(range(T)) if timesteps is None else sorted({int(t) for t in timesteps if int(t) >= 0})
    if any(t >= T for t in ts):
        raise ValueError(f"timesteps must lie in 0..{T - 1}")
    x = data if n_samples is None else data[:n_samples]
    c = cond if (cond is None or n_samples is None) else cond[:n_samples]
    d = x[0].numel()
    ab = schedule.alpha_bar.detach().cpu()
    raw = torch.full((T,), float("nan"), dtype=torch.float64)
    for t in ts:
        total = 0.0
        for k in range(0, len(x), batch_size):
            xb = x[k : k + batch_size]
            noise = torch.randn(xb.shape, generator=generator, device=xb.device, dtype=xb.dtype)
            x_t = schedule.q_sample(xb, t, noise)
            eps, _ = predict(model, x_t, t, None if c is None else c[k : k + batch_size], schedule)
            if estimator == "eq28":
                total += float(eps.double().pow(2).sum())
            else:
                total += float((noise.double() - eps.double()).pow(2).sum())
        mean_sq = total / (len(x) * d)
        raw[t] = (1 - ab[t]) / ab[t] * (1 - mean_sq if estimator == "eq28" else mean_sq)
    var_data = x.double().var(0, unbiased=False).mean().cpu()
    upper = torch.minimum((1 - ab) / ab, var_data.expand(T))
    value = torch.where(torch.isnan(raw), raw, torch.minimum(raw.clamp(min=0.0), upper))
    return OptimalVariance(raw=raw, value=value, upper=upper, n_samples=len(x))


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021) on a subsequence of ``steps`` timesteps, with stochasticity ``eta``.

    Give ``timesteps`` (descending, from 0..T-1) to choose the subsequence yourself. With
    ``optimal_variance`` the step adds TSDM's Γ_t² σ̄²_t (Pei et al., eq. 29-31) to its variance.
    """

    def __init__(
        self,
        schedule: Schedule,
        steps: int | None = None,
        eta: float = 0.0,
        spacing: str = "uniform",
        timesteps: Sequence[int] | None = None,
        optimal_variance: OptimalVariance | None = None,
    ):
        super().__init__(schedule)
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta!r}")
        T = self.schedule.T
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
            if not ts or any(not 0 <= t < T for t in ts) or any(a <= b for a, b in zip(ts, ts[1:])):
                raise ValueError(f"timesteps must be a strictly decreasing sequence of indices in 0..{T - 1}")
            self.timesteps = ts
        else:
            self.timesteps = ddim_timesteps(T, T if steps is None else steps, spacing)
        self.eta = float(eta)
        self.optimal_variance = optimal_variance
        if optimal_variance is not None:
            for t in self.timesteps:
                optimal_variance.at(t)  # fail now, not halfway through sampling

    def coefficients(self, t: int, t_prev: int) -> tuple[float, float, float]:
        """(coefficient of x̂_0, coefficient of ε̂, variance) of the step t -> t_prev."""
        ab, abp = self.alpha_bar(t), self.alpha_bar(t_prev)
        var = self.eta**2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
        c_eps = math.sqrt(max(1 - abp - var, 0.0))
        if self.optimal_variance is not None:
            gamma = math.sqrt(abp) - c_eps * math.sqrt(ab / (1 - ab))
            var = var + gamma**2 * self.optimal_variance.at(t)
        return math.sqrt(abp), c_eps, var

    def step(self, state: GuidanceState) -> torch.Tensor:
        c0, ce, var = self.coefficients(state.t, state.t_prev)
        x = c0 * state.x0 + ce * state.eps
        if state.t_prev < 0 or var == 0.0:
            return x
        return x + math.sqrt(var) * self._noise(x, state.generator)

    def __repr__(self) -> str:
        ov = ", optimal variance" if self.optimal_variance is not None else ""
        return f"DDIMSampler(T={self.schedule.T}, steps={self.n_steps}, eta={self.eta}{ov})"


def make_sampler(spec: str, schedule: Schedule, **kwargs) -> Sampler:
    """The sampler a spec names, on ``schedule``: the one reading of the chapters' sampler settings.

    ``"DDPM"`` -- ancestral sampling through all T steps (:class:`DDPMSampler`); ``"DDIM <steps>"``, e.g.
    ``"DDIM 50"`` -- DDIM on ``steps`` evenly spaced timesteps (:class:`DDIMSampler`, η = 0 unless ``eta`` is
    given). Case does not matter; a bare ``"ddim"`` takes its steps from ``kwargs`` (all T by default). Other
    ``kwargs`` go to the class (``variance``, ``eta``, ``spacing``, ``optimal_variance``).
    """
    words = str(spec).split()
    name = words[0].lower() if words else ""
    if name == "ddpm" and len(words) == 1:
        return DDPMSampler(schedule, **kwargs)
    if name == "ddim" and len(words) <= 2:
        if len(words) == 2:
            if "steps" in kwargs:
                raise ValueError(f"sampler {spec!r} names its steps; do not also pass steps={kwargs['steps']!r}")
            try:
                kwargs["steps"] = int(words[1])
            except ValueError:
                raise ValueError(f"sampler {spec!r}: the DDIM steps must be a whole number, e.g. 'DDIM 50'") from None
        return DDIMSampler(schedule, **kwargs)
    raise ValueError(f"unknown sampler {spec!r}; use 'DDPM' or 'DDIM <steps>' (e.g. 'DDIM 50')")
