"""Probes for exercise 03: the learner's `DoubleConv` and `UNet` with the course's weights.

The test builds the case in its own process (`double_conv_case`, `unet_case`): the course's module
from a seed, batch-norm statistics randomised so that they matter, one seeded batch and the
expected output. The worker receives the constructor arguments, the weights and the batch as plain
data, builds the learner's module, copies the weights in tensor by tensor in registration order,
runs it in eval mode and sends back only its output and parameter count (`ModelCase.run`).
"""

from __future__ import annotations

from types import ModuleType

import torch

from course_grader.probes._models import (
    ModelCase,
    forward_with_weights,
    parameter_count,
    reference_case,
)
from course_lib.models.blocks import DoubleConv as ReferenceDoubleConv
from course_lib.models.unet import UNet as ReferenceUNet

__all__ = [
    "double_conv_case",
    "double_conv_forward",
    "unet_case",
    "unet_forward",
    "unet_parameter_count",
    "unet_output_shape",
]

_HINT = "check the layers, their order and the conv biases"


# -- the grader's side: reference and expected output -------------------------------------------
def double_conv_case(
    in_channels: int,
    out_channels: int,
    padding: str,
    batch_norm: bool,
    height: int,
    width: int,
    seed: int = 0,
    batch: int = 2,
) -> ModelCase:
    """The course's DoubleConv on a seeded (batch, in_channels, height, width) input."""
    return reference_case(
        "double_conv_forward",
        (in_channels, out_channels, padding, batch_norm),
        lambda: ReferenceDoubleConv(
            in_channels, out_channels, padding=padding, batch_norm=batch_norm
        ),
        (batch, in_channels, height, width),
        seed,
    )


def unet_case(
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
) -> ModelCase:
    """The course's U-Net (transposed-conv upsampling) on a seeded input: logits
    (batch, num_classes, H', W')."""
    return reference_case(
        "unet_forward",
        (in_channels, num_classes, base_channels, depth, padding, batch_norm),
        lambda: ReferenceUNet(
            in_channels,
            num_classes,
            base_channels,
            depth,
            upsampling="transpose",
            padding=padding,
            batch_norm=batch_norm,
        ),
        (batch, in_channels, height, width),
        seed,
    )


# -- the worker's side: the learner's module, nothing else ------------------------------------
def double_conv_forward(
    module: ModuleType,
    in_channels: int,
    out_channels: int,
    padding: str,
    batch_norm: bool,
    weights: dict,
    x: torch.Tensor,
) -> dict:
    """{"output", "parameters"} of the learner's DoubleConv loaded with `weights`, on `x`."""
    learner = module.DoubleConv(in_channels, out_channels, padding, batch_norm)
    return forward_with_weights(learner, weights, x, "DoubleConv", _HINT)


def unet_forward(
    module: ModuleType,
    in_channels: int,
    num_classes: int,
    base_channels: int,
    depth: int,
    padding: str,
    batch_norm: bool,
    weights: dict,
    x: torch.Tensor,
) -> dict:
    """{"output", "parameters"} of the learner's UNet loaded with `weights`, on `x`."""
    learner = module.UNet(in_channels, num_classes, base_channels, depth, padding, batch_norm)
    return forward_with_weights(learner, weights, x, "UNet", _HINT)


def unet_parameter_count(
    module: ModuleType,
    in_channels: int,
    num_classes: int,
    base_channels: int,
    depth: int,
    batch_norm: bool,
) -> int:
    """Number of parameters of the learner's U-Net."""
    return parameter_count(
        module.UNet(in_channels, num_classes, base_channels, depth, "valid", batch_norm)
    )


def unet_output_shape(
    module: ModuleType,
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
