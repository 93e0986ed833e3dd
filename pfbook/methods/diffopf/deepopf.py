"""DeepOPF, the baseline of the DiffOPF paper: an MLP regressor (p_d, q_d) -> (p_g, q_g) trained with MSE."""

from __future__ import annotations

import numpy as np
import torch

from pfbook.diffusion import Normaliser
from pfbook.methods.diffopf.config import DiffOPFConfig
from pfbook.methods.diffopf.data import OPFRecords


# ---------------------------------------------------------------------------------------- DeepOPF
class DeepOPF(torch.nn.Module):
    """The single-valued baseline: an MLP (p_d, q_d) -> (p_g, q_g) on standardised inputs and outputs."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, x_norm: Normaliser, y_norm: Normaliser):
        super().__init__()
        layers, w = [], n_in
        for _ in range(depth):
            layers += [torch.nn.Linear(w, width), torch.nn.ReLU()]
            w = width
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(w, n_out))
        self.x_norm, self.y_norm = x_norm, y_norm

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def predict(self, loads: np.ndarray) -> np.ndarray:
        z = self.x_norm(torch.as_tensor(loads, dtype=torch.float64)).float()
        return self.y_norm.inverse(self(z).double()).numpy()


def train_deepopf(cfg: DiffOPFConfig, data: OPFRecords) -> tuple[DeepOPF, np.ndarray]:
    """DeepOPF trained with MSE (Adam, minibatches of ``cfg.train.batch_size``); returns (model, loss per step)."""
    x, y = data.train[:, data.load_cols], data.train[:, data.gen_cols]
    xn, yn = Normaliser.standard(x), Normaliser.standard(y)
    torch.manual_seed(cfg.seed)
    net = DeepOPF(x.shape[1], y.shape[1], cfg.deepopf_width, cfg.deepopf_depth, xn, yn)
    X = xn(torch.as_tensor(x)).float()
    Y = yn(torch.as_tensor(y)).float()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.deepopf_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.deepopf_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = np.zeros(cfg.deepopf_steps)
    for s in range(cfg.deepopf_steps):
        idx = torch.randint(0, len(X), (min(cfg.train.batch_size, len(X)),), generator=gen)
        loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses[s] = loss.item()
    net.eval()
    return net, losses
