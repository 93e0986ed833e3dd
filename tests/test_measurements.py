"""SCADA data: real profiles, power-flow states that satisfy the equations, channels, caching."""

import json

import numpy as np
import pytest
import torch

from pfbook.io import DatasetError
from pfbook.power import measurements as ms
from pfbook.power.grids import load_grid
from pfbook.power.physics import branch_flows, nodal_mismatch


def test_profiles_ship_offline_and_are_normalised():
    a, times = ms.simbench_profiles("load", ["H0-A", "hv_mixed1"])
    assert a.shape == (35136, 2) and np.allclose(a.max(axis=0), 1.0) and a.min() >= 0
    assert times[0] == "01.01.2016 00:00" and times[-1] == "31.12.2016 23:45"
    r, _ = ms.simbench_profiles("res", ["PV1", "WP3"])
    assert np.allclose(r.max(axis=0), 1.0) and r[0, 0] == 0.0  # no sun at midnight


def test_missing_profile_is_a_clear_error():
    with pytest.raises(ms.ProfileError, match="not in simbench.*available"):
        ms.simbench_profiles("load", ["no-such-profile"])
    with pytest.raises(ms.ProfileError, match="PV99"):
        ms.scenario(load_grid("case30"), ms.ScadaSpec("case30", n_days=1, pv_profiles=("PV99",)))


@pytest.mark.parametrize("name", ["case30", "case57", "case118"])
def test_power_flow_states_satisfy_equations(name):
    g = load_grid(name)
    spec = ms.ScadaSpec(name, start_day=180, n_days=1, seed=1)
    sc = ms.scenario(g, spec)
    inj = ms.injections(g, sc)
    r = ms._solve_days(g, spec, [0])
    assert r["success"].all()
    t = lambda a: torch.as_tensor(a)
    dp, dq = nodal_mismatch(g, t(r["p"]), t(r["q"]), t(r["vm"]), t(r["va"]))
    assert max(dp.abs().max().item(), dq.abs().max().item()) < 1e-8
    bt = inj["bus_type"]
    pvpq, pq = bt != 3, bt == 1
    assert np.abs(r["p"][:, pvpq] - inj["p"][:, pvpq]).max() < 1e-8  # what was specified holds
    assert np.abs(r["q"][:, pq] - inj["q"][:, pq]).max() < 1e-8
    assert np.allclose(r["vm"][:, g.gen_bus], inj["vm0"][g.gen_bus])
    ren = np.asarray(sc.renewable_gen)
    assert np.allclose(inj["pg"][:, ren], sc.renewable_factor * sc.renewable_capacity)
    assert np.allclose(r["va"][:, g.ref], 0)
    # the load follows the profiles: demand varies over the day
    assert inj["pd"].sum(axis=1).std() > 0.01 * inj["pd"].sum(axis=1).mean()


def test_matches_pypower_runpf():
    from pypower.api import ppoption, runpf

    g = load_grid("case57")
    spec = ms.ScadaSpec("case57", start_day=10, n_days=1)
    sc = ms.scenario(g, spec)
    inj = ms.injections(g, sc)
    r = ms._solve_days(g, spec, [0])
    base = g.base_mva
    for k in (0, 47, 95):
        ppc = g.to_ppc()
        ppc["bus"][:, 2], ppc["bus"][:, 3] = inj["pd"][k] * base, inj["qd"][k] * base
        ppc["bus"][:, 1] = inj["bus_type"]
        ppc["gen"][:, 1] = inj["pg"][k] * base  # renewables included
        ppc["gen"][:, 5] = inj["vm0"][g.gen_bus]
        res, ok = runpf(ppc, ppoption(VERBOSE=0, OUT_ALL=0, PF_TOL=1e-10))
        assert ok
        assert np.abs(res["bus"][:, 7] - r["vm"][k]).max() < 1e-7
        assert np.abs(np.radians(res["bus"][:, 8]) - r["va"][k]).max() < 1e-7


def test_area_bfs_and_layout():
    g = load_grid("case118")
    buses = ms.area_buses(g, center=int(g.bus_ids[10]), size=12)
    assert len(buses) == 12 and 10 in buses
    layout, br = ms.channel_layout(g, buses)
    kinds = [c["kind"] for c in layout]
    assert kinds.count("P_i") == kinds.count("U_i") == 12 and kinds.count("P_ij") == len(br) > 0
    with pytest.raises(ValueError, match="not a bus"):
        ms.area_buses(g, center=99999, size=5)


def test_bad_spec():
    with pytest.raises(ValueError, match="profile year"):
        ms.ScadaSpec("case30", start_day=365, n_days=5)
    with pytest.raises(ValueError, match="noise"):
        ms.ScadaSpec("case30", noise={"P": 0.01})


def test_dataset_channels_noise_cache(tmp_path):
    kw = dict(n_days=2, start_day=100, area_size=10, out_dir=tmp_path, progress=False, seed=3)
    ds = ms.scada_dataset("case30", workers=2, days_per_part=1, **kw)
    M = len(ds.channels)
    assert ds.y0.shape == (2, M, 96) and ds.y0_clean.shape == ds.y0.shape
    assert ds.vm.shape == (192, 30) and ds.va.shape == (192, 30)
    g = load_grid("case30")
    # clean channels are the physics of the stored states
    bf = branch_flows(g, torch.as_tensor(ds.vm), torch.as_tensor(ds.va))
    layout = ds.channels
    j = next(i for i, c in enumerate(layout) if c["kind"] == "P_ij")
    l = layout[j]["branch"]
    pf = bf.pf if hasattr(bf, "pf") else bf[0]
    assert np.allclose(ds.y0_clean[:, j, :].reshape(-1), pf[:, l].numpy(), atol=1e-5)
    u = [i for i, c in enumerate(layout) if c["kind"] == "U_i"]
    assert np.allclose(ds.y0_clean[0][u], ds.vm[:96, ds.area_bus].T, atol=1e-6)
    rel = np.abs(ds.y0[:, u] - ds.y0_clean[:, u]) / np.abs(ds.y0_clean[:, u])
    assert 0.0005 < rel.std() < 0.005  # 0.2 % voltage noise
    meta = json.loads(ds.path.with_suffix(".json").read_text())
    assert meta["grid"] == "case30" and len(meta["channels"]) == M and meta["renewables"]
    assert "simbench" in meta["profile_source"] and len(meta["load_profile"]) == g.n_load
    again = ms.scada_dataset("case30", **kw)  # cache hit, same bytes
    assert np.array_equal(again.y0, ds.y0)
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())
    ds.path.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="checksum"):
        ms.ScadaDataset.load(ds.path)


def test_dask_scheduler_gives_the_same_data(tmp_path):
    from distributed import LocalCluster

    kw = dict(n_days=2, start_day=30, progress=False, days_per_part=1)
    local = ms.scada_dataset("case30", out_dir=tmp_path / "local", workers=1, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        d = ms.scada_dataset("case30", out_dir=tmp_path / "dask", scheduler=cluster.scheduler_address, **kw)
    assert np.array_equal(d.y0, local.y0) and np.array_equal(d.va, local.va)


def test_dataset_resumes_from_parts(tmp_path, monkeypatch):
    kw = dict(n_days=2, start_day=60, progress=False, days_per_part=1, workers=1)
    spec = ms.ScadaSpec("case30", start_day=60, n_days=2)
    parts = tmp_path / f".{spec.stem()}.parts"
    parts.mkdir(parents=True)
    ms._solve_days(load_grid("case30"), spec, [0], str(parts / "part-0000-0000.npz"))  # left by an interrupted run
    ran = []
    real = ms._solve_days
    monkeypatch.setattr(ms, "_solve_days", lambda g, s, days, *a: (ran.append(days), real(g, s, days, *a))[1])
    ds = ms.scada_dataset("case30", out_dir=tmp_path, **kw)
    assert ran == [[1]] and ds.y0.shape[0] == 2
    fresh = ms.scada_dataset("case30", out_dir=tmp_path / "fresh", **kw)
    assert np.array_equal(fresh.y0, ds.y0)


def test_a_sidecar_from_another_dataset_or_a_broken_one_is_refused(tmp_path):
    kw = dict(n_days=1, start_day=100, progress=False, workers=1)
    ds = ms.scada_dataset("case14", area_size=5, out_dir=tmp_path / "area", **kw)
    whole = ms.scada_dataset("case14", out_dir=tmp_path / "whole", **kw)
    side = ds.path.with_suffix(".json")
    meta = json.loads(side.read_text())
    # the sidecar of the whole-grid dataset beside the 5-bus area's arrays, its checksum made to pass
    side.write_text(json.dumps({**whole.meta, "sha256": meta["sha256"]}))
    with pytest.raises(
        DatasetError,
        match=rf"does not match its metadata .*\(case14: 1 day, {len(whole.channels)} "
        rf"channels, 14 buses\): array 'y0' has shape \(1, {len(ds.channels)}, 96\)",
    ):
        ms.ScadaDataset.load(ds.path)
    side.write_text(json.dumps({**meta, "channels": meta["channels"][:-1]}))
    with pytest.raises(
        DatasetError,
        match=rf"'shape' gives {len(ds.channels)} channels, its 'channels' list "
        rf"{len(ds.channels) - 1}",
    ):
        ms.ScadaDataset.load(ds.path)
    side.write_text("[]")
    with pytest.raises(DatasetError, match="holds a list, not a JSON object with the fields of a SCADA dataset"):
        ms.ScadaDataset.load(ds.path)
    side.write_text(json.dumps({k: v for k, v in meta.items() if k != "shape"}))
    with pytest.raises(DatasetError, match=r"field 'shape' \(an object\) is missing"):
        ms.ScadaDataset.load(ds.path)
    side.write_text(json.dumps({**meta, "kind": "pmu"}))
    with pytest.raises(DatasetError, match="field 'kind' is 'pmu', a SCADA dataset has 'scada'"):
        ms.ScadaDataset.load(ds.path)
    again = ms.scada_dataset("case14", area_size=5, out_dir=tmp_path / "area", **kw)  # regenerated, not a KeyError
    assert np.array_equal(again.y0, ds.y0) and json.loads(side.read_text())["shape"] == meta["shape"]
