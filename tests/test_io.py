"""pfbook.io: results tables become valid JSON (no NaN, no NumPy types) and files are written whole."""
import json

import numpy as np
import pandas as pd

from pfbook.io import atomic_write_json, json_safe


def test_json_safe_makes_a_table_strict_json(tmp_path):
    table = pd.DataFrame({"gap": [np.float32(0.5), np.nan], "n": np.array([3, 4], dtype=np.int64),
                          "ok": np.array([True, False])}, index=["a", "b"])
    obj = json_safe(table.reset_index().astype(object).to_dict(orient="split") | {"inf": (np.inf, -np.inf)})
    text = json.dumps(obj, allow_nan=False)                  # raises on NaN/inf or a NumPy type left behind
    back = json.loads(text)
    assert back["data"] == [["a", 0.5, 3, True], ["b", None, 4, False]]
    assert back["inf"] == [None, None]
    path = atomic_write_json(tmp_path / "t.json", obj)
    assert json.loads(path.read_text()) == back
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]   # no temporary file left behind
