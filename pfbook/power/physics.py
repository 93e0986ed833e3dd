"""Batched, differentiable AC power-flow physics in torch.

All functions take voltages and powers with any leading batch shape ``(..., n_bus)`` on CPU or CUDA, in
float32 or float64, and are differentiable with autograd. Quantities are per unit on the grid's base
MVA, angles in radians, buses in the grid's order (see :mod:`pfbook.power.grids`).

The complex nodal mismatch is

    S_i = (P_i + j Q_i) - V_i * conj(sum_j Y_ij V_j)

with ``P_i + j Q_i`` the net injection at bus i (generation minus demand) and ``Y`` the full bus admittance
matrix: branches as pi models with taps and phase shifts, and bus shunts (MATPOWER manual, eq. 3.2-3.8).
It is evaluated branch by branch with ``index_add`` rather than a dense ``Y @ V`` so that its cost grows
with the number of branches, and in real arithmetic so that every dtype/device torch supports works.
This is the differentiable form of S(V) = V ∘ conj(Y V); its derivatives and the Newton power flow live in
the power-flow kernel, :mod:`pfbook.power.powerflow` (complex128 from Y, dense or sparse), and the tests check
that the two evaluations of S(V) agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pfbook.power.grids import Grid, load_grid


@dataclass(frozen=True)
class GridTensors:
    """The parts of a :class:`~pfbook.power.grids.Grid` the physics needs, as tensors on one device/dtype."""

    n_bus: int
    f: torch.Tensor
    t: torch.Tensor
    yff: tuple[torch.Tensor, torch.Tensor]  # (real, imag) of each branch admittance term
    yft: tuple[torch.Tensor, torch.Tensor]
    ytf: tuple[torch.Tensor, torch.Tensor]
    ytt: tuple[torch.Tensor, torch.Tensor]
    ysh: tuple[torch.Tensor, torch.Tensor]
    gen_bus: torch.Tensor
    load_bus: torch.Tensor
    vmin: torch.Tensor
    vmax: torch.Tensor
    pmin: torch.Tensor
    pmax: torch.Tensor
    qmin: torch.Tensor
    qmax: torch.Tensor
    rate_a: torch.Tensor  # inf where unlimited

    @classmethod
    def from_grid(
        cls, grid: Grid, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
    ) -> "GridTensors":
        def T(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        def C(a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return T(a.real), T(a.imag)

        def I(a: np.ndarray) -> torch.Tensor:  # noqa: E743  (index tensors; I as in the equations)
            return torch.as_tensor(a, dtype=torch.long, device=device)

        yff, yft, ytf, ytt = grid.branch_admittances
        return cls(
            n_bus=grid.n_bus,
            f=I(grid.f),
            t=I(grid.t),
            yff=C(yff),
            yft=C(yft),
            ytf=C(ytf),
            ytt=C(ytt),
            ysh=C(grid.y_shunt),
            gen_bus=I(grid.gen_bus),
            load_bus=I(grid.load_bus),
            vmin=T(grid.vmin),
            vmax=T(grid.vmax),
            pmin=T(grid.pmin),
            pmax=T(grid.pmax),
            qmin=T(grid.qmin),
            qmax=T(grid.qmax),
            rate_a=T(grid.rate_a),
        )


_CACHE: dict[tuple[int, str, torch.dtype], tuple[Grid, GridTensors]] = {}


def grid_tensors(
    grid: "Grid | GridTensors | str", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
) -> GridTensors:
    """The tensors of ``grid`` on ``device``/``dtype`` (cached per grid object)."""
    if isinstance(grid, GridTensors):
        return grid
    grid = load_grid(grid)
    key = (id(grid), str(torch.device(device)), dtype)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not grid:
        hit = (grid, GridTensors.from_grid(grid, device, dtype))
        _CACHE[key] = hit
    return hit[1]


def _gt_like(grid, x: torch.Tensor) -> GridTensors:
    if isinstance(grid, GridTensors):
        return grid
    return grid_tensors(grid, x.device, x.dtype)


def _cmul(a: tuple[torch.Tensor, torch.Tensor], br: torch.Tensor, bi: torch.Tensor):
    ar, ai = a
    return ar * br - ai * bi, ar * bi + ai * br


class BranchCurrents(NamedTuple):
    if_r: torch.Tensor
    if_i: torch.Tensor
    it_r: torch.Tensor
    it_i: torch.Tensor


def _branch_currents(gt: GridTensors, vr: torch.Tensor, vi: torch.Tensor) -> BranchCurrents:
    vfr, vfi = vr[..., gt.f], vi[..., gt.f]
    vtr, vti = vr[..., gt.t], vi[..., gt.t]
    a_r, a_i = _cmul(gt.yff, vfr, vfi)
    b_r, b_i = _cmul(gt.yft, vtr, vti)
    c_r, c_i = _cmul(gt.ytf, vfr, vfi)
    d_r, d_i = _cmul(gt.ytt, vtr, vti)
    return BranchCurrents(a_r + b_r, a_i + b_i, c_r + d_r, c_i + d_i)


def bus_power(grid, v: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Power flowing out of each bus into the network, ``V conj(Y V)``, as (P, Q)."""
    gt = _gt_like(grid, v)
    vr, vi = v * torch.cos(theta), v * torch.sin(theta)
    br = _branch_currents(gt, vr, vi)
    ir, ii = _cmul(gt.ysh, vr, vi)
    ir = ir.index_add(-1, gt.f, br.if_r).index_add(-1, gt.t, br.it_r)
    ii = ii.index_add(-1, gt.f, br.if_i).index_add(-1, gt.t, br.it_i)
    return vr * ir + vi * ii, vi * ir - vr * ii


def nodal_mismatch(
    grid, p: torch.Tensor, q: torch.Tensor, v: torch.Tensor, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Active and reactive parts of ``S_i = (p_i + j q_i) - V_i conj(sum_j Y_ij V_j)`` (p.u.).

    ``p, q`` are net injections (generation minus demand); all inputs have shape ``(..., n_bus)``.
    ``grid`` is a :class:`Grid`, a grid name, or :class:`GridTensors`.
    """
    pc, qc = bus_power(grid, v, theta)
    return p - pc, q - qc


def injections(
    grid, pg: torch.Tensor, qg: torch.Tensor, pd: torch.Tensor, qd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Net bus injections from generator outputs ``(..., n_gen)`` and load demand ``(..., n_load)``."""
    gt = _gt_like(grid, pg)
    shape = pg.shape[:-1] + (gt.n_bus,)
    zero = pg.new_zeros(shape)
    p = zero.index_add(-1, gt.gen_bus, pg).index_add(-1, gt.load_bus, -pd)
    q = zero.index_add(-1, gt.gen_bus, qg).index_add(-1, gt.load_bus, -qd)
    return p, q


def mismatch_magnitude(dp: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
    """``|S_i|`` from its parts (with a tiny floor so the gradient exists at zero)."""
    return torch.sqrt(dp * dp + dq * dq + torch.finfo(dp.dtype).tiny)


class BranchFlows(NamedTuple):
    pf: torch.Tensor
    qf: torch.Tensor
    pt: torch.Tensor
    qt: torch.Tensor

    @property
    def sf(self) -> torch.Tensor:
        return torch.sqrt(self.pf**2 + self.qf**2)

    @property
    def st(self) -> torch.Tensor:
        return torch.sqrt(self.pt**2 + self.qt**2)


def branch_flows(grid, v: torch.Tensor, theta: torch.Tensor) -> BranchFlows:
    """Complex power entering each branch at its from and to ends, ``S_f = V_f conj(I_f)`` (p.u.)."""
    gt = _gt_like(grid, v)
    vr, vi = v * torch.cos(theta), v * torch.sin(theta)
    br = _branch_currents(gt, vr, vi)
    vfr, vfi, vtr, vti = vr[..., gt.f], vi[..., gt.f], vr[..., gt.t], vi[..., gt.t]
    return BranchFlows(
        vfr * br.if_r + vfi * br.if_i,
        vfi * br.if_r - vfr * br.if_i,
        vtr * br.it_r + vti * br.it_i,
        vti * br.it_r - vtr * br.it_i,
    )


def limit_violations(
    grid,
    v: torch.Tensor,
    theta: torch.Tensor | None = None,
    pg: torch.Tensor | None = None,
    qg: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Non-negative amounts by which inequality limits are exceeded (p.u.); zero where respected.

    Keys: ``v`` (per bus, below vmin or above vmax), ``pg`` and ``qg`` (per generator, when given), and
    ``branch`` (per branch, the larger of the two ends' |S| over the MVA rating; when ``theta`` is given).
    """
    gt = _gt_like(grid, v)
    out = {"v": torch.relu(gt.vmin - v) + torch.relu(v - gt.vmax)}
    if pg is not None:
        out["pg"] = torch.relu(gt.pmin - pg) + torch.relu(pg - gt.pmax)
    if qg is not None:
        out["qg"] = torch.relu(gt.qmin - qg) + torch.relu(qg - gt.qmax)
    if theta is not None:
        fl = branch_flows(gt, v, theta)
        out["branch"] = torch.relu(torch.maximum(fl.sf, fl.st) - gt.rate_a)  # rate inf: never violated
    return out
