r"""Weighted least-squares (WLS) static state estimation of SCADA measurements, batched over time steps.

What it estimates: the bus voltages of a grid, |V| at every bus and θ at every bus but the reference
(:attr:`pfbook.power.grids.Grid.ref`, held at θ = 0), from one set of measurements per time step, each step
on its own.

The measurement model is z = h(x) + e with independent errors e_k ~ N(0, σ_k²). The measurements are the
channels of pfbook's SCADA datasets (:func:`pfbook.power.measurements.channel_layout`): bus injections
``P_i``, ``Q_i``, from-end branch flows ``P_ij``, ``Q_ij`` and voltage magnitudes ``U_i``, per unit on the
grid's base MVA, with the conventions of :func:`pfbook.power.measurements.channels_from_states`:

* injections in the generator convention, S = V ∘ conj(Y V) (the power leaving a bus into the network:
  generation minus demand);
* branch flows S_f = V_f ∘ conj(Y_f V) at the from end of the case's branch (the power entering the branch);
* |V| in p.u.

The estimate minimises J(x) = Σ_k ((z_k - h_k(x)) / σ_k)² by Gauss-Newton on the normal equations,
G Δx = Hᵀ W (z - h(x)) with H = ∂h/∂x, W = diag(1/σ²) and the gain matrix G = Hᵀ W H, from a flat start
(|V| = 1, θ = 0) unless a start is given. A step larger than 0.35 (p.u. or rad, in the max-norm) is scaled
down to it, and the iteration stops once max |Δx| < ``tol``. This is the iteration of pandapower's WLS estimator
(Thurner et al. 2018; ``pandapower.estimation.estimate``, ``algorithm="wls"``), and the tests check that both
give the same states for the same measurements and, from the same start, take the same iterations. The
differences: pandapower's flat start holds the reference bus at its generator's voltage set point and at the
case file's angle (pass ``init`` to start there too); it raises standard deviations below 1e-5 p.u. to 1e-5,
this module uses them as given; and it estimates one step at a time, this module a batch of steps at once.

The Jacobian is analytic: the injection rows are MATPOWER's ``dSbus_dV`` on the sparsity pattern of ``Ybus``
(:class:`pfbook.power.powerflow.SparseKernel`), the flow rows ``dSbr_dV``
(:func:`pfbook.power.powerflow.branch_flow_derivatives`). The gain matrices are assembled on their fixed
sparsity pattern and factored together by a sparse Cholesky factorisation vectorised over the batch
(:class:`pfbook.power.blocksolve.BatchedCholesky`, in a fill-reducing order found once per channel layout).

A measurement that is not finite (NaN: not received) is dropped from its step (weight 0). A step is reported
unconverged, with NaN states, when it has fewer measurements than states, when its gain matrix is singular
(a pivot of the factorisation not above :data:`PIVOT_RTOL` times its diagonal entry: the step is not
observable) or when it has not converged in ``max_iter`` iterations. The other steps of the batch are not
affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from pfbook.power.blocksolve import BlockSystem
from pfbook.power.grids import Grid
from pfbook.power.powerflow import SparseKernel, branch_flow_derivatives

__all__ = ["KINDS", "MAX_STEP", "PIVOT_RTOL", "WLSResult", "measurement_function", "wls_estimate"]

#: the channel kinds: bus injections, from-end branch flows, voltage magnitudes
KINDS = ("P_i", "Q_i", "P_ij", "Q_ij", "U_i")

#: Gauss-Newton steps larger than this in the max-norm (p.u. or rad) are scaled down to it, as pandapower does
MAX_STEP = 0.35

#: a gain matrix whose Cholesky pivot falls to this fraction of its diagonal entry (or below) is singular
PIVOT_RTOL = 1e-12

_CHUNK = 32  # steps per block of the gain-matrix products


@dataclass
class WLSResult:
    """WLS estimates of ``n`` time steps (:func:`wls_estimate`)."""

    vm: np.ndarray  # (n, n_bus) p.u.; NaN where not converged
    va: np.ndarray  # (n, n_bus) rad, reference bus at 0; NaN where not converged
    converged: np.ndarray  # (n,) bool
    iterations: np.ndarray  # (n,) int: Gauss-Newton iterations taken
    objective: np.ndarray  # (n,) J(x̂) = Σ ((z - h(x̂))/σ)² over the measurements used (chi-square statistic)
    n_measurements: np.ndarray  # (n,) measurements used (finite entries)


# ---------------------------------------------------------------------------------------- channel layout
class _Layout:
    """A channel list compiled for a grid: which bus or branch each channel reads, the Jacobian's pattern and
    the gain matrix's pattern, its fill-reducing order and symbolic Cholesky factorisation."""

    def __init__(self, grid: Grid, channels: Sequence[dict]):
        n, ref = grid.n_bus, grid.ref
        ids = {int(b): i for i, b in enumerate(np.asarray(grid.bus_ids).tolist())}
        kind, elem = [], []
        for k, ch in enumerate(channels):
            if not isinstance(ch, dict) or ch.get("kind") not in KINDS:
                got = ch.get("kind") if isinstance(ch, dict) else ch
                raise ValueError(
                    f"channel {k}: unknown kind {got!r}; a channel is a dict with 'kind' one of {', '.join(KINDS)} "
                    "(see pfbook.power.measurements.channel_layout)"
                )
            kd = ch["kind"]
            if kd in ("P_ij", "Q_ij"):
                l = ch.get("branch")
                if not isinstance(l, (int, np.integer)) or not (0 <= int(l) < grid.n_branch):
                    raise ValueError(
                        f"channel {k} ({kd}): 'branch' must be a branch index in 0..{grid.n_branch - 1} of "
                        f"{grid.name}; got {l!r}"
                    )
                l = int(l)
                for key, end in (("from_bus", grid.f[l]), ("to_bus", grid.t[l])):
                    if key in ch and int(ch[key]) != int(grid.bus_ids[end]):
                        raise ValueError(
                            f"channel {k} ({kd}): branch {l} of {grid.name} has {key} {int(grid.bus_ids[end])}, "
                            f"the channel says {ch[key]}; flows are measured at the from end of the case's branch"
                        )
                elem.append(l)
            else:
                b = ch.get("bus")
                if b is None or int(b) not in ids:
                    raise ValueError(
                        f"channel {k} ({kd}): bus {b!r} is not a bus of {grid.name}; 'bus' is the external bus "
                        "number (grid.bus_ids)"
                    )
                elem.append(ids[int(b)])
            kind.append(KINDS.index(kd))
        self.K = len(kind)
        if self.K == 0:
            raise ValueError("no channels: give at least one measurement channel")
        self.kind, self.elem = np.asarray(kind), np.asarray(elem, dtype=np.int64)
        self.n, self.ref = n, ref
        self.grid = grid

        # states: θ of every bus but the reference, then |V| of every bus
        th = np.full(n, -1)
        th[np.setdiff1d(np.arange(n), [ref])] = np.arange(n - 1)
        vm = (n - 1) + np.arange(n)
        self.N = N = 2 * n - 1
        self.kernel = SparseKernel(grid.Ybus)
        kp = self.kernel
        yff, yft, _, _ = grid.branch_admittances
        self.yff, self.yft, self.f, self.t = yff, yft, np.asarray(grid.f), np.asarray(grid.t)
        nnz, nl = kp.nnz, grid.n_branch
        # raw derivative values of a row, concatenated: the injections' [Re ∂S/∂θ, Im ∂S/∂θ, Re ∂S/∂|V|,
        # Im ∂S/∂|V|] on Ybus's pattern (4 nnz), the flows' real then imaginary parts of
        # [∂/∂θ_f, ∂/∂θ_t, ∂/∂|V_f|, ∂/∂|V_t|] (8 nl), and a constant 1 (the U_i rows)
        self.n_raw = 4 * nnz + 8 * nl + 1
        by_row = np.split(np.arange(nnz), np.searchsorted(kp.pr, np.arange(1, n)))
        rows, cols, src = [], [], []
        for k in range(self.K):
            kd, e = KINDS[self.kind[k]], self.elem[k]
            if kd in ("P_i", "Q_i"):
                p = by_row[e]
                im = kd == "Q_i"
                keep = th[kp.pc[p]] >= 0
                c = np.r_[th[kp.pc[p]][keep], vm[kp.pc[p]]]
                s = np.r_[(int(im)) * nnz + p[keep], (2 + int(im)) * nnz + p]
            elif kd in ("P_ij", "Q_ij"):
                off = 4 * nnz + (4 * nl if kd == "Q_ij" else 0)
                fb, tb = self.f[e], self.t[e]
                c = np.array([th[fb], th[tb], vm[fb], vm[tb]])
                s = off + np.arange(4) * nl + e
                keep = c >= 0
                c, s = c[keep], s[keep]
            else:
                c, s = np.array([vm[e]]), np.array([self.n_raw - 1])
            rows.append(np.full(len(c), k))
            cols.append(c)
            src.append(s)
        self.h_row = np.concatenate(rows)
        self.h_col = np.concatenate(cols).astype(np.int64)
        self.h_src = np.concatenate(src).astype(np.int64)
        nh = len(self.h_row)
        # rhs = Hᵀ (w r): column sums of the entries
        self.rhs_sum = sp.csr_matrix((np.ones(nh), (self.h_col, np.arange(nh))), shape=(N, nh))

        # gain matrix G = Hᵀ W H, lower triangle: a sum over the pairs of entries of one row
        ptr = np.r_[0, np.cumsum([len(c) for c in cols])]
        e1, e2 = [], []
        for k in range(self.K):
            idx = np.arange(ptr[k], ptr[k + 1])
            a, b = np.meshgrid(idx, idx, indexing="ij")
            low = self.h_col[a] >= self.h_col[b]
            e1.append(a[low])
            e2.append(b[low])
        self.e1, self.e2 = np.concatenate(e1), np.concatenate(e2)
        gr, gc = self.h_col[self.e1], self.h_col[self.e2]
        diag = np.arange(N)
        keys, g_of = np.unique(np.r_[gr * N + gc, diag * N + diag], return_inverse=True)
        g_of = g_of[: len(gr)]
        self.g_rows, self.g_cols = keys // N, keys % N
        self.g_sum = sp.csr_matrix((np.ones(len(g_of)), (g_of, np.arange(len(g_of)))), shape=(len(keys), len(g_of)))
        self.g_diag = np.searchsorted(keys, diag * N + diag)
        off = self.g_rows != self.g_cols
        # the symmetric pattern (lower entries, then the mirrored upper ones): its fill-reducing order is found once,
        # and the batched Cholesky factorisation reads the lower triangle of the reordered matrices
        sym_r = np.r_[self.g_rows, self.g_cols[off]]
        sym_c = np.r_[self.g_cols, self.g_rows[off]]
        self.system = BlockSystem(sym_r, sym_c, N, spd=True)
        self.g_off = np.flatnonzero(off)
        self.th_bus = np.flatnonzero(th >= 0)

    # ------------------------------------------------------------------ evaluation
    def states(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        va = np.zeros((len(x), n))
        va[:, self.th_bus] = x[:, : n - 1]
        return x[:, n - 1 :], va

    def h(self, V: np.ndarray, I: np.ndarray | None = None) -> np.ndarray:
        """h(x) (b, K) for voltages V (b, n)."""
        if I is None:
            I = (self.kernel.Y @ V.T).T
        S = V * I.conj()
        Vf = V[:, self.f]
        Sf = Vf * (self.yff * Vf + self.yft * V[:, self.t]).conj()
        out = np.empty((len(V), self.K))
        e, kd = self.elem, self.kind
        for code, src in ((0, S.real), (1, S.imag), (2, Sf.real), (3, Sf.imag), (4, np.abs(V))):
            m = kd == code
            if m.any():
                out[:, m] = src[:, e[m]]
        return out

    def jacobian(self, V: np.ndarray, I: np.ndarray) -> np.ndarray:
        """Values (entries, b) of H = ∂h/∂x at V (b, n), entries in the order of (``h_row``, ``h_col``)."""
        raw_inj = self.kernel.raw_jacobian(V, I)
        _, daf, dat, dmf, dmt = branch_flow_derivatives(self.yff, self.yft, self.f, self.t, V)
        parts = [raw_inj.T] + [d.real.T for d in (daf, dat, dmf, dmt)] + [d.imag.T for d in (daf, dat, dmf, dmt)]
        return np.concatenate([*parts, np.ones((1, len(V)))], axis=0)[self.h_src]

    def gain(self, H: np.ndarray, sw: np.ndarray) -> np.ndarray:
        """Values (b, nnz) of G = Hᵀ W H for H (entries, b) and W^½ (K, b): the lower triangle, then the mirrored
        upper entries (the order of ``system``)."""
        Hw = H * sw[self.h_row]
        b = H.shape[1]
        low = np.empty((b, len(self.g_rows)))
        for s in range(0, b, _CHUNK):  # a few columns at a time: the pair products stay in the cache
            h = np.ascontiguousarray(Hw[:, s : s + _CHUNK])
            low[s : s + _CHUNK] = (self.g_sum @ (h[self.e1] * h[self.e2])).T
        return np.concatenate([low, low[:, self.g_off]], axis=1)


_LAYOUTS: dict = {}


def _layout(grid: Grid, channels: Sequence[dict]) -> _Layout:
    """The compiled layout, cached on the grid object and the channels' contents."""
    try:
        key = (id(grid), tuple(tuple(sorted(c.items())) for c in channels))
    except (AttributeError, TypeError):
        return _Layout(grid, channels)  # let the layout name what is wrong
    hit = _LAYOUTS.get(key)
    if hit is not None and hit.grid is grid:
        return hit
    lay = _Layout(grid, channels)
    if len(_LAYOUTS) >= 16:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[key] = lay
    return lay


# ---------------------------------------------------------------------------------------- public functions
def measurement_function(grid: Grid, channels: Sequence[dict], vm: np.ndarray, va: np.ndarray) -> np.ndarray:
    """h(x): the noise-free value of every channel (..., K) for states ``vm``, ``va`` (..., n_bus) (p.u., rad).

    For the full layout of :func:`pfbook.power.measurements.channel_layout` this is
    :func:`pfbook.power.measurements.channels_from_states`.
    """
    lay = _layout(grid, channels)
    vm, va = np.asarray(vm, dtype=float), np.asarray(va, dtype=float)
    if vm.shape != va.shape or vm.shape[-1:] != (grid.n_bus,):
        raise ValueError(
            f"vm and va must have one shape (..., {grid.n_bus}) (one entry per bus of {grid.name}); "
            f"got {vm.shape} and {va.shape}"
        )
    lead = vm.shape[:-1]
    V = (vm * np.exp(1j * va)).reshape(-1, grid.n_bus)
    return lay.h(V).reshape(*lead, lay.K)


def wls_estimate(
    grid: Grid,
    z: np.ndarray,
    channels: Sequence[dict],
    std: np.ndarray,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    tol: float = 1e-8,
    max_iter: int = 20,
    batch_size: int = 256,
    max_step: float | None = MAX_STEP,
) -> WLSResult:
    """WLS state estimates of ``n`` time steps (see the module docstring for the model and the method).

    Parameters
    ----------
    grid : the grid (:class:`pfbook.power.grids.Grid`).
    z : measurements (n, K) of the ``channels`` (p.u., generator convention); NaN (any non-finite value): not
        received, dropped from that step.
    channels : K channel dicts (:func:`pfbook.power.measurements.channel_layout`).
    std : standard deviations (K,) or (n, K), p.u.; the weights are 1/σ². Only those of received
        measurements are read; they must be positive and finite.
    init : start (vm, va), each (n, n_bus) or (n_bus,); angles are taken relative to the reference bus.
        None: the flat start.
    tol : convergence when max |Δx| < tol (p.u. and rad).
    max_iter : Gauss-Newton iterations at most; a step not converged by then is reported unconverged.
    batch_size : steps solved together.
    max_step : steps larger than this in the max-norm are scaled down to it (pandapower's 0.35); None: never.
    """
    lay = _layout(grid, channels)
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or z.shape[1] != lay.K:
        raise ValueError(f"z must be (steps, {lay.K}): one column per channel; got shape {z.shape}")
    n_steps = len(z)
    std = np.asarray(std, dtype=float)
    if std.shape not in ((lay.K,), (n_steps, lay.K)):
        raise ValueError(f"std must be ({lay.K},) or ({n_steps}, {lay.K}) like z; got shape {std.shape}")
    std = np.broadcast_to(std, z.shape)
    used = np.isfinite(z)
    bad_std = used & ~(np.isfinite(std) & (std > 0))
    if bad_std.any():
        k = np.argwhere(bad_std)[0]
        raise ValueError(
            f"std must be positive and finite for every received measurement; step {k[0]}, channel {k[1]} "
            f"has {std[k[0], k[1]]!r}"
        )
    if not (tol > 0 and max_iter >= 1 and batch_size >= 1):
        raise ValueError(f"need tol > 0, max_iter >= 1 and batch_size >= 1; got {tol}, {max_iter}, {batch_size}")
    n = grid.n_bus
    if init is None:
        vm0, va0 = np.ones((n_steps, n)), np.zeros((n_steps, n))
    else:
        vm0, va0 = (np.asarray(a, dtype=float) for a in init)
        if vm0.shape != va0.shape or vm0.shape not in ((n,), (n_steps, n)):
            raise ValueError(f"init must be (vm, va), each ({n},) or ({n_steps}, {n}); got {vm0.shape} and {va0.shape}")
        vm0, va0 = np.broadcast_to(vm0, (n_steps, n)), np.broadcast_to(va0, (n_steps, n))
        va0 = va0 - va0[:, lay.ref : lay.ref + 1]
    w_all = np.where(used, 1.0 / np.where(used, std, 1.0) ** 2, 0.0)
    z_all = np.where(used, z, 0.0)
    x_all = np.concatenate([np.delete(va0, lay.ref, axis=1), vm0], axis=1)

    out = WLSResult(
        vm=np.full((n_steps, n), np.nan),
        va=np.full((n_steps, n), np.nan),
        converged=np.zeros(n_steps, dtype=bool),
        iterations=np.zeros(n_steps, dtype=np.int64),
        objective=np.full(n_steps, np.nan),
        n_measurements=used.sum(1),
    )
    for s in range(0, n_steps, batch_size):
        rows = np.arange(s, min(s + batch_size, n_steps))
        _solve_batch(lay, z_all[rows], w_all[rows], x_all[rows], tol, max_iter, max_step, out, rows)
    return out


def _solve_batch(lay: _Layout, z, w, x, tol, max_iter, max_step, out: WLSResult, rows: np.ndarray) -> None:
    """Gauss-Newton for one batch, written into ``out`` at ``rows``."""
    chol, sysm = lay.system.chol, lay.system
    x = x.copy()
    done = np.zeros(len(x), dtype=bool)
    it = np.zeros(len(x), dtype=np.int64)
    active = np.flatnonzero((w > 0).sum(1) >= lay.N)  # fewer measurements than states: not observable
    for _ in range(max_iter):
        if len(active) == 0:
            break
        xa, wa = x[active], w[active]
        vm, va = lay.states(xa)
        V = vm * np.exp(1j * va)
        I = (lay.kernel.Y @ V.T).T
        r = z[active] - lay.h(V, I)
        H = lay.jacobian(V, I)
        G = lay.gain(H, np.sqrt(wa).T)
        rhs = np.asarray(lay.rhs_sum @ (H * (wa * r).T[lay.h_row])).T
        with np.errstate(all="ignore"):  # a singular system's factorisation may overflow: it is caught below
            L, bad = chol.factor(G)
            piv = L[chol.start[:-1]] ** 2  # (N, b): the pivots, in the factorisation's order
            gd = G[:, lay.g_diag][:, sysm.ip].T
            bad |= ~(piv > PIVOT_RTOL * gd).all(0)
            dx = chol.solve(L, rhs[:, sysm.ip])[:, sysm.pc]
        step = np.abs(dx).max(1)
        bad |= ~np.isfinite(step)
        if max_step is not None:
            dx *= np.minimum(1.0, max_step / np.where(step > 0, step, 1.0))[:, None]
        ok = ~bad
        x[active[ok]] = xa[ok] + dx[ok]
        it[active] += 1
        conv = ok & (step < tol)
        done[active[conv]] = True
        active = active[ok & ~conv]
    good = np.flatnonzero(done)
    vm, va = lay.states(x[good])
    V = vm * np.exp(1j * va)
    r = z[good] - lay.h(V)
    out.vm[rows[good]], out.va[rows[good]] = vm, va
    out.converged[rows[good]] = True
    out.objective[rows[good]] = (w[good] * r**2).sum(1)
    out.iterations[rows] = it
