"""How long one synthetic sample takes, against baselines measured in the same run.

    python benchmarks/bench_synthetic.py                  # 256x256, 40 samples per dataset
    python benchmarks/bench_synthetic.py --size 512 --samples 20

Baselines: filling an image of the same size with `np.random.rand` (the least any generator must
do) and reading a sample back from a list held in memory as tensors (what a cached dataset costs).
The ratio says how many times slower than drawing plain random numbers a realistic sample is.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from course_lib.data import CellsDataset, ScenesDataset


def median_ms(function, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    size, n = args.size, args.samples
    torch.set_num_threads(1)

    rand_ms = median_ms(lambda i: torch.from_numpy(np.random.rand(3, size, size).astype("f4")), n)
    cached = [torch.rand(3, size, size) for _ in range(4)]
    cached_ms = median_ms(lambda i: cached[i % 4].clone(), n)
    print(f"{size}x{size}, median of {n} samples, 1 thread")
    print(f"{'generator':<34}{'ms/sample':>10}{'x rand':>9}")
    print(f"{'baseline np.random.rand (3, H, W)':<34}{rand_ms:>10.2f}{1.0:>9.2f}")
    print(f"{'baseline cached tensor clone':<34}{cached_ms:>10.2f}{cached_ms / rand_ms:>9.2f}")
    for cls in (ScenesDataset, CellsDataset):
        for instances in (False, True):
            dataset = cls(length=n, image_size=size, return_instances=instances)
            ms = median_ms(lambda i: dataset[i], n)
            name = f"{cls.__name__}{' + instances' if instances else ''}"
            print(f"{name:<34}{ms:>10.2f}{ms / rand_ms:>9.2f}")


if __name__ == "__main__":
    main()
