"""Training throughput (images/s) and peak memory of U-Net and DeepLabV3 at 128x128.

Each configuration runs in a fresh process (so peak memory is its own): a few warm-up steps,
then timed optimiser steps (forward, loss, backward, AdamW) on random data. Ratios are against
the first row (U-Net, float32) measured in the same run.

On the CPU, peak memory is the growth of the process's peak resident set size over the steps.
On a GPU (when CUDA is available) the same models also run with mixed precision (autocast
bf16/fp16, GradScaler for fp16) and with channels_last memory format, and peak memory is
`torch.cuda.max_memory_allocated`.

    python benchmarks/bench_training.py                       # CPU (and GPU rows when available)
    python benchmarks/bench_training.py --batch-size 4 --steps 3 --threads 1
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time

import torch
from torch import nn

MODELS = {
    "unet": dict(name="unet", kwargs=dict(in_channels=3, num_classes=6, base_channels=16, depth=4)),
    "deeplabv3": dict(
        name="deeplabv3", kwargs=dict(in_channels=3, num_classes=6, backbone="resnet18")
    ),
}


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def measure(
    model_key: str,
    device: str,
    precision: str,
    channels_last: bool,
    batch_size: int,
    size: int,
    warmup: int,
    steps: int,
    threads: int | None,
) -> dict:
    """Images per second and peak memory (MiB) of `steps` training steps of one configuration."""
    from course_lib.engine import resolve_amp
    from course_lib.models import build_model

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = MODELS[model_key]
    model = build_model(spec["name"], **spec["kwargs"]).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp_dtype = resolve_amp(precision, torch.device(device)) if precision != "fp32" else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    images = torch.rand(batch_size, 3, size, size, device=device).contiguous(
        memory_format=memory_format
    )
    targets = torch.randint(0, 6, (batch_size, size, size), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.autocast(
            device_type=torch.device(device).type,
            dtype=amp_dtype or torch.float32,
            enabled=amp_dtype is not None,
        ):
            loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
    return {
        "images_per_s": batch_size * steps / elapsed,
        "peak_mb": peak,
        "rss_growth_mb": _peak_rss_mb() - rss_before if not cuda else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _in_fresh_process(**kwargs) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, kwds=kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: PyTorch's)")
    args = parser.parse_args(argv)
    configs = [(m, "cpu", "fp32", False) for m in MODELS]
    if torch.cuda.is_available():
        for m in MODELS:
            configs += [
                (m, "cuda", "fp32", False),
                (m, "cuda", "auto", False),
                (m, "cuda", "auto", True),
            ]
    print(
        f"torch {torch.__version__}, batch {args.batch_size}, {args.size}x{args.size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'model':<10} {'device':<6} {'precision':<9} {'layout':<13} {'params':>10} "
        f"{'img/s':>8} {'x base':>7} {'peak MiB':>9} {'x base':>7}"
    )
    baseline = {}
    for model_key, device, precision, channels_last in configs:
        result = _in_fresh_process(
            model_key=model_key,
            device=device,
            precision=precision,
            channels_last=channels_last,
            batch_size=args.batch_size,
            size=args.size,
            warmup=args.warmup,
            steps=args.steps,
            threads=args.threads,
        )
        base = baseline.setdefault(device, result)  # first row of each device: U-Net fp32
        layout = "channels_last" if channels_last else "contiguous"
        label = (
            precision
            if precision != "auto"
            else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        )
        print(
            f"{model_key:<10} {device:<6} {label:<9} {layout:<13} {result['parameters']:>10,} "
            f"{result['images_per_s']:>8.1f} {result['images_per_s'] / base['images_per_s']:>7.2f} "
            f"{result['peak_mb']:>9.0f} {result['peak_mb'] / base['peak_mb']:>7.2f}"
        )
    if not torch.cuda.is_available():
        print("no CUDA device: mixed-precision and channels_last rows skipped")
    print(
        "CPU peak MiB is the process's peak resident set (model, optimiser, activations, "
        "PyTorch itself); x base compares with U-Net fp32 on the same device."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
