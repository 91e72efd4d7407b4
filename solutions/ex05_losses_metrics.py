"""Exercise 05: losses and metrics, with the conventions spelled out.

Four functions from notebook 05:
1. `soft_dice_loss`: the multiclass soft Dice loss from logits.
2. `focal_loss`: the multiclass focal loss from logits.
3. `confusion_matrix`: count (target, prediction) pairs with one bincount, skipping ignored pixels.
4. `iou_per_class` and `mean_iou`: IoU from the confusion matrix with the NaN policy.

Shapes: logits (N, K, H, W) float, target (N, H, W) int64 with values in [0, K) or `ignore_index`,
predictions (N, H, W) int64. Check your work with `python -m course_grader ex05`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """Multiclass soft Dice loss (a scalar tensor that autograd can differentiate).

    p = softmax(logits) over the K channels, t = one-hot target (N, K, H, W). For each class c,
    with sums over all pixels of the batch that are not ignored:
        Dice_c = 2 * sum(p_c * t_c) / max(sum(p_c) + sum(t_c), eps)
    The loss is 1 - the mean of Dice_c over the classes PRESENT in the (non-ignored) target; classes
    with no target pixel are left out. When no class is present (every pixel ignored) return a zero
    that still depends on logits (e.g. `logits.sum() * 0`).
    Pixels whose target equals `ignore_index` count neither in p nor in t.
    """
    # BEGIN SOLUTION
    # HINT: valid = target != ignore_index (all True when it is None), as a float (N, 1, H, W) mask.
    # HINT: F.one_hot needs labels in [0, K): replace ignored labels by 0 first, then mask p and t.
    # HINT: sum over dims (0, 2, 3) to get per-class sums (K,); `present = t_sum > 0` picks classes.
    num_classes = logits.shape[1]
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    labels = torch.where(valid, target, torch.zeros_like(target))
    mask = valid.unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
    probs = logits.softmax(dim=1) * mask  # (N, K, H, W)
    onehot = (
        F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(logits.dtype) * mask
    )  # (N, K, H, W)
    intersection = (probs * onehot).sum(dim=(0, 2, 3))  # (K,)
    target_sum = onehot.sum(dim=(0, 2, 3))  # (K,)
    dice = 2 * intersection / (probs.sum(dim=(0, 2, 3)) + target_sum).clamp(min=eps)  # (K,)
    present = target_sum > 0
    if not present.any():
        return logits.sum() * 0.0
    return 1 - dice[present].mean()
    # END SOLUTION


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, ignore_index: int | None = None
) -> torch.Tensor:
    """Multiclass focal loss (Lin et al., 2017), a scalar tensor.

    For each pixel, p_t = softmax(logits)[true class] and the loss is
    -(1 - p_t) ** gamma * log(p_t).
    Return the mean over the pixels whose target is not `ignore_index` (0 when every pixel is
    ignored). With gamma = 0 this is exactly the cross-entropy.
    """
    # BEGIN SOLUTION
    # HINT: log p_t = logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1); p_t = exp.
    # HINT: use log_softmax rather than log(softmax): it stays finite for very confident logits.
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    labels = torch.where(valid, target, torch.zeros_like(target))
    log_pt = logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)  # (N, H, W)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt  # (N, H, W)
    weight = valid.to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp(min=1)
    # END SOLUTION


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(K, K) int64 matrix: entry [t, p] counts pixels with target class t predicted as class p.

    `pred` and `target` are label tensors of the same shape. Pixels whose target equals
    `ignore_index` are not counted. Use a single torch.bincount (no Python loop over pixels or
    classes).
    """
    # BEGIN SOLUTION
    # HINT: flatten both. Only when ignore_index is not None, drop the pixels whose target is
    # HINT: ignore_index (one boolean mask indexes both); target * num_classes + pred then
    # HINT: encodes each (target, pred) pair as one integer, `index`.
    # HINT: torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes).
    target = target.reshape(-1)
    pred = pred.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        target, pred = target[keep], pred[keep]
    index = target * num_classes + pred
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)
    # END SOLUTION


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """IoU of each class from a confusion matrix (rows = target): (K,) float64.

    IoU_c = TP / (TP + FP + FN) with TP = cm[c, c], FN = row sum - TP, FP = column sum - TP.
    A class absent from both target and prediction (TP + FP + FN = 0) gets NaN, not 0 or 1.
    """
    # BEGIN SOLUTION
    # HINT: cm.diagonal(), cm.sum(0) and cm.sum(1) give TP, TP + FP and TP + FN for all classes.
    # HINT: torch.where(union > 0, tp / union, torch.nan) avoids dividing by zero.
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    # END SOLUTION


def mean_iou(cm: torch.Tensor) -> float:
    """mIoU as a Python float: the mean of `iou_per_class(cm)` over the classes that are not NaN.

    Returns math.nan when every class is NaN (an empty matrix).
    """
    # BEGIN SOLUTION
    # HINT: iou[~torch.isnan(iou)] keeps the defined classes; check it is not empty before .mean().
    iou = iou_per_class(cm)
    defined = iou[~torch.isnan(iou)]
    return float(defined.mean()) if defined.numel() else math.nan
    # END SOLUTION
