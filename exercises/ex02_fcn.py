"""Exercise 02: the pieces of a Fully Convolutional Network (Long, Shelhamer and Darrell, 2015).

1. `transposed_conv_output_size`: how large the output of `nn.ConvTranspose2d` is.
2. `bilinear_kernel`: the weights that make a transposed convolution upsample bilinearly.
3. `linear_to_conv`: a fully connected layer rewritten as an equivalent convolution.
4. `skip_fusion`: one FCN skip step (upsample the coarse scores 2x, score the finer encoder map,
   crop it into alignment and add).
5. `fcn8s_head`: the whole FCN-8s head on the three maps of an encoder such as torchvision's
   ResNet-18 (score each map, fuse from coarse to fine, upsample to the image).

Check your work with `python -m course_grader ex02`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def transposed_conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0
) -> int:
    """Output length along one axis of `nn.ConvTranspose2d(kernel_size=kernel, stride=stride,
    padding=padding, output_padding=output_padding)` for an input of length `size`.

    A transposed convolution spreads each input pixel over `kernel` output pixels, `stride` apart:
    the full result has (size - 1) * stride + kernel pixels; `padding` removes that many from each
    end and `output_padding` adds that many at the end.
    Example: size 4, kernel 4, stride 2, padding 1 -> 8 (an exact 2x upsampling).
    """
    # HINT: (size - 1) * stride + kernel pixels, minus padding on both sides, plus output_padding.
    raise NotImplementedError


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights (channels, channels, kernel_size, kernel_size) of an `nn.ConvTranspose2d` that
    upsamples each channel on its own by bilinear interpolation.

    Along one axis the filter is a triangle: with factor = (kernel_size + 1) // 2 and
    centre = factor - 1 for an odd kernel_size, factor - 0.5 for an even one, tap t has weight
    1 - |t - centre| / factor. The 2-D filter is the outer product of two such triangles. Channel c
    feeds only output channel c: weight[c, c] is the filter, weight[c, d] is zero for c != d.
    Example: kernel_size 4 gives the taps 0.25, 0.75, 0.75, 0.25.
    """
    # HINT: build the 1-D triangle with torch.arange, take torch.outer, and fill the diagonal
    # HINT: weight[c, c] of a zero tensor of shape (channels, channels, k, k).
    raise NotImplementedError


def linear_to_conv(
    weight: torch.Tensor, bias: torch.Tensor, in_channels: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite a fully connected layer as a convolution that gives the same numbers.

    The layer computes `F.linear(x.flatten(1), weight, bias)` on feature maps x of shape
    (N, in_channels, height, width), so `weight` is (out_features, in_channels * height * width).
    Return `(conv_weight, conv_bias)` with conv_weight of shape (out_features, in_channels, height,
    width) such that `F.conv2d(x, conv_weight, conv_bias)` is (N, out_features, 1, 1) and equals
    the linear layer. On a larger map the same convolution slides and gives a map of scores.
    Raises ValueError when `weight` does not have in_channels * height * width columns.
    """
    # HINT: flatten(1) orders the features as (channel, row, column): a reshape is all it takes.
    raise NotImplementedError


def skip_fusion(
    coarse_scores: torch.Tensor,
    skip_features: torch.Tensor,
    score_weight: torch.Tensor,
    score_bias: torch.Tensor,
    up_weight: torch.Tensor,
    offset: int,
) -> torch.Tensor:
    """One skip step of FCN-16s/8s: returns the fused scores (N, K, 2h + 2, 2w + 2).

    - `coarse_scores` (N, K, h, w): class scores of the coarser level;
    - `skip_features` (N, C, H', W'): a finer encoder map (pool4 or pool3);
    - `score_weight` (K, C, 1, 1) and `score_bias` (K,): the 1x1 score layer of that map;
    - `up_weight` (K, K, 4, 4): the 2x upsampling, a transposed convolution with stride 2, no
      padding and no bias;
    - `offset`: where the upsampled map starts inside the scored skip map (the same offset for rows
      and columns).
    Upsample the coarse scores, score the skip features, crop the skip scores to the size of the
    upsampled map starting at (offset, offset), and add.
    """
    # HINT: F.conv_transpose2d(coarse_scores, up_weight, stride=2), F.conv2d for the score layer,
    # HINT: then slice [..., offset:offset + h_up, offset:offset + w_up] before adding.
    raise NotImplementedError


def fcn8s_head(
    c3: torch.Tensor,
    c4: torch.Tensor,
    c5: torch.Tensor,
    score_weights: list[torch.Tensor],
    score_biases: list[torch.Tensor],
    image_size: tuple[int, int],
) -> torch.Tensor:
    """The FCN-8s head on an encoder's maps at 1/8, 1/16 and 1/32 of the image: logits (N, K, H, W).

    - `c3` (N, C3, h3, w3), `c4` (N, C4, h4, w4), `c5` (N, C5, h5, w5): the encoder maps, e.g.
      the outputs of `layer2`, `layer3` and `layer4` of torchvision's ResNet-18 (128, 256 and 512
      channels; sizes rounded up, so h4 = ceil(h3 / 2) and so on);
    - `score_weights`: three 1x1 convolution weights (K, C3, 1, 1), (K, C4, 1, 1), (K, C5, 1, 1),
      and `score_biases`: three (K,) biases, for c3, c4 and c5 in that order;
    - `image_size`: (H, W) of the image.
    Score each map with its 1x1 convolution. Upsample the c5 scores to the size of the c4 scores
    and add them (FCN-16s); upsample that sum to the size of the c3 scores and add them (FCN-8s);
    upsample the result to `image_size`. Every upsampling is bilinear interpolation,
    `F.interpolate(..., mode="bilinear", align_corners=False)`.
    """
    # HINT: F.conv2d(c, weight, bias) scores a map; F.interpolate(x, size=..., mode="bilinear",
    # HINT: align_corners=False) upsamples to an exact size, so every sum lines up.
    raise NotImplementedError
