"""Exercise 03: a U-Net (Ronneberger, Fischer and Brox, 2015) with explicit skip connections.

1. `DoubleConv`: two 3x3 convolutions, each followed by batch norm (optional) and ReLU.
2. `center_crop`: the central window of a feature map, used by the paper's "valid" U-Net to match
   an encoder map to the smaller decoder map before concatenating them.
3. `UNet.forward`: encoder, bottleneck, decoder with skip connections, for any depth. The layers
   are built for you in `UNet.__init__`.

Your `UNet` is checked against `course_lib.models.UNet`: same parameter count, and the same output
when it is given the same weights.

Check your work with `python -m course_grader ex03`.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H', W'): [conv 3x3 -> BN -> ReLU] twice.

    padding="same": 1 pixel of zero padding per conv, H' = H. padding="valid" (the paper): no
    padding, each conv removes 2 pixels, H' = H - 4. Any other `padding` raises a ValueError.
    With `batch_norm=True` the convs have no bias (BN follows); without, they keep their bias.
    Keep this layer order (conv, BN, ReLU, conv, BN, ReLU) in one `nn.Sequential` called `block`:
    the grader copies weights in that order.
    """

    def __init__(
        self, in_channels: int, out_channels: int, padding: str = "same", batch_norm: bool = True
    ):
        super().__init__()
        # BEGIN SOLUTION
        # HINT: pad = 1 if padding == "same" else 0; build a list of layers for the two convs,
        # HINT: nn.Conv2d(..., kernel_size=3, padding=pad, bias=not batch_norm), nn.BatchNorm2d,
        # HINT: nn.ReLU(inplace=True), and wrap it: self.block = nn.Sequential(*layers).
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        pad = 1 if padding == "same" else 0
        layers = []
        for cin in (in_channels, out_channels):
            layers.append(
                nn.Conv2d(cin, out_channels, kernel_size=3, padding=pad, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        # HINT: one line.
        return self.block(x)
        # END SOLUTION


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central window of size `size = (h, w)` of `x` (N, C, H, W).

    The window starts at row (H - h) // 2 and column (W - w) // 2.
    Example: a 7x8 map cropped to 3x4 keeps rows 2..4 and columns 2..5.
    """
    # BEGIN SOLUTION
    # HINT: compute top and left, then slice x[..., top:top + h, left:left + w].
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]
    # END SOLUTION


class UNet(nn.Module):
    """U-Net with `depth` poolings. (N, in_channels, H, W) -> (N, num_classes, H', W').

    padding="same": H' = H when H and W are multiples of 2**depth. padding="valid": the paper
    (572 -> 388 for depth 4). Level l of the encoder has base_channels * 2**l channels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "same",
        batch_norm: bool = True,
    ):
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(DoubleConv(channels, width, padding, batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], padding, batch_norm)
        # decoder level i (from the bottom): upsample 2x and halve the channels, then DoubleConv on
        # the concatenation [encoder map, upsampled map]
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2))
            self.decoder.append(DoubleConv(2 * width, width, padding, batch_norm))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        # HINT: keep the encoder outputs in a list `skips` (before pooling). In the decoder, walk
        # HINT: zip(self.upsamplers, self.decoder, reversed(skips)): upsample, centre-crop the
        # HINT: skip to the upsampled size, torch.cat([skip, x], dim=1) (skip first), decode.
        # HINT: End with self.head.
        skips = []
        for encode in self.encoder:
            x = encode(x)  # (N, C_l, H_l, W_l)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, decode, skip in zip(self.upsamplers, self.decoder, reversed(skips)):
            x = upsample(x)  # (N, C_l, h, w)
            x = torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1)  # (N, 2 C_l, h, w)
            x = decode(x)
        return self.head(x)
        # END SOLUTION
