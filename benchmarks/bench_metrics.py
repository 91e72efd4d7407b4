"""Speed of `ConfusionMatrix.update` against the usual alternatives, in one run.

Workload: predicted and target labels of 8 images of 512 x 512 pixels, 21 classes (Pascal VOC),
about 5% of target pixels set to ignore_index=255. Compared:
- course_lib `ConfusionMatrix.update` (one bincount over target * K + pred),
- the per-class Python loop found in many tutorials (two boolean masks per class),
- torchmetrics `MulticlassJaccardIndex.update` when torchmetrics is installed (skipped otherwise).
All three are checked to produce the same IoU before timing. Prints the median time per update
and the ratios against course_lib.

    python benchmarks/bench_metrics.py [--repeats 7] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from course_lib.metrics import ConfusionMatrix, iou_per_class
from course_lib.utils import median_seconds

NUM_CLASSES = 21
IGNORE = 255


class PerClassLoop:
    """The tutorial way: intersection and union per class with boolean masks."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.union = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        for c in range(self.num_classes):
            p = (pred == c) & valid
            t = target == c
            self.intersection[c] += (p & t).sum().item()
            self.union[c] += (p | t).sum().item()

    def iou(self) -> torch.Tensor:
        return torch.where(self.union > 0, self.intersection / self.union.clamp(min=1), torch.nan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for every contender (default: torch's choice)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (8, 512, 512), generator=g)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.7,
        target,
        torch.randint(0, NUM_CLASSES, target.shape, generator=g),
    )
    target[torch.rand(target.shape, generator=g) < 0.05] = IGNORE
    pred, target = pred.to(device), target.to(device)
    print(
        f"workload: labels {tuple(target.shape)}, {NUM_CLASSES} classes, ignore_index={IGNORE}, "
        f"device={device}, torch threads={torch.get_num_threads()}"
    )

    ours = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    loop = PerClassLoop(NUM_CLASSES, IGNORE)
    contenders = {"course_lib ConfusionMatrix": lambda: ours.update(pred, target)}
    if device.type == "cpu":
        contenders["per-class Python loop"] = lambda: loop.update(pred, target)

    reference = iou_per_class(
        ConfusionMatrix(NUM_CLASSES, IGNORE).update(pred, target).compute()
    ).cpu()
    loop.update(pred.cpu(), target.cpu())
    torch.testing.assert_close(loop.iou().double(), reference)
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        print("torchmetrics not installed: its comparison is skipped (pip install torchmetrics)")
    else:
        jaccard = MulticlassJaccardIndex(NUM_CLASSES, average="none", ignore_index=IGNORE).to(
            device
        )
        jaccard.update(pred, target)
        torch.testing.assert_close(
            jaccard.compute().cpu().double(), reference, atol=1e-6, rtol=1e-6
        )
        contenders["torchmetrics MulticlassJaccardIndex"] = lambda: jaccard.update(pred, target)

    for fn in contenders.values():  # warm-up
        fn()
    baseline = None
    for name, fn in contenders.items():
        seconds = median_seconds(fn, args.repeats, device)
        baseline = baseline or seconds
        print(
            f"{name:38s} {seconds * 1e3:9.2f} ms/update   "
            f"{seconds / baseline:6.1f}x the time of course_lib"
        )


if __name__ == "__main__":
    main()
