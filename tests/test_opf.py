"""Tests of pfbook.power.opf: MATPOWER's published optima, agreement with PYPOWER's runopf, feasibility of
the returned points (checked independently of the solver), warm starts, failures and bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from pfbook.power.grids import BOOK_GRIDS, Grid, _case_size, load_grid, pglib_baseline, pglib_cases
from pfbook.power.opf import ACOPF, FEASIBILITY_TOL, OPFResult, _OPFModel, pypower_runopf, solve_opf

#: MATPOWER's published optimal costs ($/h) of its case files (MATPOWER 7 ``runopf``).
PUBLISHED = {"case5": 17551.89, "case14": 8081.53, "case30": 576.89, "case57": 41737.79, "case118": 129660.69}


def random_loads(grid: Grid, seed: int, lo: float = 0.8, hi: float = 1.0):
    """Per-load factors U(lo, hi) applied to pd and qd of the buses with load (as the benchmark does)."""
    rng = np.random.default_rng(seed)
    f = np.ones(grid.n_bus)
    f[grid.load_bus] = rng.uniform(lo, hi, grid.n_load)
    return grid.pd * f, grid.qd * f


@pytest.fixture(scope="module")
def solvers():
    """One ACOPF per grid, with its nominal solution (the dataset generator's warm start)."""
    cache = {}

    def get(name):
        if name not in cache:
            opf = ACOPF(name)
            cache[name] = (opf, opf.solve())
        return cache[name]

    return get


def check_feasible(grid: Grid, r: OPFResult, tol: float = 1e-6) -> None:
    """Feasibility of an OPF point computed from the grid's own matrices, not the solver's callbacks."""
    V = r.vm * np.exp(1j * r.va)
    s_bus = V * np.conj(grid.Ybus @ V)
    s_inj = grid.Cg @ (r.pg + 1j * r.qg) - (r.pd + 1j * r.qd)
    assert np.abs(s_bus - s_inj).max() < tol
    assert np.allclose(s_inj.real, r.p) and np.allclose(s_inj.imag, r.q)
    for x, lo, hi in [(r.vm, grid.vmin, grid.vmax), (r.pg, grid.pmin, grid.pmax), (r.qg, grid.qmin, grid.qmax)]:
        assert np.all(x >= lo - tol) and np.all(x <= hi + tol)
    assert np.allclose(r.va[grid.bus_type == 3], grid.va0[grid.bus_type == 3], atol=tol)
    lim = np.isfinite(grid.rate_a)
    sf = np.abs(V[grid.f] * np.conj(grid.Yf @ V))
    st = np.abs(V[grid.t] * np.conj(grid.Yt @ V))
    assert np.all(sf[lim] <= grid.rate_a[lim] + tol) and np.all(st[lim] <= grid.rate_a[lim] + tol)
    assert np.isclose(r.cost, grid.generation_cost(r.pg), rtol=1e-12)


# ---------------------------------------------------------------------------------------- optima
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_optimum(name, solvers):
    _, r = solvers(name)
    assert r.success and r.status == 0
    assert abs(r.cost - PUBLISHED[name]) / PUBLISHED[name] < 1e-4


@pytest.mark.parametrize("name", BOOK_GRIDS)
def test_nominal_matches_pypower_on_every_book_grid(name, solvers):
    opf, r = solvers(name)
    ref = pypower_runopf(opf.grid)
    assert r.success and ref["success"]
    assert abs(r.cost - ref["f"]) / ref["f"] < 1e-6
    check_feasible(opf.grid, r)


@pytest.mark.parametrize("name", ["case14", "case57", "case118"])
def test_random_loads_match_pypower(name, solvers):
    opf, nominal = solvers(name)
    for seed in (1, 2):
        pd, qd = random_loads(opf.grid, seed)
        ref = pypower_runopf(opf.grid, pd, qd)
        cold = opf.solve(pd, qd)
        warm = opf.solve(pd, qd, warm_start=nominal)
        assert ref["success"] and cold.success and warm.success
        assert abs(cold.cost - ref["f"]) / ref["f"] < 1e-6
        assert abs(warm.cost - ref["f"]) / ref["f"] < 1e-6
        # dispatch: PYPOWER stops at its own 1e-6 tolerances, so agree to 0.1 MW only
        assert np.abs(cold.pg - ref["gen"][:, 1] / opf.grid.base_mva).max() < 1e-3


@pytest.mark.parametrize("name", ["case30", "case118", "case300"])
def test_returned_points_are_feasible(name, solvers):
    opf, nominal = solvers(name)
    check_feasible(opf.grid, nominal)
    for seed in (3, 4):
        r = opf.solve(*random_loads(opf.grid, seed), warm_start=nominal)
        assert r.success and r.max_violation <= FEASIBILITY_TOL
        check_feasible(opf.grid, r)


def test_branch_limits_bind_on_case30(solvers):
    """case30 has binding flow limits at the optimum: the limit must hold with equality there."""
    opf, r = solvers("case30")
    g = opf.grid
    V = r.v
    sf = np.abs(V[g.f] * np.conj(g.Yf @ V))
    st = np.abs(V[g.t] * np.conj(g.Yt @ V))
    assert np.max(np.maximum(sf, st) / g.rate_a) > 1 - 1e-6


def test_cost_factors_match_pypower(solvers):
    opf, nominal = solvers("case57")
    g = opf.grid
    cf = np.random.default_rng(5).uniform(0.7, 1.3, g.n_gen)
    ppc = g.to_ppc()
    ppc["gencost"][:, 5] *= cf  # c1 of the 3-coefficient polynomial
    ref = pypower_runopf(g, ppc=ppc)
    for r in (opf.solve(cost_factors=cf), opf.solve(cost_factors=cf, warm_start=nominal)):
        assert r.success and abs(r.cost - ref["f"]) / ref["f"] < 1e-6
        assert np.isclose(r.cost, g.generation_cost(r.pg, cf), rtol=1e-12)


def test_angle_difference_limits_match_pypower():
    g = load_grid("case118")
    ppc = g.to_ppc()
    ppc["branch"][:, 11], ppc["branch"][:, 12] = -6.0, 6.0  # degrees; binds on case118
    g6 = Grid.from_ppc(ppc, name="case118_ang6")
    r = ACOPF(g6).solve()
    ref = pypower_runopf(g6)
    assert r.success and ref["success"]
    assert abs(r.cost - ref["f"]) / ref["f"] < 1e-6
    assert r.cost > 129660.69 * (1 + 1e-4)  # the limits change the optimum
    assert np.abs(r.va[g6.f] - r.va[g6.t]).max() <= np.radians(6.0) + 1e-6


# ---------------------------------------------------------------------------------------- derivatives
def test_derivatives_match_finite_differences():
    g = load_grid("case30")
    m = _OPFModel(g)
    rng = np.random.default_rng(0)
    x = m.x_cold.copy()
    x[: g.n_bus] += rng.normal(0, 0.1, g.n_bus)
    x[g.n_bus :] += rng.normal(0, 0.05, m.n - g.n_bus)
    lam = rng.normal(size=m.m)

    def jac(x):
        return sp.coo_matrix((m.jacobian(x), (m.jrow, m.jcol)), shape=(m.m, m.n)).toarray()

    J, h = jac(x), 1e-6
    Jn = np.zeros_like(J)
    Hn = np.zeros((m.n, m.n))
    for i in range(m.n):
        e = np.zeros(m.n)
        e[i] = h
        Jn[:, i] = (m.constraints(x + e) - m.constraints(x - e)) / (2 * h)
        Hn[:, i] = ((m.gradient(x + e) + jac(x + e).T @ lam) - (m.gradient(x - e) + jac(x - e).T @ lam)) / (2 * h)
        assert np.isclose(m.gradient(x)[i], (m.objective(x + e) - m.objective(x - e)) / (2 * h), rtol=1e-5, atol=1e-3)
    H = sp.coo_matrix((m.hessian(x, lam, 1.0), (m.hrow, m.hcol)), shape=(m.n, m.n)).toarray()
    assert np.all(m.hrow >= m.hcol)  # lower triangle only
    H = H + np.tril(H, -1).T
    assert np.abs(J - Jn).max() < 1e-6 * max(1, np.abs(J).max())
    assert np.abs(H - Hn).max() < 1e-6 * max(1, np.abs(H).max())


# ---------------------------------------------------------------------------------------- warm starts
def test_warm_start_same_optimum_fewer_iterations(solvers):
    opf, nominal = solvers("case118")
    cold_it, warm_it = [], []
    for seed in (6, 7, 8):
        pd, qd = random_loads(opf.grid, seed)
        cold = opf.solve(pd, qd)
        warm = opf.solve(pd, qd, warm_start=nominal)
        assert cold.success and warm.success and warm.warm_started
        assert abs(warm.cost - cold.cost) / cold.cost < 1e-8
        assert np.abs(warm.x - cold.x).max() < 1e-4
        cold_it.append(cold.iterations)
        warm_it.append(warm.iterations)
    assert sum(warm_it) < sum(cold_it)


def test_results_do_not_depend_on_solve_order():
    """Datasets must not depend on how samples are split over workers: a solve warm-started from the
    nominal point gives the same bits whatever was solved before with the same solver object."""
    g = load_grid("case57")
    a, b = random_loads(g, 9), random_loads(g, 10)
    s1 = ACOPF(g)
    nom1 = s1.solve()
    r1 = [s1.solve(*a, warm_start=nom1), s1.solve(*b, warm_start=nom1)]
    s2 = pickle.loads(pickle.dumps(ACOPF(g)))  # also: solvers survive pickling (worker processes)
    nom2 = s2.solve()
    r2 = [s2.solve(*b, warm_start=nom2), s2.solve(*a, warm_start=nom2)]
    assert np.array_equal(nom1.x, nom2.x)
    assert np.array_equal(r1[0].x, r2[1].x) and np.array_equal(r1[1].x, r2[0].x)
    assert r1[0].cost == r2[1].cost


# ---------------------------------------------------------------------------------------- failures
def test_infeasible_load_returns_failure():
    g = load_grid("case5")
    r = ACOPF(g, max_iter=100).solve(g.pd * 5, g.qd * 5)
    assert isinstance(r, OPFResult) and not r.success and not r.warm_started


def test_impossible_voltage_bounds_return_failure():
    ppc = load_grid("case5").to_ppc()
    ppc["bus"][2, 11], ppc["bus"][2, 12] = 0.9, 1.1  # VMAX < VMIN at one bus
    r = solve_opf(Grid.from_ppc(ppc, name="case5_bad_v"))
    assert not r.success


def test_warm_start_from_failed_result_falls_back_cleanly(solvers):
    opf, nominal = solvers("case14")
    bad = opf.solve(opf.grid.pd * 8, opf.grid.qd * 8)
    assert not bad.success
    r = opf.solve(*random_loads(opf.grid, 11), warm_start=bad)
    assert r.success


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_value_error(solvers):
    opf, nominal = solvers("case14")
    n = opf.grid.n_bus
    with pytest.raises(ValueError, match="pd must have shape"):
        opf.solve(np.ones(n - 1))
    with pytest.raises(ValueError, match="qd contains NaN"):
        opf.solve(qd=np.full(n, np.nan))
    with pytest.raises(ValueError, match="cost_factors"):
        opf.solve(cost_factors=np.ones(opf.grid.n_gen + 1))
    with pytest.raises(ValueError, match="warm_start"):
        opf.solve(warm_start=solvers("case5")[1])
    with pytest.raises(ValueError, match="warm_start"):
        opf.solve(warm_start="nominal")


def test_piecewise_linear_costs_are_rejected():
    ppc = load_grid("case9").to_ppc()
    gencost = np.zeros((3, 8))
    gencost[0, :7] = [2, 0, 0, 3, 0.11, 5, 150]
    gencost[1, :8] = [1, 0, 0, 2, 0, 0, 200, 1000]  # piecewise linear: (0 MW, 0 $/h), (200 MW, 1000 $/h)
    gencost[2, :7] = [2, 0, 0, 3, 0.1225, 1, 335]
    ppc["gencost"] = gencost
    g = Grid.from_ppc(ppc, name="case9_pwl")
    with pytest.raises(ValueError, match=r"generators \[1\]"):
        ACOPF(g)


# PGLib-OPF's cases up to 300 buses in all three sets (typical, __api, __sad): about 55 solves of under a second
PGLIB_SMALL = [n for n in pglib_cases() if _case_size(n) <= 300]


@pytest.mark.parametrize("name", PGLIB_SMALL)
def test_nominal_opf_equals_the_published_pglib_optimum(name):
    """PGLib's BASELINE.md prints the AC optimum of PowerModels.jl + Ipopt to 5 significant digits."""
    r = solve_opf(name)
    assert r.success, r.message
    assert float(f"{r.cost:.4e}") == pglib_baseline()[name]


def test_the_issue_cases_match_pglib():
    """The cases the DiffOPF paper uses, by value (a guard against a baseline table read wrongly)."""
    for name, cost in (
        ("pglib_opf_case5_pjm", 17552),
        ("pglib_opf_case14_ieee", 2178.1),
        ("pglib_opf_case24_ieee_rts", 63352),
        ("pglib_opf_case118_ieee", 97214),
        ("pglib_opf_case5_pjm__api", 78950),
    ):
        assert float(f"{solve_opf(name).cost:.4e}") == cost


def test_dispatchable_loads_are_refused_outside_pglib():
    ppc = load_grid("pglib_opf_case240_pserc").to_ppc()
    with pytest.raises(ValueError, match="dispatchable loads"):
        ACOPF(Grid.from_ppc(ppc, name="my_case240"))


def test_a_converged_solve_above_the_feasibility_tolerance_is_polished():
    """Ipopt stops on case179_goc__api at 1.2e-6 p.u. violation (its default constr_viol_tol is 1e-4)."""
    r = solve_opf("pglib_opf_case179_goc__api")
    assert r.success and r.max_violation <= FEASIBILITY_TOL
    raw = solve_opf("pglib_opf_case179_goc__api", ipopt_options={"constr_viol_tol": 1e-4})
    assert not raw.success and raw.max_violation > FEASIBILITY_TOL  # what the polish repairs
