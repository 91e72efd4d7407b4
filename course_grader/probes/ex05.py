"""Probes for exercise 05: differentiate the learner's losses with autograd.

Gradients cannot travel as plain data from a result, so the probe computes them next to the
learner's code and returns tensors.
"""

from __future__ import annotations

from types import ModuleType

import torch

__all__ = ["loss_and_gradient"]

_LOSSES = ("soft_dice_loss", "focal_loss")


def loss_and_gradient(
    module: ModuleType, loss_name: str, logits: torch.Tensor, target: torch.Tensor, kwargs: dict
) -> dict:
    """Call `module.<loss_name>(logits, target, **kwargs)` and backpropagate.

    Returns {"loss": detached scalar, "grad": d loss / d logits (same shape as logits)}.
    """
    if loss_name not in _LOSSES:
        raise ValueError(f"loss_name must be one of {_LOSSES}, got {loss_name!r}")
    logits = logits.detach().clone().requires_grad_(True)
    loss = getattr(module, loss_name)(logits, target, **kwargs)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError(
            f"{loss_name} must return a scalar tensor, got {type(loss).__name__} "
            f"{tuple(getattr(loss, 'shape', ()))}"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"{loss_name} returned a tensor that does not depend on logits "
            f"(argmax, .detach() or .item() break the gradient)"
        )
    loss.backward()
    return {"loss": loss.detach(), "grad": logits.grad.detach()}
