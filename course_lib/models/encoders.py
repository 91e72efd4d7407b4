"""The ResNet encoder of the course's FCN and DeepLab models (He et al., 2016, "Deep Residual
Learning for Image Recognition"), one class for both so that they read the same backbone the same
way.

`(N, in_channels, H, W)` float -> the outputs of the four residual stages, `(c2, c3, c4, c5)`:
`(N, 64 e, H/4, W/4)`, `(N, 128 e, H/8, W/8)`, `(N, 256 e, H/16, W/16)`, `(N, 512 e, H/32, W/32)`
(sizes rounded up), with `e = 1` for resnet18/34 (BasicBlock) and `e = 4` for resnet50/101
(Bottleneck). FCN fuses c3, c4 and c5; DeepLab reads c5 and, for V3+, the stride-4 map c2.

Output stride. `output_stride=32` is the classification network, with its pooling and fully
connected layer removed. `16` and `8` (DeepLab) replace the stride of layer4, and of layer3 too,
by dilation (atrous convolution): those maps stay at 1/16 or 1/8 of the input, and every filter
still sees the field of view it was trained with. torchvision's `replace_stride_with_dilation`
does this for Bottleneck networks; its BasicBlock refuses a dilation, so resnet18/34 are built
plain and converted with the same rule (`_dilate_basic_stage`). Either way, the dilated map sampled
every `32 / output_stride` pixels equals the plain network's map (`tests/test_encoders.py`).

Input channels. For `in_channels != 3` the stem convolution takes `in_channels` inputs, and its
filters are the RGB filters averaged over colour, repeated and scaled by `3 / in_channels`
(`adapt_first_conv`), whatever the weights: ImageNet's or torchvision's random initialisation.
An image with the same value in every channel (a grey scan) then gives exactly the stem response
the RGB network gives to that image in RGB, so pretrained features stay usable and a random
network keeps torchvision's activation scale.

State-dict keys: `stem.0` (conv1), `stem.1` (bn1), `layer1` .. `layer4`, as torchvision names
them inside; the keys the FCN and DeepLab encoders have always had, so their checkpoints load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn

from course_lib.checks import check_choice, check_images, check_positive_int

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = ["BACKBONES", "OUTPUT_STRIDES", "ResNetEncoder", "adapt_first_conv"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
OUTPUT_STRIDES = (8, 16, 32)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of the RGB stem `conv` for `in_channels` inputs: the filters averaged over colour,
    repeated and scaled by `3 / in_channels`, so a grey image gives the RGB network's response."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)  # (C_out, 1, k, k)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (3 / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _dilate_basic_stage(stage: nn.Sequential, previous_dilation: int) -> int:
    """Turn a stride-2 BasicBlock stage into a stride-1 dilated one; return its dilation.

    torchvision's rule for Bottleneck stages: the first block's strided 3x3 conv keeps the previous
    dilation, every later 3x3 conv uses twice the previous dilation (padding = dilation: "same").
    """
    dilation = previous_dilation * 2
    for index, block in enumerate(stage):
        for conv in (block.conv1, block.conv2):
            d = previous_dilation if index == 0 and conv is block.conv1 else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)  # the 1x1 shortcut no longer subsamples either
    return dilation


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without pooling and classifier, at output stride 32, 16 or 8.

    `weights` is passed to torchvision (e.g. "DEFAULT" or `ResNet50_Weights.IMAGENET1K_V2`
    downloads ImageNet weights); None builds a randomly initialised network offline.
    `channels` and `strides` describe the four maps `forward` returns.
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_channels: int = 3,
        weights: str | WeightsEnum | None = None,
        output_stride: int = 32,
    ):
        super().__init__()
        check_choice("backbone", name, BACKBONES)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        self.in_channels = check_positive_int("in_channels", in_channels)
        dilate = [False, output_stride == 8, output_stride <= 16]  # layer2, layer3, layer4
        bottleneck = name in ("resnet50", "resnet101")
        builder = getattr(torchvision.models, name)
        net = builder(weights=weights, replace_stride_with_dilation=dilate if bottleneck else None)
        if not bottleneck:  # BasicBlock: dilate after building, with torchvision's rule
            dilation = 1
            for stage, use_dilation in zip((net.layer2, net.layer3, net.layer4), dilate):
                if use_dilation:
                    dilation = _dilate_basic_stage(stage, dilation)
        if in_channels != 3:
            net.conv1 = adapt_first_conv(net.conv1, in_channels)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        e = 4 if bottleneck else 1  # Bottleneck blocks widen their output 4x
        self.channels = (64 * e, 128 * e, 256 * e, 512 * e)
        self.strides = (4, 8, min(16, output_stride), output_stride)
        self.output_stride = output_stride

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_images(x, self.in_channels)
        c2 = self.layer1(self.stem(x))  # (N, 64 e, H/4, W/4), sizes rounded up
        c3 = self.layer2(c2)  # (N, 128 e, H/8, W/8)
        c4 = self.layer3(c3)  # (N, 256 e, H/s4, W/s4), s4 = min(16, output_stride)
        c5 = self.layer4(c4)  # (N, 512 e, H/os, W/os)
        return c2, c3, c4, c5

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, output_stride={self.output_stride}"
