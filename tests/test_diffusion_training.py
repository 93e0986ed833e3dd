"""Training: seeded and deterministic, resumable exactly, checkpoints that load weights-only and know their layout."""

import numpy as np
import pytest
import torch

from pfbook.diffusion import (
    DiffusionModel,
    Layout,
    MLPDenoiser,
    Normaliser,
    Schedule,
    TrainConfig,
    Trainer,
    build_denoiser,
    load_checkpoint,
)
from pfbook.io import DatasetError

FEATURES = tuple(f"{k}_{b}" for k in ("p", "q") for b in (1, 2, 3))
LAYOUT = Layout(features=FEATURES, grid="case3", shape=(6,))


def _data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.1, 0.2, 5.0]) + 10


def _trainer(steps=40, seed=0, checkpoint=None, **kw):
    cfg = TrainConfig(
        steps=steps,
        batch_size=64,
        lr=1e-3,
        lr_decay_every=15,
        lr_decay=0.5,
        ema_decay=0.9,
        seed=seed,
        device="cpu",
        **kw,
    )
    model = build_denoiser({"kind": "mlp", "dim": 6, "width": 32, "depth": 2}, seed=seed)
    return Trainer(model, Schedule.linear(50, 1e-3, 0.3), _data(), cfg, layout=LAYOUT, checkpoint=checkpoint)


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_gives_identical_weights():
    a, b = _trainer().train(progress=False), _trainer().train(progress=False)
    assert _same_weights(a.model, b.model)
    assert torch.equal(a.losses, b.losses)
    c = _trainer(seed=1).train(progress=False)
    assert not _same_weights(a.model, c.model)


def test_resume_continues_exactly_as_uninterrupted(tmp_path):
    whole = _trainer(steps=40).train(progress=False)
    first = _trainer(steps=40, checkpoint_every=25, checkpoint=tmp_path / "run.pt")
    first.train(steps=25, progress=False)  # interrupted after 25 of 40 steps (mid-epoch, mid-lr-period)
    assert load_checkpoint(tmp_path / "run.pt")["train_state"]["step"] == 25
    resumed = Trainer.resume(tmp_path / "run.pt", _data(), layout=LAYOUT)
    assert resumed.step == 25
    resumed.train(progress=False)
    assert resumed.step == 40
    assert _same_weights(whole.model, resumed.model)
    assert all(torch.equal(s, r) for s, r in zip(whole.ema.shadow, resumed.ema.shadow))
    assert torch.equal(whole.losses, resumed.losses)
    assert resumed.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"] == 1e-3 * 0.5**2


def test_lr_decays_by_gamma_every_k_steps():
    tr = _trainer(steps=31).train(progress=False)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)


def test_checkpoint_loads_weights_only_and_round_trips(tmp_path):
    tr = _trainer().train(progress=False)
    path = tr.save_checkpoint(tmp_path / "ck.pt")
    raw = torch.load(path, weights_only=True)  # plain tensors, dicts, strings and numbers only
    assert raw["layout"]["grid"] == "case3" and raw["layout"]["features"] == list(FEATURES)
    assert set(raw) >= {"model", "ema", "schedule", "normaliser", "layout", "train_config", "train_state"}
    dm = DiffusionModel.load(path, expect=LAYOUT, device="cpu")
    ref = tr.result()  # EMA weights, as the loaded model uses them
    x = torch.randn(5, 6)
    assert torch.equal(dm.model(x, torch.tensor(3)), ref.model(x, torch.tensor(3)))
    assert torch.equal(dm.schedule.alpha_bar, tr.schedule.alpha_bar)
    assert torch.equal(dm.normaliser.shift, tr.normaliser.shift) and dm.normaliser.kind == "standard"
    assert dm.train_config["lr_decay"] == 0.5
    # the sampling-only form (no optimiser) round-trips too, with the optimal variance
    dm.estimate_optimal_variance(_data(), timesteps=[0, 10, 49], n_samples=100)
    p2 = dm.save(tmp_path / "model.pt")
    back = DiffusionModel.load(p2, expect=LAYOUT, device="cpu")
    assert torch.equal(back.optimal_variance.value.nan_to_num(-1), dm.optimal_variance.value.nan_to_num(-1))
    with pytest.raises(DatasetError, match="without its optimiser state"):
        Trainer.resume(p2, _data())


def test_checkpoint_for_another_layout_is_refused(tmp_path):
    path = _trainer(steps=5).train(progress=False).save_checkpoint(tmp_path / "ck.pt")
    other = Layout(features=tuple(f.replace("q", "v") for f in FEATURES), grid="case14", shape=(6,))
    with pytest.raises(DatasetError) as e:
        DiffusionModel.load(path, expect=other)
    msg = str(e.value)
    assert "'case3'" in msg and "'case14'" in msg and "grid" in msg and "features" in msg
    with pytest.raises(DatasetError, match="case14"):
        Trainer.resume(path, _data(), layout=other)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = _trainer(steps=2).train(progress=False).save_checkpoint(tmp_path / "ck.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_refuses_a_changed_recipe(tmp_path):
    path = _trainer(steps=5).train(progress=False).save_checkpoint(tmp_path / "ck.pt")
    cfg = TrainConfig(steps=10, batch_size=32, lr=1e-3, lr_decay_every=15, lr_decay=0.5, ema_decay=0.9, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        Trainer.resume(path, _data(), config=cfg)


def test_extra_loss_hook_sees_the_step_and_changes_training():
    seen = []

    def extra(ctx):
        seen.append(ctx.step)
        assert ctx.x0_hat.shape == ctx.x0.shape == ctx.x_prev_mean().shape
        assert torch.allclose(ctx.denormalise(ctx.x0), ctx.normaliser.inverse(ctx.x0))
        # a penalty in physical units, as the imbalance loss of Wang et al. is
        return {"phys": 0.1 * ctx.denormalise(ctx.x0_hat).mean(-1).abs().mean()}

    plain = _trainer(steps=10).train(progress=False)
    tr = _trainer(steps=10)
    tr.extra_loss = extra
    tr.train(progress=False)
    assert seen == list(range(10))
    assert not _same_weights(plain.model, tr.model)
    assert (tr.losses > plain.losses).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=-1), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(lr_decay=1.5), "lr_decay"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_checkpoint_every_needs_a_path_and_cuda_needs_a_gpu():
    with pytest.raises(ValueError, match="checkpoint path"):
        _trainer(checkpoint_every=5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            Trainer(MLPDenoiser(6, 8, 1), Schedule.linear(10), _data(), TrainConfig(device="cuda"))


def test_progress_bar_shows_the_loss(capsys):
    _trainer(steps=50).train(progress=True)
    err = capsys.readouterr().err
    assert "training" in err and "loss=" in err


def test_normalisers_invert_and_handle_constant_features():
    x = _data().numpy()
    x[:, 2] = 3.0  # a constant feature (a reference-bus angle, say)
    for n in (Normaliser.standard(x), Normaliser.minmax(x), Normaliser.minmax(low=x.min(0), high=x.max(0) + 1)):
        z = n(torch.as_tensor(x))
        assert torch.allclose(n.inverse(z), torch.as_tensor(x), atol=1e-9)
        assert np.allclose(n.inverse(n(x)), x)
    for n in (Normaliser.standard(x), Normaliser.minmax(x)):
        # an error in model space stays tiny in physical units for the constant feature
        assert n.scale[2] <= 1e-6
    zs = Normaliser.standard(x)(torch.as_tensor(x))
    assert torch.allclose(zs[:, [0, 1, 3]].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(zs[:, [0, 1, 3]].std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    zm = Normaliser.minmax(x)(torch.as_tensor(x))
    assert zm[:, [0, 1, 3]].min() == pytest.approx(0.0) and zm[:, [0, 1, 3]].max() == pytest.approx(1.0)
    # per-channel statistics of M x T matrices
    m = torch.randn(10, 3, 24, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1])[:, None]
    n = Normaliser.standard(m, pool=(2,))
    assert n.shape == (3, 1)
    assert torch.allclose(n(m).std(dim=(0, 2), unbiased=False), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown normaliser kind"):
        Normaliser.fit("robust", x)


def test_layout_must_match_the_data():
    with pytest.raises(ValueError, match="layout"):
        Trainer(
            MLPDenoiser(6, 8, 1),
            Schedule.linear(10),
            _data(),
            TrainConfig(device="cpu"),
            layout=Layout(features=FEATURES[:4] + ("v_1", "v_2", "v_3"), shape=(7,)),
        )


def test_train_config_from_a_chapters_settings_takes_only_training_fields():
    from types import SimpleNamespace

    from pfbook.diffusion import TrainConfig

    settings = SimpleNamespace(steps=7, batch_size=3, lr=0.5, ema_decay=0.9, seed=2, device="cpu", grid="case5")
    cfg = TrainConfig.from_settings(settings)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.ema_decay, cfg.seed, cfg.device) == (7, 3, 0.5, 0.9, 2, "cpu")
    assert cfg.lr_decay_every == TrainConfig().lr_decay_every  # absent fields keep their defaults
