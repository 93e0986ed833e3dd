"""PMU data from ANDES: shipped cases, 30 Hz channels that respond to events, caching, clear errors."""

import json

import numpy as np
import pytest

pytest.importorskip("andes")
from pfbook.power import pmu  # noqa: E402


def test_cases_ship_offline():
    for case in pmu.PMU_CASES:
        assert pmu.case_file(case).endswith(pmu.PMU_CASES[case]["file"].split("/")[-1])
    with pytest.raises(pmu.CaseError, match="unknown PMU case.*ieee39"):
        pmu.case_file("ieee9000")


def test_layout_matches_the_paper():
    ss = pmu._load("ieee39")
    lay = pmu.pmu_layout(ss, "ieee39")
    assert len(lay["buses"]) == 13 and len(lay["generators"]) == 10
    lay = pmu.pmu_layout(pmu._load("npcc"), "npcc")
    assert len(lay["buses"]) == 30 and len(lay["generators"]) == 30
    kinds = {c["kind"] for c in lay["channels"]}
    assert kinds == {"P_G", "Q_G", "I", "gamma", "U", "theta", "delta", "e1d", "e1q"}


def test_event_response_and_consistency():
    ev = pmu.Event("load_change", "PQ_10")
    r = pmu.simulate("ieee39", ev, t_end=3.0)
    d, t, ch = r["data"], r["t"], r["layout"]["channels"]
    assert r["success"] and d.shape == (len(ch), 91) and np.isfinite(d).all()
    assert np.allclose(np.diff(t), 1 / 30)
    before, after = t < 0.95, t > 1.5
    delta = [i for i, c in enumerate(ch) if c["kind"] == "delta"]
    assert np.ptp(d[delta][:, before], axis=1).max() < 1e-6  # steady before the event
    assert np.ptp(d[delta][:, after], axis=1).max() > 1e-4  # moving after it
    # I = |S| / U at a generator terminal
    g = ch[0]["gen"]
    row = {(c["kind"], c.get("gen", c.get("bus"))): i for i, c in enumerate(ch)}
    bus = ch[0]["bus"]
    P, Q, I = (d[row[(k, g)]] for k in ("P_G", "Q_G", "I"))
    U = d[row[("U", bus)]]
    assert np.allclose(I * U, np.hypot(P, Q))
    with pytest.raises(ValueError, match="event kind"):
        pmu.Event("earthquake", "1")


def test_dataset_parallel_and_cached(tmp_path):
    ds = pmu.pmu_dataset("ieee39", 2, t_end=2.0, out_dir=tmp_path, workers=2, progress=False)
    assert ds.data.shape[0] == 2 and ds.data.shape[2] == 61 and ds.success.all()
    meta = json.loads(ds.path.with_suffix(".json").read_text())
    assert [e["kind"] for e in meta["events"]] == ["fault", "line_trip"]
    again = pmu.pmu_dataset("ieee39", 2, t_end=2.0, out_dir=tmp_path, progress=False)
    assert np.array_equal(again.data, ds.data)
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())


def test_dataset_resumes_from_parts(tmp_path, monkeypatch):
    first = pmu.pmu_dataset("ieee39", 2, t_end=2.0, out_dir=tmp_path / "a", workers=1, progress=False)
    # an interrupted run left event 0 behind: only event 1 is simulated again
    out = tmp_path / "b"
    parts = out / f".{first.path.stem}.parts"
    parts.mkdir(parents=True)
    np.savez(parts / "event-000000.npz", data=first.data[0], success=np.array(True))
    ran = []
    real = pmu._run_one
    monkeypatch.setattr(pmu, "_run_one", lambda case, e, *a: (ran.append(e), real(case, e, *a))[1])
    ds = pmu.pmu_dataset("ieee39", 2, t_end=2.0, out_dir=out, workers=1, progress=False)
    assert len(ran) == 1 and ran[0].kind == "line_trip"
    assert np.array_equal(ds.data, first.data)


def test_a_sidecar_from_another_dataset_or_a_broken_one_is_refused(tmp_path):
    from pfbook.io import DatasetError

    ds = pmu.pmu_dataset("ieee39", 1, t_end=1.5, out_dir=tmp_path / "a", workers=1, progress=False)
    slow = pmu.pmu_dataset("ieee39", 1, t_end=1.5, fs=15.0, out_dir=tmp_path / "b", workers=1, progress=False)
    side = ds.path.with_suffix(".json")
    meta = json.loads(side.read_text())
    # the 15 Hz dataset's sidecar beside the 30 Hz arrays, its checksum made to pass
    side.write_text(json.dumps({**slow.meta, "sha256": meta["sha256"]}))
    with pytest.raises(
        DatasetError,
        match=r"does not match its metadata .*\(ieee39: 1 event, 96 channels, 1.5 s at "
        r"15 Hz\): array 'data' has shape \(1, 96, 46\), the metadata describes "
        r"\(1, 96, 23\)",
    ):
        pmu.PMUDataset.load(ds.path)
    side.write_text(json.dumps({**meta, "fs": 15.0, "t_end": 3.0}))  # same sample count, other settings
    with pytest.raises(DatasetError, match=r"it describes t_end 3.0 but its settings \('spec_key'\) say 1.5"):
        pmu.PMUDataset.load(ds.path)
    side.write_text(json.dumps({k: v for k, v in meta.items() if k != "channels"}))
    with pytest.raises(DatasetError, match=r"field 'channels' \(a list\) is missing"):
        pmu.PMUDataset.load(ds.path)
    side.write_text("[]")
    with pytest.raises(DatasetError, match="holds a list, not a JSON object with the fields of a PMU dataset"):
        pmu.PMUDataset.load(ds.path)
    again = pmu.pmu_dataset("ieee39", 1, t_end=1.5, out_dir=tmp_path / "a", workers=1, progress=False)
    assert np.array_equal(again.data, ds.data) and json.loads(side.read_text())["fs"] == 30.0
