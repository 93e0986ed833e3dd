"""TSDM in the regime of its tables: FDIA on states built through h, scored on WLS states (eq. 36), the output rule."""

import numpy as np
import pytest

from pfbook.methods import tsdm
from pfbook.methods.tsdm.baselines import RobustPCA
from pfbook.power.corruptions import state_fdia


@pytest.fixture(scope="module")
def windows(case30_windows):
    return case30_windows


@pytest.fixture(scope="module")
def model(case30_prior):
    return case30_prior[0]


def test_attackable_states_keep_the_attack_inside_the_region(windows):
    _, w = windows
    names = np.array(w.state_names())
    assert list(names[w.attackable_states()]) == ["|V| bus 1", "|V| bus 3", "θ bus 3"]
    st = w.test_states(1)[0]
    # h of the true states is the noise-free measurement of the window
    clean = np.asarray(w.dataset.arrays["y0_clean"], dtype=np.float64)
    series = clean.transpose(1, 0, 2).reshape(clean.shape[1], -1)
    T = w.shape[1]
    ref = series[w.channel_index][:, w.test_steps[0] : w.test_steps[0] + T]
    np.testing.assert_allclose(w.measure(0, st), ref, atol=1e-6)  # the dataset stores float32


def test_state_fdia_is_the_measurement_of_the_shifted_states(windows):
    _, w = windows
    st, y = w.test_states(1)[0], w.test[0]
    mags = np.array([(0.01, 0.1)] * 4 + [(0.1, 1.0)] * 4)
    c = state_fdia(
        "step", st, y, lambda x: w.measure(0, x), ratio=0.5, magnitude=mags, rng=3, eligible=w.attackable_states()
    )
    assert set(c.params["states"]) <= set(np.flatnonzero(w.attackable_states()))
    assert len(c.params["states"]) == 2 and c.params["eligible"] == 3  # ceil(0.5 x 3)
    np.testing.assert_allclose(c.data - y, w.measure(0, st + c.state_offset) - w.measure(0, st), atol=1e-12)
    start, stop = c.params["span"]
    assert stop - start == round(0.5 * w.shape[1])
    assert not c.mask[:, :start].any() and not c.mask[:, stop:].any()
    off = c.state_offset[c.params["states"], start]
    scale = np.mean(np.abs(st[c.params["states"]]), axis=1)
    rel = np.abs(off) / scale
    lo, hi = mags[c.params["states"]].T
    assert np.all((rel >= lo - 1e-12) & (rel <= hi + 1e-12))
    with pytest.raises(ValueError, match="shape"):
        state_fdia("replay", st, y, lambda x: w.measure(0, x))


def test_fdia_on_states_passes_the_residual_test_and_offsets_do_not(windows):
    cfg, w = windows
    sc = tsdm.Scorer(w, tsdm.channel_weights(w.train), n=3)
    truth, y, mask = tsdm.corrupt_windows(w, "state step", 0.3, n=3, seed=0)
    _, off, _ = tsdm.corrupt_windows(w, "step", 0.3, n=3, seed=0)
    J = {k: np.median(sc.states(x)[2]) for k, x in (("clean", truth), ("fdia", y), ("offset", off))}
    assert J["fdia"] < 1.2 * J["clean"]  # consistent with Kirchhoff's laws: the estimator cannot tell
    assert J["offset"] > 2 * J["clean"]
    # and it moves the estimated states: the corrupted input's state error is far above the estimator's own
    e = {k: sc.score(truth, x)["states"] for k, x in (("clean", truth), ("fdia", y))}
    assert e["fdia"] > 5 * e["clean"]


def test_tsdm_state_error_is_below_the_corrupted_input_and_admm_under_a_step_fdia(windows, model):
    _, w = windows
    weights = tsdm.channel_weights(w.train)
    sc = tsdm.Scorer(w, weights, n=3)
    truth, y, _ = tsdm.corrupt_windows(w, "state step", 0.1, n=3, seed=0)
    err = {
        "corrupted": sc.score(truth, y)["states"],
        "TSDM": sc.score(truth, model.recover(y, seed=0).x)["states"],
        "ADMM": sc.score(truth, RobustPCA().fit(w.train)(y))["states"],
    }
    assert err["TSDM"] < err["corrupted"] and err["TSDM"] < err["ADMM"], err


def test_false_flag_rate_on_clean_windows_is_near_its_target(windows, model):
    _, w = windows
    target = model.cfg.false_flag_rate
    sigma, k = model.threshold()
    assert k > 1 and model.meta["calibration"]["1"]["false_flag_rate"] == target
    cal = model.recover(w.calibration, seed=1).outliers.mean()
    test = model.recover(w.test, seed=5).outliers.mean()
    assert cal <= 3 * target and 0.2 * target <= test <= 5 * target, (cal, test)
    # a stronger pull toward y_0 shrinks the residual: each ω is calibrated on its own
    s2, k2 = model.threshold(omega=2.0)
    assert "2" in model.meta["calibration"] and np.median(s2) < np.median(sigma)


def test_state_weights_and_rmse_follow_eq_36():
    rng = np.random.default_rng(0)
    train = np.vstack([1 + 0.01 * rng.standard_normal(200), -0.1 + 0.02 * rng.standard_normal(200), np.zeros(200)])
    m = tsdm.state_weights(train)
    assert m[2] == 0 and m[0] == pytest.approx((100 / np.sqrt(np.mean(train[0] ** 2))) ** 2)
    truth = train[None, :, :50]
    est = truth * 1.01  # 1 % of each state's value: about 1 % of its RMS
    assert tsdm.state_rmse(truth, est, m) == pytest.approx(1.0, rel=0.1)
    est[..., 10] = np.nan  # an unconverged step is left out
    assert np.isfinite(tsdm.state_rmse(truth, est, m))


def test_no_attack_moves_a_zero_injection_the_windows_drop():
    """case30's bus 6 has no load or generation: its P and Q are constant (0) and not in the windows, so bus 2,
    its neighbour, cannot be attacked through the region's channels alone."""
    from dataclasses import replace

    from pfbook.power.measurements import channels_from_states

    cfg = replace(tsdm.TSDMConfig.for_profile("ci", "case30"), region=6, window=48, stride=12)
    w = tsdm.load_windows(cfg)
    names = np.array(w.state_names())
    assert list(names[w.attackable_states()]) == ["|V| bus 1", "|V| bus 3", "θ bus 3"]
    dropped = sorted(set(range(len(w.dataset.channels))) - set(w.channel_index.tolist()))
    assert any(w.dataset.channels[i] == {"kind": "P_i", "bus": 6} for i in dropped)
    ds, T, nb = w.dataset, w.shape[1], len(w.state_bus)
    st = w.test_states(1)[0]
    c = state_fdia(
        "step",
        st,
        w.test[0],
        lambda x: w.measure(0, x),
        ratio=1.0,
        rng=0,
        magnitude=np.array([(0.01, 0.1)] * nb + [(0.1, 1.0)] * nb),
        eligible=w.attackable_states(),
    )
    steps = w.test_steps[0] + np.arange(T)
    vm, va = np.array(ds.arrays["vm"])[steps], np.array(ds.arrays["va"])[steps]
    buses, branches = np.asarray(ds.arrays["area_bus"]), np.asarray(ds.arrays["area_branch"])
    before = channels_from_states(ds.grid, buses, branches, vm, va)
    vm[:, w.state_bus] += c.state_offset[:nb].T
    va[:, w.state_bus] += c.state_offset[nb:].T
    after = channels_from_states(ds.grid, buses, branches, vm, va)
    assert np.abs(after - before)[:, w.channel_index].max() > 0  # the attack moves the region's channels
    np.testing.assert_allclose(after[:, dropped], before[:, dropped], atol=1e-12)  # and nothing else
