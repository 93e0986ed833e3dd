"""Traces of a statistic along the forward and the reverse process.

Both run the process and record, at every step, the batch mean of a callable of the current state; the callable
is the caller's (a physics residual, a distance), this module knows nothing of what the data mean.

* :func:`forward_trace` -- x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε at each requested t (``fn(x_t, t)``);
* :func:`reverse_trace` -- one sampler run, with ``fn`` of x̂_0 (``on="x0"``, the model's guess of the sample at
  that step) or of x_{t-1} (``on="x_prev"``, the state the step leaves) after every reverse step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from pfbook.diffusion.samplers import Sampler
from pfbook.diffusion.schedules import Schedule

#: the reverse-process states :func:`reverse_trace` can record
ON = ("x0", "x_prev")


def _mean(value) -> float:
    return float(torch.as_tensor(value).double().mean())


def forward_trace(
    schedule: Schedule,
    x0: torch.Tensor,
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    timesteps: Sequence[int] | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """The batch mean of ``fn(x_t, t)`` for x_t ~ q(x_t | x_0) at each of ``timesteps`` (default: all T, in order).

    ``x0`` is model-space data (batch first). One generator (seeded with ``seed`` unless ``generator`` is given)
    draws the noise of every step in turn, so the trace is a function of the seed.
    """
    g = generator if generator is not None else torch.Generator(device=x0.device).manual_seed(int(seed))
    ts = range(schedule.T) if timesteps is None else [int(t) for t in timesteps]
    return np.asarray([_mean(fn(schedule.q_sample(x0, t, generator=g), t)) for t in ts], dtype=float)


def reverse_trace(
    dm,
    sampler: Sampler | None,
    n: int,
    fn: Callable[[torch.Tensor], torch.Tensor],
    on: str = "x0",
    guidance=None,
    seed: int = 0,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` samples from ``dm`` (a :class:`~pfbook.diffusion.DiffusionModel`) with ``sampler`` (DDPM if
    ``None``) and record the batch mean of ``fn`` after every reverse step.

    ``fn`` takes model-space tensors (de-normalise inside it, e.g. with :func:`~pfbook.diffusion.denormalised`);
    ``on="x0"`` passes it the (guided) x̂_0 of the step, ``on="x_prev"`` the x_{t-1} the step produced. Returns
    the samples (physical units, as :meth:`~pfbook.diffusion.training.DiffusionModel.draw`), the timesteps t of the steps, in sampling order
    (noisiest first), and the trace.
    """
    if on not in ON:
        raise ValueError(f"reverse_trace records x̂_0 or x_(t-1): on must be one of {ON}, got {on!r}")
    ts: list[int] = []
    values: list[float] = []

    def record(state, x_prev):
        ts.append(int(state.t))
        values.append(_mean(fn(state.x0 if on == "x0" else x_prev)))

    x, _ = dm.draw(n, sampler, guidance=guidance, seed=seed, callback=record, **kwargs)
    return x, np.asarray(ts, dtype=int), np.asarray(values, dtype=float)
