"""DeepLabV3 (Chen et al., 2017) and DeepLabV3+ (Chen et al., 2018) on an atrous ResNet.

Papers: "Rethinking Atrous Convolution for Semantic Image Segmentation" (arXiv:1706.05587) and
"Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation" (ECCV 2018).

Tensor contract: images (N, in_channels, H, W) float -> logits (N, num_classes, H, W) at the input
size, for any H and W (odd sizes too).

The encoder is the course's ResNet (`encoders.ResNetEncoder`, shared with FCN) whose last stages
trade stride for dilation, so the feature map keeps 1/output_stride of the input size (1/16 or
1/8) instead of 1/32. The head is Atrous Spatial
Pyramid Pooling (ASPP): parallel 3x3 convolutions with different dilation rates plus an image-level
average, so one layer sees the scene at several scales. DeepLabV3+ adds a light decoder that mixes
the ASPP output with stride-4 features to sharpen object boundaries.

Batch size 1 in training: the image-pooling branch of ASPP sees a single value per channel when the
batch has one image, and batch statistics of one value are undefined (torchvision's ASPP raises
"Expected more than 1 value per channel"). Here that branch normalises with its running estimates
whenever a training batch holds a single value per channel (`_PoolingBatchNorm`), and learns them
from batches of two or more images as usual. The parameters are those of `nn.BatchNorm2d`, so the
parameter count and the state dict match torchvision's ASPP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check_choice, check_images, check_positive_int
from course_lib.models.blocks import ConvBNReLU
from course_lib.models.encoders import BACKBONES, ResNetEncoder

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = ["ASPP", "DeepLabV3", "DeepLabV3Plus", "BACKBONES"]

OUTPUT_STRIDES = (8, 16)  # DeepLab's; the encoder also offers the classifier's 32
_BASE_RATES = (6, 12, 18)  # ASPP rates of the paper at output stride 16 (Sec. 3.3)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> ConvBNReLU:
    """`blocks.ConvBNReLU` padded to keep H and W (odd kernels), at any dilation."""
    padding = dilation * (kernel_size - 1) // 2
    return ConvBNReLU(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)


class _PoolingBatchNorm(nn.BatchNorm2d):
    """BatchNorm for the 1x1 image-pooling branch: a training batch of one value per channel is
    normalised with the running estimates (a single value has no variance to measure)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, 1, 1)
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        return super().forward(x)


class _ImagePooling(nn.Module):
    """Image-level features: global average, 1x1 conv, BN, ReLU, broadcast back to (H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = _PoolingBatchNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)  # (N, C_in, 1, 1)
        pooled = self.relu(self.bn(self.conv(pooled)))  # (N, C_out, 1, 1)
        return pooled.expand(
            -1, -1, x.shape[2], x.shape[3]
        )  # (N, C_out, H, W): same value everywhere


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3, Sec. 3.3).

    Branches: one 1x1 conv, one 3x3 conv per rate in `atrous_rates`, one image-pooling branch; each
    ends with BN and ReLU. Their outputs are concatenated and projected by a 1x1 conv (BN, ReLU,
    dropout). (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        atrous_rates: Sequence[int] = _BASE_RATES,
        dropout: float = 0.5,
    ):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        rates = tuple(atrous_rates)
        if not rates or not all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rates
        ):
            raise ValueError(
                f"atrous_rates must be a non-empty sequence of ints >= 1, got {atrous_rates!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.atrous_rates = rates
        self.conv1x1 = _conv_bn_relu(in_channels, out_channels, 1)
        self.atrous = nn.ModuleList(
            _conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates
        )
        self.pooling = _ImagePooling(in_channels, out_channels)
        num_branches = 2 + len(rates)
        self.project = nn.Sequential(
            nn.Conv2d(num_branches * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        branches = [self.conv1x1(x)]  # each (N, C_out, H, W)
        branches += [conv(x) for conv in self.atrous]
        branches.append(self.pooling(x))
        x = torch.cat(branches, dim=1)  # (N, (2 + len(rates)) * C_out, H, W)
        return self.project(x)  # (N, C_out, H, W)


def _check_common(num_classes, in_channels, backbone, output_stride) -> None:
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    check_choice("backbone", backbone, BACKBONES)
    check_choice("output_stride", output_stride, OUTPUT_STRIDES)


class DeepLabV3(nn.Module):
    """DeepLabV3: atrous ResNet, ASPP, a 3x3 conv and a 1x1 classifier, bilinear upsampling.

    ASPP rates scale with the output stride: (6, 12, 18) at 16 and (12, 24, 36) at 8.
    With backbone="resnet50", output_stride=8 the parameter count equals torchvision's
    `deeplabv3_resnet50(aux_loss=False)`. `backbone_weights` (e.g.
    `torchvision.models.ResNet50_Weights.IMAGENET1K_V2`) is passed to torchvision; None never
    touches the network.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet50",
        output_stride: int = 16,
        backbone_weights: str | WeightsEnum | None = None,
        aspp_channels: int = 256,
    ):
        super().__init__()
        _check_common(num_classes, in_channels, backbone, output_stride)
        self.in_channels = in_channels
        self.backbone = ResNetEncoder(backbone, in_channels, backbone_weights, output_stride)
        rates = tuple(r * 16 // output_stride for r in _BASE_RATES)
        self.aspp = ASPP(self.backbone.channels[-1], aspp_channels, rates)
        self.head = nn.Sequential(
            _conv_bn_relu(aspp_channels, aspp_channels, 3),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        check_images(x, self.in_channels)
        high = self.backbone(x)[-1]  # (N, C_high, H/os, W/os)
        logits = self.head(self.aspp(high))  # (N, K, H/os, W/os)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: DeepLabV3's encoder and ASPP, then a decoder (Sec. 3.1 of the V3+ paper).

    The stride-4 features are projected to 48 channels (so they do not outweigh the 256 ASPP
    channels), concatenated with the ASPP output upsampled to stride 4, refined by two 3x3 convs,
    classified, and upsampled to the input size.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet50",
        output_stride: int = 16,
        backbone_weights: str | WeightsEnum | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
    ):
        super().__init__()
        _check_common(num_classes, in_channels, backbone, output_stride)
        check_positive_int("low_level_channels", low_level_channels)
        self.in_channels = in_channels
        self.backbone = ResNetEncoder(backbone, in_channels, backbone_weights, output_stride)
        rates = tuple(r * 16 // output_stride for r in _BASE_RATES)
        self.aspp = ASPP(self.backbone.channels[-1], aspp_channels, rates)
        self.low_project = _conv_bn_relu(self.backbone.channels[0], low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_channels, aspp_channels, 3),
            _conv_bn_relu(aspp_channels, aspp_channels, 3),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        check_images(x, self.in_channels)
        low, *_, high = self.backbone(x)  # (N, C_low, H/4, W/4), (N, C_high, H/os, W/os)
        context = self.aspp(high)  # (N, 256, H/os, W/os)
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x_dec = torch.cat([context, self.low_project(low)], dim=1)  # (N, 256 + 48, H/4, W/4)
        logits = self.decoder(x_dec)  # (N, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
