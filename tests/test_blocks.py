"""Tests for course_lib.models.blocks: bilinear upsampling kernels, ConvBNReLU, DoubleConv."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check_images
from course_lib.models.blocks import ConvBNReLU, DoubleConv, bilinear_kernel


def _bilinear_upsampler(channels, stride, kernel_size, padding):
    up = nn.ConvTranspose2d(channels, channels, kernel_size, stride, padding, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, channels, kernel_size))
    return up


def test_bilinear_kernel_hand_computed_values():
    # kernel 4 (stride 2): centre at 1.5, factor 2 -> taps 1 - |t - 1.5| / 2 = .25 .75 .75 .25
    profile = torch.tensor([0.25, 0.75, 0.75, 0.25])
    weight = bilinear_kernel(2, 2, 4)
    assert weight.shape == (2, 2, 4, 4)
    torch.testing.assert_close(weight[0, 0], torch.outer(profile, profile))
    torch.testing.assert_close(weight[1, 1], torch.outer(profile, profile))
    torch.testing.assert_close(weight[0, 1], torch.zeros(4, 4))  # channels stay separate
    # kernel 3 (odd): centre at 1, factor 2 -> .5 1 .5
    profile = torch.tensor([0.5, 1.0, 0.5])
    torch.testing.assert_close(bilinear_kernel(1, 1, 3)[0, 0], torch.outer(profile, profile))


@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_transposed_conv_equals_bilinear_interpolation_in_the_interior(stride):
    torch.manual_seed(stride)
    x = torch.randn(2, 3, 7, 9)
    up = _bilinear_upsampler(3, stride, 2 * stride, stride // 2)
    with torch.no_grad():
        got = up(x)  # (2, 3, 7 s, 9 s)
    expected = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
    assert got.shape == expected.shape
    # the border band of width `stride` differs: interpolation clamps, the transposed conv sees 0
    torch.testing.assert_close(
        got[..., stride:-stride, stride:-stride], expected[..., stride:-stride, stride:-stride]
    )
    assert not torch.allclose(got, expected)  # the border really is different


@pytest.mark.parametrize("stride", [2, 3, 8])
def test_odd_kernel_interpolates_between_strided_pixel_centres(stride):
    # kernel 2s - 1, padding s - 1 puts input pixel y at output s * y; between two input pixels the
    # output is linear interpolation, which is bilinear interpolation with align_corners=True on the
    # grid of size s * (h - 1) + 1.
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 6)
    up = _bilinear_upsampler(2, stride, 2 * stride - 1, stride - 1)
    with torch.no_grad():
        got = up(x)
    size = (stride * 4 + 1, stride * 5 + 1)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    torch.testing.assert_close(got[..., : size[0], : size[1]], expected)


def test_bilinear_kernel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must equal out_channels"):
        bilinear_kernel(3, 4, 4)
    with pytest.raises(ValueError, match="kernel_size"):
        bilinear_kernel(3, 3, 0)
    with pytest.raises(TypeError, match="in_channels"):
        bilinear_kernel(3.0, 3, 4)


def test_conv_bn_relu_drops_bias_only_with_batch_norm():
    with_bn = ConvBNReLU(3, 8)
    assert with_bn[0].bias is None and isinstance(with_bn[1], nn.BatchNorm2d)
    without_bn = ConvBNReLU(3, 8, batch_norm=False)
    assert without_bn[0].bias is not None and len(without_bn) == 2
    # parameters: 3*8*9 weights + 8 BN weights + 8 BN biases; without BN: 3*8*9 + 8 conv biases
    assert sum(p.numel() for p in with_bn.parameters()) == 3 * 8 * 9 + 16
    assert sum(p.numel() for p in without_bn.parameters()) == 3 * 8 * 9 + 8


@pytest.mark.parametrize("padding, shrink", [("same", 0), ("valid", 4)])
def test_double_conv_output_size(padding, shrink):
    block = DoubleConv(2, 5, padding=padding)
    out = block(torch.randn(2, 2, 13, 10))
    assert out.shape == (2, 5, 13 - shrink, 10 - shrink)
    assert (out >= 0).all()  # ends with a ReLU


def test_double_conv_rejects_unknown_padding():
    with pytest.raises(ValueError, match="padding must be 'same' or 'valid'"):
        DoubleConv(2, 5, padding="full")


def test_check_images_messages():
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_images([[1.0]], 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        check_images(torch.zeros(3, 8, 8), 3)
    with pytest.raises(ValueError, match="in_channels=3"):
        check_images(torch.zeros(1, 1, 8, 8), 3)
    with pytest.raises(TypeError, match="floating point"):
        check_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 3)
