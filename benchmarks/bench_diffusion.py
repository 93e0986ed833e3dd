"""How close batched sampling and training with the MLP of Hoseinpour & Dvorkin come to the machine's matmul speed.

The MLP of Hoseinpour & Dvorkin (input projection to 500, six hidden layers of 500, output projection) spends almost all
its arithmetic in matrix products. For each data dimension and batch size this script measures, in one run:

* the FLOP rate of batched sampling (``DDIMSampler`` with η = 1, so noise is drawn every step as in DDPM),
  counting the model's matrix-product FLOPs only (2·B·in·out per layer);
* the FLOP rate of training steps (``Trainer``: forward, backward, Adam), counting the forward products and
  the two backward products per layer (weight gradient, and input gradient except for the first layer);
* the "ceiling": torch's own ``torch.mm`` FLOP rate on exactly the same sequence of shapes, on the same device
  and thread count,

and prints the ratio. The ceiling calls ``torch.mm`` into preallocated outputs while the model calls
``addmm`` (bias fused), so a ratio slightly above 1 is measurement noise, not a faster-than-matmul model. Timings
are the best of several runs (the least disturbed by other work on the machine). Usage::

    python benchmarks/bench_diffusion.py                    # CPU, all threads and 1 thread
    python benchmarks/bench_diffusion.py --device cuda      # GPU (add --compile / --cuda-graphs to try them)
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pfbook.diffusion import DDIMSampler, MLPDenoiser, Schedule, TrainConfig, Trainer

WIDTH, DEPTH = 500, 6


def layer_shapes(dim: int) -> list[tuple[int, int]]:
    return [(dim, WIDTH)] + [(WIDTH, WIDTH)] * DEPTH + [(WIDTH, dim)]


def forward_flops(dim: int, batch: int) -> float:
    return sum(2.0 * batch * i * o for i, o in layer_shapes(dim))


def train_flops(dim: int, batch: int) -> float:
    """Forward + weight gradients + input gradients (none for the first layer: the data needs no gradient)."""
    f = forward_flops(dim, batch)
    return 3 * f - 2.0 * batch * dim * WIDTH


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_time(fn, device: torch.device, repeats: int, min_seconds: float = 0.3) -> float:
    """Best wall time of ``fn`` over repeats (at least ``min_seconds`` of runs): the least-disturbed run."""
    fn()
    _sync(device)
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
        if n >= 50 * repeats:
            break
    return best


def matmul_ceiling(products: list[tuple[int, int, int]], device: torch.device, repeats: int) -> float:
    """FLOP/s of torch.mm over the list of (m, k, n) products, run back to back into preallocated outputs."""
    ops = [
        (torch.randn(m, k, device=device), torch.randn(k, n, device=device), torch.empty(m, n, device=device))
        for m, k, n in products
    ]
    flops = sum(2.0 * m * k * n for m, k, n in products)

    def run():
        for a, b, out in ops:
            torch.mm(a, b, out=out)

    return flops / _best_time(run, device, repeats)


def sampling_products(dim: int, batch: int, steps: int) -> list[tuple[int, int, int]]:
    return [(batch, i, o) for i, o in layer_shapes(dim)] * steps


def training_products(dim: int, batch: int) -> list[tuple[int, int, int]]:
    fwd = [(batch, i, o) for i, o in layer_shapes(dim)]
    grad_w = [(i, batch, o) for i, o in layer_shapes(dim)]  # xᵀ · δ
    grad_x = [(batch, o, i) for i, o in layer_shapes(dim)[1:]]  # δ · Wᵀ
    return fwd + grad_w + grad_x


def bench_sampling(
    dim: int, batch: int, steps: int, device: torch.device, repeats: int, compile_: bool, cuda_graphs: bool
) -> float:
    torch.manual_seed(0)
    model = MLPDenoiser(dim, WIDTH, DEPTH).to(device).eval()
    net = model
    if compile_:
        net = torch.compile(model, mode="reduce-overhead" if cuda_graphs else "default")
        net.prediction = "epsilon"
    sampler = DDIMSampler(Schedule.linear(1000), steps=steps, eta=1.0)
    gen = torch.Generator(device=device).manual_seed(0)
    dt = _best_time(lambda: sampler.sample(net, (batch, dim), generator=gen, device=device), device, repeats)
    return steps * forward_flops(dim, batch) / dt


def bench_training(dim: int, batch: int, steps: int, device: torch.device, repeats: int) -> float:
    data = torch.randn(max(4 * batch, 2000), dim)
    torch.manual_seed(0)
    cfg = TrainConfig(steps=10**9, batch_size=batch, lr=1e-4, lr_decay_every=1500, device=str(device))
    tr = Trainer(MLPDenoiser(dim, WIDTH, DEPTH), Schedule.linear(1000), data, cfg)
    dt = _best_time(lambda: tr.train(steps=steps, progress=False), device, repeats)
    return steps * train_flops(dim, batch) / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dims", type=int, nargs="+", default=[20, 236])
    ap.add_argument("--sample-batches", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--train-batches", type=int, nargs="+", default=[500, 4096])
    ap.add_argument(
        "--threads", type=int, nargs="+", default=None, help="CPU thread counts to measure (default: all cores, then 1)"
    )
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per sampling run")
    ap.add_argument("--train-steps", type=int, default=10, help="optimiser steps per training run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser for sampling")
    ap.add_argument("--cuda-graphs", action="store_true", help="with --compile: mode='reduce-overhead' (CUDA graphs)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or ([torch.get_num_threads(), 1] if device.type == "cpu" else [torch.get_num_threads()])
    threads = list(dict.fromkeys(threads))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(
        f"torch {torch.__version__}, device {device} ({name}), CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, float32, MLP {WIDTH}x{DEPTH}"
        + (", torch.compile" + (" + CUDA graphs" if args.cuda_graphs else "") if args.compile else "")
    )
    header = f"{'threads':>7} {'phase':>8} {'dim':>4} {'batch':>6} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for th in threads:
        if device.type == "cpu":
            torch.set_num_threads(th)
        for dim in args.dims:
            for b in args.sample_batches:
                got = bench_sampling(dim, b, args.steps, device, args.repeats, args.compile, args.cuda_graphs)
                ceil = matmul_ceiling(sampling_products(dim, b, args.steps), device, args.repeats)
                print(
                    f"{th:>7} {'sample':>8} {dim:>4} {b:>6} {got / 1e9:>9.1f} {ceil / 1e9:>15.1f} {got / ceil:>6.2f}",
                    flush=True,
                )
            for b in args.train_batches:
                got = bench_training(dim, b, args.train_steps, device, args.repeats)
                ceil = matmul_ceiling(training_products(dim, b) * args.train_steps, device, args.repeats)
                print(
                    f"{th:>7} {'train':>8} {dim:>4} {b:>6} {got / 1e9:>9.1f} {ceil / 1e9:>15.1f} {got / ceil:>6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
