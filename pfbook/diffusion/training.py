"""Training by ε-prediction (Algorithm 1 of Ho et al. 2020 and of Hoseinpour & Dvorkin), and checkpoints.

Each step draws a batch x_0, timesteps t ~ U{0..T-1} and noise ε, and takes an Adam step on
``||ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, t)||²`` (Hoseinpour & Dvorkin, eq. 5) plus an optional extra loss
(the physics loss L = L_DDPM + η L_R of Wang et al., eq. 9). The learning rate is multiplied by γ every k steps
(Hoseinpour & Dvorkin, Appendix A: γ = 0.6); an exponential moving average of the weights is optional.

Reproducibility: the batch order is a permutation per epoch seeded by (seed, epoch), and t and ε are drawn
from a generator re-seeded by (seed, step), so a run is a function of the seed alone, and a run resumed from
a checkpoint continues exactly as the uninterrupted one would have.

Checkpoints (:func:`save_checkpoint`) hold only tensors, dicts, lists, strings and numbers, so they load with
``torch.load(path, weights_only=True)``; they are written atomically and carry the data :class:`Layout`
(feature names, grid name, sample shape), and loading one into another layout is refused.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pfbook.diffusion.denoisers import Denoiser, build_denoiser
from pfbook.diffusion.normalise import Normaliser
from pfbook.diffusion.samplers import DDPMSampler, OptimalVariance, Sampler, estimate_optimal_variance
from pfbook.diffusion.schedules import Schedule
from pfbook.io import DatasetError, atomic_write_bytes

FORMAT = "pfbook.diffusion_checkpoint"
FORMAT_VERSION = 1


def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; otherwise the named device (checked to exist)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but this machine has no CUDA GPU; use 'cpu' or 'auto'")
    return dev


def _mix(*ints: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps): neighbouring steps get unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """What a model's inputs mean: feature names, the grid they belong to, and the shape of one sample."""

    features: tuple[str, ...] = ()
    grid: str | None = None
    shape: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.features and self.shape and len(self.features) != int(np.prod(self.shape)):
            raise ValueError(f"layout names {len(self.features)} features but one sample has shape {self.shape}")

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"features": self.features, "grid": self.grid, "shape": self.shape}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        feats = ", ".join(self.features[:4]) + (", ..." if len(self.features) > 4 else "")
        return f"grid {self.grid!r}, shape {self.shape}, {len(self.features)} features [{feats}]"

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "grid": self.grid,
            "shape": list(self.shape),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(tuple(d.get("features", ())), d.get("grid"), tuple(d.get("shape", ())))

    def check(self, other: "Layout", what: str = "checkpoint") -> None:
        """Raise :class:`~pfbook.io.DatasetError` naming both layouts unless ``other`` is the same layout."""
        if other.fingerprint != self.fingerprint:
            diff = [k for k in ("grid", "shape", "features") if getattr(self, k) != getattr(other, k)]
            raise DatasetError(
                f"the {what} was trained for {self.describe()} but is being used for "
                f"{other.describe()} (they differ in {', '.join(diff)}); train a model for this "
                f"data or load the matching {what}"
            )


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :class:`Trainer` (defaults: Hoseinpour & Dvorkin, Appendix A, at a CPU-sized step count).

    The paper trains 15 000 epochs of 10 batches of 500 with lr 1e-4 decayed by 0.6 "every 1500 steps";
    ``steps`` here are optimiser steps, so a chapter states which reading of "steps" it takes.
    """

    steps: int = 10_000  # optimiser steps in total
    batch_size: int = 500
    lr: float = 1e-4
    lr_decay_every: int | None = 1500  # steps between learning-rate decays; None keeps it constant
    lr_decay: float = 0.6  # γ, the factor applied at each decay
    ema_decay: float | None = None  # e.g. 0.999; None trains without an EMA copy
    checkpoint_every: int | None = None  # steps between checkpoints (needs a checkpoint path)
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU

    def __post_init__(self):
        def pos_int(name, v, allow_none=False):
            if allow_none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")

        pos_int("steps", self.steps)
        pos_int("batch_size", self.batch_size)
        pos_int("lr_decay_every", self.lr_decay_every, allow_none=True)
        pos_int("checkpoint_every", self.checkpoint_every, allow_none=True)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"TrainConfig.lr_decay (γ) must lie in (0, 1], got {self.lr_decay!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1) or be None, got {self.ema_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_settings(cls, settings: Any) -> "TrainConfig":
        """The training fields of a chapter's settings object (its attributes named like this class's fields)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})


# ---------------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's parameters: θ̄ <- d θ̄ + (1 - d) θ after every step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)

    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            for s, p in zip(self.shadow, model.parameters()):
                p.copy_(s)
        return model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": [s.detach().cpu().clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)


# ---------------------------------------------------------------------------------------- loss context
@dataclass
class LossContext:
    """What an extra loss sees at one training step (model space unless stated)."""

    x0: torch.Tensor
    x_t: torch.Tensor
    t: torch.Tensor  # (B,) timestep indices
    noise: torch.Tensor
    eps_hat: torch.Tensor
    x0_hat: torch.Tensor
    schedule: Schedule
    normaliser: Normaliser
    step: int
    cond: torch.Tensor | None = None

    def x_prev_mean(self) -> torch.Tensor:
        """The model's one-step reverse estimate x̂_{t-1}: the posterior mean given x̂_0 (the choice of Wang et al.)."""
        return self.schedule.q_posterior(self.x0_hat, self.x_t, self.t)[0]

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return self.normaliser.inverse(z)


ExtraLoss = Callable[[LossContext], "torch.Tensor | dict[str, torch.Tensor]"]


# ---------------------------------------------------------------------------------------- trained model
@dataclass
class DiffusionModel:
    """A denoiser with everything needed to use it: schedule, normaliser, layout (and the optimal variance)."""

    model: Denoiser
    schedule: Schedule
    normaliser: Normaliser
    layout: Layout = field(default_factory=Layout)
    train_config: dict = field(default_factory=dict)
    optimal_variance: OptimalVariance | None = None
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(
        self,
        n: int,
        sampler: Sampler | None = None,
        *,
        guidance=None,
        generator=None,
        cond=None,
        progress: bool = False,
        denormalise: bool = True,
        **kwargs,
    ) -> torch.Tensor:
        """``n`` samples (physical units unless ``denormalise=False``); DDPM unless a sampler is given."""
        sampler = sampler if sampler is not None else DDPMSampler(self.schedule)
        shape = (n, *self.layout.shape) if self.layout.shape else (n, *self.normaliser.shape)
        self.model.eval()
        z = sampler.sample(
            self.model,
            shape,
            guidance=guidance,
            generator=generator,
            cond=cond,
            progress=progress,
            device=self.device,
            **kwargs,
        )
        return self.normaliser.inverse(z) if denormalise else z

    def draw(
        self,
        n: int,
        sampler: Sampler | None = None,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        guidance=None,
        **kwargs,
    ) -> tuple[np.ndarray, float]:
        """``n`` samples in physical units as float64 NumPy, and the seconds drawing them took.

        The draw is reproducible: it uses a generator on the model's device seeded with ``seed`` (or the given
        ``generator``, to continue one stream over several draws). DDPM unless a sampler is given; other keywords
        as :meth:`sample` (``cond``, ``callback``, ``resample``, ...).
        """
        gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(int(seed))
        t0 = time.perf_counter()
        x = self.sample(n, sampler, guidance=guidance, generator=gen, **kwargs).double().cpu().numpy()
        return x, time.perf_counter() - t0

    def estimate_optimal_variance(
        self,
        data: torch.Tensor,
        timesteps: Sequence[int] | None = None,
        n_samples: int | None = None,
        normalised: bool = False,
        seed: int = 0,
        **kwargs,
    ) -> OptimalVariance:
        """Estimate TSDM's σ̄²_t on ``data`` (physical units unless ``normalised``) and keep it with the model."""
        z = torch.as_tensor(data, dtype=torch.float32, device=self.device)
        z = z if normalised else self.normaliser(z)
        g = torch.Generator(device=self.device).manual_seed(seed)
        self.model.eval()
        self.optimal_variance = estimate_optimal_variance(
            self.model, self.schedule, z, timesteps=timesteps, n_samples=n_samples, generator=g, **kwargs
        )
        return self.optimal_variance

    def save(self, path: "str | os.PathLike", extra: dict | None = None) -> Path:
        """A checkpoint of the weights, schedule, normaliser, layout and config (no optimiser state)."""
        return save_checkpoint(
            path,
            self.model,
            self.schedule,
            self.normaliser,
            self.layout,
            train_config=self.train_config,
            optimal_variance=self.optimal_variance,
            extra={**self.meta, **(extra or {})},
        )

    @classmethod
    def load(
        cls, path: "str | os.PathLike", expect: Layout | None = None, device: str = "auto", ema: bool = True
    ) -> "DiffusionModel":
        """Load a checkpoint; with ``expect`` refuse one trained for another layout. ``ema`` uses EMA weights."""
        ck = load_checkpoint(path, expect=expect)
        dev = resolve_device(device)
        model = build_denoiser(ck["model"]["config"])
        weights = ck["model"]["state_dict"]
        model.load_state_dict(weights)
        if ema and ck.get("ema") is not None:
            with torch.no_grad():
                for p, s in zip(model.parameters(), ck["ema"]["shadow"]):
                    p.copy_(s)
        ov = ck.get("optimal_variance")
        return cls(
            model=model.to(dev).eval(),
            schedule=Schedule.from_state_dict(ck["schedule"]),
            normaliser=Normaliser.from_state_dict(ck["normaliser"]),
            layout=Layout.from_dict(ck["layout"]),
            train_config=ck.get("train_config") or {},
            optimal_variance=None if ov is None else OptimalVariance.from_state_dict(ov),
            meta=ck.get("extra") or {},
        )


# ---------------------------------------------------------------------------------------- checkpoints
def _plain(obj: Any) -> Any:
    """Tensors moved to the CPU, tuples to lists, NumPy scalars to numbers: what weights_only loads."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (tensors, dicts, lists, str and numbers only)")


def save_checkpoint(
    path: "str | os.PathLike",
    model: Denoiser,
    schedule: Schedule,
    normaliser: Normaliser,
    layout: Layout,
    *,
    train_config: dict | None = None,
    train_state: dict | None = None,
    ema: EMA | None = None,
    optimal_variance: OptimalVariance | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (a reader never sees half a file)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"config": model.config(), "state_dict": model.state_dict()},
        "ema": None if ema is None else ema.state_dict(),
        "schedule": schedule.state_dict(),
        "normaliser": normaliser.state_dict(),
        "layout": layout.to_dict(),
        "train_config": train_config or {},
        "train_state": train_state,
        "optimal_variance": None if optimal_variance is None else optimal_variance.state_dict(),
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(_plain(payload), buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: "str | os.PathLike", expect: Layout | None = None) -> dict:
    """Read a checkpoint with ``weights_only=True``; check its format and (with ``expect``) its layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DatasetError(
            f"checkpoint {path.name} cannot be read ({type(e).__name__}: {e}); it is damaged or not a pfbook checkpoint"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise DatasetError(f"{path.name} is not a pfbook diffusion checkpoint")
    if ck.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path.name} has checkpoint format {ck.get('format_version')}; this pfbook reads {FORMAT_VERSION}"
        )
    if expect is not None:
        Layout.from_dict(ck["layout"]).check(expect, what=f"checkpoint {path.name}")
    return ck


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """ε-prediction training of ``model`` on ``data`` (physical units; normalised here).

    ``normaliser``: ``"standard"``, ``"minmax"``, ``"identity"`` (fitted on ``data``) or a fitted
    :class:`Normaliser`. ``layout`` names the features (it travels with the checkpoint). ``cond`` holds one
    conditioning row per data row. ``extra_loss(ctx)`` returns a scalar tensor (or a dict of named scalars)
    added to the ε loss. ``checkpoint`` is the path written every ``config.checkpoint_every`` steps and at
    the end of :meth:`train`.
    """

    def __init__(
        self,
        model: Denoiser,
        schedule: Schedule,
        data,
        config: TrainConfig = TrainConfig(),
        *,
        normaliser: "str | Normaliser" = "standard",
        layout: Layout | None = None,
        cond: torch.Tensor | None = None,
        extra_loss: ExtraLoss | None = None,
        checkpoint: "str | os.PathLike | None" = None,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config, self.schedule = config, schedule.detach()
        self.device = resolve_device(config.device)
        x = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
        if x.dim() < 2 or len(x) < 1:
            raise ValueError(f"data must have shape (n_samples, ...), got {tuple(x.shape)}")
        self.normaliser = normaliser if isinstance(normaliser, Normaliser) else Normaliser.fit(normaliser, x)
        self.layout = layout if layout is not None else Layout(shape=tuple(x.shape[1:]))
        if self.layout.shape and tuple(x.shape[1:]) != self.layout.shape:
            raise ValueError(f"data samples have shape {tuple(x.shape[1:])} but the layout says {self.layout.shape}")
        self.x = self.normaliser(x.to(torch.float64)).to(self.device, torch.float32)
        if cond is not None:
            cond = torch.as_tensor(cond, dtype=torch.float32).to(self.device)
            if len(cond) != len(self.x):
                raise ValueError(f"cond has {len(cond)} rows for {len(self.x)} data rows")
        self.cond, self.extra_loss = cond, extra_loss
        self.model = model.to(self.device)
        self.checkpoint_path = None if checkpoint is None else Path(checkpoint)
        if config.checkpoint_every is not None and self.checkpoint_path is None:
            raise ValueError("TrainConfig.checkpoint_every is set but no checkpoint path was given")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.lr_scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_every, config.lr_decay)
            if config.lr_decay_every
            else None
        )
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay is not None else None
        self.step = 0
        self.losses = torch.zeros(0)
        self._perm: tuple[int, torch.Tensor] | None = None
        self._gen = torch.Generator(device=self.device)

    # ------------------------------------------------------------------ the data stream
    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(_mix(self.config.seed, epoch, 1))
            self._perm = (epoch, torch.randperm(len(self.x), generator=g).to(self.device))
        return self._perm[1]

    def batch_indices(self, step: int) -> torch.Tensor:
        """Rows of step ``step``: the stream of per-epoch permutations cut into batches (a function of seed, step)."""
        n, b = len(self.x), self.config.batch_size
        pos, parts = step * b, []
        while b:
            epoch, off = divmod(pos, n)
            take = min(b, n - off)
            parts.append(self._epoch_perm(epoch)[off : off + take])
            pos, b = pos + take, b - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # ------------------------------------------------------------------ one step
    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = self.batch_indices(step)
        x0 = self.x[idx]
        cond = None if self.cond is None else self.cond[idx]
        self._gen.manual_seed(_mix(self.config.seed, step, 2))
        t = torch.randint(0, self.schedule.T, (len(x0),), generator=self._gen, device=self.device)
        noise = torch.randn(x0.shape, generator=self._gen, device=self.device, dtype=x0.dtype)
        x_t = self.schedule.q_sample(x0, t, noise)
        out = self.model(x_t, t, cond)
        if self.model.prediction == "x0":
            loss = torch.mean((out - x0) ** 2)
            eps_hat, x0_hat = None, out
        else:
            if self.model.prediction == "epsilon_skip":
                out = out + self.schedule.gaussian_eps(x_t, t)
            loss = torch.mean((out - noise) ** 2)
            eps_hat, x0_hat = out, None
        parts = {"eps" if x0_hat is None else "x0": loss.detach()}
        if self.extra_loss is not None:
            if eps_hat is None:
                eps_hat = self.schedule.predict_eps(x_t, t, x0_hat)
            else:
                x0_hat = self.schedule.predict_x0(x_t, t, eps_hat)
            ctx = LossContext(
                x0=x0,
                x_t=x_t,
                t=t,
                noise=noise,
                eps_hat=eps_hat,
                x0_hat=x0_hat,
                schedule=self.schedule,
                normaliser=self.normaliser,
                step=step,
                cond=cond,
            )
            extra = self.extra_loss(ctx)
            extra = extra if isinstance(extra, dict) else {"extra": extra}
            for k, v in extra.items():
                loss = loss + v
                parts[k] = v.detach()
        return loss, parts

    def train(self, steps: int | None = None, progress: bool = True) -> "Trainer":
        """Train until ``config.steps`` in total (or ``steps`` more), checkpointing on the way."""
        from tqdm.auto import tqdm

        end = self.config.steps if steps is None else self.step + int(steps)
        if end <= self.step:
            return self
        hist = torch.zeros(end - self.step, device=self.device)
        start = self.step
        self.model.train()
        with tqdm(total=end, initial=start, desc="training", unit="step", disable=not progress) as bar:
            while self.step < end:
                loss, parts = self.loss(self.step)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.step()
                if self.lr_scheduler is not None:
                    self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                hist[self.step - start] = loss.detach()
                self.step += 1
                bar.update(1)
                if progress and (self.step % 25 == 0 or self.step == end):
                    # .item() synchronises a GPU: only every 25 steps, for the bar
                    lo = max(0, self.step - start - 25)
                    bar.set_postfix(
                        loss=f"{hist[lo : self.step - start].mean().item():.4f}",
                        **{k: f"{v.item():.3g}" for k, v in parts.items() if k not in ("eps", "x0")},
                    )
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.losses = torch.cat([self.losses, hist[: self.step - start].cpu()])
                    hist, start = hist[self.step - start :], self.step
                    self.save_checkpoint()
        self.losses = torch.cat([self.losses, hist.cpu()])
        if self.checkpoint_path is not None:
            self.save_checkpoint()
        self.model.eval()
        return self

    # ------------------------------------------------------------------ results and checkpoints
    def sampling_model(self) -> Denoiser:
        """The network to sample with: a copy carrying the EMA weights when an EMA is kept, else the model."""
        if self.ema is None:
            return self.model.eval()
        return self.ema.copy_to(copy.deepcopy(self.model)).eval()

    def result(self) -> DiffusionModel:
        return DiffusionModel(
            model=self.sampling_model(),
            schedule=self.schedule,
            normaliser=self.normaliser,
            layout=self.layout,
            train_config=self.config.to_dict(),
            meta={"steps": self.step},
        )

    def train_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "losses": self.losses.clone(),
        }

    def save_checkpoint(self, path: "str | os.PathLike | None" = None) -> Path:
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one here or to the Trainer")
        return save_checkpoint(
            path,
            self.model,
            self.schedule,
            self.normaliser,
            self.layout,
            train_config=self.config.to_dict(),
            train_state=self.train_state(),
            ema=self.ema,
        )

    @classmethod
    def resume(
        cls,
        path: "str | os.PathLike",
        data,
        *,
        layout: Layout | None = None,
        cond=None,
        extra_loss: ExtraLoss | None = None,
        config: TrainConfig | None = None,
        checkpoint: "str | os.PathLike | None" = None,
    ) -> "Trainer":
        """Continue training from a checkpoint written by :meth:`save_checkpoint`.

        ``layout`` (if given) must match the checkpoint's. ``config`` may change ``steps``,
        ``checkpoint_every`` and ``device`` only: everything else fixes what the run computes.
        """
        ck = load_checkpoint(path, expect=layout)
        if ck.get("train_state") is None:
            raise DatasetError(
                f"checkpoint {Path(path).name} holds a model without its optimiser state "
                f"(saved by DiffusionModel.save); it can be sampled from but not resumed"
            )
        saved = TrainConfig.from_dict(ck["train_config"])
        if config is not None:
            changed = [
                f.name
                for f in fields(TrainConfig)
                if f.name not in ("steps", "checkpoint_every", "device")
                and getattr(config, f.name) != getattr(saved, f.name)
            ]
            if changed:
                raise ValueError(
                    f"resuming cannot change {', '.join(changed)} (the checkpoint was trained with "
                    + ", ".join(f"{k}={getattr(saved, k)!r}" for k in changed)
                    + ")"
                )
            saved = config
        model = build_denoiser(ck["model"]["config"])
        model.load_state_dict(ck["model"]["state_dict"])
        tr = cls(
            model,
            Schedule.from_state_dict(ck["schedule"]),
            data,
            saved,
            normaliser=Normaliser.from_state_dict(ck["normaliser"]),
            layout=Layout.from_dict(ck["layout"]),
            cond=cond,
            extra_loss=extra_loss,
            checkpoint=checkpoint if checkpoint is not None else path,
        )
        st = ck["train_state"]
        tr.optimizer.load_state_dict(st["optimizer"])
        if tr.lr_scheduler is not None and st.get("lr_scheduler") is not None:
            tr.lr_scheduler.load_state_dict(st["lr_scheduler"])
        if tr.ema is not None and ck.get("ema") is not None:
            tr.ema.load_state_dict(ck["ema"])
        tr.step, tr.losses = int(st["step"]), st["losses"].clone()
        return tr


def train(
    model: Denoiser, schedule: Schedule, data, config: TrainConfig = TrainConfig(), *, progress: bool = True, **kwargs
) -> DiffusionModel:
    """Train and return the :class:`DiffusionModel` (a one-call form of :class:`Trainer`)."""
    return Trainer(model, schedule, data, config, **kwargs).train(progress=progress).result()
