"""Boundary metrics for binary masks: Boundary IoU and the boundary F-score.

Region metrics barely move when an object's outline is wrong by a few pixels on a large object;
boundary metrics look only near the contours.

Boundary IoU (Cheng et al., "Boundary IoU", CVPR 2021): the band of each mask made of its pixels
within distance d of its contour, G_d and P_d, and IoU(G_d, P_d). Here the band is measured with
the Euclidean distance to the nearest pixel outside the mask (pixels outside the image count as
outside), and d = max(1, round(dilation_ratio x image diagonal)) unless `width` is given.

Boundary F-score (Martin et al., 2004; DAVIS, Perazzi et al., 2016): contours are the boundary
pixels of each mask (as in `surface.mask_surface`); precision is the fraction of predicted contour
pixels within `tolerance` pixels of the target contour, recall the converse, F = 2PR / (P + R).

Empty-mask policy: both masks empty -> `empty_score` (1.0 by default); one empty -> 0.
Inputs: binary masks (H, W), tensors or arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from course_lib.metrics.surface import _as_numpy_mask, mask_surface

__all__ = ["boundary_band", "boundary_iou", "boundary_f1"]


def boundary_band(mask: torch.Tensor | np.ndarray, width: float) -> np.ndarray:
    """Pixels of `mask` whose distance to the nearest pixel outside it (or the image) <= width."""
    mask = _as_numpy_mask(mask, "mask")
    padded = np.pad(mask, 1, constant_values=False)
    inside_distance = ndimage.distance_transform_edt(padded)[(slice(1, -1),) * mask.ndim]
    return mask & (inside_distance <= width)


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred_np, target_np = _as_numpy_mask(pred, "pred"), _as_numpy_mask(target, "target")
    if pred_np.shape != target_np.shape:
        raise ValueError(f"pred has shape {pred_np.shape} but target has shape {target_np.shape}")
    return pred_np, target_np


def boundary_iou(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    dilation_ratio: float = 0.02,
    width: float | None = None,
    empty_score: float = 1.0,
) -> float:
    """IoU of the inner boundary bands of prediction and target (see the module docstring)."""
    pred_np, target_np = _pair(pred, target)
    if width is None:
        if dilation_ratio <= 0:
            raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
        width = max(1, round(dilation_ratio * math.hypot(*pred_np.shape)))
    pred_band, target_band = boundary_band(pred_np, width), boundary_band(target_np, width)
    union = (pred_band | target_band).sum()
    if union == 0:
        return float(empty_score)
    return float((pred_band & target_band).sum() / union)


def boundary_f1(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    tolerance: float = 2.0,
    empty_score: float = 1.0,
) -> float:
    """Boundary F-score: contours matched within `tolerance` pixels (see the module docstring)."""
    pred_np, target_np = _pair(pred, target)
    if not pred_np.any() and not target_np.any():
        return float(empty_score)
    if not pred_np.any() or not target_np.any():
        return 0.0
    pred_contour, target_contour = mask_surface(pred_np), mask_surface(target_np)
    to_target = ndimage.distance_transform_edt(~target_contour)
    to_pred = ndimage.distance_transform_edt(~pred_contour)
    precision = float((to_target[pred_contour] <= tolerance).mean())
    recall = float((to_pred[target_contour] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
