"""Overlap losses: soft Dice (Milletari et al., V-Net, 2016), soft Jaccard, Tversky (Salehi et al.,
2017) and Focal-Tversky (Abraham & Khan, 2019). All take logits.

Soft counts per class c, with p the predicted probabilities and t the one-hot (or 0/1) target,
summed over the pixels of the reduction unit (the whole batch by default, one image with
`per_image=True`) and over valid pixels only (`ignore_index` removes a pixel from p and t):
    TP = sum p t,   FP = sum p (1 - t) = sum p - TP,   FN = sum (1 - p) t = sum t - TP
Scores and losses (smooth s is added to numerator and denominator, eps only guards a 0 denominator):
    Dice     = (2 TP + s) / (2 TP + FP + FN + s) = (2 sum pt + s) / (sum p + sum t + s)
    Jaccard  = (TP + s) / (TP + FP + FN + s)
    Tversky  = (TP + s) / (TP + alpha FP + beta FN + s)   alpha weighs false positives, beta false
               negatives; alpha = beta = 0.5 gives Dice, alpha = beta = 1 gives Jaccard
    loss = 1 - score;   Focal-Tversky loss = (1 - Tversky) ** gamma

Modes: "binary" (sigmoid; logits (N, 1, H, W), target (N, H, W) or (N, 1, H, W) of 0/1),
"multiclass" (softmax over K channels; target (N, H, W) int64 made one-hot), "multilabel" (sigmoid
per channel; target (N, K, H, W) of 0/1).

Absent-class policy, `absent="skip"` (default): a class with no target pixel in the reduction unit
is left out of the mean over classes, so a model is neither rewarded nor punished by Dice for it
(with smooth = 0 its score would be 0 / sum p = 0, a constant loss of 1 with no gradient). When
every class is absent (an empty binary mask) the loss is 0: Dice alone gives no signal on empty
images, one reason to add BCE/CE. `absent="include"` keeps them in the mean; then use smooth > 0,
which makes the loss push their predicted mass to 0 ((s) / (sum p + s) -> 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import binary_inputs, check_mode, multiclass_inputs

__all__ = [
    "soft_overlap_counts",
    "dice_loss",
    "jaccard_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
]

_ABSENT = ("skip", "include")
_REDUCTIONS = ("mean", "none")


def soft_overlap_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    ignore_index: int | None = 255,
    per_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft TP, FP, FN and target pixel count per class: four tensors (K,), or (N, K) per image."""
    check_mode(mode)
    if mode == "multiclass":
        target, valid = multiclass_inputs(logits, target, ignore_index)  # (N, *S)
        probs = logits.softmax(dim=1)  # (N, K, *S)
        labels = torch.where(valid, target, 0)
        onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probs.dtype)  # (N, K, *S)
        valid = valid.unsqueeze(1).to(probs.dtype)  # (N, 1, *S)
    else:
        logits, onehot, valid = binary_inputs(
            logits, target, ignore_index, multilabel=mode == "multilabel"
        )
        probs = torch.sigmoid(logits)  # (N, K, *S)
        valid = valid.to(probs.dtype)
    probs = probs * valid
    onehot = onehot * valid
    dims = tuple(range(2, logits.dim())) if per_image else (0,) + tuple(range(2, logits.dim()))
    tp = (probs * onehot).sum(dims)
    target_count = onehot.sum(dims)
    fp = probs.sum(dims) - tp
    fn = target_count - tp
    return tp, fp, fn, target_count


def _reduce(
    loss: torch.Tensor, target_count: torch.Tensor, absent: str, reduction: str
) -> torch.Tensor:
    if absent not in _ABSENT:
        raise ValueError(f"absent must be one of {_ABSENT}, got {absent!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if absent == "skip":
        present = (target_count > 0).to(loss.dtype)
        loss = loss * present
        if reduction == "none":
            return loss
        return loss.sum() / present.sum().clamp(min=1)
    return loss if reduction == "none" else loss.mean()


def _check_smooth(smooth: float, eps: float) -> None:
    if smooth < 0 or eps < 0:
        raise ValueError(f"smooth and eps must be >= 0, got smooth={smooth}, eps={eps}")


def _tversky_per_class(logits, target, mode, alpha, beta, smooth, eps, ignore_index, per_image):
    """(1 - Tversky) per class and the target pixel counts, both (K,) or (N, K)."""
    _check_smooth(smooth, eps)
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    tp, fp, fn, target_count = soft_overlap_counts(logits, target, mode, ignore_index, per_image)
    score = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp(min=eps)
    return 1 - score, target_count


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 0.0,
    eps: float = 1e-7,
    ignore_index: int | None = 255,
    per_image: bool = False,
    absent: str = "skip",
    reduction: str = "mean",
) -> torch.Tensor:
    """1 - Tversky index (module docstring); a scalar, or per-class losses if reduction="none"."""
    loss, target_count = _tversky_per_class(
        logits, target, mode, alpha, beta, smooth, eps, ignore_index, per_image
    )
    return _reduce(loss, target_count, absent, reduction)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    smooth: float = 0.0,
    eps: float = 1e-7,
    ignore_index: int | None = 255,
    per_image: bool = False,
    absent: str = "skip",
    reduction: str = "mean",
) -> torch.Tensor:
    """1 - soft Dice = 1 - (2 sum pt + s) / (sum p + sum t + s) per class, averaged over classes."""
    _check_smooth(smooth, eps)
    tp, fp, fn, target_count = soft_overlap_counts(logits, target, mode, ignore_index, per_image)
    score = (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp(min=eps)
    return _reduce(1 - score, target_count, absent, reduction)


def jaccard_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    smooth: float = 0.0,
    eps: float = 1e-7,
    ignore_index: int | None = 255,
    per_image: bool = False,
    absent: str = "skip",
    reduction: str = "mean",
) -> torch.Tensor:
    """1 - soft Jaccard (IoU) = 1 - (TP + s) / (TP + FP + FN + s) per class, mean over classes."""
    return tversky_loss(
        logits, target, mode, 1.0, 1.0, smooth, eps, ignore_index, per_image, absent, reduction
    )


def focal_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth: float = 1.0,
    eps: float = 1e-7,
    ignore_index: int | None = 255,
    per_image: bool = False,
    absent: str = "skip",
) -> torch.Tensor:
    """Mean over classes of (1 - Tversky) ** gamma.

    The paper writes the exponent as 1/gamma with gamma = 4/3; here `gamma` is the exponent itself,
    so the paper's setting is gamma = 0.75. gamma < 1 raises the loss of classes that are already
    fairly good, gamma = 1 gives the Tversky loss. smooth defaults to 1 so that the power has a
    finite gradient at a perfect score.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    loss, target_count = _tversky_per_class(
        logits, target, mode, alpha, beta, smooth, eps, ignore_index, per_image
    )
    return _reduce(loss.clamp(min=0) ** gamma, target_count, absent, "mean")


class DiceLoss(nn.Module):
    """Module form of `dice_loss`: stores the settings, `forward(logits, target)` calls it."""

    def __init__(
        self,
        mode: str = "multiclass",
        smooth: float = 0.0,
        eps: float = 1e-7,
        ignore_index: int | None = 255,
        per_image: bool = False,
        absent: str = "skip",
    ):
        super().__init__()
        check_mode(mode)
        self.mode, self.smooth, self.eps = mode, smooth, eps
        self.ignore_index, self.per_image, self.absent = ignore_index, per_image, absent

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(
            logits,
            target,
            self.mode,
            self.smooth,
            self.eps,
            self.ignore_index,
            self.per_image,
            self.absent,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, smooth={self.smooth}, ignore_index={self.ignore_index}"


class JaccardLoss(DiceLoss):
    """Module form of `jaccard_loss` (same settings as DiceLoss)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return jaccard_loss(
            logits,
            target,
            self.mode,
            self.smooth,
            self.eps,
            self.ignore_index,
            self.per_image,
            self.absent,
        )


class TverskyLoss(nn.Module):
    """Module form of `tversky_loss` (alpha weighs false positives, beta false negatives)."""

    def __init__(
        self,
        mode: str = "multiclass",
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 0.0,
        ignore_index: int | None = 255,
        per_image: bool = False,
        absent: str = "skip",
    ):
        super().__init__()
        check_mode(mode)
        self.mode, self.alpha, self.beta, self.smooth = mode, alpha, beta, smooth
        self.ignore_index, self.per_image, self.absent = ignore_index, per_image, absent

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(
            logits,
            target,
            self.mode,
            self.alpha,
            self.beta,
            self.smooth,
            ignore_index=self.ignore_index,
            per_image=self.per_image,
            absent=self.absent,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, alpha={self.alpha}, beta={self.beta}, smooth={self.smooth}"


class FocalTverskyLoss(TverskyLoss):
    """Module form of `focal_tversky_loss`."""

    def __init__(
        self,
        mode: str = "multiclass",
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
        per_image: bool = False,
        absent: str = "skip",
    ):
        super().__init__(mode, alpha, beta, smooth, ignore_index, per_image, absent)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_tversky_loss(
            logits,
            target,
            self.mode,
            self.alpha,
            self.beta,
            self.gamma,
            self.smooth,
            ignore_index=self.ignore_index,
            per_image=self.per_image,
            absent=self.absent,
        )
