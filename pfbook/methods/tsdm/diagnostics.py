"""Diagnostics of a trained TSDM prior: per-channel reconstruction error, ε-loss by step, range checks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from pfbook.methods.tsdm.method import TSDM
from pfbook.methods.tsdm.windows import Windows
from pfbook.power.corruptions import paper_magnitudes


# ---------------------------------------------------------------------------------------- diagnostics
def channel_diagnostics(
    model: TSDM, windows: Windows, n: int | None = None, seed: int = 0, ratio: float = 0.1
) -> pd.DataFrame:
    """Per channel, in % of its RMS: how much it varies, how well stage 1 rebuilds it, and what the test can see.

    Columns: ``rms`` (physical units); ``std`` over the training windows; ``step change``, the RMS change between
    consecutive samples of the test windows (what is left to predict from one sample to the next, measurement noise
    included); ``stage-1 residual``, the RMS of x_0' - y_0 on the first ``n`` clean test windows; ``threshold``,
    the smallest deviation :meth:`TSDM.outliers` flags (k σ_c, with the calibrated k of :meth:`TSDM.threshold`);
    ``FDIA [%]``, the median change the table's step FDIA makes on the entries of the channel it touches (SCADA:
    the FDIA on states at modified ratio ``ratio``; NaN for channels it never touched), and ``offsets``, the
    range of the measurement offsets (1-10 % of the channel's mean |value| for magnitudes, 10-100 % for angles).
    A change smaller than the threshold cannot be flagged.
    """
    from pfbook.methods.tsdm.experiments import corrupt_windows, scenarios_for
    from pfbook.power.corruptions import channel_scale

    clean = windows.test if n is None else windows.test[:n]
    rms = np.sqrt(np.mean(windows.train**2, axis=(0, 2)))
    x0 = model.recover(clean, two_stage=False, seed=seed).stage1
    unit = model.decode(torch.ones(1, *model.dm.layout.shape)) - model.decode(torch.zeros(1, *model.dm.layout.shape))
    sigma, k = model.threshold()
    threshold = k * sigma * np.abs(unit[0, :, 0])
    scale = np.mean([channel_scale(w) for w in clean], axis=0)
    mags = paper_magnitudes(windows.channels)
    truth, y, mask = corrupt_windows(windows, scenarios_for(windows)["FDIA step"], ratio, len(clean), seed)
    change = np.abs(y - truth)
    fdia = np.array([np.median(change[:, c][mask[:, c]]) if mask[:, c].any() else np.nan for c in range(len(rms))])
    pct = lambda a: 100 * np.asarray(a) / np.maximum(rms, 1e-12)
    return pd.DataFrame(
        {
            "rms": rms,
            "std [%]": pct(windows.train.std(axis=(0, 2))),
            "step change [%]": pct(np.sqrt(np.mean(np.diff(clean, axis=2) ** 2, axis=(0, 2)))),
            "stage-1 residual [%]": pct(np.sqrt(np.mean((x0 - clean) ** 2, axis=(0, 2)))),
            "threshold [%]": pct(threshold),
            "FDIA [%]": pct(fdia),
            "offsets [%]": [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(pct(mags[:, 0] * scale), pct(mags[:, 1] * scale))],
        },
        index=pd.Index(windows.channel_names(), name="channel"),
    )


@torch.no_grad()
def eps_loss_by_step(
    model: TSDM, windows: Windows, timesteps: Sequence[int] = (1, 10, 25, 50, 90), n: int = 64, seed: int = 0
) -> pd.DataFrame:
    """The prior's ε-loss ||ε - ε_θ(x_t, t)||² / (M T) at a few diffusion steps, on training and on test windows.

    The training objective, measured per noise level on up to ``n`` windows of each split with the same noise: a
    test loss far above the training loss at small t means the prior has memorised its training windows rather
    than learnt what windows look like (the noise-free end is where stage 1 takes its details from).
    """
    dm = model.dm
    from pfbook.diffusion.samplers import predict

    out = {}
    for split in ("train", "test"):
        data = getattr(windows, split)
        data = data[np.linspace(0, len(data) - 1, min(n, len(data))).astype(int)]
        z = model.encode(model._check(data))
        g = torch.Generator(device=dm.device).manual_seed(seed)
        row = {}
        for t in timesteps:
            noise = torch.randn(z.shape, generator=g, device=z.device, dtype=z.dtype)
            eps, _ = predict(dm.model.eval(), dm.schedule.q_sample(z, int(t), noise), int(t), None, dm.schedule)
            row[int(t)] = float(((eps - noise) ** 2).mean())
        out[split] = row
    return pd.DataFrame(out).rename_axis("diffusion step t")


def range_check(windows: Windows, factor: float = 1.5) -> pd.DataFrame:
    """Per channel, how far the test windows reach beyond what the training windows showed.

    Columns: ``train max |z|`` and ``test max |z|``, the largest deviation from the training mean in training
    standard deviations, and ``outside``, whether the test windows exceed ``factor`` x the training maximum. A prior
    has never seen such values (a trip of a region generator that only the test events contain, say), so neither
    stage can rebuild them; sorted by the ratio, largest first. For PMU windows that record their events
    (``windows.split``), also ``train event`` and ``test event``: the event behind each maximum, as
    ``"<kind> <element> (#<dataset index>)"``.
    """
    if factor <= 0:
        raise ValueError(f"factor must be positive; got {factor}")
    mu = windows.train.mean(axis=(0, 2))
    sd = np.maximum(windows.train.std(axis=(0, 2)), 1e-12)

    def z(x: np.ndarray) -> np.ndarray:  # (windows, channels): the largest |z| of each window
        return np.abs((x - mu[None, :, None]) / sd[None, :, None]).max(axis=2)

    z_tr, z_te = z(windows.train), z(windows.test)
    tr, te = z_tr.max(axis=0), z_te.max(axis=0)
    cols = {"train max |z|": tr, "test max |z|": te, "outside": te > factor * tr}
    which = (windows.split or {}).get("window_events", {})
    meta = getattr(windows.dataset, "meta", None) or {}
    if (
        "events" in meta
        and len(which.get("train", ())) == len(windows.train)
        and len(which.get("test", ())) == len(windows.test)
    ):

        def label(i: int) -> str:
            e = meta["events"][int(i)]
            return f"{e['kind']} {e['element']} (#{int(i)})"

        cols["train event"] = [label(which["train"][k]) for k in z_tr.argmax(axis=0)]
        cols["test event"] = [label(which["test"][k]) for k in z_te.argmax(axis=0)]
    out = pd.DataFrame(cols, index=pd.Index(windows.channel_names(), name="channel"))
    return out.iloc[np.argsort(-(te / np.maximum(tr, 1e-12)), kind="stable")]
