"""Building blocks shared by the course models.

- `ConvBNReLU`: the workhorse `conv -> batch norm -> ReLU` (batch norm optional, as in the original
  U-Net, which had none).
- `DoubleConv`: two `ConvBNReLU` in a row, one level of a U-Net (Ronneberger et al., 2015).
- `bilinear_kernel`: the weights that turn a transposed convolution into bilinear interpolation,
  the initialisation of the learnable upsampling layers of FCN (Long et al., 2015, section 3.3).

Tensor contract: `(N, C_in, H, W)` float -> `(N, C_out, H', W')` float, with H' = H for
`padding="same"` and H' = H - 4 for `padding="valid"` in `DoubleConv`.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.checks import check_positive_int

__all__ = ["ConvBNReLU", "DoubleConv", "bilinear_kernel"]


def _check_padding(padding: str) -> int:
    """Map "same" / "valid" to the pixel padding of a 3x3 convolution."""
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return 1 if padding == "same" else 0


class ConvBNReLU(nn.Sequential):
    """`Conv2d(kernel_size) -> BatchNorm2d -> ReLU`; without batch norm the conv keeps its bias.

    With batch norm the conv bias is dropped: BN subtracts the mean, so a bias would be wasted.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        batch_norm: bool = True,
    ):
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=not batch_norm,
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 `ConvBNReLU`: one level of the U-Net encoder or decoder.

    `padding="same"` keeps H, W; `padding="valid"` (the paper) removes 2 pixels per convolution,
    so the output is 4 pixels smaller in each direction.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        padding: str = "same",
        batch_norm: bool = True,
    ):
        pad = _check_padding(padding)
        mid_channels = out_channels if mid_channels is None else mid_channels
        super().__init__(
            ConvBNReLU(in_channels, mid_channels, 3, padding=pad, batch_norm=batch_norm),
            ConvBNReLU(mid_channels, out_channels, 3, padding=pad, batch_norm=batch_norm),
        )


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """Weights `(in_channels, out_channels, k, k)` of an `nn.ConvTranspose2d` that upsamples
    bilinearly.

    Each channel is upsampled on its own (a diagonal over channels), so `in_channels` must equal
    `out_channels`. With stride `s`, kernel `2s` and padding `s // 2` the transposed convolution
    equals `F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)` away from the
    border; with kernel `2s - 1` and padding `s - 1` it interpolates between pixel centres that sit
    at `s * y` (the sampling grid of strided convolutions with "same" padding).
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    check_positive_int("kernel_size", kernel_size)
    if in_channels != out_channels:
        raise ValueError(
            "bilinear_kernel upsamples each channel on its own, so in_channels must equal "
            f"out_channels; got in_channels={in_channels}, out_channels={out_channels}"
        )
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = torch.arange(kernel_size, dtype=torch.float64)
    profile = 1 - (taps - center).abs() / factor  # (k,) a triangle peaking at the centre
    filt = (profile[:, None] * profile[None, :]).float()  # (k, k)
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    index = torch.arange(in_channels)
    weight[index, index] = filt
    return weight
