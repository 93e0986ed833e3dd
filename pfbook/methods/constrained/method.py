"""Domain-constrained diffusion for power-flow records (Hoseinpour & Dvorkin, seed 000).

The method composes the power-system layer (:mod:`pfbook.power.physics`) with the diffusion core
(:mod:`pfbook.diffusion`):

* **data** -- AC-OPF records x_0 = (p, q, v, θ) at every bus, loads scaled U(0.8, 1.0) of nominal
  (:func:`pfbook.power.datasets.ac_opf_dataset`), per unit and radians, in the grid's bus order;
* **model** -- the appendix's MLP ε_θ(x_t, t) with the linear β schedule (T = 1000, β 1e-4 -> 0.02), trained
  with Algorithm 1 (:class:`ConstrainedConfig` holds the sizes per profile);
* **guided sampling** (Algorithm 3) -- at every reverse step Tweedie's x̂_0 (eq. 6) is moved down the gradient
  of R_H(x̂_0) = ||H(x̂_0)||² (eq. 15), H the active and reactive nodal balance with shunts (eq. 8a-8b),
  computed in per unit on the *de-normalised* x̂_0 (:func:`guidance`); the posterior-mean step then uses the
  corrected x̂_0. λ_t is a schedule (:func:`lambda_schedule`);
* **beyond the paper** -- :func:`newton_projection`, a few batched Newton steps of the power-flow equations from a
  sample, which makes it satisfy them to 1e-8 p.u.; :func:`evaluate`, the comparison table the paper lacks.

The helpers the primer chapter already has (record layout and loading, mismatch of records, R_H and H in physical
units) come from :mod:`pfbook.methods.constrained.records`, the layer both chapters share.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.config import PROFILES, check_profile, published_results
from pfbook.diffusion import (DDIMSampler, DDPMSampler, DiffusionModel, GradientGuidance, MLPDenoiser, Normaliser,
                        Sampler, Schedule, TrainConfig, Trainer, ramp)
from pfbook.power.grids import Grid, load_grid
from pfbook.io import summary_table, write_summary
from pfbook.power.physics import bus_power, grid_tensors, nodal_mismatch
from pfbook.methods.constrained.records import FEATURES, imbalance_residual, load_data, mismatch, mismatch_constraint, split_features

__all__ = ["ConstrainedConfig", "lambda_schedule", "guidance", "make_guidance", "sweep", "train_model", "sampler", "draw",
           "curvature", "newton_projection", "within_limits", "feature_w1", "w1_standard_error", "bus_mismatch", "evaluate", "save_summary",
           "load_summaries", "published_results", "load_data", "plot_joint", "plot_violation_per_bus", "FEATURES"]


@dataclass(frozen=True)
class ConstrainedConfig:
    """Settings of the constrained-diffusion chapter; :meth:`for_profile` builds one per profile.

    Training length is counted the paper's way, in epochs of ``batches_per_epoch`` batches: the paper's 5000
    records in batches of 500 make 10 batches an epoch, so its 15000 epochs are 150 000 optimiser steps and
    its "lr x 0.6 every 1500 steps" is read as every 1500 *epochs* (15 000 optimiser steps), the reading under
    which the decay happens ten times in a run rather than a hundred (0.6^100 would stop training early).
    """

    grid: str = "case5"
    n_samples: int = 5000                        # AC-OPF records
    load_range: tuple[float, float] = (0.8, 1.0)
    test_fraction: float = 0.2                   # records held out to judge samples against
    T: int = 1000                                # linear β from beta_start to beta_end (paper, appendix)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    width: int = 256                             # MLP width (paper: 500)
    depth: int = 4                               # hidden layers (paper: 6)
    prediction: str = "epsilon_skip"             # ε̂ = sqrt(1-ᾱ_t) x_t + MLP (see the notes); "epsilon": the plain MLP
    epochs: int = 600                            # paper: 15000
    batches_per_epoch: int = 10                  # 5000 records / batch 500
    batch_size: int = 500
    lr: float = 1e-3                             # paper: 1e-4 (Adam)
    lr_decay_every_epochs: int = 150             # paper: 1500
    lr_decay: float = 0.6
    ema_decay: float | None = 0.999              # paper: none
    n_generate: int = 2000                       # samples drawn per variant
    main_sampler: str = "DDPM"                   # the sampler of the main comparison ("DDPM" or "DDIM <steps>")
    guidance_scale: float = 1.5                  # c_max: λ_t = c_t / L, L the curvature of R_H (stable for c < 2)
    guidance_power: float = 0.0                  # c_t = c_min + (c_max - c_min)(1 - t/T)^power; 0: constant
    guidance_min: float = 0.0
    guidance_inner_steps: int = 20               # gradient steps per reverse step
    guidance_max_step: float | None = 1.0        # cap of each sample's guidance step norm (model space)
    sweep_scales: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 1.9)
    sweep_samplers: tuple[str, ...] = ("DDIM 100", "DDIM 50")
    newton_steps: int = 10
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def for_profile(cls, profile: str, grid: str = "case5", seed: int = 0,
                    device: str = "cpu") -> "ConstrainedConfig":
        base = replace(cls(), grid=grid, seed=seed, device=device)
        return {
            "ci": replace(base, n_samples=200, width=128, depth=3, epochs=120, lr=2e-3, batch_size=128,
                          lr_decay_every_epochs=40, ema_decay=0.99, n_generate=300, main_sampler="DDIM 50",
                          guidance_inner_steps=10,
                          sweep_scales=(0.0, 0.5, 1.5), sweep_samplers=("DDIM 50",)),
            "default": base,
            "paper": replace(base, width=500, depth=6, epochs=15_000, lr=1e-4, lr_decay_every_epochs=1500,
                             ema_decay=None, n_generate=5000, sweep_samplers=("DDPM", "DDIM 100", "DDIM 50")),
        }[check_profile(profile)]

    @property
    def steps(self) -> int:
        """Optimiser steps: epochs x batches per epoch."""
        return self.epochs * self.batches_per_epoch

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           lr_decay_every=self.lr_decay_every_epochs * self.batches_per_epoch,
                           lr_decay=self.lr_decay, ema_decay=self.ema_decay, seed=self.seed, device=self.device)

    def schedule(self) -> Schedule:
        return Schedule.linear(self.T, self.beta_start, self.beta_end)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- model and guidance
def train_model(cfg: ConstrainedConfig, data, progress: bool = False) -> tuple[DiffusionModel, Trainer]:
    """The appendix MLP trained on ``data.train`` (Algorithm 1) with a standard normaliser; returns (model, trainer)."""
    normaliser = Normaliser.standard(data.train)
    torch.manual_seed(cfg.seed)
    net = MLPDenoiser(len(data.columns), width=cfg.width, depth=cfg.depth, prediction=cfg.prediction)
    trainer = Trainer(net, cfg.schedule(), data.train, cfg.train_config(), normaliser=normaliser, layout=data.layout)
    trainer.train(progress=progress)
    return trainer.result(), trainer


def lambda_schedule(cfg: ConstrainedConfig, scale: float | None = None):
    """c_t of ``cfg`` (``scale`` replaces c_max): a constant when ``guidance_power`` is 0, else a ramp to t = 0.

    c_t is λ_t in units of the step 1/L that the curvature of R_H allows (:func:`curvature`); λ_t = c_t / L.
    """
    c = cfg.guidance_scale if scale is None else float(scale)
    if cfg.guidance_power == 0 and cfg.guidance_min == 0:
        return c
    return ramp(c, cfg.guidance_power, min(cfg.guidance_min, c))


def curvature(grid: Grid, normaliser: Normaliser, records: np.ndarray, n: int = 20) -> float:
    """L = 2 σ_max(J)², the largest curvature of R_H = ||H||² in model space, median over ``n`` real records.

    J is the Jacobian of H = (ΔP, ΔQ) with respect to the normalised record. A gradient step λ ∇R_H is stable
    for λ < 2/L; L differs by orders of magnitude between grids (line impedances, per-unit bases), so the chapter
    sets λ_t = c_t / L and the reader chooses c_t in (0, 2) once for every grid.
    """
    H = mismatch_constraint(grid, normaliser)
    z = normaliser(torch.as_tensor(np.asarray(records[:n]), dtype=torch.float64))
    Ls = [2 * torch.linalg.matrix_norm(torch.autograd.functional.jacobian(lambda u: H(u[None])[0], zi), ord=2).item()
          ** 2 for zi in z]
    return float(np.median(Ls))


def guidance(grid: Grid, normaliser: Normaliser, scale=1.0, L: float = 1.0, max_step: float | None = 1.0,
             inner_steps: int = 1, device: str = "cpu") -> GradientGuidance | None:
    """Algorithm 3's correction x̂_0' = x̂_0 - λ_t ∇ R_H(x̂_0), R_H = Σ_b ΔP_b² + ΔQ_b² in p.u.² on de-normalised x̂_0.

    ``scale`` is c_t (a number or ``(t, T) -> c_t``) and λ_t = c_t / ``L`` (see :func:`curvature`; ``L = 1``
    makes ``scale`` λ itself). ``inner_steps`` repeats the step with the gradient re-evaluated (the residual is
    ill-conditioned: one step fixes the stiff P-θ directions, the flat ones need several). ``max_step`` caps a
    sample's step norm in model space, which keeps the early, blurred x̂_0 (far from feasible, steep R_H) from
    being thrown away. Returns ``None`` for a scale of 0 (unguided).
    """
    if not callable(scale) and float(scale) == 0.0:
        return None
    lam = (lambda t, T: scale(t, T) / L) if callable(scale) else float(scale) / L
    return GradientGuidance(imbalance_residual(grid, normaliser, device=device), scale=lam, max_step=max_step,
                            inner_steps=inner_steps)


def sampler(name: str, schedule: Schedule) -> Sampler:
    """``"DDPM"`` (all T steps) or ``"DDIM s"`` (η = 0 on s evenly spaced steps)."""
    if name == "DDPM":
        return DDPMSampler(schedule)
    if name.startswith("DDIM"):
        return DDIMSampler(schedule, steps=int(name.split()[1]))
    raise ValueError(f"unknown sampler {name!r}; use 'DDPM' or 'DDIM <steps>'")


def draw(dm: DiffusionModel, n: int, sampler_: Sampler, guide=None, seed: int = 0) -> tuple[np.ndarray, float]:
    """``n`` samples in physical units (float64 NumPy) and the seconds they took."""
    gen = torch.Generator(device=dm.device).manual_seed(seed)
    t0 = time.perf_counter()
    x = dm.sample(n, sampler_, guidance=guide, generator=gen).double().cpu().numpy()
    return x, time.perf_counter() - t0


def make_guidance(cfg: ConstrainedConfig, grid: Grid, normaliser: Normaliser, L: float,
                  scale: float | None = None) -> GradientGuidance | None:
    """:func:`guidance` with the chapter's settings (``scale`` replaces c_max of ``cfg``)."""
    return guidance(grid, normaliser, lambda_schedule(cfg, scale), L=L, max_step=cfg.guidance_max_step,
                    inner_steps=cfg.guidance_inner_steps, device=cfg.device)


def sweep(cfg: ConstrainedConfig, dm: DiffusionModel, grid: Grid, L: float, reference: np.ndarray,
          scales: Sequence[float] | None = None, samplers: Sequence[str] | None = None,
          done: Mapping[tuple[str, float], tuple[np.ndarray, float]] | None = None) -> pd.DataFrame:
    """Fidelity, feasibility and time for every (sampler, c) pair: the :func:`evaluate` columns, one row each.

    ``done`` holds samples already drawn, keyed by (sampler, c), with their seconds; they are judged, not redrawn.
    """
    done = dict(done or {})
    rows = []
    for sname in samplers or cfg.sweep_samplers:
        smp = sampler(sname, cfg.schedule())
        for c in scales if scales is not None else cfg.sweep_scales:
            if (sname, c) not in done:
                done[(sname, c)] = draw(dm, cfg.n_generate, smp, make_guidance(cfg, grid, dm.normaliser, L, c),
                                        seed=cfg.seed)
            x, sec = done[(sname, c)]
            row = evaluate(grid, {"x": x}, reference, seconds={"x": sec}, load_range=cfg.load_range)
            rows.append(row.assign(sampler=sname, c=c, **{"network calls": smp.n_steps}))
    return pd.concat(rows).set_index(["sampler", "c"])


# ---------------------------------------------------------------------------------------- Newton projection
def _bus_roles(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, PV, PQ) bus indices: PV = buses with a generator other than the reference bus."""
    ref = grid.ref
    gen = np.unique(grid.gen_bus)
    pv = gen[gen != ref]
    pq = np.setdiff1d(np.arange(grid.n_bus), np.append(gen, ref))
    return np.array([ref]), pv, pq


def newton_projection(grid: "Grid | str", x, steps: int = 10, tol: float = 1e-10,
                      chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Project records onto the power-flow equations with batched Newton steps; returns (records, converged).

    The standard power-flow split is kept from the sample: p at PV and PQ buses, q at PQ buses, v at PV and
    reference buses, θ at the reference bus. Newton's method solves ΔP = 0 at non-reference buses and ΔQ = 0
    at PQ buses for θ (non-reference) and v (PQ), in float64, Jacobian by forward-mode autodiff; then the
    reference bus's p and q and the PV buses' q are recomputed from the solved voltages, so every nodal
    equation holds to the Newton tolerance (``tol``, p.u.). A sample whose Newton iteration does not converge
    in ``steps`` is returned unchanged, with ``converged`` False.
    """
    grid = load_grid(grid)
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = grid.n_bus
    gt = grid_tensors(grid, "cpu", torch.float64)
    ref, pv, pq = _bus_roles(grid)
    nonref = np.setdiff1d(np.arange(n), ref)
    E_th = torch.zeros(n, len(nonref), dtype=torch.float64)
    E_th[nonref, np.arange(len(nonref))] = 1.0
    E_v = torch.zeros(n, len(pq), dtype=torch.float64)
    E_v[pq, np.arange(len(pq))] = 1.0
    keep_th, keep_v = 1.0 - E_th.sum(1), 1.0 - E_v.sum(1)
    nr_t, pq_t = torch.as_tensor(nonref), torch.as_tensor(pq)

    def F(u, p, q, v0, th0):
        th = th0 * keep_th + E_th @ u[:len(nonref)]
        v = v0 * keep_v + E_v @ u[len(nonref):]
        dp, dq = nodal_mismatch(gt, p, q, v, th)
        return torch.cat([dp[nr_t], dq[pq_t]])

    jac = torch.func.vmap(torch.func.jacfwd(F))
    f_batch = torch.func.vmap(F)
    out, ok = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    for k in range(0, len(x), chunk):
        p, q, v, th = (a.clone() for a in split_features(x[k:k + chunk], n))
        u = torch.cat([th[:, nonref], v[:, pq]], dim=1)
        for _ in range(steps):
            r = f_batch(u, p, q, v, th)
            if bool((r.abs().amax(1) < tol).all()):
                break
            du = torch.linalg.solve(jac(u, p, q, v, th), -r.unsqueeze(-1)).squeeze(-1)
            u = u + torch.nan_to_num(du, nan=0.0, posinf=0.0, neginf=0.0)
        th = th * keep_th + u[:, :len(nonref)] @ E_th.T
        v = v * keep_v + u[:, len(nonref):] @ E_v.T
        pc, qc = bus_power(gt, v, th)
        p[:, ref], q[:, ref], q[:, pv] = pc[:, ref], qc[:, ref], qc[:, pv]
        dp, dq = nodal_mismatch(gt, p, q, v, th)
        good = (torch.maximum(dp.abs().amax(1), dq.abs().amax(1)) < max(tol, 1e-9)) & torch.isfinite(v).all(1)
        good &= (v > 0).all(1)
        new = torch.cat([p, q, v, th], dim=1)
        out[k:k + chunk] = torch.where(good[:, None], new, x[k:k + chunk])
        ok[k:k + chunk] = good
    return out.numpy(), ok.numpy()


# ---------------------------------------------------------------------------------------- evaluation
def within_limits(grid: Grid, x: np.ndarray, load_range: tuple[float, float] = (0.8, 1.0),
                  tol: float = 1e-4) -> np.ndarray:
    """Per record: voltages within [vmin, vmax] and injections a generator could make, all within ``tol`` p.u.

    A sample carries net injections, not generator outputs. At a generator bus the output is p + pd, with pd
    the bus's demand, which lies in ``load_range`` x nominal; the record passes if some demand in that range
    puts the summed outputs of the bus's generators within their summed [Pmin, Pmax] and [Qmin, Qmax].
    """
    p, q, v, _ = split_features(np.asarray(x), grid.n_bus)
    ok = ((v >= grid.vmin - tol) & (v <= grid.vmax + tol)).all(1)
    lo_f, hi_f = load_range
    for inj, dem, gmin, gmax in ((p, grid.pd, grid.pmin, grid.pmax), (q, grid.qd, grid.qmin, grid.qmax)):
        smin, smax = np.zeros(grid.n_bus), np.zeros(grid.n_bus)
        np.add.at(smin, grid.gen_bus, gmin)
        np.add.at(smax, grid.gen_bus, gmax)
        d_lo, d_hi = np.minimum(lo_f * dem, hi_f * dem), np.maximum(lo_f * dem, hi_f * dem)
        b = np.unique(grid.gen_bus)
        # exists d in [d_lo, d_hi] with smin <= inj + d <= smax  <=>  smin - d_hi <= inj <= smax - d_lo
        ok &= ((inj[:, b] >= smin[b] - d_hi[b] - tol) & (inj[:, b] <= smax[b] - d_lo[b] + tol)).all(1)
    return ok


#: features whose real standard deviation is below this (p.u. or rad) sit at a limit or are fixed (the reference
#: angle); distribution distances in units of that deviation would measure nothing but rounding, so they are left
#: out of W1/σ and the sliced distance (their errors show in the limits and mismatch columns)
VARYING_STD = 1e-4


def _varying(reference: np.ndarray) -> np.ndarray:
    return reference.std(0) > VARYING_STD


def feature_w1(samples: Mapping[str, np.ndarray], reference: np.ndarray,
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """1-Wasserstein distance of every feature to ``reference`` in units of its std (NaN: not varying, see VARYING_STD)."""
    from scipy.stats import wasserstein_distance

    keep = _varying(reference)
    std = reference.std(0)
    rows = {name: [wasserstein_distance(x[:, j], reference[:, j]) / std[j] if keep[j] else np.nan
                   for j in range(reference.shape[1])] for name, x in samples.items()}
    return pd.DataFrame(rows, index=list(columns) if columns is not None else None)


def w1_standard_error(x: np.ndarray, reference: np.ndarray, n_boot: int = 20, seed: int = 0) -> float:
    """Bootstrap standard error of the mean W1/σ of samples ``x`` against ``reference``: the scale below which two
    sample sets' distances to the data cannot be told apart (both ``x`` and ``reference`` are resampled)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        xb, rb = x[rng.integers(0, len(x), len(x))], reference[rng.integers(0, len(reference), len(reference))]
        values.append(np.nanmean(feature_w1({"x": xb}, rb)["x"]))
    return float(np.std(values, ddof=1))


def bus_mismatch(grid: Grid, samples: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean and 99th percentile of |ΔP| and |ΔQ| (p.u.) per bus, for each set of samples."""
    out = {}
    for name, x in samples.items():
        dp, dq = (a.abs().numpy() for a in mismatch(grid, x))
        out[name] = pd.DataFrame({"mean |ΔP|": dp.mean(0), "p99 |ΔP|": np.quantile(dp, 0.99, axis=0),
                                  "mean |ΔQ|": dq.mean(0), "p99 |ΔQ|": np.quantile(dq, 0.99, axis=0)},
                                 index=pd.Index(grid.bus_ids, name="bus"))
    return pd.concat(out, axis=1, names=["samples", "statistic"])


def _sliced_w(x: np.ndarray, reference: np.ndarray, seed: int = 0) -> float:
    from pfbook.evaluation.distances import sliced_wasserstein

    keep, std = _varying(reference), reference.std(0)
    mu = reference.mean(0)
    return sliced_wasserstein((x[:, keep] - mu[keep]) / std[keep], (reference[:, keep] - mu[keep]) / std[keep],
                              seed=seed)


def evaluate(grid: Grid, samples: Mapping[str, np.ndarray], reference: np.ndarray, train: np.ndarray | None = None,
             seconds: Mapping[str, float] | None = None, load_range: tuple[float, float] = (0.8, 1.0),
             tol: float = 1e-3) -> pd.DataFrame:
    """The comparison table: one row per set of samples, all judged against the held-out ``reference``.

    Columns: mean per-feature W1/σ and sliced Wasserstein (both in units of the reference's std per feature);
    mean and 99th percentile of |ΔP| and |ΔQ| over buses and samples (p.u.); the share of samples whose largest
    mismatch is below ``tol`` p.u.; the share within voltage and generator limits (:func:`within_limits`);
    seconds to draw them. With ``train`` the first row is the training records themselves, the real-vs-real
    scale of the distances (sampling noise, not model error).
    """
    sets = ({"real (training records)": train} if train is not None else {}) | dict(samples)
    seconds = seconds or {}
    rows = {}
    for name, x in sets.items():
        dp, dq = (a.abs().numpy() for a in mismatch(grid, x))
        worst = np.maximum(dp.max(1), dq.max(1))
        rows[name] = {"W1/σ": float(np.nanmean(feature_w1({"x": x}, reference)["x"])), "sliced W/σ": _sliced_w(x, reference),
                      "mean |ΔP|": dp.mean(), "p99 |ΔP|": np.quantile(dp, 0.99),
                      "mean |ΔQ|": dq.mean(), "p99 |ΔQ|": np.quantile(dq, 0.99),
                      f"share max|ΔS|<{tol:g}": float((worst < tol).mean()),
                      "share within limits": float(within_limits(grid, x, load_range).mean()),
                      "seconds": seconds.get(name, np.nan)}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------------------- results across grids
SUMMARY_NAME = "constrained-summary-{profile}.json"


def save_summary(folder: "str | Path", table: pd.DataFrame, cfg: ConstrainedConfig, profile: str,
                 extra: dict | None = None) -> Path:
    """Write ``table`` with its configuration to ``folder/constrained-summary-<profile>.json`` (atomically).

    One file per profile, so a ``ci`` smoke run never overwrites the results of a ``default`` or ``paper`` run.
    """
    return write_summary(Path(folder) / SUMMARY_NAME.format(profile=check_profile(profile)), cfg, profile,
                         {"grid": cfg.grid}, table=table.to_dict(orient="index"), **(extra or {}))


def load_summaries(*folders: "str | Path", profiles: Sequence[str] | None = None) -> pd.DataFrame:
    """Every ``<folder>/<grid>/constrained-summary-<profile>.json`` as one table indexed by (grid, profile, samples).

    ``folders`` are searched in order and the first summary found for a (grid, profile) wins, so a fresh run in
    ``runs/`` shadows the published one in ``book/results/``. ``profiles`` keeps only those profiles (default: all).
    """
    return summary_table(folders, SUMMARY_NAME, [check_profile(p) for p in (profiles or PROFILES)], "samples")


# ---------------------------------------------------------------------------------------- figures (Figs. 5 and 6)
def plot_joint(arrays: Mapping[str, np.ndarray], grid: Grid, buses: Sequence[int], max_points: int = 1500):
    """(p_b, q_b) per bus, one panel each (Fig. 5): points coloured by a Gaussian KDE of their own set's density."""
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    n = grid.n_bus
    fig, axes = plt.subplots(len(arrays), len(buses), figsize=(2.6 * len(buses), 2.4 * len(arrays)), squeeze=False)
    for i, (label, x) in enumerate(arrays.items()):
        for j, b in enumerate(buses):
            pq = x[:max_points, [b, n + b]].T
            try:
                dens = gaussian_kde(pq)(pq)
            except (np.linalg.LinAlgError, ValueError):     # a point mass (a bus at a limit) has no density
                dens = np.ones(pq.shape[1])
            ax = axes[i][j]
            ax.scatter(pq[0], pq[1], c=dens, s=3, cmap="viridis")
            ax.set_title(f"{label}, bus {grid.bus_ids[b]}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(arrays) - 1:
                ax.set_xlabel("p (p.u.)", fontsize=8)
            if j == 0:
                ax.set_ylabel("q (p.u.)", fontsize=8)
    for j in range(len(buses)):                               # one scale per bus: the real data's
        col = [axes[i][j] for i in range(len(arrays))]
        lims = col[0].get_xlim(), col[0].get_ylim()
        for ax in col[1:]:
            ax.set_xlim(lims[0]), ax.set_ylim(lims[1])
    fig.tight_layout()
    return fig


def plot_violation_per_bus(grid: Grid, arrays: Mapping[str, np.ndarray], buses: Sequence[int], floor: float = 1e-10,
                           bins: int = 30):
    """Histograms of the active-balance violation |ΔP_b| per bus on a log axis, one panel per bus (Fig. 6)."""
    import matplotlib.pyplot as plt

    dps = {label: np.log10(np.maximum(mismatch(grid, x)[0].abs().numpy(), floor)) for label, x in arrays.items()}
    allv = np.concatenate([d[:, buses].ravel() for d in dps.values()])
    edges = np.linspace(allv.min(), allv.max() + 1e-9, bins + 1)
    fig, axes = plt.subplots(1, len(buses), figsize=(2.6 * len(buses), 2.4), squeeze=False, sharex=True)
    for ax, b in zip(axes[0], buses):
        for label, d in dps.items():
            ax.hist(d[:, b], bins=edges, histtype="step", lw=1.4, label=label)
        ax.set_title(f"bus {grid.bus_ids[b]}", fontsize=8)
        ax.set_xlabel("log10 |ΔP| (p.u.)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("samples")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
