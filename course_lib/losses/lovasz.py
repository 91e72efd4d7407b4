"""Lovász losses (Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss", CVPR 2018).

The Jaccard loss 1 - IoU is a set function of the mispredicted pixels. Its Lovász extension is a
convex, piecewise-linear function of real-valued pixel errors e: sort the errors in decreasing
order, e_(1) >= e_(2) >= ..., and weigh each by the increase of the Jaccard loss when that pixel
joins the set of errors (the "Lovász gradient" g):

    loss = sum_i e_(i) g_i,   g_i = J(first i sorted pixels) - J(first i - 1)   (eq. 9, alg. 1)

Lovász-Softmax (multiclass): for each class c, errors e = |1[y = c] - p_c| with softmax
probabilities p, averaged over the classes ("present" in the target, "all", or a list of ids).
Lovász hinge (binary): errors are hinge margins max(0, 1 - s x) with signs s = 2y - 1 and logits x.

    logits (N, K, H, W) float, target (N, H, W) int64 (multiclass); logits (N, 1, H, W), target
    (N, H, W) or (N, 1, H, W) of 0/1 (binary) -> scalar loss
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import binary_inputs, multiclass_inputs

__all__ = ["lovasz_grad", "lovasz_softmax", "lovasz_hinge", "LovaszLoss"]


def lovasz_grad(sorted_target: torch.Tensor) -> torch.Tensor:
    """Lovász gradient g (P,) of the Jaccard loss, for 0/1 labels sorted by decreasing error."""
    total = sorted_target.sum()
    intersection = total - sorted_target.cumsum(
        0
    )  # (P,) foreground pixels not yet in the error set
    union = total + (1 - sorted_target).cumsum(0)  # (P,) >= 1 from the first background pixel on
    jaccard = 1 - intersection / union  # (P,) Jaccard loss of the first i + 1 sorted pixels
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes) -> torch.Tensor | None:
    """probs (P, K), labels (P,) of valid pixels; mean over classes, or None if no class counts."""
    num_classes = probs.shape[1]
    class_ids = range(num_classes) if isinstance(classes, str) else classes
    losses = []
    for c in class_ids:
        foreground = (labels == c).to(probs.dtype)  # (P,)
        if classes == "present" and foreground.sum() == 0:
            continue
        errors = (foreground - probs[:, c]).abs()  # (P,)
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(foreground[order])))
    return torch.stack(losses).mean() if losses else None


def _check_classes(classes, num_classes: int) -> None:
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(
                f"classes must be 'present', 'all' or a list of class ids, got {classes!r}"
            )
    elif any(not 0 <= int(c) < num_classes for c in classes):
        raise ValueError(f"classes {list(classes)} must be ids in [0, {num_classes})")


def lovasz_softmax(
    logits: torch.Tensor,
    target: torch.Tensor,
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Lovász-Softmax loss from multiclass logits.

    classes: "present" (classes in the target of the unit, the default: an absent class adds no
    term), "all", or a list of class ids. per_image=True averages the loss of each image instead of
    treating the batch as one image. Ignored pixels are removed before sorting; a unit without
    any class to average (all pixels ignored) is left out, and 0 is returned when nothing is left.
    """
    target, valid = multiclass_inputs(logits, target, ignore_index)  # (N, *S)
    _check_classes(classes, logits.shape[1])
    probs = logits.softmax(dim=1).movedim(1, -1)  # (N, *S, K)
    units = zip(probs, target, valid) if per_image else [(probs, target, valid)]
    losses = []
    for p, t, v in units:
        loss = _lovasz_softmax_flat(p[v], t[v], classes)  # p[v]: (P, K)
        if loss is not None:
            losses.append(loss)
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def lovasz_hinge(
    logits: torch.Tensor,
    target: torch.Tensor,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Binary Lovász hinge loss from logits (N, 1, H, W).

    per_image=False (the default here, as for `lovasz_softmax`) treats the batch as one image;
    per_image=True averages the loss of each image (the default of the paper's reference code
    for the hinge). Images whose pixels are all ignored are left out.
    """
    logits_, target_, valid = binary_inputs(logits, target, ignore_index)
    units = zip(logits_, target_, valid) if per_image else [(logits_, target_, valid)]
    losses = []
    for x, y, v in units:
        x, y = x[v], y[v]  # (P,) logits and 0/1 labels of the valid pixels
        if x.numel() == 0:
            continue
        errors = 1 - x * (2 * y - 1)  # (P,) hinge margins
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), lovasz_grad(y[order])))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


class LovaszLoss(nn.Module):
    """Module form: mode "multiclass" calls `lovasz_softmax`, mode "binary" calls `lovasz_hinge`."""

    def __init__(
        self,
        mode: str = "multiclass",
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = 255,
    ):
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise ValueError(f"LovaszLoss mode must be 'binary' or 'multiclass', got {mode!r}")
        self.mode, self.classes, self.per_image, self.ignore_index = (
            mode,
            classes,
            per_image,
            ignore_index,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == "binary":
            return lovasz_hinge(logits, target, self.per_image, self.ignore_index)
        return lovasz_softmax(logits, target, self.classes, self.per_image, self.ignore_index)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, per_image={self.per_image}, ignore_index={self.ignore_index}"
