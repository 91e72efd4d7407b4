"""Is the data loader the bottleneck? Augmented loading against a training step, in one run.

    python benchmarks/bench_dataloading.py                       # 128x128, 128 images, batch 16
    python benchmarks/bench_dataloading.py --size 256 --images 64

Measured in images per second:
- baseline: the synthetic scenes loaded with no augmentation, num_workers=0;
- the training pipeline of `course_lib.transforms.train_transforms` (crop, affine, flip,
  elastic/grid distortion, colour, normalise) with num_workers=0 and 2;
- one training step (forward, cross-entropy, backward, SGD) of the small U-Net of fast mode
  (base_channels=16, depth=3) on batches of the same size.
"loader / train step" above 1 means the loader delivers images faster than the model consumes
them, so augmentation does not slow training down.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib.data import ScenesDataset
from course_lib.models import UNet
from course_lib.transforms import train_transforms


def loader_images_per_second(dataset, batch_size: int, num_workers: int, epochs: int) -> float:
    """Images per second over `epochs` passes, after one untimed pass that starts the workers."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in loader:
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for images, masks in loader:
            assert images.dtype == torch.float32 and masks.dtype == torch.int64
    return epochs * len(dataset) / (time.perf_counter() - start)


def train_images_per_second(
    size: int, batch_size: int, num_classes: int, steps: int
) -> tuple[float, int]:
    """Images per second of a U-Net training step (median step time) and the parameter count."""
    torch.manual_seed(0)
    model = UNet(in_channels=3, num_classes=num_classes, base_channels=16, depth=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)
    images = torch.randn(batch_size, 3, size, size)
    masks = torch.randint(0, num_classes, (batch_size, size, size))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), masks).backward()
        optimizer.step()
        if step > 0:  # the first step allocates buffers
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    size, n, batch = args.size, args.images, args.batch_size

    plain = ScenesDataset(length=n, image_size=size, seed=0)
    augmented = ScenesDataset(
        length=n, image_size=size, seed=0, transform=train_transforms(size, distortion=0.5, seed=0)
    )
    baseline = loader_images_per_second(plain, batch, 0, args.epochs)
    rows = [("no augmentation, 0 workers (baseline)", baseline)]
    for workers in (0, 2):
        speed = loader_images_per_second(augmented, batch, workers, args.epochs)
        rows.append((f"train_transforms, {workers} workers", speed))
    train_ips, params = train_images_per_second(size, batch, ScenesDataset.num_classes, args.steps)

    print(
        f"{size}x{size} images, batch {batch}, {n} images x {args.epochs} epochs, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'loader':<40}{'img/s':>9}{'x baseline':>12}{'loader / train step':>21}")
    for name, ips in rows:
        print(f"{name:<40}{ips:>9.1f}{ips / baseline:>12.2f}{ips / train_ips:>21.2f}")
    print(
        f"{'U-Net train step (' + f'{params / 1e6:.2f} M params)':<40}{train_ips:>9.1f}"
        f"{train_ips / baseline:>12.2f}{1.0:>21.2f}"
    )


if __name__ == "__main__":
    main()
