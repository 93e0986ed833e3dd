"""The primer chapter's helpers: real records satisfy the physics its guidance and tables measure."""

import numpy as np
import pytest
import torch

from pfbook.book.primer import (
    PrimerConfig,
    forward_imbalance,
    imbalance_residual,
    load_data,
    max_mismatch,
    mismatch_constraint,
)
from pfbook.diffusion import Normaliser, ProjectionGuidance, Schedule
from pfbook.diffusion.guidance import GuidanceState
from pfbook.evaluation.distances import mean_w1_over_sigma


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PFBOOK_DATA", str(tmp_path_factory.mktemp("data")))
    cfg = PrimerConfig.for_profile("ci")
    from dataclasses import replace

    yield load_data(replace(cfg, n_samples=40))
    mp.undo()


def test_profiles_are_valid_and_grow():
    cfgs = [PrimerConfig.for_profile(p) for p in ("ci", "default", "paper")]
    for c in cfgs:
        c.train_config()  # validates the training settings
        assert all(s <= c.T for s in c.ddim_steps)
    assert cfgs[0].train.steps < cfgs[1].train.steps < cfgs[2].train.steps
    assert (cfgs[2].width, cfgs[2].depth, cfgs[2].train.batch_size, cfgs[2].train.lr) == (
        500,
        6,
        500,
        1e-4,
    )  # Hoseinpour & Dvorkin, Appendix A
    with pytest.raises(ValueError, match="unknown profile"):
        PrimerConfig.for_profile("fast")


def test_split_and_layout(data):
    assert data.train.shape[1] == data.test.shape[1] == 20 and len(data.train) + len(data.test) == 40
    assert data.layout.grid == "case5" and data.layout.features[:2] == ("p_1", "p_2")


def test_real_records_have_no_mismatch_and_noise_adds_it(data):
    assert max_mismatch(data.grid, data.train).max() < 1e-6
    n = Normaliser.standard(data.train)
    z = n(torch.as_tensor(data.train))
    assert imbalance_residual(data.grid, n)(z).max() < 1e-10
    assert mismatch_constraint(data.grid, n)(z).abs().max() < 1e-6
    imb = forward_imbalance(data.grid, data.train, n, Schedule.linear(1000), [0, 100, 999])
    assert imb["mean |S| (p.u.)"].is_monotonic_increasing and imb["mean |S| (p.u.)"].iloc[0] > 1e-4


def test_projection_guidance_restores_the_power_flow_of_perturbed_records(data):
    n = Normaliser.standard(data.train)
    z = n(torch.as_tensor(data.train)).float()
    bad = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    st = GuidanceState(x_t=bad, t=0, t_prev=-1, eps=torch.zeros_like(bad), x0=bad, schedule=Schedule.linear(1000))
    fixed = ProjectionGuidance(mismatch_constraint(data.grid, n), inner_steps=3)(st).x0
    before = max_mismatch(data.grid, n.inverse(bad.double()))
    after = max_mismatch(data.grid, n.inverse(fixed.double()))
    assert np.median(before) > 1e-2 and np.median(after) < 1e-4


def test_mean_w1_is_zero_for_identical_samples_and_grows_with_a_shift(data):
    """On real records (a fixed reference angle, features held at limits among them)."""
    assert mean_w1_over_sigma(data.train, data.train) == 0.0
    assert mean_w1_over_sigma(data.train + data.train.std(0), data.train) == pytest.approx(1.0, rel=1e-6)
