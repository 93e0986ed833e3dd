r"""The AC power-flow kernel: S(V), its derivatives and a batched Newton power flow, each written once.

Conventions, for all power-flow code of :mod:`pfbook.power`:

* per unit on the grid's base MVA, angles in radians, buses in the grid's order (:mod:`pfbook.power.grids`);
* ``V`` (b, n) complex bus voltages V = |V| e^{jθ}, batch first; ``Y`` the bus admittance matrix (MATPOWER's
  ``Ybus``: branch π models with taps and phase shifts, bus shunts);
* **S(V) = V ∘ conj(Y V)**, the complex power leaving each bus into the network; at a solution it equals the
  net injection (generation minus demand). P = Re S, Q = Im S. ``I = Y V`` comes along where a caller needs it;
* derivatives in polar coordinates: ∂S/∂θ and ∂S/∂|V| (MATPOWER's ``dSbus_dV``, polar form) and the second
  derivatives Σ_i λ_i ∇²S_i over (θ, |V|) (``d2Sbus_dV2``); the same for the from-end branch flows
  S_f = V_f ∘ conj(Y_f V) (``dSbr_dV``: :func:`dsbr_dv` dense, :func:`branch_flow_derivatives` per branch);
* a real Jacobian is a **block** of those (:meth:`DenseKernel.block`): rows P of the buses ``p_rows`` above
  rows Q of the buses ``q_rows``; columns θ of the buses ``th_cols`` before columns |V| of the buses ``vm_cols``;
* the **power flow** (:func:`newton_power_flow`): unknowns θ at the ``pvpq`` buses and |V| at the ``pq``
  buses; equations P(V) = p at ``pvpq`` and Q(V) = q at ``pq``; every other angle and magnitude is held where
  it starts; convergence is judged on the max-norm mismatch (p.u.).

The kernel comes in two forms with one interface (torch tensors in and out, float64 and complex128):
:class:`DenseKernel` (dense ``Y`` in torch on CPU or CUDA, Jacobian blocks as dense (b, m, k) tensors, batched
dense LU) and :class:`SparseKernel` (CPU: the sparsity pattern of ``Y ∪ Yᵀ ∪ diagonal``, values (b, nnz) computed
in NumPy for the whole batch behind zero-copy tensors, the square blocks of a batch factored together by
SuperLU, :class:`pfbook.power.blocksolve.BlockSystem`). Both give:

* ``power(V)`` → (I, S);
* ``block(p_rows, q_rows, th_cols, vm_cols)`` → a block of the Jacobian (built once and cached);
* ``jacobian(V, block)`` → (I, S, J), J the block's values;
* ``solve(block, J, rhs)`` → x with J x = rhs for a square block, rows of singular systems NaN;
* ``dense(block, J)`` → the block as dense (b, m, k) matrices;
* ``hessian`` (second derivatives; dense: complex (b, 2n, 2n), sparse: real values on the pattern).

Users: the SCADA generator (:func:`pfbook.power.measurements.newton_pf`, through :func:`power_flow` with its
chord iterations), the load flow (:mod:`pfbook.power.loadflow`: its power-flow start, the Levenberg-Marquardt
and KKT-Newton stages), the constrained chapter's projection onto the power-flow equations and the WLS state
estimator (:mod:`pfbook.power.estimation`: the sparse injection derivatives and :func:`branch_flow_derivatives`).
The differentiable physics of :mod:`pfbook.power.physics` evaluates the same S(V) branch by branch in real
arithmetic, for autograd in any dtype; the tests check that the two agree.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pfbook.power.blocksolve import BlockSystem

__all__ = [
    "DenseKernel",
    "SparseKernel",
    "dsbus_dv",
    "d2sbus_dv2",
    "dsbr_dv",
    "branch_flow_derivatives",
    "bus_roles",
    "newton_power_flow",
    "power_flow",
]


# ---------------------------------------------------------------------------------------- dense torch forms
def _dsbus_dv(Y: torch.Tensor, V: torch.Tensor):
    """(I, S, ∂S/∂θ, ∂S/∂|V|) for dense ``Y`` (n, n) and ``V`` (b, n)."""
    I = V @ Y.T
    Vn = V / V.abs()
    YV = Y * V[:, None, :]
    dVa = 1j * V[:, :, None] * (torch.diag_embed(I) - YV).conj()
    dVm = V[:, :, None] * (Y * Vn[:, None, :]).conj() + torch.diag_embed(I.conj() * Vn)
    return I, V * I.conj(), dVa, dVm


def dsbus_dv(Y: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S, ∂S/∂θ, ∂S/∂|V|) of S = V ⊙ conj(Y V), batched over V (B, n); MATPOWER's ``dSbus_dV`` (polar)."""
    return _dsbus_dv(Y, V)[1:]


def dsbr_dv(Yf: torch.Tensor, V: torch.Tensor, f) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S_f, ∂S_f/∂θ, ∂S_f/∂|V|) of the from-end branch flows S_f = V_f ⊙ conj(Y_f V), batched over V (B, n).

    ``Yf`` (l, n) is the dense from-end branch admittance (:attr:`pfbook.power.grids.Grid.Yf`), ``f`` (l,) the
    branches' from-bus indices; the derivatives are complex (B, l, n). MATPOWER's ``dSbr_dV`` (polar, from end).
    """
    f = torch.as_tensor(f, dtype=torch.long, device=V.device)
    If = V @ Yf.T
    Vf = V[:, f]
    Vn = V / V.abs()
    Cf = torch.zeros(Yf.shape, dtype=Yf.dtype, device=Yf.device)
    Cf[torch.arange(len(f), device=Yf.device), f] = 1.0
    dVa = 1j * (If.conj()[:, :, None] * Vf[:, :, None] * Cf - Vf[:, :, None] * (Yf * V[:, None, :]).conj())
    dVm = Vf[:, :, None] * (Yf * Vn[:, None, :]).conj() + (If.conj() * Vf / Vf.abs())[:, :, None] * Cf
    return Vf * If.conj(), dVa, dVm


def branch_flow_derivatives(yff: np.ndarray, yft: np.ndarray, f: np.ndarray, t: np.ndarray, V: np.ndarray):
    """The nonzeros of :func:`dsbr_dv`, branch by branch, in NumPy for a batch ``V`` (B, n).

    ``yff``, ``yft`` (l,) are the branches' from-end admittances (I_f = yff V_f + yft V_t,
    :attr:`pfbook.power.grids.Grid.branch_admittances`), ``f``, ``t`` their end buses. Returns complex (B, l)
    arrays (S_f, ∂S_f/∂θ_f, ∂S_f/∂θ_t, ∂S_f/∂|V_f|, ∂S_f/∂|V_t|).
    """
    Vf, Vt = V[:, f], V[:, t]
    If = yff * Vf + yft * Vt
    Vfn, Vtn = Vf / np.abs(Vf), Vt / np.abs(Vt)
    d_af = 1j * Vf * (If.conj() - (yff * Vf).conj())
    d_at = -1j * Vf * (yft * Vt).conj()
    d_mf = Vf * (yff * Vfn).conj() + If.conj() * Vfn
    d_mt = Vf * (yft * Vtn).conj()
    return Vf * If.conj(), d_af, d_at, d_mf, d_mt


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
    G = 1.0 / V.abs()
    Gaa = E + F
    Gva = 1j * G[:, :, None] * (E - F)
    Gvv = G[:, :, None] * (C + C.transpose(1, 2)) * G[:, None, :]
    top = torch.cat([Gaa, Gva.transpose(1, 2)], dim=2)
    bottom = torch.cat([Gva, Gvv], dim=2)
    return torch.cat([top, bottom], dim=1)


def _key(*index_sets) -> tuple:
    return tuple(tuple(np.asarray(torch.as_tensor(a).cpu()).tolist()) for a in index_sets)


def _runs(a: np.ndarray, most: int = 8):
    """An index array as runs of consecutive indices [(position, start, length)], or None if it has more than
    ``most`` runs (then it is gathered)."""
    cut = np.flatnonzero(np.diff(a) != 1) + 1
    starts = np.r_[0, cut]
    if len(starts) > most:
        return None
    lengths = np.diff(np.r_[starts, len(a)])
    return [(int(p), int(a[p]), int(k)) for p, k in zip(starts, lengths) if k > 0]


class _DenseBlock:
    """Rows (P at ``pr``, Q at ``qr``) and columns (θ at ``tc``, |V| at ``vc``) of a dense Jacobian block, each
    kept as a few runs of consecutive buses (copied as slices) or as an index tensor (gathered)."""

    def __init__(self, n: int, pr, qr, tc, vc, device):
        def part(a):
            runs = _runs(a)
            return runs if runs is not None else torch.as_tensor(a, dtype=torch.long, device=device)

        self.pr, self.qr, self.tc, self.vc = part(pr), part(qr), part(tc), part(vc)
        self.sizes = len(pr), len(qr), len(tc), len(vc)
        self.shape = (len(pr) + len(qr), len(tc) + len(vc))


def _fill(out: torch.Tensor, a: torch.Tensor, rows, cols) -> None:
    """out (b, len(rows), len(cols)) = a[:, rows][:, :, cols], rows and cols runs or index tensors."""
    if isinstance(rows, torch.Tensor):
        a, rows = a.index_select(1, rows), [(0, 0, len(rows))]
    if isinstance(cols, torch.Tensor):
        a, cols = a.index_select(2, cols), [(0, 0, len(cols))]
    for pr, sr, lr in rows:
        for pc, sc, lc in cols:
            out[:, pr : pr + lr, pc : pc + lc] = a[:, sr : sr + lr, sc : sc + lc]


class DenseKernel:
    """S(V), its derivatives and Jacobian blocks for a dense ``Y`` (n, n) complex128 tensor, on its device."""

    def __init__(self, Y: torch.Tensor):
        self.Y = torch.as_tensor(Y, dtype=torch.complex128)
        self.n = self.Y.shape[0]
        self._blocks: dict = {}

    @classmethod
    def from_ybus(cls, Ybus, device: "str | torch.device" = "cpu") -> "DenseKernel":
        """From a SciPy sparse (or dense NumPy) bus admittance matrix."""
        Y = Ybus.toarray() if hasattr(Ybus, "toarray") else np.asarray(Ybus)
        return cls(torch.as_tensor(Y, dtype=torch.complex128, device=device))

    def power(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        I = V @ self.Y.T
        return I, V * I.conj()

    def block(self, p_rows, q_rows, th_cols, vm_cols) -> _DenseBlock:
        key = _key(p_rows, q_rows, th_cols, vm_cols)
        if key not in self._blocks:
            self._blocks[key] = _DenseBlock(self.n, *(np.asarray(k, dtype=np.int64) for k in key), self.Y.device)
        return self._blocks[key]

    def jacobian(self, V: torch.Tensor, blk: _DenseBlock):
        I, S, dVa, dVm = _dsbus_dv(self.Y, V)
        nP, nQ, nT, nV = blk.sizes
        J = V.real.new_empty(len(V), nP + nQ, nT + nV)
        _fill(J[:, :nP, :nT], dVa.real, blk.pr, blk.tc)
        _fill(J[:, :nP, nT:], dVm.real, blk.pr, blk.vc)
        _fill(J[:, nP:, :nT], dVa.imag, blk.qr, blk.tc)
        _fill(J[:, nP:, nT:], dVm.imag, blk.qr, blk.vc)
        return I, S, J

    def solve(self, blk: _DenseBlock, J: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        x, info = torch.linalg.solve_ex(J, rhs.unsqueeze(-1))
        x = x.squeeze(-1)
        return torch.where((info != 0)[:, None], torch.full_like(x, float("nan")), x)

    def dense(self, blk: _DenseBlock, J: torch.Tensor) -> torch.Tensor:
        return J

    def hessian(self, V: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Σ_i lam_i ∇²S_i over (θ, |V|) of all buses, complex (b, 2n, 2n) (:func:`d2sbus_dv2`)."""
        return d2sbus_dv2(self.Y, V, lam)


# ---------------------------------------------------------------------------------------- sparse forms
class _SparseBlock:
    """Entries of a Jacobian block on the kernel's pattern: which raw derivative values (``raw``) land at which
    (``rows``, ``cols``), sorted by column then row; its linear system built on first use."""

    def __init__(self, raw: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
        self.raw, self.rows, self.cols, self.shape = raw, rows, cols, shape
        self._system: BlockSystem | None = None

    @property
    def system(self) -> BlockSystem:
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"only a square Jacobian block can be solved; this one is {self.shape}")
        if self._system is None:
            self._system = BlockSystem(self.rows, self.cols, self.shape[0], spd=False)
        return self._system


class SparseKernel:
    """S(V), its derivatives and Jacobian blocks on the fixed sparsity pattern of ``Ybus`` (CPU), vectorised
    over a batch: derivative values are float64 arrays (b, nnz).

    The pattern is that of Y ∪ Yᵀ ∪ diagonal, its entries (``pr[k]``, ``pc[k]``) sorted by row, then column.
    Raw first derivatives (:meth:`raw_jacobian`) are four blocks of it, ``[Re ∂S/∂θ, Im ∂S/∂θ, Re ∂S/∂|V|,
    Im ∂S/∂|V|]``; raw second derivatives (:meth:`hessian`) are ``[θθ, θ|V|, |V|θ, |V||V|]``.
    """

    def __init__(self, Ybus):
        Y = sp.csr_matrix(Ybus, dtype=complex)
        n = self.n = Y.shape[0]
        self.Y, self.YH = Y, Y.conj().T.tocsr()
        P = (abs(Y) + abs(Y.T) + sp.eye(n)).tocoo()  # pattern of Y ∪ Yᵀ ∪ diagonal
        pr, pc = P.row.astype(np.int64), P.col.astype(np.int64)
        o = np.lexsort((pc, pr))
        pr, pc = pr[o], pc[o]
        self.pr, self.pc = pr, pc
        self.nnz = len(pr)
        self.yP = np.asarray(Y[pr, pc]).ravel()
        self.yT = np.asarray(Y[pc, pr]).ravel()
        key = pr * n + pc
        self.diag = np.searchsorted(key, np.arange(n) * (n + 1))  # position of (i, i)
        self.tpos = np.searchsorted(key, pc * n + pr)  # position of (c, r)
        self._blocks: dict = {}

    def power(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        I, S = self._power(V.numpy())
        return torch.from_numpy(I), torch.from_numpy(S)

    def _power(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = (self.Y @ V.T).T
        return I, V * I.conj()

    def raw_jacobian(self, V: np.ndarray, I: np.ndarray) -> np.ndarray:
        """Values (b, 4 nnz) of [Re ∂S/∂θ, Im ∂S/∂θ, Re ∂S/∂|V|, Im ∂S/∂|V|] on the pattern (``dSbus_dV``)."""
        pr, pc, d = self.pr, self.pc, self.diag
        Vn = V / np.abs(V)
        Vr = V[:, pr]
        dVa = -1j * Vr * (self.yP * V[:, pc]).conj()
        dVa[:, d] += 1j * V * I.conj()
        dVm = Vr * (self.yP * Vn[:, pc]).conj()
        dVm[:, d] += I.conj() * Vn
        return np.concatenate([dVa.real, dVa.imag, dVm.real, dVm.imag], axis=1)

    def block(self, p_rows, q_rows, th_cols, vm_cols) -> _SparseBlock:
        key = _key(p_rows, q_rows, th_cols, vm_cols)
        if key not in self._blocks:
            n, pr, pc = self.n, self.pr, self.pc
            pr_, qr_, tc_, vc_ = (np.asarray(k, dtype=np.int64) for k in key)
            maps = []
            for idx, offset in ((pr_, 0), (qr_, len(pr_)), (tc_, 0), (vc_, len(tc_))):
                m = np.full(n, -1)
                m[idx] = offset + np.arange(len(idx))
                maps.append(m)
            rp, rq, ct, cv = maps
            rows = np.r_[rp[pr], rq[pr], rp[pr], rq[pr]]
            cols = np.r_[ct[pc], ct[pc], cv[pc], cv[pc]]
            raw = np.flatnonzero((rows >= 0) & (cols >= 0))
            raw = raw[np.lexsort((rows[raw], cols[raw]))]
            self._blocks[key] = _SparseBlock(raw, rows[raw], cols[raw], (len(pr_) + len(qr_), len(tc_) + len(vc_)))
        return self._blocks[key]

    def jacobian(self, V: torch.Tensor, blk: _SparseBlock):
        Vn = V.numpy()
        I, S = self._power(Vn)
        J = self.raw_jacobian(Vn, I)[:, blk.raw]
        return torch.from_numpy(I), torch.from_numpy(S), torch.from_numpy(J)

    def solve(self, blk: _SparseBlock, J: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(blk.system.solve(J.numpy(), rhs.numpy()))

    def dense(self, blk: _SparseBlock, J: torch.Tensor) -> torch.Tensor:
        out = J.new_zeros(len(J), *blk.shape)
        out[:, torch.as_tensor(blk.rows), torch.as_tensor(blk.cols)] = J
        return out

    def hessian(self, V: np.ndarray, I: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Re Σ_i lam_i ∇²S_i (``d2Sbus_dV2``) for complex ``lam`` (b, n): raw values (b, 4 nnz) of the blocks
        [θθ, θ|V|, |V|θ, |V||V|] on the pattern (NumPy in and out)."""
        pr, pc = self.pr, self.pc
        lamV = lam * V
        C = lamV[:, pr] * (self.yP * V[:, pc]).conj()
        Ct = lamV[:, pc] * (self.yT * V[:, pr]).conj()
        s = (self.YH @ lamV.T).T
        E = V.conj()[:, pr] * self.yT.conj() * lamV[:, pc]
        E[:, self.diag] -= V.conj() * s
        F = C.copy()
        F[:, self.diag] -= lamV * I.conj()
        G = 1.0 / np.abs(V)
        Gva = 1j * G[:, pr] * (E - F)
        Gvv = (C + Ct) * G[:, pr] * G[:, pc]
        return np.concatenate([(E + F).real, Gva[:, self.tpos].real, Gva.real, Gvv.real], axis=1)


# ---------------------------------------------------------------------------------------- Newton power flow
def bus_roles(bus_type: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, pvpq, pq) bus indices from MATPOWER bus types (1 PQ, 2 PV, 3 reference); ``pvpq`` lists the
    PV buses, then the PQ buses."""
    bus_type = np.asarray(bus_type)
    ref = np.flatnonzero(bus_type == 3)
    if len(ref) == 0:
        raise ValueError("the power flow needs a reference bus (bus_type 3); mark one bus as the slack")
    pv, pq = np.flatnonzero(bus_type == 2), np.flatnonzero(bus_type == 1)
    return ref, np.concatenate([pv, pq]), pq


def newton_power_flow(
    kernel,
    vm: torch.Tensor,
    va: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    pvpq,
    pq,
    tol: float = 1e-10,
    max_iter: int = 10,
    chord: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Newton power flow, in place on ``vm``, ``va`` (b, n) float64: θ at ``pvpq`` and |V| at ``pq``
    solve P(V) = p at ``pvpq`` and Q(V) = q at ``pq`` (``p, q`` (b, n), p.u.); the other entries of ``vm``,
    ``va`` are held. Each row iterates until its max-norm mismatch is at most ``tol`` (or not finite), for
    ``max_iter`` iterations at most; entries of a step that are not finite (a singular Jacobian) are taken as 0.

    ``chord`` (m, m), the inverse of one Jacobian of the block (``pvpq``, ``pq``; ``pvpq``, ``pq``), makes the
    iteration a chord method: every step is ``-chord @ F``, one matrix product for the batch.
    Returns the final mismatch norm (b,) and the iterations taken (b,).
    """
    dev = vm.device
    pvpq = torch.as_tensor(pvpq, dtype=torch.long, device=dev)
    pq = torch.as_tensor(pq, dtype=torch.long, device=dev)
    blk = kernel.block(pvpq, pq, pvpq, pq)
    k = len(pvpq)

    def evaluate(V, rows):
        if chord is None:
            _, S, J = kernel.jacobian(V, blk)
        else:
            (_, S), J = kernel.power(V), None
        pr, qr = (p, q) if rows is None else (p[rows], q[rows])
        return torch.cat([S.real[:, pvpq] - pr[:, pvpq], S.imag[:, pq] - qr[:, pq]], dim=1), J

    B = len(vm)
    V = torch.polar(vm, va)
    F, J = evaluate(V, None)
    J_rows = torch.ones(B, dtype=torch.bool, device=dev)  # the rows J belongs to
    it = torch.zeros(B, dtype=torch.long, device=dev)
    norm = lambda F: F.abs().amax(1) if F.shape[1] else F.new_zeros(len(F))
    for _ in range(max_iter):
        nF = norm(F)
        active = torch.isfinite(nF) & (nF > tol)
        idx = torch.nonzero(active).squeeze(1)
        if len(idx) == 0:
            break
        if chord is not None:
            dx = -F[idx] @ chord.T
        else:
            dx = kernel.solve(blk, J[active[J_rows]], -F[idx])
        dx = torch.nan_to_num(dx, nan=0.0, posinf=0.0, neginf=0.0)
        va_i, vm_i = va[idx], vm[idx]
        va_i[:, pvpq] += dx[:, :k]
        vm_i[:, pq] += dx[:, k:]
        va[idx], vm[idx] = va_i, vm_i
        V[idx] = Vi = torch.polar(vm_i, va_i)
        F[idx], J = evaluate(Vi, idx)
        J_rows = active
        it[idx] += 1
    return norm(F), it


def power_flow(
    kernel,
    p: torch.Tensor,
    q: torch.Tensor,
    vm0: torch.Tensor,
    pvpq,
    pq,
    tol: float = 1e-10,
    max_iter: int = 20,
    chord_iter: int = 40,
) -> dict[str, torch.Tensor]:
    """Batched AC power flow of close operating points: chord iterations from a shared Jacobian, then Newton
    where needed (:func:`newton_power_flow`; ``p, q`` (b, n), ``vm0`` (n,) or (b, n) the held magnitudes).

    The power flow of the batch's mean injection is solved by Newton from the flat start (angles 0, ``vm0``)
    first, its Jacobian inverted once, and every row iterated from that solution with the fixed Jacobian
    (``chord_iter`` iterations at most, each a matrix product for the whole batch; skipped for one row or
    ``chord_iter`` = 0). Rows that have not reached ``tol`` then run full Newton (``max_iter`` iterations at
    most) from the flat start. Returns ``vm, va`` (b, n), the resulting injections ``p, q`` at every bus,
    ``success`` (b,: mismatch at most ``tol``) and ``iterations`` (b,: chord + Newton).
    """
    B, n = p.shape
    vm_flat = vm0.expand(B, n)
    vm, va = vm_flat.clone(), torch.zeros_like(p)
    it = torch.zeros(B, dtype=torch.long, device=p.device)
    nrm = torch.full((B,), float("inf"), dtype=p.dtype, device=p.device)
    if chord_iter > 0 and B > 1:
        vm_c, va_c = vm.mean(0, keepdim=True), torch.zeros_like(p[:1])
        nc, _ = newton_power_flow(
            kernel, vm_c, va_c, p.mean(0, keepdim=True), q.mean(0, keepdim=True), pvpq, pq, tol, max_iter
        )
        if nc[0] <= tol:
            blk = kernel.block(pvpq, pq, pvpq, pq)
            Jinv, info = torch.linalg.inv_ex(kernel.dense(blk, kernel.jacobian(torch.polar(vm_c, va_c), blk)[2])[0])
            if int(info) == 0:
                pq_t = torch.as_tensor(pq, dtype=torch.long, device=p.device)
                vm[:, pq_t] = vm_c[0, pq_t]
                va[:] = va_c[0]
                nrm, it = newton_power_flow(kernel, vm, va, p, q, pvpq, pq, tol, chord_iter, chord=Jinv)
    redo = torch.nonzero(~(nrm <= tol)).squeeze(1)
    if len(redo):
        vm_r, va_r = vm_flat[redo].clone(), torch.zeros_like(p[redo])
        nrm_r, it_r = newton_power_flow(kernel, vm_r, va_r, p[redo], q[redo], pvpq, pq, tol, max_iter)
        vm[redo], va[redo], nrm[redo], it[redo] = vm_r, va_r, nrm_r, it[redo] + it_r
    V = torch.polar(vm, va)
    _, S = kernel.power(V)
    return dict(vm=V.abs(), va=V.angle(), p=S.real, q=S.imag, success=torch.isfinite(nrm) & (nrm <= tol), iterations=it)
