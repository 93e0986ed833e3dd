"""Noise-prediction networks ε_θ(x_t, t, cond) of the four methods, with one call signature.

Every denoiser is called as ``model(x_t, t, cond=None)`` and returns a tensor shaped like ``x_t``: the
predicted noise ε̂ (``model.prediction == "epsilon"``, the default), for a network built with
``prediction="x0"`` the predicted clean sample, or with ``prediction="epsilon_skip"`` the correction r in
ε̂ = sqrt(1 - ᾱ_t) x_t + r: the network learns only how the data differ from a standard normal, whose ε̂ that
first term is exactly (the skip of EDM-style preconditioning). Near t = T, where x_t is almost pure noise, a plain
ε-network must learn the identity map in every feature, and an error there is amplified 1/sqrt(ᾱ_T) times in x̂_0;
on records of many collinear features (a 30-bus grid's 120) that error made plain MLP samples drift far from
the data, which the skip removes. ``t`` holds 0-based timestep indices (see
:mod:`pfbook.diffusion.schedules`): a 0-d tensor or int applies one step to the whole batch (what samplers
pass), a ``(B,)`` tensor one step per sample (what training passes).

* :class:`MLPDenoiser` -- Hoseinpour & Dvorkin, Appendix A: input projection to 500, sinusoidal time embedding, six hidden
  ReLU layers of 500, output projection to the data dimension (width and depth configurable).
* :class:`UNetMLPDenoiser` -- Wang et al., Sec. IV-B2: a U-shaped MLP with hidden widths
  [256, 128, 64, 32, 64, 128, 256], skip connections between mirrored layers, time embedding into every layer,
  attention units, and an optional sigmoid output.
* :class:`ConvUNetDenoiser` -- Pei et al., Sec. III-C and Fig. 3: a 2-D convolutional U-Net with residual and
  attention blocks over M x T measurement matrices (Ho et al. 2020's design at small scale).

:func:`build_denoiser` rebuilds any of them from ``model.config()``: that is how checkpoints store them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PREDICTIONS = ("epsilon", "x0", "epsilon_skip")


def timestep_embedding(
    t: "int | torch.Tensor", dim: int, max_period: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Sinusoidal embedding [sin(t ω_k), cos(t ω_k)], ω_k = max_period^(-k/(dim/2)) (Vaswani et al. 2017, Sec. 3.5).

    Shape ``(1, dim)`` for a scalar ``t`` (broadcasts over the batch), ``(B, dim)`` for ``t`` of shape ``(B,)``.
    """
    t = torch.as_tensor(t, device=device)
    t = t.reshape(-1).to(torch.float32)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Denoiser(nn.Module):
    """Base class: records the constructor arguments so :func:`build_denoiser` can rebuild the network."""

    kind = "denoiser"

    def __init__(self, prediction: str = "epsilon"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        self._config: dict = {}

    def config(self) -> dict:
        """Plain types only: rebuilds this network with :func:`build_denoiser`."""
        return {"kind": self.kind, **self._config, "prediction": self.prediction}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_cond(self, cond: torch.Tensor | None, cond_dim: int) -> None:
        if cond_dim and cond is None:
            raise ValueError(f"this {type(self).__name__} was built with cond_dim={cond_dim}: pass cond")
        if not cond_dim and cond is not None:
            raise ValueError(f"this {type(self).__name__} takes no conditioning (cond_dim=0) but cond was given")


def _int(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


# ---------------------------------------------------------------------------- MLP (Hoseinpour & Dvorkin)
class MLPDenoiser(Denoiser):
    """The MLP of Hoseinpour & Dvorkin, Appendix A (defaults: width 500, 6 hidden ReLU layers).

    ``h = W_in x + emb(t) [+ W_c cond]``, then ``depth`` layers ``h = ReLU(W h + b)``, then ``W_out h``. The
    embedding is the plain sinusoid of width ``width`` added to the input projection, as the appendix
    describes; for one timestep per batch it is computed once and broadcast, so sampling costs the
    matrix products and little else.
    """

    kind = "mlp"

    def __init__(self, dim: int, width: int = 500, depth: int = 6, cond_dim: int = 0, prediction: str = "epsilon"):
        super().__init__(prediction)
        dim, width, depth = _int("dim", dim), _int("width", width, 2), _int("depth", depth, 0)
        cond_dim = _int("cond_dim", cond_dim, 0)
        self._config = {"dim": dim, "width": width, "depth": depth, "cond_dim": cond_dim}
        self.dim, self.width, self.cond_dim = dim, width, cond_dim
        self.inp = nn.Linear(dim, width)
        self.cond = nn.Linear(cond_dim, width) if cond_dim else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, t: "int | torch.Tensor", cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_cond(cond, self.cond_dim)
        h = self.inp(x)
        h = h + timestep_embedding(t, self.width, device=x.device).to(h.dtype)
        if self.cond is not None:
            h = h + self.cond(cond)
        for layer in self.hidden:
            # in place: the output of addmm is not needed by its own backward, so this is autograd-safe
            h = F.relu(layer(h), inplace=True)
        return self.out(h)


# ------------------------------------------------------------------------------------- U-Net MLP (Wang et al.)
class AttentionUnit(nn.Module):
    """Feature-wise attention: ``h * sigmoid(W h + b)``, each unit weighting the hidden features.

    Wang et al. name "attention units" without defining them; for a vector (not a sequence) the
    natural reading is a learned gate over features (squeeze-and-excitation style), used here.
    """

    def __init__(self, width: int):
        super().__init__()
        self.gate = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.sigmoid(self.gate(h))


class _MLPBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int, time_dim: int, attention: bool):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.time = nn.Linear(time_dim, d_out)
        self.norm = nn.LayerNorm(d_out)
        self.attn = AttentionUnit(d_out) if attention else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm(self.lin(h) + self.time(temb)))
        return self.attn(h) if self.attn is not None else h


class UNetMLPDenoiser(Denoiser):
    """U-shaped MLP of Wang et al.: down layers, a bottleneck, up layers fed the mirrored down layer's output.

    ``widths`` must have odd length: the first half are the down layers, the middle one the bottleneck,
    the rest the up layers (defaults [256, 128, 64, 32, 64, 128, 256] as in the paper). Up layer ``i``
    receives the concatenation of the previous layer and down layer ``k-1-i`` (the skip connection).
    ``output="sigmoid"`` ends in a sigmoid, as the paper does for data normalised to [0, 1]; that only makes
    sense for a network that predicts x_0, so it requires ``prediction="x0"``.
    """

    kind = "unet_mlp"

    def __init__(
        self,
        dim: int,
        widths: Sequence[int] = (256, 128, 64, 32, 64, 128, 256),
        time_dim: int = 128,
        attention: bool = True,
        output: str = "linear",
        cond_dim: int = 0,
        prediction: str = "epsilon",
    ):
        super().__init__(prediction)
        widths = [_int("width", w) for w in widths]
        if len(widths) % 2 != 1:
            raise ValueError(f"widths must have odd length (down layers, bottleneck, up layers), got {widths}")
        if output not in ("linear", "sigmoid"):
            raise ValueError(f"output must be 'linear' or 'sigmoid', got {output!r}")
        if output == "sigmoid" and prediction != "x0":
            raise ValueError(
                "a sigmoid output lies in (0, 1): use it to predict x0 in [0, 1] (prediction='x0'), "
                "not the Gaussian noise ε"
            )
        dim, time_dim, cond_dim = _int("dim", dim), _int("time_dim", time_dim, 2), _int("cond_dim", cond_dim, 0)
        self._config = {
            "dim": dim,
            "widths": widths,
            "time_dim": time_dim,
            "attention": bool(attention),
            "output": output,
            "cond_dim": cond_dim,
        }
        self.dim, self.time_dim, self.cond_dim, self.output = dim, time_dim, cond_dim, output
        k = len(widths) // 2
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.cond = nn.Linear(cond_dim, time_dim) if cond_dim else None
        self.down = nn.ModuleList()
        d = dim
        for w in widths[:k]:
            self.down.append(_MLPBlock(d, w, time_dim, attention))
            d = w
        self.mid = _MLPBlock(d, widths[k], time_dim, attention)
        d = widths[k]
        self.up = nn.ModuleList()
        for i, w in enumerate(widths[k + 1 :]):
            self.up.append(_MLPBlock(d + widths[k - 1 - i], w, time_dim, attention))
            d = w
        self.out = nn.Linear(d, dim)

    def forward(self, x: torch.Tensor, t: "int | torch.Tensor", cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_cond(cond, self.cond_dim)
        temb = self.time_mlp(timestep_embedding(t, self.time_dim, device=x.device).to(x.dtype))
        if self.cond is not None:
            temb = temb + self.cond(cond)
        h, skips = x, []
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
        h = self.mid(h, temb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=-1), temb)
        out = self.out(h)
        return torch.sigmoid(out) if self.output == "sigmoid" else out


# -------------------------------------------------------------------------------------- conv U-Net (Pei et al.)
def _groups(ch: int) -> int:
    return next(g for g in (8, 4, 2, 1) if ch % g == 0)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, and a residual path (Ho et al. 2020)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class AttentionBlock(nn.Module):
    """Self-attention over all M x T positions of a feature map, with a residual path."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class ConvUNetDenoiser(Denoiser):
    """2-D U-Net over M x T measurement matrices (Pei et al.: residual and attention blocks, time embedding).

    Input ``(B, M, T)`` (one channel) or ``(B, C, M, T)`` with ``channels=C``. Level ``i`` has
    ``base * mults[i]`` channels and ``n_res`` residual blocks; ``attention`` lists the levels with an
    attention block (default: the deepest; the bottleneck always has one). Matrices whose sides are not multiples of
    ``2**(levels-1)`` are zero-padded on the way in and cropped on the way out.
    """

    kind = "conv_unet"

    def __init__(
        self,
        channels: int = 1,
        base: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        attention: Sequence[int] | None = None,
        n_res: int = 1,
        time_dim: int | None = None,
        cond_dim: int = 0,
        prediction: str = "epsilon",
    ):
        super().__init__(prediction)
        channels, base, n_res = _int("channels", channels), _int("base", base), _int("n_res", n_res)
        mults = [_int("mult", m) for m in mults]
        if not mults:
            raise ValueError("mults must name at least one level")
        attention = sorted({int(a) for a in attention}) if attention is not None else [len(mults) - 1]
        if any(not 0 <= a < len(mults) for a in attention):
            raise ValueError(f"attention levels must be in 0..{len(mults) - 1}, got {attention}")
        time_dim = _int("time_dim", time_dim if time_dim is not None else 4 * base, 2)
        cond_dim = _int("cond_dim", cond_dim, 0)
        self._config = {
            "channels": channels,
            "base": base,
            "mults": mults,
            "attention": attention,
            "n_res": n_res,
            "time_dim": time_dim,
            "cond_dim": cond_dim,
        }
        self.channels, self.time_dim, self.cond_dim = channels, time_dim, cond_dim
        self.levels = len(mults)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.cond = nn.Linear(cond_dim, time_dim) if cond_dim else None
        self.stem = nn.Conv2d(channels, base, 3, padding=1)
        chs, ch = [base], base
        self.down = nn.ModuleList()
        for i, m in enumerate(mults):
            for _ in range(n_res):
                self.down.append(ResBlock(ch, base * m, time_dim))
                ch = base * m
                chs.append(ch)
                if i in attention:
                    self.down.append(AttentionBlock(ch))
            if i < self.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                chs.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, time_dim), AttentionBlock(ch), ResBlock(ch, ch, time_dim)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(n_res + 1):
                self.up.append(ResBlock(ch + chs.pop(), base * m, time_dim))
                ch = base * m
                if i in attention:
                    self.up.append(AttentionBlock(ch))
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: "int | torch.Tensor", cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_cond(cond, self.cond_dim)
        squeeze = x.dim() == 3
        if squeeze and self.channels != 1:
            raise ValueError(f"input of shape {tuple(x.shape)} has no channel axis but channels={self.channels}")
        h = x[:, None] if squeeze else x
        m, n = h.shape[-2:]
        f = 2 ** (self.levels - 1)
        pad_m, pad_n = (-m) % f, (-n) % f
        if pad_m or pad_n:
            h = F.pad(h, (0, pad_n, 0, pad_m))
        temb = self.time_mlp(timestep_embedding(t, self.time_dim, device=x.device).to(x.dtype))
        if self.cond is not None:
            temb = temb + self.cond(cond)
        if temb.shape[0] == 1 and h.shape[0] > 1:
            temb = temb.expand(h.shape[0], -1)
        h = self.stem(h)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, temb)
                skips.append(h)
            elif isinstance(layer, AttentionBlock):
                h = layer(h)
                skips[-1] = h
            else:  # strided conv: downsample
                h = layer(h)
                skips.append(h)
        for layer in self.mid:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], 1), temb) if isinstance(layer, ResBlock) else layer(h)
        h = self.out(h)[..., :m, :n]
        return h[:, 0] if squeeze else h


# ---------------------------------------------------------------------------------------- registry
DENOISERS: dict[str, type[Denoiser]] = {c.kind: c for c in (MLPDenoiser, UNetMLPDenoiser, ConvUNetDenoiser)}


def build_denoiser(config: dict, seed: int | None = None) -> Denoiser:
    """Rebuild a denoiser from :meth:`Denoiser.config` (``{"kind": ..., **arguments}``).

    With ``seed`` the initial weights are a function of the seed alone (the global RNG is left untouched).
    """
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in DENOISERS:
        raise ValueError(f"unknown denoiser kind {kind!r}; choose one of {', '.join(DENOISERS)}")
    if seed is None:
        return DENOISERS[kind](**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DENOISERS[kind](**config)
