"""How Table I's headline ratio of the physics-informed chapter moves with the training budget.

The ratio is the mean power imbalance R of a DDPM trained without physics over that of the proposed model
(learned schedule plus the physics loss on x̂_(t-1)), both trained alike and sampled with ancestral DDPM from the
same noise. For each (records, optimiser steps) pair of ``--runs`` this script generates (or reuses) the AC-OPF
records, learns the schedule, trains the two models and prints, side by side: mean R of each, the ratio, W1/σ of
the proposed model to the held-out records, and the seconds it took. One thread, as the chapter runs on CPU::

    python benchmarks/physics_informed_ratio.py                       # case14: 4000/3000, 16000/3000, 16000/6000
    python benchmarks/physics_informed_ratio.py --grid case30 --runs 4000:3000 4000:9000
    python benchmarks/physics_informed_ratio.py --runs 4000:3000 --set "widths=(512,256,128,64,128,256,512)"

``--set NAME=VALUE`` changes any other setting of the chapter's configuration for every run (both models).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from pfbook import physics_informed as pi
from pfbook.cli import parse_settings
from pfbook.config import apply_overrides


def pair(text: str) -> tuple[int, int]:
    try:
        n, steps = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RECORDS:STEPS such as 4000:3000, got {text!r}") from None
    return n, steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="case14")
    ap.add_argument("--runs", nargs="+", type=pair, default=[(4000, 3000), (16000, 3000), (16000, 6000)],
                    help="RECORDS:STEPS pairs (the default profile is 4000:3000)")
    ap.add_argument("--samples", type=int, default=1000, help="samples drawn from each model")
    ap.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                    help="other settings of the chapter's configuration, e.g. schedule_batch=1024")
    args = ap.parse_args(argv)
    settings = parse_settings(args.set)
    apply_overrides(pi.PhysicsInformedConfig(), settings)          # a bad name or value fails before any work
    torch.set_num_threads(1)

    changed = ", ".join(f"{k}={v}" for k, v in settings.items()) or "nothing else"
    print(f"{args.grid}: mean R (p.u.) of {args.samples} DDPM samples, default profile otherwise ({changed} changed)")
    header = f"{'records':>8} {'steps':>6} {'no physics':>11} {'proposed':>9} {'ratio':>6} {'W1/σ prop.':>10} {'s':>5}"
    print(header)
    print("-" * len(header))
    for n, steps in args.runs:
        t0 = time.perf_counter()
        cfg = replace(apply_overrides(pi.PhysicsInformedConfig.for_profile("default", grid=args.grid), settings),
                      n_samples=n, steps=steps)
        data = pi.load_data(cfg)
        gT = pi.gamma_T(data.grid, data.normaliser, n=cfg.gamma_samples, seed=cfg.seed)
        learned, _, _ = pi.learn_schedule(cfg, data, gT)
        R, w1 = {}, None
        for name, schedule, physics in (("no physics", pi.original_schedule(cfg), False),
                                        ("proposed", learned, True)):
            dm, _ = pi.train_ddpm(cfg, data, schedule, physics=physics, gT=gT)
            x, _ = pi.draw(dm, args.samples, seed=cfg.seed)
            R[name] = float(pi.imbalance(data.grid, torch.as_tensor(x)).mean())
            if physics:
                w1 = pi.distances(x, data.test)["W1/σ"]
        print(f"{n:>8} {steps:>6} {R['no physics']:>11.4g} {R['proposed']:>9.4g} "
              f"{R['no physics'] / R['proposed']:>6.2f} {w1:>10.3g} {time.perf_counter() - t0:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
