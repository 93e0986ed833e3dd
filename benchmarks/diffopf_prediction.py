"""DiffOPF on one grid with the two denoiser outputs side by side: a plain ε-network and ``epsilon_skip``.

For the chapter's ``default`` settings of ``--grid`` (a grid above 30 buses gets the large-grid sizes: 4000
training steps, 10 test loads, 50 draws), this trains DeepOPF once and the DiffOPF prior once per output type,
draws the warm starts with the chapter's sampler, solves the load-flow problem (20) from each, and prints the
mean over test loads of the best optimality gap, next to DeepOPF's on the same loads. Usage::

    python benchmarks/diffopf_prediction.py --grid case118            # about 10 min on one CPU core
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from pfbook.methods import diffopf as do


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="case118")
    ap.add_argument("--profile", default="default", choices=["ci", "default", "paper"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = do.DiffOPFConfig.for_profile(args.profile, grid=args.grid, device=args.device)
    data = do.load_records(cfg, progress=True)
    loads = data.test_loads()[: cfg.n_test]
    deep, _ = do.train_deepopf(cfg, data)
    y = deep.predict(loads)
    ev = do.evaluate_warm_starts(
        data.grid, data.test, y[:, None, : data.n_gen], y[:, None, data.n_gen :], device=cfg.device
    )
    print(
        f"{args.grid}, {args.profile} sizes: {cfg.train.steps} training steps, {len(loads)} test loads, "
        f"{cfg.n_draw} draws each, {cfg.sampler}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'model':<22}{'mean best gap %':>16}{'median gap %':>14}{'converged':>11}{'train s':>9}")
    print(
        f"{'DeepOPF':<22}{np.nanmean(ev['gap_pct']):>16.3f}{np.nanmedian(ev['gap_pct']):>14.3f}"
        f"{ev['converged'].mean():>11.3f}{'':>9}"
    )
    for prediction in ("epsilon", "epsilon_skip"):
        c = replace(cfg, prediction=prediction)
        t0 = time.perf_counter()
        prior = do.train_prior(c, data)
        seconds = time.perf_counter() - t0
        pg, qg, _ = do.sample_dispatch(c, prior, data, loads)
        ev = do.evaluate_warm_starts(data.grid, data.test, pg, qg, device=c.device)
        best = np.nanmin(ev["gap_pct"], axis=1)
        print(
            f"{'DiffOPF, ' + prediction:<22}{np.nanmean(best):>16.3f}{np.nanmedian(ev['gap_pct']):>14.3f}"
            f"{ev['converged'].mean():>11.3f}{seconds:>9.0f}"
        )


if __name__ == "__main__":
    main()
