"""Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019), COCO conventions.

This module owns the scoring of panoptic maps; `course_lib.panoptic` makes them from two networks,
`course_lib.instances` converts between the map kinds.

A panoptic map gives every pixel one id = class_id * label_divisor + instance_id (stuff classes
use instance_id 0, so a stuff class is one segment per image). A segment is the set of pixels of
one id. Per class c, predicted and target segments of class c are matched when IoU > 0.5 (a
match is then unique, so no assignment problem), and

    PQ_c = sum_{matched} IoU / (TP + FP/2 + FN/2) = SQ_c x RQ_c
    SQ_c = sum_{matched} IoU / TP   (0 when TP = 0)      RQ_c = TP / (TP + FP/2 + FN/2)

Void pixels are target pixels whose class is `ignore_index`, as in the COCO panoptic evaluation:
- they are removed from the union of every (pred, target) pair (pred pixels on void do not
  lower the IoU);
- a predicted segment that lies more than half on void is not a false positive;
- predicted pixels whose class is `ignore_index` belong to no segment.
Crowd regions (COCO's `iscrowd`: a group of objects labelled as one region) are target segments
named in `crowd_ids`. As in the COCO evaluation they are never matched and never false negatives,
and a predicted segment of class c that lies more than half on void plus the crowd regions of
class c is not a false positive. (Marking a crowd region void instead would also excuse
predictions of other classes there.) A class with TP + FP + FN = 0 (absent from both) has NaN
scores and is left out of the means, which run over the classes present in pred or target.

Tensor contract: pred_panoptic, target_panoptic (H, W) or (N, H, W) integer tensors or arrays of
the same shape; with N images, segments are matched within each image and counts summed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["panoptic_quality"]


def _as_long_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.is_floating_point() or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer panoptic ids, got dtype {x.dtype}")
    return x.detach().cpu().long()


def _segments(panoptic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids, areas = torch.unique(panoptic, return_counts=True)
    return ids, areas


def _match_image(
    pred: torch.Tensor,
    target: torch.Tensor,
    label_divisor: int,
    ignore_index: int,
    crowd_ids: set[int],
    stats: dict[int, list[float]],
) -> None:
    """Add one image's TP/FP/FN counts and matched IoU sum to `stats[class] = [tp, fp, fn, iou]`."""
    pred_void = (pred // label_divisor) == ignore_index  # (H, W)
    target_void = (target // label_divisor) == ignore_index  # (H, W)
    void_label = -1
    pred = torch.where(pred_void, void_label, pred)
    target = torch.where(target_void, void_label, target)

    pred_ids, pred_areas = _segments(pred)
    target_ids, target_areas = _segments(target)
    pred_area = dict(zip(pred_ids.tolist(), pred_areas.tolist()))
    target_area = dict(zip(target_ids.tolist(), target_areas.tolist()))

    offset = (
        int(max(pred_ids.max().item(), 0)) + 2
    )  # pair code = (target + 1) * offset + (pred + 1)
    pairs, overlaps = torch.unique((target + 1) * offset + (pred + 1), return_counts=True)
    intersection = {
        (p // offset - 1, p % offset - 1): a for p, a in zip(pairs.tolist(), overlaps.tolist())
    }

    matched_pred, matched_target = set(), set()
    for (t_id, p_id), inter in intersection.items():
        if t_id == void_label or p_id == void_label or t_id in crowd_ids:
            continue
        if t_id // label_divisor != p_id // label_divisor:
            continue
        union = (
            pred_area[p_id] + target_area[t_id] - inter - intersection.get((void_label, p_id), 0)
        )
        iou = inter / union
        if iou > 0.5:
            entry = stats.setdefault(t_id // label_divisor, [0, 0, 0, 0.0])
            entry[0] += 1
            entry[3] += iou
            matched_pred.add(p_id)
            matched_target.add(t_id)

    for t_id in target_area:
        if t_id != void_label and t_id not in matched_target and t_id not in crowd_ids:
            stats.setdefault(t_id // label_divisor, [0, 0, 0, 0.0])[2] += 1
    crowd_of_class: dict[int, list[int]] = {}  # class -> its crowd segments in this image
    for t_id in crowd_ids & target_area.keys():
        crowd_of_class.setdefault(t_id // label_divisor, []).append(t_id)
    for p_id, area in pred_area.items():
        if p_id == void_label or p_id in matched_pred:
            continue
        same_class_crowd = crowd_of_class.get(p_id // label_divisor, [])
        excused = intersection.get((void_label, p_id), 0) + sum(
            intersection.get((t_id, p_id), 0) for t_id in same_class_crowd
        )
        if excused / area > 0.5:
            continue
        stats.setdefault(p_id // label_divisor, [0, 0, 0, 0.0])[1] += 1


def _scores(tp: int, fp: int, fn: int, iou_sum: float) -> dict:
    denominator = tp + 0.5 * fp + 0.5 * fn
    if denominator == 0:
        return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "tp": tp, "fp": fp, "fn": fn}
    sq = iou_sum / tp if tp > 0 else 0.0
    rq = tp / denominator
    return {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}


def _mean(per_class: dict, classes, key: str) -> float:
    values = [per_class[c][key] for c in classes if not math.isnan(per_class[c][key])]
    return float(sum(values) / len(values)) if values else math.nan


def panoptic_quality(
    pred_panoptic: torch.Tensor | np.ndarray,
    target_panoptic: torch.Tensor | np.ndarray,
    num_classes: int,
    *,
    label_divisor: int = 1000,
    ignore_index: int = 255,
    thing_classes: Iterable[int] | None = None,
    crowd_ids: Iterable[int] | None = None,
) -> dict:
    """PQ, SQ and RQ of predicted panoptic maps against targets (see the module docstring).

    crowd_ids: target panoptic ids (class_id * label_divisor + instance_id) that are crowd regions;
    with N images they apply to every image.

    Returns {"pq", "sq", "rq": float means over classes present in pred or target,
    "per_class": {class_id: {"pq", "sq", "rq", "tp", "fp", "fn"}} for every class in
    [0, num_classes) (NaN scores for absent classes)}. With `thing_classes` (an iterable of class
    ids) the dict also holds "pq_things", "sq_things", "rq_things" and "pq_stuff", "sq_stuff",
    "rq_stuff" (stuff = the other classes).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(label_divisor, int) or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    pred = _as_long_tensor(pred_panoptic, "pred_panoptic")
    target = _as_long_tensor(target_panoptic, "target_panoptic")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred_panoptic has shape {tuple(pred.shape)} but target_panoptic has shape "
            f"{tuple(target.shape)}; they must match"
        )
    if pred.dim() not in (2, 3):
        raise ValueError(
            f"panoptic maps must be (H, W) or (N, H, W), got shape {tuple(pred.shape)}"
        )
    for name, x in (("pred_panoptic", pred), ("target_panoptic", target)):
        classes = torch.unique(x // label_divisor)
        bad = [c for c in classes.tolist() if not (0 <= c < num_classes or c == ignore_index)]
        if bad or (x < 0).any():
            raise ValueError(
                f"{name} has class ids {bad or 'below 0'} (id // label_divisor={label_divisor}) "
                f"outside [0, {num_classes}) and not ignore_index={ignore_index}; "
                f"check num_classes and label_divisor"
            )
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    crowd = {int(i) for i in (crowd_ids if crowd_ids is not None else ())}
    bad_crowd = sorted(i for i in crowd if not 0 <= i // label_divisor < num_classes)
    if bad_crowd:
        raise ValueError(
            f"crowd_ids {bad_crowd} are not segment ids of a class in "
            f"[0, {num_classes}) (id // label_divisor={label_divisor})"
        )

    stats: dict[int, list[float]] = {}
    for p, t in zip(pred, target):
        _match_image(p, t, label_divisor, ignore_index, crowd, stats)

    per_class = {c: _scores(*stats.get(c, [0, 0, 0, 0.0])) for c in range(num_classes)}
    all_classes = list(range(num_classes))
    result = {key: _mean(per_class, all_classes, key) for key in ("pq", "sq", "rq")}
    result["per_class"] = per_class
    if thing_classes is not None:
        things = sorted(int(c) for c in thing_classes)
        if any(not 0 <= c < num_classes for c in things):
            raise ValueError(f"thing_classes {things} must be class ids in [0, {num_classes})")
        stuff = [c for c in all_classes if c not in things]
        for key in ("pq", "sq", "rq"):
            result[f"{key}_things"] = _mean(per_class, things, key)
            result[f"{key}_stuff"] = _mean(per_class, stuff, key)
    return result
