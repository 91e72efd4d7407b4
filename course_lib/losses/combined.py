"""Combined losses: a pixel-wise term (BCE or CE) plus a region term (soft Dice).

    BCEDiceLoss (binary):     bce_weight * BCE + dice_weight * Dice loss
    CEDiceLoss (multiclass):  ce_weight * CE + dice_weight * Dice loss

The pixel term gives every pixel a well-scaled gradient and a signal on empty masks; the Dice term
optimises the overlap directly and is insensitive to how many background pixels there are.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.losses.cross_entropy import binary_cross_entropy, cross_entropy
from course_lib.losses.overlap import dice_loss

__all__ = ["BCEDiceLoss", "CEDiceLoss"]


def _check_weights(**weights: float) -> None:
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class BCEDiceLoss(nn.Module):
    """Binary: logits (N, 1, H, W), target (N, H, W) or (N, 1, H, W) of 0/1 -> scalar."""

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        pos_weight: float | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
        per_image: bool = False,
    ):
        super().__init__()
        _check_weights(bce_weight=bce_weight, dice_weight=dice_weight)
        self.bce_weight, self.dice_weight, self.pos_weight = bce_weight, dice_weight, pos_weight
        self.smooth, self.ignore_index, self.per_image = smooth, ignore_index, per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = binary_cross_entropy(logits, target, self.pos_weight, self.ignore_index)
        dice = dice_loss(
            logits,
            target,
            "binary",
            self.smooth,
            ignore_index=self.ignore_index,
            per_image=self.per_image,
        )
        return self.bce_weight * bce + self.dice_weight * dice

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, smooth={self.smooth}"


class CEDiceLoss(nn.Module):
    """Multiclass: logits (N, K, H, W), target (N, H, W) int64 -> scalar."""

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        class_weights: torch.Tensor | None = None,
        smooth: float = 0.0,
        ignore_index: int | None = 255,
        per_image: bool = False,
    ):
        super().__init__()
        _check_weights(ce_weight=ce_weight, dice_weight=dice_weight)
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32),
        )
        self.smooth, self.ignore_index, self.per_image = smooth, ignore_index, per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        ce = cross_entropy(logits, target, weight, self.ignore_index)
        dice = dice_loss(
            logits,
            target,
            "multiclass",
            self.smooth,
            ignore_index=self.ignore_index,
            per_image=self.per_image,
        )
        return self.ce_weight * ce + self.dice_weight * dice

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, dice_weight={self.dice_weight}, smooth={self.smooth}"
