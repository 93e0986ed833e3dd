r"""AC optimal power flow (MATPOWER's formulation) solved with Ipopt through cyipopt.

Formulation
-----------
This is the standard AC-OPF of MATPOWER (R. D. Zimmerman, C. E. Murillo-Sanchez, R. J. Thomas,
"MATPOWER: Steady-State Operations, Planning and Analysis Tools for Power Systems Research and
Education", IEEE Trans. Power Systems 26(1), 2011; MATPOWER User's Manual, ch. 6 "Optimal Power
Flow"), with MATPOWER's defaults (``opf.flow_lim = 'S'``, polynomial costs), so its optimum is the one
``runopf`` publishes. Everything is in per unit on ``grid.base_mva`` and radians, except that costs
are in $/h with generator output in MW, as in MATPOWER.

Variables (``n = 2 n_bus + 2 n_gen``)::

    x = [Va (n_bus), Vm (n_bus), Pg (n_gen), Qg (n_gen)],     V = Vm * exp(j Va)

Objective (polynomial costs, MATPOWER ``gencost`` model 2, at most quadratic)::

    f(x) = sum_g  c2_g (B Pg_g)^2 + k_g c1_g (B Pg_g) + c0_g      B = base_mva, k_g = cost factor (default 1)

Equality constraints (nodal power balance, split into real and imaginary parts, ``2 n_bus`` rows)::

    G(x) = S_bus(V) + S_d - C_g S_g = 0,   S_bus(V) = diag(V) conj(Y_bus V),  S_d = p_d + j q_d,  S_g = Pg + j Qg

Inequality constraints (branch apparent-power limits, squared form, for every branch with a finite
``rate_a``; one row per branch end)::

    |S_f(V)|^2 <= rate_a^2,   |S_t(V)|^2 <= rate_a^2,     S_f = diag(C_f V) conj(Y_f V),  S_t = diag(C_t V) conj(Y_t V)

and, exactly as MATPOWER's ``makeAang``, linear angle-difference limits
``angmin <= Va_f - Va_t <= angmax`` for branches whose ``angmin`` (``angmax``) is nonzero and greater
than -360 deg (less than 360 deg); a zero limit means "no limit" (none of the book's cases have any).

Variable bounds: ``Va_ref = va0[ref]`` at every reference bus (fixed), ``vmin <= Vm <= vmax``,
``pmin <= Pg <= pmax``, ``qmin <= Qg <= qmax``.

Derivatives
-----------
All first and second derivatives are exact and written element-wise over fixed sparsity patterns
(the same quantities as MATPOWER's ``dSbus_dV``, ``dSbr_dV``, ``d2Sbus_dV2`` and ``d2ASbr_dV2``).
Every term of ``S_bus`` and of a branch flow has the form ``a * Vm_i Vm_k exp(j(Va_i - Va_k))``
(``i != k``) or ``a * Vm_i^2``; their derivatives are closed-form, so the Jacobian and the lower
triangle of the Hessian of the Lagrangian are filled into preallocated structures by index (one
``np.bincount`` for the Hessian). The structures are computed once per grid (:class:`_OPFModel`).

Solver
------
Ipopt 3.14 (MUMPS) through cyipopt's low-level :class:`cyipopt.Problem`; one Ipopt problem is built
per :class:`ACOPF` and reused for every solve (the loads and cost factors are data of the callbacks,
not of the problem structure). Defaults (:data:`DEFAULT_OPTIONS`): ``tol = 1e-8``,
``mu_strategy = monotone``, exact Hessian, MUMPS with 100 % workspace headroom and no forced
iterative refinement. Cold starts use MATPOWER's initial point (flat angles at the reference angle,
every other variable in the middle of its bounds).

Warm starts (``solve(..., warm_start=reference_result)``): the reference's primal point and all its
multipliers are first moved along their first-order sensitivity to the new demand / cost factors
(:class:`_Predictor`; the reduced KKT matrix of the reference is factorised once and reused for
every solve warm-started from it), the prediction is kept only if it is more feasible than the
reference point, and Ipopt starts from the result (``warm_start_init_point = yes``) with options
that depend on how close the start is (:data:`WARM_START_OPTIONS`). A warm start is a deterministic
function of (reference, new data), so datasets do not depend on how samples are split over workers.
If a warm-started solve fails, :class:`ACOPF` retries from the cold start (``fallback=True``).

Success
-------
``OPFResult.success`` is True when Ipopt returns status 0 ("Solve_Succeeded") or 1
("Solved_To_Acceptable_Level") **and** the returned point's largest violation of the nodal balance,
the branch limits and the variable bounds, computed independently from ``grid.Ybus``, is at most
``1e-6`` p.u. (:data:`FEASIBILITY_TOL`). Anything else (infeasible problem, iteration limit,
restoration failure, ...) gives ``success=False``; :meth:`ACOPF.solve` does not raise on
non-convergence.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from pfbook.power.grids import REF, Grid, load_grid

__all__ = ["MATPOWER_OPTIMA", "ACOPF", "OPFResult", "solve_opf", "pypower_runopf", "DEFAULT_OPTIONS", "FEASIBILITY_TOL"]

#: Optimal costs ($/h) MATPOWER publishes for its cases at nominal load (runopf, default options).
MATPOWER_OPTIMA = {"case5": 17551.89, "case14": 8081.53, "case30": 576.89, "case57": 41737.79, "case118": 129660.69}

#: Largest constraint/bound violation (p.u.) of a point reported as ``success=True``.
FEASIBILITY_TOL = 1e-6

#: Ipopt options used unless overridden by ``ipopt_options``. ``tol`` and ``max_iter`` come from
#: the :class:`ACOPF` arguments. ``mu_strategy=monotone`` was measured faster than ``adaptive`` on
#: the book's cases (see benchmarks/bench_opf.py); ``sb=yes`` suppresses Ipopt's banner.
DEFAULT_OPTIONS: dict[str, Any] = {
    "print_level": 0,
    "sb": "yes",
    "linear_solver": "mumps",
    "hessian_approximation": "exact",
    "mu_strategy": "monotone",
    "mumps_mem_percent": 100,  # MUMPS workspace headroom (Ipopt's 1000 % costs page faults)
    "min_refinement_steps": 0,  # refine only when the residual test asks for it
}

#: Ipopt options applied to cold-started solves (MATPOWER's initial point).
COLD_START_OPTIONS: dict[str, Any] = {
    "warm_start_init_point": "no",
    "mu_init": 0.1,
}


def _warm_options(push: float, mu_init: float) -> dict[str, Any]:
    return {
        "warm_start_init_point": "yes",
        "warm_start_bound_push": push,
        "warm_start_bound_frac": push,
        "warm_start_slack_bound_push": push,
        "warm_start_slack_bound_frac": push,
        "warm_start_mult_bound_push": push,
        "mu_init": mu_init,
    }


#: Ipopt options of warm-started solves. "warm_close": the start is a sensitivity prediction
#: (see :class:`_Predictor`) whose constraint violation is at most :data:`CLOSE_VIOLATION`, so it
#: is taken to be near the new optimum: it is barely pushed off its bounds and the barrier parameter
#: starts near its final value. "warm_far": any other warm start (prediction too inaccurate,
#: rejected by its safeguard, or disabled); pushes and barrier parameter are larger. Chosen by
#: measurement on the book's grids with loads scaled by U(0.8, 1.0) (benchmarks/bench_opf.py).
WARM_START_OPTIONS: dict[str, dict[str, Any]] = {
    "warm_close": _warm_options(1e-9, 1e-9),
    "warm_far": _warm_options(1e-3, 1e-3),
}

#: Largest constraint violation (p.u.) of a predicted start for the "warm_close" options.
CLOSE_VIOLATION = 0.2

_INF = 1e20  # Ipopt's "no bound" (nlp_upper_bound_inf defaults to 1e19)


# ====================================================================================== result
@dataclass
class OPFResult:
    """One AC-OPF solution. Arrays are in the grid's bus / generator order, p.u. and radians.

    ``x``, ``mult_g``, ``mult_x_L``, ``mult_x_U`` are Ipopt's primal point and multipliers; pass the
    whole result as ``warm_start=`` to :meth:`ACOPF.solve` to start from it.
    """

    success: bool
    status: int
    message: str
    cost: float  # $/h
    va: np.ndarray
    vm: np.ndarray
    pg: np.ndarray
    qg: np.ndarray
    iterations: int
    solve_time: float  # seconds spent in Ipopt (including the Python callbacks)
    max_violation: float  # largest violation of balance / branch limits / bounds (p.u.)
    warm_started: bool  # the returned point comes from a warm-started Ipopt run
    pd: np.ndarray  # the demand this problem was solved for (p.u., per bus)
    qd: np.ndarray
    cost_factors: np.ndarray | None  # the cost factors it was solved for (None: all 1)
    gen_bus: np.ndarray = field(repr=False)
    base_mva: float = field(default=100.0, repr=False)
    x: np.ndarray = field(default=None, repr=False)
    mult_g: np.ndarray = field(default=None, repr=False)
    mult_x_L: np.ndarray = field(default=None, repr=False)
    mult_x_U: np.ndarray = field(default=None, repr=False)

    @property
    def n_bus(self) -> int:
        return len(self.vm)

    @property
    def p(self) -> np.ndarray:
        """Net active injection per bus (p.u.): generation at the bus minus demand."""
        return np.bincount(self.gen_bus, self.pg, minlength=self.n_bus) - self.pd

    @property
    def q(self) -> np.ndarray:
        """Net reactive injection per bus (p.u.)."""
        return np.bincount(self.gen_bus, self.qg, minlength=self.n_bus) - self.qd

    @property
    def v(self) -> np.ndarray:
        """Complex bus voltages (p.u.)."""
        return self.vm * np.exp(1j * self.va)

    @property
    def lam_p(self) -> np.ndarray:
        """Locational marginal price of active power per bus ($/MWh), MATPOWER's ``LAM_P``."""
        return self.mult_g[: self.n_bus] / self.base_mva

    @property
    def lam_q(self) -> np.ndarray:
        """Marginal price of reactive power per bus ($/MVArh), MATPOWER's ``LAM_Q``."""
        return self.mult_g[self.n_bus : 2 * self.n_bus] / self.base_mva


# ====================================================================================== model
def _angle_limits(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Branches with angle-difference limits and their bounds, following MATPOWER's ``makeAang``."""
    amin, amax = np.degrees(grid.angmin), np.degrees(grid.angmax)
    eps = 1e-9
    has_lo = (amin != 0) & (amin > -360 + eps)
    has_hi = (amax != 0) & (amax < 360 - eps)
    iang = np.flatnonzero(has_lo | has_hi)
    lo = np.where(grid.angmin[iang] != 0, grid.angmin[iang], -_INF)
    hi = np.where(grid.angmax[iang] != 0, grid.angmax[iang], _INF)
    return iang, lo, hi


class _OPFModel:
    """Structure and exact derivatives of MATPOWER's AC-OPF for one grid (the cyipopt callbacks).

    Built once per grid; the per-solve data (``pd``, ``qd``, cost factors) are set with
    :meth:`set_data`. Quantities depending only on ``x`` are cached for the last ``x`` seen, since
    Ipopt evaluates the objective, constraints, Jacobian and Hessian at the same point.
    """

    def __init__(self, grid: Grid):
        bad = np.flatnonzero(grid.cost_model != 2)
        if len(bad):
            raise ValueError(
                f"grid {grid.name!r}: generators {bad.tolist()} (0-based, pfbook order) do not have "
                f"polynomial costs of degree <= 2 (MATPOWER gencost model 2); piecewise-linear and "
                f"higher-degree costs are not supported by pfbook.power.opf"
            )
        if np.any((grid.pmin < 0) & (grid.pmax == 0)) and not grid.name.startswith("pglib_opf_"):
            # MATPOWER holds a dispatchable load's power factor constant, a constraint this OPF does not have;
            # PGLib-OPF's cases are solved as PowerModels.jl (its published baseline) solves them: such a unit
            # is a generator with negative output, and nothing more
            raise ValueError(
                f"grid {grid.name!r} has dispatchable loads (generators with pmin < 0 = pmax), "
                f"whose constant power factor (MATPOWER's model) pfbook.power.opf does not model"
            )
        self.grid = grid
        nb, ng = grid.n_bus, grid.n_gen
        self.nb, self.ng = nb, ng
        self.n = n = 2 * nb + 2 * ng
        self.iva, self.ivm = 0, nb
        self.ipg, self.iqg = 2 * nb, 2 * nb + ng
        B = grid.base_mva
        self.base = B

        # ---------------------------------------------------------------- Ybus pattern (+ diagonal)
        Y = sp.csr_matrix(grid.Ybus)
        pat = sp.csr_matrix((np.ones(Y.nnz), Y.indices, Y.indptr), shape=Y.shape) + sp.eye(nb, format="csr")
        pat.sort_indices()
        pat.sum_duplicates()
        coo = pat.tocoo()
        r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        self.indptr = pat.indptr[:-1].astype(np.int64)  # every row has its diagonal: none is empty
        self.yr, self.yc = r, c
        self.yconj = np.conj(np.asarray(Y[r, c]).ravel())  # conj(Y_ik) on the pattern
        self.ydiag = np.flatnonzero(r == c)  # positions of the diagonal, in bus order
        assert np.array_equal(r[self.ydiag], np.arange(nb))
        off = r != c
        self.yoff = np.flatnonzero(off)

        # ---------------------------------------------------------------- generators, costs
        self.gen_bus = grid.gen_bus.astype(np.int64)
        c2, c1, c0 = grid.cost_coef.T
        self.c2, self.c1, self.c0 = c2.copy(), c1.copy(), c0.copy()

        # ---------------------------------------------------------------- branch limits
        il = np.flatnonzero(np.isfinite(grid.rate_a) & (grid.rate_a > 0))
        self.il = il
        self.nl2 = nl2 = len(il)
        yff, yft, ytf, ytt = grid.branch_admittances
        self.bf, self.bt = grid.f[il].astype(np.int64), grid.t[il].astype(np.int64)
        self.cyff, self.cyft = np.conj(yff[il]), np.conj(yft[il])
        self.cytf, self.cytt = np.conj(ytf[il]), np.conj(ytt[il])
        self.flow_max = grid.rate_a[il] ** 2

        # ---------------------------------------------------------------- angle-difference limits
        iang, alo, ahi = _angle_limits(grid)
        self.iang = iang
        self.nang = nang = len(iang)
        self.af, self.at = grid.f[iang].astype(np.int64), grid.t[iang].astype(np.int64)

        # ---------------------------------------------------------------- constraint rows and bounds
        self.m = 2 * nb + 2 * nl2 + nang
        self.cl = np.r_[np.zeros(2 * nb), np.full(2 * nl2, -_INF), alo]
        self.cu = np.r_[np.zeros(2 * nb), self.flow_max, self.flow_max, ahi]

        # ---------------------------------------------------------------- variable bounds
        refs = np.flatnonzero(grid.bus_type == REF)
        va_lo, va_hi = np.full(nb, -_INF), np.full(nb, _INF)
        va_lo[refs] = va_hi[refs] = grid.va0[refs]
        self.refs = refs
        self.lb = np.r_[va_lo, grid.vmin, grid.pmin, grid.qmin]
        self.ub = np.r_[va_hi, grid.vmax, grid.pmax, grid.qmax]
        self.lb = np.where(np.isfinite(self.lb), self.lb, -_INF)
        self.ub = np.where(np.isfinite(self.ub), self.ub, _INF)
        # MATPOWER's initial point: the middle of the (finite-ised) bounds, flat angles at the ref angle
        ll = np.where(self.lb <= -_INF, -1e10, self.lb)
        uu = np.where(self.ub >= _INF, 1e10, self.ub)
        self.x_cold = (ll + uu) / 2
        self.x_cold[:nb] = grid.va0[refs[0]]

        # ---------------------------------------------------------------- Jacobian structure
        # Rows: P balance (nb) | Q balance (nb) | |Sf|^2 (nl2) | |St|^2 (nl2) | Va_f - Va_t (nang).
        nnzY = len(r)
        ar = np.arange
        gb = self.gen_bus
        jr = [
            r,
            r,
            gb,  # P rows: d/dVa, d/dVm, d/dPg
            nb + r,
            nb + r,
            nb + gb,
        ]  # Q rows: d/dVa, d/dVm, d/dQg
        jc = [c, nb + c, self.ipg + ar(ng), c, nb + c, self.iqg + ar(ng)]
        for k in range(2):  # from end, to end: (Va_f, Va_t, Vm_f, Vm_t)
            rows = 2 * nb + k * nl2 + ar(nl2)
            jr += [rows] * 4
            jc += [self.bf, self.bt, nb + self.bf, nb + self.bt]
        arows = 2 * nb + 2 * nl2 + ar(nang)
        jr += [arows, arows]
        jc += [self.af, self.at]
        self.jrow = np.concatenate(jr).astype(np.int64)
        self.jcol = np.concatenate(jc).astype(np.int64)
        self.nnzY = nnzY
        self._jac = np.empty(len(self.jrow))
        # constant entries: -1 for the generator columns, +-1 for the angle rows
        s, nj = nnzY, len(self.jrow)
        self._jac[2 * s : 2 * s + ng] = -1.0  # P rows, Pg columns
        self._jac[4 * s + ng : 4 * s + 2 * ng] = -1.0  # Q rows, Qg columns
        self._jac[nj - 2 * nang : nj - nang] = 1.0  # angle rows, Va_f
        self._jac[nj - nang :] = -1.0  # angle rows, Va_t
        self._jflow = slice(4 * s + 2 * ng, 4 * s + 2 * ng + 8 * nl2)

        # ---------------------------------------------------------------- Hessian structure
        # Contributions (row, col) in the order the values are produced in hessian(); mapped to the
        # lower triangle and deduplicated once, so a value vector is summed in with one bincount.
        hr, hc = [], []
        i_, k_ = r[off], c[off]  # off-diagonal Ybus terms (i != k)
        A = lambda b: b  # Va index
        M = lambda b: nb + b  # Vm index
        # order: (Va_i,Va_i) (Va_k,Va_k) (Va_i,Va_k) (Va_i,Vm_i) (Va_i,Vm_k) (Va_k,Vm_i) (Va_k,Vm_k) (Vm_i,Vm_k)
        for a_, b_ in [
            (A(i_), A(i_)),
            (A(k_), A(k_)),
            (A(i_), A(k_)),
            (A(i_), M(i_)),
            (A(i_), M(k_)),
            (A(k_), M(i_)),
            (A(k_), M(k_)),
            (M(i_), M(k_)),
        ]:
            hr.append(a_)
            hc.append(b_)
        hr.append(M(ar(nb)))
        hc.append(M(ar(nb)))  # (Vm_i, Vm_i) from diagonal Ybus terms
        # branch blocks over (Va_i, Va_k, Vm_i, Vm_k), i the end whose flow it is, k the other end
        for bi, bk in [(self.bf, self.bt), (self.bt, self.bf)]:
            loc = [A(bi), A(bk), M(bi), M(bk)]
            for p_, q_ in _TRIU4:
                hr.append(loc[p_])
                hc.append(loc[q_])
        hr.append(self.ipg + ar(ng))
        hc.append(self.ipg + ar(ng))  # objective
        hr = np.concatenate(hr).astype(np.int64)
        hc = np.concatenate(hc).astype(np.int64)
        lo_r, lo_c = np.maximum(hr, hc), np.minimum(hr, hc)
        key = lo_r * n + lo_c
        ukey, inv = np.unique(key, return_inverse=True)
        self.hrow, self.hcol = (ukey // n).astype(np.int64), (ukey % n).astype(np.int64)
        self.hmap = inv.astype(np.int64)
        self.nnzH = len(ukey)

        self._xkey: bytes | None = None
        self.set_data(grid.pd, grid.qd, None)

    # ------------------------------------------------------------------ per-solve data
    def lin_for(self, cost_factors: np.ndarray | None) -> np.ndarray:
        """Linear cost coefficient per generator in $/h per p.u. (d cost / d Pg at Pg = 0)."""
        c1 = self.c1 if cost_factors is None else self.c1 * cost_factors
        return c1 * self.base

    def set_data(self, pd: np.ndarray, qd: np.ndarray, cost_factors: np.ndarray | None) -> None:
        self.pd, self.qd = pd, qd
        B = self.base
        self.lin = self.lin_for(cost_factors)
        self.quad = self.c2 * B * B  # cost = quad Pg^2 + lin Pg + c0
        self.c0sum = float(self.c0.sum())
        self.hobj = 2.0 * self.quad

    # ------------------------------------------------------------------ cached state at x
    def _state(self, x: np.ndarray) -> None:
        key = x.tobytes()
        if key == self._xkey:
            return
        nb = self.nb
        va, vm = x[:nb], x[nb : 2 * nb]
        V = vm * np.exp(1j * va)
        self.va, self.vm, self.V = va, vm, V
        # t_ik = V_i conj(Y_ik V_k) on the Ybus pattern; S_bus_i = sum_k t_ik
        t = V[self.yr] * self.yconj * np.conj(V[self.yc])
        self.t = t
        self.S = np.add.reduceat(t, self.indptr)
        if self.nl2:
            Vf, Vt = V[self.bf], V[self.bt]
            vmf, vmt = vm[self.bf], vm[self.bt]
            cross = Vf * np.conj(Vt)
            # S_f = d_f + w_f with d_f = conj(y_ff) Vm_f^2, w_f = conj(y_ft) V_f conj(V_t); same at the to end
            self.df, self.wf = self.cyff * vmf * vmf, self.cyft * cross
            self.dt, self.wt = self.cytt * vmt * vmt, self.cytf * np.conj(cross)
            self.Sf, self.St = self.df + self.wf, self.dt + self.wt
            self.vmf, self.vmt = vmf, vmt
        self._xkey = key

    # ------------------------------------------------------------------ cyipopt callbacks
    def objective(self, x: np.ndarray) -> float:
        pg = x[self.ipg : self.iqg]
        return float(pg @ (self.quad * pg + self.lin)) + self.c0sum

    def gradient(self, x: np.ndarray) -> np.ndarray:
        g = np.zeros(self.n)
        g[self.ipg : self.iqg] = 2.0 * self.quad * x[self.ipg : self.iqg] + self.lin
        return g

    def constraints(self, x: np.ndarray) -> np.ndarray:
        self._state(x)
        nb = self.nb
        pg, qg = x[self.ipg : self.iqg], x[self.iqg :]
        S = self.S
        out = [
            S.real + self.pd - np.bincount(self.gen_bus, pg, minlength=nb),
            S.imag + self.qd - np.bincount(self.gen_bus, qg, minlength=nb),
        ]
        if self.nl2:
            out += [self.Sf.real**2 + self.Sf.imag**2, self.St.real**2 + self.St.imag**2]
        if self.nang:
            out.append(x[self.af] - x[self.at])
        return np.concatenate(out)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.jrow, self.jcol

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        self._state(x)
        t, S, d = self.t, self.S, self.ydiag
        # dS_i/dVa_k = -j t_ik (+ j S_i on the diagonal);  dS_i/dVm_k = t_ik / Vm_k (+ S_i / Vm_i)
        dSa = -1j * t
        dSa[d] += 1j * S
        dSm = t / self.vm[self.yc]
        dSm[d] += S / self.vm
        J = self._jac
        s, ng = self.nnzY, self.ng
        J[:s] = dSa.real
        J[s : 2 * s] = dSm.real
        J[2 * s + ng : 3 * s + ng] = dSa.imag
        J[3 * s + ng : 4 * s + ng] = dSm.imag
        if self.nl2:
            gf = _flow_grad(self.Sf, self.wf, self.df, self.vmf, self.vmt)  # (Va_f, Va_t, Vm_f, Vm_t)
            gt = _flow_grad(self.St, self.wt, self.dt, self.vmt, self.vmf)  # (Va_t, Va_f, Vm_t, Vm_f)
            J[self._jflow] = np.concatenate([gf[0], gf[1], gf[2], gf[3], gt[1], gt[0], gt[3], gt[2]])
        return J.copy()

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.hrow, self.hcol

    def hessian(self, x: np.ndarray, lam: np.ndarray, obj_factor: float) -> np.ndarray:
        self._state(x)
        nb = self.nb
        vm = self.vm
        # Power balance: lamP Re S + lamQ Im S = Re(mu S), mu = lamP - j lamQ; term u_ik = mu_i t_ik
        mu = lam[:nb] - 1j * lam[nb : 2 * nb]
        u = mu[self.yr] * self.t
        uo = u[self.yoff]
        i_, k_ = self.yr[self.yoff], self.yc[self.yoff]
        ure, uim = uo.real, uo.imag
        vi, vk = vm[i_], vm[k_]
        parts = [
            -ure,
            -ure,
            ure,  # (Va_i,Va_i) (Va_k,Va_k) (Va_i,Va_k)
            -uim / vi,
            -uim / vk,
            uim / vi,
            uim / vk,  # (Va_i,Vm_i) (Va_i,Vm_k) (Va_k,Vm_i) (Va_k,Vm_k)
            ure / (vi * vk),  # (Vm_i,Vm_k)
            2.0 * u[self.ydiag].real / (vm * vm),
        ]  # (Vm_i,Vm_i) from the diagonal terms
        if self.nl2:
            o = 2 * nb
            nuf, nut = lam[o : o + self.nl2], lam[o + self.nl2 : o + 2 * self.nl2]
            parts += _flow_hess(self.Sf, self.wf, self.df, self.vmf, self.vmt, nuf)
            parts += _flow_hess(self.St, self.wt, self.dt, self.vmt, self.vmf, nut)
        parts.append(obj_factor * self.hobj)
        return np.bincount(self.hmap, np.concatenate(parts), minlength=self.nnzH)

    # ------------------------------------------------------------------ independent check
    def violation(self, x: np.ndarray) -> float:
        """Largest violation of balance, branch limits, angle limits and bounds at ``x`` (p.u.),
        computed from ``grid.Ybus``/``Yf``/``Yt`` directly (not from the callbacks)."""
        g, nb = self.grid, self.nb
        va, vm = x[:nb], x[nb : 2 * nb]
        pg, qg = x[self.ipg : self.iqg], x[self.iqg :]
        V = vm * np.exp(1j * va)
        mis = V * np.conj(g.Ybus @ V) + (self.pd + 1j * self.qd) - g.Cg @ (pg + 1j * qg)
        viol = [np.abs(mis.real).max(initial=0), np.abs(mis.imag).max(initial=0)]
        if self.nl2:
            sf = np.abs((V[g.f] * np.conj(g.Yf @ V))[self.il])
            st = np.abs((V[g.t] * np.conj(g.Yt @ V))[self.il])
            rate = g.rate_a[self.il]
            viol += [(sf - rate).max(initial=0), (st - rate).max(initial=0)]
        if self.nang:
            dva = va[self.af] - va[self.at]
            viol += [(self.cl[-self.nang :] - dva).max(initial=0), (dva - self.cu[-self.nang :]).max(initial=0)]
        viol += [(self.lb - x).max(initial=0), (x - self.ub).max(initial=0)]
        return float(max(0.0, *viol))


#: The 10 entries (p, q) with p <= q of a symmetric 4x4 block, in the order _flow_hess returns them.
_TRIU4 = [(0, 0), (1, 1), (0, 1), (2, 2), (3, 3), (2, 3), (0, 2), (0, 3), (1, 2), (1, 3)]


def _flow_grad(S, w, d, vmi, vmk):
    """Gradient of |S|^2 for a branch end, S = d + w, d = a Vm_i^2, w = b Vm_i Vm_k e^{j(Va_i-Va_k)},
    with respect to (Va_i, Va_k, Vm_i, Vm_k): 2 Re(conj(S) dS)."""
    cs2 = 2.0 * np.conj(S)
    jw = 1j * w
    return ((cs2 * jw).real, -(cs2 * jw).real, (cs2 * (2 * d + w) / vmi).real, (cs2 * w / vmk).real)


def _flow_hess(S, w, d, vmi, vmk, nu):
    """nu * Hessian of |S|^2 over (Va_i, Va_k, Vm_i, Vm_k), the 10 upper entries in _TRIU4 order.

    H = 2 nu [Re(g g^H) + Re(conj(S) d2S)], g = dS (MATPOWER's d2ASbr_dV2, element-wise).
    """
    g0, g1 = 1j * w, -1j * w
    g2, g3 = (2 * d + w) / vmi, w / vmk
    g = (g0, g1, g2, g3)
    a = 2.0 * nu * np.conj(S)
    n2 = 2.0 * nu
    # second derivatives of S (d2S), same (p, q) order as _TRIU4
    d2 = (
        -w,
        -w,
        w,
        2 * d / (vmi * vmi),
        np.zeros_like(w),
        w / (vmi * vmk),
        1j * w / vmi,
        1j * w / vmk,
        -1j * w / vmi,
        -1j * w / vmk,
    )
    out = []
    for (p, q), s2 in zip(_TRIU4, d2):
        out.append(n2 * (g[p] * np.conj(g[q])).real + (a * s2).real)
    return out


# ====================================================================================== predictor
class _Predictor:
    """First-order (sensitivity) prediction of the optimum for new demand / cost factors.

    Built once from a solved reference point ``(x0, lam0, zL0, zU0)``: with the active set of the
    reference held fixed (bounds and branch limits whose multiplier exceeds their slack), the KKT
    conditions are linearised in the data::

        [ W_FF + dI   J_AF' ] [dx_F]   [ -d(grad f)_F ]
        [ J_AF        -dI   ] [dlam] = [ -d(g)_A      ],     d(g) = (dpd, dqd) in the balance rows

    (W: Hessian of the Lagrangian, J: constraint Jacobian, F: free variables, A: active rows,
    d = 1e-9 regularisation). The matrix depends only on the reference, so it is factorised once
    (SuperLU) and each prediction is one back-solve. The predicted primal point is clipped into the
    bounds; bound multipliers of the active bounds follow from the linearised stationarity.

    Safeguard: the linearisation ignores changes of the active set and the curvature of the
    constraints, and on some grids (case24_ieee_rts, case30, case39 with +-10 % loads) the
    predicted point is *less* feasible than the reference itself. The prediction is therefore only
    used when its largest constraint violation for the new data is below the reference point's;
    otherwise the reference point itself is returned. Deterministic: depends only on the
    reference and the new data.
    """

    def __init__(self, mdl: "_OPFModel", ref: OPFResult):
        import scipy.sparse.linalg as sla

        self.mdl, self.ref = mdl, ref
        n, m = mdl.n, mdl.m
        x0, lam = ref.x, ref.mult_g
        zl, zu = ref.mult_x_L, ref.mult_x_U
        W = sp.coo_matrix((mdl.hessian(x0, lam, 1.0), (mdl.hrow, mdl.hcol)), shape=(n, n)).tocsr()
        W = W + sp.tril(W, -1).T
        J = sp.coo_matrix((mdl.jacobian(x0), (mdl.jrow, mdl.jcol)), shape=(m, n)).tocsr()
        g0 = mdl.constraints(x0)
        fixed = mdl.lb >= mdl.ub
        self.act_l = (mdl.lb > -_INF) & (zl > x0 - mdl.lb) & ~fixed
        self.act_u = (mdl.ub < _INF) & (zu > mdl.ub - x0) & ~fixed
        self.free = np.flatnonzero(~(self.act_l | self.act_u | fixed))
        eq = mdl.cl == mdl.cu
        act_g = eq | ((lam > 0) & (lam > mdl.cu - g0)) | ((lam < 0) & (-lam > g0 - mdl.cl))
        self.A = np.flatnonzero(act_g)
        nf, na = len(self.free), len(self.A)
        d = 1e-9
        K = sp.bmat(
            [
                [W[self.free][:, self.free] + d * sp.eye(nf), J[self.A][:, self.free].T],
                [J[self.A][:, self.free], -d * sp.eye(na)],
            ],
            format="csc",
        )
        self.lu = sla.splu(K)  # raises RuntimeError if singular
        self.W, self.J, self.nf = W, J, nf
        self.lin0 = mdl.lin_for(ref.cost_factors)

    def _violation(self, x: np.ndarray) -> float:
        """Largest constraint violation at ``x`` for the data currently set on the model."""
        mdl = self.mdl
        gv = mdl.constraints(x)
        return float(np.max(np.maximum(mdl.cl - gv, gv - mdl.cu)))

    def __call__(self, pd, qd, lin):
        """``(x, mult_g, mult_x_L, mult_x_U, violation, used)`` for demand ``pd``, ``qd`` and linear
        costs ``lin``: the start point, its largest constraint violation, and whether it is the
        prediction (True) or the reference point (False). The model's
        data must already be set to the new problem (used for the safeguard)."""
        mdl, ref = self.mdl, self.ref
        nb = mdl.nb
        dgrad = np.zeros(mdl.n)
        dgrad[mdl.ipg : mdl.iqg] = lin - self.lin0
        dg = np.zeros(mdl.m)
        dg[:nb], dg[nb : 2 * nb] = pd - ref.pd, qd - ref.qd
        sol = self.lu.solve(np.r_[-dgrad[self.free], -dg[self.A]])
        if not np.all(np.isfinite(sol)):
            return ref.x, ref.mult_g, ref.mult_x_L, ref.mult_x_U, np.inf, False
        dx = np.zeros(mdl.n)
        dx[self.free] = sol[: self.nf]
        dlam = np.zeros(mdl.m)
        dlam[self.A] = sol[self.nf :]
        x1 = np.clip(ref.x + dx, mdl.lb, mdl.ub)
        viol1, viol0 = self._violation(x1), self._violation(ref.x)
        if viol1 >= viol0:  # safeguard (see the class docstring)
            return ref.x, ref.mult_g, ref.mult_x_L, ref.mult_x_U, viol0, False
        r = dgrad + self.W @ dx + self.J.T @ dlam  # change of zL - zU along the step
        zl, zu = ref.mult_x_L.copy(), ref.mult_x_U.copy()
        zl[self.act_l] = np.maximum(zl[self.act_l] + r[self.act_l], 0.0)
        zu[self.act_u] = np.maximum(zu[self.act_u] - r[self.act_u], 0.0)
        return x1, ref.mult_g + dlam, zl, zu, viol1, True


# ====================================================================================== solver
class ACOPF:
    """A reusable AC-OPF solver for one grid (structures built once; see the module docstring).

    ``predictor`` (default True): when warm-starting, first move the reference solution along its
    first-order sensitivity to the new demand (:class:`_Predictor`, factorised once per reference),
    then hand that point to Ipopt. ``fallback`` (default True): if a warm-started solve does not
    succeed, solve again from the cold start and return that result.

    Picklable: the Ipopt problem is rebuilt lazily after unpickling. Not thread-safe: use one
    instance per thread/process.
    """

    def __init__(
        self,
        grid: Any,
        *,
        tol: float = 1e-8,
        max_iter: int = 200,
        ipopt_options: dict | None = None,
        predictor: bool = True,
        fallback: bool = True,
    ):
        self.grid = load_grid(grid)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.ipopt_options = dict(ipopt_options or {})
        self.predictor = bool(predictor)
        self.fallback = bool(fallback)
        self._model = _OPFModel(self.grid)
        self._problem = None
        self._mode: str | None = None
        self._pred: tuple[OPFResult, _Predictor | None] | None = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        return {
            "grid": self.grid,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "ipopt_options": self.ipopt_options,
            "predictor": self.predictor,
            "fallback": self.fallback,
        }

    def __setstate__(self, state: dict) -> None:
        grid = state.pop("grid")
        self.__init__(grid, **state)

    def __repr__(self) -> str:
        return f"ACOPF({self.grid.name!r}, tol={self.tol:g})"

    @property
    def n_var(self) -> int:
        return self._model.n

    @property
    def n_con(self) -> int:
        return self._model.m

    # ------------------------------------------------------------------ Ipopt problem
    def _get_problem(self, mode: str):
        """The (reused) Ipopt problem with the options of ``mode`` ('cold' or 'warm') applied."""
        if self._problem is None:
            import cyipopt

            # cyipopt logs every callback at INFO unless told the logger's level; ask it once
            cyipopt.set_logging_level()
            mdl = self._model
            prob = cyipopt.Problem(
                n=mdl.n, m=mdl.m, problem_obj=self._callbacks(), lb=mdl.lb, ub=mdl.ub, cl=mdl.cl, cu=mdl.cu
            )
            opts = dict(DEFAULT_OPTIONS, tol=self.tol, max_iter=self.max_iter)
            opts.update(self.ipopt_options)
            for k, v in opts.items():
                prob.add_option(k, v)
            self._problem, self._mode = prob, None
        if self._mode != mode:
            # the start options are switched per solve; options given by the user take precedence
            opts = COLD_START_OPTIONS if mode == "cold" else WARM_START_OPTIONS[mode]
            for k, v in opts.items():
                if k not in self.ipopt_options:
                    self._problem.add_option(k, v)
            self._mode = mode
        return self._problem

    def _callbacks(self):
        mdl = self._model
        counter = self._iter = [0]

        class _Callbacks:
            objective = mdl.objective
            gradient = mdl.gradient
            constraints = mdl.constraints
            jacobian = mdl.jacobian
            jacobianstructure = mdl.jacobianstructure
            hessian = mdl.hessian
            hessianstructure = mdl.hessianstructure

            @staticmethod
            def intermediate(alg_mod, iter_count, *args):
                counter[0] = iter_count
                return True

        return _Callbacks()

    def _predictor_for(self, ref: OPFResult) -> "_Predictor | None":
        if self._pred is not None and self._pred[0] is ref:
            return self._pred[1]
        pred = None
        if ref.success:
            try:
                pred = _Predictor(self._model, ref)
            except (RuntimeError, ValueError, np.linalg.LinAlgError):  # singular reduced KKT matrix
                pred = None
        self._pred = (ref, pred)
        return pred

    # ------------------------------------------------------------------ input checks
    def _vector(self, v, n: int, what: str, default: np.ndarray | None) -> np.ndarray | None:
        if v is None:
            return default
        a = np.asarray(v, dtype=float)
        if a.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},) for grid {self.grid.name!r}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(
                f"{what} contains NaN or infinite values (at positions {np.flatnonzero(~np.isfinite(a))[:10].tolist()})"
            )
        return a

    def _check_warm(self, ws: Any) -> None:
        mdl = self._model
        if not isinstance(ws, OPFResult):
            raise ValueError(f"warm_start must be an OPFResult, got {type(ws).__name__}")
        if ws.x is None or len(ws.x) != mdl.n or len(ws.mult_g) != mdl.m or len(ws.pd) != mdl.nb:
            raise ValueError(f"warm_start does not come from an OPF of grid {self.grid.name!r} (wrong sizes)")
        if not (
            np.all(np.isfinite(ws.x))
            and np.all(np.isfinite(ws.mult_g))
            and np.all(np.isfinite(ws.mult_x_L))
            and np.all(np.isfinite(ws.mult_x_U))
        ):
            raise ValueError("warm_start contains NaN or infinite values")

    # ------------------------------------------------------------------ solve
    def solve(self, pd=None, qd=None, cost_factors=None, warm_start: OPFResult | None = None) -> OPFResult:
        """Solve the AC-OPF for per-bus demand ``pd``, ``qd`` (p.u., default the grid's nominal).

        ``cost_factors`` (length ``n_gen``) multiplies each generator's linear cost coefficient.
        ``warm_start`` is a previous :class:`OPFResult` of this grid (any demand) to start from.
        Raises ValueError on malformed input; never raises on non-convergence (check ``success``).
        """
        g, mdl = self.grid, self._model
        pd = self._vector(pd, g.n_bus, "pd", g.pd)
        qd = self._vector(qd, g.n_bus, "qd", g.qd)
        cf = self._vector(cost_factors, g.n_gen, "cost_factors", None)
        if warm_start is not None:
            self._check_warm(warm_start)
        mdl.set_data(pd, qd, cf)
        gc_was_on = gc.isenabled()
        gc.disable()  # the callbacks allocate many short-lived objects; no cycles arise
        try:
            total_it, total_t = 0, 0.0
            if warm_start is not None:
                start = (warm_start.x, warm_start.mult_g, warm_start.mult_x_L, warm_start.mult_x_U)
                mode = "warm_far"
                t0 = time.perf_counter()
                if self.predictor:
                    pred = self._predictor_for(warm_start)
                    if pred is not None:
                        *start, viol, used = pred(pd, qd, mdl.lin)
                        if used and viol <= CLOSE_VIOLATION:
                            mode = "warm_close"
                x, info, it, dt = self._run(mode, *start)
                res = self._polished(self._result(x, info, pd, qd, cf, it, time.perf_counter() - t0, warm=True))
                if res.success or not self.fallback:
                    return res
                total_it, total_t = res.iterations, res.solve_time
            x, info, it, dt = self._run("cold", mdl.x_cold)
            return self._polished(self._result(x, info, pd, qd, cf, it + total_it, dt + total_t, warm=False))
        finally:
            if gc_was_on:
                gc.enable()

    def _polished(self, res: OPFResult) -> OPFResult:
        """``res`` again from its own point with Ipopt's constraint tolerance below :data:`FEASIBILITY_TOL`, when
        Ipopt called it converged but its violation is above that tolerance (Ipopt's default ``constr_viol_tol``
        is 1e-4); any other result as it is."""
        if (
            res.success
            or res.status not in (0, 1)
            or not np.isfinite(res.max_violation)
            or "constr_viol_tol" in self.ipopt_options
        ):
            return res
        prob = self._get_problem("warm_close")
        prob.add_option("constr_viol_tol", 0.1 * FEASIBILITY_TOL)
        try:
            x, info, it, dt = self._run("warm_close", res.x, res.mult_g, res.mult_x_L, res.mult_x_U)
        finally:
            prob.add_option("constr_viol_tol", 1e-4)  # Ipopt's default, for the next solve
        out = self._result(
            x, info, res.pd, res.qd, res.cost_factors, res.iterations + it, res.solve_time + dt, warm=res.warm_started
        )
        return out if out.success else res

    def _run(self, mode: str, x0, lam=None, zl=None, zu=None):
        prob = self._get_problem(mode)
        self._model._xkey = None
        self._iter[0] = 0
        t0 = time.perf_counter()
        if mode != "cold":
            x, info = prob.solve(x0, lagrange=lam, zl=zl, zu=zu)
        else:
            x, info = prob.solve(x0)
        return x, info, int(self._iter[0]), time.perf_counter() - t0

    def _result(self, x, info, pd, qd, cf, iterations, dt, warm) -> OPFResult:
        mdl = self._model
        nb = mdl.nb
        status = int(info["status"])
        msg = info["status_msg"]
        msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        finite = bool(np.all(np.isfinite(x)))
        viol = mdl.violation(x) if finite else float("inf")
        success = status in (0, 1) and viol <= FEASIBILITY_TOL
        return OPFResult(
            success=success,
            status=status,
            message=msg,
            cost=float(mdl.objective(x)) if finite else float("nan"),
            va=x[:nb].copy(),
            vm=x[nb : 2 * nb].copy(),
            pg=x[mdl.ipg : mdl.iqg].copy(),
            qg=x[mdl.iqg :].copy(),
            iterations=iterations,
            solve_time=dt,
            max_violation=viol,
            warm_started=warm,
            pd=np.array(pd, dtype=float),
            qd=np.array(qd, dtype=float),
            cost_factors=None if cf is None else np.array(cf, dtype=float),
            gen_bus=mdl.gen_bus,
            base_mva=mdl.base,
            x=np.array(x, dtype=float),
            mult_g=np.array(info["mult_g"], dtype=float),
            mult_x_L=np.array(info["mult_x_L"], dtype=float),
            mult_x_U=np.array(info["mult_x_U"], dtype=float),
        )


def solve_opf(grid: Any, pd=None, qd=None, cost_factors=None, **kwargs) -> OPFResult:
    """One-off AC-OPF: ``ACOPF(grid, **kwargs).solve(pd, qd, cost_factors)``; ``grid`` may be a name."""
    return ACOPF(grid, **kwargs).solve(pd, qd, cost_factors)


# ====================================================================================== reference
@contextlib.contextmanager
def _pypower_empty_limit_fix():
    """Let PYPOWER 5.1 solve OPFs whose branches have no flow limits (case14, case57, case118, ...).

    With current numpy, ``opf_consfcn`` returns a 2-D empty array for "no inequality constraints" and
    ``opf_hessfcn`` builds empty sparse matrices it cannot size; both crash. This patches the three
    functions to return the correctly shaped empty values (mathematically the same problem) and
    restores them afterwards. Nothing changes when some branch has a limit.
    """
    import pypower.opf_hessfcn as ph
    import pypower.pipsopf_solver as ps

    cons0, dsbr0, d2_0 = ps.opf_consfcn, ph.dSbr_dV, ph.d2ASbr_dV2

    def cons(*a, **k):
        out = cons0(*a, **k)
        if np.ndim(out[0]) == 2 and np.size(out[0]) == 0:
            out = (np.zeros(0),) + tuple(out[1:])
        return out

    def dsbr(branch, Yf, Yt, V):
        if branch.shape[0] == 0:
            z = sp.csr_matrix((0, len(V)))
            return z, z, z, z, np.zeros(0, complex), np.zeros(0, complex)
        return dsbr0(branch, Yf, Yt, V)

    def d2(dSbr_dVa, dSbr_dVm, Sbr, Cbr, Ybr, V, lam):
        if len(lam) == 0:
            z = sp.csr_matrix((len(V), len(V)))
            return z, z, z, z
        return d2_0(dSbr_dVa, dSbr_dVm, Sbr, Cbr, Ybr, V, lam)

    ps.opf_consfcn, ph.dSbr_dV, ph.d2ASbr_dV2 = cons, dsbr, d2
    try:
        yield
    finally:
        ps.opf_consfcn, ph.dSbr_dV, ph.d2ASbr_dV2 = cons0, dsbr0, d2_0


def pypower_runopf(grid: Any, pd=None, qd=None, ppc: dict | None = None) -> dict:
    """Reference solve with PYPOWER's ``runopf`` (MATPOWER's MIPS port) on ``grid.to_ppc()``.

    ``pd``/``qd`` (p.u., per bus) replace the demand. Returns PYPOWER's result dict (``f`` is the
    cost in $/h, ``success``, ``et`` ...). Used by the tests and the benchmark as ground truth.
    """
    import warnings

    from pypower.api import ppoption, runopf

    grid = load_grid(grid)
    ppc = grid.to_ppc() if ppc is None else ppc
    if pd is not None:
        ppc["bus"][:, 2] = np.asarray(pd) * grid.base_mva
    if qd is not None:
        ppc["bus"][:, 3] = np.asarray(qd) * grid.base_mva
    with _pypower_empty_limit_fix(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runopf(ppc, ppoption(VERBOSE=0, OUT_ALL=0))
