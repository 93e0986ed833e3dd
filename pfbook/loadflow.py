r"""The load-flow problem of DiffOPF (Hoseinpour & Dvorkin, eq. 20), solved batched in torch.

Given a warm start ``(p_g, q_g)`` (a dispatch proposed by a learned solver) and the loads, find the closest
dispatch on the AC power-flow manifold::

    minimise   ||p̃_g - p_g||² + ||q̃_g - q_g||²
    over       p̃_g, q̃_g, v, θ
    subject to the nodal power balance at every bus (eq. 1b-1e; shunts included), θ_ref = 0,

with no inequality constraints (voltage violations are measured afterwards, eq. 21c) and the voltages
started flat (v = 1, θ = 0), as the paper prescribes.

**How it is solved.** With multipliers μ = (μ_P, μ_Q) of the balance C g̃ - d = S(x) (S the power leaving each
bus into the network, x = (θ of the non-reference buses, v of all buses), C the generator-to-bus
incidence), stationarity in g̃ gives g̃ = g + Cᵀμ, so at a bus b with n_b generators
μ_b = (S_b(x) + d_b - Σ_{g at b} g_g) / n_b: the multipliers of generator buses are explicit functions of x and
the generator variables drop out. What is left is the square system in (x, μ_N), N the buses without a
generator::

    J(x)ᵀ μ(x, μ_N) = 0          (stationarity in x, J = ∂S/∂x)
    S_N(x) + d_N    = 0          (balance where nobody can adjust)

which is Newton's method on the KKT conditions of (20) in reduced form. Its Jacobian is the symmetric
``[[K + J_Gᵀ D⁻¹ J_G, J_Nᵀ], [J_N, 0]]`` with K = Σ_i μ_i ∇²S_i (MATPOWER's ``d2Sbus_dV2``, here batched and
dense) and D the generator count per bus.

Newton's method needs a start in its basin. From the flat start the linearisation is nearly singular along a
uniform change of every voltage magnitude (at θ = 0 only line charging responds to it), and a Gauss-Newton step
runs away along it. So the iteration starts in three stages: (i) a standard Newton power flow from the flat start
(generator buses PV at |V| = 1, the warm start's active injections, the reference bus slack), a point on the
power-flow manifold; (ii) Levenberg-Marquardt on the same least squares with the fixed balances as penalised
residuals of growing weight (monotone: a step is taken only if it lowers the cost), which also estimates μ_N;
(iii) full Newton steps on the KKT system (quadratic
convergence) with a backtracking search on the KKT residual norm. Everything runs in float64, in chunks of
warm starts, on CPU or CUDA. A warm start whose KKT residual does not fall below ``tol`` within ``max_iter``
iterations is reported as failed (:attr:`LoadFlowResult.converged`), never silently kept.

:func:`reference_solve` solves the same problem with Ipopt in the full space (all four variable groups,
all 2 n_bus balance equations written branch by branch with :func:`pfbook.physics.nodal_mismatch`, a quasi-
Newton Hessian): an independent formulation, algorithm and code path to check the batched solver against.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .grids import Grid, load_grid
from .physics import grid_tensors, nodal_mismatch

__all__ = ["LoadFlowProblem", "LoadFlowResult", "solve_load_flow", "reference_solve", "compare_with_reference", "dsbus_dv", "d2sbus_dv2"]


# ---------------------------------------------------------------------------------------- derivatives
def dsbus_dv(Y: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S, ∂S/∂θ, ∂S/∂|V|) of S = V ⊙ conj(Y V), batched over V (B, n); MATPOWER's ``dSbus_dV`` (polar)."""
    I = V @ Y.T
    Vn = V / V.abs()
    YV = Y * V[:, None, :]
    dVa = 1j * V[:, :, None] * (torch.diag_embed(I) - YV).conj()
    dVm = V[:, :, None] * (Y * Vn[:, None, :]).conj() + torch.diag_embed(I.conj() * Vn)
    return V * I.conj(), dVa, dVm


def d2sbus_dv2(Y: torch.Tensor, V: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Σ_i lam_i ∇²S_i with respect to (θ, |V|), complex (B, 2n, 2n); MATPOWER's ``d2Sbus_dV2``, batched.

    The real part for real ``lam`` is the Hessian of lamᵀ Re S, the imaginary part that of lamᵀ Im S.
    """
    I = V @ Y.T
    lamV = lam * V
    C = lamV[:, :, None] * (Y * V[:, None, :]).conj()
    D = Y.conj().T[None] * V[:, None, :]
    E = V.conj()[:, :, None] * (D * lam[:, None, :] - torch.diag_embed((D @ lam[:, :, None]).squeeze(-1)))
    F = C - torch.diag_embed(lamV * I.conj())
    G = (1.0 / V.abs())
    Gaa = E + F
    Gva = 1j * G[:, :, None] * (E - F)
    Gvv = G[:, :, None] * (C + C.transpose(1, 2)) * G[:, None, :]
    top = torch.cat([Gaa, Gva.transpose(1, 2)], dim=2)
    bottom = torch.cat([Gva, Gvv], dim=2)
    return torch.cat([top, bottom], dim=1)


def _where(mask: torch.Tensor, a, b):
    """``torch.where`` over rows of (nested tuples of) batch-first tensors."""
    if isinstance(a, tuple):
        return tuple(_where(mask, u, w) for u, w in zip(a, b))
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)


# ---------------------------------------------------------------------------------------- result
@dataclass
class LoadFlowResult:
    """Solutions of (20) for a batch of warm starts (NumPy, float64; p.u. and radians, the grid's orders)."""

    pg: np.ndarray            # p̃_g* (B, n_gen)
    qg: np.ndarray            # q̃_g* (B, n_gen)
    v: np.ndarray             # |V|* (B, n_bus)
    theta: np.ndarray         # θ* (B, n_bus), reference bus at 0
    converged: np.ndarray     # (B,) KKT residual below tol
    iterations: np.ndarray    # (B,) iterations taken
    residual: np.ndarray      # (B,) final max |KKT residual|
    distance: np.ndarray      # (B,) objective (20a): ||p̃_g - p_g||² + ||q̃_g - q_g||²  (p.u.²)
    balance: np.ndarray       # (B,) max nodal mismatch of the solution (p.u.), from pfbook.physics
    seconds: float

    @property
    def n_failed(self) -> int:
        return int((~self.converged).sum())

    def __repr__(self) -> str:
        return (f"LoadFlowResult({len(self.converged)} warm starts, {self.n_failed} failed, "
                f"median {np.median(self.iterations):.0f} iterations, {self.seconds:.2f} s)")


# ---------------------------------------------------------------------------------------- solver
class LoadFlowProblem:
    """Problem (20) for one grid: build once, :meth:`solve` any number of warm starts.

    ``device``: where the Newton iterations run ("cpu" or "cuda"); all arithmetic is float64.
    """

    def __init__(self, grid: "Grid | str", device: "str | torch.device" = "cpu"):
        self.grid = g = load_grid(grid)
        self.device = torch.device(device)
        n = self.n = g.n_bus
        dev, f64 = self.device, torch.float64
        self.Y = torch.as_tensor(g.Ybus.toarray(), dtype=torch.complex128, device=dev)
        self.ref = g.ref
        self.nonref = torch.as_tensor(np.setdiff1d(np.arange(n), [g.ref]), device=dev)
        counts = np.bincount(g.gen_bus, minlength=n).astype(float)
        self.gen_buses = np.flatnonzero(counts > 0)
        self.free_buses = np.flatnonzero(counts == 0)              # N: no generator, balance fixed
        self.count = torch.as_tensor(counts, dtype=f64, device=dev)
        self.gen_bus = torch.as_tensor(g.gen_bus, device=dev)
        self.load_bus = torch.as_tensor(g.load_bus, device=dev)
        # rows of S (2n: P then Q) and columns of x (θ non-ref, then |V| all)
        self.rows_G = torch.as_tensor(np.r_[self.gen_buses, n + self.gen_buses], device=dev)
        self.rows_N = torch.as_tensor(np.r_[self.free_buses, n + self.free_buses], device=dev)
        self.cols = torch.as_tensor(np.r_[np.setdiff1d(np.arange(n), [g.ref]), n + np.arange(n)], device=dev)
        self.n_x = 2 * n - 1
        self.n_mu = 2 * len(self.free_buses)
        self.inv_count = torch.zeros(2 * n, dtype=f64, device=dev)
        self.inv_count[self.rows_G] = 1.0 / self.count.repeat(2)[self.rows_G]

    # ------------------------------------------------------------------ pieces
    def _voltage(self, x: torch.Tensor) -> torch.Tensor:
        B, n = len(x), self.n
        th = x.new_zeros(B, n)
        th[:, self.nonref] = x[:, :n - 1]
        return torch.polar(x[:, n - 1:], th)

    def _bus_target(self, pg, qg, pd, qd) -> torch.Tensor:
        """Cg - d per bus, (B, 2n): what the warm start and the loads would inject."""
        B, n = len(pg), self.n
        p = pg.new_zeros(B, n).index_add(1, self.gen_bus, pg).index_add(1, self.load_bus, -pd)
        q = qg.new_zeros(B, n).index_add(1, self.gen_bus, qg).index_add(1, self.load_bus, -qd)
        return torch.cat([p, q], dim=1)

    def _parts(self, x, mu_N, target):
        """S (B, 2n), J (B, 2n, n_x), full μ (B, 2n), KKT residual F (B, n_x + n_mu)."""
        V = self._voltage(x)
        S, dVa, dVm = dsbus_dv(self.Y, V)
        Jc = torch.cat([dVa, dVm], dim=2)[:, :, self.cols]
        J = torch.cat([Jc.real, Jc.imag], dim=1)
        S = torch.cat([S.real, S.imag], dim=1)
        mu = (S - target) * self.inv_count
        mu[:, self.rows_N] = mu_N
        F = torch.cat([(J.transpose(1, 2) @ mu[:, :, None]).squeeze(-1), S[:, self.rows_N] - target[:, self.rows_N]],
                      dim=1)
        return V, S, J, mu, F

    def _newton_matrix(self, V, J, mu, full: bool, delta: torch.Tensor | None = None) -> torch.Tensor:
        JG = J[:, self.rows_G]
        H = JG.transpose(1, 2) @ (JG * self.inv_count[self.rows_G][None, :, None])
        if delta is not None:
            H = H + delta[:, None, None] * torch.eye(self.n_x, dtype=H.dtype, device=H.device)
        if full:
            n = self.n
            # d2Sbus is linear in lam: Re H(μ_P) + Im H(μ_Q) = Re H(μ_P - j μ_Q), one call
            K = d2sbus_dv2(self.Y, V, torch.complex(mu[:, :n], -mu[:, n:])).real[:, self.cols][:, :, self.cols]
            H = H + K
        JN = J[:, self.rows_N]
        B, m = len(J), self.n_mu
        top = torch.cat([H, JN.transpose(1, 2)], dim=2)
        bottom = torch.cat([JN, J.new_zeros(B, m, m)], dim=2)
        return torch.cat([top, bottom], dim=1)

    def _power_flow_start(self, target: torch.Tensor, iters: int = 10) -> torch.Tensor:
        """x from a standard Newton power flow started flat: generator buses PV at |V| = 1, the reference bus
        slack, active injections of the warm start elsewhere. A point on the power-flow manifold near the flat
        start, from which the KKT iteration starts (from the flat start itself a Gauss-Newton step runs away
        along the nearly singular direction of a uniform voltage change)."""
        B, n = len(target), self.n
        x = torch.cat([target.new_zeros(B, n - 1), target.new_ones(B, n)], dim=1)
        rows = torch.as_tensor(np.r_[np.setdiff1d(np.arange(n), [self.ref]), n + self.free_buses], device=x.device)
        cols = torch.as_tensor(np.r_[np.arange(n - 1), n - 1 + self.free_buses], device=x.device)
        for _ in range(iters):
            S, dVa, dVm = dsbus_dv(self.Y, self._voltage(x))
            Jc = torch.cat([dVa, dVm], dim=2)[:, :, self.cols]
            J = torch.cat([Jc.real, Jc.imag], dim=1)[:, rows][:, :, cols]
            r = (torch.cat([S.real, S.imag], dim=1) - target)[:, rows]
            if bool((r.abs().amax(1) < 1e-10).all()):
                break
            dx, info = torch.linalg.solve_ex(J, -r.unsqueeze(-1))
            dx = torch.nan_to_num(dx.squeeze(-1), nan=0.0, posinf=0.0, neginf=0.0)
            x[:, cols] += dx
        return x

    # ------------------------------------------------------------------ solve
    def _levenberg_marquardt(self, x, target, iters: int, weights):
        """Levenberg-Marquardt on the penalised least squares ½ Σ_G r_b²/n_b + ½ w Σ_N r_b², r = S(x) - target.

        Monotone (a step is taken only if it lowers the cost; the damping adapts per warm start), so it brings
        every warm start from the power-flow start into the basin of the KKT Newton iteration. Returns x and the
        multiplier estimate μ_N = w r_N of the penalty problem.
        """
        def evaluate(xx, rows=None):
            S, dVa, dVm = dsbus_dv(self.Y, self._voltage(xx))
            r = torch.cat([S.real, S.imag], dim=1) - (target if rows is None else target[rows])
            return r, 0.5 * (w * r * r).sum(1), dVa, dVm

        lam = torch.full((len(x),), 1e-3, dtype=x.dtype, device=x.device)
        eye = torch.eye(self.n_x, dtype=x.dtype, device=x.device)
        for weight in weights:
            w = self.inv_count.clone()
            w[self.rows_N] = weight
            r, cost, dVa, dVm = evaluate(x)
            active = torch.ones(len(x), dtype=torch.bool, device=x.device)
            for _ in range(iters):
                idx = torch.nonzero(active).squeeze(1)
                if len(idx) == 0:
                    break
                Jc = torch.cat([dVa[idx], dVm[idx]], dim=2)[:, :, self.cols]
                J = torch.cat([Jc.real, Jc.imag], dim=1)
                JW = J * w[None, :, None]
                A = J.transpose(1, 2) @ JW
                grad = (JW.transpose(1, 2) @ r[idx][:, :, None]).squeeze(-1)
                d = A.diagonal(dim1=1, dim2=2)
                li = lam[idx]
                M = A + li[:, None, None] * (torch.diag_embed(d) + 1e-9 * eye)
                dx, info = torch.linalg.solve_ex(M, -grad.unsqueeze(-1))
                dx = torch.nan_to_num(dx.squeeze(-1), nan=0.0, posinf=0.0, neginf=0.0)
                xn = x[idx] + dx
                rn, cn, dVan, dVmn = evaluate(xn, idx)
                c0 = cost[idx]
                ok = torch.isfinite(cn) & (cn < c0)
                x[idx] = torch.where(ok[:, None], xn, x[idx])
                r[idx] = torch.where(ok[:, None], rn, r[idx])
                cost[idx] = torch.where(ok, cn, c0)
                dVa[idx], dVm[idx] = _where(ok, dVan, dVa[idx]), _where(ok, dVmn, dVm[idx])
                lam[idx] = torch.where(ok, (li * 0.3).clamp(min=1e-9), li * 10)
                # a warm start is done with this weight once its cost stalls (or its damping explodes)
                stalled = (ok & (c0 - cn <= 1e-10 * c0)) | (lam[idx] > 1e10)
                active[idx] = ~stalled
        return x, (w * r)[:, self.rows_N]

    def _solve_chunk(self, pg, qg, pd, qd, max_iter, tol, lm_iters, penalty, x0=None):
        B, n = len(pg), self.n
        f64 = torch.float64
        target = self._bus_target(pg, qg, pd, qd)
        x = self._power_flow_start(target) if x0 is None else x0.clone()
        x, mu_N = self._levenberg_marquardt(x, target, lm_iters, penalty)
        V, S, J, mu, F = self._parts(x, mu_N, target)
        res = F.abs().amax(1)
        iters = torch.zeros(B, dtype=torch.long, device=pg.device)
        active = torch.isfinite(res) & (res >= tol)
        for k in range(max_iter):
            if not bool(active.any()):
                break
            idx = torch.nonzero(active).squeeze(1)
            M = self._newton_matrix(V[idx], J[idx], mu[idx], full=True)
            step, info = torch.linalg.solve_ex(M, -F[idx].unsqueeze(-1))
            step = step.squeeze(-1)
            bad = (info != 0) | ~torch.isfinite(step).all(1)
            step = torch.where(bad[:, None], torch.zeros_like(step), step)
            # backtracking on ||F|| (the exact Newton direction is a descent direction for it): the full step
            # first, halved while it does not decrease; no decrease in `n_back` tries takes the shortest step
            x_i, mu_i, t_i = x[idx], mu_N[idx], target[idx]
            r_i = F[idx].norm(dim=1)
            alpha = torch.ones(len(idx), dtype=f64, device=pg.device)
            accepted = torch.zeros(len(idx), dtype=torch.bool, device=pg.device)
            best = None
            n_back = 6
            for j in range(n_back):
                xn = x_i + alpha[:, None] * step[:, :self.n_x]
                mn = mu_i + alpha[:, None] * step[:, self.n_x:]
                parts = self._parts(xn, mn, t_i)
                rn = parts[4].norm(dim=1)
                ok = torch.isfinite(rn) & (rn < r_i)
                cand = (xn, mn, parts)
                if best is None:
                    best = cand
                else:
                    take = (ok if j < n_back - 1 else torch.ones_like(ok)) & ~accepted
                    best = _where(take, cand, best)
                accepted |= ok
                if bool(accepted.all()):
                    break
                alpha = torch.where(accepted, alpha, alpha * 0.5)
            xn, mn, parts = best
            x[idx], mu_N[idx] = xn, mn
            V[idx], S[idx], J[idx], mu[idx], F[idx] = parts
            res[idx] = parts[4].abs().amax(1)
            iters[idx] += 1
            active = torch.isfinite(res) & (res >= tol)
        # generator outputs from the multipliers: g̃ = g + Cᵀμ
        pg_new = pg + mu[:, :n][:, self.gen_bus]
        qg_new = qg + mu[:, n:][:, self.gen_bus]
        conv = torch.isfinite(res) & (res < tol)
        return x, pg_new, qg_new, conv, iters, res

    def solve(self, pg, qg, pd, qd, *, max_iter: int = 30, tol: float = 1e-9, lm_iters: int = 20,
              penalty: tuple[float, ...] = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6), chunk: int | None = None) -> LoadFlowResult:
        """Solve (20) for warm starts ``pg, qg`` (B, n_gen) with loads ``pd, qd`` ((B, n_load) or (n_load,)), p.u.

        ``tol`` bounds the KKT residual (max |·|, p.u.); ``lm_iters`` Levenberg-Marquardt iterations on the
        problem with the fixed balances as ``penalty``-weighted residuals come first; ``chunk`` warm starts are solved at once (default:
        as many as keep a dense n_bus x n_bus complex batch near 2 million entries).
        """
        g, dev, f64 = self.grid, self.device, torch.float64
        pg = torch.as_tensor(np.asarray(pg, dtype=np.float64), device=dev)
        qg = torch.as_tensor(np.asarray(qg, dtype=np.float64), device=dev)
        if pg.dim() != 2 or pg.shape != qg.shape or pg.shape[1] != g.n_gen:
            raise ValueError(f"pg and qg must both have shape (batch, {g.n_gen}) for {g.name}'s {g.n_gen} "
                             f"generators; got {tuple(pg.shape)} and {tuple(qg.shape)}")
        B = len(pg)
        pd = torch.as_tensor(np.asarray(pd, dtype=np.float64), device=dev)
        qd = torch.as_tensor(np.asarray(qd, dtype=np.float64), device=dev)
        if pd.shape[-1] != g.n_load or qd.shape != pd.shape:
            raise ValueError(f"pd and qd must have {g.n_load} entries per row (the loads of {g.name}); "
                             f"got {tuple(pd.shape)} and {tuple(qd.shape)}")
        pd, qd = pd.expand(B, g.n_load), qd.expand(B, g.n_load)
        if not (torch.isfinite(pg).all() and torch.isfinite(qg).all()):
            raise ValueError("warm starts contain NaN or inf; drop those rows before solving")
        chunk = chunk or max(1, int(2_000_000 // self.n ** 2))
        t0 = time.perf_counter()
        outs = [self._solve_chunk(pg[k:k + chunk], qg[k:k + chunk], pd[k:k + chunk], qd[k:k + chunk],
                                  max_iter, tol, lm_iters, penalty) for k in range(0, B, chunk)]
        x, pgn, qgn, conv, iters, res = (torch.cat(z) for z in zip(*outs))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        n = self.n
        theta = x.new_zeros(B, n)
        theta[:, self.nonref] = x[:, :n - 1]
        v = x[:, n - 1:]
        # independent check of the balance with the branch-wise physics of pfbook.physics
        gt = grid_tensors(g, dev, f64)
        p = pgn.new_zeros(B, n).index_add(1, self.gen_bus, pgn).index_add(1, self.load_bus, -pd)
        q = qgn.new_zeros(B, n).index_add(1, self.gen_bus, qgn).index_add(1, self.load_bus, -qd)
        dp, dq = nodal_mismatch(gt, p, q, v, theta)
        balance = torch.maximum(dp.abs().amax(1), dq.abs().amax(1))
        dist = ((pgn - pg) ** 2).sum(1) + ((qgn - qg) ** 2).sum(1)
        np_ = lambda a: a.detach().cpu().numpy()
        return LoadFlowResult(pg=np_(pgn), qg=np_(qgn), v=np_(v), theta=np_(theta), converged=np_(conv),
                              iterations=np_(iters), residual=np_(res), distance=np_(dist), balance=np_(balance),
                              seconds=seconds)


def solve_load_flow(grid: "Grid | str", pg, qg, pd, qd, device: str = "cpu", **kwargs) -> LoadFlowResult:
    """One-call form of :meth:`LoadFlowProblem.solve`."""
    return LoadFlowProblem(grid, device).solve(pg, qg, pd, qd, **kwargs)


# ---------------------------------------------------------------------------------------- reference
def reference_solve(grid: "Grid | str", pg, qg, pd, qd, tol: float = 1e-11, max_iter: int = 500) -> dict:
    """Problem (20) for one warm start, solved with Ipopt in the full space (the check of the batched solver).

    Variables (p̃_g, q̃_g, θ of non-reference buses, v); constraints: the 2 n_bus nodal balances of
    :func:`pfbook.physics.nodal_mismatch` (branch by branch, shunts included), their Jacobian by torch autograd;
    Hessian: Ipopt's limited-memory quasi-Newton. Started at the warm start and flat voltages.
    Returns a dict with pg, qg, v, theta, distance, status.
    """
    import cyipopt

    g = load_grid(grid)
    n, ng = g.n_bus, g.n_gen
    gt = grid_tensors(g, "cpu", torch.float64)
    pg0, qg0 = np.asarray(pg, float), np.asarray(qg, float)
    pd_b, qd_b = np.zeros(n), np.zeros(n)
    pd_b[g.load_bus], qd_b[g.load_bus] = pd, qd
    Cg = torch.as_tensor(g.Cg.toarray(), dtype=torch.float64)
    nonref = np.setdiff1d(np.arange(n), [g.ref])
    pdt, qdt = torch.as_tensor(pd_b), torch.as_tensor(qd_b)

    def cons_t(z: torch.Tensor) -> torch.Tensor:
        pgv, qgv, th_, v = z[:ng], z[ng:2 * ng], z[2 * ng:2 * ng + n - 1], z[2 * ng + n - 1:]
        th = torch.zeros(n, dtype=z.dtype).index_put((torch.as_tensor(nonref),), th_)
        dp, dq = nodal_mismatch(gt, Cg @ pgv - pdt, Cg @ qgv - qdt, v, th)
        return torch.cat([dp, dq])

    class _P:
        def objective(self, z):
            return float(((z[:ng] - pg0) ** 2).sum() + ((z[ng:2 * ng] - qg0) ** 2).sum())

        def gradient(self, z):
            gr = np.zeros_like(z)
            gr[:ng], gr[ng:2 * ng] = 2 * (z[:ng] - pg0), 2 * (z[ng:2 * ng] - qg0)
            return gr

        def constraints(self, z):
            return cons_t(torch.as_tensor(z)).numpy()

        def jacobian(self, z):
            return torch.autograd.functional.jacobian(cons_t, torch.as_tensor(z)).numpy().ravel()

    z0 = np.r_[pg0, qg0, np.zeros(n - 1), np.ones(n)]
    nz, nc = len(z0), 2 * n
    prob = cyipopt.Problem(n=nz, m=nc, problem_obj=_P(), lb=np.full(nz, -1e20), ub=np.full(nz, 1e20),
                           cl=np.zeros(nc), cu=np.zeros(nc))
    for k, v in {"tol": tol, "constr_viol_tol": 1e-12, "max_iter": max_iter, "print_level": 0,
                 "hessian_approximation": "limited-memory", "sb": "yes"}.items():
        prob.add_option(k, v)
    z, info = prob.solve(z0)
    th = np.zeros(n)
    th[nonref] = z[2 * ng:2 * ng + n - 1]
    return {"pg": z[:ng], "qg": z[ng:2 * ng], "theta": th, "v": z[2 * ng + n - 1:],
            "distance": float(info["obj_val"]), "status": int(info["status"]), "message": info["status_msg"]}


def compare_with_reference(grid: "Grid | str", pg, qg, pd, qd, device: str = "cpu"):
    """The batched solver against :func:`reference_solve` on each row (a handful): a DataFrame of the largest
    differences in p̃_g, q̃_g, v, θ and the objective, with both solvers' status."""
    import pandas

    r = LoadFlowProblem(grid, device).solve(pg, qg, pd, qd)
    rows = []
    for k in range(len(r.pg)):
        ref = reference_solve(grid, pg[k], qg[k], pd[k], qd[k])
        rows.append({"batched converged": bool(r.converged[k]), "Ipopt status": ref["message"].decode()
                     if isinstance(ref["message"], bytes) else str(ref["message"]),
                     "objective (20a)": r.distance[k],
                     **{f"max |Δ{key}|": float(np.abs(getattr(r, key)[k] - ref[key]).max())
                        for key in ("pg", "qg", "v", "theta")},
                     "|Δ objective|": abs(r.distance[k] - ref["distance"])})
    return pandas.DataFrame(rows)
