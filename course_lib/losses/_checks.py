"""Input checks shared by every loss: shapes, dtypes and label values, with messages that say how
to fix the call. A wrong label caught here is a ValueError on the host, never a device-side assert
inside a CUDA kernel or a silent broadcast of (N, H, W) against (N, 1, H, W).
"""

from __future__ import annotations

import torch

MODES = ("binary", "multiclass", "multilabel")
REDUCTIONS = ("mean", "sum", "none")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _offending(values: torch.Tensor, bad: torch.Tensor, limit: int = 10) -> list:
    found = torch.unique(values[bad]).tolist()
    return [int(v) if float(v).is_integer() else v for v in found[:limit]]


def check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(
            f"logits must be a float tensor (raw model outputs), got dtype {logits.dtype}"
        )
    if logits.dim() < 2:
        raise ValueError(
            f"logits must be (N, K, H, W) (or (N, K, *spatial)), got shape {tuple(logits.shape)}"
        )


def multiclass_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check logits (N, K, *S) float against target (N, *S) of any integer dtype.

    Returns (target as int64, valid mask (N, *S)); uint8 masks read from PNG files are accepted.
    """
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool or target.dtype.is_complex:
        raise TypeError(
            f"multiclass target must hold integer class labels (int64), got dtype {target.dtype}"
        )
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        hint = " (drop the channel dimension: target[:, 0])" if target.dim() == logits.dim() else ""
        raise ValueError(
            f"target has shape {tuple(target.shape)} but logits {tuple(logits.shape)} "
            f"need a target of shape {expected}{hint}"
        )
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    num_classes = logits.shape[1]
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise ValueError(
            f"target has values {_offending(target, bad)} outside [0, {num_classes}) "
            f"(logits have {num_classes} channels) and not equal to "
            f"ignore_index={ignore_index}"
        )
    return target.long(), valid


def binary_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None, multilabel: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check sigmoid-style inputs; return (logits, target as float, valid mask), all of one shape.

    binary:     logits (N, 1, *S); target (N, 1, *S) or (N, *S) with values 0/1.
    multilabel: logits (N, K, *S); target (N, K, *S) with values 0/1.
    """
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    if multilabel:
        if target.shape != logits.shape:
            raise ValueError(
                f"multilabel target has shape {tuple(target.shape)} but logits have shape "
                f"{tuple(logits.shape)}; they must match (one 0/1 channel per class)"
            )
    else:
        if logits.dim() < 3 or logits.shape[1] != 1:
            raise ValueError(
                f"binary logits must be (N, 1, H, W), got shape {tuple(logits.shape)}; "
                f"for K classes use mode='multiclass' or 'multilabel'"
            )
        if target.dim() == logits.dim() - 1:
            target = target.unsqueeze(1)  # (N, 1, *S)
        if target.shape != logits.shape:
            raise ValueError(
                f"binary target has shape {tuple(target.shape)} but logits have shape "
                f"{tuple(logits.shape)}; expected target (N, H, W) or (N, 1, H, W)"
            )
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    bad = valid & (target != 0) & (target != 1)
    if bad.any():
        raise ValueError(
            f"target has values {_offending(target, bad)}; a binary/multilabel target "
            f"holds 0 and 1 (and ignore_index={ignore_index})"
        )
    return logits, torch.where(valid, target, 0).to(logits.dtype), valid
