r"""DiffOPF: OPF warm starts sampled from a diffusion prior (Hoseinpour & Dvorkin, seed 004), against DeepOPF.

The method composes the power-system layer with the diffusion core:

* **data** -- OPF records x_0 = (p_d, q_d, p_g, q_g) (loads and generators in the grid's order, per unit):
  loads x U(0.8, 1.0) with the power factor kept, linear cost coefficients x U(0.6, 1.4)
  (:func:`pfbook.power.datasets.ac_opf_dataset`); held-out test loads are a second dataset with another seed.
  ``<case>_api`` names the PJM-API-style variant: the case's loads raised by the factor of
  :func:`api_load_factor` (the largest multiple of 0.05 at which the AC-OPF still converges), so that
  generator and line limits bind;
* **prior** -- a DDPM (Algorithm 1) over x_0 with the MLP denoiser of the diffusion core;
* **conditional sampling** (Algorithm 3) -- y = (p_d, q_d) = A x_0 with A a selection matrix; at every reverse
  step x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0) (:class:`~pfbook.diffusion.ObservationGuidance`; the paper prints a minus
  sign, which moves A x̂_0 away from y: a typo), or the inpainting variant
  (:class:`~pfbook.diffusion.ReplacementGuidance`); 250 samples per load in one batch;
* **DeepOPF** -- an MLP regressor (p_d, q_d) -> (p_g, q_g) trained with MSE on the same records;
* **evaluation** -- each warm start is projected on the power-flow manifold by the load-flow problem (20)
  (:mod:`pfbook.power.loadflow`), then judged by eq. (21a-c): optimality gap against the test record's OPF cost
  (with that record's cost coefficients), setpoint error (the objective of (20)), voltage violation; Table I
  takes the best sample per metric and reports the mean and CVaR10% over test loads; Table II the sample
  complexity of eq. (16)-(19).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.config import check_profile, data_dir
from pfbook.diffusion import (ClampGuidance, Compose, DDIMSampler, DDPMSampler, DiffusionModel, Layout, MLPDenoiser, Normaliser,
                        ObservationGuidance, ReplacementGuidance, Schedule, TrainConfig, Trainer)
from pfbook.power.grids import Grid, load_grid
from pfbook.io import read_summaries, write_summary
from pfbook.power.loadflow import LoadFlowProblem

__all__ = ["DiffOPFConfig", "diffopf_grid", "api_load_factor", "OPFRecords", "load_records", "train_prior",
           "conditional_guidance", "sample_dispatch", "GridRun", "run_grid", "DeepOPF", "train_deepopf", "evaluate_warm_starts",
           "table_one", "table_two", "paper_table_one", "paper_table_two", "steps_tradeoff", "plot_marginals",
           "plot_tradeoff", "save_summary", "load_tables", "speed_across", "GRID_LABELS", "PROFILE_GRIDS"]

GRID_LABELS = {"case5": "PJM", "case5_api": "PJM-API", "case14": "IEEE 14-Bus", "case24_ieee_rts": "IEEE 24-Bus",
               "case118": "IEEE 118-Bus"}


# ---------------------------------------------------------------------------------------- configuration
#: Grids the chapter runs besides its main grid, per profile (its ``grids`` parameter overrides them); the other
#: profiles show other grids from their stored summaries (``runs/`` and ``book/results/``).
PROFILE_GRIDS = {"ci": (), "default": (),
                 "paper": ("case5", "case5_api", "case14", "case24_ieee_rts", "case118")}

#: Grids with more buses than this are judged on fewer test loads and draws in the ``default`` profile.
LARGE_GRID = 30
LARGE_GRID_DEFAULT = dict(n_test=10, n_draw=50, steps=4000, sweep_loads=5,
                          step_sweep=("DDPM", "DDIM 100", "DDIM 20", "DDIM 10"), loads_per_batch=10)
#: The denoiser output on grids of more than :data:`LARGE_GRID` buses, in every profile: ε̂ = sqrt(1-ᾱ_t) x_t + MLP
#: (on case118 it halves the best-of-50 optimality gap of a plain ε-network; on case5 the plain one samples as
#: well with 20 DDIM steps as with the 1000 of DDPM, the skip version does not).
LARGE_GRID_PREDICTION = "epsilon_skip"

@dataclass(frozen=True)
class DiffOPFConfig:
    """Settings of the DiffOPF chapter; :meth:`for_profile` builds one per profile (comments: the paper's value)."""

    grid: str = "case5"
    n_samples: int = 5000                        # training records (paper: 5000)
    n_test: int = 100                            # held-out test loads (paper: 100)
    load_range: tuple[float, float] = (0.8, 1.0)
    cost_range: tuple[float, float] = (0.6, 1.4)
    T: int = 1000                                # linear β schedule (DDPM defaults)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    width: int = 256                             # MLP denoiser (paper: not stated; seed 000 uses 500 x 6)
    depth: int = 4
    prediction: str = "epsilon"                  # denoiser output; grids above LARGE_GRID buses: "epsilon_skip"
    steps: int = 8000                            # optimiser steps
    batch_size: int = 500
    lr: float = 1e-3
    lr_decay_every: int = 2000
    lr_decay: float = 0.6
    ema_decay: float | None = 0.999
    n_draw: int = 250                            # samples per load (paper: 250)
    sampler: str = "DDIM 100"                    # "DDPM" (all T steps; paper) or "DDIM <steps>"
    guidance: str = "observation"                # "observation" (Alg. 3) or "replacement" (inpainting)
    guidance_scale: float = 1.0                  # λ in model space; 1 = projection onto A x̂_0 = y
    clip_x0: float | None = 0.1                  # x̂_0 clipped to the records' range widened by this share; None: off
    loads_per_batch: int = 20                    # test loads sampled together (20 x 250 = 5000 rows)
    deepopf_width: int = 256
    deepopf_depth: int = 3
    deepopf_steps: int = 3000
    deepopf_lr: float = 1e-3
    step_sweep: tuple[str, ...] = ("DDPM", "DDIM 100", "DDIM 50", "DDIM 20", "DDIM 10")
    sweep_loads: int = 8                         # test loads in the sampler-steps trade-off (one batch each)
    loadflow_workers: int | None = None          # processes for the CPU load-flow solves; None: one per CPU core
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def for_profile(cls, profile: str, grid: str = "case5", seed: int = 0, device: str = "cpu") -> "DiffOPFConfig":
        """The settings of ``profile`` for ``grid``. In the ``default`` profile a grid of more than
        :data:`LARGE_GRID` buses is judged on fewer loads and draws (see :data:`LARGE_GRID_DEFAULT`): its load-flow
        solves cost about 0.04 CPU-seconds each on 118 buses (sparse backend of :mod:`pfbook.power.loadflow`), and 25 000
        of them would add a quarter of an hour per grid to the book build."""
        base = replace(cls(), grid=grid, seed=seed, device=device)
        if diffopf_grid(grid).n_bus > LARGE_GRID:
            base = replace(base, prediction=LARGE_GRID_PREDICTION)
            if check_profile(profile) == "default":
                base = replace(base, **LARGE_GRID_DEFAULT)
        return {
            "ci": replace(base, n_samples=200, n_test=8, width=128, depth=3, steps=600, batch_size=128,
                          lr=2e-3, lr_decay_every=300, ema_decay=0.99, n_draw=40, sampler="DDIM 20",
                          deepopf_steps=400, step_sweep=("DDIM 50", "DDIM 10"), sweep_loads=4, loads_per_batch=8),
            "default": base,
            "paper": replace(base, width=500, depth=6, steps=150_000, lr=1e-4, lr_decay_every=15_000, ema_decay=None,
                             sampler="DDPM", deepopf_steps=20_000, sweep_loads=100),
        }[check_profile(profile)]

    def schedule(self) -> Schedule:
        return Schedule.linear(self.T, self.beta_start, self.beta_end)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, lr_decay_every=self.lr_decay_every,
                           lr_decay=self.lr_decay, ema_decay=self.ema_decay, seed=self.seed, device=self.device)

    def make_sampler(self, name: str | None = None):
        name = name or self.sampler
        if name == "DDPM":
            return DDPMSampler(self.schedule())
        if name.startswith("DDIM"):
            return DDIMSampler(self.schedule(), steps=int(name.split()[1]))
        raise ValueError(f"unknown sampler {name!r}; use 'DDPM' or 'DDIM <steps>'")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- grids and data
API_SUFFIX = "_api"


@functools.lru_cache(maxsize=8)
def api_load_factor(base: str, step: float = 0.05, limit: float = 4.0) -> float:
    """The largest multiple of ``step`` by which every load of ``base`` can be raised with the AC-OPF still
    converging: at that loading the generator and line limits bind (the PGLib "API" idea, reproduced here)."""
    from pfbook.power.opf import ACOPF

    g = load_grid(base)
    solver = ACOPF(g)
    nominal = solver.solve()
    k, best = 1, 1.0
    while 1.0 + k * step <= limit:
        f = 1.0 + k * step
        res = solver.solve(pd=g.pd * f, qd=g.qd * f, warm_start=nominal)
        if not res.success:
            break
        best, k = f, k + 1
    return round(best, 6)


def diffopf_grid(name: "str | Grid") -> Grid:
    """A grid by name; ``<case>_api`` is ``<case>`` with all loads raised by :func:`api_load_factor`."""
    if isinstance(name, Grid):
        return name
    if isinstance(name, str) and name.endswith(API_SUFFIX):
        base = load_grid(name[: -len(API_SUFFIX)])
        f = api_load_factor(base.name)
        return replace(base, name=name, pd=base.pd * f, qd=base.qd * f, meta={**base.meta, "api_load_factor": f})
    return load_grid(name)


@dataclass
class OPFRecords:
    """Training records x_0 = (p_d, q_d, p_g, q_g) and the held-out test records, with their layout."""

    grid: Grid
    train: np.ndarray                 # (n, 2 n_load + 2 n_gen)
    test: dict                        # arrays of the test dataset: pd, qd, pg, qg, cost, cost_factors, v, ...
    columns: list[str]
    n_load: int
    n_gen: int
    layout: Layout
    datasets: tuple

    @property
    def load_cols(self) -> slice:
        return slice(0, 2 * self.n_load)

    @property
    def gen_cols(self) -> slice:
        return slice(2 * self.n_load, 2 * self.n_load + 2 * self.n_gen)

    def test_loads(self) -> np.ndarray:
        return np.concatenate([self.test["pd"], self.test["qd"]], axis=1)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """(pd, qd, pg, qg) of records laid out as ``train``."""
        nl, ng = self.n_load, self.n_gen
        return x[..., :nl], x[..., nl:2 * nl], x[..., 2 * nl:2 * nl + ng], x[..., 2 * nl + ng:]


FEATURES = ("pd", "qd", "pg", "qg")


def load_records(cfg: DiffOPFConfig, progress: bool = False, out_dir: "str | Path | None" = None) -> OPFRecords:
    """The training dataset (seed ``cfg.seed``) and the test dataset (seed ``cfg.seed + 1``), generated once
    (in ``out_dir``, by default the data folder of :func:`pfbook.config.data_dir`)."""
    from pfbook.power.datasets import ac_opf_dataset

    g = diffopf_grid(cfg.grid)
    kw = dict(load_range=cfg.load_range, cost_range=cfg.cost_range, out_dir=out_dir or data_dir(), progress=progress)
    train = ac_opf_dataset(g, cfg.n_samples, seed=cfg.seed, **kw)
    test = ac_opf_dataset(g, cfg.n_test, seed=cfg.seed + 1, **kw)
    x, cols = train.features(FEATURES)
    return OPFRecords(grid=g, train=x, test=dict(test.arrays), columns=cols, n_load=g.n_load, n_gen=g.n_gen,
                      layout=Layout(features=tuple(cols), grid=g.name, shape=(len(cols),)), datasets=(train, test))


# ---------------------------------------------------------------------------------------- the prior and sampling
def train_prior(cfg: DiffOPFConfig, data: OPFRecords, progress: bool = False) -> DiffusionModel:
    """The DDPM prior p_θ(x_0) over the joint records (Algorithm 1), standard-normalised features."""
    torch.manual_seed(cfg.seed)
    net = MLPDenoiser(data.train.shape[1], width=cfg.width, depth=cfg.depth, prediction=cfg.prediction)
    trainer = Trainer(net, cfg.schedule(), data.train, cfg.train_config(), normaliser=Normaliser.standard(data.train),
                      layout=data.layout)
    trainer.train(progress=progress)
    return trainer.result()


def conditional_guidance(dm: DiffusionModel, data: OPFRecords, loads: np.ndarray, kind: str = "observation",
                         scale: float = 1.0, clip: float | None = None):
    """The guidance that conditions the prior on loads y = (p_d, q_d) (rows of ``loads``, one per sample).

    ``"observation"``: x̂_0' = x̂_0 + λ Aᵀ(y - A x̂_0) (Alg. 3, sign corrected) in model space;
    ``"replacement"``: the load entries of x̂_0 replaced by y and those of x_{t-1} re-noised (inpainting).
    ``clip`` (a share, e.g. 0.1) first clips x̂_0 into the training records' range widened by that share of it
    (the usual x̂_0 clipping of DDPM samplers): early in the reverse process x̂_0 = (x_t - sqrt(1-ᾱ_t) ε̂)/sqrt(ᾱ_t)
    divides the network's error by sqrt(ᾱ_t) ≈ 0.006, and on a grid with hundreds of features that error can
    throw a deterministic DDIM trajectory far off the data.
    """
    d = data.train.shape[1]
    pre = []
    if clip is not None:
        zt = dm.normaliser(torch.as_tensor(data.train, dtype=torch.float64))
        lo, hi = zt.min(0).values, zt.max(0).values
        pad = clip * (hi - lo)
        pre = [ClampGuidance((lo - pad).float(), (hi + pad).float())]
    m = 2 * data.n_load
    z = dm.normaliser(torch.as_tensor(np.pad(loads, ((0, 0), (0, d - m))), dtype=torch.float64))[:, :m].float()
    if kind == "observation":
        A = torch.zeros(m, d)
        A[torch.arange(m), torch.arange(m)] = 1.0
        return Compose(*pre, ObservationGuidance(A, z, scale=scale))
    if kind == "replacement":
        mask = torch.zeros(d, dtype=torch.bool)
        mask[:m] = True
        return Compose(*pre, ReplacementGuidance(mask, torch.nn.functional.pad(z, (0, d - m))))
    raise ValueError(f"unknown guidance {kind!r}; choose 'observation' or 'replacement'")


def sample_dispatch(cfg: DiffOPFConfig, dm: DiffusionModel, data: OPFRecords, loads: np.ndarray,
                    n_draw: int | None = None, sampler: str | None = None, guidance: str | None = None,
                    seed: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``n_draw`` dispatches (p_g, q_g) per load row of ``loads`` (k, 2 n_load): arrays (k, n_draw, n_gen) each,
    plus the seconds sampling took. Loads are sampled ``cfg.loads_per_batch`` at a time, all their draws in one batch."""
    n_draw = n_draw or cfg.n_draw
    smp = cfg.make_sampler(sampler)
    gen = torch.Generator(device=dm.device).manual_seed(cfg.seed if seed is None else seed)
    out, t0 = [], time.perf_counter()
    for k in range(0, len(loads), cfg.loads_per_batch):
        y = np.repeat(loads[k:k + cfg.loads_per_batch], n_draw, axis=0)
        guide = conditional_guidance(dm, data, y, guidance or cfg.guidance, cfg.guidance_scale, cfg.clip_x0)
        x = dm.sample(len(y), smp, guidance=guide, generator=gen).double().cpu().numpy()
        out.append(x.reshape(-1, n_draw, x.shape[1]))
    sec = time.perf_counter() - t0
    x = np.concatenate(out)
    _, _, pg, qg = data.split(x)
    return pg, qg, sec


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
    """DeepOPF trained with MSE (Adam, minibatches of ``cfg.batch_size``); returns (model, loss per step)."""
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
        idx = torch.randint(0, len(X), (min(cfg.batch_size, len(X)),), generator=gen)
        loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses[s] = loss.item()
    net.eval()
    return net, losses


# ---------------------------------------------------------------------------------------- evaluation (eq. 20-21)
def evaluate_warm_starts(grid: Grid, test: Mapping[str, np.ndarray], pg: np.ndarray, qg: np.ndarray,
                         loads: slice | np.ndarray | None = None, device: str = "cpu", **solve_kw) -> dict:
    """Solve (20) from every warm start and compute eq. (21a-c) against the test records.

    ``pg, qg``: (k, n, n_gen) warm starts for the first k test records (or those indexed by ``loads``).
    Returns arrays (k, n): ``cost`` ($/h, with the record's cost coefficients), ``gap_usd`` |c(p̃_g*) - c*|,
    ``gap_pct`` (% of c*), ``setpoint`` ||p̃_g* - p_g||² + ||q̃_g* - q_g||² (p.u.²), ``vviol`` (p.u.), and
    ``converged``; metrics of failed solves are NaN. Also ``seconds`` of the load-flow solves, ``lf`` the result.
    """
    k, n, ng = pg.shape
    idx = np.arange(k) if loads is None else np.arange(len(test["cost"]))[loads][:k]
    pd_ = np.repeat(test["pd"][idx], n, axis=0)
    qd_ = np.repeat(test["qd"][idx], n, axis=0)
    lf = LoadFlowProblem(grid, device).solve(pg.reshape(-1, ng), qg.reshape(-1, ng), pd_, qd_, **solve_kw)
    cf = np.repeat(test["cost_factors"][idx], n, axis=0)
    cost = grid.generation_cost(lf.pg, cf).reshape(k, n)
    cstar = test["cost"][idx][:, None]
    v = lf.v
    vviol = (np.linalg.norm(np.maximum(0, v - grid.vmax), axis=1) + np.linalg.norm(np.maximum(0, grid.vmin - v), axis=1))
    ok = lf.converged.reshape(k, n)
    nan = lambda a: np.where(ok, a, np.nan)
    return {"cost": nan(cost), "gap_usd": nan(np.abs(cost - cstar)), "gap_pct": nan(100 * np.abs(cost - cstar) / cstar),
            "setpoint": nan(lf.distance.reshape(k, n)), "vviol": nan(vviol.reshape(k, n)), "converged": ok,
            "cstar": cstar[:, 0], "seconds": lf.seconds, "lf": lf}


def _cvar(a: np.ndarray, q: float = 0.1) -> float:
    """Mean of the worst (largest) ``q`` share of ``a`` (at least one value)."""
    a = np.sort(a[np.isfinite(a)])[::-1]
    if len(a) == 0:
        return float("nan")
    return float(a[:max(1, int(math.ceil(q * len(a))))].mean())


def best_per_load(ev: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The best sample per load for each metric (minimum over converged samples; NaN if none converged)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {m: np.nanmin(ev[m], axis=1) for m in ("gap_usd", "gap_pct", "setpoint", "vviol")}


def table_one(results: Mapping[str, Mapping[str, np.ndarray]], grid_label: str = "") -> pd.DataFrame:
    """Table I: per solver, the mean and CVaR10% over test loads of the best sample's metrics (eq. 21a-c),
    with the share of load-flow solves that converged and the loads with no converged warm start."""
    rows = {}
    for solver, ev in results.items():
        b = best_per_load(ev)
        rows[(grid_label, solver)] = {
            ("Optimality gap [$]", "Mean"): np.nanmean(b["gap_usd"]), ("Optimality gap [$]", "CVaR10%"): _cvar(b["gap_usd"]),
            ("Optimality gap [%]", "Mean"): np.nanmean(b["gap_pct"]), ("Optimality gap [%]", "CVaR10%"): _cvar(b["gap_pct"]),
            ("Setpoint error [p.u.²]", "Mean"): np.nanmean(b["setpoint"]),
            ("Setpoint error [p.u.²]", "CVaR10%"): _cvar(b["setpoint"]),
            ("Voltage violation [p.u.]", "Mean"): np.nanmean(b["vviol"]),
            ("Voltage violation [p.u.]", "CVaR10%"): _cvar(b["vviol"]),
            ("Load flow", "converged share"): float(ev["converged"].mean()),
            ("Load flow", "loads without a solution"): int((~ev["converged"].any(1)).sum()),
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "solver"])
    return df


#: Table I of the paper (PGLib cases): (gap $, gap %, setpoint, voltage) x (mean, CVaR10%).
_PAPER_T1 = {
    ("PJM", "DiffOPF"): (8.0, 0.1, 46.1, 0.3, 0.000, 0.000, 0.132, 0.310),
    ("PJM", "DeepOPF"): (1091.3, 8.6, 4134.4, 33.5, 0.004, 0.012, 0.389, 0.680),
    ("PJM-API", "DiffOPF"): (504.0, 0.7, 1246.5, 1.9, 0.009, 0.019, 0.002, 0.022),
    ("PJM-API", "DeepOPF"): (1142.1, 1.7, 2873.2, 4.3, 0.044, 0.160, 0.264, 1.191),
    ("IEEE 14-Bus", "DiffOPF"): (3.4, 0.2, 13.3, 0.6, 0.000, 0.000, 0.002, 0.011),
    ("IEEE 14-Bus", "DeepOPF"): (4.6, 0.2, 15.5, 0.7, 0.000, 0.000, 0.004, 0.013),
    ("IEEE 24-Bus", "DiffOPF"): (1.8, 0.0, 5.7, 0.0, 0.000, 0.000, 0.004, 0.016),
    ("IEEE 24-Bus", "DeepOPF"): (290.3, 0.6, 718.8, 1.4, 0.000, 0.002, 0.017, 0.038),
    ("IEEE 118-Bus", "DiffOPF"): (95.3, 0.1, 378.1, 0.5, 0.000, 0.000, 0.007, 0.036),
    ("IEEE 118-Bus", "DeepOPF"): (8620.5, 10.9, 18333.4, 23.8, 0.350, 3.500, 1.087, 4.430),
}


def paper_table_one(grids: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table I in the layout of :func:`table_one` (rows for the labels of ``grids``)."""
    labels = None if grids is None else {GRID_LABELS.get(g, g) for g in grids}
    rows = {}
    for (case, solver), v in _PAPER_T1.items():
        if labels is not None and case not in labels:
            continue
        rows[(case, solver)] = {("Optimality gap [$]", "Mean"): v[0], ("Optimality gap [%]", "Mean"): v[1],
                                ("Optimality gap [$]", "CVaR10%"): v[2], ("Optimality gap [%]", "CVaR10%"): v[3],
                                ("Setpoint error [p.u.²]", "Mean"): v[4], ("Setpoint error [p.u.²]", "CVaR10%"): v[5],
                                ("Voltage violation [p.u.]", "Mean"): v[6], ("Voltage violation [p.u.]", "CVaR10%"): v[7]}
    order = pd.MultiIndex.from_tuples([(m, s) for m in ("Optimality gap [$]", "Optimality gap [%]",
                                                         "Setpoint error [p.u.²]", "Voltage violation [p.u.]")
                                       for s in ("Mean", "CVaR10%")])
    index = pd.MultiIndex.from_tuples(list(rows), names=["test case", "solver"]) if rows else \
        pd.MultiIndex.from_arrays([[], []], names=["test case", "solver"])
    return pd.DataFrame([[r[c] for c in order] for r in rows.values()], index=index, columns=order, dtype=float)


def table_two(ev: Mapping[str, np.ndarray], eps: Sequence[float] = (0.5, 1, 2, 5),
              deltas: Sequence[float] = (0.9, 0.95, 0.99), grid_label: str = "") -> pd.DataFrame:
    """Table II: p_ε, the bound M ≥ log(1-δ)/log(1-p_ε) (eq. 19) and the empirical N_ε per δ.

    A sample is ε-close when its load-flow cost is within ε % of the test record's OPF cost, |c - c*| ≤ ε c*/100
    (failed solves are not close). p_ε is the mean over loads of the share of close samples (Sec. VI-D).
    N_ε(δ) is the empirical counterpart of M: the smallest N such that a share δ of the test loads has a close
    sample among its first N draws (``>n`` when that share is never reached within the n draws).
    """
    gap = np.where(ev["converged"], ev["gap_pct"], np.inf)
    n = gap.shape[1]
    rows = {}
    for e in eps:
        close = gap <= e
        p = float(close.mean(1).mean())
        first = np.where(close.any(1), close.argmax(1) + 1, np.inf)
        row = {("", "p_ε"): p}
        for d in deltas:
            M = math.ceil(math.log(1 - d) / math.log(1 - p)) if 0 < p < 1 else (1 if p >= 1 else math.inf)
            q = np.quantile(first, d, method="inverted_cdf")
            row[(f"δ={d}", "M")] = M
            row[(f"δ={d}", "N_ε")] = int(q) if np.isfinite(q) else f">{n}"
        rows[(grid_label, e)] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "ε %"])
    return df


#: Table II of the paper: ε -> (p_ε, M and N_ε for δ = 0.9, 0.95, 0.99).
_PAPER_T2 = {
    "PJM 5-Bus": {0.5: (0.07, 32, 28, 41, 27, 63, 45), 1: (0.49, 4, 4, 5, 4, 7, 5), 2: (0.77, 2, 2, 3, 3, 4, 4),
                  5: (0.94, 1, 1, 1, 1, 1, 1)},
    "IEEE 118-Bus": {0.5: (0.02, 135, 1, 175, 3, 269, 2), 1: (0.03, 71, 3, 93, 3, 142, 4),
                     2: (0.05, 42, 2, 54, 3, 83, 4), 5: (0.17, 13, 1, 17, 5, 26, 2)},
}


def paper_table_two() -> pd.DataFrame:
    rows = {}
    for case, d in _PAPER_T2.items():
        for e, v in d.items():
            rows[(case, e)] = {("", "p_ε"): v[0], ("δ=0.9", "M"): v[1], ("δ=0.9", "N_ε"): v[2], ("δ=0.95", "M"): v[3],
                               ("δ=0.95", "N_ε"): v[4], ("δ=0.99", "M"): v[5], ("δ=0.99", "N_ε"): v[6]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index = pd.MultiIndex.from_tuples(df.index, names=["test case", "ε %"])
    return df


#: Differences below these do not count against a sampler in :func:`steps_tradeoff`.
WITHIN_FLOOR = {"gap % (mean)": 1e-3, "setpoint (mean)": 1e-6, "vviol (mean)": 1e-4}


def steps_tradeoff(cfg: DiffOPFConfig, dm: DiffusionModel, data: OPFRecords, samplers: Sequence[str] | None = None,
                   n_loads: int | None = None, tolerance: float = 0.10) -> pd.DataFrame:
    """Table I's DiffOPF row and the time per 250-sample batch for each sampler of ``samplers`` (default
    ``cfg.step_sweep``) on the first ``n_loads`` test loads, each load's draws one batch.

    ``within`` marks the samplers whose mean optimality gap (%), setpoint error and voltage violation are each
    no more than ``tolerance`` (relative) worse than the first sampler's (the 1000-step reference when the list
    starts with "DDPM"), up to the floors of :data:`WITHIN_FLOOR` below which a difference does not matter
    (0.001 % of the cost, 1e-6 p.u.², 1e-4 p.u.)."""
    n_loads = n_loads or cfg.sweep_loads
    loads = data.test_loads()[:n_loads]
    one = replace(cfg, loads_per_batch=1)          # each load's draws are one batch: the timing of one request
    rows, ref = {}, None
    for name in samplers or cfg.step_sweep:
        pg, qg, sec = sample_dispatch(one, dm, data, loads, sampler=name)
        ev = evaluate_warm_starts(data.grid, data.test, pg, qg, device=cfg.device, workers=cfg.loadflow_workers)
        b = best_per_load(ev)
        row = {"network calls": cfg.make_sampler(name).n_steps, "gap % (mean)": np.nanmean(b["gap_pct"]),
               "setpoint (mean)": np.nanmean(b["setpoint"]), "vviol (mean)": np.nanmean(b["vviol"]),
               "sampling s per load": sec / n_loads, "load flow s per load": ev["seconds"] / n_loads}
        row["s per 250-sample batch"] = (row["sampling s per load"] + row["load flow s per load"]) * 250 / cfg.n_draw
        row["ms per sample"] = 1000 * row["s per 250-sample batch"] / 250
        if ref is None:
            ref = row
        row["within"] = all(row[k] <= ref[k] * (1 + tolerance) + floor for k, floor in WITHIN_FLOOR.items())
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------------------- one grid, end to end
@dataclass
class GridRun:
    """Everything :func:`run_grid` computed for one grid."""

    cfg: DiffOPFConfig
    data: OPFRecords
    prior: DiffusionModel
    deepopf: DeepOPF
    pg: np.ndarray                  # DiffOPF warm starts (k, n_draw, n_gen)
    qg: np.ndarray
    pg_deep: np.ndarray             # DeepOPF warm starts (k, n_gen)
    qg_deep: np.ndarray
    ev: dict                        # evaluate_warm_starts of DiffOPF
    ev_deep: dict
    seconds: dict

    @property
    def label(self) -> str:
        return GRID_LABELS.get(self.cfg.grid, self.cfg.grid)

    def table_one(self) -> pd.DataFrame:
        return table_one({"DiffOPF": self.ev, "DeepOPF": self.ev_deep}, self.label)


def run_grid(cfg: DiffOPFConfig, progress: bool = False) -> GridRun:
    """Data, the prior, DeepOPF, 250 (``cfg.n_draw``) warm starts per test load, and their load-flow solves."""
    sec = {}
    t = time.perf_counter()
    data = load_records(cfg, progress=progress)
    sec["data"] = time.perf_counter() - t
    t = time.perf_counter()
    prior = train_prior(cfg, data, progress=progress)
    sec["train prior"] = time.perf_counter() - t
    t = time.perf_counter()
    deep, _ = train_deepopf(cfg, data)
    sec["train DeepOPF"] = time.perf_counter() - t
    loads = data.test_loads()
    pg, qg, sec["sampling"] = sample_dispatch(cfg, prior, data, loads)
    y = deep.predict(loads)
    pg_d, qg_d = y[:, :data.n_gen], y[:, data.n_gen:]
    ev = evaluate_warm_starts(data.grid, data.test, pg, qg, device=cfg.device, workers=cfg.loadflow_workers)
    ev_d = evaluate_warm_starts(data.grid, data.test, pg_d[:, None], qg_d[:, None], device=cfg.device,
                                workers=cfg.loadflow_workers)
    sec["load flow (DiffOPF)"], sec["load flow (DeepOPF)"] = ev["seconds"], ev_d["seconds"]
    return GridRun(cfg, data, prior, deep, pg, qg, pg_d, qg_d, ev, ev_d, sec)


# ---------------------------------------------------------------------------------------- figures
def plot_marginals(data: OPFRecords, pg_samples: np.ndarray, pg_deep: np.ndarray, load_index: int,
                   gens: Sequence[int] | None = None, n_history: int = 300):
    """Fig. 3: marginals of the active dispatch for one test load: the historical records with the nearest loads
    (grey), DiffOPF's samples (blue) and DeepOPF's point (red)."""
    import matplotlib.pyplot as plt

    g = data.grid
    pd_tr, qd_tr, pg_tr, _ = data.split(data.train)
    y = data.test_loads()[load_index]
    near = np.argsort(np.linalg.norm(np.concatenate([pd_tr, qd_tr], 1) - y, axis=1))[:n_history]
    if gens is None:
        gens = [j for j in np.argsort(-pg_tr.std(0)) if pg_tr[:, j].std() > 1e-4][:4]
    fig, axes = plt.subplots(1, len(gens), figsize=(3.0 * len(gens), 2.6), squeeze=False)
    for ax, j in zip(axes[0], gens):
        lo = min(pg_tr[near, j].min(), pg_samples[:, j].min())
        hi = max(pg_tr[near, j].max(), pg_samples[:, j].max())
        edges = np.linspace(lo, hi + 1e-9, 30)
        ax.hist(pg_tr[near, j], bins=edges, density=True, color="0.6", alpha=0.7, label="history (nearest loads)")
        ax.hist(pg_samples[:, j], bins=edges, density=True, histtype="step", lw=1.8, color="tab:blue", label="DiffOPF")
        ax.axvline(pg_deep[j], color="tab:red", lw=2, label="DeepOPF")
        ax.set_title(f"generator {j + 1} (bus {g.bus_ids[g.gen_bus[j]]})", fontsize=9)
        ax.set_xlabel("p_g (p.u.)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_tradeoff(ev: Mapping[str, np.ndarray], ev_deep: Mapping[str, np.ndarray], load_index: int):
    """Fig. 4: optimality gap vs voltage violation over one load's samples, the best picks and DeepOPF marked."""
    import matplotlib.pyplot as plt

    gap, vv = ev["gap_pct"][load_index], ev["vviol"][load_index]
    ok = np.isfinite(gap) & np.isfinite(vv)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.scatter(gap[ok], vv[ok], s=10, alpha=0.6, color="tab:blue", label=f"DiffOPF ({ok.sum()} solved warm starts)")
    if ok.any():
        cand = np.flatnonzero(ok)
        i = cand[np.lexsort((vv[cand], gap[cand]))[0]]     # smallest gap (ties: smaller violation)
        j = cand[np.lexsort((gap[cand], vv[cand]))[0]]     # smallest violation (ties: smaller gap)
        ax.scatter(gap[i], vv[i], marker="*", s=220, color="tab:red", label="min optimality gap", zorder=3)
        ax.scatter(gap[j], vv[j], marker="D", s=80, color="tab:green", label="min voltage violation", zorder=3)
    dg, dv = ev_deep["gap_pct"][load_index, 0], ev_deep["vviol"][load_index, 0]
    if np.isfinite(dg):
        ax.scatter(dg, dv, marker="X", s=140, color="gold", edgecolor="k", label="DeepOPF", zorder=3)
    ax.set_xlabel("optimality gap (%)")
    ax.set_ylabel("voltage violation (p.u.)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- results
SUMMARY_NAME = "diffopf-summary-{profile}.json"


def save_summary(folder: "str | Path", tables: Mapping[str, pd.DataFrame], cfg: DiffOPFConfig, profile: str,
                 extra: dict | None = None) -> Path:
    """Write the tables with the configuration to ``folder/diffopf-summary-<profile>.json`` (atomically)."""
    return write_summary(Path(folder) / SUMMARY_NAME.format(profile=check_profile(profile)), cfg, profile,
                         {"grid": cfg.grid}, tables={k: v.reset_index().astype(object).to_dict(orient="split")
                                                     for k, v in tables.items()}, **(extra or {}))


def _frame(split: Mapping) -> pd.DataFrame:
    """A table written by :func:`save_summary` back as a DataFrame (two-level columns when it had them)."""
    cols = [tuple(c) if isinstance(c, list) else c for c in split["columns"]]
    df = pd.DataFrame(split["data"], columns=pd.MultiIndex.from_tuples(cols) if cols and isinstance(cols[0], tuple)
                      else cols)
    return df


def speed_across(*folders: "str | Path", profile: str = "default") -> pd.DataFrame:
    """Per grid of the stored summaries (first folder first), the sampler with the fewest network calls among
    those within tolerance of the reference in the summary's speed table, and its seconds per 250-sample batch:
    sampling, load flows and the two together (CPU or GPU, as the run was made; ``device`` says which)."""
    rows = {}
    for obj in read_summaries(folders, SUMMARY_NAME, [check_profile(profile)], what="DiffOPF summary"):
        if "steps" in obj.get("tables", {}):
            st = _frame(obj["tables"]["steps"]).set_index("index")
            ok = st[st["within"].astype(bool)]
            name = ok.index[int(np.argmin(ok["network calls"].to_numpy()))]
            r, n = st.loc[name], obj["config"]["n_draw"]
            rows[GRID_LABELS.get(obj["grid"], obj["grid"])] = {
                "reference": st.index[0], "fewest within": name, "sampling s": r["sampling s per load"] * 250 / n,
                "load flow s": r["load flow s per load"] * 250 / n, "s per 250-sample batch": r["s per 250-sample batch"],
                "device": obj["config"]["device"], "run": obj.get("created", "")[:10]}
    return pd.DataFrame.from_dict(rows, orient="index")


#: the index levels of the tables a summary holds
TABLE_INDEX = {"table1": ("test case", "solver"), "table2": ("test case", "ε %")}


def load_tables(*folders: "str | Path", profile: str = "default", table: str = "table1") -> pd.DataFrame:
    """Rows of ``table`` ("table1" or "table2") from every ``<folder>/<grid>/diffopf-summary-<profile>.json``.

    ``folders`` are searched in order and the first row found for an index (test case, solver) or (test case, ε %)
    wins, so a fresh run in ``runs/`` shadows the published one in ``book/results/``. A column ``run`` holds each
    row's date.
    """
    if table not in TABLE_INDEX:
        raise ValueError(f"unknown table {table!r}; choose one of {sorted(TABLE_INDEX)}")
    names = TABLE_INDEX[table]
    rows, seen = [], set()
    for folder in folders:
        for obj in read_summaries([folder], SUMMARY_NAME, [check_profile(profile)], what="DiffOPF summary"):
            try:
                df = _frame(obj["tables"][table])
                df = df.set_index([c for c in df.columns if (c[0] if isinstance(c, tuple) else c) in names])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"the {obj['grid']} summary in {folder} is not a DiffOPF summary with {table} "
                                 f"({err!r}); delete it or rerun the chapter for its grid to rewrite it") from None
            df.index.names = list(names)
            keep = [k for k in df.index if k not in seen]
            seen.update(keep)
            rows.append(df.loc[keep].assign(run=obj.get("created", "")[:10]))
    if not rows:
        return pd.DataFrame()
    return pd.concat(rows)

