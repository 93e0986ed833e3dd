"""Newton projection of samples onto the AC power-flow manifold (the constrained chapter's last step)."""

from __future__ import annotations

import numpy as np
import torch

from pfbook.methods.constrained.records import split_features
from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import bus_power, grid_tensors, nodal_mismatch
from pfbook.power.powerflow import DenseKernel, newton_power_flow


# ---------------------------------------------------------------------------------------- Newton projection
def _bus_roles(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, PV, PQ) bus indices: PV = buses with a generator other than the reference bus."""
    ref = grid.ref
    gen = np.unique(grid.gen_bus)
    pv = gen[gen != ref]
    pq = np.setdiff1d(np.arange(grid.n_bus), np.append(gen, ref))
    return np.array([ref]), pv, pq


def newton_projection(
    grid: "Grid | str", x, steps: int = 10, tol: float = 1e-10, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Project records onto the power-flow equations with batched Newton steps; returns (records, converged).

    The standard power-flow split is kept from the sample: p at PV and PQ buses, q at PQ buses, v at PV and
    reference buses, θ at the reference bus. Newton's method solves ΔP = 0 at non-reference buses and ΔQ = 0
    at PQ buses for θ (non-reference) and v (PQ), in float64 (the power-flow kernel's
    :func:`pfbook.power.powerflow.newton_power_flow`, analytic Jacobian); then the reference bus's p and q and
    the PV buses' q are recomputed from the solved voltages, so every nodal equation holds to the Newton
    tolerance (``tol``, p.u.). A sample whose Newton iteration does not converge in ``steps`` is returned
    unchanged, with ``converged`` False.
    """
    grid = load_grid(grid)
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = grid.n_bus
    gt = grid_tensors(grid, "cpu", torch.float64)
    ref, pv, pq = _bus_roles(grid)
    nonref = np.setdiff1d(np.arange(n), ref)
    kernel = DenseKernel.from_ybus(grid.Ybus)
    out, ok = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    for k in range(0, len(x), chunk):
        p, q, v, th = (a.clone() for a in split_features(x[k : k + chunk], n))
        newton_power_flow(kernel, v, th, p, q, nonref, pq, tol=tol, max_iter=steps)
        pc, qc = bus_power(gt, v, th)
        p[:, ref], q[:, ref], q[:, pv] = pc[:, ref], qc[:, ref], qc[:, pv]
        dp, dq = nodal_mismatch(gt, p, q, v, th)
        good = (torch.maximum(dp.abs().amax(1), dq.abs().amax(1)) < max(tol, 1e-9)) & torch.isfinite(v).all(1)
        good &= (v > 0).all(1)
        new = torch.cat([p, q, v, th], dim=1)
        out[k : k + chunk] = torch.where(good[:, None], new, x[k : k + chunk])
        ok[k : k + chunk] = good
    return out.numpy(), ok.numpy()
