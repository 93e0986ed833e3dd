"""Noise schedules of the forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I).

A :class:`Schedule` is defined by ᾱ alone; β_t, α_t, the posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020,
eq. 6-7) and Tweedie's estimate of x_0 (eq. 6 of Hoseinpour & Dvorkin) are derived from it.
Three ways to get one:

* :func:`linear_betas` -- β linear from 1e-4 to 0.02 (Ho et al. 2020, Sec. 4; Hoseinpour & Dvorkin, Appendix A);
* :func:`cosine_alpha_bar` -- ᾱ_t = f(t)/f(0), f(t) = cos²(π/2 (t/T + s)/(1 + s)) (Nichol & Dhariwal 2021, eq. 17);
* :class:`LearnedSchedule` -- a network F_ω that maps a batch of data to one schedule (Wang et al., Sec. III-B2),
  fitted with :func:`fit_schedule` so that a statistic of x_t (the power imbalance there) follows a target.

**Index convention.** Timesteps are 0-based as in diffusers and lucidrains: index ``t`` in ``0..T-1`` is the
papers' step ``t + 1``, so ``alpha_bar[0]`` is ᾱ_1 (barely noised) and ``alpha_bar[T-1]`` is ᾱ_T (noise).
"Before the first step" is index ``-1`` with ᾱ = 1.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

#: schedule names :func:`make_schedule` understands
SCHEDULES = ("linear", "cosine")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t linear from ``beta_start`` to ``beta_end`` over T steps (Ho et al. 2020, Sec. 4)."""
    _check_T(T)
    if not (0.0 < beta_start < 1.0 and 0.0 < beta_end < 1.0):
        raise ValueError(f"betas must lie in (0, 1), got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ_t = f(t)/f(0) with f(t) = cos²(π/2 (t/T + s)/(1 + s)), β_t clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17)."""
    _check_T(T)
    if s < 0:
        raise ValueError(f"cosine schedule offset s must be >= 0, got {s}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    # clipping β (rather than ᾱ) keeps the last steps from dividing by ~0, as in the paper
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"the number of diffusion steps T must be a positive integer, got {T!r}")


class Schedule:
    """ᾱ_t for t = 0..T-1 and the quantities derived from it.

    ``alpha_bar`` must be strictly decreasing inside (0, 1). It may carry gradients (a learned schedule
    being fitted); every derived quantity is then differentiable too, as they are computed on access.
    """

    def __init__(self, alpha_bar: torch.Tensor, name: str = "custom"):
        ab = torch.as_tensor(alpha_bar)
        if ab.dim() != 1 or ab.numel() < 1:
            raise ValueError(f"alpha_bar must be a non-empty 1-D tensor, got shape {tuple(ab.shape)}")
        a = ab.detach()
        if not torch.isfinite(a).all() or (a <= 0).any() or (a >= 1).any():
            raise ValueError(
                "alpha_bar must lie strictly inside (0, 1) at every step "
                f"(got min {a.min().item():.3g}, max {a.max().item():.3g})"
            )
        if a.numel() > 1 and not (a[1:] < a[:-1]).all():
            raise ValueError("alpha_bar must be strictly decreasing (every β_t > 0)")
        self.alpha_bar = ab.to(torch.float64)
        self.name = name
        self._tables: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """Linear β (Ho et al. 2020). With fewer than ~1000 steps raise ``beta_end`` so ᾱ_T ≈ 0."""
        return cls.from_betas(linear_betas(T, beta_start, beta_end), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> "Schedule":
        """Cosine ᾱ (Nichol & Dhariwal 2021)."""
        return cls(cosine_alpha_bar(T, s), name="cosine")

    @classmethod
    def from_betas(cls, betas: torch.Tensor, name: str = "custom") -> "Schedule":
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("every β_t must lie in (0, 1)")
        return cls(torch.cumprod(1 - betas, 0), name=name)

    def detach(self) -> "Schedule":
        return Schedule(self.alpha_bar.detach().clone(), self.name)

    def state_dict(self) -> dict:
        """Plain tensors and strings only (loads with ``torch.load(weights_only=True)``)."""
        return {"name": self.name, "alpha_bar": self.alpha_bar.detach().cpu().clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Schedule":
        return cls(state["alpha_bar"], name=state.get("name", "custom"))

    def __repr__(self) -> str:
        a = self.alpha_bar.detach()
        return f"Schedule({self.name!r}, T={self.T}, ᾱ from {a[0].item():.6f} to {a[-1].item():.2e})"

    # ------------------------------------------------------------------ derived quantities
    @property
    def T(self) -> int:
        return self.alpha_bar.numel()

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        """ᾱ_{t-1}, with ᾱ before the first step equal to 1."""
        return torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar[:-1]])

    @property
    def alphas(self) -> torch.Tensor:
        return self.alpha_bar / self.alpha_bar_prev

    @property
    def betas(self) -> torch.Tensor:
        return 1 - self.alphas

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), the variance of q(x_{t-1} | x_t, x_0) (zero at t = 0)."""
        return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def posterior_mean_coef_x0(self) -> torch.Tensor:
        """Coefficient of x_0 in the posterior mean: sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t)."""
        return self.alpha_bar_prev.sqrt() * self.betas / (1 - self.alpha_bar)

    @property
    def posterior_mean_coef_xt(self) -> torch.Tensor:
        """Coefficient of x_t in the posterior mean: sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t)."""
        return self.alphas.sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t)."""
        return self.alpha_bar / (1 - self.alpha_bar)

    # ------------------------------------------------------------------ per-sample lookups
    def at(self, name: str, t: "int | torch.Tensor", like: torch.Tensor) -> "float | torch.Tensor":
        """Quantity ``name`` at timestep(s) ``t``, shaped to broadcast against ``like`` (batch first).

        An integer ``t`` gives a Python float (fast path for samplers); a tensor of shape ``(B,)`` gives a
        ``(B, 1, ..., 1)`` tensor on ``like``'s device and dtype.
        """
        table = getattr(self, name)
        if isinstance(t, int) or (isinstance(t, torch.Tensor) and t.dim() == 0):
            return table[int(t)] if table.requires_grad else float(table[int(t)])
        if table.requires_grad:
            v = table.to(like.device)[t.to(like.device)]
            return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
        key = (name, like.device, like.dtype)
        cached = self._tables.get(key)
        if cached is None:
            # cache per device/dtype: the table is read once per training step
            cached = self._tables[key] = table.detach().to(like.device, like.dtype)
        return cached[t.to(like.device)].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(
        self,
        x0: torch.Tensor,
        t: "int | torch.Tensor",
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        ab = self.at("alpha_bar", t, x0)
        return _sqrt(ab) * x0 + _sqrt(1 - ab) * noise

    def predict_x0(self, x_t: torch.Tensor, t: "int | torch.Tensor", eps: torch.Tensor) -> torch.Tensor:
        """Tweedie's estimate x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) (Hoseinpour & Dvorkin, eq. 6)."""
        ab = self.at("alpha_bar", t, x_t)
        return (x_t - _sqrt(1 - ab) * eps) / _sqrt(ab)

    def gaussian_eps(self, x_t: torch.Tensor, t: "int | torch.Tensor") -> torch.Tensor:
        """sqrt(1 - ᾱ_t) x_t: E[ε | x_t] when x_0 is standard normal, the base of the ``epsilon_skip`` output."""
        return _sqrt(1 - self.at("alpha_bar", t, x_t)) * x_t

    def predict_eps(self, x_t: torch.Tensor, t: "int | torch.Tensor", x0: torch.Tensor) -> torch.Tensor:
        """The noise consistent with (x_t, x̂_0): ε̂ = (x_t - sqrt(ᾱ_t) x̂_0) / sqrt(1 - ᾱ_t)."""
        ab = self.at("alpha_bar", t, x_t)
        return (x_t - _sqrt(ab) * x0) / _sqrt(1 - ab)

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: "int | torch.Tensor"
    ) -> tuple[torch.Tensor, "float | torch.Tensor"]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7; Hoseinpour & Dvorkin, eq. 7)."""
        mean = self.at("posterior_mean_coef_x0", t, x_t) * x0 + self.at("posterior_mean_coef_xt", t, x_t) * x_t
        return mean, self.at("posterior_variance", t, x_t)


def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else v.sqrt()


def make_schedule(name: str, T: int = 1000, **kwargs) -> Schedule:
    """A schedule by name: ``"linear"`` (kwargs ``beta_start``, ``beta_end``) or ``"cosine"`` (kwarg ``s``)."""
    if name == "linear":
        return Schedule.linear(T, **kwargs)
    if name == "cosine":
        return Schedule.cosine(T, **kwargs)
    raise ValueError(
        f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)} "
        f"(or build a Schedule from alpha_bar / a LearnedSchedule)"
    )


# ---------------------------------------------------------------------------------- learned schedule
class LearnedSchedule(nn.Module):
    """F_ω of Wang et al. (Sec. III-B2, Fig. 2): a network mapping a batch of data x_0 to one schedule ᾱ_1..ᾱ_T.

    Per sample the network outputs T + 1 unconstrained numbers: T logits whose softmax w (floored at
    a tiny positive share) splits a total depth D among the steps, and one that sets
    D ∈ (D_min, -log ``min_alpha_bar``) through a sigmoid. Then ``log ᾱ_t = -D Σ_{s<=t} w_s``, so each sample's
    ᾱ is strictly decreasing inside [``min_alpha_bar``, 1) *by construction* -- also in floating point, which
    an unbounded cumulative sum is not (it underflows to ties at 0). The batch mean of the per-sample
    schedules (the paper's "mean of the network outputs across the dataset") keeps both properties.
    The last layer starts near zero with its bias set so that the initial schedule is ``init`` (linear by
    default): the auxiliary training starts from the schedule it is meant to improve on.
    """

    def __init__(
        self,
        dim: int,
        T: int,
        hidden: Sequence[int] = (512, 256),
        init: Schedule | None = None,
        min_alpha_bar: float = 1e-12,
        min_depth: float = 1e-3,
    ):
        super().__init__()
        _check_T(T)
        if dim < 1:
            raise ValueError(f"data dimension must be positive, got {dim}")
        if not 0 < min_alpha_bar < math.exp(-min_depth) or min_depth <= 0:
            raise ValueError("need 0 < min_alpha_bar < exp(-min_depth) and min_depth > 0")
        self.dim, self.T, self.hidden = int(dim), int(T), tuple(int(h) for h in hidden)
        self.min_alpha_bar, self.min_depth = float(min_alpha_bar), float(min_depth)
        self.max_depth = -math.log(min_alpha_bar)
        # floor of each step's share of the depth: keeps every decrement resolvable in float64
        self.floor = 1e-6 / T
        layers: list[nn.Module] = []
        width = dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, T + 1)
        init = init if init is not None else Schedule.linear(T)
        if init.T != T:
            raise ValueError(f"initial schedule has T={init.T}, the learned one T={T}")
        with torch.no_grad():
            dec = -torch.log(init.alphas)  # per-step decrement of -log ᾱ
            depth = float(dec.sum()) + 0.0
            frac = (depth - self.min_depth) / (self.max_depth - self.min_depth)
            frac = min(max(frac, 1e-6), 1 - 1e-6)
            self.head.bias[:T].copy_(torch.log(dec / dec.sum()))
            self.head.bias[T] = math.log(frac / (1 - frac))
            self.head.weight.mul_(1e-2)

    def per_sample(self, x0: torch.Tensor) -> torch.Tensor:
        """ᾱ_1..ᾱ_T for every sample of ``x0`` (shape (B, T), float64)."""
        out = self.head(self.body(x0.reshape(x0.shape[0], -1))).to(torch.float64)
        w = torch.softmax(out[:, : self.T], dim=-1)
        w = (w + self.floor) / (1 + self.T * self.floor)
        depth = self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(out[:, self.T :])
        return torch.exp(-depth * torch.cumsum(w, dim=-1))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """ᾱ_1..ᾱ_T (float64, shape (T,)) averaged over the batch ``x0`` of shape (B, dim)."""
        return self.per_sample(x0).mean(0)

    def schedule(self, x0: torch.Tensor) -> Schedule:
        """The (detached) schedule for the data ``x0``, to train and sample a diffusion model with."""
        with torch.no_grad():
            return Schedule(self(x0).cpu(), name="learned")

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "T": self.T,
            "hidden": list(self.hidden),
            "min_alpha_bar": self.min_alpha_bar,
            "min_depth": self.min_depth,
        }


def fit_schedule(
    net: LearnedSchedule,
    data: torch.Tensor,
    statistic: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    steps: int = 500,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Auxiliary training of F_ω (Wang et al., eq. 11): minimise Σ_t (mean_batch R(x_t) - γ_t)².

    γ_t is the *expected* statistic at step t, so the batch mean of R is compared with it. Squaring per
    sample instead would add Var[R(x_t)] to the loss, which the schedule could lower by adding less noise:
    for a statistic whose spread grows with its mean that settles well below the target.

    ``statistic`` maps noisy data of shape (T, B, dim) to one value per sample, shape (T, B) (the power
    imbalance R of eq. 7 for the physics-informed chapter); ``target`` holds γ_1..γ_T (shape (T,)).
    x_t = sqrt(ᾱ_t(ω)) x_0 + sqrt(1 - ᾱ_t(ω)) ε is differentiable in ω. Returns the loss per step.
    """
    from tqdm.auto import tqdm

    target = torch.as_tensor(target, dtype=torch.float64, device=data.device)
    if target.shape != (net.T,):
        raise ValueError(f"target must hold one value per step, shape ({net.T},), got {tuple(target.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    g = torch.Generator(device=data.device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="schedule", disable=not progress):
        idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=g, device=data.device)
        x0 = data[idx]
        ab = net(x0)  # float64: 1 - ᾱ_1 can lie below float32's resolution near 1
        eps = torch.randn((net.T,) + tuple(x0.shape), generator=g, device=data.device, dtype=x0.dtype)
        shape = (net.T,) + (1,) * x0.dim()
        x_t = ab.sqrt().to(x0.dtype).reshape(shape) * x0 + (1 - ab).sqrt().to(x0.dtype).reshape(shape) * eps
        r = statistic(x_t).to(torch.float64)
        loss = ((r.mean(1) - target) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
