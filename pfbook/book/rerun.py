"""Rerun the book's chapters for another grid, profile or device with papermill.

Every chapter notebook has a papermill ``parameters`` cell with at least ``grid``, ``profile``,
``device`` and ``seed``. :func:`rerun` executes the chosen chapters with new values for those
parameters and writes, for a grid ``case39``::

    runs/case39/<chapter>.ipynb          the executed chapter, when it ran to the end
    runs/case39/<chapter>.failed.ipynb   the partly executed chapter, when a cell raised
    runs/case39/summary.json             which chapters ran, how long they took, and why any failed

The folder always reflects the latest run of each chapter: a success removes an older
``.failed.ipynb`` and a failure removes an older successful notebook. A notebook is executed under a
temporary name in the same folder and renamed when it is complete, so an interrupted run never
leaves a half-written ``<chapter>.ipynb``; the temporary file of a run killed before it could clean up is
removed by the next run of that chapter.

A failing chapter does not stop the others; :func:`rerun` returns one :class:`ChapterRun` per
chapter and the command line exits with status 1 if any failed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pfbook.config import PROFILE_ENV, book_root, check_profile

TOC = "_toc.yml"
#: Chapters live in this folder of the book (the root of the toc is the book's introduction).
CHAPTER_DIR = "book"


@dataclass
class ChapterRun:
    """The outcome of executing one chapter."""

    chapter: str  #: chapter name (the notebook's file name without ``.ipynb``)
    source: str  #: the notebook that was executed
    status: str  #: ``"ok"`` or ``"failed"``
    seconds: float  #: wall-clock time of the execution
    output: str  #: the executed notebook (``.failed.ipynb`` when it failed)
    error: str | None = None  #: one-line summary ``ename: evalue`` when it failed
    ename: str | None = None  #: the exception's type name, as the kernel reported it
    evalue: str | None = None  #: the exception's message
    cell: int | None = None  #: execution count of the failing cell, when known

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------- locating the book
def find_book_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding the book's ``_toc.yml``.

    ``start`` may be that folder or the ``_toc.yml`` itself. Without it, the current directory and
    its parents are searched, then the source tree the installed package sits in.
    """
    if start is not None:
        p = Path(start).expanduser().resolve()
        if p.is_file() and p.name == TOC:
            return p.parent
        if (p / TOC).is_file():
            return p
        raise FileNotFoundError(f"no {TOC} in {p}; pass the folder that holds the book's {TOC}")
    found = book_root()
    if found is not None:
        return found
    here = Path.cwd().resolve()
    source_tree = Path(__file__).resolve().parent.parent
    if (source_tree / TOC).is_file():
        return source_tree
    raise FileNotFoundError(
        f"could not find the book: no {TOC} in {here} or its parents, nor next to "
        f"the installed pfbook package; run from the repository or pass --book"
    )


def _toc_files(node: Any) -> Iterator[str]:
    """Every ``file:`` entry of a (nested) ``_toc.yml`` structure, in order."""
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def toc_chapters(book: str | os.PathLike) -> dict[str, Path]:
    """The chapter notebooks listed in ``book/_toc.yml`` under ``book/``: name -> path, toc order."""
    import yaml

    root = Path(book)
    toc = yaml.safe_load((root / TOC).read_text(encoding="utf-8")) or {}
    chapters: dict[str, Path] = {}
    for entry in _toc_files(toc):
        entry = entry[: -len(".ipynb")] if entry.endswith(".ipynb") else entry
        path = root / f"{entry}.ipynb"
        if Path(entry).parts[:1] == (CHAPTER_DIR,) and path.is_file():
            chapters.setdefault(path.stem, path)
    return chapters


def resolve_chapters(book: str | os.PathLike, chapters: Iterable[str] | None = None) -> dict[str, Path]:
    """Map the requested chapter names to notebooks; all of the book's chapters when ``None``.

    A name may be given as ``01_power_flow_and_opf_data``, ``01_power_flow_and_opf_data.ipynb`` or
    ``book/01_power_flow_and_opf_data.ipynb``. An unknown name is a ``ValueError`` listing the
    available chapters.
    """
    available = toc_chapters(book)
    if chapters is None:
        if not available:
            raise ValueError(f"the book at {book} lists no chapter notebooks under {CHAPTER_DIR}/ in {TOC}")
        return available
    chosen: dict[str, Path] = {}
    unknown = []
    for name in chapters:
        stem = Path(name).name
        stem = stem[: -len(".ipynb")] if stem.endswith(".ipynb") else stem
        if stem in available:
            chosen[stem] = available[stem]
        else:
            unknown.append(name)
    if unknown:
        listed = ", ".join(available) or "none"
        raise ValueError(f"unknown chapter(s) {', '.join(map(repr, unknown))}; available chapters: {listed}")
    return chosen


# ---------------------------------------------------------------------- running
def grid_folder_name(grid: str) -> str:
    """A folder name for a grid: ``case39`` stays, ``pp:mv_oberrhein`` -> ``pp_mv_oberrhein``,
    a path to ``my_case.m`` -> ``my_case``."""
    name = str(grid)
    if name.endswith(".m"):
        name = Path(name).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return name or "grid"


def run_folder(grid: str, out: str | os.PathLike | None = None, book: str | os.PathLike | None = None) -> Path:
    """Where :func:`rerun` writes the results for ``grid``: ``out/<grid>``, by default ``<book>/runs/<grid>``."""
    base = Path(out).expanduser() if out is not None else find_book_root(book) / "runs"
    return base.resolve() / grid_folder_name(grid)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _describe_failure(exc: BaseException) -> tuple[str, str, int | None]:
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    if evalue is None:
        evalue = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return str(ename), str(evalue), getattr(exc, "exec_count", None)


def _one_line(ename: str, evalue: str, width: int = 200) -> str:
    first = evalue.strip().splitlines()[0] if evalue.strip() else ""
    text = f"{ename}: {first}" if first else ename
    return text if len(text) <= width else text[: width - 3] + "..."


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def notebook_parameters(source: Path) -> list[str]:
    """Names assigned at the top level of a notebook's papermill ``parameters`` cell."""
    nb = json.loads(Path(source).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            text = "".join(cell.get("source", []))
            return re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=", text, flags=re.M)
    return []


#: Parameters :func:`rerun` sets from its own arguments; ``params`` may not name them.
OWN_PARAMETERS = ("grid", "profile", "device", "seed", "overrides")


def check_params(chapters: dict[str, Path], params: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless every chapter's ``parameters`` cell assigns every name in ``params``.

    ``chapters`` maps chapter names to notebooks (as :func:`resolve_chapters` returns them). The names of
    :data:`OWN_PARAMETERS` are refused: :func:`rerun` sets them from its own arguments.
    """
    own = [k for k in params if k in OWN_PARAMETERS]
    if own:
        raise ValueError(
            f"--param {own[0]}=... is not allowed: {', '.join(OWN_PARAMETERS)} have their own options "
            f"(--grid, --profile, --device, --seed, --set)"
        )
    for name, source in chapters.items():
        known = notebook_parameters(source)
        missing = [k for k in params if k not in known]
        if missing:
            raise ValueError(
                f"chapter {name} has no parameter {', '.join(map(repr, missing))}; its parameters are "
                f"{', '.join(known) or 'none'} (choose chapters that have it with --chapters)"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(out_dir: Path, chapter: str) -> list[Path]:
    """Delete ``.<chapter>.running-<pid>.ipynb`` files whose process is gone (a run killed too hard to clean up)."""
    gone = []
    for path in Path(out_dir).glob(f".{chapter}.running-*.ipynb"):
        pid = path.name[len(chapter) + len(".running-") + 1 : -len(".ipynb")]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def run_chapter(source: Path, out_dir: Path, parameters: dict[str, Any], timeout: float | None = None) -> ChapterRun:
    """Execute one chapter notebook into ``out_dir`` (see the module docstring for the file names)."""
    import papermill

    chapter = source.stem
    remove_stale(out_dir, chapter)
    final = out_dir / f"{chapter}.ipynb"
    failed = out_dir / f"{chapter}.failed.ipynb"
    tmp = out_dir / f".{chapter}.running-{os.getpid()}.ipynb"
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(tmp),
            parameters=parameters,
            cwd=str(source.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
        )
        seconds = round(time.perf_counter() - t0, 3)
        os.replace(tmp, final)
        failed.unlink(missing_ok=True)
        return ChapterRun(chapter, str(source), "ok", seconds, str(final))
    except Exception as exc:  # a failing chapter is recorded, and the next one runs
        seconds = round(time.perf_counter() - t0, 3)
        ename, evalue, cell = _describe_failure(exc)
        if tmp.exists():
            os.replace(tmp, failed)
            output = str(failed)
        else:  # papermill failed before writing anything (e.g. no such kernel)
            output = ""
        final.unlink(missing_ok=True)
        return ChapterRun(
            chapter,
            str(source),
            "failed",
            seconds,
            output,
            error=_one_line(ename, evalue),
            ename=ename,
            evalue=evalue,
            cell=cell,
        )
    finally:
        tmp.unlink(missing_ok=True)  # only still there when interrupted


def rerun(
    grid: str,
    chapters: Sequence[str] | None = None,
    profile: str = "default",
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    seed: int = 0,
    timeout: float | None = None,
    book: str | os.PathLike | None = None,
    log: Any = None,
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> list[ChapterRun]:
    """Execute chapters with ``grid``, ``profile``, ``device`` and ``seed`` as their parameters.

    Parameters
    ----------
    grid : grid name passed to every chapter (``case39``, ``pp:mv_oberrhein``, a ``.m`` path).
    chapters : chapter names (with or without ``.ipynb``); every chapter in ``_toc.yml`` if None.
    profile : ``ci``, ``default`` or ``paper``; also exported as ``$PFBOOK_PROFILE`` to the kernel.
    out : results go to ``out/<grid>/``; ``out`` defaults to the book's ``runs/`` folder.
    device : torch device string for the chapters (``cpu``, ``cuda``, ``cuda:1``).
    seed : random seed for the chapters.
    timeout : seconds a single cell may run before the chapter counts as failed (None: no limit).
    book : folder holding ``_toc.yml``; found from the current directory upward if None.
    log : a text stream for one progress line per chapter (e.g. ``sys.stderr``), or None.
    overrides : single settings of the profile changed, e.g. ``{"n_test": 100}``, passed as the chapters'
        ``overrides`` parameter (:func:`pfbook.config.apply_overrides`); every chosen chapter must take it.
    params : other names of the chapters' ``parameters`` cell set directly, e.g. ``{"pmu_case": "npcc"}``;
        every chosen chapter must have each name (see :func:`check_params`). ``grid``, ``profile``, ``device``,
        ``seed`` and ``overrides`` are refused here: they have their own arguments.

    Writes ``out/<grid>/summary.json`` and returns one :class:`ChapterRun` per chapter, in order.
    """
    check_profile(profile)
    root = find_book_root(book)
    todo = resolve_chapters(root, chapters)
    if overrides:
        lacking = [name for name, source in todo.items() if "overrides" not in notebook_parameters(source)]
        if lacking:
            raise ValueError(
                f"chapter(s) {', '.join(lacking)} take no 'overrides' parameter; choose chapters "
                f"that do (the method chapters) with --chapters, or drop --set"
            )
    if params:
        check_params(todo, params)
    out_dir = run_folder(grid, out, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    if str(grid).endswith(".m") and Path(grid).is_file():
        grid = str(Path(grid).resolve())  # the chapters run in book/, not in the caller's folder
    parameters = {"grid": str(grid), "profile": profile, "device": device, "seed": int(seed)}
    if overrides:
        parameters["overrides"] = dict(overrides)
    parameters.update(params or {})
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    runs: list[ChapterRun] = []
    with _environ(**{PROFILE_ENV: profile}):
        for i, (name, source) in enumerate(todo.items(), 1):
            if log is not None:
                extra = "".join(f", {k}={v!r}" for k, v in (params or {}).items())
                print(
                    f"[{i}/{len(todo)}] {name} (grid={grid}, profile={profile}, device={device}, "
                    f"seed={seed}{extra}) ...",
                    file=log,
                    flush=True,
                )
            run = run_chapter(source, out_dir, parameters, timeout=timeout)
            runs.append(run)
            if log is not None:
                print(
                    f"[{i}/{len(todo)}] {name}: {run.status} in {run.seconds:.1f} s"
                    + (f" ({run.error})" if run.error else ""),
                    file=log,
                    flush=True,
                )
    _write_json_atomic(
        out_dir / "summary.json",
        {
            "grid": str(grid),
            "parameters": parameters,
            "timeout": timeout,
            "book": str(root),
            "started": started,
            "pfbook_version": _version(),
            "n_ok": sum(r.ok for r in runs),
            "n_failed": sum(not r.ok for r in runs),
            "chapters": [asdict(r) for r in runs],
        },
    )
    return runs


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pfbook")
    except Exception:  # not installed (e.g. run from a source tree)
        return "unknown"


def format_table(runs: Sequence[ChapterRun]) -> str:
    """A plain-text table of chapter, status, seconds and the output or the error."""
    rows = [("chapter", "status", "seconds", "result")]
    for r in runs:
        if r.ok:
            result = r.output
        else:
            result = r.error or "failed"
            result += f" in cell [{r.cell}]" if r.cell is not None else ""
            result += f"; see {r.output}" if r.output else ""
        rows.append((r.chapter, r.status, f"{r.seconds:.1f}", result))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(rows[0][3]))
    return "\n".join(lines)
