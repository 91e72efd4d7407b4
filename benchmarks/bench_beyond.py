"""Inference speed of every course model at 256x256, as ratios against U-Net in the same run.

The table of notebook 08: for each model in `CONFIGS` (the configurations the notebook trains),
the parameter count and the images per second of a forward pass in eval mode under
`torch.no_grad()` (median over --repeats timed passes after one warm-up pass), on the CPU and,
when CUDA is available, on the GPU. Ratios > 1 mean faster than U-Net.

    python benchmarks/bench_beyond.py                     # CPU (and GPU if present), batch 2
    python benchmarks/bench_beyond.py --size 512 --batch 4 --repeats 5
"""

from __future__ import annotations

import argparse

import torch

from course_lib import models
from course_lib.utils import count_parameters, median_seconds

NUM_CLASSES = 6
BASELINE = "U-Net"
CONFIGS: dict[str, tuple[str, dict]] = {  # label -> (name in models.MODELS, keyword arguments)
    "U-Net": ("unet", dict(base_channels=16, depth=3)),
    "FCN-8s": ("fcn", dict(variant="8s", backbone="resnet18")),
    "DeepLabV3": ("deeplabv3", dict(backbone="resnet18")),
    "DeepLabV3+": ("deeplabv3plus", dict(backbone="resnet18")),
    "Fast-SCNN": ("fastscnn", dict()),
    "SegFormer": ("segformer", dict()),
}


def images_per_second(
    model: torch.nn.Module, size: int, batch: int, repeats: int, device: torch.device
) -> float:
    """Median throughput of `repeats` forward passes after one warm-up pass."""
    model = model.to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device)
    with torch.no_grad():  # the warm-up pass allocates and picks kernels
        return batch / median_seconds(lambda: model(x), repeats, device, warmup=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"forward pass, eval mode, {args.size}x{args.size}, batch {args.batch}, {NUM_CLASSES} "
        f"classes, median of {args.repeats}; torch threads={torch.get_num_threads()}"
    )
    rows = {}
    for label, (name, kwargs) in CONFIGS.items():
        torch.manual_seed(0)
        model = models.build_model(name, num_classes=NUM_CLASSES, in_channels=3, **kwargs)
        speeds = [
            images_per_second(model, args.size, args.batch, args.repeats, device)
            for device in devices
        ]
        rows[label] = [count_parameters(model), *speeds]
    header = f"{'model':<12} {'params':>8} {'x U-Net':>8}"
    for device in devices:
        header += f" {device.type + ' img/s':>11} {'x U-Net':>8}"
    print(header)
    base = rows[BASELINE]
    for label, row in rows.items():
        line = f"{label:<12} {row[0] / 1e6:>7.2f}M {row[0] / base[0]:>8.2f}"
        for speed, base_speed in zip(row[1:], base[1:]):
            line += f" {speed:>11.1f} {speed / base_speed:>8.2f}"
        print(line)


if __name__ == "__main__":
    main()
