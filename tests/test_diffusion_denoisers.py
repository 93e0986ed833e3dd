"""Denoisers: one call signature, the shapes the papers describe, rebuildable from config, and able to learn."""

import pytest
import torch

from pfbook.diffusion import (
    ConvUNetDenoiser,
    MLPDenoiser,
    Schedule,
    TrainConfig,
    Trainer,
    UNetMLPDenoiser,
    build_denoiser,
    timestep_embedding,
)


def _nets():
    return {
        "mlp": (lambda: MLPDenoiser(20, width=64, depth=3), (7, 20)),
        "mlp-cond": (lambda: MLPDenoiser(20, width=64, depth=2, cond_dim=3), (7, 20)),
        "unet_mlp": (lambda: UNetMLPDenoiser(60), (7, 60)),
        "conv_unet": (lambda: ConvUNetDenoiser(base=8, mults=(1, 2), attention=(1,)), (3, 5, 12)),
        "conv_unet-odd": (lambda: ConvUNetDenoiser(base=8, mults=(1, 2, 2), attention=(2,)), (2, 7, 13)),
        "conv_unet-2ch": (lambda: ConvUNetDenoiser(channels=2, base=8, mults=(1, 2)), (2, 2, 6, 8)),
    }


@pytest.mark.parametrize("name", list(_nets()))
def test_output_has_the_input_shape_for_scalar_and_batched_t(name):
    make, shape = _nets()[name]
    torch.manual_seed(0)
    net = make()
    x = torch.randn(shape)
    cond = torch.randn(shape[0], 3) if name.endswith("cond") else None
    out_scalar = net(x, torch.tensor(17), cond)
    out_batch = net(x, torch.full((shape[0],), 17), cond)
    assert out_scalar.shape == x.shape
    # one timestep for the batch (samplers) and one per sample (training) are the same computation
    assert torch.allclose(out_scalar, out_batch, atol=1e-5)
    assert not torch.allclose(net(x, torch.tensor(900), cond), out_scalar)  # t matters


def test_constrained_diffusion_mlp_has_the_paper_shape():
    net = MLPDenoiser(20)
    sizes = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(20, 500)] + [(500, 500)] * 6 + [(500, 20)]


def test_physics_informed_unet_mlp_has_the_paper_widths_and_skips():
    net = UNetMLPDenoiser(60)
    assert [b.lin.out_features for b in [*net.down, net.mid, *net.up]] == [256, 128, 64, 32, 64, 128, 256]
    # up layers take the previous layer concatenated with the mirrored down layer
    assert [b.lin.in_features for b in net.up] == [32 + 64, 64 + 128, 128 + 256]
    assert all(b.attn is not None for b in [*net.down, net.mid, *net.up])


def test_sigmoid_output_is_in_unit_interval_and_needs_x0_prediction():
    net = UNetMLPDenoiser(10, widths=(32, 16, 32), output="sigmoid", prediction="x0")
    y = net(torch.randn(50, 10) * 10, torch.tensor(3))
    assert ((y > 0) & (y < 1)).all()
    with pytest.raises(ValueError, match="prediction='x0'"):
        UNetMLPDenoiser(10, output="sigmoid")


@pytest.mark.parametrize("name", list(_nets()))
def test_rebuilds_from_config(name):
    make, shape = _nets()[name]
    torch.manual_seed(0)
    net = make()
    twin = build_denoiser(net.config())
    twin.load_state_dict(net.state_dict())
    x = torch.randn(shape)
    cond = torch.randn(shape[0], 3) if name.endswith("cond") else None
    assert torch.equal(net(x, torch.tensor(5), cond), twin(x, torch.tensor(5), cond))


def test_build_with_seed_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_denoiser({"kind": "mlp", "dim": 4, "width": 16, "depth": 1}, seed=3)
    b = build_denoiser({"kind": "mlp", "dim": 4, "width": 16, "depth": 1}, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown denoiser kind 'gru'"):
        build_denoiser({"kind": "gru"})
    with pytest.raises(ValueError, match="odd length"):
        UNetMLPDenoiser(4, widths=(8, 8))
    with pytest.raises(ValueError, match="cond_dim=3: pass cond"):
        MLPDenoiser(4, cond_dim=3)(torch.zeros(2, 4), torch.tensor(1))
    with pytest.raises(ValueError, match="no conditioning"):
        MLPDenoiser(4)(torch.zeros(2, 4), torch.tensor(1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="attention levels"):
        ConvUNetDenoiser(mults=(1, 2), attention=(5,))


def test_timestep_embedding_is_sinusoidal():
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(e[1, 0], torch.sin(torch.tensor(7.0)))


@pytest.mark.parametrize("name", ["mlp", "unet_mlp", "conv_unet"])
def test_each_denoiser_learns_the_noise_of_a_point_mass(name):
    """For data at one point x_0 = c the optimal ε̂ is (x_t - sqrt(ᾱ) c)/sqrt(1 - ᾱ): the loss can reach ~0.

    Predicting ε̂ = 0 scores 1; a network that learns nothing stays near that.
    """
    torch.manual_seed(0)
    if name == "conv_unet":
        net, data = ConvUNetDenoiser(base=8, mults=(1, 2), attention=(1,)), torch.ones(64, 4, 6)
        data[:, 0] = -1.0
        steps = 150
    else:
        net = MLPDenoiser(6, width=64, depth=2) if name == "mlp" else UNetMLPDenoiser(6, widths=(64, 32, 64))
        data, steps = torch.tensor([[1.0, -1.0, 0.5, 0.0, 2.0, -0.5]]).repeat(64, 1), 300
    tr = Trainer(
        net,
        Schedule.linear(100, 1e-3, 0.2),
        data,
        TrainConfig(steps=steps, batch_size=64, lr=3e-3, lr_decay_every=None, device="cpu"),
        normaliser="identity",
    )
    tr.train(progress=False)
    first, last = tr.losses[:10].mean().item(), tr.losses[-20:].mean().item()
    assert first > 0.5
    assert last < 0.15
