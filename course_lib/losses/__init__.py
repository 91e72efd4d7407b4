"""Segmentation losses, all computed from logits: functions do the work, modules store settings.

    from course_lib import losses
    loss = losses.dice_loss(logits, target, mode="multiclass")       # functional
    criterion = losses.CEDiceLoss(ce_weight=1.0, dice_weight=1.0)    # module

Files by family: `cross_entropy` (CE, BCE, class weights), `overlap` (Dice, Jaccard, Tversky,
Focal-Tversky), `focal`, `lovasz`, `combined`. Every function checks its inputs: logits
(N, K, H, W) float against targets (N, H, W) int64 (multiclass) or 0/1 targets (N, H, W) /
(N, 1, H, W) (binary), label values in [0, K) or `ignore_index` (255 by default).
"""

from course_lib.losses.combined import BCEDiceLoss, CEDiceLoss
from course_lib.losses.cross_entropy import (
    CrossEntropyLoss,
    binary_cross_entropy,
    class_weights,
    cross_entropy,
)
from course_lib.losses.focal import FocalLoss, focal_loss
from course_lib.losses.lovasz import LovaszLoss, lovasz_grad, lovasz_hinge, lovasz_softmax
from course_lib.losses.overlap import (
    DiceLoss,
    FocalTverskyLoss,
    JaccardLoss,
    TverskyLoss,
    dice_loss,
    focal_tversky_loss,
    jaccard_loss,
    soft_overlap_counts,
    tversky_loss,
)

__all__ = [
    "cross_entropy",
    "binary_cross_entropy",
    "class_weights",
    "CrossEntropyLoss",
    "soft_overlap_counts",
    "dice_loss",
    "jaccard_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "focal_loss",
    "FocalLoss",
    "lovasz_grad",
    "lovasz_softmax",
    "lovasz_hinge",
    "LovaszLoss",
    "BCEDiceLoss",
    "CEDiceLoss",
]
