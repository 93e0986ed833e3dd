"""DiffOPF (Hoseinpour & Dvorkin): grids, conditioning, DeepOPF, the metrics of eq. (21) and Tables I and II."""

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pfbook.config import apply_overrides
from pfbook.diffusion import GuidanceState, Normaliser, Schedule
from pfbook.methods import diffopf as do
from pfbook.power.grids import load_grid


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny case5 run: 80 records, 3 test loads, a briefly trained prior and DeepOPF."""
    old = os.environ.get("PFBOOK_DATA")
    os.environ["PFBOOK_DATA"] = str(tmp_path_factory.mktemp("data"))
    try:
        cfg = apply_overrides(
            do.DiffOPFConfig.for_profile("ci", "case5"),
            {
                "n_samples": 80,
                "n_test": 3,
                "train.steps": 150,
                "width": 64,
                "depth": 2,
                "deepopf_steps": 300,
                "n_draw": 12,
                "sampler": "DDIM 10",
                "loads_per_batch": 2,
            },
        )
        data = do.load_records(cfg)
        prior = do.train_prior(cfg, data)
        deep, losses = do.train_deepopf(cfg, data)
        yield SimpleNamespace(cfg=cfg, data=data, prior=prior, deep=deep, losses=losses)
    finally:
        if old is None:
            os.environ.pop("PFBOOK_DATA", None)
        else:
            os.environ["PFBOOK_DATA"] = old


def test_profiles_and_bad_names():
    for p in ("ci", "default", "paper"):
        cfg = do.DiffOPFConfig.for_profile(p, "case5")
        assert cfg.n_draw > 0 and cfg.cost_range == (0.6, 1.4) and cfg.load_range == (0.8, 1.0)
    assert do.DiffOPFConfig.for_profile("paper", "case5").sampler == "DDPM"
    assert (
        do.DiffOPFConfig.for_profile("default", "case118").n_test
        < do.DiffOPFConfig.for_profile("paper", "case118").n_test
    )
    with pytest.raises(ValueError, match="profile"):
        do.DiffOPFConfig.for_profile("fast")
    with pytest.raises(ValueError, match="sampler"):
        do.DiffOPFConfig().make_sampler("Euler 10")


def test_the_papers_grids_are_pglibs():
    """The chapter's grids are PGLib-OPF's cases, labelled as in the paper; MATPOWER's case118 is a second setting."""
    from pfbook.power.opf import solve_opf

    assert do.DiffOPFConfig().grid == "pglib_opf_case5_pjm"
    paper = do.PROFILE_GRIDS["paper"]
    assert [do.GRID_LABELS[g] for g in paper[:5]] == ["PJM", "PJM-API", "IEEE 14-Bus", "IEEE 24-Bus", "IEEE 118-Bus"]
    assert all(load_grid(g).source.startswith("PGLib-OPF") for g in paper[:5])
    assert do.GRID_LABELS[paper[5]] == "IEEE 118-Bus (MATPOWER)"
    # PJM-API is PGLib's active-power-increase case: more load than PJM, solved at PGLib's published optimum
    pjm, api = load_grid("pglib_opf_case5_pjm"), load_grid("pglib_opf_case5_pjm__api")
    assert api.pd.sum() > 1.2 * pjm.pd.sum()
    assert float(f"{solve_opf(api).cost:.4e}") == 78950.0


def _state(d, B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    sch = Schedule.linear(100)
    x_t, eps = torch.randn(B, d, generator=g), torch.randn(B, d, generator=g)
    return GuidanceState(x_t=x_t, t=50, t_prev=49, eps=eps, x0=sch.predict_x0(x_t, 50, eps), schedule=sch)


@pytest.mark.parametrize("kind", ["observation", "replacement"])
def test_guidance_moves_the_loads_of_x0_onto_y(kind):
    rng = np.random.default_rng(0)
    n_load, d = 3, 16
    train = rng.normal(size=(50, d)) * rng.uniform(0.1, 3, d) + rng.normal(size=d)
    fake = SimpleNamespace(train=train, n_load=n_load)
    dm = SimpleNamespace(normaliser=Normaliser.standard(train))
    y = train[:6, : 2 * n_load]
    st = _state(d)
    out = do.conditional_guidance(dm, fake, y, kind)(st)
    z_y = dm.normaliser(torch.as_tensor(np.pad(y, ((0, 0), (0, d - 2 * n_load)))))[:, : 2 * n_load].float()
    assert torch.allclose(out.x0[:, : 2 * n_load], z_y, atol=1e-5)
    assert torch.equal(out.x0[:, 2 * n_load :], st.x0[:, 2 * n_load :])  # the dispatch is left to the prior
    if kind == "observation":  # half a step: halfway toward y
        half = do.conditional_guidance(dm, fake, y, kind, scale=0.5)(st)
        before = (st.x0[:, : 2 * n_load] - z_y).norm()
        assert torch.isclose((half.x0[:, : 2 * n_load] - z_y).norm(), 0.5 * before, rtol=1e-4)
    with pytest.raises(ValueError, match="guidance"):
        do.conditional_guidance(dm, fake, y, "dps")


def test_samples_carry_the_given_loads_and_deepopf_learns(small):
    loads = small.data.test_loads()
    pg, qg, sec = do.sample_dispatch(small.cfg, small.prior, small.data, loads)
    assert pg.shape == (len(loads), small.cfg.n_draw, small.data.n_gen) == qg.shape and sec > 0
    assert np.isfinite(pg).all() and np.isfinite(qg).all()
    assert pg.std(1).max() > 1e-3  # a distribution per load, not one point
    # the final x_0 is the guided x̂_0, whose load entries were projected onto y (float32 model space)
    x = (
        small.prior.sample(
            4,
            small.cfg.make_sampler(),
            guidance=do.conditional_guidance(small.prior, small.data, np.repeat(loads[:1], 4, 0)),
        )
        .double()
        .numpy()
    )
    assert np.abs(x[:, small.data.load_cols] - loads[:1]).max() < 1e-4
    assert small.losses[-50:].mean() < 1.0  # better than predicting the mean of standardised outputs
    assert small.deep.predict(loads).shape == (len(loads), 2 * small.data.n_gen)


def test_opf_dispatch_scores_zero_on_every_metric(small):
    t = small.data.test
    ev = do.evaluate_warm_starts(small.data.grid, t, t["pg"][:, None], t["qg"][:, None])
    assert ev["converged"].all()
    assert np.nanmax(ev["gap_pct"]) < 1e-5 and np.nanmax(ev["setpoint"]) < 1e-10
    assert np.nanmax(ev["vviol"]) < 1e-6  # the OPF respects the voltage limits
    assert np.nanmax(ev["gviol"]) < 1e-6 and np.nanmax(ev["bviol"]) < 1e-6  # and the generator and branch limits
    assert ev["within"].all() and np.nanmax(np.abs(ev["gap_signed_pct"])) < 1e-5
    assert np.allclose(ev["cost"][:, 0], t["cost"], rtol=1e-7)
    assert (do.user_pick(ev) == 0).all() and (do.oracle_pick(ev) == 0).all()


def test_user_pick_takes_the_cheapest_within_limits_else_the_least_violating():
    nan = np.nan
    ev = {
        "cost": np.array([[10.0, 5.0, 7.0], [3.0, 4.0, nan]]),
        "within": np.array([[True, False, True], [False, False, False]]),
        "converged": np.array([[True, True, True], [True, True, False]]),
        "gap_usd": np.array([[1.0, 0.1, 2.0], [0.5, 0.2, nan]]),
        "vviol": np.array([[0, 0.3, 0], [0.2, 0.1, nan]]),
        "gviol": np.zeros((2, 3)),
        "bviol": np.zeros((2, 3)),
    }
    assert do.user_pick(ev).tolist() == [2, 1]  # 5.0 is cheaper but outside its limits
    assert do.oracle_pick(ev).tolist() == [1, 1]  # the smallest |c - c*| whatever the limits


def test_nearest_records_find_a_training_load_first(small):
    data = small.data
    loads = data.train[[3, 17], data.load_cols]
    pg, qg = do.nearest_records(data, loads, k=5)
    assert pg.shape == (2, 5, data.n_gen) == qg.shape
    _, _, pg_train, qg_train = data.split(data.train[[3, 17]])
    np.testing.assert_array_equal(pg[:, 0], pg_train)  # a load in the records is its own nearest record
    np.testing.assert_array_equal(qg[:, 0], qg_train)
    with pytest.raises(ValueError, match="shape"):
        do.nearest_records(data, loads[:, :3])


def test_prior_balance_of_the_opf_dispatch_is_zero(small):
    t = small.data.test
    out = do.prior_balance(small.data.grid, t, t["pg"][:, None])
    assert out["balance error (p.u., mean)"] < 1e-12 and out["p_g outside limits (share)"] == 0
    assert out["losses (p.u., mean)"] > 0
    shifted = do.prior_balance(small.data.grid, t, t["pg"][:, None] + 0.01)
    assert abs(shifted["balance error (p.u., mean)"] - 0.01 * small.data.n_gen) < 1e-9


def test_perturbed_warm_starts_cost_something(small):
    t = small.data.test
    rng = np.random.default_rng(1)
    pg = t["pg"][:, None] * (1 + 0.1 * rng.standard_normal((len(t["pg"]), 5, small.data.n_gen)))
    qg = np.repeat(t["qg"][:, None], 5, 1)
    ev = do.evaluate_warm_starts(small.data.grid, t, pg, qg)
    assert np.nanmin(ev["setpoint"]) > 0 and np.nanmax(ev["gap_usd"]) > 0
    tab = do.table_one({"A": ev}, "PJM")
    assert (
        tab.loc[("PJM", "A"), ("Optimality gap [%]", "CVaR10%")]
        >= tab.loc[("PJM", "A"), ("Optimality gap [%]", "Mean")]
    )


def test_table_two_follows_eq_19():
    gap = np.full((4, 10), 10.0)
    gap[:, :3] = 0.1  # 3 of 10 samples close for every load, the first three
    ev = {"gap_pct": gap, "converged": np.ones_like(gap, dtype=bool)}
    t2 = do.table_two(ev, eps=(1,), deltas=(0.9, 0.99), grid_label="x")
    assert t2.loc[("x", 1), ("", "p_ε")] == pytest.approx(0.3)
    assert t2.loc[("x", 1), ("δ=0.9", "M")] == math.ceil(math.log(0.1) / math.log(0.7))
    assert t2.loc[("x", 1), ("δ=0.9", "N_ε")] == 1
    none = do.table_two({"gap_pct": np.full((2, 5), 9.0), "converged": np.ones((2, 5), bool)}, eps=(1,), grid_label="y")
    assert none.loc[("y", 1), ("δ=0.9", "N_ε")] == ">5"


def test_cvar_is_the_mean_of_the_worst_tenth():
    from pfbook.methods.diffopf.metrics import _cvar

    assert _cvar(np.arange(10.0)) == 9.0
    assert _cvar(np.arange(20.0)) == 18.5
    assert math.isnan(_cvar(np.array([np.nan])))


def test_paper_tables_are_the_published_values():
    t1 = do.paper_table_one(["pglib_opf_case5_pjm", "pglib_opf_case118_ieee"])
    assert t1.loc[("IEEE 118-Bus", "DeepOPF"), ("Optimality gap [%]", "Mean")] == 10.9
    assert t1.loc[("PJM", "DiffOPF"), ("Optimality gap [%]", "Mean")] == 0.1
    assert do.paper_table_two().loc[("PJM 5-Bus", 0.5), ("δ=0.9", "M")] == 32


def test_table_one_summaries_round_trip_and_the_first_folder_wins(tmp_path):
    rng = np.random.default_rng(0)

    def ev(scale):
        gap = scale * rng.random((6, 5))
        return {
            "gap_usd": 100 * gap,
            "gap_pct": gap,
            "gap_signed_pct": gap - scale / 2,
            "cost": 1000 + 100 * gap,
            "setpoint": gap / 10,
            "vviol": gap / 100,
            "gviol": gap / 50,
            "bviol": 0 * gap,
            "within": gap < scale / 2,
            "converged": np.ones((6, 5), bool),
        }

    t_case5 = do.table_one({"DiffOPF": ev(1), "DeepOPF": ev(5)}, "PJM")
    t_case14 = do.table_one({"DiffOPF": ev(2), "DeepOPF": ev(3)}, "IEEE 14-Bus")
    cfg5, cfg14 = do.DiffOPFConfig(grid="case5"), do.DiffOPFConfig(grid="case14")
    t2 = do.table_two(ev(1), grid_label="PJM")
    do.save_summary(tmp_path / "runs" / "case5", {"table1": t_case5, "table2": t2}, cfg5, "default")
    do.save_summary(tmp_path / "book" / "case5", {"table1": t_case5 * 7}, cfg5, "default")
    do.save_summary(tmp_path / "book" / "case14", {"table1": t_case14}, cfg14, "default")
    do.save_summary(tmp_path / "book" / "case14", {"table1": t_case14 * 3}, cfg14, "ci")

    got = do.load_tables(tmp_path / "runs", tmp_path / "book", profile="default")
    assert list(got.index) == [
        ("PJM", "DiffOPF"),
        ("PJM", "DeepOPF"),
        ("IEEE 14-Bus", "DiffOPF"),
        ("IEEE 14-Bus", "DeepOPF"),
    ]
    np.testing.assert_allclose(got.loc[t_case5.index, t_case5.columns].to_numpy(float), t_case5.to_numpy(float))
    np.testing.assert_allclose(got.loc[t_case14.index, t_case14.columns].to_numpy(float), t_case14.to_numpy(float))
    assert do.load_tables(tmp_path / "nothing", profile="default").empty
    got2 = do.load_tables(tmp_path / "runs", profile="default", table="table2")
    assert got2.index.names == ["test case", "ε %"] and len(got2) == len(t2)
    np.testing.assert_allclose(got2[t2.columns].to_numpy(float), t2.to_numpy(float))

    (tmp_path / "book" / "case14" / "diffopf-summary-default.json").write_text('{"tables": {}}')
    with pytest.raises(ValueError, match="case14.*not a DiffOPF summary"):
        do.load_tables(tmp_path / "book", profile="default")
    with pytest.raises(ValueError, match="unknown table"):
        do.load_tables(tmp_path / "book", table="table3")


def test_speed_across_picks_the_fewest_steps_within_tolerance(tmp_path):
    import pandas as pd

    steps = pd.DataFrame(
        {
            "network calls": [1000, 100, 20, 10],
            "sampling s per load": [4.0, 0.4, 0.08, 0.04],
            "load flow s per load": [0.1, 0.1, 0.1, 0.1],
            "within": [True, True, True, False],
        },
        index=["DDPM", "DDIM 100", "DDIM 20", "DDIM 10"],
    )
    steps["s per 250-sample batch"] = steps["sampling s per load"] + steps["load flow s per load"]
    do.save_summary(tmp_path / "case5", {"steps": steps}, do.DiffOPFConfig(grid="pglib_opf_case5_pjm"), "default")
    got = do.speed_across(tmp_path, profile="default")
    assert list(got.index) == ["PJM"] and got.loc["PJM", "fewest within"] == "DDIM 20"
    assert got.loc["PJM", "reference"] == "DDPM"
    assert abs(got.loc["PJM", "s per 250-sample batch"] - 0.18) < 1e-12


def test_summaries_written_before_the_pglib_grids_are_labelled_matpower(tmp_path):
    """A file without ``sources`` holds MATPOWER's case under the paper's label; it must not pass for PGLib's."""
    import json

    one, zero = np.ones((2, 3)), np.zeros((2, 3))
    ev = {"gap_usd": one, "gap_pct": one, "gap_signed_pct": one, "cost": 100 * one, "setpoint": one}
    ev |= {"vviol": zero, "gviol": zero, "bviol": zero, "within": one > 0, "converged": one > 0}
    t1 = do.table_one({"DiffOPF": ev}, "IEEE 118-Bus")
    path = do.save_summary(tmp_path / "case118", {"table1": t1}, do.DiffOPFConfig(grid="case118"), "default")
    obj = json.loads(path.read_text())
    assert obj["sources"] == {"case118": "MATPOWER case118.m"}
    assert do.load_tables(tmp_path).index.get_level_values(0).tolist() == ["IEEE 118-Bus"]
    del obj["sources"]
    path.write_text(json.dumps(obj))
    assert do.load_tables(tmp_path).index.get_level_values(0).tolist() == ["IEEE 118-Bus (MATPOWER)"]
