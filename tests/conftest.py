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
