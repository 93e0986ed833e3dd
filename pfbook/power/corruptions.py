"""Corruptions of measurement matrices: false data injection and data loss.

Every function takes a clean measurement matrix ``x`` of shape ``(M, T)`` (channels x time) and a
seeded :class:`numpy.random.Generator` (or an ``int`` seed), and returns a :class:`Corrupted`
``(data, mask)`` pair with the parameters it drew attached as ``.params`` (a JSON-ready dict for
the dataset's metadata). ``mask`` is a boolean ``(M, T)`` array that is ``True`` exactly on the
entries the corruption touched; every entry outside the mask is returned bit for bit unchanged, so
recovery can be scored on the mask and outside it.

**Modified ratio.** ``ratio`` in ``(0, 1]`` is the fraction of the ``M x T`` entries a corruption
touches (the paper sweeps 1 % to 50 %). Attacks and NM losses touch a *region*: ``n_ch =
ceil(ratio * M)`` channels over one contiguous span of ``L = round(ratio * M * T / n_ch)`` time
steps (so ``n_ch * L`` is ``ratio * M * T`` up to rounding of the span), like the paper's "30 % of
the state variables from 6 am to 8 pm". ``channels=`` and ``span=(start, stop)`` fix the region
instead. RM losses touch scattered entries, ``round(ratio * M * T)`` of them exactly.

**Magnitudes** are relative to each channel's scale ``s_c`` (its mean absolute value over the
window; 1 where that is 0), drawn per channel from ``magnitude=(lo, hi)`` (or one range per
channel, an ``(M, 2)`` array) with a random sign. The paper uses 1-10 % for magnitudes and 10-100 %
for phase angles: ``magnitude=paper_magnitudes(meta["channels"])`` gives exactly that.

Kinds (see :data:`CORRUPTIONS`): FDIA ``step`` (constant offset), ``ramp`` (offset growing
linearly over the span), ``random`` (Gaussian noise); ``replay`` (the span replaced by earlier
values of the same channels), ``phase_shift`` (the oscillation about the span's mean rotated by an
angle through its Hilbert transform; 180 degrees mirrors it), ``amplitude`` (scaled by ``1 + a``);
data loss ``rm`` (random missing, the number missing at each time step gamma distributed) and
``nm`` (whole channels missing over a span). Losses write ``fill`` (default NaN) into the mask.

**FDIA on states** (:func:`state_fdia`): the step, ramp and random shapes applied to a share of the *state
variables* and carried into the measurements through the measurement function, ``a = h(x + c) - h(x)``
(Liu, Ning & Reiter's construction), so the attacked measurements stay consistent with the power-flow
equations; the offsets on channels above are what an attacker without the network model can do.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from scipy.signal import hilbert


class Corrupted(tuple):
    """``(data, mask)``, with the drawn parameters as ``.params``; unpacks as ``data, mask = c``."""

    def __new__(cls, data: np.ndarray, mask: np.ndarray, params: dict[str, Any]):
        obj = super().__new__(cls, (data, mask))
        obj.params = params
        return obj

    @property
    def data(self) -> np.ndarray:
        return self[0]

    @property
    def mask(self) -> np.ndarray:
        return self[1]


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_x(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"a measurement matrix must have shape (M channels, T steps); got {x.shape}")
    return x


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise ValueError(
            f"modified ratio must lie in (0, 1] (fraction of entries touched; the paper uses 0.01-0.5); got {ratio}"
        )
    return ratio


def _check_range(name: str, rng_: tuple[float, float], positive: bool = True) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng_)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high); got {rng_!r}") from None
    if not (lo <= hi) or (positive and lo <= 0):
        raise ValueError(f"{name} must satisfy {'0 < ' if positive else ''}low <= high; got ({lo}, {hi})")
    return lo, hi


def _region(x: np.ndarray, ratio: float, rng: np.random.Generator, channels=None, span=None):
    """Channels and time span of an attack/NM region; see the module docstring."""
    M, T = x.shape
    if channels is None:
        ratio = _check_ratio(ratio)
        n_ch = min(M, max(1, math.ceil(ratio * M)))
        channels = np.sort(rng.choice(M, size=n_ch, replace=False))
    else:
        channels = np.unique(np.asarray(channels, dtype=int))
        if channels.size == 0 or channels.min() < 0 or channels.max() >= M:
            raise ValueError(f"channels must be non-empty indices in [0, {M}); got {channels.tolist()}")
    if span is None:
        ratio = _check_ratio(ratio)
        L = int(min(T, max(1, round(ratio * M * T / len(channels)))))
        start = int(rng.integers(0, T - L + 1))
        span = (start, start + L)
    else:
        start, stop = (int(v) for v in span)
        if not (0 <= start < stop <= T):
            raise ValueError(f"span must be (start, stop) with 0 <= start < stop <= {T}; got {span}")
        span = (start, stop)
    mask = np.zeros((M, T), dtype=bool)
    mask[np.ix_(channels, np.arange(*span))] = True
    return channels, span, mask


def channel_scale(x: np.ndarray) -> np.ndarray:
    """Per-channel scale: mean |x| over the window (NaNs ignored), 1 where that is 0 or undefined."""
    with np.errstate(all="ignore"):
        s = np.nanmean(np.abs(x), axis=1) if np.isnan(x).any() else np.mean(np.abs(x), axis=1)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


ANGLE_KINDS = ("theta", "gamma", "delta")


def paper_magnitudes(
    channels: Sequence[Any], value: tuple[float, float] = (0.01, 0.10), angle: tuple[float, float] = (0.10, 1.00)
) -> np.ndarray:
    """Per-channel magnitude ranges ``(M, 2)`` as in the paper: 1-10 % for magnitudes, 10-100 % for
    phase angles. ``channels`` are channel dicts with a ``"kind"`` (as in a dataset's metadata) or kinds;
    ``theta``, ``gamma`` and ``delta`` are angles."""
    kinds = [c["kind"] if isinstance(c, dict) else str(c) for c in channels]
    return np.array([angle if k in ANGLE_KINDS else value for k in kinds], dtype=float)


def _magnitudes(magnitude, M: int) -> np.ndarray:
    """``(M, 2)`` ranges from one ``(low, high)`` pair or per-channel pairs; checked."""
    arr = np.asarray(magnitude, dtype=float) if not isinstance(magnitude, str) else np.array([])
    if arr.shape == (2,):
        _check_range("magnitude", arr)
        return np.broadcast_to(arr, (M, 2))
    if arr.shape != (M, 2):
        raise ValueError(
            f"magnitude must be a pair (low, high) or one pair per channel ({M}, 2); got shape {arr.shape}"
        )
    if not np.all((arr[:, 0] > 0) & (arr[:, 0] <= arr[:, 1])):
        raise ValueError("every per-channel magnitude must satisfy 0 < low <= high")
    return arr


def _signed_amplitudes(rng, ch, mags):
    n = len(ch)
    return rng.uniform(mags[ch, 0], mags[ch, 1], size=n) * rng.choice([-1.0, 1.0], size=n)


def _mag_param(magnitude):
    return np.asarray(magnitude, dtype=float).tolist()


def _attack(kind, x, ratio, rng, channels, span, extra):
    return dict(
        kind=kind,
        ratio=float(ratio) if ratio is not None else None,
        shape=list(x.shape),
        channels=[int(c) for c in channels],
        span=list(span),
        **extra,
    )


def fdia_step(x, ratio=0.1, magnitude=(0.01, 0.10), rng=None, channels=None, span=None) -> Corrupted:
    """Step FDIA: a constant offset ``a_c * s_c`` (``|a_c|`` in ``magnitude``) over the region."""
    x, rng = _check_x(x), _rng(rng)
    mags = _magnitudes(magnitude, x.shape[0])
    ch, span, mask = _region(x, ratio, rng, channels, span)
    a = _signed_amplitudes(rng, ch, mags)
    off = a * channel_scale(x)[ch]
    y = x.copy()
    y[ch, span[0] : span[1]] += off[:, None]
    return Corrupted(
        y, mask, _attack("step", x, ratio, rng, ch, span, dict(magnitude=_mag_param(magnitude), amplitude=a.tolist()))
    )


def fdia_ramp(x, ratio=0.1, magnitude=(0.01, 0.10), rng=None, channels=None, span=None) -> Corrupted:
    """Ramp FDIA: an offset rising linearly from ``a_c s_c / L`` to ``a_c s_c`` over the span of length L."""
    x, rng = _check_x(x), _rng(rng)
    mags = _magnitudes(magnitude, x.shape[0])
    ch, span, mask = _region(x, ratio, rng, channels, span)
    a = _signed_amplitudes(rng, ch, mags)
    L = span[1] - span[0]
    ramp = np.arange(1, L + 1) / L
    y = x.copy()
    y[ch, span[0] : span[1]] += (a * channel_scale(x)[ch])[:, None] * ramp[None, :]
    return Corrupted(
        y, mask, _attack("ramp", x, ratio, rng, ch, span, dict(magnitude=_mag_param(magnitude), amplitude=a.tolist()))
    )


def fdia_random(x, ratio=0.1, magnitude=(0.01, 0.10), rng=None, channels=None, span=None) -> Corrupted:
    """Random FDIA: zero-mean Gaussian noise of standard deviation ``|a_c| s_c`` over the region."""
    x, rng = _check_x(x), _rng(rng)
    mags = _magnitudes(magnitude, x.shape[0])
    ch, span, mask = _region(x, ratio, rng, channels, span)
    a = np.abs(_signed_amplitudes(rng, ch, mags))
    L = span[1] - span[0]
    noise = rng.standard_normal((len(ch), L)) * (a * channel_scale(x)[ch])[:, None]
    noise[noise == 0.0] = np.finfo(float).tiny  # every masked entry really changes
    y = x.copy()
    y[ch, span[0] : span[1]] += noise
    return Corrupted(
        y, mask, _attack("random", x, ratio, rng, ch, span, dict(magnitude=_mag_param(magnitude), std=a.tolist()))
    )


def replay(
    x, ratio=0.1, rng=None, channels=None, span=None, source: np.ndarray | None = None, lag: int | None = None
) -> Corrupted:
    """Replay attack: the region's values replaced by values recorded earlier on the same channels.

    ``source`` (same shape as ``x``, e.g. the previous day's window) is what was recorded; without it
    the window itself is replayed ``lag`` steps late, circularly (``lag`` drawn in ``[L, T - 1]``
    where possible, so the replayed values do not overlap the span they replace).
    """
    x, rng = _check_x(x), _rng(rng)
    ch, span, mask = _region(x, ratio, rng, channels, span)
    M, T = x.shape
    y = x.copy()
    t = np.arange(*span)
    if source is not None:
        source = _check_x(source)
        if source.shape != x.shape:
            raise ValueError(f"replay source must have the shape of x {x.shape}; got {source.shape}")
        y[np.ix_(ch, t)] = source[np.ix_(ch, t)]
        extra = dict(source="given", lag=None)
    else:
        if T < 2:
            raise ValueError("replaying a window onto itself needs at least 2 time steps")
        L = span[1] - span[0]
        if lag is None:
            lag = int(rng.integers(L, T)) if L < T else int(rng.integers(1, T))
        lag = int(lag)
        if not (1 <= lag < T):
            raise ValueError(f"replay lag must lie in [1, {T}); got {lag}")
        y[np.ix_(ch, t)] = x[np.ix_(ch, (t - lag) % T)]
        extra = dict(source="window", lag=lag)
    return Corrupted(y, mask, _attack("replay", x, ratio, rng, ch, span, extra))


def phase_shift(
    x, ratio=0.1, degrees: float | tuple[float, float] = 180.0, rng=None, channels=None, span=None
) -> Corrupted:
    """Phase-shift attack: rotate each channel's oscillation about its span mean by ``phi``.

    With ``d = x - mean`` over the span and ``H`` the Hilbert transform,
    ``x' = mean + cos(phi) d - sin(phi) H(d)``; 180 degrees gives ``2 mean - x`` (the signal mirrored).
    ``degrees`` is a fixed angle or a range to draw one from per channel.
    """
    x, rng = _check_x(x), _rng(rng)
    ch, span, mask = _region(x, ratio, rng, channels, span)
    if np.ndim(degrees) == 0:
        phi_deg = np.full(len(ch), float(degrees))
    else:
        lo, hi = _check_range("degrees", degrees, positive=False)
        phi_deg = rng.uniform(lo, hi, size=len(ch))
    phi = np.deg2rad(phi_deg)
    seg = x[ch, span[0] : span[1]]
    mean = seg.mean(axis=1, keepdims=True)
    d = seg - mean
    h = np.imag(hilbert(d, axis=1)) if d.shape[1] > 1 else np.zeros_like(d)
    y = x.copy()
    y[ch, span[0] : span[1]] = mean + np.cos(phi)[:, None] * d - np.sin(phi)[:, None] * h
    return Corrupted(y, mask, _attack("phase_shift", x, ratio, rng, ch, span, dict(degrees=phi_deg.tolist())))


def amplitude_scaling(x, ratio=0.1, magnitude=(0.1, 0.5), rng=None, channels=None, span=None) -> Corrupted:
    """Amplitude-scaling attack: the region multiplied by ``1 + a_c`` (``|a_c|`` in ``magnitude``)."""
    x, rng = _check_x(x), _rng(rng)
    mags = _magnitudes(magnitude, x.shape[0])
    ch, span, mask = _region(x, ratio, rng, channels, span)
    a = _signed_amplitudes(rng, ch, mags)
    y = x.copy()
    y[ch, span[0] : span[1]] *= (1.0 + a)[:, None]
    return Corrupted(
        y,
        mask,
        _attack("amplitude", x, ratio, rng, ch, span, dict(magnitude=_mag_param(magnitude), factor=(1.0 + a).tolist())),
    )


def random_missing(x, ratio=0.1, shape: float = 2.0, rng=None, fill: float = np.nan) -> Corrupted:
    """RM data loss: ``round(ratio M T)`` scattered entries lost; the share lost per step is gamma distributed.

    Per-step weights ``w_t ~ Gamma(shape, 1)`` set how many channels are lost at step ``t``
    (``n_t`` proportional to ``w_t``, capped at ``M``, totalling exactly ``round(ratio M T)``); which
    channels is uniform at random.
    """
    x, rng = _check_x(x), _rng(rng)
    ratio = _check_ratio(ratio)
    if not shape > 0:
        raise ValueError(f"gamma shape must be positive; got {shape}")
    M, T = x.shape
    total = max(1, int(round(ratio * M * T)))
    w = rng.gamma(shape, 1.0, size=T)
    n = np.zeros(T, dtype=int)
    left = total
    while left > 0:  # allocate by largest remainder under the cap M
        free = n < M
        share = w * free
        share = share / share.sum() * left
        add = np.minimum(np.floor(share).astype(int), M - n)
        if add.sum() == 0:
            order = np.argsort(-(share - np.floor(share)))
            for t in order:
                if n[t] < M:
                    n[t] += 1
                    left -= 1
                    if left == 0:
                        break
            continue
        n += add
        left -= int(add.sum())
    mask = np.zeros((M, T), dtype=bool)
    for t in range(T):
        if n[t]:
            mask[rng.choice(M, size=n[t], replace=False), t] = True
    y = x.copy()
    y[mask] = fill
    return Corrupted(
        y,
        mask,
        dict(
            kind="rm",
            ratio=ratio,
            shape=list(x.shape),
            gamma_shape=float(shape),
            missing_per_step=n.tolist(),
            fill=_fill(fill),
        ),
    )


def non_random_missing(x, ratio=0.1, rng=None, channels=None, span=None, fill: float = np.nan) -> Corrupted:
    """NM data loss: whole channels lost over one span (pass ``channels=`` e.g. all channels of a bus
    to make its state unobservable)."""
    x, rng = _check_x(x), _rng(rng)
    ch, span, mask = _region(x, ratio, rng, channels, span)
    y = x.copy()
    y[mask] = fill
    return Corrupted(y, mask, _attack("nm", x, ratio, rng, ch, span, dict(fill=_fill(fill))))


def _fill(v: float):
    return None if np.isnan(v) else float(v)  # JSON has no NaN: None means NaN


CORRUPTIONS: dict[str, Callable[..., Corrupted]] = {
    "step": fdia_step,
    "ramp": fdia_ramp,
    "random": fdia_random,
    "replay": replay,
    "phase_shift": phase_shift,
    "amplitude": amplitude_scaling,
    "rm": random_missing,
    "nm": non_random_missing,
}
ATTACKS = ("step", "ramp", "random", "replay", "phase_shift", "amplitude")
LOSSES = ("rm", "nm")


# ---------------------------------------------------------------------------------------- FDIA on states
#: the shapes of an FDIA on states: the same step, ramp and random forms as on channels
STATE_ATTACKS = ("step", "ramp", "random")


def state_fdia(
    kind: str,
    states: np.ndarray,
    y: np.ndarray,
    measure: Callable[[np.ndarray], np.ndarray],
    ratio: float = 0.1,
    magnitude=(0.01, 0.10),
    rng=None,
    eligible: np.ndarray | None = None,
    span=None,
    span_share: float = 0.5,
) -> Corrupted:
    """A false data injection on *state variables*, carried into the measurements through the measurement function.

    The classical construction of Liu, Ning & Reiter: an attacker who knows the measurement function ``h`` of
    the attacked area shifts the states by ``c`` and adds ``a = h(x + c) - h(x)`` to the measurements, so the
    attacked measurements are those of the operating point ``x + c``: they obey the power-flow equations and
    leave a weighted-least-squares residual test where it was.

    ``states`` ``(S, T)`` are the true states of the window (e.g. |V| and θ of the area's buses), ``y`` ``(M, T)``
    the measurements as received, ``measure`` maps states ``(S, T)`` to noise-free measurements ``(M, T)``.
    ``ceil(ratio x n_eligible)`` of the ``eligible`` states (boolean ``(S,)`` or indices; default all) are
    attacked over one span of ``round(span_share x T)`` steps at a random start (``span=(start, stop)`` fixes
    it), with the temporal shape ``kind`` of :data:`STATE_ATTACKS`: ``step`` a constant offset ``a_s x s_s``
    (``s_s`` the state's mean |value| over the window, ``|a_s|`` drawn from ``magnitude``, one pair or one per
    state ``(S, 2)``, e.g. 1-10 % for |V| and 10-100 % for θ), ``ramp`` rising linearly to it, ``random`` Gaussian
    of that standard deviation. The mask marks the measurement entries the attack changed (``a != 0``); the
    state offset ``c`` is attached as ``.state_offset`` and the attacked states' mask as ``.state_mask``.
    """
    if kind not in STATE_ATTACKS:
        raise ValueError(f"unknown FDIA shape {kind!r} on states; choose one of {', '.join(STATE_ATTACKS)}")
    x, y, rng = _check_x(states), _check_x(y), _rng(rng)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"states {x.shape} and measurements {y.shape} must cover the same time steps")
    S, T = x.shape
    ratio = _check_ratio(ratio)
    if eligible is None:
        pool = np.arange(S)
    else:
        e = np.asarray(eligible)
        pool = np.flatnonzero(e) if e.dtype == bool else np.unique(e.astype(int))
        if e.dtype == bool and e.shape != (S,):
            raise ValueError(f"eligible must be a boolean mask of the {S} states or indices; got shape {e.shape}")
        if pool.size == 0 or pool.min() < 0 or pool.max() >= S:
            raise ValueError(f"eligible must name at least one of the {S} states; got {pool.tolist()}")
    n = min(pool.size, max(1, math.ceil(ratio * pool.size)))
    chosen = np.sort(rng.choice(pool, size=n, replace=False))
    if span is None:
        if not 0 < span_share <= 1:
            raise ValueError(f"span_share must lie in (0, 1]; got {span_share}")
        L = int(min(T, max(1, round(span_share * T))))
        start = int(rng.integers(0, T - L + 1))
        span = (start, start + L)
    # the temporal shapes are those of the channel attacks, applied to the states
    shifted = CORRUPTIONS[kind](x, magnitude=magnitude, rng=rng, channels=chosen, span=span)
    x_att, span, a = (
        shifted.data,
        tuple(shifted.params["span"]),
        np.asarray(shifted.params.get("amplitude", shifted.params.get("std"))),
    )
    h0, h1 = np.asarray(measure(x), dtype=float), np.asarray(measure(x_att), dtype=float)
    if h0.shape != y.shape or h1.shape != y.shape:
        raise ValueError(f"measure(states) must return the measurements' shape {y.shape}; got {h0.shape}")
    delta = h1 - h0
    mask = delta != 0.0
    out = Corrupted(
        y + delta,
        mask,
        dict(
            kind=f"state {kind}",
            ratio=ratio,
            shape=list(y.shape),
            states=[int(i) for i in chosen],
            eligible=int(pool.size),
            span=list(span),
            magnitude=_mag_param(magnitude),
            amplitude=a.tolist(),
        ),
    )
    out.state_offset, out.state_mask = x_att - x, shifted.mask
    return out


def corrupt(kind: str, x: np.ndarray, ratio: float = 0.1, rng=None, **kwargs) -> Corrupted:
    """Apply the corruption ``kind`` (a key of :data:`CORRUPTIONS`)."""
    try:
        fn = CORRUPTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}") from None
    return fn(x, ratio=ratio, rng=rng, **kwargs)


def corrupt_batch(
    y: np.ndarray, kind: str, ratio: float | Sequence[float] = 0.1, seed: int = 0, **kwargs
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Corrupt every window of ``y`` ``(N, M, T)`` independently (window ``i`` draws from
    ``default_rng([seed, i])``, so any window can be regenerated alone). ``ratio`` is one modified
    ratio or one per window. Returns the corrupted windows, the masks and each window's parameters."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 3:
        raise ValueError(f"windows must have shape (N, M, T); got {y.shape}")
    ratios = np.broadcast_to(np.asarray(ratio, dtype=float), (y.shape[0],))
    data, mask, params = np.empty_like(y), np.zeros(y.shape, dtype=bool), []
    for i in range(y.shape[0]):
        c = corrupt(kind, y[i], ratio=float(ratios[i]), rng=np.random.default_rng([seed, i]), **kwargs)
        data[i], mask[i] = c
        params.append(dict(c.params, window=i, seed=[seed, i]))
    return data, mask, params
