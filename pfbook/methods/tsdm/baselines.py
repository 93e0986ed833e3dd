"""The four recovery methods TSDM is compared with (Pei et al., Tables I and III), each a real model on the same windows.

Every baseline is fitted on clean training windows ``(n, M, T)`` in physical units, standardises each channel
with the training mean and standard deviation, and is then called as ``method(y, mask)``: ``y`` the corrupted
windows (NaN where lost), ``mask`` the lost entries (or ``None`` for attacks, whose location no method is told).
Entries given as lost are always filled; entries measured are kept or replaced as the method decides.

* :class:`LSTMPredictor` -- time-series prediction (the paper's [24]): an LSTM trained to predict every sample
  from the ones before it; at recovery it runs along the window, and a sample that is lost or lies more than
  3σ from its prediction (σ per channel, the one-step error on training windows) is replaced by the prediction,
  which then feeds the next step; a sample where more than ``event_share`` of the measured channels leave their
  3σ band at once is taken as the system moving (a fault, a renewable ramp), not as an attack on a few channels,
  and kept as measured (without that rule one such jump set off replacements that ran free to the window's end);
* :class:`RobustPCA` -- ADMM robust principal component analysis with matrix completion ([26], [23]): each
  window Y is split as L + S + E with L low-rank (nuclear norm), S sparse (ℓ1, the outliers) and E free on lost
  entries (principal component pursuit, solved by the inexact augmented Lagrangian / ADMM of Lin, Chen & Ma
  2010); lost and outlying entries are taken from L;
* :class:`VAERecovery` -- a variational autoencoder ([56]) over whole windows; recovery is its reconstruction
  (lost entries filled iteratively from it);
* :class:`EncoderWGAN` -- a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) and an encoder
  trained afterwards to invert the generator ([9]); recovery is G(E(y)), refined by a few gradient steps of the
  latent code on the measured entries.

Beside them a reference that needs no model, :class:`NearestWindow` (looking up history): the training window
closest to the measured entries, which fills the lost entries (data loss) or replaces the window (attacks, whose
location it is not told).
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "Baseline",
    "LSTMPredictor",
    "RobustPCA",
    "VAERecovery",
    "EncoderWGAN",
    "NearestWindow",
    "make_baselines",
    "rpca_admm",
]


class Baseline(abc.ABC):
    """Common part: per-channel standardisation and the ``method(y, mask)`` call."""

    name = "baseline"

    def __init__(self, seed: int = 0, device: str = "cpu"):
        self.seed, self.device = int(seed), torch.device(device)
        self.mean = self.std = None

    def _standardise_fit(self, train: np.ndarray) -> np.ndarray:
        train = np.asarray(train, dtype=np.float64)
        if train.ndim != 3 or len(train) < 2:
            raise ValueError(f"training windows must have shape (n >= 2, M, T); got {train.shape}")
        if not np.isfinite(train).all():
            raise ValueError("training windows must be clean (no NaN)")
        self.mean = train.mean(axis=(0, 2))[:, None]
        self.std = np.maximum(train.std(axis=(0, 2)), 1e-9)[:, None]
        return (train - self.mean) / self.std

    def _z(self, y: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(train_windows) first")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 3 or y.shape[1:] != (self.mean.shape[0], self.shape_T):
            raise ValueError(
                f"{self.name} was fitted on windows of shape (M, T) = ({self.mean.shape[0]}, "
                f"{self.shape_T}); got {y.shape[1:]}"
            )
        return (y - self.mean) / self.std

    def _x(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    @staticmethod
    def _missing(y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        miss = ~np.isfinite(y)
        return miss if mask is None else miss | np.asarray(mask, dtype=bool)

    def __call__(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.recover(y, mask)

    @abc.abstractmethod
    def fit(self, train: np.ndarray) -> "Baseline":
        """Learn from clean training windows (n, M, T); returns self."""

    @abc.abstractmethod
    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The repaired windows of ``y``; NaNs and ``mask`` mark entries known to be missing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _adam_loop(params, loss_fn, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    hist = []
    for k in range(steps):
        loss = loss_fn(k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    return hist


def _batches(n: int, batch: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n, (min(batch, n),), generator=g) for _ in range(steps)]


# ---------------------------------------------------------------------------------------- LSTM
class LSTMPredictor(Baseline):
    """One-step-ahead LSTM prediction with 3σ replacement (see the module docstring)."""

    name = "LSTM"

    def __init__(
        self,
        hidden: int = 64,
        steps: int = 1500,
        batch: int = 32,
        lr: float = 3e-3,
        k: float = 3.0,
        event_share: float = 0.5,
        **kw,
    ):
        super().__init__(**kw)
        if not 0 < event_share <= 1:
            raise ValueError(f"event_share is a share of the channels in (0, 1]; got {event_share}")
        self.hidden, self.steps, self.batch, self.lr, self.k = hidden, steps, batch, lr, k
        self.event_share = float(event_share)

    def fit(self, train: np.ndarray) -> "LSTMPredictor":
        z = torch.as_tensor(self._standardise_fit(train), dtype=torch.float32, device=self.device)
        z = z.transpose(1, 2)  # (n, T, M)
        self.shape_T = z.shape[1]
        M = z.shape[2]
        torch.manual_seed(self.seed)
        self.lstm = nn.LSTM(M, self.hidden, batch_first=True).to(self.device)
        self.head = nn.Linear(self.hidden, M).to(self.device)
        params = list(self.lstm.parameters()) + list(self.head.parameters())
        idx = _batches(len(z), self.batch, self.steps, self.seed)

        def loss(k):
            xb = z[idx[k].to(self.device)]
            out, _ = self.lstm(xb[:, :-1])
            return ((self.head(out) - xb[:, 1:]) ** 2).mean()

        self.losses = _adam_loop(params, loss, self.steps, self.lr)
        with torch.no_grad():
            out, _ = self.lstm(z[:, :-1])
            err = (self.head(out) - z[:, 1:]).reshape(-1, M)
        self.sigma = err.pow(2).mean(0).sqrt().detach().cpu().numpy()
        return self

    @torch.no_grad()
    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        miss = self._missing(y, mask)
        z = np.where(miss, 0.0, self._z(np.where(miss, 0.0, y)))
        n, M, T = z.shape
        out = z.copy()
        h = None
        prev = torch.as_tensor(out[:, :, 0], dtype=torch.float32, device=self.device)
        for t in range(1, T):
            o, h = self.lstm(prev[:, None, :], h)
            pred = self.head(o[:, 0]).double().detach().cpu().numpy()
            off = (np.abs(z[:, :, t] - pred) > self.k * self.sigma[None]) & ~miss[:, :, t]
            measured = np.maximum((~miss[:, :, t]).sum(axis=1, keepdims=True), 1)
            event = off.sum(axis=1, keepdims=True) > self.event_share * measured  # the system moved
            bad = miss[:, :, t] | (off & ~event)
            out[:, :, t] = np.where(bad, pred, z[:, :, t])
            prev = torch.as_tensor(out[:, :, t], dtype=torch.float32, device=self.device)
        return self._x(out)


# ---------------------------------------------------------------------------------------- ADMM robust PCA
def _svt(X: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    return U @ torch.diag_embed(torch.clamp(s - tau[:, None], min=0)) @ Vh


def rpca_admm(
    Y: torch.Tensor,
    observed: torch.Tensor,
    lam: float | None = None,
    rho: float = 1.2,
    iters: int = 500,
    tol: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal component pursuit with missing entries, batched: min ||L||_* + λ||S||_1 s.t. P_Ω(L + S) = P_Ω(Y).

    Inexact ALM / ADMM (Lin, Chen & Ma 2010) with an auxiliary E that is free on the unobserved entries; λ
    defaults to 1/sqrt(max(M, T)) (Candès et al. 2011). Returns (L, S).
    """
    Y = torch.where(observed, Y, torch.zeros_like(Y)).double()
    obs = observed.to(Y.dtype)
    m, n = Y.shape[-2:]
    lam = 1.0 / math.sqrt(max(m, n)) if lam is None else float(lam)
    spec = torch.linalg.matrix_norm(Y, ord=2).clamp(min=1e-12)
    mu = 1.25 / spec
    mu_max = mu * 1e7
    fro = torch.linalg.matrix_norm(Y).clamp(min=1e-12)
    L = torch.zeros_like(Y)
    S = torch.zeros_like(Y)
    E = torch.zeros_like(Y)
    Lam = Y / torch.maximum(spec, Y.abs().amax(dim=(-2, -1)) / lam)[:, None, None]
    for _ in range(iters):
        mu_ = mu[:, None, None]
        L = _svt(Y - S - E + Lam / mu_, 1.0 / mu)
        G = Y - L - E + Lam / mu_
        S = torch.sign(G) * torch.clamp(G.abs() - lam / mu_, min=0) * obs
        E = (Y - L - S + Lam / mu_) * (1 - obs)
        Rr = Y - L - S - E
        Lam = Lam + mu_ * Rr
        mu = torch.minimum(mu * rho, mu_max)
        if (torch.linalg.matrix_norm(Rr) / fro).max() < tol:
            break
    return L, S


class RobustPCA(Baseline):
    """ADMM robust PCA / matrix completion per window (see the module docstring); nothing to train but the
    channel standardisation, which makes the channels comparable for the nuclear norm."""

    name = "ADMM"

    def __init__(self, lam: float | None = None, iters: int = 500, **kw):
        super().__init__(**kw)
        self.lam, self.iters = lam, iters

    def fit(self, train: np.ndarray) -> "RobustPCA":
        self._standardise_fit(train)
        self.shape_T = np.shape(train)[2]
        return self

    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        miss = self._missing(y, mask)
        z = np.where(miss, 0.0, self._z(np.where(miss, 0.0, y)))
        L, S = rpca_admm(
            torch.as_tensor(z, device=self.device),
            torch.as_tensor(~miss, device=self.device),
            self.lam,
            iters=self.iters,
        )
        L, S = L.detach().cpu().numpy(), S.detach().cpu().numpy()
        out = np.where(miss | (np.abs(S) > 1e-6), L, z)
        return self._x(out)


# ---------------------------------------------------------------------------------------- VAE
class _MLP(nn.Sequential):
    def __init__(self, dims, act=nn.SiLU):
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), act()]
        super().__init__(*layers[:-1])


class VAERecovery(Baseline):
    """A Gaussian VAE over flattened standardised windows; recovery = reconstruction (see the module docstring).

    The decoder's noise is fixed at ``sigma`` (standardised units), i.e. the loss is
    ||x - x̂||²/(2σ²) + KL(q(z|x) || N(0, I)).
    """

    name = "VAE"

    def __init__(
        self,
        hidden: int = 256,
        latent: int = 16,
        sigma: float = 0.1,
        steps: int = 1500,
        batch: int = 64,
        lr: float = 1e-3,
        fill_iters: int = 3,
        **kw,
    ):
        super().__init__(**kw)
        self.hidden, self.latent, self.sigma, self.steps, self.batch, self.lr = hidden, latent, sigma, steps, batch, lr
        self.fill_iters = fill_iters

    def fit(self, train: np.ndarray) -> "VAERecovery":
        z = torch.as_tensor(self._standardise_fit(train), dtype=torch.float32, device=self.device)
        self.shape_T = z.shape[2]
        x = z.flatten(1)
        D = x.shape[1]
        torch.manual_seed(self.seed)
        self.enc = _MLP([D, self.hidden, self.hidden, 2 * self.latent]).to(self.device)
        self.dec = _MLP([self.latent, self.hidden, self.hidden, D]).to(self.device)
        idx = _batches(len(x), self.batch, self.steps, self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)

        def loss(k):
            xb = x[idx[k].to(self.device)]
            mu, logvar = self.enc(xb).chunk(2, dim=1)
            w = mu + torch.randn(mu.shape, generator=g).to(self.device) * (0.5 * logvar).exp()
            rec = ((self.dec(w) - xb) ** 2).sum(1) / (2 * self.sigma**2)
            kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
            return (rec + kl).mean() / D

        self.losses = _adam_loop(list(self.enc.parameters()) + list(self.dec.parameters()), loss, self.steps, self.lr)
        return self

    @torch.no_grad()
    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(z, dtype=torch.float32, device=self.device).flatten(1)
        mu, _ = self.enc(x).chunk(2, dim=1)
        return self.dec(mu).double().detach().cpu().numpy().reshape(z.shape)

    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        miss = self._missing(y, mask)
        z = np.where(miss, 0.0, self._z(np.where(miss, 0.0, y)))
        cur = z
        for _ in range(self.fill_iters):
            rec = self.reconstruct(cur)
            cur = np.where(miss, rec, z)
        rec = self.reconstruct(cur)
        return self._x(rec if mask is None else np.where(miss, rec, z))


# ---------------------------------------------------------------------------------------- encoder + WGAN
class EncoderWGAN(Baseline):
    """WGAN-GP generator G(w) of windows with an encoder E trained to invert it (see the module docstring)."""

    name = "GAN"

    def __init__(
        self,
        hidden: int = 256,
        latent: int = 16,
        steps: int = 1500,
        batch: int = 64,
        lr: float = 2e-4,
        n_critic: int = 5,
        gp: float = 10.0,
        refine_steps: int = 30,
        refine_lr: float = 0.05,
        **kw,
    ):
        super().__init__(**kw)
        self.hidden, self.latent, self.steps, self.batch, self.lr = hidden, latent, steps, batch, lr
        self.n_critic, self.gp, self.refine_steps, self.refine_lr = n_critic, gp, refine_steps, refine_lr

    def fit(self, train: np.ndarray) -> "EncoderWGAN":
        z = torch.as_tensor(self._standardise_fit(train), dtype=torch.float32, device=self.device)
        self.shape_T = z.shape[2]
        x = z.flatten(1)
        n, D = x.shape
        torch.manual_seed(self.seed)
        self.G = _MLP([self.latent, self.hidden, self.hidden, D]).to(self.device)
        critic = _MLP([D, self.hidden, self.hidden, 1], act=lambda: nn.LeakyReLU(0.2)).to(self.device)
        self.E = _MLP([D, self.hidden, self.hidden, self.latent]).to(self.device)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(critic.parameters(), lr=self.lr, betas=(0.5, 0.9))
        g = torch.Generator().manual_seed(self.seed + 1)
        gen_steps = max(1, self.steps // 2)
        self.losses = []
        for _step in range(gen_steps):
            for _ in range(self.n_critic):
                xb = x[torch.randint(0, n, (min(self.batch, n),), generator=g).to(self.device)]
                fake = self.G(torch.randn(len(xb), self.latent, generator=g).to(self.device)).detach()
                a = torch.rand(len(xb), 1, generator=g).to(self.device)
                mix = (a * xb + (1 - a) * fake).requires_grad_(True)
                (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
                loss_d = critic(fake).mean() - critic(xb).mean() + self.gp * ((grad.norm(dim=1) - 1) ** 2).mean()
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            loss_g = -critic(self.G(torch.randn(self.batch, self.latent, generator=g).to(self.device))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            self.losses.append(float(loss_d.detach()))
        for p in self.G.parameters():
            p.requires_grad_(False)
        idx = _batches(n, self.batch, self.steps - gen_steps, self.seed + 2)

        def loss_e(k):
            xb = x[idx[k].to(self.device)]
            w = torch.randn(len(xb), self.latent, generator=g).to(self.device)
            return ((self.G(self.E(xb)) - xb) ** 2).mean() + ((self.E(self.G(w)) - w) ** 2).mean()

        self.encoder_losses = _adam_loop(self.E.parameters(), loss_e, max(1, self.steps - gen_steps), 1e-3)
        return self

    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        miss = self._missing(y, mask)
        z = np.where(miss, 0.0, self._z(np.where(miss, 0.0, y)))
        x = torch.as_tensor(z, dtype=torch.float32, device=self.device).flatten(1)
        obs = torch.as_tensor(~miss, device=self.device).flatten(1).float()
        with torch.no_grad():
            w0 = self.E(x)
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.refine_lr)
        for _ in range(self.refine_steps):
            loss = (((self.G(w) - x) ** 2) * obs).sum(1).mean() / x.shape[1] + 1e-3 * (w**2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            rec = self.G(w).double().detach().cpu().numpy().reshape(z.shape)
        return self._x(rec if mask is None else np.where(miss, rec, z))


class NearestWindow(Baseline):
    """Looking up history: the training window nearest (RMS over the measured entries, standardised) to each window.

    Lost entries are filled from it; under attack (no mask) the whole window is returned, since the method is
    not told where the attack is: what the historical records alone say about the day."""

    name = "nearest training window"

    def fit(self, train: np.ndarray) -> "NearestWindow":
        self.train = self._standardise_fit(train)
        self.shape_T = self.train.shape[2]
        return self

    def recover(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        z = self._z(y)
        miss = self._missing(y, mask)
        zt = torch.as_tensor(self.train.reshape(len(self.train), -1))
        out = np.empty_like(z)
        for i in range(len(z)):
            obs = torch.as_tensor(~miss[i].reshape(-1))
            zi = torch.as_tensor(np.where(miss[i], 0.0, z[i]).reshape(-1))
            d = (((zt - zi) ** 2) * obs).sum(dim=1)
            out[i] = self.train[int(torch.argmin(d))]
        rec = out if mask is None else np.where(miss, out, z)
        return self._x(rec)


def make_baselines(train: np.ndarray, steps: int = 1500, seed: int = 0, device: str = "cpu") -> dict[str, Baseline]:
    """The four baselines of Tables I/III, fitted on ``train``: ``{"LSTM", "ADMM", "VAE", "GAN"}``."""
    torch.manual_seed(seed)
    return {
        "LSTM": LSTMPredictor(steps=steps, seed=seed, device=device).fit(train),
        "ADMM": RobustPCA(seed=seed, device=device).fit(train),
        "VAE": VAERecovery(steps=steps, seed=seed, device=device).fit(train),
        "GAN": EncoderWGAN(steps=steps, seed=seed, device=device).fit(train),
    }
