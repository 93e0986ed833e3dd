"""Files that are either whole or absent: atomic writes, checksums and writability checks."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


class DatasetError(ValueError):
    """A dataset or checkpoint file that is incomplete, corrupt, or not the one that was asked for."""


def _atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
