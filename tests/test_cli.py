"""The `pfbook` command line, run as a user runs it (through the installed entry point)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfbook.book.prepare import dataset, prepare, recipes


def pfbook(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `pfbook` console script next to this interpreter (python -m pfbook if not installed)."""
    script = Path(sys.executable).with_name("pfbook")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pfbook"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_version_from_the_script_and_from_python_m():
    for result in (
        pfbook("--version"),
        subprocess.run([sys.executable, "-m", "pfbook", "--version"], capture_output=True, text=True),
    ):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("pfbook ")
        assert result.stdout.split()[1][0].isdigit()


def test_grids_lists_case118_with_its_size():
    result = pfbook("grids")
    assert result.returncode == 0, result.stderr
    rows = {
        line.split()[0]: line.split()[1:]
        for line in result.stdout.splitlines()
        if line.startswith("  case") and len(line.split()) >= 6
    }
    assert rows["case118"] == ["118", "186", "54", "99", "MATPOWER", "case118.m"]  # sizes, then the source
    assert rows["case5"][0] == "5"
    assert "case2383wp" in result.stdout  # the MATPOWER list follows the table
    assert "PGLib-OPF v23.07 cases" in result.stdout and "pglib_opf_case118_ieee" in result.stdout
    pglib = pfbook("grids", "pglib_opf_case118_ieee")
    assert "PGLib-OPF v23.07 pglib_opf_case118_ieee.m" in pglib.stdout


def test_unknown_grid_is_one_line_error_with_exit_2():
    result = pfbook("grids", "case_nonexistent")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pfbook: error: ")
    assert "case_nonexistent" in lines[0]
    assert "case118" in lines[0] and "case14" in lines[0]  # it lists known grids


def test_data_opf_rejects_unknown_grid_before_solving(tmp_path):
    result = pfbook("data", "opf", "--grid", "case_nonexistent", "--samples", "3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("pfbook: error: unknown grid 'case_nonexistent'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samples", "0"], "--samples"),
        (["--load-range", "1.0", "0.8"], "--load-range"),
        (["--cost-range", "-1", "1"], "--cost-range"),
    ],
)
def test_data_opf_rejects_bad_numbers(tmp_path, args, message):
    result = pfbook("data", "opf", "--grid", "case5", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("pfbook: error: ") and message in result.stderr


def test_every_option_has_help():
    from pfbook.book.cli import build_parser

    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    for parser in walk(build_parser()):
        for action in parser._actions:
            if action.option_strings or action.nargs in ("*", "+"):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


def test_data_prepare_creates_the_data_folder(tmp_path):
    out = tmp_path / "fresh" / "data"
    result = pfbook("data", "prepare", "--profile", "ci", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_dir()
    assert "'ci'" in result.stdout


def test_data_prepare_rejects_unknown_profile():
    result = pfbook("data", "prepare", "--profile", "huge")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_prepare_runs_registered_recipes_for_their_profiles(tmp_path, monkeypatch):
    import pfbook.book.prepare as prep

    monkeypatch.setattr(prep, "_RECIPES", {})
    calls = []

    @dataset("toy", "a toy dataset", profiles=("ci",))
    def _toy(profile, data_dir, progress):
        calls.append(profile)
        path = data_dir / "toy.txt"
        path.write_text(profile)
        return path

    assert [r.name for r in recipes("ci")] == ["toy"] and recipes("paper") == []
    done = prepare("ci", tmp_path / "d", progress=False)
    assert [(p.name, p.paths) for p in done] == [("toy", [tmp_path / "d" / "toy.txt"])]
    assert prepare("paper", tmp_path / "d") == [] and calls == ["ci"]
    # named explicitly, a recipe runs for any profile (at that profile's sizes)
    assert [p.name for p in prepare("paper", tmp_path / "d", only=["toy"])] == ["toy"] and calls == ["ci", "paper"]
    with pytest.raises(ValueError, match="already registered"):
        dataset("toy", "again")(_toy)
    with pytest.raises(ValueError, match="unknown profile"):
        prepare("huge", tmp_path)


def test_set_on_the_command_line_gives_dotted_overrides():
    """`--set train.steps=4000` names a nested training setting; the chapter's config takes it, type-checked."""
    from pfbook.book.cli import parse_settings
    from pfbook.config import apply_overrides
    from pfbook.methods.diffopf import DiffOPFConfig

    settings = parse_settings(["train.steps=4000", "n_draw=25", "step_sweep=('DDIM 10',)"])
    assert settings == {"train.steps": 4000, "n_draw": 25, "step_sweep": ["DDIM 10"]}
    cfg = apply_overrides(DiffOPFConfig.for_profile("ci"), settings)
    assert (cfg.train.steps, cfg.n_draw, cfg.step_sweep) == (4000, 25, ("DDIM 10",))
    for bad in ("train..steps=1", ".steps=1", "train.=1", "steps"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_settings([bad])
    with pytest.raises(ValueError, match="KEY=VALUE with KEY a name"):
        parse_settings(["pmu.case=npcc"], option="--param")
