r"""The load-flow problem of DiffOPF (Hoseinpour & Dvorkin, eq. 20), solved batched (torch, or SciPy sparse).

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
``[[K + J_Gᵀ D⁻¹ J_G, J_Nᵀ], [J_N, 0]]`` with K = Σ_i μ_i ∇²S_i (MATPOWER's ``d2Sbus_dV2``, here batched)
and D the generator count per bus.

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

**Backends.** The three stages, their stopping rules and tolerances are written once, in torch, over a small
backend interface (``_DenseBackend``): the state S(x), J = ∂S/∂x at x, the product Jᵀu, the
Levenberg-Marquardt step and the KKT Newton step. S(V), its derivatives and the Newton power flow of stage (i)
come from the power-flow kernel :mod:`pfbook.power.powerflow`. ``backend="dense"`` keeps J as dense (B, 2n, n_x)
tensors and solves with dense LU (``torch.linalg.solve_ex``), on CPU or CUDA. ``backend="sparse"`` (CPU only)
works on the sparsity pattern of Ybus (plus diagonal): the values of ∂S/∂θ, ∂S/∂|V| and Σ μ_i ∇²S_i are arrays
(B, nnz) computed in NumPy for the whole batch at once (behind zero-copy tensors), and so are those of the
Levenberg-Marquardt normal matrix Jᵀ W J (products of entry pairs within each row of J) and of the KKT matrix.
The power-flow Jacobians and the KKT matrices of a batch are factored as one block-diagonal matrix by SuperLU
(``scipy.sparse.linalg.splu``); the SPD normal matrices get a fill-reducing ordering computed once per grid and,
in batches of at least 32, a sparse Cholesky factorisation vectorised over the batch (SuperLU in that order for
smaller batches; :mod:`pfbook.power.blocksolve`). The two backends agree to rounding (below 1e-9 from case14 to
case118). ``backend="auto"`` (the default) takes the sparse one on the CPU for grids of more than
:data:`SPARSE_ABOVE` = 30 buses, the dense one otherwise.

:func:`reference_solve` solves the same problem with Ipopt in the full space (all four variable groups,
all 2 n_bus balance equations written branch by branch with :func:`pfbook.power.physics.nodal_mismatch`, a quasi-
Newton Hessian): an independent formulation, algorithm and code path to check the batched solver against.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from pfbook.config import available_cpus
from pfbook.power.blocksolve import CHOLESKY_MIN as _CHOLESKY_MIN  # noqa: F401  (re-exported)
from pfbook.power.blocksolve import BlockSystem
from pfbook.power.blocksolve import BlockSystem as _BlockSystem  # noqa: F401  (re-exported)
from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import grid_tensors, nodal_mismatch
from pfbook.power.powerflow import DenseKernel, SparseKernel, d2sbus_dv2, dsbus_dv, newton_power_flow

__all__ = [
    "SPARSE_ABOVE",
    "LoadFlowProblem",
    "LoadFlowResult",
    "solve_load_flow",
    "reference_solve",
    "compare_with_reference",
    "dsbus_dv",
    "d2sbus_dv2",
    "worker_count",
]


#: ``backend="auto"`` uses the sparse backend on the CPU for grids with more buses than this
SPARSE_ABOVE = 30
#: with ``workers`` > 1, each worker process gets at least this many warm starts (fewer workers otherwise)
MIN_ROWS_PER_WORKER = 64


def worker_count(workers: "int | None", batch: int, device: "str | torch.device" = "cpu") -> int:
    """The worker processes :meth:`LoadFlowProblem.solve` uses for ``batch`` warm starts: ``workers`` (``None``: one
    per CPU core), at most one per :data:`MIN_ROWS_PER_WORKER` warm starts, and 1 off the CPU or where processes
    cannot be forked."""
    if workers is None:
        workers = available_cpus()
    if not (isinstance(workers, (int, np.integer)) and workers >= 1):
        raise ValueError(
            f"workers must be a whole number of processes, at least 1 (or None: one per CPU core); got {workers!r}"
        )
    if torch.device(device).type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(int(workers), max(1, batch // MIN_ROWS_PER_WORKER))


def _where(mask: torch.Tensor, a, b):
    """``torch.where`` over rows of (nested tuples of) batch-first tensors."""
    if isinstance(a, tuple):
        return tuple(_where(mask, u, w) for u, w in zip(a, b))
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)


# ---------------------------------------------------------------------------------------- backends
class _DenseBackend:
    """The load flow's linear algebra in dense torch (CPU or CUDA): J (b, 2n, n_x) tensors, dense LU.

    A backend gives, for voltages V (b, n): ``state(V)`` → (I, S (b, 2n) real, P then Q, J = ∂S/∂x in the
    backend's form); ``jt(J, u)`` → Jᵀ u (b, n_x); ``lm_step(J, w, r, lam)`` → the Levenberg-Marquardt step
    dx with (Jᵀ W J + lam (diag(Jᵀ W J) + 1e-9)) dx = -Jᵀ W r; ``kkt_step(V, I, J, mu, F)`` → the KKT Newton step
    (NaN rows where the system is singular); and ``kernel``, the power-flow kernel of
    :mod:`pfbook.power.powerflow` it uses.
    """

    def __init__(self, lf: "LoadFlowProblem"):
        self.lf = lf
        self.kernel = DenseKernel(lf.Y)
        n = lf.n
        self.block = self.kernel.block(np.arange(n), np.arange(n), lf.nonref.cpu().numpy(), np.arange(n))
        self.eye = torch.eye(lf.n_x, dtype=torch.float64, device=lf.device)

    def state(self, V):
        I, S, J = self.kernel.jacobian(V, self.block)
        return I, torch.cat([S.real, S.imag], dim=1), J

    def jt(self, J, u):
        return (J.transpose(1, 2) @ u[:, :, None]).squeeze(-1)

    def lm_step(self, J, w, r, lam):
        JW = J * w[None, :, None]
        A = J.transpose(1, 2) @ JW
        grad = (JW.transpose(1, 2) @ r[:, :, None]).squeeze(-1)
        d = A.diagonal(dim1=1, dim2=2)
        M = A + lam[:, None, None] * (torch.diag_embed(d) + 1e-9 * self.eye)
        dx, info = torch.linalg.solve_ex(M, -grad.unsqueeze(-1))
        return dx.squeeze(-1)

    def kkt_step(self, V, I, J, mu, F):
        """Solves [[K + J_Gᵀ D⁻¹ J_G, J_Nᵀ], [J_N, 0]] step = -F (see the module docstring)."""
        lf, n = self.lf, self.lf.n
        JG = J[:, lf.rows_G]
        H = JG.transpose(1, 2) @ (JG * lf.inv_count[lf.rows_G][None, :, None])
        # d2Sbus is linear in lam: Re H(μ_P) + Im H(μ_Q) = Re H(μ_P - j μ_Q), one call
        K = self.kernel.hessian(V, torch.complex(mu[:, :n], -mu[:, n:])).real[:, lf.cols][:, :, lf.cols]
        H = H + K
        JN = J[:, lf.rows_N]
        B, m = len(J), lf.n_mu
        top = torch.cat([H, JN.transpose(1, 2)], dim=2)
        bottom = torch.cat([JN, J.new_zeros(B, m, m)], dim=2)
        step, info = torch.linalg.solve_ex(torch.cat([top, bottom], dim=1), -F.unsqueeze(-1))
        step = step.squeeze(-1)
        return torch.where((info != 0)[:, None], torch.full_like(step, float("nan")), step)


class _SparseBackend:
    """The load flow's linear algebra on the sparsity pattern of Ybus (CPU; see ``_DenseBackend`` for the
    interface). J is the values (b, nnz_J) of the kernel's block (P and Q of every bus; θ of the non-reference
    buses, |V| of all), computed in NumPy for the batch at once; so are the values of the normal matrix Jᵀ W J
    (products of entry pairs within each row of J, lower triangle, mirrored) and of the KKT matrix
    [[H, J_Nᵀ], [J_N, 0]], H on the normal matrix's pattern. The normal matrices are solved by
    :class:`~pfbook.power.blocksolve.BlockSystem` as SPD (batched Cholesky), the KKT matrices by SuperLU."""

    def __init__(self, lf: "LoadFlowProblem"):
        self.lf = lf
        g, n, ref = lf.grid, lf.n, lf.ref
        sk = self.kernel = SparseKernel(g.Ybus)
        nonref = lf.nonref.numpy()
        blk = self.block = sk.block(np.arange(n), np.arange(n), nonref, np.arange(n))
        self.J_rows, self.J_cols = blk.rows, blk.cols
        n_x = lf.n_x
        nJ = len(blk.raw)
        self.JT = sp.csr_matrix((np.ones(nJ), (np.arange(nJ), self.J_cols)), shape=(nJ, n_x))  # Jᵀu scatter
        # Gram matrix Jᵀ W J: products of entry pairs within each row of J, summed per (col, col); the lower
        # triangle only (A is symmetric), then mirrored
        e1, e2 = [], []
        by_row = np.argsort(self.J_rows, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(self.J_rows, minlength=2 * n))]
        for k in range(2 * n):
            e = by_row[starts[k] : starts[k + 1]]
            a, c = np.meshgrid(e, e, indexing="ij")
            low = self.J_cols[a] >= self.J_cols[c]
            e1.append(a[low])
            e2.append(c[low])
        self.g1, self.g2 = np.concatenate(e1), np.concatenate(e2)
        self.g_row = self.J_rows[self.g1]
        ga, gb = self.J_cols[self.g1], self.J_cols[self.g2]  # A[ga, gb] += J[k, ga] w_k J[k, gb]
        lkey, inv = np.unique(gb * n_x + ga, return_inverse=True)
        self.gsum = sp.csc_matrix((np.ones(len(inv)), (inv, np.arange(len(inv)))), shape=(len(lkey), len(inv)))
        lr, lc = lkey % n_x, lkey // n_x
        akey = np.unique(np.r_[lkey, lr * n_x + lc])  # full pattern, sorted by column
        self.A_rows, self.A_cols = akey % n_x, akey // n_x
        lo, hi = np.minimum(self.A_rows, self.A_cols), np.maximum(self.A_rows, self.A_cols)
        self.A_from_low = np.searchsorted(lkey, lo * n_x + hi)  # each entry's lower-triangle twin
        self.A_diag = np.searchsorted(akey, np.arange(n_x) * (n_x + 1))
        self.lm = BlockSystem(self.A_rows, self.A_cols, n_x, spd=True)
        # Σ μ_i ∇²S_i restricted to x: the kernel's raw entries [θθ, θ|V|, |V|θ, |V||V|], placed into A's pattern
        pr, pc = sk.pr, sk.pc
        th = np.where(pc < ref, pc, pc - 1)
        thr = np.where(pr < ref, pr, pr - 1)
        rows = np.r_[thr, thr, n - 1 + pr, n - 1 + pr]
        cols = np.r_[th, n - 1 + pc, th, n - 1 + pc]
        keep = np.r_[(pr != ref) & (pc != ref), pr != ref, pc != ref, np.ones(len(pr), bool)]
        self.K_raw = np.flatnonzero(keep)
        self.K_pos = np.searchsorted(akey, cols[self.K_raw] * n_x + rows[self.K_raw])  # (P ⊂ A's pattern)
        # the KKT matrix [[H, J_Nᵀ], [J_N, 0]]: values [A entries, J_N entries, J_N entries transposed]
        rows_N = lf.rows_N.numpy()
        m = len(rows_N)
        posN = np.full(2 * n, -1)
        posN[rows_N] = np.arange(m)
        self.JN = np.flatnonzero(posN[self.J_rows] >= 0)
        r_kkt = np.r_[self.A_rows, n_x + posN[self.J_rows[self.JN]], self.J_cols[self.JN]]
        c_kkt = np.r_[self.A_cols, self.J_cols[self.JN], n_x + posN[self.J_rows[self.JN]]]
        self.kkt = BlockSystem(r_kkt, c_kkt, n_x + m, spd=False)
        self.inv_count = lf.inv_count.numpy()

    def state(self, V):
        I, S, J = self.kernel.jacobian(V, self.block)
        return I, torch.cat([S.real, S.imag], dim=1), J

    def _jt(self, J: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.asarray((J * u[:, self.J_rows]) @ self.JT)

    def _gram(self, J: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Values (b, nnz_A) of Jᵀ diag(w) J on A's pattern (sorted by column, then row)."""
        prod = J[:, self.g1] * J[:, self.g2] * w[self.g_row]
        return (self.gsum @ prod.T).T[:, self.A_from_low]

    def jt(self, J, u):
        return torch.from_numpy(self._jt(J.numpy(), u.numpy()))

    def lm_step(self, J, w, r, lam):
        J, w = J.numpy(), w.numpy()
        A = self._gram(J, w)
        grad = self._jt(J, w * r.numpy())
        A[:, self.A_diag] += lam.numpy()[:, None] * (A[:, self.A_diag] + 1e-9)
        return torch.from_numpy(self.lm.solve(A, -grad))

    def kkt_step(self, V, I, J, mu, F):
        n = self.lf.n
        J, mu = J.numpy(), mu.numpy()
        H = self._gram(J, self.inv_count)
        H[:, self.K_pos] += self.kernel.hessian(V.numpy(), I.numpy(), mu[:, :n] - 1j * mu[:, n:])[:, self.K_raw]
        JN = J[:, self.JN]
        return torch.from_numpy(self.kkt.solve(np.concatenate([H, JN, JN], axis=1), -F.numpy()))


# ---------------------------------------------------------------------------------------- result
@dataclass
class LoadFlowResult:
    """Solutions of (20) for a batch of warm starts (NumPy, float64; p.u. and radians, the grid's orders)."""

    pg: np.ndarray  # p̃_g* (B, n_gen)
    qg: np.ndarray  # q̃_g* (B, n_gen)
    v: np.ndarray  # |V|* (B, n_bus)
    theta: np.ndarray  # θ* (B, n_bus), reference bus at 0
    converged: np.ndarray  # (B,) KKT residual below tol
    iterations: np.ndarray  # (B,) iterations taken
    residual: np.ndarray  # (B,) final max |KKT residual|
    distance: np.ndarray  # (B,) objective (20a): ||p̃_g - p_g||² + ||q̃_g - q_g||²  (p.u.²)
    balance: np.ndarray  # (B,) max nodal mismatch of the solution (p.u.), from pfbook.power.physics
    seconds: float
    retried: int = 0  # warm starts solved a second time with the careful setting (see solve's retry)

    @property
    def n_failed(self) -> int:
        return int((~self.converged).sum())

    def __repr__(self) -> str:
        return (
            f"LoadFlowResult({len(self.converged)} warm starts, {self.n_failed} failed, "
            f"{self.retried} retried, median {np.median(self.iterations):.0f} iterations, {self.seconds:.2f} s)"
        )


# ---------------------------------------------------------------------------------------- worker processes
_WORKER_PROBLEM: "LoadFlowProblem | None" = None


def _init_worker(problem: "LoadFlowProblem") -> None:
    """Pool initializer: the problem arrives with the fork (nothing is pickled), one thread per worker."""
    global _WORKER_PROBLEM
    _WORKER_PROBLEM = problem
    torch.set_num_threads(1)
    threadpool_limits(1)  # and single-threaded BLAS: the workers already fill the cores


def _solve_part(args) -> "LoadFlowResult":
    pg, qg, pd, qd, kwargs = args
    return _WORKER_PROBLEM.solve(pg, qg, pd, qd, workers=1, **kwargs)


def _concat_results(parts: "list[LoadFlowResult]", seconds: float) -> "LoadFlowResult":
    arrays = {
        f.name: np.concatenate([getattr(r, f.name) for r in parts])
        for f in fields(LoadFlowResult)
        if f.name not in ("seconds", "retried")
    }
    return LoadFlowResult(**arrays, seconds=seconds, retried=sum(r.retried for r in parts))


# ---------------------------------------------------------------------------------------- solver
class LoadFlowProblem:
    """Problem (20) for one grid: build once, :meth:`solve` any number of warm starts.

    ``device``: where the Newton iterations run ("cpu" or "cuda"); all arithmetic is float64.
    ``backend``: "dense" (batched dense torch, CPU or CUDA), "sparse" (SciPy sparse LU on Ybus's pattern, CPU
    only) or "auto" (sparse on CPU for grids of more than :data:`SPARSE_ABOVE` buses, dense otherwise).
    """

    def __init__(self, grid: "Grid | str", device: "str | torch.device" = "cpu", backend: str = "auto"):
        self.grid = g = load_grid(grid)
        self.device = torch.device(device)
        n = self.n = g.n_bus
        if backend not in ("auto", "dense", "sparse"):
            raise ValueError(f"backend must be 'auto', 'dense' or 'sparse'; got {backend!r}")
        if backend == "sparse" and self.device.type != "cpu":
            raise ValueError(f"the sparse backend runs on the CPU only; use backend='dense' on {self.device}")
        if backend == "auto":
            backend = "sparse" if self.device.type == "cpu" and n > SPARSE_ABOVE else "dense"
        self.backend = backend
        dev, f64 = self.device, torch.float64
        self.Y = torch.as_tensor(g.Ybus.toarray(), dtype=torch.complex128, device=dev)
        self.ref = g.ref
        self.nonref = torch.as_tensor(np.setdiff1d(np.arange(n), [g.ref]), device=dev)
        counts = np.bincount(g.gen_bus, minlength=n).astype(float)
        self.gen_buses = np.flatnonzero(counts > 0)
        self.free_buses = np.flatnonzero(counts == 0)  # N: no generator, balance fixed
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
        self._be = _SparseBackend(self) if backend == "sparse" else _DenseBackend(self)

    # ------------------------------------------------------------------ pieces
    def _voltage(self, x: torch.Tensor) -> torch.Tensor:
        B, n = len(x), self.n
        th = x.new_zeros(B, n)
        th[:, self.nonref] = x[:, : n - 1]
        return torch.polar(x[:, n - 1 :], th)

    def _bus_target(self, pg, qg, pd, qd) -> torch.Tensor:
        """Cg - d per bus, (B, 2n): what the warm start and the loads would inject."""
        B, n = len(pg), self.n
        p = pg.new_zeros(B, n).index_add(1, self.gen_bus, pg).index_add(1, self.load_bus, -pd)
        q = qg.new_zeros(B, n).index_add(1, self.gen_bus, qg).index_add(1, self.load_bus, -qd)
        return torch.cat([p, q], dim=1)

    def _parts(self, x, mu_N, target):
        """V, I = Y V, S (B, 2n), J (the backend's form), full μ (B, 2n), KKT residual F (B, n_x + n_mu)."""
        V = self._voltage(x)
        I, S, J = self._be.state(V)
        mu = (S - target) * self.inv_count
        mu[:, self.rows_N] = mu_N
        F = torch.cat([self._be.jt(J, mu), S[:, self.rows_N] - target[:, self.rows_N]], dim=1)
        return V, I, S, J, mu, F

    def _power_flow_start(self, target: torch.Tensor, iters: int = 10) -> torch.Tensor:
        """x from a standard Newton power flow started flat (:func:`pfbook.power.powerflow.newton_power_flow`):
        generator buses PV at |V| = 1, the reference bus slack, active injections of the warm start elsewhere.
        A point on the power-flow manifold near the flat start, from which the KKT iteration starts (from the
        flat start itself a Gauss-Newton step runs away along the nearly singular direction of a uniform
        voltage change)."""
        B, n = len(target), self.n
        vm, va = target.new_ones(B, n), target.new_zeros(B, n)
        newton_power_flow(
            self._be.kernel,
            vm,
            va,
            target[:, :n],
            target[:, n:],
            self.nonref,
            self.free_buses,
            tol=1e-10,
            max_iter=iters,
        )
        return torch.cat([va[:, self.nonref], vm], dim=1)

    # ------------------------------------------------------------------ solve
    def _levenberg_marquardt(self, x, target, iters: int, weights, stall: float = 1e-6):
        """Levenberg-Marquardt on the penalised least squares ½ Σ_G r_b²/n_b + ½ w Σ_N r_b², r = S(x) - target.

        Monotone (a step is taken only if it lowers the cost; the damping adapts per warm start), so it brings
        every warm start from the power-flow start into the basin of the KKT Newton iteration. A warm start moves
        to the next weight once a step lowers its cost by less than ``stall`` (relative). Returns x and the
        multiplier estimate μ_N = w r_N of the penalty problem.
        """
        be = self._be

        def evaluate(xx, t):
            _, S, J = be.state(self._voltage(xx))
            r = S - t
            return r, 0.5 * (w * r * r).sum(1), J

        lam = torch.full((len(x),), 1e-3, dtype=x.dtype, device=x.device)
        for weight in weights:
            w = self.inv_count.clone()
            w[self.rows_N] = weight
            r, cost, J = evaluate(x, target)
            active = torch.ones(len(x), dtype=torch.bool, device=x.device)
            for _ in range(iters):
                idx = torch.nonzero(active).squeeze(1)
                if len(idx) == 0:
                    break
                Ji, li = J[idx], lam[idx]
                dx = torch.nan_to_num(be.lm_step(Ji, w, r[idx], li), nan=0.0, posinf=0.0, neginf=0.0)
                xn = x[idx] + dx
                rn, cn, Jn = evaluate(xn, target[idx])
                c0 = cost[idx]
                ok = torch.isfinite(cn) & (cn < c0)
                x[idx] = torch.where(ok[:, None], xn, x[idx])
                r[idx] = torch.where(ok[:, None], rn, r[idx])
                cost[idx] = torch.where(ok, cn, c0)
                J[idx] = _where(ok, Jn, Ji)
                lam[idx] = torch.where(ok, (li * 0.3).clamp(min=1e-9), li * 10)
                # a warm start is done with this weight once its cost stalls (or its damping explodes)
                stalled = (ok & (c0 - cn <= stall * c0)) | (lam[idx] > 1e10)
                active[idx] = ~stalled
        return x, (w * r)[:, self.rows_N]

    def _solve_chunk(self, pg, qg, pd, qd, max_iter, tol, lm_iters, penalty, stall):
        B, n = len(pg), self.n
        f64 = torch.float64
        target = self._bus_target(pg, qg, pd, qd)
        x = self._power_flow_start(target)
        x, mu_N = self._levenberg_marquardt(x, target, lm_iters, penalty, stall)
        V, I, S, J, mu, F = self._parts(x, mu_N, target)
        res = F.abs().amax(1)
        iters = torch.zeros(B, dtype=torch.long, device=pg.device)
        active = torch.isfinite(res) & (res >= tol)
        for _it in range(max_iter):
            if not bool(active.any()):
                break
            idx = torch.nonzero(active).squeeze(1)
            step = self._be.kkt_step(V[idx], I[idx], J[idx], mu[idx], F[idx])
            step = torch.where(torch.isfinite(step).all(1)[:, None], step, torch.zeros_like(step))
            # backtracking on ||F|| (the exact Newton direction is a descent direction for it): the full step
            # first, halved while it does not decrease; no decrease in `n_back` tries takes the shortest step
            x_i, mu_i, t_i = x[idx], mu_N[idx], target[idx]
            r_i = F[idx].norm(dim=1)
            alpha = torch.ones(len(idx), dtype=f64, device=pg.device)
            accepted = torch.zeros(len(idx), dtype=torch.bool, device=pg.device)
            best = None
            n_back = 6
            for j in range(n_back):
                xn = x_i + alpha[:, None] * step[:, : self.n_x]
                mn = mu_i + alpha[:, None] * step[:, self.n_x :]
                parts = self._parts(xn, mn, t_i)
                rn = parts[-1].norm(dim=1)
                ok = torch.isfinite(rn) & (rn < r_i)
                cand = (xn, mn) + parts
                if best is None:
                    best = cand
                else:
                    take = (ok if j < n_back - 1 else torch.ones_like(ok)) & ~accepted
                    best = _where(take, cand, best)
                accepted |= ok
                if bool(accepted.all()):
                    break
                alpha = torch.where(accepted, alpha, alpha * 0.5)
            x[idx], mu_N[idx], V[idx], I[idx], S[idx], J[idx], mu[idx], F[idx] = best
            res[idx] = best[-1].abs().amax(1)
            iters[idx] += 1
            active = torch.isfinite(res) & (res >= tol)
        # generator outputs from the multipliers: g̃ = g + Cᵀμ
        pg_new = pg + mu[:, :n][:, self.gen_bus]
        qg_new = qg + mu[:, n:][:, self.gen_bus]
        conv = torch.isfinite(res) & (res < tol)
        return x, pg_new, qg_new, conv, iters, res

    def solve(
        self,
        pg,
        qg,
        pd,
        qd,
        *,
        max_iter: int = 30,
        tol: float = 1e-9,
        lm_iters: int = 20,
        penalty: tuple[float, ...] = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6),
        lm_stall: float = 1e-6,
        retry: bool = True,
        chunk: int | None = None,
        workers: int | None = 1,
    ) -> LoadFlowResult:
        """Solve (20) for warm starts ``pg, qg`` (B, n_gen) with loads ``pd, qd`` ((B, n_load) or (n_load,)), p.u.

        ``tol`` bounds the KKT residual (max |·|, p.u.). Levenberg-Marquardt on the problem with the fixed
        balances as ``penalty``-weighted residuals comes first, at most ``lm_iters`` iterations per weight, moving
        on once a step gains less than ``lm_stall`` (relative). With ``retry`` the warm starts that fail are solved
        once more with the careful setting (``lm_stall`` = 1e-10, every weight run to its ``lm_iters``), and only
        those that fail again count as failed (:attr:`LoadFlowResult.retried` says how many were retried).
        ``chunk`` warm starts are solved at once (default: as many as keep a dense n_bus x n_bus complex batch
        near 2 million entries; 512 on the sparse backend).

        ``workers`` > 1 (CPU only) splits the warm starts among that many worker processes, forked from this one
        with one thread each and at least :data:`MIN_ROWS_PER_WORKER` warm starts apiece; ``None`` takes one per
        CPU core (:func:`worker_count`). The iteration is per warm start, so the solutions do not depend on
        ``workers`` beyond rounding (a smaller batch may be factored by SuperLU instead of the batched Cholesky);
        ``seconds`` is the wall time.
        """
        g, dev, f64 = self.grid, self.device, torch.float64
        pg = torch.as_tensor(np.asarray(pg, dtype=np.float64), device=dev)
        qg = torch.as_tensor(np.asarray(qg, dtype=np.float64), device=dev)
        if pg.dim() != 2 or pg.shape != qg.shape or pg.shape[1] != g.n_gen:
            raise ValueError(
                f"pg and qg must both have shape (batch, {g.n_gen}) for {g.name}'s {g.n_gen} "
                f"generators; got {tuple(pg.shape)} and {tuple(qg.shape)}"
            )
        B = len(pg)
        pd = torch.as_tensor(np.asarray(pd, dtype=np.float64), device=dev)
        qd = torch.as_tensor(np.asarray(qd, dtype=np.float64), device=dev)
        if pd.shape[-1] != g.n_load or qd.shape != pd.shape:
            raise ValueError(
                f"pd and qd must have {g.n_load} entries per row (the loads of {g.name}); "
                f"got {tuple(pd.shape)} and {tuple(qd.shape)}"
            )
        pd, qd = pd.expand(B, g.n_load), qd.expand(B, g.n_load)
        if not (torch.isfinite(pg).all() and torch.isfinite(qg).all()):
            raise ValueError("warm starts contain NaN or inf; drop those rows before solving")
        if not lm_stall >= 0:
            raise ValueError(f"lm_stall must be a non-negative relative decrease; got {lm_stall!r}")
        workers = worker_count(workers, B, dev)
        if workers > 1:
            kw = dict(
                max_iter=max_iter,
                tol=tol,
                lm_iters=lm_iters,
                penalty=penalty,
                lm_stall=lm_stall,
                retry=retry,
                chunk=chunk,
            )
            arrays = [a.numpy() for a in (pg, qg, pd, qd)]
            jobs = [(*(a[rows] for a in arrays), kw) for rows in np.array_split(np.arange(B), workers)]
            t0 = time.perf_counter()
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(self,)
            ) as pool:
                parts = list(pool.map(_solve_part, jobs))
            return _concat_results(parts, time.perf_counter() - t0)
        if chunk is None:
            chunk = 512 if self.backend == "sparse" else max(1, int(2_000_000 // self.n**2))
        solve_chunk = self._solve_chunk

        def run(rows, stall):
            parts = [(pg[k], qg[k], pd[k], qd[k]) for k in (rows[i : i + chunk] for i in range(0, len(rows), chunk))]
            outs = [solve_chunk(*a, max_iter, tol, lm_iters, penalty, stall) for a in parts]
            return [torch.cat(z) for z in zip(*outs)]

        t0 = time.perf_counter()
        x, pgn, qgn, conv, iters, res = run(torch.arange(B, device=dev), lm_stall)
        failed = torch.nonzero(~conv).squeeze(1)
        retried = 0
        if retry and len(failed) and lm_stall > 1e-10:
            retried = len(failed)
            again = run(failed, 1e-10)
            for dst, src in zip((x, pgn, qgn, conv, iters, res), again):
                dst[failed] = src
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        n = self.n
        theta = x.new_zeros(B, n)
        theta[:, self.nonref] = x[:, : n - 1]
        v = x[:, n - 1 :]
        # independent check of the balance with the branch-wise physics of pfbook.power.physics
        gt = grid_tensors(g, dev, f64)
        p = pgn.new_zeros(B, n).index_add(1, self.gen_bus, pgn).index_add(1, self.load_bus, -pd)
        q = qgn.new_zeros(B, n).index_add(1, self.gen_bus, qgn).index_add(1, self.load_bus, -qd)
        dp, dq = nodal_mismatch(gt, p, q, v, theta)
        balance = torch.maximum(dp.abs().amax(1), dq.abs().amax(1))
        dist = ((pgn - pg) ** 2).sum(1) + ((qgn - qg) ** 2).sum(1)
        np_ = lambda a: a.detach().cpu().numpy()
        return LoadFlowResult(
            pg=np_(pgn),
            qg=np_(qgn),
            v=np_(v),
            theta=np_(theta),
            converged=np_(conv),
            iterations=np_(iters),
            residual=np_(res),
            distance=np_(dist),
            balance=np_(balance),
            seconds=seconds,
            retried=retried,
        )


def solve_load_flow(
    grid: "Grid | str", pg, qg, pd, qd, device: str = "cpu", backend: str = "auto", **kwargs
) -> LoadFlowResult:
    """One-call form of :meth:`LoadFlowProblem.solve`."""
    return LoadFlowProblem(grid, device, backend).solve(pg, qg, pd, qd, **kwargs)


# ---------------------------------------------------------------------------------------- reference
def reference_solve(grid: "Grid | str", pg, qg, pd, qd, tol: float = 1e-11, max_iter: int = 500) -> dict:
    """Problem (20) for one warm start, solved with Ipopt in the full space (the check of the batched solver).

    Variables (p̃_g, q̃_g, θ of non-reference buses, v); constraints: the 2 n_bus nodal balances of
    :func:`pfbook.power.physics.nodal_mismatch` (branch by branch, shunts included), their Jacobian by torch autograd;
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
        pgv, qgv, th_, v = z[:ng], z[ng : 2 * ng], z[2 * ng : 2 * ng + n - 1], z[2 * ng + n - 1 :]
        th = torch.zeros(n, dtype=z.dtype).index_put((torch.as_tensor(nonref),), th_)
        dp, dq = nodal_mismatch(gt, Cg @ pgv - pdt, Cg @ qgv - qdt, v, th)
        return torch.cat([dp, dq])

    class _P:
        def objective(self, z):
            return float(((z[:ng] - pg0) ** 2).sum() + ((z[ng : 2 * ng] - qg0) ** 2).sum())

        def gradient(self, z):
            gr = np.zeros_like(z)
            gr[:ng], gr[ng : 2 * ng] = 2 * (z[:ng] - pg0), 2 * (z[ng : 2 * ng] - qg0)
            return gr

        def constraints(self, z):
            return cons_t(torch.as_tensor(z)).numpy()

        def jacobian(self, z):
            return torch.autograd.functional.jacobian(cons_t, torch.as_tensor(z)).numpy().ravel()

    z0 = np.r_[pg0, qg0, np.zeros(n - 1), np.ones(n)]
    nz, nc = len(z0), 2 * n
    prob = cyipopt.Problem(
        n=nz, m=nc, problem_obj=_P(), lb=np.full(nz, -1e20), ub=np.full(nz, 1e20), cl=np.zeros(nc), cu=np.zeros(nc)
    )
    for k, v in {
        "tol": tol,
        "constr_viol_tol": 1e-12,
        "max_iter": max_iter,
        "print_level": 0,
        "hessian_approximation": "limited-memory",
        "sb": "yes",
    }.items():
        prob.add_option(k, v)
    z, info = prob.solve(z0)
    th = np.zeros(n)
    th[nonref] = z[2 * ng : 2 * ng + n - 1]
    return {
        "pg": z[:ng],
        "qg": z[ng : 2 * ng],
        "theta": th,
        "v": z[2 * ng + n - 1 :],
        "distance": float(info["obj_val"]),
        "status": int(info["status"]),
        "message": info["status_msg"],
    }


def compare_with_reference(grid: "Grid | str", pg, qg, pd, qd, device: str = "cpu", backend: str = "auto"):
    """The batched solver against :func:`reference_solve` on each row (a handful): a DataFrame of the largest
    differences in p̃_g, q̃_g, v, θ and the objective, with both solvers' status."""
    import pandas

    r = LoadFlowProblem(grid, device, backend).solve(pg, qg, pd, qd)
    rows = []
    for k in range(len(r.pg)):
        ref = reference_solve(grid, pg[k], qg[k], pd[k], qd[k])
        rows.append(
            {
                "batched converged": bool(r.converged[k]),
                "Ipopt status": ref["message"].decode() if isinstance(ref["message"], bytes) else str(ref["message"]),
                "objective (20a)": r.distance[k],
                **{
                    f"max |Δ{key}|": float(np.abs(getattr(r, key)[k] - ref[key]).max())
                    for key in ("pg", "qg", "v", "theta")
                },
                "|Δ objective|": abs(r.distance[k] - ref["distance"]),
            }
        )
    return pandas.DataFrame(rows)
