"""Exercise 01: from one kind of segmentation to another.

Five small functions that move between the three maps of notebook 01:
1. `semantic_from_instances`: an instance map and its class table -> the semantic mask.
2. `connected_components`: label the connected regions of a binary mask (flood fill).
3. `instances_from_semantic`: semantic mask -> instance map, one instance per connected region of
   each thing class (and see why touching objects defeat it).
4. `encode_panoptic` / `decode_panoptic`: class and instance id in one integer per pixel.

Maps are torch tensors: semantic and instance maps are (H, W) int64; instance id 0 means
"no object". Check your work with `python -m course_grader ex01`.
"""

from __future__ import annotations

from collections import deque

import torch


def semantic_from_instances(instances: torch.Tensor, instance_classes: list[int]) -> torch.Tensor:
    """The semantic mask of an instance map: (H, W) int64 -> (H, W) int64.

    `instance_classes[k]` is the class id of instance k; entry 0 is the class of the pixels that
    belong to no object (usually 0, background). Example: with instance_classes = [0, 3, 3, 4],
    the pixels of instances 1 and 2 get class 3 and those of instance 3 get class 4.
    Raises ValueError when `instances` holds an id that has no entry in `instance_classes`.
    """
    # BEGIN SOLUTION
    # HINT: make the list a tensor `table`; then table[instances] looks every pixel up at once.
    # HINT: check the largest id against len(table) first.
    table = torch.as_tensor(instance_classes, dtype=torch.int64)
    if instances.numel() and int(instances.max()) >= len(table):
        raise ValueError(
            f"instances holds id {int(instances.max())} but instance_classes has only "
            f"{len(table)} entries (ids 0..{len(table) - 1})"
        )
    return table[instances]  # (H, W)
    # END SOLUTION


def connected_components(binary: torch.Tensor, connectivity: int = 4) -> tuple[torch.Tensor, int]:
    """Label the connected regions of the True pixels of `binary` (H, W) bool.

    Returns (labels, count): labels (H, W) int64 with 0 on False pixels and one id in 1..count
    per connected region (any numbering), count the number of regions. With `connectivity=4`
    a pixel touches its left, right, upper and lower neighbours; with 8 also the four diagonal
    ones. Raises ValueError when connectivity is neither 4 nor 8.
    """
    # BEGIN SOLUTION
    # HINT: go over the pixels row by row. At a True pixel that has no label yet, take a new label
    # HINT: and flood its region with a queue (collections.deque): pop a pixel, label its unlabelled
    # HINT: True neighbours (inside the image) and push them. Python lists (tensor.tolist()) are
    # HINT: much faster to index one pixel at a time than tensors.
    if connectivity == 4:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    elif connectivity == 8:
        steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    else:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    height, width = binary.shape
    pixels = binary.bool().tolist()
    labels = [[0] * width for _ in range(height)]
    count = 0
    for y in range(height):
        for x in range(width):
            if not pixels[y][x] or labels[y][x]:
                continue
            count += 1
            labels[y][x] = count
            queue = deque([(y, x)])
            while queue:
                cy, cx = queue.popleft()
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    inside = 0 <= ny < height and 0 <= nx < width
                    if inside and pixels[ny][nx] and not labels[ny][nx]:
                        labels[ny][nx] = count
                        queue.append((ny, nx))
    return torch.tensor(labels, dtype=torch.int64).reshape(height, width), count
    # END SOLUTION


def instances_from_semantic(
    mask: torch.Tensor, thing_classes: list[int], connectivity: int = 4
) -> torch.Tensor:
    """Instance map of a semantic mask: (H, W) int64 -> (H, W) int64.

    Every connected region of pixels of one thing class becomes one instance; instance ids are
    1..n (any numbering), pixels of other classes get 0. Use your `connected_components`.
    """
    # BEGIN SOLUTION
    # HINT: for each class c in thing_classes, label connected_components(mask == c) and add the
    # HINT: number of instances found so far to its non-zero labels, so ids never repeat.
    instances = torch.zeros(mask.shape, dtype=torch.int64)
    found = 0
    for class_id in thing_classes:
        labels, count = connected_components(mask == class_id, connectivity)
        region = labels > 0
        instances[region] = labels[region] + found
        found += count
    return instances
    # END SOLUTION


def encode_panoptic(
    semantic: torch.Tensor, instances: torch.Tensor, label_divisor: int = 1000
) -> torch.Tensor:
    """One id per pixel for class and object: semantic * label_divisor + instances, (H, W) int64.

    Raises ValueError when an instance id is label_divisor or larger (it would spill into the
    class part of the id).
    """
    # BEGIN SOLUTION
    # HINT: one line of tensor arithmetic, after checking instances.max() < label_divisor.
    if instances.numel() and int(instances.max()) >= label_divisor:
        raise ValueError(
            f"instance id {int(instances.max())} does not fit label_divisor={label_divisor}"
        )
    return semantic.long() * label_divisor + instances.long()
    # END SOLUTION


def decode_panoptic(
    panoptic: torch.Tensor, label_divisor: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split panoptic ids into (semantic, instances), both (H, W) int64."""
    # BEGIN SOLUTION
    # HINT: integer division gives the class, the remainder the instance id.
    return panoptic // label_divisor, panoptic % label_divisor
    # END SOLUTION
