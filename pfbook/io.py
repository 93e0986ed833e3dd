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
    raise FileExistsError(
        f"could not create a temporary file beside {str(path)!r}: 100 names were taken; "
        f"delete the stale .{path.name}.*.tmp files there"
    )


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
        raise PermissionError(
            f"cannot write to output folder {str(folder)!r} ({e.strerror or e}); choose a "
            f"folder you can write to (--out / out_dir=...)"
        ) from None


_JSON_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    bool: "true or false",
    type(None): "null",
}


def _json_name(value: Any) -> str:
    """How an error message names the JSON type of ``value`` ("a list", "an object", ...)."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _a(what: str) -> str:
    """``what`` with its article: "a SCADA dataset", "an AC-OPF dataset"."""
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _is(value: Any, kind: type) -> bool:
    """``value`` is of JSON type ``kind``; ``float`` means any number, and true/false is never a number."""
    if kind in (int, float):
        return not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    return isinstance(value, kind)


class StoredDataset:
    """Arrays by name (``ds.y0``, ``ds.p``, ...) plus their JSON metadata ``meta`` and the file ``path``.

    A subclass declares what its sidecar must hold and how it relates to the arrays, and :meth:`read` checks it
    all before the dataset is used, so that a sidecar from another dataset (with the checksum copied over), a
    sidecar lacking a field or a sidecar that is JSON but not an object is a :class:`DatasetError` that names
    the problem, not a ``KeyError`` or a wrong-shaped array much later:

    * :attr:`sidecar_values`: fields with the one value this kind has (``{"kind": "scada"}``);
    * :attr:`sidecar_types`: fields it needs, with their JSON type (``int``, ``float`` for any number, ``str``,
      ``list``, ``dict``, or a tuple of them);
    * :meth:`layout`: the shape of each array as the sidecar describes it;
    * :meth:`consistency`: anything else the sidecar says that the arrays, or the sidecar itself, contradict.
    """

    #: how error messages name this kind of dataset
    what = "dataset"
    #: sidecar fields and the one value each must have
    sidecar_values: dict[str, Any] = {}
    #: sidecar fields and their JSON type (``float`` accepts any number; a tuple accepts any of its types)
    sidecar_types: dict[str, Any] = {"sha256": str}

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path | None = None):
        self.arrays, self.meta, self.path = arrays, meta, path

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    # ------------------------------------------------------------------ what a subclass declares
    @classmethod
    def layout(cls, meta: dict[str, Any]) -> dict[str, tuple]:
        """The shape of each array as the sidecar ``meta`` describes it (``None``: any length on that axis).
        Every array named must be in the file with that shape. Called only once the fields have their types."""
        return {}

    @classmethod
    def consistency(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[str]:
        """Further contradictions between ``meta`` and ``arrays`` (or inside ``meta``), one phrase each."""
        return []

    @classmethod
    def describe(cls, meta: dict[str, Any]) -> str:
        """What the sidecar says the file holds, in a few words for error messages (e.g. the grid and sizes)."""
        return ""

    # ------------------------------------------------------------------ the checks
    @classmethod
    def read_sidecar(cls, path: Path, fix: str) -> dict[str, Any]:
        """The JSON object in the sidecar ``path``, or a :class:`DatasetError` saying why it is not one
        (``fix`` says what to do). Its fields are checked by :meth:`check_sidecar`."""
        path = Path(path)
        try:
            meta = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise DatasetError(f"metadata {path.name} is not valid JSON ({e}); {fix}") from None
        if not isinstance(meta, dict):
            raise DatasetError(
                f"metadata {path.name} holds {_json_name(meta)}, not a JSON object with the fields "
                f"of {_a(cls.what)}; {fix}"
            )
        return meta

    @classmethod
    def check_sidecar(cls, meta: dict[str, Any], name: str, fix: str) -> None:
        """Every field of :attr:`sidecar_values` and :attr:`sidecar_types` is in ``meta`` with its value or type."""
        problems = []
        for key, value in cls.sidecar_values.items():
            if key not in meta:
                problems.append(f"field {key!r} is missing")
            elif meta[key] != value:
                problems.append(f"field {key!r} is {meta[key]!r}, {_a(cls.what)} has {value!r}")
        for key, kinds in cls.sidecar_types.items():
            kinds = kinds if isinstance(kinds, tuple) else (kinds,)
            want = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            if key not in meta:
                problems.append(f"field {key!r} ({want}) is missing")
            elif not any(_is(meta[key], k) for k in kinds):
                problems.append(f"field {key!r} is {_json_name(meta[key])}, not {want}")
        if problems:
            raise DatasetError(f"metadata {name} is not that of {_a(cls.what)}: {'; '.join(problems)}; {fix}")

    @classmethod
    def check_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str, side: str, fix: str) -> None:
        """The arrays of file ``name`` are the ones its sidecar ``side`` describes (:meth:`layout`,
        :meth:`consistency`), or a :class:`DatasetError` naming each mismatch."""
        try:
            want = cls.layout(meta)
            problems = []
            for key, shape in want.items():
                shape = tuple(shape)
                if key not in arrays:
                    problems.append(f"array {key!r} is missing")
                    continue
                got = arrays[key].shape
                if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
                    problems.append(
                        f"array {key!r} has shape {got}, the metadata describes "
                        f"{tuple('any' if w is None else w for w in shape)}"
                    )
            if len(problems) > 3:  # enough to see the pattern (another dataset's metadata)
                problems = problems[:3] + [f"{len(problems) - 3} more arrays do not match either"]
            problems += cls.consistency(meta, arrays)
            about = cls.describe(meta)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"metadata {side} cannot describe {name} ({type(e).__name__}: {e}); {fix}") from None
        if problems:
            about = f" ({about})" if about else ""
            raise DatasetError(f"{name} does not match its metadata {side}{about}: {'; '.join(problems)}; {fix}")

    @classmethod
    def read(cls, path: str | os.PathLike, spec_key: str | None = None):
        """Open ``<stem>.npz`` + ``<stem>.json``, checking the sidecar's fields, the checksum, (if given) the
        settings key, and that the arrays are the ones the sidecar describes."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        fix = f"delete {path.name} and {meta_path.name} and generate it again"
        if not path.is_file() or not meta_path.is_file():
            raise DatasetError(f"{cls.what} {str(path)!r} is incomplete: need {path.name} and {meta_path.name}")
        meta = cls.read_sidecar(meta_path, fix)
        cls.check_sidecar(meta, meta_path.name, fix)
        if meta["sha256"] != sha256_file(path):
            raise DatasetError(
                f"{path.name} does not match the checksum in {meta_path.name}; delete both and generate again"
            )
        if spec_key is not None and meta.get("spec_key") != spec_key:
            raise DatasetError(f"{path.name} was made for other settings; delete it or pass overwrite=True")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise DatasetError(f"{cls.what} {path.name} cannot be read ({e}); {fix}") from None
        cls.check_arrays(meta, arrays, path.name, meta_path.name, fix)
        return cls(arrays, meta, path)
