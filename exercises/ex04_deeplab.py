"""Exercise 04: dilated convolution, ASPP and CRF refinement.

Four pieces of DeepLab:
1. `receptive_field`: how far one output pixel of a stack of conv/pool layers sees into the input.
2. `dilated_conv_output_size`: the output size of a (dilated, strided, padded) convolution.
3. `ASPP.forward`: Atrous Spatial Pyramid Pooling (DeepLabV3, Sec. 3.3); the layers are given.
4. `mean_field_step`: one mean-field update of a dense CRF with Gaussian kernels
   (Krähenbühl and Koltun, NeurIPS 2011), over all pairs of pixels of a tiny image.

Check your work with `python -m course_grader ex04`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """Receptive field (in input pixels, along one side) of the last layer of a stack.

    `layers` lists (kernel, stride, dilation) from the input onwards. Start from r = 1 (one pixel)
    and a jump j = 1 (distance in input pixels between neighbouring positions of the current map).
    A layer with effective kernel size k_eff = dilation * (kernel - 1) + 1 grows the field by
    (k_eff - 1) * j, then multiplies j by its stride. An empty stack returns 1.
    Example: three 3x3 convs with stride 1 -> 7; 3x3 convs with dilations 1, 2, 4 -> 15.
    """
    # HINT: loop over the layers, keeping two numbers (field, jump); update the field before the jump.
    raise NotImplementedError


def dilated_conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length along one axis of `nn.Conv2d(kernel_size=kernel, stride=stride, padding=padding,
    dilation=dilation)` applied to an input of length `size`.

    Use the effective kernel size (the dilated kernel spans dilation * (kernel - 1) + 1 pixels)
    in the usual formula floor((size + 2 * padding - effective) / stride) + 1.
    Raises ValueError when the padded input is shorter than the effective kernel (no output).
    """
    # HINT: compute the effective kernel size first; // is floor division for non-negative numbers.
    raise NotImplementedError


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> nn.Sequential:
    """Conv (no bias, 'same' padding), BatchNorm, ReLU."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling. (N, in_channels, H, W) -> (N, out_channels, H, W).

    The layers are built for you; write `forward`.
    """

    def __init__(
        self, in_channels: int, out_channels: int = 256, atrous_rates: tuple[int, ...] = (6, 12, 18)
    ):
        super().__init__()
        self.conv1x1 = conv_bn_relu(in_channels, out_channels, 1)
        self.atrous = nn.ModuleList(
            conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in atrous_rates
        )
        self.pooling = conv_bn_relu(
            in_channels, out_channels, 1
        )  # runs on the (N, C, 1, 1) image average
        self.project = nn.Sequential(
            nn.Conv2d((2 + len(atrous_rates)) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the branches on x (N, C_in, H, W), in this order: `conv1x1`, each module of `atrous`,
        then the image-pooling branch: average x over H and W to (N, C_in, 1, 1), apply `pooling`,
        and repeat the (N, C_out, 1, 1) result over H x W. Concatenate the branches along the
        channels and apply `project`. Returns (N, C_out, H, W).
        """
        # HINT: F.adaptive_avg_pool2d(x, 1) gives the image average; .expand(-1, -1, H, W) repeats
        # HINT: it without copying. torch.cat(list_of_branches, dim=1) joins along the channels.
        raise NotImplementedError


def mean_field_step(
    probs: torch.Tensor,
    image: torch.Tensor,
    q: torch.Tensor,
    spatial_std: float = 3.0,
    spatial_weight: float = 3.0,
    bilateral_spatial_std: float = 80.0,
    bilateral_color_std: float = 13.0,
    bilateral_weight: float = 10.0,
) -> torch.Tensor:
    """One mean-field update of a fully connected CRF with a Potts compatibility, over all pairs.

    probs (K, H, W): the network's probabilities (unary energy psi_u = -log probs);
    image (C, H, W) in [0, 1], compared on the 0-255 scale (multiply by 255);
    q (K, H, W): the current marginals. For pixels i != j at positions p (row, col) and colours I:
        k(i, j) = spatial_weight   * exp(-|p_i - p_j|^2 / (2 spatial_std^2))
                + bilateral_weight * exp(-|p_i - p_j|^2 / (2 bilateral_spatial_std^2)
                                         - |I_i - I_j|^2 / (2 bilateral_color_std^2))
        m_i(l) = sum_{j != i} k(i, j) q_j(l)
        new q_i(l) = softmax over l of ( log probs_i(l) - sum_{l' != l} m_i(l') )
    Returns the new marginals (K, H, W).
    """
    # HINT: flatten to H*W pixels; torch.cdist(a, b) ** 2 gives every squared distance at once;
    # HINT: zero the diagonal (j != i); the messages are one matrix product (HW, HW) @ (HW, K).
    raise NotImplementedError
