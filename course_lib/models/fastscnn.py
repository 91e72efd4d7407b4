"""Fast-SCNN, a real-time segmentation network (Poudel, Liwicki, Cipolla, 2019, arXiv:1902.04502).

(N, in_channels, H, W) float -> logits (N, num_classes, H, W), for any H, W (odd sizes too).

Two branches share their first layers instead of running twice over the image (paper, Sec. 3):
1. learning to downsample: a plain conv and two depthwise-separable convs take the image to 1/8;
2. global feature extractor: MobileNetV2 inverted-residual bottlenecks go down to 1/32 and a
   pyramid pooling module (PSPNet) adds context from the whole image;
3. feature fusion: the 1/32 features are upsampled and added to the 1/8 "spatial detail" features;
4. classifier: two depthwise-separable convs and a 1x1 conv, then bilinear upsampling to (H, W).

Almost all the work happens at 1/8 and 1/32 resolution, with depthwise convolutions: this is why
the network is fast on a CPU and tiny (about 1.1 M parameters in the paper's configuration).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check_images, check_positive_int
from course_lib.models.blocks import ConvBNReLU

__all__ = [
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "PyramidPooling",
    "FeatureFusion",
    "FastSCNN",
]


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv (one filter per channel) then pointwise 1x1 conv (mixes channels).

    Costs about 9*C + C*C' multiply-adds per pixel instead of 9*C*C' for a full 3x3 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, padding=1, stride=stride, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1, padding=0),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand (x t), depthwise 3x3, linear 1x1 project (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, hidden, 1, padding=0),
            ConvBNReLU(hidden, hidden, 3, padding=1, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # linear: no ReLU on the narrow output
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class PyramidPooling(nn.Module):
    """Pyramid pooling (Zhao et al., PSPNet, 2017): pool to b x b grids, project, upsample, concat.

    The pooled branches use a 1x1 conv with bias and no BatchNorm: the 1 x 1 branch holds a single
    value per channel and image, so a BatchNorm there could not train with batch size 1.
    """

    def __init__(self, in_channels: int, out_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        branch_channels = in_channels // len(bins)
        self.bins = bins
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, branch_channels, 1), nn.ReLU(inplace=True))
            for _ in bins
        )
        self.project = ConvBNReLU(
            in_channels + branch_channels * len(bins), out_channels, 1, padding=0
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(
                branch(F.adaptive_avg_pool2d(x, bin_size)),
                size=size,
                mode="bilinear",
                align_corners=False,
            )  # (N, C / len(bins), h, w)
            for bin_size, branch in zip(self.bins, self.branches)
        ]
        return self.project(torch.cat([x, *pooled], dim=1))  # (N, out_channels, h, w)


class FeatureFusion(nn.Module):
    """Add upsampled global features to the high-resolution detail features (paper, Table 3)."""

    def __init__(self, high_channels: int, low_channels: int, out_channels: int, scale: int = 4):
        super().__init__()
        # The depthwise conv on the upsampled map is dilated by the upsampling factor (paper).
        self.low_depthwise = ConvBNReLU(
            low_channels, low_channels, 3, padding=scale, dilation=scale, groups=low_channels
        )
        self.low_project = nn.Sequential(
            nn.Conv2d(low_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.high_project = nn.Sequential(
            nn.Conv2d(high_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        low = self.low_project(self.low_depthwise(low))  # (N, out_channels, H/8, W/8)
        return F.relu(self.high_project(high) + low)


class FastSCNN(nn.Module):
    """Fast-SCNN. Defaults are the paper's configuration (Poudel et al., Table 1).

    Args:
        num_classes: number of output classes K.
        in_channels: channels of the input image.
        downsample_channels: widths of the three learning-to-downsample layers (each stride 2).
        block_channels: widths of the three bottleneck groups (strides 2, 2, 1).
        num_blocks: bottlenecks per group.
        expansion: expansion factor t of the bottlenecks.
        fusion_channels: width of the fused features and of the classifier.
        dropout: dropout before the last 1x1 conv.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        downsample_channels: tuple[int, int, int] = (32, 48, 64),
        block_channels: tuple[int, int, int] = (64, 96, 128),
        num_blocks: tuple[int, int, int] = (3, 3, 3),
        expansion: int = 6,
        fusion_channels: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("expansion", expansion),
            ("fusion_channels", fusion_channels),
        ):
            check_positive_int(name, value)
        for name, value in (
            ("downsample_channels", downsample_channels),
            ("block_channels", block_channels),
            ("num_blocks", num_blocks),
        ):
            if len(value) != 3 or any(not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"{name} must be three positive ints, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels

        c1, c2, c3 = downsample_channels
        self.learning_to_downsample = nn.Sequential(
            ConvBNReLU(in_channels, c1, 3, padding=1, stride=2),
            DepthwiseSeparableConv(c1, c2, stride=2),
            DepthwiseSeparableConv(c2, c3, stride=2),
        )
        blocks: list[nn.Module] = []
        width = c3
        for out_channels, count, stride in zip(block_channels, num_blocks, (2, 2, 1)):
            for i in range(count):
                first_stride = stride if i == 0 else 1
                blocks.append(InvertedResidual(width, out_channels, first_stride, expansion))
                width = out_channels
        self.global_features = nn.Sequential(*blocks, PyramidPooling(width, width))
        self.fusion = FeatureFusion(c3, width, fusion_channels, scale=4)
        self.classifier = nn.Sequential(
            DepthwiseSeparableConv(fusion_channels, fusion_channels),
            DepthwiseSeparableConv(fusion_channels, fusion_channels),
            nn.Dropout(dropout),
            nn.Conv2d(fusion_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels)
        size = x.shape[-2:]
        high = self.learning_to_downsample(x)  # (N, c3, H/8, W/8): spatial detail
        # The bottlenecks halve the map twice more (stride-2 convs round up).
        low_h, low_w = (math.ceil(math.ceil(n / 2) / 2) for n in high.shape[-2:])
        if self.training and x.shape[0] * low_h * low_w < 2:
            raise ValueError(
                f"in train mode FastSCNN needs more than one value per channel at 1/32 resolution "
                f"for BatchNorm; got batch {x.shape[0]} of {tuple(size)} images (1/32 map "
                f"{low_h}x{low_w}): use a batch of at least 2, images larger than 32 pixels, "
                f"or model.eval()"
            )  # (N, c3, H/8, W/8): spatial detail
        low = self.global_features(high)  # (N, C_global, H/32, W/32): context
        fused = self.fusion(high, low)  # (N, fusion_channels, H/8, W/8)
        logits = self.classifier(fused)  # (N, K, H/8, W/8)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
