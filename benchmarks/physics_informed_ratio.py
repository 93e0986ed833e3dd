"""How Table I's headline ratio of the physics-informed chapter moves with the training budget.

The ratio is the mean power imbalance R of a DDPM trained without physics over that of the proposed model
(learned schedule plus the physics loss on x̂_(t-1)), both trained alike and sampled with ancestral DDPM from the
same noise. For each (records, optimiser steps) pair of ``--runs`` this script generates (or reuses) the AC-OPF
records, learns the schedule, trains the two models and prints, side by side: mean R of each, the ratio, W1/σ of
the proposed model to the held-out records, and the seconds it took. One thread per model, as the chapter runs on
CPU; ``--jobs 2`` trains the two models of a run in two processes at once::

    python benchmarks/physics_informed_ratio.py                       # case14: 4000/3000, 16000/3000, 16000/6000
    python benchmarks/physics_informed_ratio.py --grid case30 --runs 4000:3000 4000:9000
    python benchmarks/physics_informed_ratio.py --runs 4000:3000 --set "widths=(512,256,128,64,128,256,512)"
    python benchmarks/physics_informed_ratio.py --runs 4000:3000 --set clip_to_bounds=False   # noise not clipped
    python benchmarks/physics_informed_ratio.py --runs 16000:3000 --jobs 2 --set seed=1      # another seed (data too)
    python benchmarks/physics_informed_ratio.py --profile paper --jobs 2   # the paper's sizes (long on CPU)

``--set NAME=VALUE`` changes any other setting of the chapter's configuration for every run (both models).
Without ``--runs`` the ``default`` profile runs the three pairs above and any other profile its own records and
steps.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from pfbook.book.cli import parse_settings
from pfbook.config import apply_overrides, check_profile
from pfbook.methods import physics_informed as pi

DEFAULT_RUNS = [(4000, 3000), (16000, 3000), (16000, 6000)]


def pair(text: str) -> tuple[int, int]:
    try:
        n, steps = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RECORDS:STEPS such as 4000:3000, got {text!r}") from None
    return n, steps


def train_and_draw(cfg: pi.PhysicsInformedConfig, model: str, samples: int) -> dict:
    """Train one of the two models ("no physics" or "proposed") on ``cfg`` and judge ``samples`` of its draws."""
    torch.set_num_threads(1)
    data = pi.load_data(cfg)
    gT = pi.gamma_T(data.grid, data.normaliser, n=cfg.gamma_samples, seed=cfg.seed, clip=data.clip)
    physics = model == "proposed"
    schedule = pi.learn_schedule(cfg, data, gT)[0] if physics else pi.original_schedule(cfg)
    dm, _ = pi.train_ddpm(cfg, data, schedule, physics=physics, gT=gT)
    x, _ = dm.draw(samples, seed=cfg.seed)
    return {"R": float(pi.imbalance(data.grid, torch.as_tensor(x)).mean()), "W1/σ": pi.distances(x, data.test)["W1/σ"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="case14")
    ap.add_argument("--profile", default="default", help="the chapter's profile the runs start from")
    ap.add_argument(
        "--runs", nargs="+", type=pair, default=None, help="RECORDS:STEPS pairs (the default profile is 16000:3000)"
    )
    ap.add_argument("--samples", type=int, default=1000, help="samples drawn from each model")
    ap.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=1,
        help="processes: 2 trains the two models of a run at once (one thread each)",
    )
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="other settings of the chapter's configuration, e.g. schedule_batch=1024",
    )
    args = ap.parse_args(argv)
    profile = check_profile(args.profile)
    settings = parse_settings(args.set)
    base = apply_overrides(pi.PhysicsInformedConfig.for_profile(profile, grid=args.grid), settings)  # fails early
    runs = args.runs or (DEFAULT_RUNS if profile == "default" else [(base.n_samples, base.train.steps)])
    torch.set_num_threads(1)

    changed = ", ".join(f"{k}={v}" for k, v in settings.items()) or "nothing else"
    print(f"{args.grid}: mean R (p.u.) of {args.samples} DDPM samples, {profile} profile otherwise ({changed} changed)")
    header = f"{'records':>8} {'steps':>6} {'no physics':>11} {'proposed':>9} {'ratio':>6} {'W1/σ prop.':>10} {'s':>5}"
    print(header)
    print("-" * len(header))
    models = ("no physics", "proposed")
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) if args.jobs == 2 else None
    try:
        for n, steps in runs:
            t0 = time.perf_counter()
            cfg = apply_overrides(base, {"n_samples": n, "train.steps": steps})
            if pool is None:
                out = {m: train_and_draw(cfg, m, args.samples) for m in models}
            else:
                pi.load_data(cfg)  # generate the records once, before both workers read them
                futures = {m: pool.submit(train_and_draw, cfg, m, args.samples) for m in models}
                out = {m: f.result() for m, f in futures.items()}
            R = {m: out[m]["R"] for m in models}
            print(
                f"{n:>8} {steps:>6} {R['no physics']:>11.4g} {R['proposed']:>9.4g} "
                f"{R['no physics'] / R['proposed']:>6.2f} {out['proposed']['W1/σ']:>10.3g} "
                f"{time.perf_counter() - t0:>5.0f}",
                flush=True,
            )
    finally:
        if pool is not None:
            pool.shutdown()


if __name__ == "__main__":
    main()
