"""Segmentation metrics: confusion matrix and pixel metrics, per-image medical metrics and
surface distances, boundary metrics, panoptic quality.

    from course_lib import metrics
    cm = metrics.ConfusionMatrix(num_classes=21, ignore_index=255)
    cm.update(logits, target)
    metrics.mean_iou(cm.compute())

Conventions (absent classes give NaN and are left out of means; rows of a confusion matrix are
the target) are documented in each submodule.
"""

from course_lib.metrics.boundary import boundary_band, boundary_f1, boundary_iou
from course_lib.metrics.confusion import ConfusionMatrix, confusion_matrix
from course_lib.metrics.matrix_metrics import (
    dice_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_class_accuracy,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    summarize,
)
from course_lib.metrics.panoptic import panoptic_quality
from course_lib.metrics.surface import (
    average_surface_distance,
    dice_per_image,
    hausdorff_distance,
    iou_per_image,
    mask_surface,
    surface_distances,
)

__all__ = [
    "confusion_matrix",
    "ConfusionMatrix",
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
    "dice_per_image",
    "iou_per_image",
    "mask_surface",
    "surface_distances",
    "hausdorff_distance",
    "average_surface_distance",
    "boundary_band",
    "boundary_iou",
    "boundary_f1",
    "panoptic_quality",
]
