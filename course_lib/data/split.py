"""Train/validation split with a fixed seed: deterministic, disjoint and covering.

The permutation comes from a seeded `torch.Generator` on the CPU, so the same (length, fraction,
seed) gives the same split on every machine. `train_val_split` can take a second dataset holding
the same samples with a different transform, because a `Subset` shares its parent's transform and
validation images should not be augmented.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

__all__ = ["train_val_indices", "train_val_split"]


def train_val_indices(
    length: int, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split `range(length)` into sorted train and validation index lists.

    The validation part holds `round(length * val_fraction)` indices, at least one, and the
    training part keeps at least one.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(
            f"length must be an int >= 2 to leave one sample on each side, got {length!r}"
        )
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    num_val = min(max(round(length * val_fraction), 1), length - 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(length, generator=generator).tolist()
    return sorted(order[num_val:]), sorted(order[:num_val])


def train_val_split(
    dataset: Dataset,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    val_dataset: Dataset | None = None,
) -> tuple[Subset, Subset]:
    """Split `dataset` into `(train_subset, val_subset)`.

    `val_dataset`, when given, must hold the same samples in the same order (typically the same
    dataset built with the validation transform); the validation subset is taken from it.
    """
    length = len(dataset)
    if val_dataset is not None and len(val_dataset) != length:
        raise ValueError(
            f"val_dataset must hold the same samples as dataset: len(val_dataset)={len(val_dataset)}, "
            f"len(dataset)={length}"
        )
    train_idx, val_idx = train_val_indices(length, val_fraction, seed)
    return Subset(dataset, train_idx), Subset(
        dataset if val_dataset is None else val_dataset, val_idx
    )
