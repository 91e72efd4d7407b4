"""Tests for course_lib.models.unet: paper configuration, valid/same padding, skips, upsampling."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.models.unet import UNet, center_crop
from course_lib.utils import count_parameters


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _paper_count(in_channels=1, num_classes=2, base=64, depth=4):
    """Parameters of the paper's Fig. 1 network, layer by layer (no batch norm)."""
    widths = [base * 2**i for i in range(depth + 1)]
    total, cin = 0, in_channels
    for w in widths:  # encoder levels and bottleneck: two 3x3 convs each
        total += _conv(cin, w, 3) + _conv(w, w, 3)
        cin = w
    for w in reversed(widths[:-1]):  # up-conv 2x2 halves channels, then two 3x3 convs on the concat
        total += _conv(2 * w, w, 2) + _conv(2 * w, w, 3) + _conv(w, w, 3)
    return total + _conv(widths[0], num_classes, 1)


def test_paper_configuration_572_to_388_and_parameter_count():
    torch.manual_seed(0)
    model = UNet(
        in_channels=1, num_classes=2, base_channels=64, depth=4, padding="valid", batch_norm=False
    ).eval()
    assert count_parameters(model) == _paper_count() == 31_030_658
    assert model.output_size(572) == 388
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert torch.isfinite(out).all()


def test_valid_sizes_follow_the_paper_arithmetic():
    # depth 4: input = 16 * t + 60 with bottleneck input t, output = 16 * (t - 4) - 60
    model = UNet(1, 2, base_channels=2, depth=4, padding="valid", batch_norm=False)
    for t in (8, 9, 12):
        assert model.output_size(16 * t + 60) == 16 * (t - 4) - 60
        assert model.output_size(16 * t + 61) is None
    # depth 2 small enough to run: input 4 t + 12, output 4 (t - 4) - 12
    small = UNet(1, 3, base_channels=2, depth=2, padding="valid")
    for t in (8, 9):
        out = small(torch.randn(2, 1, 4 * t + 12, 4 * 9 + 12))
        assert out.shape == (2, 3, 4 * (t - 4) - 12, 4 * (9 - 4) - 12)


def test_valid_padding_rejects_sizes_that_do_not_fit_and_names_the_nearest():
    model = UNet(1, 2, base_channels=2, depth=4, padding="valid")
    with pytest.raises(ValueError, match=r"height=570.*556 or 572"):
        model(torch.randn(1, 1, 570, 572))
    with pytest.raises(ValueError, match=r"width=100"):
        model(torch.randn(1, 1, 572, 100))


def _reference_depth1_valid(x, model):
    """A depth-1 valid U-Net written with torch.nn.functional only, crop offsets by hand."""
    enc1, enc2 = model.encoder[0][0][0], model.encoder[0][1][0]
    bot1, bot2 = model.bottleneck[0][0], model.bottleneck[1][0]
    up = model.upsamplers[0]
    dec1, dec2 = model.decoder[0][0][0], model.decoder[0][1][0]
    skip = F.relu(F.conv2d(F.relu(F.conv2d(x, enc1.weight, enc1.bias)), enc2.weight, enc2.bias))
    y = F.max_pool2d(skip, 2)
    y = F.relu(F.conv2d(F.relu(F.conv2d(y, bot1.weight, bot1.bias)), bot2.weight, bot2.bias))
    y = F.conv_transpose2d(y, up.weight, up.bias, stride=2)
    # input 24: skip 20x20, pooled 10, bottleneck 6, upsampled 12 -> crop offset (20 - 12) / 2 = 4
    y = torch.cat([skip[..., 4:16, 4:16], y], dim=1)
    y = F.relu(F.conv2d(F.relu(F.conv2d(y, dec1.weight, dec1.bias)), dec2.weight, dec2.bias))
    return F.conv2d(y, model.head.weight, model.head.bias)


def test_valid_forward_matches_a_functional_reference_with_hand_computed_crop():
    torch.manual_seed(1)
    model = UNet(2, 3, base_channels=4, depth=1, padding="valid", batch_norm=False)
    x = torch.randn(2, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_depth1_valid(x, model))


def test_center_crop_takes_the_middle():
    x = torch.arange(7 * 8).view(1, 1, 7, 8)
    torch.testing.assert_close(center_crop(x, (3, 4)), x[..., 2:5, 2:6])
    with pytest.raises(ValueError, match="larger"):
        center_crop(x, (9, 4))


@pytest.mark.parametrize("size", [(1, 1), (15, 9), (16, 16), (31, 50)])
def test_same_padding_returns_input_size(size):
    model = UNet(3, 4, base_channels=4, depth=3).eval()
    assert model(torch.randn(1, 3, *size)).shape == (1, 4, *size)


def test_same_padding_pads_symmetrically_with_zeros_and_crops_back():
    # H = 10 with depth 2 is padded to 12 (1 zero row on each side); W = 8 needs nothing
    torch.manual_seed(2)
    model = UNet(1, 2, base_channels=4, depth=2, batch_norm=False).eval()
    x = torch.randn(1, 1, 10, 8)
    padded = F.pad(x, (0, 0, 1, 1))  # (1, 1, 12, 8), no padding needed inside forward
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., 1:11, :])


def test_upsampling_parameter_difference():
    # per level with C = 2w input channels: transpose 2x2 has 4 C w + w, bilinear + 1x1 has C w + w
    transpose = UNet(1, 2, base_channels=8, depth=3, upsampling="transpose")
    bilinear = UNet(1, 2, base_channels=8, depth=3, upsampling="bilinear")
    expected = sum(3 * (2 * w) * w for w in (8, 16, 32))
    assert count_parameters(transpose) - count_parameters(bilinear) == expected
    out = bilinear(torch.randn(2, 1, 21, 19))
    assert out.shape == (2, 2, 21, 19)


def test_without_skips_the_decoder_sees_only_the_upsampled_path():
    with_skips = UNet(1, 2, base_channels=8, depth=3)
    without = UNet(1, 2, base_channels=8, depth=3, skip_connections=False)
    # the first decoder conv of each level loses w input channels: 9 * w * w weights
    assert count_parameters(with_skips) - count_parameters(without) == sum(
        9 * w * w for w in (8, 16, 32)
    )
    out = without(torch.randn(2, 1, 20, 20))
    assert out.shape == (2, 2, 20, 20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"upsampling": "nearest"}, "upsampling must be"),
        ({"padding": "full"}, "padding must be"),
        ({"depth": 0}, "depth"),
        ({"base_channels": 2.5}, "base_channels"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        UNet(**kwargs)


def test_forward_rejects_wrong_channels():
    with pytest.raises(ValueError, match="in_channels=3"):
        UNet(3, 2, base_channels=4, depth=2)(torch.randn(1, 1, 16, 16))
