"""The chapters' settings: one base (:class:`pfbook.config.ChapterConfig`), profile tables as data, nested
training settings, dotted overrides, and the stored layouts old and new."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pfbook.book.prepare import OPFDataConfig
from pfbook.book.primer import PrimerConfig
from pfbook.config import ChapterConfig, apply_overrides
from pfbook.diffusion import TrainConfig
from pfbook.methods.constrained import ConstrainedConfig
from pfbook.methods.diffopf import DiffOPFConfig, speed_across
from pfbook.methods.physics_informed import PhysicsInformedConfig
from pfbook.methods.tsdm import TSDMConfig

#: every chapter's settings per profile and grid (or system), as ``for_profile`` built them before the chapters'
#: configs shared one base: flat ``settings`` (the training settings beside the others) and ``train_config()``
BEFORE = json.loads((Path(__file__).parent / "data" / "chapter_profiles.json").read_text())

CLASSES = {
    "opf": (OPFDataConfig, {"seed": 3}),
    "primer": (PrimerConfig, {"seed": 3, "device": "cuda"}),
    "constrained": (ConstrainedConfig, {"seed": 3, "device": "cuda"}),
    "diffopf": (DiffOPFConfig, {"seed": 2, "device": "cpu"}),
    "pi": (PhysicsInformedConfig, {"seed": 1}),
    "tsdm": (TSDMConfig, {"seed": 4, "device": "cpu"}),
}

#: the flat names of the training settings before they were nested, and how to read each now
TRAINING = {
    "steps": lambda c: c.train.steps,
    "batch_size": lambda c: c.train.batch_size,
    "lr": lambda c: c.train.lr,
    "lr_decay_every": lambda c: c.train.lr_decay_every,
    "lr_decay": lambda c: c.train.lr_decay,
    "ema_decay": lambda c: c.train.ema_decay,
    "epochs": lambda c: c.epochs,
    "lr_decay_every_epochs": lambda c: c.train.lr_decay_every // c.batches_per_epoch,
}


def _json(v):
    return json.loads(json.dumps(v))


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_for_profile_gives_the_settings_it_gave_before(key):
    """Every profile and every grid special case (DiffOPF's large grids, TSDM's PMU systems, the physics-informed
    paper sizes per grid) gives the same values through the profile tables as through the old ``replace`` chains."""
    chapter, profile, where = key.split("/")
    cls, kw = CLASSES[chapter]
    cfg = cls.for_profile(profile, where, **kw)
    assert isinstance(cfg, ChapterConfig)
    now = _json(asdict(cfg))
    for name, value in BEFORE[key]["settings"].items():
        got = now[name] if name in now else _json(TRAINING[name](cfg))
        assert got == value, (key, name)
    if BEFORE[key]["train_config"] is not None:
        assert _json(asdict(cfg.train_config())) == BEFORE[key]["train_config"], key


def test_training_settings_are_one_nested_train_config_that_follows_seed_and_device():
    for cls in (PrimerConfig, ConstrainedConfig, DiffOPFConfig, PhysicsInformedConfig, TSDMConfig):
        cfg = cls.for_profile("ci", seed=5, device="cuda")
        assert isinstance(cfg.train, TrainConfig) and cfg.train_config() is cfg.train
        assert (cfg.train.seed, cfg.train.device) == (5, "cuda")
        assert not {"steps", "lr", "batch_size", "ema_decay"} & set(asdict(cfg)), cls
        moved = apply_overrides(cfg, {"seed": 7})
        assert moved.train.seed == 7
    with pytest.raises(ValueError, match="train.seed follows the chapter's 'seed'; set 'seed'"):
        apply_overrides(DiffOPFConfig(), {"train.seed": 1})


def test_dotted_and_nested_overrides_reach_the_training_settings_with_type_checks():
    cfg = DiffOPFConfig.for_profile("ci", "case5")
    new = apply_overrides(cfg, {"train.steps": 4000.0, "train": {"lr": 1}, "n_test": 3})
    assert (new.train.steps, new.train.lr, new.n_test) == (4000, 1.0, 3)
    assert isinstance(new.train.steps, int) and isinstance(new.train.lr, float)
    assert new.train.batch_size == cfg.train.batch_size and cfg.train.steps == 600  # the original is untouched
    assert apply_overrides(cfg, {"train.ema_decay": None}).train.ema_decay is None
    with pytest.raises(ValueError, match="'train.steps' expects a int"):
        apply_overrides(cfg, {"train.steps": 2.5})
    with pytest.raises(ValueError, match="no setting 'train.stpes'.*train.steps"):
        apply_overrides(cfg, {"train.stpes": 10})
    with pytest.raises(ValueError, match="'train' holds settings of its own.*train.steps="):
        apply_overrides(cfg, {"train": 10})
    with pytest.raises(ValueError, match="no setting 'steps'.*train"):
        apply_overrides(cfg, {"steps": 10})
    with pytest.raises(ValueError, match="TrainConfig.steps must be a positive integer"):
        apply_overrides(cfg, {"train.steps": 0})  # the nested class's own checks still run


def test_setting_reads_dotted_names_and_properties():
    cfg = ConstrainedConfig.for_profile("paper")
    assert cfg.setting("train.steps") == 150_000 and cfg.setting("epochs") == 15_000 and cfg.setting("width") == 500
    assert TSDMConfig.for_profile("ci", "ieee39").setting("region_size") == 3
    for missing in ("train.stpes", "schedule", "_fields"):
        with pytest.raises(KeyError, match="no setting"):
            cfg.setting(missing)


@pytest.mark.parametrize(
    "cls, where",
    [
        (ConstrainedConfig, "case14"),
        (DiffOPFConfig, "case118"),
        (PhysicsInformedConfig, "case30"),
        (TSDMConfig, "npcc"),
        (PrimerConfig, "case5"),
        (OPFDataConfig, "case14"),
    ],
)
def test_to_dict_round_trips_and_the_old_flat_layout_still_reads(cls, where):
    cfg = cls.for_profile("ci", where, seed=2)
    stored = _json(cfg.to_dict())  # what a summary or a checkpoint holds
    assert cls.from_dict(stored) == cfg
    if hasattr(cfg, "train"):
        flat = {k: v for k, v in stored.items() if k != "train"}
        flat.update({k: v for k, v in stored["train"].items() if k not in ("seed", "device", "checkpoint_every")})
        flat["retired_setting"] = 1  # a setting a later version dropped
        assert cls.from_dict(flat) == cfg


def test_for_profile_refuses_unknown_profiles_and_a_grid_given_twice():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        PrimerConfig.for_profile("fast")
    with pytest.raises(TypeError, match="'system' twice"):
        TSDMConfig.for_profile("ci", "case30", system="case57")


RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"
SUMMARY_CLASSES = {
    "constrained": ConstrainedConfig,
    "diffopf": DiffOPFConfig,
    "physics-informed": PhysicsInformedConfig,
    "tsdm": TSDMConfig,
}


def test_published_summaries_in_the_flat_layout_still_read():
    """The book's published summaries were written before the training settings were nested: they read back, with
    their training settings in ``train``, and the cross-grid readers find their fields."""
    files = sorted(RESULTS.glob("*/*-summary-*.json"))
    assert files, f"no published summaries under {RESULTS}"
    for path in files:
        obj = json.loads(path.read_text())
        cls = SUMMARY_CLASSES[path.name.split("-summary-")[0]]
        flat = obj["config"]
        cfg = cls.from_dict(flat)
        if "train" not in flat:
            steps = flat["epochs"] * flat["batches_per_epoch"] if "epochs" in flat else flat["steps"]
            assert (cfg.train.steps, cfg.train.lr, cfg.train.batch_size) == (steps, flat["lr"], flat["batch_size"]), (
                path
            )
            assert cfg.train.ema_decay == flat["ema_decay"] and cfg.train.seed == flat["seed"], path
        assert cls.from_dict(_json(cfg.to_dict())) == cfg, path
    speed = speed_across(RESULTS)  # reads n_draw and device from the stored configs
    assert len(speed) and speed["device"].notna().all()
