"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    FL(p_t) = -alpha_t (1 - p_t) ** gamma * log(p_t)

p_t is the probability of the true class: sigmoid for mode="binary" (logits (N, 1, H, W), target
(N, H, W) or (N, 1, H, W) of 0/1) and softmax for mode="multiclass" (logits (N, K, H, W), target
(N, H, W) int64). The factor (1 - p_t) ** gamma shrinks the loss of easy, well classified pixels
so the many easy background pixels do not drown the few hard ones.

alpha: binary, a float in [0, 1] weighting positives (alpha) against negatives (1 - alpha), as in
the paper and `torchvision.ops.sigmoid_focal_loss` (which uses alpha = 0.25 by default); None
for no weighting. Multiclass, a float (a constant factor) or a (K,) tensor of per-class weights.
Reduction "mean" is the plain mean over the valid (not ignored) pixels, so with gamma = 0 and
alpha = None the multiclass focal loss equals cross-entropy, and the binary one equals BCE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import binary_inputs, check_mode, check_reduction, multiclass_inputs

__all__ = ["focal_loss", "FocalLoss"]


def _reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    loss = loss * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    alpha: float | torch.Tensor | None = None,
    gamma: float = 2.0,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss from logits (see the module docstring); reduction "mean" | "sum" | "none"."""
    check_mode(mode)
    check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if mode == "multiclass":
        target, valid = multiclass_inputs(logits, target, ignore_index)  # (N, *S)
        labels = torch.where(valid, target, 0).unsqueeze(1)  # (N, 1, *S)
        log_pt = logits.log_softmax(dim=1).gather(1, labels).squeeze(1)  # (N, *S)
        loss = -((1 - log_pt.exp()) ** gamma) * log_pt
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if alpha.dim() == 1:
                if alpha.shape[0] != logits.shape[1]:
                    raise ValueError(
                        f"alpha has {alpha.shape[0]} entries but logits have "
                        f"{logits.shape[1]} classes; give one weight per class or a float"
                    )
                alpha = alpha[labels.squeeze(1)]  # (N, *S) alpha of the true class
            loss = alpha * loss
        return _reduce(loss, valid.to(loss.dtype), reduction)
    if mode == "multilabel":
        logits_, target_, valid = binary_inputs(logits, target, ignore_index, multilabel=True)
    else:
        logits_, target_, valid = binary_inputs(logits, target, ignore_index)
    bce = F.binary_cross_entropy_with_logits(logits_, target_, reduction="none")  # -log p_t
    p = torch.sigmoid(logits_)
    p_t = p * target_ + (1 - p) * (1 - target_)
    loss = bce * (1 - p_t) ** gamma
    if alpha is not None:
        alpha = float(alpha)
        if not 0 <= alpha <= 1:
            raise ValueError(f"binary alpha must be in [0, 1] or None, got {alpha}")
        loss = (alpha * target_ + (1 - alpha) * (1 - target_)) * loss
    return _reduce(loss, valid.to(loss.dtype), reduction)


class FocalLoss(nn.Module):
    """Module form of `focal_loss`."""

    def __init__(
        self,
        mode: str = "multiclass",
        alpha: float | torch.Tensor | None = None,
        gamma: float = 2.0,
        ignore_index: int | None = 255,
    ):
        super().__init__()
        check_mode(mode)
        self.mode, self.gamma, self.ignore_index = mode, gamma, ignore_index
        self.register_buffer("alpha", alpha if isinstance(alpha, torch.Tensor) else None)
        self.alpha_value = None if isinstance(alpha, torch.Tensor) else alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha if self.alpha is not None else self.alpha_value
        return focal_loss(logits, target, self.mode, alpha, self.gamma, self.ignore_index)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, gamma={self.gamma}, ignore_index={self.ignore_index}"
