"""Pixel-wise cross-entropy (multiclass and binary) with checked inputs, and class weights.

    logits (N, K, H, W) float, target (N, H, W) int64 in [0, K) or ignore_index -> scalar loss

Class weights counter class imbalance: "inverse" frequency, w_c = total / (K_present * n_c), and
"median" frequency balancing (Eigen & Fergus, ICCV 2015), w_c = median_c(f_c) / f_c with
f_c = (pixels of class c) / (pixels of the images in which c appears). Classes that never appear
get weight 0 (they never occur in a target, so the value does not matter for the loss).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import binary_inputs, check_reduction, multiclass_inputs

__all__ = ["cross_entropy", "binary_cross_entropy", "class_weights", "CrossEntropyLoss"]

_WEIGHT_METHODS = ("inverse", "median")


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = 255,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """`F.cross_entropy` after checking shapes, dtypes and label values.

    With reduction="mean" and class weights the mean is weighted (sum w_t * loss / sum w_t), as in
    PyTorch. When every pixel is ignored the mean is 0 (PyTorch would return NaN).
    """
    check_reduction(reduction)
    target, valid = multiclass_inputs(logits, target, ignore_index)
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
        if tuple(weight.shape) != (logits.shape[1],):
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}; expected ({logits.shape[1]},), "
                f"one weight per class"
            )
    if reduction == "mean" and not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits,
        target,
        weight=weight,
        reduction=reduction,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    pos_weight: float | None = None,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Mean BCE over valid pixels, from logits (N, 1, H, W) and a 0/1 target (N, [1,] H, W).

    `pos_weight` multiplies the loss of foreground pixels (> 1 raises recall on small structures).
    """
    logits, target, valid = binary_inputs(logits, target, ignore_index)
    weight = (
        None
        if pos_weight is None
        else torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    )
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=weight)
    valid = valid.to(loss.dtype)
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def class_weights(
    masks: torch.Tensor | Iterable[torch.Tensor],
    num_classes: int,
    method: str = "median",
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Per-class weights (K,) float32 from label maps: a (N, H, W) tensor or an iterable of them.

    Each element of an iterable is one image (H, W) or a batch (B, H, W). With c_k the pixels of
    class k, T their sum and K' the number of classes present (pixels equal to `ignore_index` are
    not counted):
    - "inverse": w_k = T / (K' c_k), so a balanced data set gets 1.0 for every present class;
    - "median": f_k = c_k / P_k with P_k the pixels of the images in which class k appears, and
      w_k = median(f) / f_k (median-frequency balancing, Eigen & Fergus 2015; the median of an
      even number of classes is the mean of the two middle values).
    Classes that never appear get 0.0. Raises ValueError when no pixel is labelled at all.
    """
    if method not in _WEIGHT_METHODS:
        raise ValueError(f"method must be one of {_WEIGHT_METHODS}, got {method!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    batches = [masks] if isinstance(masks, torch.Tensor) else masks
    pixels = torch.zeros(num_classes, dtype=torch.float64)  # pixels of class c
    image_pixels = torch.zeros(num_classes, dtype=torch.float64)  # pixels of images containing c
    for batch in batches:
        batch = torch.as_tensor(batch)
        if batch.is_floating_point():
            raise TypeError(f"masks must hold integer labels, got dtype {batch.dtype}")
        if batch.dim() == 2:
            batch = batch[None]
        for mask in batch.reshape(batch.shape[0], -1).cpu().long():
            if ignore_index is not None:
                mask = mask[mask != ignore_index]
            bad = (mask < 0) | (mask >= num_classes)
            if bad.any():
                raise ValueError(
                    f"masks have values {torch.unique(mask[bad]).tolist()[:10]} outside "
                    f"[0, {num_classes}) and not ignore_index={ignore_index}"
                )
            counts = torch.bincount(mask, minlength=num_classes).double()
            pixels += counts
            image_pixels += (counts > 0).double() * mask.numel()
    present = pixels > 0
    if not present.any():
        raise ValueError("masks contain no labelled pixel; cannot compute class weights")
    weights = torch.zeros(num_classes, dtype=torch.float64)
    if method == "inverse":
        weights[present] = pixels.sum() / (present.sum() * pixels[present])
    else:
        frequency = pixels[present] / image_pixels[present]
        weights[present] = (
            frequency.quantile(0.5) / frequency
        )  # true median (mean of the middle two)
    return weights.float()


class CrossEntropyLoss(nn.Module):
    """Module form of `cross_entropy`; `weight` is stored as a buffer (moves with `.to(device)`)."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int | None = 255,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return cross_entropy(
            logits, target, weight, self.ignore_index, "mean", self.label_smoothing
        )
