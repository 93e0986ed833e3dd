"""The physics-informed DDPM (Wang, Upadhyay, Zaman & Srikantha): record layout, imbalance R, γ_T, learned schedule, physics loss, GAN, guidance."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pfbook.config import apply_overrides
from pfbook.diffusion import GuidanceState, Layout, LossContext, Trainer
from pfbook.methods import physics_informed as pi
from pfbook.power.datasets import ac_opf_dataset
from pfbook.power.grids import load_grid


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real case14 AC-OPF records (loads U(0.8, 1.2), costs U(0.5, 1.5)) in the paper's layout, split and bounded."""
    out = tmp_path_factory.mktemp("data")
    ds = ac_opf_dataset(
        "case14", 40, load_range=(0.8, 1.2), cost_range=(0.5, 1.5), out_dir=out, workers=1, progress=False
    )
    x, cols = ds.features(pi.FEATURES)
    grid = load_grid("case14")
    low, high = pi.operating_bounds(grid, (0.8, 1.2), pi.split_record(x, grid)[3])
    return pi.PIData(
        grid=grid,
        train=x[:30],
        test=x[30:],
        columns=cols,
        layout=Layout(features=tuple(cols), grid="case14", shape=(len(cols),)),
        low=low,
        high=high,
        normaliser=pi.make_normaliser(low, high),
        dataset=ds,
    )


@pytest.fixture(scope="module")
def cfg():
    return apply_overrides(
        pi.PhysicsInformedConfig.for_profile("ci", "case14"), {"train.steps": 3, "gan_steps": 3, "schedule_steps": 3}
    )


@pytest.mark.parametrize("grid, n", [("case14", 60), ("case30", 112)])
def test_record_layout_has_the_papers_dimension(grid, n):
    g = load_grid(grid)
    x = np.zeros((2, n))
    parts = pi.split_record(x, g)
    assert [p.shape[-1] for p in parts] == [g.n_load, g.n_load, g.n_bus, g.n_bus, g.n_gen, g.n_gen]
    with pytest.raises(ValueError, match=f"{grid} record has {n} features"):
        pi.split_record(np.zeros((2, n + 1)), g)


def test_dataset_columns_follow_the_layout(data):
    assert len(data.columns) == 60
    assert data.columns[0] == "pd_2" and data.columns[22] == "v_1" and data.columns[-1] == "qg_8"


def test_imbalance_is_zero_on_opf_records_and_large_on_noise(data):
    x = torch.as_tensor(data.train)
    assert pi.imbalance(data.grid, x).max() < 1e-8  # Ipopt's tolerance
    gT = pi.gamma_T(data.grid, data.normaliser, n=2048)
    assert gT > 1.0  # p.u.; the paper reports 2.75 for its bounds
    assert abs(pi.gamma_T(data.grid, data.normaliser, n=2048, seed=1) - gT) < 0.05 * gT


def test_imbalance_agrees_with_a_pandapower_power_flow():
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case14()
    pp.runpp(net, tolerance_mva=1e-10)
    g = load_grid("case14")
    base = net.sn_mva
    pd_ = net.load.groupby("bus").p_mw.sum().reindex(g.load_bus).to_numpy() / base
    qd_ = net.load.groupby("bus").q_mvar.sum().reindex(g.load_bus).to_numpy() / base
    gen = {int(b): (p, q) for b, p, q in zip(net.gen.bus, net.res_gen.p_mw, net.res_gen.q_mvar)}
    gen |= {int(b): (p, q) for b, p, q in zip(net.ext_grid.bus, net.res_ext_grid.p_mw, net.res_ext_grid.q_mvar)}
    pg = np.array([gen[int(b)][0] for b in g.gen_bus]) / base
    qg = np.array([gen[int(b)][1] for b in g.gen_bus]) / base
    v, th = net.res_bus.vm_pu.to_numpy(), np.radians(net.res_bus.va_degree.to_numpy())
    x = np.concatenate([pd_, qd_, v, th, pg, qg])[None]
    assert pi.imbalance(g, torch.as_tensor(x)).item() < 1e-6
    x_bad = x.copy()
    x_bad[0, 2 * g.n_load + g.n_bus + 3] += 0.01  # move one angle by 0.01 rad
    assert pi.imbalance(g, torch.as_tensor(x_bad)).item() > 1e-3


def test_imbalance_is_batched_and_differentiable(data):
    x = torch.as_tensor(data.train[:12]).reshape(3, 4, -1).clone().requires_grad_(True)
    r = pi.imbalance(data.grid, x + 0.01)
    assert r.shape == (3, 4)
    each = torch.stack([pi.imbalance(data.grid, (x[i, j] + 0.01)[None])[0] for i in range(3) for j in range(4)])
    torch.testing.assert_close(r.reshape(-1), each)
    r.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_imbalance_of_a_noisy_record_reads_it_within_the_bounds(data):
    """With the clip (the default) a coordinate beyond its bound counts as the bound; inside the bounds both
    readings agree, and γ_T, the noise's imbalance, is lower with the clip."""
    R, R_raw = pi.imbalance_fn(data.grid, data.normaliser), pi.imbalance_fn(data.grid, data.normaliser, clip=False)
    z = data.normaliser(torch.as_tensor(data.train[:8]))
    assert torch.allclose(R(z), R_raw(z), rtol=0, atol=1e-6)  # records sit on bounds up to Ipopt's tolerance
    v1 = 2 * data.grid.n_load  # |V| of bus 1
    beyond, at = z.clone(), z.clone()
    beyond[:, v1], at[:, v1] = 3.0, 1.0  # far above V_max, and at V_max
    assert torch.equal(R(beyond), R(at))
    assert (R_raw(beyond) > 2 * R(beyond)).all()
    zg = z.clone().requires_grad_(True)
    R(zg).sum().backward()
    assert torch.isfinite(zg.grad).all() and zg.grad.abs().sum() > 0
    gT, gT_raw = (pi.gamma_T(data.grid, data.normaliser, n=2048, clip=c) for c in (True, False))
    assert 0.2 * gT_raw < gT < 0.8 * gT_raw


def test_bounds_contain_the_records_and_normalise_them_into_unit_interval(data):
    z = data.normaliser(data.train)
    varying = data.high - data.low > 1e-9
    assert z[:, varying].min() > -1e-6 and z[:, varying].max() < 1 + 1e-6
    assert pi.within_bounds(data.train, data.low, data.high).all()
    assert pi.within_branch_limits(data.grid, data.train).all()
    outside = data.train.copy()
    outside[0, 2 * data.grid.n_load] = data.grid.vmax[0] + 0.01  # |V| of bus 1 above V_max (C3)
    assert not pi.within_bounds(outside, data.low, data.high)[0]


def test_forward_imbalance_of_the_original_schedule_rises_early(cfg, data):
    """Fig. 1: under linear β the imbalance passes half of γ_T well before half of the steps."""
    f = pi.forward_imbalance(pi.original_schedule(cfg), data, n=16)
    gT = pi.gamma_T(data.grid, data.normaliser, n=2048)
    assert f[0] < f[cfg.T // 2] and f[cfg.T // 4] > 0.5 * gT


def test_learned_schedule_moves_the_forward_imbalance_toward_the_line(cfg, data):
    gT = pi.gamma_T(data.grid, data.normaliser, n=2048)
    target = pi.gamma(gT, cfg.T).numpy()
    c = replace(cfg, schedule_steps=12, schedule_batch=16, schedule_lr=1e-2)
    learned, net, losses = pi.learn_schedule(c, data, gT)
    ab = learned.alpha_bar
    assert (ab[1:] < ab[:-1]).all() and ab.min() > 0 and ab.max() < 1
    assert losses[-1] < 0.5 * losses[0]
    err = {
        name: np.mean((pi.forward_imbalance(s, data, n=16) - target) ** 2)
        for name, s in (("original", pi.original_schedule(cfg)), ("learned", learned))
    }
    assert err["learned"] < 0.5 * err["original"]
    # the physics loss a perfect denoiser still pays: large under linear β, mostly gone under the learned schedule
    floor = {
        name: pi.physics_floor(s, data, gT, n=16).mean()
        for name, s in (("original", pi.original_schedule(cfg)), ("learned", learned))
    }
    assert floor["original"] > 0.5 and floor["learned"] < 0.5 * floor["original"]


def _ctx(data, cfg, x0_hat, t):
    z0 = data.normaliser(torch.as_tensor(data.train[: len(t)], dtype=torch.float64)).float()
    sched = pi.original_schedule(cfg)
    noise = torch.randn_like(z0)
    x_t = sched.q_sample(z0, t, noise)
    return LossContext(
        x0=z0,
        x_t=x_t,
        t=t,
        noise=noise,
        eps_hat=sched.predict_eps(x_t, t, x0_hat),
        x0_hat=x0_hat,
        schedule=sched,
        normaliser=data.normaliser,
        step=0,
    )


def test_physics_loss_is_zero_for_a_perfect_last_step_and_positive_for_a_wrong_one(cfg, data):
    gT = pi.gamma_T(data.grid, data.normaliser, n=2048)
    t = torch.zeros(8, dtype=torch.long)  # last step: x̂_{t-1} is x̂_0, bound γ_0 = 0
    z0 = data.normaliser(torch.as_tensor(data.train[:8], dtype=torch.float64)).float()
    for on in ("prev", "x0"):
        loss = pi.physics_loss(data.grid, data.normaliser, gT, on=on)
        assert loss(_ctx(data, cfg, z0, t))["physics"] < 1e-4  # float32 records: R ~ 1e-6
        assert loss(_ctx(data, cfg, z0 + 0.05, t))["physics"] > 1e-2
    # a loose bound switches the hinge off: with γ_T huge every step's bound is met
    assert (
        pi.physics_loss(data.grid, data.normaliser, 1e6)(
            _ctx(data, cfg, z0 + 0.05, torch.full((8,), cfg.T - 1, dtype=torch.long))
        )["physics"]
        == 0
    )
    with pytest.raises(ValueError, match="'prev' or 'x0'"):
        pi.physics_loss(data.grid, data.normaliser, gT, on="x_t")


def test_physics_informed_training_runs_through_the_core_trainer(cfg, data):
    gT = pi.gamma_T(data.grid, data.normaliser, n=1024)
    dm, tr = pi.train_ddpm(cfg, data, pi.original_schedule(cfg), physics=True, gT=gT)
    assert isinstance(tr, Trainer) and tr.step == cfg.train.steps
    _, parts = tr.loss(0)
    assert "physics" in parts and parts["physics"] >= 0
    x, _ = dm.draw(4)
    assert x.shape == (4, 60)
    assert pi.within_bounds(x, data.low, data.high).all()  # sigmoid output: C1-C4 by construction
    with pytest.raises(ValueError, match="γ_T"):
        pi.train_ddpm(cfg, data, pi.original_schedule(cfg), physics=True)


def test_physics_activity_reports_where_the_hinge_acts(cfg, data):
    gT = pi.gamma_T(data.grid, data.normaliser, n=1024)
    dm, _ = pi.train_ddpm(cfg, data, pi.original_schedule(cfg), physics=True, gT=gT)
    act = pi.physics_activity(dm, data, gT, n=16, seed=3)
    assert list(act.index[[0, -1]]) == [1, cfg.T] and len(act) == cfg.T
    assert act["share above bound"].between(0, 1).all() and (act["excess (p.u.)"] >= 0).all()
    # step 1: the bound is γ_0 = 0 and x̂_0 of an almost untrained model is not balanced, so every record counts,
    # and its excess is the mean R of the model's x̂_0 from x_1 (the first noise draw of the seed)
    x0 = dm.normaliser(torch.as_tensor(data.train[:16], dtype=torch.float64))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=x0.dtype)
    t0 = torch.zeros(16, dtype=torch.long)
    with torch.no_grad():
        x0_hat = dm.model(dm.schedule.q_sample(x0, t0, noise).float(), t0).double()
    R = pi.imbalance_fn(data.grid, dm.normaliser)(x0_hat).mean()
    assert act["share above bound"].iloc[0] == 1.0
    assert act["excess (p.u.)"].iloc[0] == pytest.approx(float(R), rel=1e-9)
    # a bound no record reaches switches the hinge off at every step but the last
    loose = pi.physics_activity(dm, data, 1e6, n=16, seed=3)
    assert (loose["share above bound"].iloc[1:] == 0).all() and loose["share above bound"].iloc[0] == 1.0


def test_last_step_reads_the_reverse_trace_of_the_samples(cfg, data):
    gT = pi.gamma_T(data.grid, data.normaliser, n=1024)
    traces, final = {}, {}
    for name, physics in (("plain", False), ("physics", True)):
        dm, _ = pi.train_ddpm(cfg, data, pi.original_schedule(cfg), physics=physics, gT=gT)
        x, traces[name] = pi.reverse_imbalance(dm, data.grid, n=8, seed=1)
        final[name] = float(pi.imbalance(data.grid, torch.as_tensor(x)).mean())
    table = pi.last_step(traces)
    assert list(table.index) == ["plain", "physics"] and len(traces["plain"]) == cfg.T
    for name in traces:  # x_0 is the sample itself; x_1 the state one step before
        assert table.loc[name, "R(x_0) (p.u.)"] == pytest.approx(final[name], rel=1e-6)
        assert table.loc[name, "R(x_1) (p.u.)"] == traces[name][-2]
    a, b = table.loc["plain"], table.loc["physics"]
    assert a["R(x_0) (p.u.)"] / b["R(x_0) (p.u.)"] == pytest.approx(
        a["R(x_1) (p.u.)"] / b["R(x_1) (p.u.)"] * b["reduction"] / a["reduction"], rel=1e-12
    )
    with pytest.raises(ValueError, match="last two reverse steps"):
        pi.last_step({"short": np.array([0.1])})


def test_gan_generates_records_within_the_bounds(cfg, data):
    gan = pi.train_gan(cfg, data)
    x = gan.sample(16)
    assert x.shape == (16, 60) and pi.within_bounds(x, data.low, data.high).all()
    assert list(gan.losses.columns) == ["discriminator", "generator (adversarial)", "generator (physics R)"]
    assert len(gan.losses) == cfg.gan_steps and gan.n_parameters() > 0


def test_projection_guidance_removes_the_imbalance_of_a_perturbed_record(cfg, data):
    sched = pi.original_schedule(cfg)
    z0 = data.normaliser(torch.as_tensor(data.train[:6], dtype=torch.float64)).float()
    z0 = (z0 + 0.01 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))).clamp(0.001, 0.999)
    R = pi.imbalance_fn(data.grid, data.normaliser)
    guide = pi.projection_guidance(replace(cfg, guidance_inner_steps=3), data.grid, data.normaliser)
    state = GuidanceState(x_t=z0, t=0, t_prev=-1, eps=torch.zeros_like(z0), x0=z0, schedule=sched)
    out = guide(state).x0
    assert R(out).max() < 1e-3 * R(z0).min()
    assert out.min() > 0 and out.max() < 1  # a sigmoid of the corrected logits: C1-C4
    noisy = GuidanceState(x_t=z0, t=cfg.T - 1, t_prev=cfg.T - 2, eps=torch.zeros_like(z0), x0=z0, schedule=sched)
    torch.testing.assert_close(guide(noisy).x0, z0)  # early steps are left alone


def test_profiles_and_bad_settings():
    paper = pi.PhysicsInformedConfig.for_profile("paper", "case14")
    assert (paper.T, paper.widths, paper.schedule_hidden, paper.schedule_batch, paper.eta) == (
        200,
        (256, 128, 64, 32, 64, 128, 256),
        (512, 256),
        1024,
        1.0,
    )
    assert paper.n_samples == 70_000 and pi.PhysicsInformedConfig.for_profile("paper", "case30").n_samples == 100_000
    assert paper.load_range == (0.8, 1.2) and paper.cost_range == (0.5, 1.5)
    with pytest.raises(ValueError, match="physics_on"):
        pi.PhysicsInformedConfig(physics_on="xt")
    with pytest.raises(ValueError, match="unknown profile"):
        pi.PhysicsInformedConfig.for_profile("fast")


def test_evaluate_and_summary_round_trip(tmp_path, data, cfg):
    rng = np.random.default_rng(0)
    noisy = data.test + 1e-3 * rng.standard_normal(data.test.shape)
    table = pi.evaluate(data, {"noisy": noisy}, paper={"noisy": 0.5})
    assert table.loc["real (training records)", "mean R (p.u.)"] < 1e-8
    assert table.loc["noisy", "mean R (p.u.)"] > 1e-3 and table.loc["noisy", "paper mean R"] == 0.5
    pi.save_summary(tmp_path / "case14", table, cfg, "ci")
    back = pi.load_summaries(tmp_path, profiles=["ci"])
    assert back.loc[("case14", "ci", "noisy"), "mean R (p.u.)"] == pytest.approx(table.loc["noisy", "mean R (p.u.)"])
