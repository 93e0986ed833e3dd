"""Each corruption touches exactly what its mask says, draws reproducibly and checks its arguments."""

import json

import numpy as np
import pytest

from pfbook.power import corruptions as C


def _x(M=20, T=96, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return 1.0 + 0.3 * np.sin(2 * np.pi * t / T + rng.uniform(0, 6, (M, 1))) + 0.01 * rng.standard_normal((M, T))


@pytest.mark.parametrize("kind", list(C.CORRUPTIONS))
@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0])
def test_mask_is_exactly_what_changed(kind, ratio):
    x = _x()
    y, mask = C.corrupt(kind, x, ratio=ratio, rng=1)
    assert y.shape == x.shape and mask.shape == x.shape and mask.dtype == bool
    assert np.array_equal(y[~mask], x[~mask])  # untouched bit for bit
    if kind in C.LOSSES:
        assert np.isnan(y[mask]).all()
    else:
        assert np.isfinite(y).all()
        assert (y[mask] != x[mask]).all()  # every masked entry changed
    n = mask.sum()
    target = ratio * x.size
    if kind == "rm":
        assert n == round(target)
    else:  # channels x span region
        assert abs(n - target) <= mask.any(axis=1).sum() / 2 + 1e-9 or n == x.size
    assert np.array_equal(x, _x())  # input not modified


@pytest.mark.parametrize("kind", list(C.CORRUPTIONS))
def test_seeded_and_params_are_json(kind):
    x = _x()
    a = C.corrupt(kind, x, ratio=0.2, rng=np.random.default_rng(5))
    b = C.corrupt(kind, x, ratio=0.2, rng=np.random.default_rng(5))
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.data, b.data, equal_nan=True)
    assert a.params["kind"] == {"amplitude": "amplitude"}.get(kind, kind)
    assert json.loads(json.dumps(a.params)) == a.params


def test_region_values():
    x = _x()
    ch, span = [2, 5], (10, 30)
    y, m = C.fdia_step(x, channels=ch, span=span, magnitude=(0.05, 0.05), rng=0)
    s = C.channel_scale(x)[ch]
    assert np.allclose(np.abs(y[ch, 10:30] - x[ch, 10:30]), 0.05 * s[:, None])
    y, m = C.fdia_ramp(x, channels=ch, span=span, magnitude=(0.05, 0.05), rng=0)
    d = np.abs(y[ch, 10:30] - x[ch, 10:30])
    assert np.allclose(d[:, -1], 0.05 * s) and np.all(np.diff(d, axis=1) > 0)
    y, m = C.phase_shift(x, channels=ch, span=span, degrees=180, rng=0)
    seg = x[ch, 10:30]
    assert np.allclose(y[ch, 10:30], 2 * seg.mean(axis=1, keepdims=True) - seg)
    y, m = C.amplitude_scaling(x, channels=ch, span=span, magnitude=(0.5, 0.5), rng=0)
    f = np.asarray(C.amplitude_scaling(x, channels=ch, span=span, magnitude=(0.5, 0.5), rng=0).params["factor"])
    assert np.allclose(y[ch, 10:30], x[ch, 10:30] * f[:, None])
    prev = _x(seed=9)
    y, m = C.replay(x, channels=ch, span=span, source=prev)
    assert np.array_equal(y[ch, 10:30], prev[ch, 10:30])
    y, m = C.non_random_missing(x, channels=ch, span=span)
    assert m.sum() == 2 * 20 and np.isnan(y[m]).all()


def test_rm_is_gamma_over_time():
    x = _x(M=50, T=96)
    c = C.random_missing(x, ratio=0.3, shape=0.5, rng=3)
    per_step = c.mask.sum(axis=0)
    assert per_step.tolist() == c.params["missing_per_step"]
    assert per_step.std() > 3  # bursty, not uniform per step


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan")])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match="modified ratio"):
        C.fdia_step(_x(), ratio=ratio)
    with pytest.raises(ValueError, match="modified ratio"):
        C.random_missing(_x(), ratio=ratio)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        C.fdia_step(np.zeros(5))
    with pytest.raises(ValueError, match="magnitude"):
        C.fdia_step(_x(), magnitude=(0.2, 0.1))
    with pytest.raises(ValueError, match="span"):
        C.non_random_missing(_x(), span=(50, 200))
    with pytest.raises(ValueError, match="channels"):
        C.fdia_ramp(_x(), channels=[99])
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt("wobble", _x())


def test_batch_per_window_seeds():
    y = np.stack([_x(seed=s) for s in range(3)])
    data, mask, params = C.corrupt_batch(y, "ramp", ratio=[0.05, 0.2, 0.5], seed=7)
    assert data.shape == y.shape and mask.shape == y.shape and len(params) == 3
    assert np.array_equal(data[~mask], y[~mask])
    one = C.corrupt("ramp", y[1], ratio=0.2, rng=np.random.default_rng([7, 1]))
    assert np.array_equal(one.data, data[1]) and np.array_equal(one.mask, mask[1])
    assert [p["ratio"] for p in params] == [0.05, 0.2, 0.5]
    with pytest.raises(ValueError, match="N, M, T"):
        C.corrupt_batch(y[0], "step")


def test_per_channel_magnitudes_for_angles():
    x = _x(M=4)
    mags = C.paper_magnitudes([{"kind": "U"}, {"kind": "theta"}, "P_G", "delta"])
    assert mags.tolist() == [[0.01, 0.1], [0.1, 1.0], [0.01, 0.1], [0.1, 1.0]]
    y, m = C.fdia_step(x, channels=[0, 1, 2, 3], span=(0, 96), magnitude=mags, rng=0)
    rel = np.abs(y - x)[:, 0] / C.channel_scale(x)
    assert np.all((rel >= mags[:, 0] - 1e-12) & (rel <= mags[:, 1] + 1e-12))
    with pytest.raises(ValueError, match="one pair per channel"):
        C.fdia_ramp(x, magnitude=np.ones((3, 2)))
