"""DeepLabV3 / V3+ inference speed and peak memory at output stride 16 and 8, against torchvision's
`deeplabv3_resnet50` (output stride 8, no aux head) measured in the same run.

Each contender runs in eval mode under `torch.no_grad` on a random batch. Printed per row:
parameters, feature-map size, images per second (median of the repeats), the time ratio against
torchvision, and the peak memory of the first forward pass: `torch.cuda.max_memory_allocated` on a GPU;
on the CPU the rise of the process's peak resident set (Linux VmHWM, reset before the pass),
measured in a fresh process per contender so that memory kept by one model cannot hide another's.

    python benchmarks/bench_deeplab.py [--size 256] [--batch 1] [--repeats 3] [--device cpu|cuda]
                                       [--backbone resnet50] [--threads N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
from pathlib import Path

import torch

from course_lib.utils import median_seconds

ROWS = [  # (label, builder name, output stride)
    ("torchvision deeplabv3_resnet50", "torchvision", 8),
    ("DeepLabV3  OS16", "deeplabv3", 16),
    ("DeepLabV3  OS8", "deeplabv3", 8),
    ("DeepLabV3+ OS16", "deeplabv3plus", 16),
    ("DeepLabV3+ OS8", "deeplabv3plus", 8),
]


def _build(kind: str, output_stride: int, backbone: str, num_classes: int) -> torch.nn.Module:
    if kind == "torchvision":
        from torchvision.models.segmentation import deeplabv3_resnet50

        return deeplabv3_resnet50(
            weights=None, weights_backbone=None, aux_loss=False, num_classes=num_classes
        )
    from course_lib import models

    return models.build_model(
        kind, num_classes=num_classes, backbone=backbone, output_stride=output_stride
    )


def _read_status(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes, None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(
    kind: str,
    output_stride: int,
    backbone: str,
    size: int,
    batch: int,
    repeats: int,
    device_name: str,
    threads: int | None,
) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = _build(kind, output_stride, backbone, 21).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)

    def forward():
        out = model(x)
        return out["out"] if isinstance(out, dict) else out

    with torch.no_grad():
        gc.collect()  # memory of the first pass, before any allocator cache is warm
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _read_status("VmRSS") if _reset_peak_rss() else None
        out = forward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = _read_status("VmHWM") - base if base is not None else None
        seconds = median_seconds(forward, repeats, device, warmup=1)
        backbone_out = model.backbone(x)
        high = backbone_out["out"] if isinstance(backbone_out, dict) else backbone_out[-1]
    assert out.shape[-2:] == x.shape[-2:]
    return {
        "seconds": seconds,
        "peak": peak,
        "feature": tuple(high.shape[-2:]),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the course models")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    print(
        f"workload: batch {args.batch} x 3 x {args.size} x {args.size}, eval, no_grad, device={args.device}, "
        f"course backbone={args.backbone}"
    )
    context = multiprocessing.get_context("spawn")
    baseline = None
    for label, kind, output_stride in ROWS:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            result = pool.submit(
                measure,
                kind,
                output_stride,
                args.backbone,
                args.size,
                args.batch,
                args.repeats,
                args.device,
                args.threads,
            ).result()
        baseline = baseline or result["seconds"]
        peak = f"{result['peak'] / 2**20:8.0f} MiB" if result["peak"] is not None else "     n/a"
        print(
            f"{label:32s} params {result['params'] / 1e6:6.2f} M  features {result['feature'][0]:3d}x"
            f"{result['feature'][1]:<3d}  {args.batch / result['seconds']:7.2f} img/s  "
            f"{result['seconds'] / baseline:5.2f}x torchvision's time  peak {peak}",
            flush=True,
        )


if __name__ == "__main__":
    main()
