"""The GAN + physics baseline of the physics-informed DDPM paper (its Table I's first row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pfbook.diffusion import Normaliser
from pfbook.methods.physics_informed.config import PhysicsInformedConfig
from pfbook.methods.physics_informed.data import PIData


# ---------------------------------------------------------------------------------------- physics-informed GAN
def _mlp(sizes: Sequence[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """G(z): noise to a normalised record in (0, 1) through a sigmoid (within C1-C4, as the DDPMs)."""

    def __init__(self, noise: int, dim: int, widths: Sequence[int]):
        super().__init__()
        self.noise = noise
        self.net = _mlp([noise, *widths, dim], nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class Discriminator(nn.Module):
    def __init__(self, dim: int, widths: Sequence[int]):
        super().__init__()
        self.net = _mlp([dim, *widths, 1], lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class GAN:
    """A trained generator with its normaliser; :meth:`sample` returns records in physical units."""

    generator: Generator
    normaliser: Normaliser
    losses: pd.DataFrame

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        dev = next(self.generator.parameters()).device
        with torch.no_grad():
            z = torch.randn(n, self.generator.noise, generator=g).to(dev)
            return self.normaliser.inverse(self.generator(z).double()).cpu().numpy()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())


def train_gan(cfg: PhysicsInformedConfig, data: PIData, progress: bool = False) -> GAN:
    """Physics-informed GAN (the paper's baseline, after Wang & Srikantha 2022): non-saturating GAN loss plus
    ``gan_eta`` R(G(z)) on the generator, on the same normalised records as the DDPMs."""
    from tqdm.auto import tqdm

    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    dim = len(data.columns)
    G = Generator(cfg.gan_noise, dim, cfg.gan_widths).to(dev)
    D = Discriminator(dim, tuple(reversed(cfg.gan_widths))).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    x = data.normaliser(torch.as_tensor(data.train, dtype=torch.float64)).float().to(dev)
    R = data.imbalance_fn(torch.float32)
    bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for _ in tqdm(range(cfg.gan_steps), desc="GAN", disable=not progress):
        real = x[torch.randint(len(x), (cfg.gan_batch,), generator=gen).to(dev)]
        noise = torch.randn(cfg.gan_batch, cfg.gan_noise, generator=gen).to(dev)
        fake = G(noise)
        d_real, d_fake = D(real), D(fake.detach())
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_gen = D(fake)
        adv = bce(d_gen, torch.ones_like(d_gen))
        phys = R(fake).mean().to(adv.dtype)
        loss_g = adv + cfg.gan_eta * phys
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        rows.append((loss_d.item(), adv.item(), phys.item()))
    G.eval()
    return GAN(
        G,
        data.normaliser,
        pd.DataFrame(rows, columns=["discriminator", "generator (adversarial)", "generator (physics R)"]),
    )
