"""Samplers and guidance against distributions whose answer is known.

Two tiny models are trained once per module (seconds on one CPU thread): one on a ring of 8 Gaussians in 2-D,
one on the same ring with an independent third coordinate, for the guidance tests. Every quality check is also
run on an untrained network, which must fail it: the thresholds separate a working sampler from a broken one.
"""

import math

import pytest
import torch

from pfbook.diffusion import (
    ClampGuidance,
    Compose,
    DDIMSampler,
    DDPMSampler,
    GradientGuidance,
    Guidance,
    GuidanceState,
    NoiseCorrectionGuidance,
    ObservationGuidance,
    ProjectionGuidance,
    ReplacementGuidance,
    Schedule,
    TrainConfig,
    Trainer,
    build_denoiser,
    ddim_timesteps,
    denormalised,
    estimate_optimal_variance,
    make_sampler,
    ramp,
)
from pfbook.diffusion.toy import (
    gaussian_eps,
    gaussian_posterior_variance,
    mode_weights,
    ring_centres,
    ring_of_gaussians,
)
from pfbook.evaluation.distances import mmd_rbf

T = 200
SCHEDULE = Schedule.linear(T, 5e-4, 0.1)  # Ho et al.'s β range scaled by 1000/T: ᾱ_T ≈ 5e-5
CENTRES = ring_centres(8, 2.0)
N = 4000


def _train(data, seed=0):
    model = build_denoiser({"kind": "mlp", "dim": data.shape[1], "width": 128, "depth": 3}, seed=seed)
    cfg = TrainConfig(
        steps=4000, batch_size=256, lr=2e-3, lr_decay_every=1333, lr_decay=0.5, ema_decay=0.995, seed=seed, device="cpu"
    )
    return Trainer(model, SCHEDULE, data, cfg).train(progress=False).result()


@pytest.fixture(scope="module")
def ring():
    x, _ = ring_of_gaussians(20000, generator=torch.Generator().manual_seed(0))
    return _train(x), x


@pytest.fixture(scope="module")
def ring3():
    g = torch.Generator().manual_seed(1)
    x, _ = ring_of_gaussians(20000, generator=g)
    x = torch.cat([x, 1.0 + 0.5 * torch.randn(20000, 1, generator=g, dtype=torch.float64)], dim=1)
    return _train(x), x


def _reference(n=N, seed=9):
    return ring_of_gaussians(n, generator=torch.Generator().manual_seed(seed))[0]


def _judge(y, norm, max_weight_error=0.035, max_outside=0.1, max_mmd=0.01):
    """Every mode present with weight 1/8 ± a few percent, few samples between modes, small MMD."""
    w, outside = mode_weights(y[:, :2], CENTRES, max_dist=0.5)
    mmd = mmd_rbf(norm(y.double())[:, :2], norm(_reference().double()), max_n=2000)
    ok = bool((w - 1 / 8).abs().max() < max_weight_error and outside < max_outside and mmd < max_mmd)
    return ok, dict(weights=[round(float(v), 3) for v in w], outside=outside, mmd=mmd)


def _first_two(n):
    """Normalise (x_1, x_2) as the 3-D model does, for samples and the 2-D reference alike."""
    return lambda v: (v[:, :2] - n.shift[:2].to(v)) / n.scale[:2].to(v)


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_ddpm_recovers_every_mode(ring):
    dm, _ = ring
    y = dm.sample(N, DDPMSampler(SCHEDULE), generator=_gen())
    ok, stats = _judge(y, dm.normaliser, max_outside=0.05)
    assert ok, stats
    untrained = build_denoiser(dm.model.config(), seed=5)
    z = DDPMSampler(SCHEDULE).sample(untrained, (N, 2), generator=_gen())
    assert not _judge(dm.normaliser.inverse(z), dm.normaliser)[0]


@pytest.mark.parametrize("steps", [50, 100])
def test_ddim_recovers_every_mode(ring, steps):
    dm, _ = ring
    y = dm.sample(N, DDIMSampler(SCHEDULE, steps=steps, eta=0.0), generator=_gen())
    ok, stats = _judge(y, dm.normaliser)
    assert ok, stats


def test_ddim_with_s_equal_T_and_eta_1_is_the_ddpm_posterior(ring):
    ddim, ddpm = DDIMSampler(SCHEDULE, steps=T, eta=1.0), DDPMSampler(SCHEDULE)
    assert ddim.timesteps == ddpm.timesteps == list(range(T - 1, -1, -1))
    s = SCHEDULE
    for t in range(T):
        t_prev = t - 1
        c0, ce, var = ddim.coefficients(t, t_prev)
        # DDIM's x̂_0 / ε̂ form rewritten in x̂_0 / x_t: ε̂ = (x_t - sqrt(ᾱ_t) x̂_0)/sqrt(1 - ᾱ_t)
        ab = s.alpha_bar[t].item()
        c_xt = ce / math.sqrt(1 - ab)
        c_x0 = c0 - ce * math.sqrt(ab) / math.sqrt(1 - ab)
        assert c_x0 == pytest.approx(s.posterior_mean_coef_x0[t].item(), rel=1e-9, abs=1e-12)
        assert c_xt == pytest.approx(s.posterior_mean_coef_xt[t].item(), rel=1e-9, abs=1e-12)
        assert var == pytest.approx(s.posterior_variance[t].item(), rel=1e-9, abs=1e-15)
    dm, _ = ring
    a = ddim.sample(dm.model, (500, 2), generator=_gen(3))
    b = ddpm.sample(dm.model, (500, 2), generator=_gen(3))
    assert torch.allclose(a, b, atol=1e-4)


def test_ddim_subsequences():
    assert ddim_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    for spacing in ("uniform", "quadratic"):
        for s in (1, 2, 7, 100, 1000):
            ts = ddim_timesteps(1000, s, spacing)
            assert len(ts) == s and ts[0] == 999 and all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] >= 0
    assert DDIMSampler(SCHEDULE, timesteps=[150, 20, 3]).timesteps == [150, 20, 3]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DDIMSampler(SCHEDULE, steps=T + 1), "steps <= 200"),
        (lambda: DDIMSampler(SCHEDULE, steps=0), "positive integer"),
        (lambda: DDIMSampler(SCHEDULE, steps=10, eta=-0.5), "eta"),
        (lambda: DDIMSampler(SCHEDULE, timesteps=[3, 10]), "strictly decreasing"),
        (lambda: DDIMSampler(SCHEDULE, timesteps=[T, 3]), "strictly decreasing"),
        (lambda: DDIMSampler(SCHEDULE, steps=5, spacing="cubic"), "unknown timestep spacing"),
        (lambda: DDPMSampler(SCHEDULE, variance="learned"), "variance"),
        (lambda: make_sampler("euler", SCHEDULE), "unknown sampler 'euler'"),
    ],
)
def test_bad_sampler_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------------------------------- optimal variance
GAUSS_MEAN, GAUSS_VAR = torch.tensor([1.0, -0.5]), 0.25


def _gauss():
    data = GAUSS_MEAN + GAUSS_VAR**0.5 * torch.randn(20000, 2, generator=_gen(0))
    return gaussian_eps(GAUSS_MEAN, GAUSS_VAR, SCHEDULE), data


def test_optimal_variance_matches_gaussian_closed_form():
    model, data = _gauss()
    exact = gaussian_posterior_variance(GAUSS_VAR, SCHEDULE)
    res = estimate_optimal_variance(model, SCHEDULE, data, generator=_gen(1), estimator="residual")
    assert ((res.raw - exact).abs() / exact).max() < 0.04
    eq28 = estimate_optimal_variance(model, SCHEDULE, data, generator=_gen(1), estimator="eq28")
    snr_high = (1 - SCHEDULE.alpha_bar) / SCHEDULE.alpha_bar < 0.5  # where eq. 28's MC error is not amplified
    assert snr_high.sum() > 20
    assert ((eq28.raw - exact).abs() / exact)[snr_high].max() < 0.05
    for ov in (res, eq28):
        assert (ov.value >= 0).all() and (ov.value <= ov.upper).all()
    assert (res.raw <= res.upper * 1.04).all()


def test_optimal_variance_of_trained_model_is_within_bounds(ring):
    """0 <= σ̄²_t <= min((1 - ᾱ_t)/ᾱ_t, Var x_0) (Bao et al. 2022, Thm. 2; law of total variance).

    The Monte-Carlo estimate respects the bounds until (1 - ᾱ_t)/ᾱ_t magnifies the model's own error:
    up to a factor of ~10 for eq. 28 as printed, ~100 for the residual form; the stored value always does.
    """
    dm, x = ring
    gain = (1 - SCHEDULE.alpha_bar) / SCHEDULE.alpha_bar
    for estimator, reach, slack in (("residual", 100.0, 1.05), ("eq28", 10.0, 1.1)):
        ov = dm.estimate_optimal_variance(x[:4000], estimator=estimator)
        data_var = dm.normaliser(x[:4000]).var(0, unbiased=False).mean()
        assert torch.allclose(ov.upper, torch.minimum(gain, data_var.expand(T)))
        inside = gain <= reach
        assert inside.sum() > 80
        ratio = (ov.raw / ov.upper)[inside]
        assert ratio.min() > -0.05 and ratio.max() < slack, (estimator, ratio.min(), ratio.max())
        assert (ov.value >= 0).all() and (ov.value <= ov.upper).all()
        # the posterior variance grows with the noise level
        assert ov.value[150] > ov.value[50] > ov.value[5]


def test_ddim_with_optimal_variance_samples_a_gaussian_exactly_in_few_steps():
    """For Gaussian data p(x_0 | x_t) is Gaussian, so TSDM's step is exact at any s; plain DDIM is not."""
    model, data = _gauss()
    ov = estimate_optimal_variance(model, SCHEDULE, data, generator=_gen(1))
    for s in (3, 5, 10):
        y = DDIMSampler(SCHEDULE, steps=s, optimal_variance=ov).sample(model, (20000, 2), generator=_gen(2))
        assert torch.allclose(y.mean(0), GAUSS_MEAN, atol=0.02)
        assert torch.allclose(y.var(0), torch.full((2,), GAUSS_VAR), rtol=0.05)
    plain = DDIMSampler(SCHEDULE, steps=3).sample(model, (20000, 2), generator=_gen(2))
    assert (plain.var(0) < 0.5 * GAUSS_VAR).all()
    with pytest.raises(ValueError, match="not estimated at timestep"):
        part = estimate_optimal_variance(model, SCHEDULE, data[:100], timesteps=[0, 199])
        DDIMSampler(SCHEDULE, steps=5, optimal_variance=part)


# ---------------------------------------------------------------------------------------- guidance
A = torch.tensor([[0.0, 0.0, 1.0]])
B = torch.tensor([0.3])


def _residual(y):
    return (y.double() @ A.T.double() - B.double()).abs().squeeze(-1)


@pytest.mark.parametrize("sampler", [DDPMSampler(SCHEDULE), DDIMSampler(SCHEDULE, steps=50)], ids=["ddpm", "ddim"])
@pytest.mark.parametrize("kind", ["observation", "gradient"])
def test_guidance_meets_a_linear_constraint_and_leaves_the_rest_alone(ring3, sampler, kind):
    dm, _ = ring3
    n = dm.normaliser
    if kind == "observation":
        guide = ObservationGuidance.in_model_space(A, B, n)
    else:
        # λ_t in model space: the constraint's curvature there is 2 s_3², so λ = 0.4 / s_3² contracts by 0.2
        lam = 0.4 / float(n.scale[2]) ** 2
        guide = GradientGuidance(denormalised(lambda x: ((x @ A.T.to(x) - B.to(x)) ** 2).sum(-1), n), scale=lam)
    free = dm.sample(N, sampler, generator=_gen())
    guided = dm.sample(N, sampler, guidance=guide, generator=_gen())
    before, after = _residual(free).mean().item(), _residual(guided).mean().item()
    assert before > 0.3  # unguided samples do not satisfy it ...
    # ... guided ones do: the projection exactly, the gradient step (contraction 0.2 per step) to 1 %
    assert after < (1e-4 if kind == "observation" else 1e-2) * before
    ok, stats = _judge(guided, _first_two(n))
    assert ok, stats
    w_free, _ = mode_weights(free[:, :2], CENTRES, 0.5)
    w_guided, _ = mode_weights(guided[:, :2], CENTRES, 0.5)
    assert (w_free - w_guided).abs().max() < 0.02, (w_free, w_guided)
    assert mmd_rbf(n(free.double())[:, :2], n(guided.double())[:, :2], max_n=2000) < 0.005


@pytest.mark.parametrize("sampler", [DDPMSampler(SCHEDULE), DDIMSampler(SCHEDULE, steps=50)], ids=["ddpm", "ddim"])
def test_projection_onto_a_nonlinear_constraint_keeps_the_modes(ring, sampler):
    """H(x) = |x|² - 4 in physical units: the ring's circle. Gauss-Newton guidance puts every sample on it
    (the radial spread of the modes goes) and leaves the angular distribution, the eight modes, alone."""
    dm, _ = ring
    n = dm.normaliser
    # full strength only as t -> 0: projecting the blurred x̂_0 of the first, noisiest steps onto the circle
    # would bias which mode a deterministic (DDIM) trajectory ends in
    guide = ProjectionGuidance(
        denormalised(lambda x: (x**2).sum(-1, keepdim=True) - 4.0, n), scale=ramp(1.0, power=2), inner_steps=3
    )
    free = dm.sample(N, sampler, generator=_gen())
    on = dm.sample(N, sampler, guidance=guide, generator=_gen())
    gap = lambda y: (y.double().norm(dim=1) - 2.0).abs().mean().item()
    assert gap(free) > 0.05
    assert gap(on) < 1e-3 * gap(free)
    w_free, _ = mode_weights(free, CENTRES, 0.5)
    w_on, out = mode_weights(on, CENTRES, 0.5)
    assert (w_on - 1 / 8).abs().max() < 0.035 and out < 0.05, (w_free, w_on, out)
    if isinstance(sampler, DDPMSampler):
        # with fresh noise at every step the guided run keeps the unguided run's mode weights closely; a
        # deterministic DDIM trajectory carries any early push along to the end, so it is held to 1/8 ± 0.035 only
        assert (w_free - w_on).abs().max() < 0.02, (w_free, w_on)
    # linear constraints: one step is the exact projection, as ObservationGuidance with its default λ
    x0 = torch.randn(6, 3)
    st = GuidanceState(x_t=torch.randn(6, 3), t=30, t_prev=29, eps=torch.zeros(6, 3), x0=x0, schedule=SCHEDULE)
    a, y = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 1.0]]), torch.tensor([0.5, -1.0])
    proj = ProjectionGuidance(lambda x: x @ a.T - y)(st)
    assert torch.allclose(proj.x0 @ a.T, y.expand(6, 2), atol=1e-5)


def test_observation_step_moves_toward_the_observation():
    """The sign of DiffOPF's Alg. 3 (Hoseinpour & Dvorkin) is a typo: with + the step shrinks y - A x̂_0 (by 1 - λ|a|² here)."""
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    st = GuidanceState(x_t=torch.zeros(1, 3), t=10, t_prev=9, eps=torch.zeros(1, 3), x0=x0, schedule=SCHEDULE)
    a, y = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([10.0])
    out = ObservationGuidance(a, y, scale=0.1)(st)
    assert (y - out.x0 @ a.T).item() == pytest.approx((1 - 0.1 * 2) * (y - x0 @ a.T).item())
    # the default λ = 1/σ_max(A)² is the exact projection for one row
    assert (ObservationGuidance(a, y)(st).x0 @ a.T).item() == pytest.approx(10.0)
    # the edited x̂_0 comes with its consistent ε̂
    assert torch.allclose(SCHEDULE.predict_x0(st.x_t, 10, out.eps), out.x0, atol=1e-4)


def test_denormalised_residual_steps_in_model_space_like_physical_projection(ring3):
    """GradientGuidance on ½||A x - y||² in physical units equals ObservationGuidance.in_model_space."""
    dm, _ = ring3
    n = dm.normaliser
    x0 = torch.randn(8, 3)
    st = GuidanceState(x_t=torch.randn(8, 3), t=50, t_prev=49, eps=torch.zeros(8, 3), x0=x0, schedule=SCHEDULE)
    obs = ObservationGuidance.in_model_space(A, B, n, scale=0.7)(st)
    grad = GradientGuidance(denormalised(lambda x: 0.5 * ((x @ A.T.to(x) - B.to(x)) ** 2).sum(-1), n), scale=0.7)(st)
    assert torch.allclose(obs.x0, grad.x0, atol=1e-5)


def test_replacement_guidance_keeps_known_entries_and_the_independent_rest(ring3):
    """Fix the independent third coordinate: it is exact and the ring in (x_1, x_2) is untouched."""
    dm, _ = ring3
    n = dm.normaliser
    value = n(torch.tensor([[0.0, 0.0, 0.3]], dtype=torch.float64)).float()
    guide = ReplacementGuidance(mask=torch.tensor([False, False, True]), values=value)
    y = dm.sample(N, DDPMSampler(SCHEDULE), guidance=guide, generator=_gen())
    assert torch.allclose(y[:, 2], torch.full((N,), 0.3, dtype=y.dtype), atol=1e-5)
    ok, stats = _judge(y, _first_two(n))
    assert ok, stats


def test_replacement_conditions_dependent_entries_and_resampling_helps(ring):
    """Fix x_1 = 2 (only the (2, 0) mode is there): x_2 moves toward 0, more so with RePaint resampling.

    Replacement conditions the free entries only through the noisy x_t the model sees, so it is a weak
    conditioner for strongly dependent entries; that is what resampling (the R of Pei et al.) is for.
    """
    dm, _ = ring
    known = dm.normaliser(torch.tensor([[2.0, 0.0]], dtype=torch.float64)).float()
    guide = ReplacementGuidance(mask=torch.tensor([True, False]), values=known)
    share = lambda y: (y[:, 1].abs() < 0.4).float().mean().item()
    sampler = DDIMSampler(SCHEDULE, steps=50, eta=1.0)
    free = share(dm.sample(2000, sampler, generator=_gen()))  # the (2, 0) and (-2, 0) modes: ~1/4
    once = dm.sample(2000, sampler, guidance=guide, generator=_gen())
    often = dm.sample(2000, sampler, guidance=guide, generator=_gen(), resample=5)
    assert torch.allclose(often[:, 0], torch.full((2000,), 2.0), atol=1e-5)
    assert share(once) > free + 0.1
    assert share(often) > share(once) + 0.1


def test_noise_correction_pulls_toward_the_measurement_more_with_omega(ring):
    dm, _ = ring
    y0 = dm.normaliser(torch.tensor([[0.0, 2.0]], dtype=torch.float64)).float()  # the (0, 2) mode
    sampler = DDIMSampler(SCHEDULE, steps=20)
    target = torch.tensor([0.0, 2.0])
    near = {
        om: (
            (
                dm.sample(1000, sampler, guidance=NoiseCorrectionGuidance(y0, omega=om), generator=_gen()).float()
                - target
            ).norm(dim=1)
            < 0.5
        )
        .float()
        .mean()
        .item()
        for om in (0.0, 1.0, 5.0)
    }
    assert near[0.0] < 0.2  # one mode of eight without guidance
    assert near[1.0] > 0.3 and near[5.0] > 0.9


def test_compose_applies_in_order_before_and_after_the_step():
    calls = []

    class Tag(Guidance):
        def __init__(self, name):
            self.name = name

        def __call__(self, st):
            calls.append(("before", self.name))
            return st.with_x0(st.x0 + 1)

        def after_step(self, x, st):
            calls.append(("after", self.name))
            return x

    model = lambda x, t, cond=None: torch.zeros_like(x)
    g = Compose(Tag("a"), Compose(Tag("b"), Tag("c")))
    DDIMSampler(SCHEDULE, steps=2).sample(model, (3, 2), guidance=g, generator=_gen())
    assert calls == [(w, k) for _ in range(2) for w in ("before", "after") for k in "abc"]
    with pytest.raises(TypeError):
        Compose(lambda st: st)


def test_clamp_and_ramp():
    st = GuidanceState(
        x_t=torch.zeros(2, 2),
        t=5,
        t_prev=4,
        eps=torch.zeros(2, 2),
        x0=torch.tensor([[-2.0, 0.5], [3.0, 0.2]]),
        schedule=SCHEDULE,
    )
    out = ClampGuidance(0.0, 1.0)(st)
    assert out.x0.min() == 0.0 and out.x0.max() == 1.0
    r = ramp(10.0)
    assert r(0, 100) == 10.0 and r(99, 100) == pytest.approx(0.1) and r(50, 100) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        GradientGuidance(lambda x: x.sum(-1), scale=-1.0)


def test_epsilon_skip_with_a_zero_correction_samples_a_standard_normal():
    """ε̂ = sqrt(1 - ᾱ_t) x_t + r: with r = 0 the network is the exact denoiser of N(0, I), so DDPM draws N(0, I)."""
    from pfbook.diffusion import MLPDenoiser, Schedule

    net = MLPDenoiser(3, width=16, depth=1, prediction="epsilon_skip")
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.zeros_(net.out.bias)
    schedule = Schedule.linear(200)
    x = DDPMSampler(schedule).sample(net, (20000, 3), generator=torch.Generator().manual_seed(0))
    assert x.mean(0).abs().max() < 0.03
    assert (x.std(0) - 1).abs().max() < 0.03
    plain = MLPDenoiser(3, width=16, depth=1)  # the same zero output, read as ε̂ = 0
    torch.nn.init.zeros_(plain.out.weight)
    torch.nn.init.zeros_(plain.out.bias)
    y = DDPMSampler(schedule).sample(plain, (20000, 3), generator=torch.Generator().manual_seed(0))
    assert (y.std(0) - 1).abs().min() > 0.2  # not a standard normal: the skip made the difference


def test_make_sampler_reads_the_chapters_sampler_specs():
    ddpm, ddim = make_sampler("DDPM", SCHEDULE), make_sampler("DDIM 50", SCHEDULE)
    assert isinstance(ddpm, DDPMSampler) and ddpm.n_steps == T
    assert isinstance(ddim, DDIMSampler) and ddim.timesteps == DDIMSampler(SCHEDULE, steps=50).timesteps
    assert (
        make_sampler("ddim 20", SCHEDULE, eta=1.0).eta == 1.0 and make_sampler("ddim", SCHEDULE, steps=7).n_steps == 7
    )
    assert make_sampler("ddim", SCHEDULE).n_steps == T
    for spec, match in (
        ("DDIM fifty", "whole number"),
        ("DDPM 10", "unknown sampler 'DDPM 10'"),
        ("", "use 'DDPM' or 'DDIM <steps>'"),
        ("DDIM 10 20", "unknown sampler"),
    ):
        with pytest.raises(ValueError, match=match):
            make_sampler(spec, SCHEDULE)
    with pytest.raises(ValueError, match="names its steps"):
        make_sampler("DDIM 10", SCHEDULE, steps=20)


def test_draw_is_one_reproducible_timed_call(ring):
    dm, _ = ring
    smp = make_sampler("DDIM 10", SCHEDULE)
    x, sec = dm.draw(64, smp, seed=3)
    again, _ = dm.draw(64, smp, seed=3)
    other, _ = dm.draw(64, smp, seed=4)
    assert str(x.dtype) == "float64"
    assert x.shape == (64, 2) and sec > 0 and (x == again).all() and not (x == other).all()
    direct = dm.sample(64, smp, generator=torch.Generator().manual_seed(3)).double().numpy()
    assert (x == direct).all()
    # one generator continues its stream over several draws
    g = torch.Generator().manual_seed(3)
    first, _ = dm.draw(32, smp, generator=g)
    second, _ = dm.draw(32, smp, generator=g)
    assert (first == x[:32]).all() and not (second == first).all()


def test_forward_trace_follows_the_closed_form_of_the_noised_second_moment():
    from pfbook.diffusion.traces import forward_trace

    x0 = ring_of_gaussians(4000, generator=torch.Generator().manual_seed(2))[0]
    m2 = float(x0.pow(2).sum(1).mean())
    ts = [0, 20, 60, 120, T - 1]
    trace = forward_trace(SCHEDULE, x0, lambda x_t, t: x_t.pow(2).sum(1), ts, seed=5)
    ab = SCHEDULE.alpha_bar.double()
    expected = [float(ab[t]) * m2 + 2 * (1 - float(ab[t])) for t in ts]  # E||x_t||² = ᾱ E||x_0||² + (1-ᾱ) d
    assert trace == pytest.approx(expected, rel=0.05)
    assert (forward_trace(SCHEDULE, x0, lambda x_t, t: x_t.pow(2).sum(1), ts, seed=5) == trace).all()
    seen = []
    forward_trace(SCHEDULE, x0[:8], lambda x_t, t: seen.append(t) or x_t[:, 0], None)
    assert seen == list(range(T))


def test_reverse_trace_records_every_step_and_ends_at_the_samples(ring):
    from pfbook.diffusion.traces import reverse_trace

    dm, _ = ring
    smp = make_sampler("DDIM 20", SCHEDULE)
    norm2 = lambda z: z.double().pow(2).sum(1)  # noqa: E731
    x, ts, prev = reverse_trace(dm, smp, 200, norm2, on="x_prev", seed=1)
    assert ts.tolist() == smp.timesteps and len(prev) == smp.n_steps
    z = dm.normaliser(torch.as_tensor(x))
    assert prev[-1] == pytest.approx(float(norm2(z).mean()), rel=1e-5)  # x_(t-1) of the last step: the samples
    _, _, x0 = reverse_trace(dm, smp, 200, norm2, on="x0", seed=1)
    assert x0[-1] == pytest.approx(prev[-1], rel=1e-5)  # at t = 0 the step returns x̂_0
    assert abs(x0[0] - prev[0]) > 0.1 * prev[0]  # but earlier the two states differ: on= picks which is seen
    assert (dm.draw(200, smp, seed=1)[0] == x).all()  # recording does not change the draw
    with pytest.raises(ValueError, match="on must be one of"):
        reverse_trace(dm, smp, 4, norm2, on="x_t")
