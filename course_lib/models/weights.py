"""Comparing two implementations of one architecture: same weights in, same numbers out.

`copy_weights_in_order` loads one module's weights into another whose tensors are registered in
the same order with the same shapes, whatever they are named: the way to check a model written
by hand (in a notebook, an exercise) against the library's or torchvision's. `randomize_batchnorm`
gives every batch norm non-trivial statistics and affine parameters first; fresh ones are the
identity in eval mode and would hide a missing or misplaced normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["copy_weights_in_order", "randomize_batchnorm"]


def copy_weights_in_order(source: nn.Module, target: nn.Module) -> None:
    """Load `source`'s state dict into `target` tensor by tensor, in registration order."""
    src, dst = list(source.state_dict().items()), target.state_dict()
    if len(src) != len(dst):
        raise ValueError(
            f"source has {len(src)} weight tensors (parameters and buffers), target "
            f"{len(dst)}: the two modules do not register the same tensors"
        )
    for (src_name, value), (name, tensor) in zip(src, dst.items()):
        if value.shape != tensor.shape:
            raise ValueError(
                f"target {name} has shape {tuple(tensor.shape)}, source {src_name} "
                f"{tuple(value.shape)}: the modules register tensors in another order"
            )
    target.load_state_dict(dict(zip(dst.keys(), (value for _, value in src))))


def randomize_batchnorm(module: nn.Module, generator: torch.Generator | int = 0) -> None:
    """Random running mean/var and affine weight/bias in every BatchNorm2d of `module`, in place.

    generator: a `torch.Generator` (its draws continue) or an int seed. Mean and bias ~ N(0, 0.1²),
    variance and weight ~ U(0.5, 1.5): far enough from the identity to matter, tame enough to
    keep activations in range.
    """
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(generator)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
