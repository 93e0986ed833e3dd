"""The historical-records baseline of the DiffOPF chapter: look the test load up in the training records.

For each test load, the K training records nearest in load (Euclidean distance between the loads standardised
per feature with the training records' mean and standard deviation) give K warm starts: their OPF dispatch
(p_g, q_g), which the same load flow (problem (20) of Hoseinpour & Dvorkin) then fits to the test load. It answers
what the diffusion prior adds over a lookup of history: a prior that cannot beat it has learnt nothing the
records do not already hold.
"""

from __future__ import annotations

import numpy as np

from pfbook.methods.diffopf.data import OPFRecords


def nearest_records(data: OPFRecords, loads: np.ndarray, k: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Warm starts (pg, qg), each (n_loads, k, n_gen): the dispatch of the ``k`` training records whose loads are
    nearest each row of ``loads`` (n_loads, 2 n_load), nearest first."""
    train_loads = data.train[:, data.load_cols]
    if loads.ndim != 2 or loads.shape[1] != train_loads.shape[1]:
        raise ValueError(
            f"loads must have shape (n, {train_loads.shape[1]}) for grid {data.grid.name!r}; got {loads.shape}"
        )
    k = min(int(k), len(train_loads))
    if k < 1:
        raise ValueError("k must be at least 1")
    mu, sd = train_loads.mean(0), train_loads.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    a, b = (train_loads - mu) / sd, (loads - mu) / sd
    d2 = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(d2, idx, axis=1).argsort(1)
    idx = np.take_along_axis(idx, order, axis=1)
    _, _, pg, qg = data.split(data.train[idx])
    return pg, qg
