"""Semantic masks, instance maps and panoptic ids, and the conversions between them.

This module owns the representations; making panoptic maps from networks is `course_lib.panoptic`,
scoring them is `course_lib.metrics.panoptic`.

    semantic   (H, W) int64 class id per pixel; `ignore_index` (255) marks void pixels
    instances  (H, W) int64 object id per pixel, 0 = no object, 1..n one id per object
    panoptic   (H, W) int64 class_id * label_divisor + instance_id   (Kirillov et al., 2019,
               "Panoptic Segmentation"; the encoding of Cityscapes and Panoptic-DeepLab)

Stuff pixels (sky, road: uncountable) carry instance id 0; thing pixels (cars, people) carry the id
of their object. Every function accepts torch tensors (any device) or numpy arrays and returns the
same kind. Connected components use `scipy.ndimage.label` (a C implementation of two-pass
labelling); the unit tests check it against a plain breadth-first flood fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "semantic_from_instances",
    "instances_from_semantic",
    "encode_panoptic",
    "decode_panoptic",
]

IGNORE_INDEX = 255


def _as_long(x, name: str) -> tuple[torch.Tensor, bool]:
    """(H, W) integer tensor or array -> (int64 tensor, whether the input was numpy)."""
    if isinstance(x, np.ndarray):
        tensor, was_numpy = torch.from_numpy(x), True
    elif isinstance(x, torch.Tensor):
        tensor, was_numpy = x.detach(), False
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must hold integer ids, got dtype {tensor.dtype}")
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {tuple(tensor.shape)}")
    tensor = tensor.long()
    if tensor.numel() and tensor.min() < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {int(tensor.min())}")
    return tensor, was_numpy


def _back(tensor: torch.Tensor, was_numpy: bool):
    return tensor.numpy() if was_numpy else tensor


def _check_divisor(label_divisor: int) -> int:
    is_int = isinstance(label_divisor, (int, np.integer)) and not isinstance(label_divisor, bool)
    if not is_int or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    return int(label_divisor)


def semantic_from_instances(
    instances: torch.Tensor | np.ndarray,
    instance_classes: Mapping[int, int] | Sequence[int] | torch.Tensor,
) -> torch.Tensor | np.ndarray:
    """Class mask from an instance map and its class table: (H, W) -> (H, W) int64.

    `instance_classes[k]` is the class of the pixels with instance id k: a sequence, array or
    tensor indexed by id (entry 0 is the class of pixels that belong to no object, usually 0),
    or a dict {instance_id: class_id} (id 0 defaults to class 0 when the dict omits it).
    """
    ids, was_numpy = _as_long(instances, "instances")
    if isinstance(instance_classes, Mapping):
        table_size = max([0, *instance_classes.keys()]) + 1
        table = torch.full((table_size,), -1, dtype=torch.long)
        table[0] = 0
        for key, value in instance_classes.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
                raise ValueError(f"instance_classes keys must be instance ids >= 0, got {key!r}")
            table[key] = int(value)
    else:
        if isinstance(instance_classes, torch.Tensor):
            table = instance_classes.detach().cpu()
        else:
            table = torch.as_tensor(np.asarray(instance_classes))
        if table.ndim != 1 or table.is_floating_point() or table.dtype == torch.bool:
            raise ValueError(
                "instance_classes must be a 1-D integer table indexed by instance id, "
                f"got shape {tuple(table.shape)} and dtype {table.dtype}"
            )
        table = table.long()
    present = ids.unique().cpu()  # the instance ids used in the map
    unknown = present[present >= len(table)]
    if unknown.numel() == 0:
        unknown = present[table[present] < 0]  # unlisted in the dict, or a negative class
    if unknown.numel():
        raise ValueError(
            f"instance_classes gives no class id >= 0 for the instance ids "
            f"{unknown.tolist()[:10]} used in instances"
        )
    return _back(table.to(ids.device)[ids], was_numpy)  # (H, W): a table look-up per pixel


def instances_from_semantic(
    mask: torch.Tensor | np.ndarray, classes: Iterable[int] | None = None, connectivity: int = 4
) -> torch.Tensor | np.ndarray:
    """Instance map from a class mask by connected components per class: (H, W) -> (H, W) int64.

    Each connected region of pixels of one class becomes one instance. Ids are 1..n, numbered
    class by class in ascending class order, and within a class in the raster order of each
    region's first pixel. `classes` lists the classes to split into instances (the thing
    classes); by default every class present except 0 (background) and 255 (void). Pixels of
    other classes get id 0. `connectivity` is 4 (edge neighbours) or 8 (edges and corners).

    Two touching objects of one class form one region, so they come back as ONE instance: that is
    why instance segmentation needs more than a semantic mask.
    """
    labels, was_numpy = _as_long(mask, "mask")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    array = labels.cpu().numpy()
    if classes is None:
        classes = [c for c in np.unique(array).tolist() if c not in (0, IGNORE_INDEX)]
    else:
        classes = sorted({int(c) for c in classes})
    instances = np.zeros(array.shape, np.int64)
    next_id = 1
    for class_id in classes:
        # (H, W) with ids 1..count, one per connected region of this class
        components, count = ndimage.label(array == class_id, structure=structure)
        region = components > 0
        instances[region] = components[region] + (next_id - 1)
        next_id += count
    result = torch.from_numpy(instances).to(labels.device)
    return _back(result, was_numpy)


def encode_panoptic(
    semantic: torch.Tensor | np.ndarray,
    instances: torch.Tensor | np.ndarray,
    label_divisor: int = 1000,
) -> torch.Tensor | np.ndarray:
    """One map with class and object: panoptic = semantic * label_divisor + instances. (H, W) int64.

    Stuff pixels carry instance id 0, so their panoptic id is class_id * label_divisor.
    Instance ids must be smaller than `label_divisor`, or two objects would share an id.
    """
    label_divisor = _check_divisor(label_divisor)
    classes, was_numpy = _as_long(semantic, "semantic")
    ids, _ = _as_long(instances, "instances")
    if classes.shape != ids.shape:
        raise ValueError(
            f"semantic has shape {tuple(classes.shape)} but instances has {tuple(ids.shape)}"
        )
    if ids.numel() and ids.max() >= label_divisor:
        raise ValueError(
            f"instances has ids up to {int(ids.max())} but "
            f"label_divisor={label_divisor}; use a label_divisor larger than the "
            "largest instance id"
        )
    return _back(classes * label_divisor + ids.to(classes.device), was_numpy)


def decode_panoptic(
    panoptic: torch.Tensor | np.ndarray, label_divisor: int = 1000
) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]:
    """Split panoptic ids back into (semantic, instances), both (H, W) int64."""
    label_divisor = _check_divisor(label_divisor)
    ids, was_numpy = _as_long(panoptic, "panoptic")
    return _back(ids // label_divisor, was_numpy), _back(ids % label_divisor, was_numpy)
