"""Probes for exercise 03: the learner's `DoubleConv` and `UNet` run beside `course_lib.models`.

Each probe builds the learner's module and the course's with the same arguments, copies the course
weights into the learner's module tensor by tensor in registration order (batch-norm statistics
included, randomised so that they matter), runs both in eval mode on one seeded batch and returns
plain tensors and numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.models.blocks import DoubleConv as ReferenceDoubleConv
from course_lib.models.unet import UNet as ReferenceUNet

__all__ = ["double_conv_outputs", "unet_outputs", "unet_parameter_count", "unet_output_shape"]


def _randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


def _copy_weights(reference: nn.Module, learner: nn.Module, what: str) -> None:
    source = list(reference.state_dict().items())
    target = learner.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"your {what} has {len(target)} weight tensors (parameters and batch-norm buffers), "
            f"the reference has {len(source)}: check the layers, their order and the conv biases"
        )
    for (ref_name, ref), (name, mine) in zip(source, target.items()):
        if ref.shape != mine.shape:
            raise ValueError(
                f"your {what}.{name} has shape {tuple(mine.shape)}, the reference "
                f"{ref_name} has {tuple(ref.shape)}"
            )
    learner.load_state_dict(dict(zip(target.keys(), (tensor for _, tensor in source))))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _outputs_with_same_weights(reference: nn.Module, learner: nn.Module, name: str,
                               x: torch.Tensor) -> dict:
    """Copy the reference's weights into the learner, run both in eval mode on `x`."""
    _copy_weights(reference, learner, name)
    with torch.no_grad():
        return {"got": learner.eval()(x), "expected": reference.eval()(x)}


def double_conv_outputs(
    module,
    in_channels: int,
    out_channels: int,
    padding: str,
    batch_norm: bool,
    height: int,
    width: int,
    seed: int = 0,
    batch: int = 2,
) -> dict:
    """{"got", "expected"}: (batch, out_channels, H', W') outputs, and both parameter counts."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reference = ReferenceDoubleConv(
        in_channels, out_channels, padding=padding, batch_norm=batch_norm
    )
    _randomize_batchnorm(reference, generator)
    learner = module.DoubleConv(in_channels, out_channels, padding, batch_norm)
    counts = {"got_parameters": _count(learner), "expected_parameters": _count(reference)}
    x = torch.randn(batch, in_channels, height, width, generator=generator)  # (B, C, H, W)
    return {**_outputs_with_same_weights(reference, learner, "DoubleConv", x), **counts}


def unet_outputs(
    module,
    in_channels: int,
    num_classes: int,
    base_channels: int,
    depth: int,
    padding: str,
    batch_norm: bool,
    height: int,
    width: int,
    seed: int = 0,
    batch: int = 2,
) -> dict:
    """{"got", "expected"}: logits (batch, num_classes, H', W') of the learner's and the course's
    U-Net with the same weights."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reference = ReferenceUNet(
        in_channels,
        num_classes,
        base_channels,
        depth,
        upsampling="transpose",
        padding=padding,
        batch_norm=batch_norm,
    )
    _randomize_batchnorm(reference, generator)
    learner = module.UNet(in_channels, num_classes, base_channels, depth, padding, batch_norm)
    x = torch.randn(batch, in_channels, height, width, generator=generator)  # (B, C, H, W)
    return _outputs_with_same_weights(reference, learner, "UNet", x)


def unet_parameter_count(
    module, in_channels: int, num_classes: int, base_channels: int, depth: int, batch_norm: bool
) -> int:
    """Number of parameters of the learner's U-Net."""
    return _count(module.UNet(in_channels, num_classes, base_channels, depth, "valid", batch_norm))


def unet_output_shape(
    module,
    in_channels: int,
    num_classes: int,
    base_channels: int,
    depth: int,
    padding: str,
    height: int,
    width: int,
) -> tuple:
    """Shape of the learner's U-Net output for one (1, in_channels, height, width) input."""
    torch.manual_seed(0)
    learner = module.UNet(in_channels, num_classes, base_channels, depth, padding, False).eval()
    with torch.no_grad():
        return tuple(learner(torch.randn(1, in_channels, height, width)).shape)
