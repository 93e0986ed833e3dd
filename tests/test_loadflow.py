"""The batched load-flow problem (20) of DiffOPF: derivatives, solutions, agreement with Ipopt, failure reports."""

import numpy as np
import pytest
import torch

from pfbook.power.grids import load_grid
from pfbook.power.loadflow import (
    _CHOLESKY_MIN,
    MIN_ROWS_PER_WORKER,
    LoadFlowProblem,
    _BlockSystem,
    compare_with_reference,
    d2sbus_dv2,
    dsbus_dv,
    reference_solve,
)
from pfbook.power.opf import ACOPF
from pfbook.power.physics import bus_power


def _opf_points(name, n, seed=0):
    """n AC-OPF solutions at random loads: (pg, qg, pd, qd) per row, all per unit."""
    g = load_grid(name)
    solver = ACOPF(g)
    nominal = solver.solve()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        f = rng.uniform(0.8, 1.0, g.n_load)
        pd, qd = g.pd.copy(), g.qd.copy()
        pd[g.load_bus] *= f
        qd[g.load_bus] *= f
        r = solver.solve(pd=pd, qd=qd, warm_start=nominal)
        assert r.success
        rows.append((r.pg, r.qg, pd[g.load_bus], qd[g.load_bus]))
    return [np.array(a) for a in zip(*rows)]


@pytest.fixture(scope="module")
def case5_points():
    return _opf_points("case5", 6)


def test_derivatives_match_autograd():
    lf = LoadFlowProblem("case14")
    n = lf.n
    gen = torch.Generator().manual_seed(0)
    th = 0.1 * torch.randn(2, n, generator=gen, dtype=torch.float64)
    vm = 1 + 0.05 * torch.randn(2, n, generator=gen, dtype=torch.float64)
    V = torch.polar(vm, th)
    S, dVa, dVm = dsbus_dv(lf.Y, V)
    pc, qc = bus_power(lf.grid, vm, th)  # the branch-wise physics of pfbook.power.physics
    assert torch.allclose(S.real, pc, atol=1e-10) and torch.allclose(S.imag, qc, atol=1e-10)

    def s_of(z):
        V = torch.polar(z[n:], z[:n])
        s = V * (lf.Y @ V).conj()
        return torch.cat([s.real, s.imag])

    z = torch.cat([th[0], vm[0]])
    J = torch.autograd.functional.jacobian(s_of, z)
    Jm = torch.cat([dVa[0], dVm[0]], 1)
    assert torch.allclose(J, torch.cat([Jm.real, Jm.imag]), atol=1e-9)
    lam = torch.randn(2 * n, generator=gen, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda z: (lam * s_of(z)).sum(), z)
    Hm = d2sbus_dv2(lf.Y, V[:1], torch.complex(lam[None, :n], -lam[None, n:])).real[0]
    assert torch.allclose(H, Hm, atol=1e-8 * H.abs().max())


def test_feasible_warm_start_is_its_own_projection(case5_points):
    pg, qg, pd, qd = case5_points
    r = LoadFlowProblem("case5").solve(pg, qg, pd, qd)
    assert r.converged.all()
    assert r.distance.max() < 1e-12
    assert np.abs(r.pg - pg).max() < 1e-7 and np.abs(r.qg - qg).max() < 1e-7
    assert r.balance.max() < 1e-8


@pytest.mark.parametrize("name", ["case5", "case14"])
def test_agrees_with_ipopt_reference(name):
    pg, qg, pd, qd = _opf_points(name, 3, seed=1)
    rng = np.random.default_rng(2)
    pgw = pg * (1 + 0.05 * rng.standard_normal(pg.shape))
    qgw = qg + 0.05 * rng.standard_normal(qg.shape)
    r = LoadFlowProblem(name).solve(pgw, qgw, pd, qd)
    assert r.converged.all()
    assert r.balance.max() < 1e-8
    for k in range(len(pg)):
        ref = reference_solve(name, pgw[k], qgw[k], pd[k], qd[k])
        assert ref["status"] in (0, 1), ref["message"]
        for key in ("pg", "qg", "v", "theta"):
            assert np.abs(getattr(r, key)[k] - ref[key]).max() < 1e-6, key
        assert abs(r.distance[k] - ref["distance"]) < 1e-6
        assert r.distance[k] > 1e-6  # a perturbed warm start is not feasible as it is


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_chunks_give_the_same_answer(case5_points, backend):
    pg, qg, pd, qd = case5_points
    rng = np.random.default_rng(3)
    pgw = pg * (1 + 0.05 * rng.standard_normal(pg.shape))
    lf = LoadFlowProblem("case5", backend=backend)
    a = lf.solve(pgw, qg, pd, qd)
    b = lf.solve(pgw, qg, pd, qd, chunk=2)
    assert np.allclose(a.pg, b.pg, atol=1e-10) and np.array_equal(a.converged, b.converged)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_failures_are_reported_not_hidden(case5_points, backend):
    pg, qg, pd, qd = case5_points
    r = LoadFlowProblem("case5", backend=backend).solve(pg * 1.3, qg, pd, qd, max_iter=0, lm_iters=0)
    assert r.n_failed == len(pg) and not r.converged.any()
    assert r.retried == len(pg)  # each was tried a second time before it counted as failed
    assert "failed" in repr(r)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_quick_and_careful_levenberg_marquardt_agree(backend):
    """The default LM moves on once a weight gains under 1e-6; the careful one (1e-10) finds the same optima."""
    pg, qg, pd, qd = (np.repeat(a, 8, axis=0) for a in _opf_points("case14", 5, seed=6))
    rng = np.random.default_rng(7)
    pgw, qgw = pg * (1 + 0.1 * rng.standard_normal(pg.shape)), qg + 0.1 * rng.standard_normal(qg.shape)
    lf = LoadFlowProblem("case14", backend=backend)
    quick, careful = lf.solve(pgw, qgw, pd, qd), lf.solve(pgw, qgw, pd, qd, lm_stall=1e-10)
    assert careful.converged.all() and quick.converged.all() and careful.retried == 0
    for key in ("pg", "qg", "v", "theta"):
        assert np.abs(getattr(quick, key) - getattr(careful, key)).max() < 1e-8, key
    with pytest.raises(ValueError, match="lm_stall"):
        lf.solve(pgw, qgw, pd, qd, lm_stall=-1)


def test_bad_input_is_a_clear_error(case5_points):
    pg, qg, pd, qd = case5_points
    lf = LoadFlowProblem("case5")
    with pytest.raises(ValueError, match="generators"):
        lf.solve(pg[:, :3], qg[:, :3], pd, qd)
    with pytest.raises(ValueError, match="loads"):
        lf.solve(pg, qg, pd[:, :2], qd[:, :2])
    bad = pg.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lf.solve(bad, qg, pd, qd)


@pytest.mark.parametrize("name", ["case14", "case30"])
def test_sparse_backend_agrees_with_dense(name):
    # 40 warm starts (4 loads x 10 perturbations): enough for the batched Cholesky of the sparse LM stage
    pg, qg, pd, qd = (np.repeat(a, 10, axis=0) for a in _opf_points(name, 4, seed=4))
    rng = np.random.default_rng(5)
    pgw = pg * (1 + 0.05 * rng.standard_normal(pg.shape))
    qgw = qg + 0.05 * rng.standard_normal(qg.shape)
    dense = LoadFlowProblem(name, backend="dense").solve(pgw, qgw, pd, qd)
    sparse = LoadFlowProblem(name, backend="sparse").solve(pgw, qgw, pd, qd)
    assert dense.converged.all() and np.array_equal(dense.converged, sparse.converged)
    for key in ("pg", "qg", "v", "theta"):
        assert np.abs(getattr(sparse, key) - getattr(dense, key)).max() < 1e-8, key
    assert sparse.balance.max() < 1e-8


def test_worker_processes_give_the_same_solutions():
    # enough warm starts for two workers; one OPF point per row block, perturbed
    n = 2 * MIN_ROWS_PER_WORKER + 3
    pg, qg, pd, qd = (np.repeat(a, n // 3 + 1, axis=0)[:n] for a in _opf_points("case30", 3, seed=9))
    rng = np.random.default_rng(10)
    pgw = pg * (1 + 0.05 * rng.standard_normal(pg.shape))
    qgw = qg + 0.05 * rng.standard_normal(qg.shape)
    lf = LoadFlowProblem("case30", backend="sparse")
    one = lf.solve(pgw, qgw, pd, qd)
    two = lf.solve(pgw, qgw, pd, qd, workers=2)
    assert one.converged.all() and np.array_equal(one.converged, two.converged)
    assert len(two.pg) == n
    for key in ("pg", "qg", "v", "theta", "distance"):
        assert np.abs(getattr(two, key) - getattr(one, key)).max() < 1e-8, key
    with pytest.raises(ValueError, match="workers must be"):
        lf.solve(pgw, qgw, pd, qd, workers=0)


def test_sparse_backend_agrees_with_ipopt_reference():
    pg, qg, pd, qd = _opf_points("case14", 2, seed=6)
    rng = np.random.default_rng(7)
    pgw = pg * (1 + 0.05 * rng.standard_normal(pg.shape))
    qgw = qg + 0.05 * rng.standard_normal(qg.shape)
    df = compare_with_reference("case14", pgw, qgw, pd, qd, backend="sparse")
    assert df["batched converged"].all()
    for key in ("pg", "qg", "v", "theta"):
        assert df[f"max |Δ{key}|"].max() < 1e-6, key
    assert df["|Δ objective|"].max() < 1e-6


def test_backend_choice():
    assert LoadFlowProblem("case14").backend == "dense"  # auto: small grids stay dense
    assert LoadFlowProblem("case57").backend == "sparse"  # ... larger ones go sparse on the CPU
    assert LoadFlowProblem("case57", backend="dense").backend == "dense"
    with pytest.raises(ValueError, match="backend must be"):
        LoadFlowProblem("case5", backend="scipy")
    with pytest.raises(ValueError, match="CPU only"):
        LoadFlowProblem("case5", device="cuda", backend="sparse")


def test_sparse_block_solves():
    """Batched Cholesky (a batch of SPD systems), SuperLU for the rest: indefinite or singular systems."""
    rng = np.random.default_rng(8)
    m, b = 12, _CHOLESKY_MIN + 4
    R = (rng.random((m, m)) < 0.25) | np.eye(m, dtype=bool)
    rows, cols = np.nonzero(R | R.T)
    X = rng.standard_normal((b, m, m)) * (R | R.T)
    A = X + X.transpose(0, 2, 1)
    A += (np.abs(A).sum(2) + 1)[:, :, None] * np.eye(m)  # diagonally dominant: SPD
    A[1] -= 2 * np.diag(A[1].diagonal())  # indefinite: Cholesky fails, SuperLU solves it
    A[2] = 0.0  # singular: NaN
    rhs = rng.standard_normal((b, m))
    system = _BlockSystem(rows, cols, m, spd=True)
    assert np.array_equal(np.flatnonzero(system.chol.factor(A[:, rows, cols])[1]), [1, 2])
    x = system.solve(A[:, rows, cols], rhs)
    assert np.isnan(x[2]).all()
    keep = np.arange(b) != 2
    assert np.allclose(x[keep], np.linalg.solve(A[keep], rhs[keep][..., None])[..., 0], rtol=1e-10, atol=1e-12)
