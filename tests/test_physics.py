"""The torch physics agrees with independent power-flow solvers, batches, and differentiates."""

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
import torch
from pypower.api import ppoption, runpf

from pfbook.power.grids import BOOK_GRIDS, Grid, load_grid
from pfbook.power.physics import (
    branch_flows,
    grid_tensors,
    injections,
    limit_violations,
    mismatch_magnitude,
    nodal_mismatch,
)


def _state_from_ppc(g, bus, gen, base):
    """Net injections and voltages of a solved MATPOWER-style case, in the grid's bus order."""
    keep = bus[:, 1] != 4
    on = gen[:, 7] > 0
    pg, qg = np.zeros(len(bus)), np.zeros(len(bus))
    rows = {int(b): i for i, b in enumerate(bus[:, 0])}
    for b, p, q in gen[on][:, [0, 1, 2]]:
        pg[rows[int(b)]] += p
        qg[rows[int(b)]] += q
    p = (pg - bus[:, 2])[keep] / base
    q = (qg - bus[:, 3])[keep] / base
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    return t(p), t(q), t(bus[keep, 7]), t(np.radians(bus[keep, 8]))


@pytest.mark.parametrize("name", BOOK_GRIDS)
def test_mismatch_is_zero_on_pypower_solution(name):
    g = load_grid(name)
    r, ok = runpf(g.to_ppc(), ppoption(VERBOSE=0, OUT_ALL=0, PF_TOL=1e-10))
    assert ok
    dp, dq = nodal_mismatch(g, *_state_from_ppc(g, r["bus"], r["gen"], r["baseMVA"]))
    assert max(dp.abs().max(), dq.abs().max()) < 1e-6


@pytest.mark.parametrize("name", BOOK_GRIDS)
def test_mismatch_is_zero_on_pandapower_solution(name):
    net = getattr(pn, name)()
    g = Grid.from_pandapower(net)
    pp.runpp(net, tolerance_mva=1e-10, init="dc")
    # pandapower keeps its solved state in the same internal case (bus order) its converter produces
    dp, dq = nodal_mismatch(g, *_state_from_ppc(g, net._ppc["bus"], net._ppc["gen"], net._ppc["baseMVA"]))
    assert max(dp.abs().max(), dq.abs().max()) < 1e-6


def test_mismatch_detects_a_wrong_state():
    g = load_grid("case14")
    r, _ = runpf(g.to_ppc(), ppoption(VERBOSE=0, OUT_ALL=0))
    p, q, v, th = _state_from_ppc(g, r["bus"], r["gen"], r["baseMVA"])
    v = v.clone()
    v[5] += 0.01
    dp, dq = nodal_mismatch(g, p, q, v, th)
    assert max(dp.abs().max(), dq.abs().max()) > 1e-3


def test_branch_flows_match_pypower():
    g = load_grid("case30")
    r, _ = runpf(g.to_ppc(), ppoption(VERBOSE=0, OUT_ALL=0, PF_TOL=1e-10))
    _, _, v, th = _state_from_ppc(g, r["bus"], r["gen"], r["baseMVA"])
    fl = branch_flows(g, v, th)
    np.testing.assert_allclose(fl.pf.numpy(), r["branch"][:, 13] / 100, atol=1e-8)
    np.testing.assert_allclose(fl.qt.numpy(), r["branch"][:, 16] / 100, atol=1e-8)


def test_any_batch_shape_and_float32(device):
    g = load_grid("case57")
    gen = torch.Generator().manual_seed(0)
    shape = (3, 4, g.n_bus)
    r = lambda: torch.randn(shape, generator=gen, dtype=torch.float64)
    p, q, v, th = r(), r(), 1 + 0.05 * r(), 0.2 * r()
    dp, dq = nodal_mismatch(g, p.to(device), q.to(device), v.to(device), th.to(device))
    assert dp.shape == shape and dp.device.type == device
    dp1, _ = nodal_mismatch(g, p[1, 2], q[1, 2], v[1, 2], th[1, 2])  # one sample alone
    torch.testing.assert_close(dp[1, 2].cpu(), dp1, rtol=1e-10, atol=1e-10)
    dp32, dq32 = nodal_mismatch(g, *(a.float().to(device) for a in (p, q, v, th)))
    assert dp32.dtype == torch.float32
    torch.testing.assert_close(dp32.double(), dp, rtol=1e-4, atol=1e-3)


def test_gradcheck_mismatch():
    g = grid_tensors("case14")
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(2, 14, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    args[2] = (1 + 0.05 * args[2].detach()).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: nodal_mismatch(g, *a), args)
    assert torch.autograd.gradcheck(lambda v, th: branch_flows(g, v, th).sf, args[2:])


def test_injections_and_violations():
    g = load_grid("case5")
    pg = torch.tensor(g.pmax * 1.1)[None]
    qg = torch.tensor(g.qg0)[None]
    pd, qd = torch.tensor(g.load_p)[None], torch.tensor(g.load_q)[None]
    p, q = injections(g, pg, qg, pd, qd)
    expect = g.Cg @ (g.pmax * 1.1) - g.pd
    np.testing.assert_allclose(p[0].numpy(), expect)
    v = torch.tensor(g.vmax + 0.02)[None]
    viol = limit_violations(g, v, torch.zeros_like(v), pg=pg, qg=qg)
    np.testing.assert_allclose(viol["v"].numpy(), 0.02, atol=1e-12)
    np.testing.assert_allclose(viol["pg"][0].numpy(), 0.1 * g.pmax, atol=1e-12)
    assert torch.all(viol["qg"] == 0)
    assert viol["branch"].shape == (1, g.n_branch) and torch.all(viol["branch"] == 0)  # flat angles: no flow
    m = mismatch_magnitude(torch.zeros(3, requires_grad=True), torch.zeros(3))
    m.sum().backward()  # finite gradient at zero mismatch
