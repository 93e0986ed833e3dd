"""`pfbook rerun`: chapters re-executed with papermill, failures recorded, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pfbook.book.rerun import find_book_root, grid_folder_name, resolve_chapters, toc_chapters

PARAMETERS = 'grid = "case5"\nprofile = "default"\ndevice = "cpu"\nseed = 0'


def pfbook(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("pfbook")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pfbook"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _notebook(path: Path, *code: str) -> None:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        new_markdown_cell(f"# {path.stem}"),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        *(new_code_cell(c) for c in code),
    ]
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A throwaway book: one chapter that writes its parameters to a file, one that raises."""
    root = tmp_path / "mybook"
    (root / "book").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Part\n    chapters:\n      - file: book/good\n      - file: book/bad\n"
        "      - file: book/notes\n"
    )
    (root / "book" / "notes.md").write_text("# Not a notebook\n")
    _notebook(
        root / "book" / "good.ipynb",
        "import json, os\n"
        "with open('params.json', 'w') as f:\n"
        "    json.dump(dict(grid=grid, profile=profile, device=device, seed=seed,\n"
        "                   env_profile=os.environ.get('PFBOOK_PROFILE')), f)",
    )
    _notebook(root / "book" / "bad.ipynb", "raise RuntimeError(f'no data for {grid}')")
    return root


def test_rerun_runs_good_records_bad_and_exits_1(book: Path, tmp_path: Path):
    out = tmp_path / "results"
    result = pfbook(
        "rerun", "--grid", "case39", "--profile", "ci", "--seed", "7", "--out", str(out), cwd=book / "book"
    )  # the book is found from a subfolder, upward
    assert result.returncode == 1, result.stdout + result.stderr

    # the good chapter ran in book/ with the new parameters
    params = json.loads((book / "book" / "params.json").read_text())
    assert params == {"grid": "case39", "profile": "ci", "device": "cpu", "seed": 7, "env_profile": "ci"}
    run_dir = out / "case39"
    executed = nbformat.read(run_dir / "good.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

    # the bad one is kept as .failed.ipynb, with the error in it and in the summary
    assert not (run_dir / "bad.ipynb").exists()
    failed = nbformat.read(run_dir / "bad.failed.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in failed.cells for o in c.get("outputs", []))
    summary = json.loads((run_dir / "summary.json").read_text())
    by_name = {c["chapter"]: c for c in summary["chapters"]}
    assert list(by_name) == ["good", "bad"]  # toc order; the markdown page is not a chapter
    assert by_name["good"]["status"] == "ok" and by_name["good"]["error"] is None
    assert by_name["bad"]["status"] == "failed"
    assert by_name["bad"]["ename"] == "RuntimeError"
    assert by_name["bad"]["evalue"] == "no data for case39"
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    assert summary["parameters"] == {"grid": "case39", "profile": "ci", "device": "cpu", "seed": 7}

    # the table names both and why one failed; no temporary notebooks are left behind
    assert "good" in result.stdout and "RuntimeError: no data for case39" in result.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == ["bad.failed.ipynb", "good.ipynb", "summary.json"]


def test_rerun_of_a_fixed_chapter_replaces_its_failed_notebook(book: Path, tmp_path: Path):
    out = book / "runs" / "case5"  # without --out, results go to the book's runs/ folder
    assert (
        pfbook("rerun", "--grid", "case5", "--chapters", "bad.ipynb", "--book", str(book), cwd=tmp_path).returncode == 1
    )
    assert (out / "bad.failed.ipynb").exists()
    _notebook(book / "book" / "bad.ipynb", "x = 1")  # the author fixes the chapter
    result = pfbook("rerun", "--grid", "case5", "--chapters", "bad", "--book", str(book), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "bad.ipynb").exists() and not (out / "bad.failed.ipynb").exists()
    assert json.loads((out / "summary.json").read_text())["n_failed"] == 0


def test_one_command_runs_a_batch_of_grids(book: Path, tmp_path: Path):
    out = tmp_path / "batch"
    result = pfbook(
        "rerun",
        "--grid",
        "case14",
        "case30",
        "--chapters",
        "good",
        "--book",
        str(book),
        "--out",
        str(out),
        "--profile",
        "ci",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for grid in ("case14", "case30"):
        summary = json.loads((out / grid / "summary.json").read_text())
        assert summary["parameters"]["grid"] == grid and summary["n_ok"] == 1
    assert "2 grids: 2 of 2 chapter runs succeeded" in result.stdout


def test_unknown_chapter_is_a_clear_error(book: Path, tmp_path: Path):
    result = pfbook(
        "rerun",
        "--grid",
        "case39",
        "--chapters",
        "good",
        "nope",
        "--book",
        str(book),
        "--out",
        str(tmp_path / "r"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("pfbook: error: unknown chapter(s) 'nope'")
    assert "good, bad" in result.stderr  # it lists the available chapters
    assert not (tmp_path / "r").exists()  # nothing ran


def test_chapter_names_and_book_discovery(book: Path, tmp_path: Path, monkeypatch):
    assert list(toc_chapters(book)) == ["good", "bad"]
    chosen = resolve_chapters(book, ["bad.ipynb", "book/good", "good"])
    assert chosen == {"bad": book / "book" / "bad.ipynb", "good": book / "book" / "good.ipynb"}
    monkeypatch.chdir(book / "book")
    assert find_book_root() == book
    assert find_book_root(book / "_toc.yml") == book
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        find_book_root(tmp_path)


def test_this_repository_book_lists_its_chapters():
    root = find_book_root(Path(__file__).resolve().parents[1])
    chapters = toc_chapters(root)
    assert "01_power_flow_and_opf_data" in chapters
    assert all(p.suffix == ".ipynb" and p.parent.name == "book" for p in chapters.values())


@pytest.mark.parametrize(
    "grid, folder", [("case39", "case39"), ("pp:mv_oberrhein", "pp_mv_oberrhein"), ("/some/where/my_case.m", "my_case")]
)
def test_grid_folder_name(grid, folder):
    assert grid_folder_name(grid) == folder


def test_set_passes_settings_to_chapters_that_take_overrides(book: Path, tmp_path: Path):
    """`--set KEY=VALUE` reaches the chapter as its `overrides` parameter, values read as literals, never run."""
    nb = nbformat.read(book / "book" / "good.ipynb", as_version=4)
    nb.cells[1].source += "\noverrides = {}"
    nb.cells.append(new_code_cell("with open('overrides.json', 'w') as f:\n    json.dump(overrides, f)"))
    nbformat.write(nb, book / "book" / "good.ipynb")
    out = tmp_path / "r"
    result = pfbook(
        "rerun",
        "--grid",
        "case5",
        "--chapters",
        "good",
        "--book",
        str(book),
        "--out",
        str(out),
        "--set",
        "n_test=100",
        "--set",
        "sampler=DDIM 20",
        "--set",
        "mults=(1, 2)",
        "--set",
        "train.steps=4000",
        "--set",
        "note=__import__('os').remove('x')",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = json.loads((book / "book" / "overrides.json").read_text())
    assert got == {
        "n_test": 100,
        "sampler": "DDIM 20",
        "mults": [1, 2],
        "train.steps": 4000,
        "note": "__import__('os').remove('x')",
    }
    assert json.loads((out / "case5" / "summary.json").read_text())["parameters"]["overrides"]["n_test"] == 100

    # a chapter without the parameter would silently ignore the settings: refused before anything runs
    result = pfbook(
        "rerun",
        "--grid",
        "case5",
        "--book",
        str(book),
        "--out",
        str(tmp_path / "r2"),
        "--set",
        "n_test=100",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "bad" in result.stderr and "overrides" in result.stderr
    assert not (tmp_path / "r2" / "case5" / "summary.json").exists()
    bad = pfbook("rerun", "--grid", "case5", "--chapters", "good", "--book", str(book), "--set", "n_test", cwd=tmp_path)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    bad = pfbook(
        "rerun", "--grid", "case5", "--chapters", "good", "--book", str(book), "--set", "train..steps=4", cwd=tmp_path
    )
    assert bad.returncode == 2 and "dotted name" in bad.stderr


def test_method_chapters_take_overrides():
    """Both pfbook and papermill read the method chapters' parameters, `overrides` among them."""
    import papermill

    root = Path(__file__).resolve().parents[1]
    from pfbook.book.rerun import notebook_parameters

    for name in ("04_constrained_diffusion", "05_diffopf", "06_physics_informed_ddpm", "07_tsdm_recovery"):
        path = root / "book" / f"{name}.ipynb"
        params = notebook_parameters(path)
        assert {"grid", "profile", "device", "seed", "overrides"} <= set(params), (name, params)
        assert set(params) == set(papermill.inspect_notebook(str(path))), name


def test_a_killed_runs_temporary_notebook_is_removed_by_the_next_run(book: Path, tmp_path: Path):
    out = tmp_path / "r" / "case5"
    out.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".good.running-{int(dead.stdout)}.ipynb"  # its process has exited
    live = out / f".good.running-{os.getpid()}.ipynb"  # a run still going (this process)
    stale.write_text("{}")
    live.write_text("{}")
    result = pfbook(
        "rerun", "--grid", "case5", "--chapters", "good", "--book", str(book), "--out", str(out.parent), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not stale.exists() and live.exists() and (out / "good.ipynb").exists()


def test_param_sets_a_named_parameter_of_the_chapter(book: Path, tmp_path: Path):
    """`--param NAME=VALUE` reaches the notebook as that parameter, read as a literal or kept as text."""
    nb = nbformat.read(book / "book" / "good.ipynb", as_version=4)
    nb.cells[1].source += '\npmu_case = "ieee39"\nn_windows = 3'
    nb.cells.append(
        new_code_cell(
            "with open('extra.json', 'w') as f:\n    json.dump(dict(pmu_case=pmu_case, n_windows=n_windows), f)"
        )
    )
    nbformat.write(nb, book / "book" / "good.ipynb")
    out = tmp_path / "r"
    result = pfbook(
        "rerun",
        "--grid",
        "case5",
        "--chapters",
        "good",
        "--book",
        str(book),
        "--out",
        str(out),
        "--param",
        "pmu_case=npcc",
        "--param",
        "n_windows=12",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((book / "book" / "extra.json").read_text()) == {"pmu_case": "npcc", "n_windows": 12}
    params = json.loads((out / "case5" / "summary.json").read_text())["parameters"]
    assert params["pmu_case"] == "npcc" and params["n_windows"] == 12 and params["grid"] == "case5"
    assert "pmu_case='npcc'" in result.stderr  # the progress line shows it


def test_param_unknown_to_a_chapter_is_refused_before_anything_runs(book: Path, tmp_path: Path):
    from pfbook.book.rerun import check_params, rerun

    out = tmp_path / "r"
    # "bad" has only grid, profile, device, seed: the error names the chapter and lists what it has
    result = pfbook(
        "rerun", "--grid", "case5", "--book", str(book), "--out", str(out), "--param", "pmu_case=npcc", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "chapter good has no parameter 'pmu_case'" in result.stderr
    assert "grid, profile, device, seed" in result.stderr
    assert not (out / "case5").exists()
    with pytest.raises(ValueError, match="chapter bad has no parameter 'n_windows'"):
        check_params({"bad": book / "book" / "bad.ipynb"}, {"n_windows": 1})
    # the names rerun sets itself have their own options
    for name in ("grid", "profile", "device", "seed", "overrides"):
        with pytest.raises(ValueError, match=f"--param {name}=.* not allowed"):
            rerun("case5", chapters=["good"], book=book, out=out, params={name: "x"})
    bad = pfbook("rerun", "--grid", "case5", "--book", str(book), "--param", "pmu_case", cwd=tmp_path)
    assert bad.returncode == 2 and "--param takes KEY=VALUE" in bad.stderr


def test_param_names_of_the_tsdm_chapter():
    """The TSDM chapter takes its PMU system as a parameter, so `--param pmu_case=npcc` passes the check."""
    from pfbook.book.rerun import check_params

    root = Path(__file__).resolve().parents[1]
    chapters = resolve_chapters(root, ["07_tsdm_recovery"])
    check_params(chapters, {"pmu_case": "npcc"})
    with pytest.raises(ValueError, match="chapter 07_tsdm_recovery has no parameter 'pmu'.*pmu_case"):
        check_params(chapters, {"pmu": "npcc"})
