"""TSDM (Pei, Wang, Shi & Wang): windows, the eq. 36 metric, the trained prior's two stages, recover(), checkpoints, baselines."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pfbook.io import DatasetError
from pfbook.methods import tsdm
from pfbook.methods.tsdm.baselines import EncoderWGAN, LSTMPredictor, RobustPCA, VAERecovery, rpca_admm
from pfbook.power.corruptions import corrupt_batch


@pytest.fixture(scope="module")
def windows(case30_windows):
    """Real SCADA windows of case30 (the ci days), see ``tests/conftest.py``."""
    return case30_windows


@pytest.fixture(scope="module")
def model(case30_prior):
    """The small prior trained on the clean windows, saved to a checkpoint: ``(model, path, trainer)``."""
    return case30_prior


def test_windows_are_split_in_time_and_drop_constant_channels(windows):
    cfg, w = windows
    M, T = w.shape
    assert T == cfg.window and M == len(w.channels) == len(w.channel_index)
    assert w.train.shape[1:] == w.test.shape[1:] == w.calibration.shape[1:]
    assert (w.train.std(axis=(0, 2)) > 0).all()
    steps_per_day = 96
    n_days = w.dataset.arrays["y0"].shape[0]
    # the test windows lie in the last day(s), after every training and calibration window
    assert w.test_steps.min() >= (n_days - 1) * steps_per_day
    full = np.asarray(w.dataset.arrays["y0"], dtype=np.float64)
    day, off = divmod(int(w.test_steps[0]), steps_per_day)
    np.testing.assert_allclose(w.test[0], full[day][w.channel_index, off : off + T])


def test_weighted_rmse_is_percent_of_channel_magnitude():
    rng = np.random.default_rng(0)
    truth = 1.0 + 0.1 * rng.standard_normal((3, 4, 50))
    w = tsdm.channel_weights(truth)
    est = truth * 1.01  # 1 % error on every entry
    assert tsdm.weighted_rmse(truth, est, w) == pytest.approx(1.0, rel=0.02)
    assert tsdm.weighted_rmse(truth, truth, w) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        tsdm.weighted_rmse(truth, np.where(truth > 1.1, np.nan, truth), w)
    with pytest.raises(ValueError, match="shape"):
        tsdm.weighted_rmse(truth, truth[:, :3], w)


def test_optimal_variance_and_sigma_are_stored_with_the_model(model):
    m, path, _ = model
    ov = m.dm.optimal_variance
    assert ov is not None and torch.isfinite(ov.value).all()
    assert (ov.value >= 0).all() and (ov.value <= ov.upper + 1e-12).all()
    loaded = tsdm.TSDM.load(path)
    torch.testing.assert_close(loaded.dm.optimal_variance.value, ov.value)
    np.testing.assert_allclose(loaded.residual_sigma, m.residual_sigma)
    assert loaded.channels == m.channels
    ckpt = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert "tsdm" in ckpt["extra"]


def test_prior_trained(windows, model):
    _, w = windows
    m, _, trainer = model
    losses = trainer.losses.numpy()
    assert losses[-50:].mean() < 0.7 * losses[:20].mean()
    # the network beats its skip alone (r = 0, ε̂ = sqrt(1 - ᾱ_t) x_t: exact for standard-normal data) at t = 10,
    # where the skip scores ᾱ_t: it has learnt how the windows differ from noise
    t = 10
    d = tsdm.eps_loss_by_step(m, w, timesteps=(t,), n=16)
    z = m.encode(w.train[np.linspace(0, len(w.train) - 1, 16).astype(int)])
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    x_t = m.dm.schedule.q_sample(z, t, noise)
    skip_only = float(((m.dm.schedule.gaussian_eps(x_t, t) - noise) ** 2).mean())
    assert d.loc[t, "train"] < 0.85 * skip_only


def test_keep_rule_returns_unflagged_entries_as_measured_and_rebuilds_the_flagged(windows, model):
    _, w = windows
    m, _, _ = model
    y, mask, _ = corrupt_batch(w.test, "step", 0.2, seed=1, magnitude=(0.5, 1.0))
    r = m.recover(y, seed=0)
    assert r.rule == "keep" and r.k == pytest.approx(m.threshold()[1])
    np.testing.assert_array_equal(r.flagged, r.outliers)  # nothing lost: flagged = detected
    np.testing.assert_array_equal(r.x[~r.flagged], y[~r.flagged])  # good data untouched
    assert r.stage2[r.flagged.any(axis=(1, 2))].all()
    assert not np.allclose(r.x[r.flagged], y[r.flagged])
    # Algorithm 1 literally: k = 3, and a window with under 10 % flagged returns x_0' whole
    lit = m.recover(y, seed=0, rule="algorithm1")
    assert lit.k == m.cfg.sigma_k
    few = lit.outliers.mean(axis=(1, 2)) < m.cfg.max_flagged
    np.testing.assert_allclose(lit.x[few], lit.stage1[few])
    assert lit.flagged[few].all()
    with pytest.raises(ValueError, match="output rule"):
        m.recover(y, rule="median")


def test_recover_fills_lost_entries_and_keeps_the_others(windows, model):
    cfg, w = windows
    m, path, _ = model
    truth = w.test
    y, mask, _ = corrupt_batch(truth, "rm", 0.3, seed=2)
    x, flagged = tsdm.recover(path, y, mask)  # from the checkpoint, as a user would
    assert np.isfinite(x).all() and x.shape == y.shape
    assert flagged[mask].all()
    np.testing.assert_array_equal(x[~flagged], y[~flagged])
    one = m.recover(y[0], mask[0])  # a single (M, T) window
    assert one.x.shape == y[0].shape


def test_masked_imputation_uses_the_known_entries_and_resampling_helps(windows, model):
    _, w = windows
    m, _, _ = model
    weights = tsdm.channel_weights(w.train)
    truth = w.test
    y, mask, _ = corrupt_batch(truth, "rm", 0.3, seed=2)
    free = m.dm.sample(len(y), m.sampler("tsdm"), guidance=m.clamp(), generator=torch.Generator().manual_seed(0))
    free = np.where(mask, free.double().numpy().reshape(y.shape), y)  # the prior alone, ignoring y_0
    err = {R: tsdm.weighted_rmse(truth, m.recover(y, mask, R=R, seed=0).x, weights) for R in (1, 2, 6)}
    assert err[2] < 0.85 * tsdm.weighted_rmse(truth, free, weights)  # the paper's R = 2
    assert err[6] < err[1]


def test_guidance_scale_pulls_stage_one_toward_the_measurements(windows, model):
    _, w = windows
    m, _, _ = model
    y = w.test
    far = m.recover(y, omega=0.0, two_stage=False, seed=3).stage1
    near = m.recover(y, omega=2.0, two_stage=False, seed=3).stage1
    assert np.abs(near - y).mean() < np.abs(far - y).mean()


def test_bad_input_is_refused_with_the_expected_shape(model):
    m, _, _ = model
    with pytest.raises(ValueError, match=r"\(M, T\)"):
        m.recover(np.zeros((m.M + 1, m.T)))
    with pytest.raises(ValueError, match="no observed entry"):
        m.recover(np.full((m.M, m.T), np.nan))
    with pytest.raises(ValueError, match="mask"):
        m.recover(np.zeros((m.M, m.T)), mask=np.zeros((m.M, m.T + 1), bool))
    with pytest.raises(ValueError, match="sampler"):
        m.recover(np.zeros((m.M, m.T)), sampler="euler")


def test_samplers_of_table_four(windows, model):
    _, w = windows
    m, _, _ = model
    assert m.sampler("ddpm").n_steps == m.cfg.N
    assert m.sampler("tsdm", 10).n_steps == 10 and m.sampler("tsdm").optimal_variance is not None
    assert m.sampler("ddim", 10).optimal_variance is None


def test_rpca_separates_low_rank_and_sparse_parts():
    rng = np.random.default_rng(0)
    L0 = rng.standard_normal((2, 60, 2)) @ rng.standard_normal((2, 2, 100))
    S0 = np.zeros_like(L0)
    idx = rng.random(L0.shape) < 0.05
    S0[idx] = 5 * rng.choice([-1, 1], idx.sum())
    observed = rng.random(L0.shape) > 0.1
    L, S = rpca_admm(torch.as_tensor(L0 + S0), torch.as_tensor(observed))
    err = np.abs(L.numpy() - L0).max()
    assert err < 1e-3, err  # the lost 10 % are completed as well


@pytest.mark.parametrize("cls", [LSTMPredictor, VAERecovery, EncoderWGAN, RobustPCA])
def test_baselines_fill_lost_entries(windows, cls):
    _, w = windows
    kw = {} if cls is RobustPCA else {"steps": 30}
    b = cls(**kw).fit(w.train)
    y = w.test.copy()
    mask = np.zeros(y.shape, bool)
    mask[:, 0, 5:15] = True
    y[mask] = np.nan
    x = b(y, mask)
    assert x.shape == y.shape and np.isfinite(x).all()
    if cls in (VAERecovery, EncoderWGAN):  # reconstruction networks told what is lost keep the rest
        np.testing.assert_allclose(x[~mask], y[~mask], rtol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        b(y[:, :-1], None)


def test_lstm_keeps_a_jump_of_every_channel_as_a_system_event(windows):
    _, w = windows
    b = LSTMPredictor(steps=30).fit(w.train)
    y = w.test[:1].copy()
    y[0, :, 20:] += 20 * w.train.std(axis=(0, 2))[:, None]  # every channel jumps by 20 σ at once
    np.testing.assert_allclose(b(y)[0, :, 20], y[0, :, 20])  # the system moved: kept as measured
    one = y.copy()
    one[0, 1:, 20:] = w.test[0, 1:, 20:]  # the same jump on one channel only
    assert abs(b(one)[0, 0, 20] - one[0, 0, 20]) > 5 * w.train[:, 0].std()  # an attack: replaced
    b.event_share = 1.0  # rule off: the common jump is replaced too
    assert not np.allclose(b(y)[0, :, 20], y[0, :, 20])
    with pytest.raises(ValueError, match="event_share"):
        LSTMPredictor(event_share=0.0)


def test_range_check_finds_a_test_channel_beyond_the_training_range(windows):
    from dataclasses import replace

    _, w = windows
    test = w.test.copy()
    test[0, 2, 5] = w.train[:, 2].mean() + 100 * w.train[:, 2].std()
    rc = tsdm.range_check(replace(w, test=test))
    assert rc.index[0] == w.channel_names()[2] and rc["outside"].iloc[0]
    np.testing.assert_allclose(rc["test max |z|"].iloc[0], 100, rtol=1e-9)
    with pytest.raises(ValueError, match="factor"):
        tsdm.range_check(w, factor=0)


def _synthetic_pmu(n_events=80, failed=(3,), seed=0):
    """A PMU-dataset stand-in: 2 region generators (G1 at bus 1, G2 at bus 2) of 3; events cycling through the four
    kinds, the trips drawn among all three generators, the faults among buses 11 and 21 (a branch from buses 1 and
    2) and 50-53 (far away). A trip of G1 or G2 sends its own channels far off (+50, -50); a fault next to a region
    bus dips that bus's voltage by 0.6, one far away every voltage by 0.1; every event adds noise."""
    from types import SimpleNamespace

    from pfbook.power.pmu import EVENT_KINDS

    rng = np.random.default_rng(seed)
    gens = [dict(model="GENROU", gen=g, bus=b) for g, b in (("G1", "1"), ("G2", "2"), ("G3", "3"))]
    channels = [dict(kind=k, gen=g["gen"], model="GENROU", bus=g["bus"]) for g in gens for k in ("P_G", "delta")]
    channels += [dict(kind="U", bus=g["bus"]) for g in gens]
    lines = {"L1": ("1", "11"), "L2": ("2", "21"), "L3": ("3", "50"), "L4": ("50", "51"), "L5": ("51", "52")}
    lines["L6"] = ("52", "53")
    topology = dict(lines=lines, loads={"PQ_1": "53"}, generators={g["gen"]: g["bus"] for g in gens})
    events, data = [], np.zeros((n_events, len(channels), 60))
    for i in range(n_events):
        kind = EVENT_KINDS[i % 4]
        element = dict(
            fault=["11", "21", "50", "51", "52", "53"][rng.integers(6)],
            line_trip=f"L{rng.integers(3, 7)}",
            gen_trip=f"G{rng.integers(1, 4)}",
            load_change="PQ_1",
        )[kind]
        events.append(dict(kind=kind, element=element))
        data[i] = 1 + 0.01 * rng.standard_normal(data.shape[1:])
        if kind == "gen_trip":
            rows = [j for j, c in enumerate(channels) if c.get("gen") == element and c["kind"] != "U"]
            data[i, rows, 30:] += np.array([50.0, -50.0])[:, None]
        elif kind == "fault" and element in ("11", "21"):
            data[i, 6 if element == "11" else 7, 30:33] -= 0.6
        elif kind == "fault":
            data[i, 6:, 30:33] -= 0.1
    success = np.ones(n_events, bool)
    success[list(failed)] = False
    data[~success] = np.nan
    meta = dict(events=events, generators=gens, channels=channels, topology=topology)
    return SimpleNamespace(meta=meta, channels=channels, arrays=dict(data=data, success=success))


def test_pmu_event_strata_tell_apart_what_hits_the_region():
    from pfbook.methods.tsdm.windows import event_strata

    ds = _synthetic_pmu()
    region, topo = ds.meta["generators"][:2], ds.meta["topology"]
    events = [
        dict(kind="gen_trip", element="G1"),
        dict(kind="gen_trip", element="G3"),
        dict(kind="fault", element="11"),
        dict(kind="line_trip", element="L2"),
        dict(kind="fault", element="53"),
        dict(kind="load_change", element="PQ_1"),
    ]
    assert event_strata(events, region, topo) == [
        ("gen_trip", "G1"),
        ("gen_trip",),  # G3 lies outside the region
        ("fault", "near bus 1"),
        ("line_trip", "near bus 2"),
        ("fault",),
        ("load_change",),
    ]
    assert event_strata(events, region, topo, hops=0)[2:4] == [("fault",), ("line_trip", "near bus 2")]
    assert event_strata(events, region)[:3] == [("gen_trip", "G1"), ("gen_trip",), ("fault",)]  # no topology


def test_pmu_events_are_split_by_event_from_one_distribution():
    from pfbook.methods.tsdm.windows import _pmu_windows, _split_counts, split_events

    ds = _synthetic_pmu()
    cfg = replace(tsdm.TSDMConfig.for_profile("ci", "ieee39"), region=2, window=20, stride=5)
    w = _pmu_windows(cfg, ds)
    sp = w.split
    parts = [sp["train"], sp["calibration"], sp["test"]]
    # by event: every successful event in exactly one part, the failed one excluded (and recorded)
    assert sorted(np.concatenate(parts).tolist()) == [i for i in range(80) if i != 3]
    assert sp["excluded"].tolist() == [3]
    assert tuple(map(len, parts)) == _split_counts(79, cfg.calibration_fraction, cfg.test_fraction)
    # every stratum of the calibration and test events has training events: each kind, each region generator's
    # trip, the faults next to each region bus
    strata = {part: {sp["strata"][int(i)] for i in sp[part]} for part in ("train", "calibration", "test")}
    assert strata["test"] | strata["calibration"] <= strata["train"] and not sp["unmatched"]
    assert {("gen_trip", "G1"), ("gen_trip", "G2"), ("fault", "near bus 1"), ("fault",)} <= strata["test"]
    # ... so the test windows stay within the training range; each window's event is recorded
    rc = tsdm.range_check(w)
    assert not rc["outside"].any()
    assert {"train event", "test event"} <= set(rc.columns)
    assert rc.loc["delta G1", "test event"].startswith("gen_trip G1 (#")
    assert rc.loc["U bus 1", "test event"].startswith("fault 11 (#")
    assert (sp["window_events"]["test"] == w.test_steps // 10**6).all()
    e, start = divmod(int(w.test_steps[-1]), 10**6)
    np.testing.assert_allclose(w.test[-1], ds.arrays["data"][e][w.channel_index, start : start + cfg.window])
    # deterministic, and seeded
    again = _pmu_windows(cfg, ds)
    for part in ("train", "calibration", "test"):
        np.testing.assert_array_equal(again.split[part], sp[part])
    np.testing.assert_array_equal(again.test, w.test)
    labels = [sp["strata"][i] for i in sorted(sp["strata"])]
    fractions = cfg.calibration_fraction, cfg.test_fraction
    ok = np.flatnonzero(ds.arrays["success"])  # split positions -> dataset events
    np.testing.assert_array_equal(ok[split_events(labels, *fractions)["test"]], sp["test"])
    assert not np.array_equal(
        split_events(labels, *fractions, seed=1)["test"], split_events(labels, *fractions)["test"]
    )


def test_event_split_shares_and_too_few_events():
    from pfbook.methods.tsdm.windows import split_events

    # 160 events: three kinds of 40 (8 faults next to the region), and 40 generator trips of which 12 of region
    # generators (a few singletons)
    strata = (
        [("fault",)] * 32
        + [("fault", "near bus 1")] * 5
        + [("fault", "near bus 2")] * 3
        + [("line_trip",)] * 40
        + [("load_change",)] * 40
        + [("gen_trip",)] * 28
    )
    strata += [("gen_trip", g) for g in ("A", "A", "A", "A", "B", "B", "B", "C", "C", "D", "E", "F")]
    sp = split_events(strata, 0.1, 0.2, seed=0)
    assert (len(sp["train"]), len(sp["calibration"]), len(sp["test"])) == (112, 16, 32)
    for k in ("fault", "line_trip", "load_change", "gen_trip"):  # each kind keeps its share of every part
        assert sum(strata[i][0] == k for i in sp["test"]) == 8
        assert sum(strata[i][0] == k for i in sp["calibration"]) == 4
    train = {strata[i] for i in sp["train"]}
    assert all(strata[i] in train for i in np.concatenate([sp["test"], sp["calibration"]]))
    assert {("gen_trip", g) for g in "DEF"} <= train and not sp["unmatched"]  # singletons are training events
    # three events of three kinds (the ci data): one per part, the split says which kinds lack training events
    tiny = split_events([("fault",), ("line_trip",), ("load_change",)], 0.15, 0.2)
    assert sorted(np.concatenate([tiny[p] for p in ("train", "calibration", "test")]).tolist()) == [0, 1, 2]
    assert len(tiny["unmatched"]) == 2
    with pytest.raises(DatasetError, match="too few"):
        split_events([("fault",)] * 2, 0.1, 0.2)


def test_ci_pmu_windows_record_their_split():
    cfg = tsdm.TSDMConfig.for_profile("ci", "ieee39")
    w = tsdm.load_windows(cfg)
    sp = w.split
    ok = np.flatnonzero(w.dataset.arrays["success"])
    assert sorted(np.concatenate([sp[p] for p in ("train", "calibration", "test")]).tolist()) == ok.tolist()
    assert sp["excluded"].tolist() == np.flatnonzero(~w.dataset.arrays["success"]).tolist()
    assert len(sp["window_events"]["train"]) == len(w.train) and len(w.test) >= 1
    rc = tsdm.range_check(w)
    assert rc["test event"].str.contains(r"\(#\d+\)").all()


def test_state_estimation_from_uncorrupted_windows_matches_the_power_flow(windows):
    _, w = windows
    se = tsdm.state_estimation(w, {"uncorrupted": w.test[0]}, window=0, steps=[5])
    row = se.loc["uncorrupted"]
    assert row["converged"] == 1.0
    assert row["RMSE |V| (p.u.)"] < 2e-3 and row["RMSE θ (deg)"] < 0.1


def test_state_estimation_returns_the_states_it_scores(windows):
    import matplotlib

    matplotlib.use("Agg")
    _, w = windows
    se, states, steps = tsdm.state_estimation(w, {"uncorrupted": w.test[0]}, window=0, steps=[2, 5], return_states=True)
    assert steps == [2, 5] and set(states) == {"power flow", "uncorrupted"}
    est, pf = states["uncorrupted"], states["power flow"]
    assert est["vm"].shape == pf["vm"].shape == (2, w.dataset.grid.n_bus)
    rmse = np.sqrt(np.mean((est["vm"] - pf["vm"]) ** 2))
    np.testing.assert_allclose(rmse, se.loc["uncorrupted", "RMSE |V| (p.u.)"], rtol=1e-9)  # the states scored
    assert np.allclose(pf["va"][:, w.dataset.grid.ref], 0.0)
    fig = tsdm.plot_states(states, row=1, bus_ids=w.dataset.grid.bus_ids)
    assert len(fig.axes[0].lines) == 2


def test_tables_across_systems_prefer_fresh_runs(tmp_path):
    import pandas as pd

    def save(folder, system, tsdm_err, pmu_case="ieee39"):
        cfg = tsdm.TSDMConfig.for_profile("ci", system)
        t = pd.DataFrame({"corrupted": [1.5], "TSDM": [tsdm_err]}, index=pd.Index(["FDIA step"]))
        tsdm.save_summary(
            folder / system, {"table1": t, "table3": t * 10}, cfg, "default", extra={"pmu_case": pmu_case}
        )

    runs, published = tmp_path / "runs", tmp_path / "published"
    save(published, "case30", 9.0)
    save(published, "case57", 8.0)
    save(runs, "case30", 7.0)
    t1 = tsdm.tables_across(runs, published)
    assert t1.loc[("case30", "FDIA step"), "TSDM"] == 7.0  # the fresh run shadows the published one
    assert t1.loc[("case57", "FDIA step"), "TSDM"] == 8.0
    t3 = tsdm.tables_across(runs, published, table="table3")
    assert list(t3.index) == [("ieee39", "FDIA step")] and t3["TSDM"].iloc[0] == 70.0
    assert t3["SCADA run"].iloc[0] == "case30"  # which run the PMU table came from
    save(runs, "case118", 6.0, pmu_case="npcc")  # Table III keys on the PMU system
    t3 = tsdm.tables_across(runs, published, table="table3")
    assert sorted(t3.index) == [("ieee39", "FDIA step"), ("npcc", "FDIA step")]
    assert t3.loc[("npcc", "FDIA step"), "TSDM"] == 60.0 and t3.loc[("npcc", "FDIA step"), "SCADA run"] == "case118"
    assert sorted(tsdm.tables_across(runs, published).index.get_level_values(0)) == ["case118", "case30", "case57"]
    assert tsdm.tables_across(runs, published, profile="paper").empty
    with pytest.raises(ValueError, match="table1"):
        tsdm.tables_across(runs, table="table2")
    (runs / "case14").mkdir()
    (runs / "case14" / "tsdm-summary-case14-default.json").write_text("{}")
    with pytest.raises(DatasetError, match="case14"):
        tsdm.tables_across(runs)


def test_channel_diagnostics_threshold_is_what_the_outlier_test_flags(windows, model):
    _, w = windows
    m = model[0]
    d = tsdm.channel_diagnostics(m, w, n=2)
    assert list(d.index) == w.channel_names() and (d["step change [%]"] > 0).all()
    assert (d["stage-1 residual [%]"] > 0).all()
    thr = d["threshold [%]"].to_numpy() * d["rms"].to_numpy() / 100  # physical units
    y = w.test[:1]
    z, observed = m.encode(y), torch.ones(1, *m.dm.layout.shape, dtype=torch.bool)
    sigma, k = m.threshold()
    below = m.outliers(z, m.encode(y + 0.98 * thr[None, :, None]), observed, k=k, sigma=sigma)
    above = m.outliers(z, m.encode(y + 1.02 * thr[None, :, None]), observed, k=k, sigma=sigma)
    assert not below.any() and above.all()


def test_wins_table_counts_rows_where_tsdm_beats_every_baseline():
    import pandas as pd

    idx = pd.MultiIndex.from_tuples(
        [("npcc", "FDIA step"), ("npcc", "data loss RM"), ("ieee39", "FDIA step")], names=["system", "scenario"]
    )
    t = pd.DataFrame(
        {
            "LSTM": [50.0, 40.0, 9.0],
            "ADMM": [30.0, 20.0, 8.0],
            "VAE": [12.0, 9.0, 7.0],
            "GAN": [16.0, 30.0, 6.0],
            "TSDM": [4.0, 10.0, 6.0],
            tsdm.CORRUPTED: [12.0, 5.0, 9.0],
        },
        index=idx,
    )
    w = tsdm.wins_table(t)
    assert list(w.index) == ["npcc", "ieee39"]  # systems in the order of the tables
    assert w.loc["npcc", "rows"] == 2 and w.loc["ieee39", "rows"] == 1
    assert w.loc["npcc", "TSDM best"] == 1  # RM: the VAE (9) beats TSDM (10)
    assert w.loc["ieee39", "TSDM best"] == 1  # a tie counts
    assert w.loc["npcc", "FDIA rows"] == 1 and w.loc["npcc", "FDIA <= corrupted / 3"] == 1  # 4 <= 12 / 3
    assert w.loc["ieee39", "FDIA <= corrupted / 3"] == 0  # 6 > 9 / 3
    assert w.loc["npcc", "VAE, GAN / TSDM (least)"] == pytest.approx(0.9)  # min(12, 16)/4 = 3, 9/10
    assert w.loc["ieee39", "VAE, GAN / TSDM (least)"] == pytest.approx(1.0)
    assert "FDIA rows" not in tsdm.wins_table(t.drop(columns=tsdm.CORRUPTED)).columns
    assert tsdm.wins_table(pd.DataFrame()).empty
    with pytest.raises(ValueError, match="GAN"):
        tsdm.wins_table(t.drop(columns="GAN"))


def test_x0_clamp_bounds_each_channel_by_its_own_training_range(windows, model):
    """One scalar bound would be set by the channel with the widest tail; each channel gets its own."""
    _, w = windows
    m = model[0]
    z = m._flat(m.encode(w.train))
    b = np.asarray(m.meta["x0_bound"])
    assert b.shape == (m.M,)
    np.testing.assert_allclose(b, 1.5 * np.abs(z).max(axis=(0, 2)), rtol=1e-5)
    assert b.min() < 0.9 * b.max()
    c = m.clamp()
    wild = torch.full((2, *m.dm.layout.shape), 1e3)
    np.testing.assert_allclose(m._flat(torch.clamp(wild, c.low, c.high))[0, :, 0], b, rtol=1e-6)
    np.testing.assert_allclose(m._flat(torch.clamp(-wild, c.low, c.high))[0, :, 0], -b, rtol=1e-6)
    old = tsdm.TSDM(m.dm, m.cfg, m.channels, m.residual_sigma, meta={"x0_bound": 4.0})  # an earlier checkpoint
    assert float(old.clamp().high) == 4.0


def test_state_estimation_angles_are_relative_to_the_reference_bus(tmp_path):
    """case118's reference bus sits at 30° in the case file, at 0 in the dataset's power flow."""
    from pfbook.power.measurements import scada_dataset

    ds = scada_dataset("case118", start_day=154, n_days=3, out_dir=tmp_path, workers=1, progress=False)
    cfg = replace(tsdm.TSDMConfig.for_profile("ci", "case118"), region=3, window=24, stride=12)
    w = tsdm.load_windows(cfg, dataset=ds)
    se = tsdm.state_estimation(w, {"uncorrupted": w.test[0]}, window=0, steps=[3])
    row = se.loc["uncorrupted"]
    assert row["converged"] == 1.0
    assert row["RMSE |V| (p.u.)"] < 2e-3 and row["RMSE θ (deg)"] < 0.2


def test_prior_settings_reach_the_network_and_the_cache_key(windows, model, tmp_path):
    from pfbook.methods.tsdm.method import _cache_key

    """The configured output form builds the U-Net, keys the cached checkpoint and survives loading; a
    checkpoint written before the setting existed (all of them plain ε-networks) is read as one."""
    cfg, w = windows
    m, path, _ = model
    assert m.dm.model.prediction == m.cfg.prediction == cfg.prediction
    assert tsdm.TSDM.load(path).cfg.prediction == m.cfg.prediction
    key = _cache_key(m.cfg, w)
    other = "epsilon" if m.cfg.prediction != "epsilon" else "epsilon_skip"
    assert _cache_key(replace(m.cfg, prediction=other), w) != key
    ck = torch.load(path, weights_only=True)
    del ck["extra"]["tsdm"]["config"]["prediction"]
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    loaded = tsdm.TSDM.load(old)
    assert loaded.cfg.prediction == "epsilon"


def test_eps_loss_by_step_is_the_training_objective_per_noise_level(windows, model):
    from pfbook.diffusion.samplers import predict

    _, w = windows
    m, _, _ = model
    d = tsdm.eps_loss_by_step(m, w, timesteps=(5, 50), n=8, seed=3)
    assert list(d.columns) == ["train", "test"] and list(d.index) == [5, 50]
    # what ε̂ = 0 would score is 1: the trained prior does better on its own windows
    assert (d["train"] < 0.9).all()
    # the same number by hand, for the ε-form the network has (epsilon_skip adds sqrt(1 - ᾱ) x_t)
    z = m.encode(w.train[np.linspace(0, len(w.train) - 1, 8).astype(int)])
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(z.shape, generator=g)
    with torch.no_grad():
        eps, _ = predict(m.dm.model, m.dm.schedule.q_sample(z, 5, noise), 5, None, m.dm.schedule)
    assert d.loc[5, "train"] == pytest.approx(float(((eps - noise) ** 2).mean()), rel=1e-6)
