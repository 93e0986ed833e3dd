"""pfbook.io: results tables become valid JSON (no NaN, no NumPy types) and files are written whole."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from pfbook.io import DatasetError, StoredDataset, atomic_write_json, atomic_write_npz, json_safe, sha256_file


def test_json_safe_makes_a_table_strict_json(tmp_path):
    table = pd.DataFrame(
        {"gap": [np.float32(0.5), np.nan], "n": np.array([3, 4], dtype=np.int64), "ok": np.array([True, False])},
        index=["a", "b"],
    )
    obj = json_safe(table.reset_index().astype(object).to_dict(orient="split") | {"inf": (np.inf, -np.inf)})
    text = json.dumps(obj, allow_nan=False)  # raises on NaN/inf or a NumPy type left behind
    back = json.loads(text)
    assert back["data"] == [["a", 0.5, 3, True], ["b", None, 4, False]]
    assert back["inf"] == [None, None]
    path = atomic_write_json(tmp_path / "t.json", obj)
    assert json.loads(path.read_text()) == back
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left behind


def test_read_summaries_first_folder_wins_and_names_a_corrupt_file(tmp_path):
    from pfbook.evaluation.summaries import read_summaries, summary_table
    from pfbook.io import DatasetError, atomic_write_json

    def put(folder, grid, profile, value):
        atomic_write_json(
            tmp_path / folder / grid / f"x-summary-{profile}.json",
            {"grid": grid, "profile": profile, "table": {"row": {"v": value}}},
        )

    put("runs", "case5", "default", 1.0)
    put("book", "case5", "default", 2.0)
    put("book", "case14", "default", 3.0)
    put("book", "case14", "ci", 4.0)
    got = read_summaries([tmp_path / "runs", tmp_path / "book"], "x-summary-{profile}.json", ["default"])
    assert [(o["grid"], o["table"]["row"]["v"]) for o in got] == [("case5", 1.0), ("case14", 3.0)]
    table = summary_table([tmp_path / "runs", tmp_path / "book"], "x-summary-{profile}.json", ["default", "ci"], "row")
    assert table.loc[("case14", "ci", "row"), "v"] == 4.0 and len(table) == 3

    (tmp_path / "book" / "case14" / "x-summary-default.json").write_text("{not json")
    with pytest.raises(DatasetError, match="case14.*not a chapter summary"):
        read_summaries([tmp_path / "book"], "x-summary-{profile}.json", ["default"])


def test_apply_overrides_checks_names_and_types():
    from pfbook.config import apply_overrides
    from pfbook.methods.diffopf import DiffOPFConfig

    cfg = DiffOPFConfig.for_profile("ci", grid="case5")
    new = apply_overrides(cfg, {"n_test": 100, "n_draw": 250.0, "step_sweep": ["DDIM 10"], "guidance_scale": 2})
    assert (new.n_test, new.n_draw, new.step_sweep, new.guidance_scale) == (100, 250, ("DDIM 10",), 2.0)
    assert isinstance(new.n_draw, int) and isinstance(new.guidance_scale, float)
    assert new.width == cfg.width and apply_overrides(cfg, {}) is cfg
    with pytest.raises(ValueError, match="no setting 'n_tests'.*n_test"):
        apply_overrides(cfg, {"n_tests": 100})
    with pytest.raises(ValueError, match="'n_test' expects a int"):
        apply_overrides(cfg, {"n_test": "many"})
    with pytest.raises(ValueError, match="'n_draw' expects a int"):
        apply_overrides(cfg, {"n_draw": 2.5})


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    from pfbook.diffusion import Layout, Normaliser, Schedule, build_denoiser
    from pfbook.diffusion.training import load_checkpoint, save_checkpoint
    from pfbook.io import atomic_write_bytes

    umask(mask)
    paths = [
        atomic_write_json(tmp_path / "a.json", {"x": 1}),
        atomic_write_npz(tmp_path / "a.npz", {"x": np.arange(3)}),
        atomic_write_bytes(tmp_path / "a.bin", b"abc"),
    ]
    (tmp_path / "old.json").write_text("{}")
    os.chmod(tmp_path / "old.json", 0o600 if mode != 0o600 else 0o644)
    paths.append(atomic_write_json(tmp_path / "old.json", {"x": 2}))  # replacing a file: the new one's mode
    model = build_denoiser({"kind": "mlp", "dim": 2, "width": 8, "depth": 1}, seed=0)
    ck = save_checkpoint(
        tmp_path / "ck.pt",
        model,
        Schedule.linear(10),
        Normaliser.identity(2),
        Layout(features=("p_1", "p_2"), grid="case3", shape=(2,)),
    )
    paths.append(ck)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p.name, oct(p.stat().st_mode))
    assert load_checkpoint(ck)["layout"]["grid"] == "case3"
    assert json.loads((tmp_path / "old.json").read_text()) == {"x": 2}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


class _Toy(StoredDataset):
    what = "toy dataset"
    sidecar_values = {"kind": "toy"}
    sidecar_types = {**StoredDataset.sidecar_types, "n": int, "names": list, "rate": float}

    @classmethod
    def layout(cls, meta):
        return {"x": (meta["n"], len(meta["names"])), "t": (None,)}

    @classmethod
    def consistency(cls, meta, arrays):
        return [] if meta["rate"] > 0 else [f"its 'rate' is {meta['rate']}, not positive"]

    @classmethod
    def describe(cls, meta):
        return f"{meta['n']} rows of {', '.join(meta['names'])}"


def _toy(folder, n=4, names=("a", "b"), **meta):
    path = atomic_write_npz(folder / "toy.npz", {"x": np.zeros((n, len(names))), "t": np.arange(7)})
    sidecar = {"kind": "toy", "n": n, "names": list(names), "rate": 2.5, "sha256": sha256_file(path), **meta}
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return path, sidecar


def test_stored_dataset_checks_its_sidecar_against_the_arrays(tmp_path):
    path, meta = _toy(tmp_path)
    ds = _Toy.read(path)
    assert ds.x.shape == (4, 2) and ds.meta == meta
    side = path.with_suffix(".json")

    def refused(sidecar, match):
        side.write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
        with pytest.raises(DatasetError, match=match):
            _Toy.read(path)

    refused("[]", "toy.json holds a list, not a JSON object")
    refused('"toy"', "holds a string")
    refused("{not json", "not valid JSON")
    refused({k: v for k, v in meta.items() if k != "n"}, r"field 'n' \(an integer\) is missing")
    refused({**meta, "n": "4"}, "field 'n' is a string, not an integer")
    refused({**meta, "n": True}, "field 'n' is true or false, not an integer")
    refused({**meta, "kind": "other"}, "field 'kind' is 'other', a toy dataset has 'toy'")
    # another file's sidecar, the checksum copied over: the shapes give it away, and the error says what it describes
    refused(
        {**meta, "n": 5, "names": ["a", "b", "c"]},
        r"toy.npz does not match its metadata toy.json \(5 rows of a, b, c\): array 'x' has shape \(4, 2\), "
        r"the metadata describes \(5, 3\)",
    )
    refused({**meta, "rate": -1}, "its 'rate' is -1, not positive")
    refused({**meta, "sha256": "0" * 64}, "checksum")
    side.write_text(json.dumps(meta))
    assert _Toy.read(path).meta == meta  # and the right one loads again
