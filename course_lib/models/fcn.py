"""Fully Convolutional Networks (Long, Shelhamer and Darrell, 2015, "Fully Convolutional Networks
for Semantic Segmentation").
`(N, in_channels, H, W)` float -> logits `(N, num_classes, H, W)`, for any H, W.

A classifier becomes a segmenter when its fully connected layers are read as convolutions (fc6 is a
7x7 convolution over pool5, fc7 a 1x1 convolution): it then slides over an image of any size and
returns a coarse score map at 1/32 of the resolution. Upsampling that map 32x gives FCN-32s.
FCN-16s and FCN-8s add finer predictions: a 1x1 "score" convolution on pool4 (1/16) and pool3 (1/8)
is added to the 2x-upsampled coarser scores before the last upsampling (section 4.2).

Alignment of the fused maps, exact for every input size:
- `backbone="vgg16"` follows the paper: conv1_1 pads the image by 100 pixels, poolings round up, and
  every fused map is cropped at the paper's fixed offsets (5 for pool4, 9 for pool3; 19, 27, 31 for
  the final 32s, 16s, 8s outputs). The offsets are fixed because every layer maps coordinates by the
  same affine rule whatever the image size; the 100-pixel pad makes every map large enough.
  This path keeps the paper's geometry as it is, including its border: image pixels that lie
  before the first (or after the last) score centre receive less than the full bilinear weight.
- `backbone="resnet18"|"resnet34"|"resnet50"|"resnet101"` (`encoders.ResNetEncoder`, the course's
  one ResNet encoder, shared with DeepLab) and `backbone="small"` (five
  stages of two 3x3 `ConvBNReLU`, the first with stride 2, for CPU lessons) use "same" padding: a
  pixel `y` of a stride-`s` map sits at image pixel `s * y`. A transposed convolution with kernel
  `2f - 1`, stride `f` and padding `f - 1` places input pixel `y` at output pixel `f * y` and
  interpolates linearly in between. Beyond the last input pixel there is nothing to interpolate
  towards, and zeros would fade the bottom/right border (to 7/8 ... 1/8 for f = 8); the last row
  and column are therefore repeated once before upsampling (as `F.interpolate` does at a border),
  and the result is cropped to the size of the finer map: no crop offsets needed.

The 2x upsampling layers of FCN-16s/8s are transposed convolutions initialised with
`bilinear_kernel` and learned. The final 8x/16x/32x upsampling is fixed bilinear interpolation, as
in the paper (its final deconvolution filters are fixed to bilinear interpolation, the intermediate
ones initialised to it and learned); `learn_final_upsampling=True` makes it learned too, which costs
`K * K * k * k` weights (1.75 M for K = 21 and the 63x63 kernel of FCN-32s on a ResNet).
The skip score layers start at zero, so FCN-16s/8s begin as FCN-32s and learn to use the skips.
`backbone_weights` is passed to torchvision (e.g. "DEFAULT" downloads ImageNet weights); the default
None builds a randomly initialised encoder and never touches the network ("small" has no
pretrained weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from course_lib.checks import check_choice, check_images, check_positive_int
from course_lib.models.blocks import ConvBNReLU, bilinear_kernel
from course_lib.models.encoders import BACKBONES as RESNETS
from course_lib.models.encoders import ResNetEncoder, adapt_first_conv

__all__ = [
    "VARIANTS",
    "BACKBONES",
    "PAPER_OFFSETS",
    "crop",
    "fuse_skip",
    "BilinearUpsampling",
    "VGG16Encoder",
    "SmallEncoder",
    "FCN",
]

VARIANTS = ("32s", "16s", "8s")
BACKBONES = ("vgg16", *RESNETS, "small")

# Crop offsets of the paper's Caffe models (VGG16 encoder with a 100-pixel pad on conv1_1).
PAPER_OFFSETS = {"pool4": 5, "pool3": 9, "32s": 19, "16s": 27, "8s": 31}

_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def crop(x: torch.Tensor, size: tuple[int, int], offset: int = 0) -> torch.Tensor:
    """The `size = (h, w)` window of `x (..., H, W)`, top-left corner at (offset, offset)."""
    h, w = size
    if offset < 0 or offset + h > x.shape[-2] or offset + w > x.shape[-1]:
        raise ValueError(
            f"cannot crop a {h}x{w} window at offset {offset} from a map of size "
            f"{x.shape[-2]}x{x.shape[-1]}"
        )
    return x[..., offset : offset + h, offset : offset + w]


def fuse_skip(upsampled: torch.Tensor, skip_scores: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """One FCN skip fusion: `upsampled (N, K, h, w)` plus the aligned window of `skip_scores`.

    `skip_scores (N, K, h', w')` are the class scores of a finer encoder map; the window of size
    `(h, w)` starting at `offset` covers the same image region as `upsampled`.
    """
    if upsampled.shape[:2] != skip_scores.shape[:2]:
        raise ValueError(
            f"upsampled {tuple(upsampled.shape)} and skip_scores {tuple(skip_scores.shape)} must "
            "agree in batch size and number of classes"
        )
    return upsampled + crop(skip_scores, upsampled.shape[-2:], offset)  # (N, K, h, w)


class BilinearUpsampling(nn.Module):
    """Fixed (not learned) bilinear upsampling by `factor`, each channel on its own.

    The transposed convolution `nn.ConvTranspose2d(C, C, kernel_size, stride=factor,
    padding=padding)` with the weights of `bilinear_kernel`, computed as a grouped convolution with
    one `(k, k)` filter shared by every channel. The filter is a buffer, not a parameter: it is
    never trained and not saved in the `state_dict` (it follows from `factor` and `kernel_size`).
    """

    def __init__(self, factor: int, kernel_size: int, padding: int = 0):
        super().__init__()
        check_positive_int("factor", factor)
        self.kernel_size, self.stride = (kernel_size, kernel_size), (factor, factor)
        self.padding = (padding, padding)
        self.register_buffer("filter", bilinear_kernel(1, 1, kernel_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.filter.expand(channels, 1, -1, -1)  # (C, 1, k, k), one filter for all
        return F.conv_transpose2d(
            x, weight, stride=self.stride, padding=self.padding, groups=channels
        )  # (N, C, (h - 1) * factor - 2 * padding + k, ...)

    def extra_repr(self) -> str:
        factor, kernel, padding = self.stride[0], self.kernel_size[0], self.padding[0]
        return f"factor={factor}, kernel_size={kernel}, padding={padding}"


class VGG16Encoder(nn.Module):
    """VGG16 convolutions with fc6/fc7 as convolutions; returns pool3, pool4 and fc7 maps.

    Shapes for an (N, C, H, W) input (the 100-pixel pad enlarges every map, ceil-mode pooling):
    pool3 (N, 256, ~(H+198)/8), pool4 (N, 512, ~(H+198)/16), fc7 (N, 4096, ~(H+198)/32 - 6).
    """

    channels = (256, 512, 4096)

    def __init__(self, in_channels: int = 3, weights: str | None = None):
        super().__init__()
        stages = []
        channels = in_channels
        for widths in _VGG16_STAGES:
            layers: list[nn.Module] = []
            for width in widths:
                padding = 100 if not stages and not layers else 1  # conv1_1 pads by 100 (paper)
                layers += [nn.Conv2d(channels, width, 3, padding=padding), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))  # Caffe pooling rounds up
            stages.append(layers)
        self.to_pool3 = nn.Sequential(*stages[0], *stages[1], *stages[2])
        self.to_pool4 = nn.Sequential(*stages[3])
        self.to_pool5 = nn.Sequential(*stages[4])
        # fc6 / fc7 of the classifier, read as convolutions (section 3.1)
        self.fc6 = nn.Sequential(nn.Conv2d(512, 4096, 7), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.fc7 = nn.Sequential(nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout(0.5))
        if weights is not None:
            self._load_torchvision(weights, in_channels)

    def _load_torchvision(self, weights: str, in_channels: int) -> None:
        vgg = torchvision.models.vgg16(weights=weights)
        ours = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        theirs = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
        theirs += [vgg.classifier[0], vgg.classifier[3]]  # Linear 25088 -> 4096 and 4096 -> 4096
        if in_channels != 3:  # the encoders' one rule: RGB filters averaged, a grey image kept
            theirs[0] = adapt_first_conv(theirs[0], in_channels)
        with torch.no_grad():
            for mine, source in zip(ours, theirs):
                mine.weight.copy_(source.weight.view_as(mine.weight))  # Linear: a conv over 7x7
                mine.bias.copy_(source.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool3 = self.to_pool3(x)  # (N, 256, H3, W3)
        pool4 = self.to_pool4(pool3)  # (N, 512, H4, W4)
        fc7 = self.fc7(self.fc6(self.to_pool5(pool4)))  # (N, 4096, H5 - 6, W5 - 6)
        return pool3, pool4, fc7


class SmallEncoder(nn.Module):
    """Five stages `ConvBNReLU(stride 2) -> ConvBNReLU`; returns the 1/8, 1/16, 1/32 maps.

    A few hundred thousand parameters: FCN experiments that train in seconds on a CPU. A 3x3 conv
    with stride 2 and padding 1 centres output pixel `y` on input pixel `2 y`, as in a ResNet.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 96, 128)):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must list 5 stage widths (strides 2 to 32), got {widths!r}")
        stages = []
        channels = in_channels
        for width in widths:
            stages.append(
                nn.Sequential(
                    ConvBNReLU(channels, width, 3, padding=1, stride=2),
                    ConvBNReLU(width, width, 3, padding=1),
                )
            )
            channels = width
        self.to_c3 = nn.Sequential(*stages[:3])
        self.to_c4 = stages[3]
        self.to_c5 = stages[4]
        self.channels = tuple(widths[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.to_c3(x)  # (N, w3, H/8, W/8), sizes rounded up
        c4 = self.to_c4(c3)  # (N, w4, H/16, W/16)
        c5 = self.to_c5(c4)  # (N, w5, H/32, W/32)
        return c3, c4, c5


class FCN(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s on a VGG16 (the paper), ResNet or small encoder."""

    def __init__(
        self,
        num_classes: int = 21,
        variant: str = "8s",
        backbone: str = "vgg16",
        in_channels: int = 3,
        backbone_weights: str | None = None,
        learn_final_upsampling: bool = False,
    ):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.backbone = check_choice("backbone", backbone, BACKBONES)
        self.paper_alignment = backbone == "vgg16"
        if self.paper_alignment:
            self.encoder = VGG16Encoder(in_channels, backbone_weights)
        elif backbone == "small":
            if backbone_weights is not None:
                raise ValueError(
                    f"backbone='small' has no pretrained weights, got backbone_weights="
                    f"{backbone_weights!r}; use None or a ResNet/VGG16 backbone"
                )
            self.encoder = SmallEncoder(in_channels)
        else:
            self.encoder = ResNetEncoder(backbone, in_channels, backbone_weights)  # stride 32
        c3, c4, c5 = self.encoder.channels[-3:]  # the ResNet's stride-4 map is not fused

        self.score_fr = nn.Conv2d(c5, num_classes, 1)  # the classifier, at 1/32
        if variant in ("16s", "8s"):
            self.score_pool4 = self._zero_conv(c4, num_classes)
            self.upscore2 = self._upsampler(2)
        if variant == "8s":
            self.score_pool3 = self._zero_conv(c3, num_classes)
            self.upscore_pool4 = self._upsampler(2)
        final_factor = {"32s": 32, "16s": 16, "8s": 8}[variant]
        self.learn_final_upsampling = learn_final_upsampling
        if learn_final_upsampling:
            self.upscore_final = self._upsampler(final_factor)
        else:  # the paper: fixed bilinear interpolation, no weights
            kernel, padding = self._upsampling_geometry(final_factor)
            self.upscore_final = BilinearUpsampling(final_factor, kernel, padding)

    @staticmethod
    def _zero_conv(in_channels: int, num_classes: int) -> nn.Conv2d:
        conv = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def _upsampling_geometry(self, factor: int) -> tuple[int, int]:
        """(kernel, padding) of a `factor`x upsampling on this encoder's sampling grid."""
        if self.paper_alignment:  # the paper: kernel 2f, no padding, crop afterwards
            return 2 * factor, 0
        return 2 * factor - 1, factor - 1  # pixel y -> pixel f * y, linear in between

    def _upsampler(self, factor: int) -> nn.ConvTranspose2d:
        """Learnable `factor`x upsampling initialised to bilinear interpolation (no bias)."""
        k = self.num_classes
        kernel, padding = self._upsampling_geometry(factor)
        up = nn.ConvTranspose2d(k, k, kernel, stride=factor, padding=padding, bias=False)
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(k, k, kernel))
        return up

    def _upsample(self, layer: nn.Module, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Upsample `x`: to exactly `size` (ResNet, small), or larger, to be cropped (VGG16)."""
        if self.paper_alignment:
            return layer(x)
        # repeat the last row and column so the pixels past the last centre are not faded by zeros
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")  # (N, K, h + 1, w + 1)
        return crop(layer(x), size)  # (N, K, f * h + 1, f * w + 1) -> (N, K, *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels)
        size = x.shape[-2:]
        offsets = PAPER_OFFSETS if self.paper_alignment else dict.fromkeys(PAPER_OFFSETS, 0)
        pool3, pool4, top = self.encoder(x)[-3:]  # 1/8, 1/16, 1/32 (VGG16: larger, cropped)
        score = self.score_fr(top)  # (N, K, h32, w32)
        if self.variant in ("16s", "8s"):
            score = self._upsample(self.upscore2, score, pool4.shape[-2:])  # (N, K, h16, w16)
            score = fuse_skip(score, self.score_pool4(pool4), offsets["pool4"])
        if self.variant == "8s":
            score = self._upsample(self.upscore_pool4, score, pool3.shape[-2:])  # (N, K, h8, w8)
            score = fuse_skip(score, self.score_pool3(pool3), offsets["pool3"])
        score = self._upsample(self.upscore_final, score, size)  # (N, K, >= H, >= W)
        return crop(score, size, offsets[self.variant])  # (N, K, H, W)
