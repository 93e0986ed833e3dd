"""Shared fixtures: keep BLAS single-threaded so timings and parallel tests behave on small machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

#: devices the physics is exercised on: the CPU always, CUDA as well when this machine has it
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="session")
def case30_windows():
    """Real SCADA windows of case30 (the ci days): the 4 buses around the reference bus (|V| 1, |V| 3 and θ 3 are
    attackable), 48-step windows."""
    from dataclasses import replace

    from pfbook.methods import tsdm

    cfg = replace(tsdm.TSDMConfig.for_profile("ci", "case30"), region=4, window=48, stride=4)
    return cfg, tsdm.load_windows(cfg)


@pytest.fixture(scope="session")
def case30_prior(case30_windows, tmp_path_factory):
    """A small prior trained on those windows (1000 steps: enough for stage 1 to see the FDIA of the tables),
    saved to a checkpoint: ``(model, path, trainer)``."""
    from pfbook.config import apply_overrides
    from pfbook.methods import tsdm

    cfg, w = case30_windows
    cfg = apply_overrides(
        cfg, {"base": 16, "train.steps": 1000, "train.batch_size": 16, "train.lr": 2e-3, "ov_samples": 16}
    )
    path = tmp_path_factory.mktemp("models") / "tsdm.pt"
    m, trainer = tsdm.train_prior(cfg, w, checkpoint=path)
    return m, path, trainer
