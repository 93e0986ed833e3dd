"""The AC power-flow kernel: S(V) and its Jacobian blocks (dense torch and sparse SciPy) against finite differences
and each other, and its batched Newton power flow (plain and chord) against pandapower's runpp."""

import numpy as np
import pytest
import torch

from pfbook.power.grids import Grid, load_grid
from pfbook.power.physics import bus_power
from pfbook.power.powerflow import DenseKernel, SparseKernel, bus_roles, d2sbus_dv2, newton_power_flow, power_flow


def _voltages(n, b, seed):
    gen = torch.Generator().manual_seed(seed)
    vm = 1 + 0.05 * torch.randn(b, n, generator=gen, dtype=torch.float64)
    va = 0.2 * torch.randn(b, n, generator=gen, dtype=torch.float64)
    return vm, va


def _block_sets(n, seed):
    rng = np.random.default_rng(seed)
    pick = lambda k: np.sort(rng.choice(n, k, replace=False))
    return pick(n - 2), pick(n // 2), pick(n - 1), pick(n // 3)


@pytest.mark.parametrize("name", ["case14", "case30"])
def test_jacobian_blocks_match_finite_differences(name):
    g = load_grid(name)
    n = g.n_bus
    vm, va = _voltages(n, 2, seed=0)
    dense, sparse = DenseKernel.from_ybus(g.Ybus), SparseKernel(g.Ybus)
    pr, qr, tc, vc = _block_sets(n, seed=1)

    # S(V) is the same as the branch-wise physics of pfbook.power.physics, in both forms
    pc, qc = bus_power(g, vm, va)
    for K in (dense, sparse):
        _, S = K.power(torch.polar(vm, va))
        assert torch.allclose(S.real, pc, atol=1e-12) and torch.allclose(S.imag, qc, atol=1e-12)

    def s_block(vm_, va_):
        _, S = dense.power(torch.polar(vm_, va_))
        return torch.cat([S.real[:, pr], S.imag[:, qr]], dim=1)

    h = 1e-6
    fd = []
    for cols, which in ((tc, "va"), (vc, "vm")):
        for c in cols:
            e = torch.zeros(n, dtype=torch.float64)
            e[c] = h
            up = s_block(vm + e, va) if which == "vm" else s_block(vm, va + e)
            down = s_block(vm - e, va) if which == "vm" else s_block(vm, va - e)
            fd.append((up - down) / (2 * h))
    fd = torch.stack(fd, dim=2)  # (b, rows, cols)
    V = torch.polar(vm, va)
    Jd = dense.jacobian(V, dense.block(pr, qr, tc, vc))[2]
    assert Jd.shape == fd.shape == (2, len(pr) + len(qr), len(tc) + len(vc))
    assert (Jd - fd).abs().max() < 1e-7 * fd.abs().max()
    blk = sparse.block(pr, qr, tc, vc)
    Js = sparse.dense(blk, sparse.jacobian(V, blk)[2])
    assert (Js - Jd).abs().max() < 1e-12


def test_sparse_hessian_matches_dense():
    g = load_grid("case14")
    n = g.n_bus
    vm, va = _voltages(n, 2, seed=2)
    V = torch.polar(vm, va)
    lam = torch.complex(*torch.randn(2, 2, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    H = d2sbus_dv2(DenseKernel.from_ybus(g.Ybus).Y, V, lam).real
    sk = SparseKernel(g.Ybus)
    I, _ = sk.power(V)
    raw = sk.hessian(V.numpy(), I.numpy(), lam.numpy())
    pr, pc, m = sk.pr, sk.pc, sk.nnz
    for k, (ro, co) in enumerate(((0, 0), (0, n), (n, 0), (n, n))):  # θθ, θ|V|, |V|θ, |V||V|
        np.testing.assert_allclose(raw[:, k * m : (k + 1) * m], H[:, ro + pr, co + pc].numpy(), atol=1e-12)


def test_square_block_solves_and_singular_rows_are_nan():
    g = load_grid("case14")
    _, pvpq, pq = bus_roles(g.bus_type)
    vm, va = _voltages(g.n_bus, 3, seed=4)
    V = torch.polar(vm, va)
    rhs = torch.randn(3, len(pvpq) + len(pq), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    xs = []
    for K in (DenseKernel.from_ybus(g.Ybus), SparseKernel(g.Ybus)):
        blk = K.block(pvpq, pq, pvpq, pq)
        J = K.jacobian(V, blk)[2]
        J[1] = 0.0  # a singular system
        x = K.solve(blk, J, rhs)
        assert torch.isnan(x[1]).all() and torch.isfinite(x[[0, 2]]).all()
        Jd = K.dense(blk, J)
        assert torch.allclose((Jd[[0, 2]] @ x[[0, 2], :, None]).squeeze(-1), rhs[[0, 2]], atol=1e-10)
        xs.append(x[[0, 2]])
    assert (xs[0] - xs[1]).abs().max() < 1e-10
    with pytest.raises(ValueError, match="reference bus"):
        bus_roles(np.ones(5))


def _pandapower_cases(name, scales):
    """pandapower's net at several load levels: (grid, p, q, vm0) per row for the kernel, runpp's vm, va."""
    import pandapower as pp
    import pandapower.networks as pn

    rows = []
    for s in scales:
        net = getattr(pn, name)()
        net.load["p_mw"] *= s
        net.load["q_mvar"] *= s
        pp.runpp(net, init="flat", tolerance_mva=1e-9, calculate_voltage_angles=True)
        g = Grid.from_pandapower(net, name=name)
        order = np.asarray(g.bus_ids)
        va = np.radians(net.res_bus.va_degree.loc[order].to_numpy())
        rows.append((g.pg0 @ g.Cg.T.toarray() - g.pd, -g.qd, net.res_bus.vm_pu.loc[order].to_numpy(), va - va[g.ref]))
    vm0 = np.ones(g.n_bus)
    vm0[g.gen_bus] = g.vg
    return g, vm0, [np.array(a) for a in zip(*rows)]


@pytest.mark.parametrize("name", ["case14", "case118"])
def test_newton_power_flow_matches_pandapower(name):
    g, vm0, (p, q, vm_pp, va_pp) = _pandapower_cases(name, (0.9, 1.0, 1.05))
    _, pvpq, pq = bus_roles(g.bus_type)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)
    assert np.abs(vm_pp - vm0).max() > 1e-3 and np.abs(va_pp).max() > 0.1  # far from the flat start
    for K in (DenseKernel.from_ybus(g.Ybus), SparseKernel(g.Ybus)):
        vm, va = t(vm0).repeat(3, 1), torch.zeros(3, g.n_bus, dtype=torch.float64)
        norm, it = newton_power_flow(K, vm, va, t(p), t(q), pvpq, pq, tol=1e-12, max_iter=10)
        assert (norm <= 1e-12).all()
        assert (it <= 5).all(), it  # quadratic convergence: the Jacobian is right
        assert np.abs(vm.numpy() - vm_pp).max() < 1e-8 and np.abs(va.numpy() - va_pp).max() < 1e-8
        # chord iterations from the mean point, then Newton where needed: the same solutions
        r = power_flow(K, t(p), t(q), t(vm0), pvpq, pq, tol=1e-12)
        assert r["success"].all()
        assert np.abs(r["vm"].numpy() - vm_pp).max() < 1e-8 and np.abs(r["va"].numpy() - va_pp).max() < 1e-8
        assert not torch.equal(r["iterations"], it)  # ... reached by chord steps (counted)
        assert torch.equal(power_flow(K, t(p), t(q), t(vm0), pvpq, pq, tol=1e-12, chord_iter=0)["iterations"], it)


def test_newton_power_flow_reports_what_it_cannot_solve():
    g = load_grid("case14")
    _, pvpq, pq = bus_roles(g.bus_type)
    vm = torch.ones(2, g.n_bus, dtype=torch.float64)
    va = torch.zeros(2, g.n_bus, dtype=torch.float64)
    p = torch.zeros(2, g.n_bus, dtype=torch.float64)
    p[1] = -50.0  # 50 p.u. of load at every bus: no solution
    norm, it = newton_power_flow(
        DenseKernel.from_ybus(g.Ybus), vm, va, p, torch.zeros_like(p), pvpq, pq, tol=1e-10, max_iter=8
    )
    assert norm[0] <= 1e-10 and not norm[1] <= 1e-10
    assert it[1] == 8 and it[0] < 8
