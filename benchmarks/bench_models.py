"""Training speed and peak memory of the course models against torchvision references, in one run.

For every row of `ROWS`: forward + cross-entropy + backward on a random batch at 128x128 (train
mode), reported as images per second (median over the timed steps) and the peak memory of one step:
on the CPU the rise of the process's peak resident set size over the built model and batch
(Linux VmHWM, reset before the first step) and on a GPU `torch.cuda.max_memory_allocated`. Each
row runs in a fresh process, so memory kept by one model cannot hide another's. A row with a
`baseline` also prints the ratio (speed and memory) against that baseline, measured in the same
run.

    python benchmarks/bench_models.py            # 4 timed steps per model, batch 4
    python benchmarks/bench_models.py --quick    # 2 timed steps, the small models and the baseline
    python benchmarks/bench_models.py --device cuda --size 256 --batch 8

To add a model, append a `Row` to `ROWS` (and its torchvision counterpart, if one exists).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Row:
    label: str  # unique name printed in the table
    factory: str  # "module:callable" that builds the model
    kwargs: dict = field(default_factory=dict)  # keyword arguments besides num_classes
    baseline: str | None = None  # label of the row to compare with
    quick: bool = False  # also run with --quick


ROWS = [
    Row(
        "torchvision fcn_resnet50",
        "torchvision.models.segmentation:fcn_resnet50",
        {"weights": None, "weights_backbone": None, "aux_loss": False},
        quick=True,
    ),
    Row(
        "FCN-8s resnet50",
        "course_lib.models:FCN",
        {"backbone": "resnet50", "variant": "8s"},
        baseline="torchvision fcn_resnet50",
    ),
    Row(
        "FCN-8s resnet18",
        "course_lib.models:FCN",
        {"backbone": "resnet18", "variant": "8s"},
        baseline="torchvision fcn_resnet50",
        quick=True,
    ),
    Row(
        "FCN-8s vgg16 (paper)",
        "course_lib.models:FCN",
        {"backbone": "vgg16", "variant": "8s"},
        baseline="torchvision fcn_resnet50",
    ),
    Row(
        "U-Net base 64 depth 4",
        "course_lib.models:UNet",
        {"base_channels": 64, "depth": 4},
        baseline="torchvision fcn_resnet50",
    ),
    Row(
        "U-Net base 16 depth 3",
        "course_lib.models:UNet",
        {"base_channels": 16, "depth": 3},
        baseline="torchvision fcn_resnet50",
        quick=True,
    ),
    Row(
        "torchvision deeplabv3_resnet50",
        "torchvision.models.segmentation:deeplabv3_resnet50",
        {"weights": None, "weights_backbone": None, "aux_loss": False},
    ),
    Row(
        "DeepLabV3 resnet50 OS16",
        "course_lib.models:DeepLabV3",
        {"backbone": "resnet50", "output_stride": 16},
        baseline="torchvision deeplabv3_resnet50",
    ),
    Row(
        "DeepLabV3 resnet50 OS8",
        "course_lib.models:DeepLabV3",
        {"backbone": "resnet50", "output_stride": 8},
        baseline="torchvision deeplabv3_resnet50",
    ),
    Row(
        "DeepLabV3+ resnet50 OS16",
        "course_lib.models:DeepLabV3Plus",
        {"backbone": "resnet50", "output_stride": 16},
        baseline="torchvision deeplabv3_resnet50",
    ),
    Row(
        "DeepLabV3+ resnet50 OS8",
        "course_lib.models:DeepLabV3Plus",
        {"backbone": "resnet50", "output_stride": 8},
        baseline="torchvision deeplabv3_resnet50",
    ),
]


def _build(row: Row, num_classes: int) -> torch.nn.Module:
    module_name, name = row.factory.split(":")
    factory = getattr(importlib.import_module(module_name), name)
    return factory(num_classes=num_classes, **row.kwargs)


def _logits(output) -> torch.Tensor:
    return output["out"] if isinstance(output, dict) else output  # torchvision returns a dict


def _reset_peak_rss() -> bool:
    """Reset Linux VmHWM to the current resident set size; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(row: Row, size: int, batch: int, steps: int, num_classes: int, device: str) -> dict:
    """Images per second and peak step memory (bytes) of one row, in this process."""
    torch.manual_seed(0)
    model = _build(row, num_classes).to(device).train()
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, num_classes, (batch, size, size), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        logits = _logits(model(images))  # (N, K, H, W)
        loss_fn(logits, target).backward()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        if not _reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux needed")
        base = _rss()  # the built model and the batch; everything a step adds is counted
    step()  # warm-up (untimed): the allocator grabs the memory of a step here
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()
    return {
        "images_per_second": batch / statistics.median(times),
        "peak_bytes": peak - base,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--quick", action="store_true", help="2 timed steps, the rows marked quick")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps

    if args.worker is not None:
        row = next(r for r in ROWS if r.label == args.worker)
        result = measure(row, args.size, args.batch, steps, args.num_classes, args.device)
        print(json.dumps(result))
        return 0

    rows = [r for r in ROWS if r.quick or not args.quick]
    labels = {r.label for r in rows}
    results = {}
    for row in rows:
        command = [
            sys.executable,
            __file__,
            "--worker",
            row.label,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--steps",
            str(steps),
            "--num-classes",
            str(args.num_classes),
            "--device",
            args.device,
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{row.label}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[row.label] = json.loads(done.stdout.strip().splitlines()[-1])

    print(
        f"forward + backward, batch {args.batch}, {args.size}x{args.size}, "
        f"{args.num_classes} classes, "
        f"device {args.device}, {steps} timed steps, torch threads {torch.get_num_threads()}"
    )
    width = max(len(row.label) for row in rows) + 2
    header = f"{'model':<{width}}{'params (M)':>11}{'img/s':>9}{'peak MB':>9}  {'vs baseline':<40}"
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.label not in results:
            continue
        r = results[row.label]
        note = ""
        if row.baseline in labels and row.baseline in results:
            b = results[row.baseline]
            note = (
                f"{r['images_per_second'] / b['images_per_second']:.2f}x speed, "
                f"{r['peak_bytes'] / max(b['peak_bytes'], 1):.2f}x memory of {row.baseline}"
            )
        print(
            f"{row.label:<{width}}{r['parameters'] / 1e6:>11.2f}{r['images_per_second']:>9.1f}"
            f"{r['peak_bytes'] / 2**20:>9.0f}  {note}"
        )
    return 0 if len(results) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
