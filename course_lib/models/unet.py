"""U-Net (Ronneberger, Fischer and Brox, 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"). `(N, in_channels, H, W)` float -> logits `(N, num_classes, H', W')`.

An encoder halves the resolution `depth` times (DoubleConv, then 2x2 max pooling) while doubling the
channels; a decoder doubles it back (2x2 transposed convolution, or bilinear upsampling followed by
a 1x1 convolution) and concatenates, at each level, the encoder map of the same resolution: the skip
connection that carries precise locations past the bottleneck.

- `padding="same"` (default): H' = H, W' = W for any input size; the input is zero-padded to a
  multiple of `2**depth` inside `forward` and the logits are cropped back.
- `padding="valid"`: the paper. Every 3x3 convolution shrinks its input by 2 pixels, encoder maps
  are centre-cropped before concatenation, and a 572x572 input gives 388x388 logits (depth 4).
  `UNet.output_size(size)` says what comes out, and wrong input sizes raise a ValueError that
  names the nearest sizes that work.

The paper configuration `UNet(in_channels=1, num_classes=2, base_channels=64, depth=4,
padding="valid", batch_norm=False)` has 31,030,658 parameters (about 31.03 M),
the count obtained layer by layer from Fig. 1 of the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check_images, check_positive_int
from course_lib.models.blocks import DoubleConv

__all__ = ["center_crop", "UNet"]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central `size = (h, w)` window of `x (..., H, W)`, as in the paper's skip connections."""
    height, width = x.shape[-2:]
    h, w = size
    if h > height or w > width:
        raise ValueError(f"cannot centre-crop a {height}x{width} map to a larger size {h}x{w}")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top : top + h, left : left + w]


class UNet(nn.Module):
    """U-Net with `depth` poolings; level `i` of the encoder has `base_channels * 2**i` channels."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        upsampling: str = "transpose",
        padding: str = "same",
        batch_norm: bool = True,
        skip_connections: bool = True,
    ):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        check_positive_int("base_channels", base_channels)
        self.depth = check_positive_int("depth", depth)
        if upsampling not in ("transpose", "bilinear"):
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear', got {upsampling!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.upsampling = upsampling
        self.padding = padding
        self.skip_connections = bool(skip_connections)

        widths = [
            base_channels * 2**level for level in range(depth + 1)
        ]  # encoder levels + bottleneck
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(DoubleConv(channels, width, padding=padding, batch_norm=batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], padding=padding, batch_norm=batch_norm)

        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(self._upsampler(2 * width, width, upsampling))
            decoder_in = 2 * width if self.skip_connections else width
            self.decoder.append(
                DoubleConv(decoder_in, width, padding=padding, batch_norm=batch_norm)
            )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    @staticmethod
    def _upsampler(in_channels: int, out_channels: int, upsampling: str) -> nn.Module:
        """Double H and W and halve the channels."""
        if upsampling == "transpose":
            return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )

    def output_size(self, size: int) -> int | None:
        """Output side length for an input side `size`, or None when `size` does not fit the net.

        "same" padding: always `size`. "valid" padding: each 3x3 conv removes 2 pixels, every
        pooling needs an even size, and every map must keep at least one pixel.
        """
        if self.padding == "same":
            return size
        for _ in range(self.depth):  # encoder: DoubleConv then pool
            size -= 4
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= 4  # bottleneck
        for _ in range(self.depth):  # decoder: upsample then DoubleConv
            if size < 1:
                return None
            size = 2 * size - 4
        return size if size >= 1 else None

    def _check_valid_size(self, name: str, size: int) -> None:
        if self.output_size(size) is not None:
            return
        below = next((s for s in range(size - 1, 0, -1) if self.output_size(s)), None)
        above = next(
            s for s in range(size + 1, size + 2 ** (self.depth + 3)) if self.output_size(s)
        )
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"with padding='valid' and depth={self.depth} the input {name} must allow every "
            "pooling "
            f"to halve an even size; got {name}={size}, nearest sizes that work: {nearest} "
            "(or use padding='same', which takes any size)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels)
        height, width = x.shape[-2:]
        if self.padding == "valid":
            self._check_valid_size("height", height)
            self._check_valid_size("width", width)
        else:
            multiple = 2**self.depth
            pad_h, pad_w = -height % multiple, -width % multiple
            top, left = pad_h // 2, pad_w // 2
            x = F.pad(x, (left, pad_w - left, top, pad_h - top))  # (N, C_in, H_pad, W_pad)

        skips = []
        for encode in self.encoder:
            x = encode(x)  # (N, C_l, H_l, W_l)
            skips.append(x)
            x = self.pool(x)  # (N, C_l, H_l / 2, W_l / 2)
        x = self.bottleneck(x)  # (N, C_depth, H_depth, W_depth)

        for upsample, decode, skip in zip(self.upsamplers, self.decoder, reversed(skips)):
            x = upsample(x)  # (N, C_l, H_l', W_l')
            if self.skip_connections:
                skip = center_crop(skip, x.shape[-2:])  # a no-op with "same" padding
                x = torch.cat([skip, x], dim=1)  # (N, 2 * C_l, H_l', W_l')
            x = decode(x)  # (N, C_l, H_l' [- 4], W_l' [- 4])
        logits = self.head(x)  # (N, num_classes, H', W')

        if self.padding == "same":
            logits = logits[..., top : top + height, left : left + width]  # (N, K, H, W)
        return logits
