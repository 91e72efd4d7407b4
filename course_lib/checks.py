"""Argument checks of the whole library, in one place, so that a public function validates its
input in one line and shows its idea right after.

Every message names the argument, what was expected and what came: the shape, the dtype, the
offending values. A wrong label caught here is a ValueError on the host, never a device-side
assert inside a CUDA kernel or a silent broadcast of (N, H, W) against (N, 1, H, W).

- sizes, options and model inputs: `check_positive_int`, `check_choice`, `check_num_classes`,
  `check_images`;
- losses: `check_mode`, `check_reduction`, `check_logits`, `multiclass_inputs`, `binary_inputs`;
- confusion matrices: `check_confusion_inputs`, `raise_bad_target`.
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


def offending_values(values: torch.Tensor, bad: torch.Tensor, limit: int = 10) -> list:
    """A short sorted list of the values that failed a check (slow path, only on error)."""
    found = torch.unique(values[bad]).tolist()
    return [int(v) if float(v).is_integer() else v for v in found[:limit]]


def check_positive_int(name: str, value: object) -> int:
    """Return `value` if it is a positive int, else raise a TypeError/ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_choice(name: str, value: object, choices: tuple) -> object:
    """Return `value` if it is one of `choices` (same type too: 16.0 is not 16), else raise a
    ValueError naming `name`, the choices and the value."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_num_classes(num_classes: object) -> None:
    """num_classes of a metric: a positive int (a ValueError for anything else)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def check_images(x: object, in_channels: int, name: str = "x") -> torch.Tensor:
    """Check that `x` is a float `(N, in_channels, H, W)` tensor: the input of every model."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but the model was built with "
            f"in_channels={in_channels}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    return x


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
            f"target has values {offending_values(target, bad)} outside [0, {num_classes}) "
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
            f"target has values {offending_values(target, bad)}; a binary/multilabel target "
            f"holds 0 and 1 (and ignore_index={ignore_index})"
        )
    return logits, torch.where(valid, target, 0).to(logits.dtype), valid


def check_confusion_inputs(pred: object, target: object, ignore_index: object) -> None:
    """Types of a confusion-matrix call: tensors, integer target, int or None ignore_index."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"pred and target must be torch.Tensor, got {type(pred).__name__} "
            f"and {type(target).__name__}"
        )
    if target.is_floating_point() or target.dtype.is_complex:
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")
    if ignore_index is not None and (
        not isinstance(ignore_index, int) or isinstance(ignore_index, bool)
    ):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")


def raise_bad_target(t: torch.Tensor, k: int, ignore: int | None, ignore_index: int | None) -> None:
    """Slow path, only on error: list the target values that are neither classes nor ignored."""
    bad = (t < 0) | (t >= k)
    if ignore is not None:
        bad &= t != ignore
    if ignore_index is None:
        raise ValueError(
            f"target has values {offending_values(t, bad)} but num_classes={k}; "
            f"set num_classes or ignore_index"
        )
    raise ValueError(
        f"target has values {offending_values(t, bad)} that are neither in [0, {k}) "
        f"nor ignore_index={ignore_index}; set num_classes or ignore_index"
    )
