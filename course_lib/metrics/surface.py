"""Per-image overlap and surface-distance metrics for binary masks, as used in medical imaging.

Per-image Dice and IoU: one score per image (N,), so that a small lesion counts as much as a large
one. Empty-mask policy: when prediction and target are both empty the score is `empty_score`
(1.0 by default: the model correctly found nothing; pass float("nan") to leave such images out
of a nanmean); when only one is empty the score is 0.

Surface distances follow the conventions of the medical-imaging toolkits (MONAI, medpy,
DeepMind's surface-distance): the surface of a mask is its boundary pixels, the pixels of the mask
with a 4-neighbour (face neighbour in 3-D) outside the mask or outside the image; distances are
Euclidean between pixel centres, scaled by the pixel `spacing` (one value per axis). For each
surface pixel of one mask, its distance to the closest surface pixel of the other mask:
- Hausdorff distance: the largest such distance in both directions, max(d(P->T), d(T->P)).
- HD95 (`percentile=95`): the percentile is taken per direction, then the max of the two (the
  MONAI convention; medpy takes one percentile of both directions pooled).
- ASSD: the mean over the surface pixels of both masks,
  (sum d(P->T) + sum d(T->P)) / (|S_P| + |S_T|).
Empty masks: both empty -> 0.0 (nothing to disagree on); exactly one empty -> inf (the distance
to an empty set). Report such cases separately rather than averaging an inf.

Inputs are binary masks (bool or 0/1) of shape (H, W) or (D, H, W), tensors (any device) or
arrays; distance maps are computed on the host with `scipy.ndimage.distance_transform_edt`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "dice_per_image",
    "iou_per_image",
    "mask_surface",
    "surface_distances",
    "hausdorff_distance",
    "average_surface_distance",
]


def _binary_batch(mask, name: str) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point():
            raise TypeError(
                f"{name} must be a binary mask (bool or 0/1 integers), got dtype {mask.dtype}; "
                f"threshold probabilities first, e.g. probs > 0.5"
            )
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            raise ValueError(
                f"{name} has values {torch.unique(mask[bad]).tolist()[:10]}; expected 0/1"
            )
        mask = mask.bool()
    return mask


def _per_image_ratio(pred, target, empty_score: float, jaccard: bool) -> torch.Tensor:
    pred = _binary_batch(pred, "pred")
    target = _binary_batch(target, "target")
    if pred.shape != target.shape or pred.dim() < 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be binary masks "
            f"of the same shape (N, H, W)"
        )
    dims = tuple(range(1, pred.dim()))
    intersection = (pred & target).sum(dims).double()  # (N,)
    total = pred.sum(dims).double() + target.sum(dims).double()  # (N,)
    score = intersection / (total - intersection) if jaccard else 2 * intersection / total
    return torch.where(
        total > 0, score, torch.tensor(empty_score, dtype=torch.float64, device=score.device)
    )


def dice_per_image(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, empty_score: float = 1.0
) -> torch.Tensor:
    """Dice of each image, (N,) float64, from binary masks (N, H, W); empty-mask policy above."""
    return _per_image_ratio(pred, target, empty_score, jaccard=False)


def iou_per_image(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, empty_score: float = 1.0
) -> torch.Tensor:
    """IoU of each image, (N,) float64, from binary masks (N, H, W); empty-mask policy above."""
    return _per_image_ratio(pred, target, empty_score, jaccard=True)


def _as_numpy_mask(mask, name: str) -> np.ndarray:
    mask = _binary_batch(mask, name)
    if mask.dim() not in (2, 3):
        raise ValueError(
            f"{name} must be one mask (H, W) or (D, H, W), got shape {tuple(mask.shape)}"
        )
    return mask.cpu().numpy()


def mask_surface(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Boundary pixels: mask pixels with a face neighbour outside the mask or the image."""
    mask = _as_numpy_mask(mask, "mask")
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred-surface -> target-surface and target-surface -> pred-surface (1-D arrays).

    Both masks must be non-empty (see `hausdorff_distance` for the empty-mask policy).
    """
    pred_np, target_np = _as_numpy_mask(pred, "pred"), _as_numpy_mask(target, "target")
    if pred_np.shape != target_np.shape:
        raise ValueError(f"pred has shape {pred_np.shape} but target has shape {target_np.shape}")
    if spacing is not None and len(spacing) != pred_np.ndim:
        raise ValueError(f"spacing {tuple(spacing)} must have one value per axis ({pred_np.ndim})")
    if not pred_np.any() or not target_np.any():
        raise ValueError("surface_distances needs two non-empty masks")
    pred_surface, target_surface = mask_surface(pred_np), mask_surface(target_np)
    to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing)  # distance to S_T
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)  # distance to S_P
    return to_target[pred_surface], to_pred[target_surface]


def _empty_case(pred, target) -> float | None:
    pred_any = bool(_binary_batch(pred, "pred").any())
    target_any = bool(_binary_batch(target, "target").any())
    if not pred_any and not target_any:
        return 0.0
    if pred_any != target_any:
        return math.inf
    return None


def hausdorff_distance(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    percentile: float | None = None,
    spacing: Sequence[float] | None = None,
) -> float:
    """Symmetric Hausdorff distance; `percentile=95` gives HD95 (per direction, then the max)."""
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100] or None, got {percentile}")
    empty = _empty_case(pred, target)
    if empty is not None:
        return empty
    forward, backward = surface_distances(pred, target, spacing)
    if percentile is None:
        return float(max(forward.max(), backward.max()))
    return float(max(np.percentile(forward, percentile), np.percentile(backward, percentile)))


def average_surface_distance(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: Sequence[float] | None = None,
) -> float:
    """ASSD: mean distance over the surface pixels of both masks (symmetric)."""
    empty = _empty_case(pred, target)
    if empty is not None:
        return empty
    forward, backward = surface_distances(pred, target, spacing)
    return float((forward.sum() + backward.sum()) / (forward.size + backward.size))
