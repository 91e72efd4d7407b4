"""The confusion matrix of a segmentation, counted with one `bincount`, and its accumulator.

Every pixel metric of the course (IoU, Dice, accuracy, ...) is a function of the confusion matrix
`cm` of shape (K, K) int64 where `cm[t, p]` counts the pixels whose target class is `t` and whose
predicted class is `p` (rows = target, columns = prediction).

Tensor contract:
    pred    labels (N, H, W) int, or logits (N, K, H, W) float (argmax over dim 1), or binary
            logits (N, 1, H, W) float (`sigmoid(logits) > threshold`, needs num_classes=2)
    target  (N, H, W) integer in [0, K), or equal to `ignore_index` (pixels left out)
    result  (K, K) int64 on the device of the inputs

The accumulator `ConfusionMatrix` adds the matrices of many batches. Summing counts and computing
the metrics once at the end is the correct way to evaluate a data set; averaging per-batch mIoU is
not (small batches with few classes weigh as much as large ones).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from course_lib.checks import (
    check_confusion_inputs,
    check_num_classes,
    offending_values,
    raise_bad_target,
)

__all__ = ["confusion_matrix", "ConfusionMatrix"]


def _labels_from_pred(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, threshold: float
) -> torch.Tensor:
    """Turn labels or logits into labels with the shape of `target`."""
    if pred.is_floating_point():
        if pred.dim() != target.dim() + 1:
            raise ValueError(
                f"pred holds float logits of shape {tuple(pred.shape)}; expected one more "
                f"dimension than target {tuple(target.shape)}, i.e. (N, K, H, W) with "
                f"K={num_classes} "
                f"(or (N, 1, H, W) binary logits); pass integer labels to skip the argmax"
            )
        if pred.shape[1] == 1:
            if num_classes != 2:
                raise ValueError(
                    f"pred has one channel (binary logits) but num_classes={num_classes}; "
                    f"binary logits need num_classes=2"
                )
            return (torch.sigmoid(pred[:, 0]) > threshold).long()  # (N, H, W)
        if pred.shape[1] != num_classes:
            raise ValueError(
                f"pred has {pred.shape[1]} channels but num_classes={num_classes}; "
                f"expected logits of shape (N, {num_classes}, H, W)"
            )
        return pred.argmax(dim=1)  # (N, H, W)
    if pred.dtype == torch.bool:
        return pred.long()
    if pred.dtype.is_complex:
        raise TypeError(f"pred must be integer labels or float logits, got dtype {pred.dtype}")
    return pred


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Count (target, prediction) pairs: a (K, K) int64 matrix, rows = target, columns = prediction.

    `pred` is either labels with the shape of `target` or logits with one more (channel)
    dimension: multiclass logits (N, K, H, W) are reduced with argmax, binary logits (N, 1, H, W)
    with `sigmoid(logits) > threshold` (then num_classes must be 2). Pixels whose target equals
    `ignore_index` are not counted, whatever was predicted there. Target (and predicted) labels
    outside [0, num_classes) raise a ValueError that lists the offending values.

    Implementation: each pair becomes one integer `target * K + pred` and a single `bincount`
    counts them all. Ignored pixels (ignore_index >= K, e.g. 255) land in bins past K*K that are
    dropped, so no masked copy of the batch is made. Works on any device; only a few scalars
    travel to the host for the range checks.
    """
    check_num_classes(num_classes)
    check_confusion_inputs(pred, target, ignore_index)
    labels = _labels_from_pred(pred, target, num_classes, threshold)
    if labels.shape != target.shape:
        raise ValueError(
            f"pred labels have shape {tuple(labels.shape)} but target has shape "
            f"{tuple(target.shape)}; they must match"
        )
    if labels.device != target.device:
        raise ValueError(f"pred is on {labels.device} but target is on {target.device}")
    k = num_classes
    t = target.reshape(-1).long()  # (P,) a view when target is already int64
    p = labels.reshape(-1).long()  # (P,)
    if t.numel() == 0:
        return torch.zeros(k, k, dtype=torch.int64, device=target.device)
    if not pred.is_floating_point():
        p_min, p_max = torch.aminmax(p)
        if p_min.item() < 0 or p_max.item() >= k:
            bad = (p < 0) | (p >= k)
            raise ValueError(
                f"pred has values {offending_values(p, bad)} outside [0, {k}) (num_classes={k})"
            )
    ignore = ignore_index
    if ignore is not None and ignore < k:
        t = torch.where(t == ignore, k, t)  # give an ignore label inside [0, K) its own row K
        ignore = k
    t_min, t_max = (v.item() for v in torch.aminmax(t))
    if t_min < 0 or (t_max >= k and t_max != ignore):
        raise_bad_target(t, k, ignore, ignore_index)
    # Valid pixels land in [0, K*K); ignored pixels in the block [ignore*K, ignore*K + K).
    index = torch.add(p, t, alpha=k)  # (P,) = target * K + pred in one pass
    counts = torch.bincount(index, minlength=k * k)  # (max(K, ignore + 1) * K,)
    if (
        counts.numel() > k * k
        and counts[k * k :].sum() != counts[ignore * k : ignore * k + k].sum()
    ):
        raise_bad_target(t, k, ignore, ignore_index)
    return counts[: k * k].view(k, k)


class ConfusionMatrix:
    """Accumulates confusion matrices over batches (and processes); metrics are computed once.

        cm = ConfusionMatrix(num_classes=21, ignore_index=255)
        for images, masks in loader:
            cm.update(model(images), masks)         # logits or labels
        cm.all_reduce()                             # only under torch.distributed: sum all ranks
        miou = mean_iou(cm.compute())

    The running matrix lives on the device of the first update (no per-batch copy to the host).
    `merge` adds another accumulator; `all_reduce` sums the matrices of all processes of a
    `torch.distributed` group, so multi-GPU evaluation reports exactly the single-process numbers.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, threshold: float = 0.5):
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.threshold = threshold
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # (K, K)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add the counts of one batch (see `confusion_matrix` for the accepted inputs)."""
        counts = confusion_matrix(
            pred.detach(), target, self.num_classes, self.ignore_index, self.threshold
        )
        if self.matrix.device != counts.device:
            self.matrix = self.matrix.to(counts.device)
        self.matrix += counts
        return self

    def compute(self) -> torch.Tensor:
        """The accumulated (K, K) int64 matrix, rows = target (a copy)."""
        return self.matrix.clone()

    def reset(self) -> None:
        """Forget every count (start a new evaluation)."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of another accumulator with the same settings; returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, "
                f"ignore_index={other.ignore_index}) into ConfusionMatrix(num_classes="
                f"{self.num_classes}, ignore_index={self.ignore_index})"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> ConfusionMatrix:
        """Sum the matrix over all processes of `group` (no-op outside torch.distributed).

        Counts are integers, so the sum is exact and every rank ends with the same matrix. With
        the NCCL backend the matrix must be on the GPU (it is when updates were on the GPU).
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM, group=group)
        return self

    sync = all_reduce

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )
