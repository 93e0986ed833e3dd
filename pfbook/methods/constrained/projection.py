"""Newton projection of samples onto the AC power-flow manifold (the constrained chapter's last step)."""
from __future__ import annotations


import numpy as np
import torch

from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import bus_power, grid_tensors, nodal_mismatch
from pfbook.methods.constrained.records import split_features



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
