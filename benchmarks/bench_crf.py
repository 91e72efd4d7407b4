"""Dense-CRF cost per megapixel: the local-window mean field (ConvCRF-style) against the exact
all-pairs version, measured in the same run on an image size the all-pairs version can hold.

Workload: random softmax probabilities over 6 classes and a random colour image; 5 mean-field
iterations with the default kernels. Rows:
- all-pairs ("exact") at --exact-size (its (H*W)^2 kernel matrix limits it to about 64 x 64),
- local window (11 x 11 and 7 x 7) at the same size, the time ratio against all-pairs,
- local window at --size, to show the cost per megapixel is flat (linear in the pixel count).
Times are medians of --repeats; seconds per megapixel = time / (batch * H * W / 1e6).

    python benchmarks/bench_crf.py [--size 256] [--exact-size 64] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import torch

from course_lib.crf import dense_crf
from course_lib.utils import median_seconds

NUM_CLASSES = 6


def workload(size: int, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(batch, NUM_CLASSES, size, size, generator=g).softmax(dim=1).to(device)
    image = torch.rand(batch, 3, size, size, generator=g).to(device)
    return probs, image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--exact-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"workload: {NUM_CLASSES} classes, 5 iterations, batch {args.batch}, device={device}, "
        f"torch threads={torch.get_num_threads()}"
    )
    rows = [
        ("all-pairs (exact)", args.exact_size, dict(method="exact")),
        ("local window 11x11", args.exact_size, dict(window=11)),
        ("local window 7x7", args.exact_size, dict(window=7)),
        ("local window 11x11", args.size, dict(window=11)),
        ("local window 7x7", args.size, dict(window=7)),
    ]
    baseline = None
    for label, size, kwargs in rows:
        probs, image = workload(size, args.batch, device)
        dense_crf(probs, image, **kwargs)  # warm-up
        seconds = median_seconds(lambda: dense_crf(probs, image, **kwargs), args.repeats, device)
        per_mp = seconds / (args.batch * size * size / 1e6)
        baseline = baseline or per_mp
        print(
            f"{label:20s} {size:4d}x{size:<4d} {seconds * 1e3:9.1f} ms  {per_mp:10.2f} s/MP  "
            f"{per_mp / baseline:7.3f}x all-pairs time per MP",
            flush=True,
        )


if __name__ == "__main__":
    main()
