"""AC-OPF datasets: right content, the same however split, cached, resumable, and strict about bad input."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pfbook.io import DatasetError
from pfbook.power.datasets import OPFDataset, OPFDatasetSpec, ac_opf_dataset
from pfbook.power.grids import load_grid
from pfbook.power.physics import nodal_mismatch

QUIET = dict(progress=False)


def _same(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def test_samples_are_solved_opf_states(tmp_path):
    ds = ac_opf_dataset("case14", 30, out_dir=tmp_path, workers=1, cost_range=(0.6, 1.4), **QUIET)
    g = load_grid("case14")
    assert len(ds) == 30 and ds.meta["n_failed"] == 0
    assert ds.p.shape == (30, 14) and ds.pd.shape == (30, g.n_load) and ds.pg.shape == (30, g.n_gen)
    # loads scaled per load with the power factor kept, factors inside the range
    assert np.all((ds.load_factors >= 0.8) & (ds.load_factors <= 1.0))
    np.testing.assert_allclose(ds.pd, g.load_p * ds.load_factors)
    np.testing.assert_allclose(ds.qd, g.load_q * ds.load_factors)
    assert ds.load_factors.std(0).min() > 0.02  # drawn per load, not one factor for all
    assert np.all((ds.cost_factors >= 0.6) & (ds.cost_factors <= 1.4))
    # every stored state satisfies the power-flow equations and the limits
    t = lambda a: torch.from_numpy(a)
    dp, dq = nodal_mismatch(g, t(ds.p), t(ds.q), t(ds.v), t(ds.theta))
    assert max(dp.abs().max(), dq.abs().max()) < 1e-6
    assert np.all(ds.v <= g.vmax + 1e-6) and np.all(ds.v >= g.vmin - 1e-6)
    assert np.all(ds.pg <= g.pmax + 1e-6) and np.all(ds.pg >= g.pmin - 1e-6)
    np.testing.assert_allclose(ds.cost, g.generation_cost(ds.pg, ds.cost_factors), rtol=1e-9)
    # the files open without pfbook
    meta = json.loads(ds.path.with_suffix(".json").read_text())
    assert meta["grid"] == "case14" and meta["bus_ids"] == list(range(1, 15)) and meta["units"]["theta"] == "rad"
    with np.load(ds.path) as z:
        assert z["v"].shape == (30, 14)
    frame = ds.to_frame()
    assert "p_1" in frame and "pg_1" in frame and len(frame) == 30


def test_same_seed_same_dataset_however_split(tmp_path):
    a = ac_opf_dataset("case5", 40, out_dir=tmp_path / "a", workers=1, chunk_size=7, **QUIET)
    b = ac_opf_dataset("case5", 40, out_dir=tmp_path / "b", workers=2, chunk_size=13, **QUIET)
    _same(a, b)
    c = ac_opf_dataset("case5", 40, seed=1, out_dir=tmp_path / "c", workers=1, **QUIET)
    assert not np.allclose(a.pd, c.pd)


def test_dask_cluster_gives_the_same_dataset(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        d = ac_opf_dataset(
            "case5", 30, out_dir=tmp_path / "dask", scheduler=cluster.scheduler_address, chunk_size=8, **QUIET
        )
    local = ac_opf_dataset("case5", 30, out_dir=tmp_path / "local", workers=1, **QUIET)
    _same(d, local)


def test_rerun_reuses_the_cached_file(tmp_path):
    a = ac_opf_dataset("case5", 20, out_dir=tmp_path, workers=1, **QUIET)
    stamp = a.path.stat().st_mtime_ns
    t0 = time.perf_counter()
    b = ac_opf_dataset("case5", 20, out_dir=tmp_path, workers=1, **QUIET)
    assert b.path == a.path and b.path.stat().st_mtime_ns == stamp
    assert time.perf_counter() - t0 < 1.0
    c = ac_opf_dataset("case5", 20, out_dir=tmp_path, workers=1, force=True, **QUIET)
    assert c.path.stat().st_mtime_ns != stamp
    _same(a, c)


def test_failures_are_counted_and_never_kept(tmp_path):
    # case5 has 1530 MW of capacity for 1000 MW of nominal load: loads x U(1.0, 1.6) fail in part
    ds = ac_opf_dataset("case5", 30, load_range=(1.0, 1.6), out_dir=tmp_path, workers=1, **QUIET)
    assert len(ds) == 30
    assert ds.meta["n_failed"] > 0 and len(ds.meta["failed_indices"]) == ds.meta["n_failed"]
    assert ds.meta["n_attempted"] == 30 + ds.meta["n_failed"]
    assert not set(ds.meta["failed_indices"]) & set(ds.sample_index.tolist())
    assert ds.pd.sum(1).max() <= load_grid("case5").pmax.sum()  # kept samples are feasible ones


def test_hopeless_range_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="narrow it"):
        ac_opf_dataset("case5", 10, load_range=(3.0, 4.0), out_dir=tmp_path, workers=1, **QUIET)
    assert not list(tmp_path.glob("*.npz"))


_KILLED_RUN = """
import sys
from pfbook.power.datasets import ac_opf_dataset
ac_opf_dataset("case14", 400, out_dir=sys.argv[1], workers=1, chunk_size=10, progress=False)
"""


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(out)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob(".*.parts/part-*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = list(out.glob(".*.parts/part-*.npz"))
    assert 3 <= len(parts) < 40, "the run was not interrupted midway"
    assert not list(out.glob("*.npz")), "an interrupted run must not leave a dataset file"
    resumed = ac_opf_dataset("case14", 400, out_dir=out, workers=1, chunk_size=10, **QUIET)
    fresh = ac_opf_dataset("case14", 400, out_dir=tmp_path / "fresh", workers=2, chunk_size=50, **QUIET)
    _same(resumed, fresh)
    assert len(np.unique(resumed.sample_index)) == 400
    assert not list(out.glob(".*.parts"))  # the partial work is cleaned up


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(load_range=(1.0, 0.8)), "low > high"),
        (dict(load_range=(-0.2, 1.0)), "non-negative"),
        (dict(cost_range=(1.4, 0.6)), "low > high"),
        (dict(load_range=(0.8,)), "two numbers"),
        (dict(n_samples=0), "positive integer"),
        (dict(n_samples=-5), "positive integer"),
        (dict(seed=-1), "seed"),
        (dict(workers=0), "workers"),
    ],
)
def test_bad_parameters_are_named(tmp_path, kwargs, match):
    args = dict(grid="case5", n_samples=10, out_dir=tmp_path, **QUIET)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ac_opf_dataset(**args)
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob(".*.parts"))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to output folder"):
        ac_opf_dataset("case5", 5, out_dir=blocker / "data", **QUIET)


def test_truncated_and_mismatched_files_are_refused(tmp_path):
    ds = ac_opf_dataset("case5", 10, out_dir=tmp_path, workers=1, **QUIET)
    spec = OPFDatasetSpec(**{**ds.meta["spec"], "load_range": tuple(ds.meta["spec"]["load_range"])})
    OPFDataset.load(ds.path, expect=spec)  # the right one loads
    other = OPFDatasetSpec(**{**ds.meta["spec"], "load_range": (0.5, 1.0), "grid": "case9"})
    with pytest.raises(DatasetError, match="case9"):
        OPFDataset.load(ds.path, expect=other)
    data = ds.path.read_bytes()
    ds.path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DatasetError, match="truncated"):
        OPFDataset.load(ds.path)
    # a rerun repairs it instead of trusting the damaged file
    again = ac_opf_dataset("case5", 10, out_dir=tmp_path, workers=1, **QUIET)
    _same(again, ds)
    ds.path.with_suffix(".json").unlink()
    with pytest.raises(DatasetError, match="sidecar"):
        OPFDataset.load(ds.path)
    with pytest.raises(FileNotFoundError):
        OPFDataset.load(tmp_path / "missing.npz")


def test_a_sidecar_from_another_dataset_is_refused(tmp_path):
    ds = ac_opf_dataset("case5", 6, out_dir=tmp_path / "a", workers=1, **QUIET)
    other = ac_opf_dataset("case9", 6, out_dir=tmp_path / "b", workers=1, **QUIET)
    side = ds.path.with_suffix(".json")
    # case9's sidecar beside case5's arrays, with case5's checksum so that the checksum alone passes
    side.write_text(json.dumps({**other.meta, "sha256": ds.meta["sha256"]}))
    with pytest.raises(
        DatasetError,
        match=r"does not match its metadata .*\(case9: 6 samples, 9 buses.*"
        r"array 'p' has shape \(6, 5\), the metadata describes \(6, 9\)",
    ):
        OPFDataset.load(ds.path)
    # the cache refuses it too and solves the dataset again
    again = ac_opf_dataset("case5", 6, out_dir=tmp_path / "a", workers=1, **QUIET)
    _same(again, ds)
    assert OPFDataset.load(ds.path).meta["grid"] == "case5" and json.loads(side.read_text())["grid"] == "case5"

    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "n_samples": 5}))  # rows of another sample count
    with pytest.raises(DatasetError, match=r"array 'p' has shape \(6, 5\), the metadata describes \(5, 5\)"):
        OPFDataset.load(ds.path)
    side.write_text(json.dumps({**meta, "grid": "case9"}))  # its own settings say case5
    with pytest.raises(DatasetError, match=r"its 'grid' is 'case9' but its settings \('spec'\) say 'case5'"):
        OPFDataset.load(ds.path)
    # a bus order that is not the grid's: the columns would be read against the wrong buses
    side.write_text(json.dumps({**meta, "bus_ids": meta["bus_ids"][::-1]}))
    with pytest.raises(
        DatasetError,
        match=r"not a dataset of grid case5 .*bus order that differs from case5's at "
        r"position 0 \(5 where case5 has 1\)",
    ):
        OPFDataset.load(ds.path, grid=load_grid("case5"))
    side.write_text(json.dumps({**meta, "gen_bus_ids": meta["gen_bus_ids"] + [99]}))
    with pytest.raises(DatasetError, match=r"'gen_bus_ids' names buses \[99\] that are not in 'bus_ids'"):
        OPFDataset.load(ds.path)
    side.write_text(json.dumps({**meta, "bus_ids": meta["bus_ids"][::-1]}))
    again = ac_opf_dataset("case5", 6, out_dir=tmp_path / "a", workers=1, **QUIET)
    assert again.meta["bus_ids"] == load_grid("case5").bus_ids.tolist()
    _same(again, ds)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda m: {k: v for k, v in m.items() if k != "n_samples"}, r"field 'n_samples' \(an integer\) is missing"),
        (lambda m: [], "holds a list, not a JSON object"),
        (lambda m: {**m, "spec": "case5"}, "field 'spec' is a string, not an object"),
        (lambda m: {**m, "bus_ids": None}, "field 'bus_ids' is null, not a list"),
    ],
    ids=["no n_samples", "a list", "spec a string", "bus_ids null"],
)
def test_a_broken_sidecar_is_a_dataset_error_and_the_cli_regenerates(tmp_path, capsys, damage, match):
    from pfbook.book.cli import main

    args = [
        "data",
        "opf",
        "--grid",
        "case5",
        "--samples",
        "4",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    (npz,) = tmp_path.glob("opf-case5-*.npz")
    side = npz.with_suffix(".json")
    good = json.loads(side.read_text())
    side.write_text(json.dumps(damage(good)))
    with pytest.raises(DatasetError, match=match):
        OPFDataset.load(npz)
    capsys.readouterr()
    assert main(args) == 0  # regenerated, not a KeyError/AttributeError
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "error" not in err
    assert "case5: 4 AC-OPF solutions" in out
    fixed = json.loads(side.read_text())
    assert fixed["n_samples"] == 4 and fixed["bus_ids"] == good["bus_ids"]
    assert len(OPFDataset.load(npz)) == 4


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_dataset_files_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        ds = ac_opf_dataset("case5", 3, out_dir=tmp_path / "shared", workers=1, **QUIET)
    finally:
        os.umask(old)
    for p in (ds.path, ds.path.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p.name, oct(p.stat().st_mode))
