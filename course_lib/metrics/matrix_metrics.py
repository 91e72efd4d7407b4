"""Pixel metrics computed from a confusion matrix (rows = target, columns = prediction).

For class c with TP = cm[c, c], FN = row sum - TP, FP = column sum - TP:
    IoU_c  = TP / (TP + FP + FN)           (Jaccard index)
    Dice_c = 2 TP / (2 TP + FP + FN)       (F1 score)
    precision_c = TP / (TP + FP),  recall_c = TP / (TP + FN)

Absent-class policy (the same in every function here, and in the notebooks):
- a class absent from both the target and the prediction has a 0/0 score: NaN, and is left out of
  every mean (`mean_iou` is a NaN-aware mean). Counting it as 1 would reward a model for classes
  the data never shows; counting it as 0 would punish it for them.
- a class absent from the target but predicted somewhere has IoU = Dice = 0 (all false positives).
- a mean over classes that are all NaN is NaN.

Per-class results are float64 tensors (K,) on the matrix's device; means are Python floats.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from course_lib.metrics.confusion import ConfusionMatrix

__all__ = [
    "iou_per_class",
    "mean_iou",
    "dice_per_class",
    "mean_dice",
    "precision_per_class",
    "recall_per_class",
    "pixel_accuracy",
    "mean_class_accuracy",
    "frequency_weighted_iou",
    "summarize",
]


def _as_matrix(cm) -> torch.Tensor:
    """Accept a (K, K) tensor, array or ConfusionMatrix; return a float64 tensor."""
    if hasattr(cm, "compute") and hasattr(cm, "num_classes"):
        cm = cm.compute()
    if isinstance(cm, np.ndarray):
        cm = torch.from_numpy(cm)
    if not isinstance(cm, torch.Tensor):
        raise TypeError(
            f"cm must be a (K, K) tensor, array or ConfusionMatrix, got {type(cm).__name__}"
        )
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {tuple(cm.shape)}")
    cm = cm.to(torch.float64)
    if (cm < 0).any():
        raise ValueError("cm has negative counts; expected a confusion matrix of pixel counts")
    return cm


def _nanmean(values: torch.Tensor) -> float:
    """Mean over the non-NaN entries; NaN when there are none (no warning, no error)."""
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator with NaN where the denominator is 0 (a 0/0 score is undefined)."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.nan)


def iou_per_class(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> torch.Tensor:
    """IoU of every class, (K,) float64; NaN for classes absent from target and prediction."""
    cm = _as_matrix(cm)
    tp = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp  # (K,) TP + FP + FN
    return _ratio(tp, union)


def mean_iou(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> float:
    """mIoU: mean of `iou_per_class` over the classes that are not NaN (see module docstring)."""
    return _nanmean(iou_per_class(cm))


def dice_per_class(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> torch.Tensor:
    """Dice (F1) of every class, (K,) float64; NaN for classes absent from target and prediction."""
    cm = _as_matrix(cm)
    tp = cm.diagonal()
    return _ratio(2 * tp, cm.sum(dim=0) + cm.sum(dim=1))


def mean_dice(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> float:
    """Mean of `dice_per_class` over the classes that are not NaN."""
    return _nanmean(dice_per_class(cm))


def precision_per_class(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> torch.Tensor:
    """TP / (TP + FP) per class; NaN for classes never predicted."""
    cm = _as_matrix(cm)
    return _ratio(cm.diagonal(), cm.sum(dim=0))


def recall_per_class(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> torch.Tensor:
    """TP / (TP + FN) per class (the per-class accuracy); NaN for classes absent from the target."""
    cm = _as_matrix(cm)
    return _ratio(cm.diagonal(), cm.sum(dim=1))


def pixel_accuracy(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> float:
    """Fraction of counted pixels whose class is right; NaN for an empty matrix.

    On imbalanced data this is dominated by the largest class: predicting "background" everywhere
    scores 0.99 when 99% of the pixels are background.
    """
    cm = _as_matrix(cm)
    total = cm.sum()
    return float(cm.diagonal().sum() / total) if total > 0 else math.nan


def mean_class_accuracy(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> float:
    """Mean of `recall_per_class` over the classes present in the target."""
    return _nanmean(recall_per_class(cm))


def frequency_weighted_iou(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> float:
    """Sum over classes of (target frequency x IoU), classes absent from the target weigh 0."""
    cm = _as_matrix(cm)
    total = cm.sum()
    if total == 0:
        return math.nan
    frequency = cm.sum(dim=1) / total  # (K,)
    iou = torch.nan_to_num(iou_per_class(cm), nan=0.0)
    return float((frequency * iou).sum())


def summarize(cm: torch.Tensor | np.ndarray | ConfusionMatrix) -> dict:
    """Every metric of this module in one dict (per-class entries as Python lists)."""
    return {
        "miou": mean_iou(cm),
        "iou_per_class": iou_per_class(cm).tolist(),
        "dice": mean_dice(cm),
        "dice_per_class": dice_per_class(cm).tolist(),
        "precision_per_class": precision_per_class(cm).tolist(),
        "recall_per_class": recall_per_class(cm).tolist(),
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "frequency_weighted_iou": frequency_weighted_iou(cm),
    }
