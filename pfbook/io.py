"""Files that are either whole or absent: atomic writes, checksums and writability checks."""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


class DatasetError(ValueError):
    """A dataset or checkpoint file that is incomplete, corrupt, or not the one that was asked for."""


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty, uniquely named file beside ``path``, opened for writing.

    It is created with mode ``0o666`` and the kernel takes the process's umask (or the folder's default ACL) off,
    exactly as for a plain ``open(path, "w")``: a shared ``data/`` folder stays readable by others under the usual
    umask 022, private under 077. (``tempfile.mkstemp`` would make every file ``-rw-------``.) Letting the kernel
    apply the umask also avoids reading it with ``os.umask``, which changes it for every thread for a moment."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {str(path)!r}: 100 names were taken; "
                          f"delete the stale .{path.name}.*.tmp files there")


def _atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file.
    The file gets the permissions the umask allows (``0o666 & ~umask``), like any file the user creates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    return _atomic(path, lambda fh: np.savez(fh, **arrays))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return _atomic(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=_jsonable) + "\n"), mode="w")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in JSON")


def json_safe(o: Any) -> Any:
    """``o`` with NumPy scalars made Python numbers, NaN and ±inf made ``None`` (JSON has no NaN) and keys made
    strings, through nested dicts, lists and tuples: what a results table needs before :func:`atomic_write_json`."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    return o


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written there, or say clearly why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pfbook-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"cannot write to output folder {str(folder)!r} ({e.strerror or e}); choose a "
                              f"folder you can write to (--out / out_dir=...)") from None


class StoredDataset:
    """Arrays by name (``ds.y0``, ``ds.p``, ...) plus their JSON metadata ``meta`` and the file ``path``."""

    #: how error messages name this kind of dataset
    what = "dataset"

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path | None = None):
        self.arrays, self.meta, self.path = arrays, meta, path

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @classmethod
    def read(cls, path: str | os.PathLike, spec_key: str | None = None):
        """Open ``<stem>.npz`` + ``<stem>.json``, checking the checksum and (if given) the settings key."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise DatasetError(f"{cls.what} {str(path)!r} is incomplete: need {path.name} and {meta_path.name}")
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") != sha256_file(path):
            raise DatasetError(f"{path.name} does not match the checksum in {meta_path.name}; delete both and "
                               f"generate again")
        if spec_key is not None and meta.get("spec_key") != spec_key:
            raise DatasetError(f"{path.name} was made for other settings; delete it or pass overwrite=True")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(arrays, meta, path)


def write_summary(path: Path, cfg: Any, profile: str, identity: dict, **content: Any) -> Path:
    """A chapter's result file at ``path``: ``identity`` (e.g. the grid), the profile, the configuration
    (``cfg.to_dict()``), the date, then ``content`` (its tables and extras), made JSON-safe and written atomically."""
    import time

    obj = {**identity, "profile": profile, "config": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           **content}
    return atomic_write_json(path, json_safe(obj))


def read_summaries(folders, pattern: str, profiles, what: str = "chapter summary") -> list[dict]:
    """The chapter summaries ``<folder>/<grid>/<pattern with {profile}>`` of ``folders``, searched in order; the first
    one found for a (grid or system, profile) wins, so a fresh run in ``runs/`` shadows the book's published result. A file
    that is not one (``what`` names the kind in the error) is a :class:`DatasetError` naming the file."""
    out, seen = [], set()
    for folder in folders:
        for profile in profiles:
            for path in sorted(Path(folder).glob(f"*/{pattern.format(profile=profile)}")):
                try:
                    obj = json.loads(path.read_text())
                    key = (obj["grid"] if "grid" in obj else obj["system"], obj["profile"])
                except (ValueError, KeyError, TypeError) as err:
                    raise DatasetError(f"{path} is not a {what} ({err!r}); delete it or rerun the chapter "
                                       "for its grid to rewrite it") from None
                if key not in seen:
                    seen.add(key)
                    out.append(obj)
    return out


def summary_table(folders, pattern: str, profiles, level: str):
    """The ``table`` of every summary :func:`read_summaries` finds, stacked as one DataFrame indexed by
    (grid, profile, ``level``), ``level`` naming the rows of each table."""
    import pandas as pd

    frames = []
    for obj in read_summaries(folders, pattern, profiles):
        df = pd.DataFrame.from_dict(obj["table"], orient="index").astype(float)
        df.index.name = level
        frames.append(df.assign(grid=obj["grid"], profile=obj["profile"]).reset_index())
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames).set_index(["grid", "profile", level])
