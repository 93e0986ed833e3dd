"""Two-sample distances of :mod:`pfbook.evaluation.distances`: W1/σ with its one constant-feature rule."""

import numpy as np
import pytest

from pfbook.evaluation.distances import (
    CONSTANT_STD,
    mean_w1_over_sigma,
    sliced_wasserstein,
    standardise,
    varying_features,
    w1_over_sigma,
)


def _records(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * np.array([1.0, 0.1, 1.0, 1.0])
    x[:, 2] = 0.0  # fixed, like a reference angle
    x[:, 3] = 1.05 + 1e-9 * rng.normal(size=n)  # held at a limit to solver tolerance
    return x


def test_constant_features_are_left_out_and_small_spread_stays_in():
    x = _records()
    assert varying_features(x).tolist() == [True, True, False, False]
    small = x.copy()
    small[:, 1] *= 100 * CONSTANT_STD / small[:, 1].std()  # varies a little, a hundred times the rule's bound
    assert varying_features(small)[1]
    w = w1_over_sigma(x + 0.5 * x.std(0), x)
    assert np.isnan(w[2:]).all() and w[:2] == pytest.approx([0.5, 0.5], rel=1e-9)


def test_mean_w1_over_sigma_is_zero_for_identical_samples_one_for_a_shift_by_sigma():
    x = _records()
    assert mean_w1_over_sigma(x, x) == 0.0
    assert mean_w1_over_sigma(x + x.std(0), x) == pytest.approx(1.0, rel=1e-9)
    # a constant feature's own error does not enter (it would be divided by a rounding-sized σ)
    off = x.copy()
    off[:, 3] += 1e-3
    assert mean_w1_over_sigma(off, x) == 0.0
    other = _records(seed=1)
    assert 0.0 < mean_w1_over_sigma(other, x) < 0.3  # two draws of one distribution are close, not equal


def test_standardise_gives_the_sliced_distance_the_same_features():
    x = _records()
    a, b = standardise(x + x.std(0), x)
    assert a.shape == b.shape == (len(x), 2)
    assert b.mean(0) == pytest.approx([0, 0], abs=1e-12) and b.std(0) == pytest.approx([1, 1])
    assert sliced_wasserstein(*standardise(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, b) > 0.3


def test_mismatched_shapes_and_an_all_constant_reference_are_errors():
    x = _records()
    with pytest.raises(ValueError, match="do not match"):
        w1_over_sigma(x[:, :3], x)
    with pytest.raises(ValueError, match="do not match"):
        standardise(x[:, :3], x)
    with pytest.raises(ValueError, match="every feature of the reference is constant"):
        mean_w1_over_sigma(x[:, 2:], x[:, 2:])
