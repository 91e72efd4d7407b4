"""Exercise 08: panoptic maps from two networks, and panoptic quality.

Three functions that follow notebook 08:
1. `merge_panoptic`: instance predictions (a Mask R-CNN) and a semantic map (a segmentation
   network) -> one panoptic map, with the usual rules: score order, score threshold, overlap
   threshold, stuff area threshold, void.
2. `match_segments`: pair predicted and ground-truth segments for PQ (same class, IoU > 0.5,
   void pixels left out of the union).
3. `panoptic_quality`: PQ, SQ and RQ from those matches.

A panoptic map is an (H, W) int64 tensor: id = class_id * label_divisor + instance_id. Stuff
segments have instance_id 0; void pixels have class ignore_index (id ignore_index * label_divisor).
Check your work with `python -m course_grader ex08`.
"""

from __future__ import annotations

import math

import torch


def merge_panoptic(
    semantic: torch.Tensor,
    masks: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    stuff_classes: list[int],
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area_threshold: int = 64,
    label_divisor: int = 1000,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Merge M instance masks and a semantic map into an (H, W) int64 panoptic map.

    semantic (H, W) int64 class ids; masks (M, H, W) bool; scores (M,) float; labels (M,) int64
    class ids of the instances. Rules, in this order:
    1. Start with every pixel void: ignore_index * label_divisor.
    2. Visit the instances by decreasing score (equal scores in the given order); skip those with
       score < score_threshold and those with an empty mask. If more than `overlap_threshold` of
       an instance's mask is already taken by earlier instances, skip it; otherwise it gets the
       next instance id (1, 2, 3, ... in the order instances are kept) and only its pixels that
       are still free: id = label * label_divisor + instance_id.
    3. For each class c in `stuff_classes`, in the given order: the free pixels where
       semantic == c become c * label_divisor, if there are at least max(stuff_area_threshold, 1)
       of them (fewer stay void).
    Pixels that the semantic map calls a thing class and no kept instance covers stay void.
    """
    # HINT: keep a bool (H, W) map `taken`; torch.argsort(scores, descending=True, stable=True) gives the order.
    # HINT: the overlap fraction is (mask & taken).sum() / mask.sum(); the free pixels are
    # HINT: mask & ~taken. Give them their id with boolean indexing: panoptic[free] = ...
    raise NotImplementedError


def match_segments(
    pred_panoptic: torch.Tensor,
    target_panoptic: torch.Tensor,
    label_divisor: int = 1000,
    ignore_index: int = 255,
) -> list[tuple[int, int, float]]:
    """The matched (pred_id, target_id, iou) pairs of two (H, W) panoptic maps, sorted by target_id.

    A segment is the set of pixels that carry one id; segments whose class (id // label_divisor)
    is ignore_index are void, never matched. A predicted and a target segment match when they
    have the same class and IoU > 0.5, where
        IoU = |P & T| / (|P| + |T| - |P & T| - |P & void target pixels|)
    (predicted pixels on void ground truth are not counted against the prediction).
    With IoU > 0.5 a segment can match at most one other segment, so no assignment is needed.
    """
    # HINT: torch.unique(x, return_counts=True) gives segment ids and areas; loop over the pairs of
    # HINT: (pred id, target id) of the same class, non-void, that overlap at all.
    raise NotImplementedError


def panoptic_quality(
    pred_panoptic: torch.Tensor,
    target_panoptic: torch.Tensor,
    num_classes: int,
    label_divisor: int = 1000,
    ignore_index: int = 255,
) -> dict[str, float]:
    """{"pq", "sq", "rq"}: means over the classes that have TP + FP + FN > 0.

    Per class c: TP = matched pairs of class c (use `match_segments`); FN = unmatched target
    segments of class c; FP = unmatched predicted segments of class c, except those that lie
    more than half on void target pixels (not counted at all). Then
        SQ_c = (sum of matched IoUs) / TP (0 when TP = 0),  RQ_c = TP / (TP + FP/2 + FN/2),
        PQ_c = SQ_c * RQ_c.
    Void segments (class ignore_index) are neither TP, FP nor FN. Classes run over 0..num_classes-1;
    if no class has a segment, every value is NaN.
    """
    # HINT: count tp, fp, fn and the IoU sum per class in dicts, then average the per-class scores.
    raise NotImplementedError
