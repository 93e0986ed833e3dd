"""Noise schedules: ᾱ in (0, 1) and decreasing, q(x_t | x_0) statistics, posteriors against closed forms."""

import math

import pytest
import torch

from pfbook.diffusion import LearnedSchedule, Schedule, cosine_alpha_bar, fit_schedule, linear_betas, make_schedule


def _schedules():
    torch.manual_seed(0)
    learned = LearnedSchedule(dim=3, T=50, hidden=(16, 8))
    return {
        "linear": Schedule.linear(1000),
        "cosine": Schedule.cosine(1000),
        "linear-short": Schedule.linear(100, 1e-3, 0.2),
        "learned": learned.schedule(torch.randn(64, 3)),
    }


@pytest.mark.parametrize("name", ["linear", "cosine", "linear-short", "learned"])
def test_alpha_bar_is_decreasing_inside_unit_interval(name):
    s = _schedules()[name]
    ab = s.alpha_bar
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert torch.allclose(torch.cumprod(1 - s.betas, 0), ab, rtol=1e-12)


def test_linear_schedule_is_ho_et_al():
    s = Schedule.linear(1000)
    assert torch.allclose(s.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), atol=1e-12)
    assert s.alpha_bar[-1] < 1e-4  # x_T is noise: less than 1% of the signal's std left
    assert torch.allclose(linear_betas(1000), s.betas, atol=1e-12)


def test_cosine_schedule_follows_its_formula():
    T, s_off = 1000, 0.008
    ab = cosine_alpha_bar(T, s_off)
    f = lambda t: math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2
    for t in (1, 10, 500, 900):
        assert ab[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)


def test_q_sample_has_the_forward_marginal():
    s = Schedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0, dtype=torch.float64)
    for t in (0, 250, 999):
        xt = s.q_sample(x0, t, generator=g)
        ab = s.alpha_bar[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 2.0, abs=5e-3)
        assert xt.var().item() == pytest.approx(1 - ab, rel=2e-2, abs=1e-5)
    # a per-sample tensor of timesteps gives each row its own noise level
    t = torch.tensor([0, 999])
    xt = s.q_sample(torch.ones(2, 3, dtype=torch.float64), t, noise=torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(xt[:, 0], s.alpha_bar[t].sqrt())


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_gaussian_conditioning(name):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), worked out independently by precision-weighting."""
    s = _schedules()[name]
    x0, xt = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-1.3]], dtype=torch.float64)
    for t in (1, 10, 500, 999):
        ab_prev, a_t = s.alpha_bar[t - 1].item(), s.alphas[t].item()
        prec = a_t / (1 - a_t) + 1 / (1 - ab_prev)
        var = 1 / prec
        mean = var * (math.sqrt(a_t) * xt / (1 - a_t) + math.sqrt(ab_prev) * x0 / (1 - ab_prev))
        m, v = s.q_posterior(x0, xt, t)
        assert v == pytest.approx(var, rel=1e-9)
        assert m.item() == pytest.approx(mean.item(), rel=1e-9)
    # at the first step the posterior is x_0 itself
    m, v = s.q_posterior(x0, xt, 0)
    assert v == 0.0 and m.item() == pytest.approx(0.7)


def test_tweedie_and_noise_are_inverse():
    s = Schedule.cosine(100)
    x0, eps = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 90, 99])
    xt = s.q_sample(x0, t, eps)
    assert torch.allclose(s.predict_x0(xt, t, eps), x0, atol=1e-9)
    assert torch.allclose(s.predict_eps(xt, t, x0), eps, atol=1e-9)


def test_state_dict_round_trip():
    s = Schedule.cosine(30)
    r = Schedule.from_state_dict(s.state_dict())
    assert r.name == "cosine" and torch.equal(r.alpha_bar, s.alpha_bar)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: make_schedule("sigmoid", 10), "unknown noise schedule 'sigmoid'"),
        (lambda: Schedule.linear(0), "positive integer"),
        (lambda: Schedule.linear(10, 0.0, 0.02), r"\(0, 1\)"),
        (lambda: Schedule(torch.tensor([0.9, 0.95])), "strictly decreasing"),
        (lambda: Schedule(torch.tensor([1.0, 0.5])), r"inside \(0, 1\)"),
    ],
)
def test_bad_schedules_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_learned_schedule_is_monotone_for_any_weights():
    torch.manual_seed(1)
    net = LearnedSchedule(dim=4, T=80, hidden=(32,))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 3.0)  # far from the initial schedule
    ab = net(torch.randn(16, 4) * 5)
    assert ab.shape == (80,)
    assert ((ab > 0) & (ab < 1)).all() and (ab[1:] < ab[:-1]).all()
    ab.sum().backward()  # differentiable in ω
    assert all(p.grad is not None for p in net.parameters())


def test_learned_schedule_starts_at_its_initial_schedule():
    init = Schedule.cosine(60)
    torch.manual_seed(0)
    net = LearnedSchedule(dim=2, T=60, hidden=(8,), init=init)
    ab = net(torch.zeros(4, 2)).detach()
    assert torch.allclose(ab, init.alpha_bar, rtol=0.05)


def test_fit_schedule_makes_a_statistic_follow_its_target():
    """Data at 0: mean x_t² equals 1 - ᾱ_t, so asking it to grow linearly must give ᾱ_t ≈ 1 - t/T."""
    T = 40
    torch.manual_seed(0)
    net = LearnedSchedule(dim=2, T=T, hidden=(16,))
    data = torch.zeros(256, 2)
    target = torch.arange(1, T + 1, dtype=torch.float64) / (T + 1)
    stat = lambda x: (x**2).mean(-1)
    before = ((1 - net(data).detach()) - target).abs()
    losses = fit_schedule(net, data, stat, target, steps=300, batch_size=256, lr=3e-2)
    after = ((1 - net(data).detach()) - target).abs()
    assert losses[-1] < 0.05 * losses[0]
    assert before.mean() > 0.2  # the linear start is far from the target ...
    assert after.mean() < 0.03 and after.max() < 0.12  # ... the fitted schedule is on it


def test_fit_schedule_resolves_first_steps_closer_to_one_than_float32_can():
    """A target that asks for very little noise at the first steps puts ᾱ_1 within float32's spacing of 1
    (6e-8); the noise coefficient sqrt(1 - ᾱ_t) must come from the float64 schedule, not from a rounded 1.0."""
    T = 20
    init = Schedule(torch.exp(-torch.linspace(1e-10, 0.01, T, dtype=torch.float64)))
    torch.manual_seed(0)
    net = LearnedSchedule(dim=2, T=T, hidden=(8,), init=init)
    assert net(torch.zeros(1, 2))[0].float() == 1.0  # ᾱ_1 rounds to 1 in float32
    data = torch.zeros(64, 2)  # float32 records
    target = (1 - init.alpha_bar).sqrt()  # E|x_t| for data at 0 is ~ sqrt(1 - ᾱ_t)
    stat = lambda x: x.abs().mean(-1) * math.sqrt(math.pi / 2)
    losses = fit_schedule(net, data, stat, target, steps=5, batch_size=64, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert (net(data).detach() < 1).all()
