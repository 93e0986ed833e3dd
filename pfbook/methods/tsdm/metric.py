"""The recovery metric of Pei, Wang, Shi & Wang (eq. 36): a channel-weighted RMSE."""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------------------- metric (eq. 36)
def channel_weights(train: np.ndarray) -> np.ndarray:
    """m_i of eq. 36: (100 / rms_i)², rms_i the channel's root-mean-square over the training windows.

    The weighted RMSE is then in percent of each channel's typical magnitude, the unit in which the attack
    magnitudes are drawn (1-10 % for magnitudes, 10-100 % for angles), so every channel counts alike.
    """
    rms = np.sqrt(np.mean(np.asarray(train, dtype=np.float64) ** 2, axis=(0, 2)))
    return (100.0 / np.maximum(rms, 1e-6)) ** 2


def weighted_rmse(truth: np.ndarray, estimate: np.ndarray, weights: np.ndarray) -> float:
    """Eq. 36: sqrt( 1/(S T) Σ_i m_i Σ_j (s_ij - s̃_ij)² ), pooled over all windows given.

    ``truth``/``estimate`` are ``(M, T)`` or ``(n, M, T)``; NaN in ``estimate`` (an entry a method left
    missing) is an error, not skipped.
    """
    s, e = np.asarray(truth, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if s.shape != e.shape:
        raise ValueError(f"truth {s.shape} and estimate {e.shape} differ in shape")
    if not np.isfinite(e).all():
        raise ValueError("the estimate holds NaN or inf entries: a recovery must fill every entry")
    sq = (s - e) ** 2
    m = np.asarray(weights, dtype=np.float64).reshape((-1, 1))
    return float(np.sqrt(np.mean(m * sq)))
