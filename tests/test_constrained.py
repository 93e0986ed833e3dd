"""The constrained-diffusion method (Hoseinpour & Dvorkin): Newton projection, residual, guidance effect, evaluation table."""

import numpy as np
import pytest
import torch

from pfbook.book.primer import FEATURES, PrimerData, imbalance_residual, max_mismatch
from pfbook.diffusion import Layout, Normaliser, TrainConfig, make_sampler
from pfbook.methods.constrained import (
    ConstrainedConfig,
    bus_mismatch,
    curvature,
    evaluate,
    feature_w1,
    guidance,
    load_summaries,
    newton_projection,
    save_summary,
    train_model,
    w1_standard_error,
    within_limits,
)
from pfbook.power.datasets import ac_opf_dataset
from pfbook.power.grids import load_grid


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Real AC-OPF records (p, q, v, θ) of case5 and case14, generated once into a temporary folder."""
    out = tmp_path_factory.mktemp("data")
    return {
        g: ac_opf_dataset(g, n, out_dir=out, progress=False).features(FEATURES)[0]
        for g, n in (("case5", 200), ("case14", 40))
    }


@pytest.mark.parametrize("grid", ["case5", "case14"])
def test_newton_leaves_a_real_record_unchanged(records, grid):
    x = records[grid][:20]
    y, ok = newton_projection(grid, x)
    assert ok.all()
    np.testing.assert_allclose(y, x, atol=1e-8)


@pytest.mark.parametrize("grid", ["case5", "case14"])
def test_newton_reaches_1e8_from_perturbed_records(records, grid):
    x = records[grid][:20]
    rng = np.random.default_rng(0)
    xp = x + 0.02 * x.std(0) * rng.standard_normal(x.shape)
    g = load_grid(grid)
    assert max_mismatch(g, xp).min() > 1e-4  # the perturbation breaks the equations
    y, ok = newton_projection(g, xp)
    assert ok.all() and max_mismatch(g, y).max() < 1e-8
    n = g.n_bus
    v, vp = y[:, 2 * n : 3 * n], xp[:, 2 * n : 3 * n]
    gen = np.unique(g.gen_bus)
    np.testing.assert_allclose(v[:, gen], vp[:, gen])  # voltage set-points kept
    np.testing.assert_allclose(y[:, 3 * n + g.ref], xp[:, 3 * n + g.ref])


def test_newton_reports_a_sample_it_cannot_solve():
    g = load_grid("case5")
    x = np.concatenate([np.full(5, 50.0), np.zeros(5), np.ones(5), np.zeros(5)])[None]  # 50 p.u. everywhere
    y, ok = newton_projection(g, x, steps=3)
    assert not ok[0] and np.array_equal(y, x)


def test_residual_is_zero_on_real_records_and_large_on_noise(records):
    x = records["case5"]
    nm = Normaliser.standard(x)
    R = imbalance_residual(load_grid("case5"), nm)
    real = R(nm(torch.as_tensor(x)))
    noise = R(torch.randn(len(x), x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert real.max() < 1e-18 and noise.median() > 1e-2


def test_paper_profile_is_the_papers_training():
    cfg = ConstrainedConfig.for_profile("paper")
    tc = cfg.train_config()
    assert (cfg.T, cfg.beta_start, cfg.beta_end, cfg.width, cfg.depth) == (1000, 1e-4, 0.02, 500, 6)
    assert (tc.lr, tc.batch_size, tc.steps, tc.lr_decay_every, tc.lr_decay, tc.ema_decay) == (
        1e-4,
        500,
        150_000,
        15_000,
        0.6,
        None,
    )
    assert cfg.n_samples == 5000 and cfg.load_range == (0.8, 1.0)


def test_guidance_cuts_active_mismatch_tenfold_on_case5(records):
    x = records["case5"]
    cols = [f"{f}_{b}" for f in FEATURES for b in range(5)]
    data = PrimerData(
        grid=load_grid("case5"),
        train=x,
        test=x,
        columns=cols,
        layout=Layout(features=tuple(cols), grid="case5", shape=(20,)),
        dataset=None,
    )
    cfg = ConstrainedConfig(
        n_samples=len(x),
        width=64,
        depth=2,
        T=200,
        train=TrainConfig(steps=600, batch_size=100, lr=3e-3, lr_decay_every=300, ema_decay=0.99),
    )
    dm, _ = train_model(cfg, data)
    L = curvature(data.grid, dm.normaliser, x)
    s = make_sampler("DDIM 50", cfg.schedule())
    free, _ = dm.draw(200, s)
    guided, _ = dm.draw(200, s, guidance=guidance(data.grid, dm.normaliser, 1.5, L=L, inner_steps=20))
    table = evaluate(data.grid, {"unguided": free, "guided": guided}, x)
    assert table.loc["unguided", "mean |ΔP|"] >= 10 * table.loc["guided", "mean |ΔP|"]
    assert table.loc["guided", "W1/σ"] <= table.loc["unguided", "W1/σ"] * 1.05


def test_evaluation_of_real_against_real_is_near_zero(records):
    x = records["case5"]
    g = load_grid("case5")
    table = evaluate(g, {"itself": x[100:]}, x[100:], train=x[:100])
    same = table.loc["itself"]
    assert same["W1/σ"] == 0 and same["sliced W/σ"] < 1e-12
    assert same["p99 |ΔP|"] < 1e-9 and same["p99 |ΔQ|"] < 1e-9
    assert same["share max|ΔS|<0.001"] == 1 and same["share within limits"] == 1
    assert table.loc["real (training records)", "W1/σ"] < 0.5  # two samples of one distribution
    per_bus = bus_mismatch(g, {"itself": x})
    assert per_bus.shape == (5, 4) and (per_bus.to_numpy() < 1e-9).all()
    w = feature_w1({"noise": x + x.std(0)}, x)
    assert np.nanmin(w["noise"].to_numpy()) > 0.9  # a shift by one std is W1/σ = 1


def test_within_limits_flags_a_voltage_and_a_generator_violation(records):
    x = records["case5"][:3].copy()
    g = load_grid("case5")
    assert within_limits(g, x).all()
    x[0, 2 * 5 + 2] = g.vmax[2] + 0.01  # a voltage above vmax
    x[1, g.gen_bus[-1]] += 2 * (g.pmax[g.gen_bus == g.gen_bus[-1]].sum() + 1)  # more than the generators make
    assert within_limits(g, x).tolist() == [False, False, True]


def test_summaries_round_trip(tmp_path, records):
    g = load_grid("case5")
    x = records["case5"]
    table = evaluate(g, {"a": x[:50]}, x[50:])
    save_summary(tmp_path / "case5", table, ConstrainedConfig.for_profile("ci", grid="case5"), "ci")
    back = load_summaries(tmp_path)
    assert back.index.tolist() == [("case5", "ci", "a")]
    assert np.isclose(back.iloc[0]["W1/σ"], table.loc["a", "W1/σ"])


def test_a_fresh_run_shadows_the_published_summary(tmp_path, records):
    g = load_grid("case5")
    x = records["case5"]
    cfg = ConstrainedConfig.for_profile("ci", grid="case5")
    save_summary(tmp_path / "runs" / "case5", evaluate(g, {"a": x[:50]}, x[50:]), cfg, "ci")
    save_summary(tmp_path / "published" / "case5", evaluate(g, {"a": x[:20]}, x[50:]), cfg, "ci")
    save_summary(
        tmp_path / "published" / "case14",
        evaluate(g, {"a": x[:20]}, x[50:]),
        ConstrainedConfig.for_profile("ci", grid="case14"),
        "ci",
    )
    both = load_summaries(tmp_path / "runs", tmp_path / "published")
    assert both.index.tolist() == [("case5", "ci", "a"), ("case14", "ci", "a")]
    fresh = evaluate(g, {"a": x[:50]}, x[50:]).loc["a", "W1/σ"]
    assert np.isclose(both.loc[("case5", "ci", "a"), "W1/σ"], fresh)


def test_w1_standard_error_shrinks_with_more_samples(records):
    x = records["case5"]  # 200 records: 100 samples, 100 as the reference
    few, many = (w1_standard_error(x[:n], x[100:], n_boot=30) for n in (10, 100))
    assert 0 < many < few
