"""Tests for course_lib.models.fastscnn: shapes, gradients, blocks against independent code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.models.fastscnn import (
    DepthwiseSeparableConv,
    FastSCNN,
    InvertedResidual,
    PyramidPooling,
)

SMALL = dict(
    downsample_channels=(8, 12, 16),
    block_channels=(16, 24, 32),
    num_blocks=(1, 1, 1),
    expansion=2,
    fusion_channels=16,
)


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (9, 7), (1, 1)])
def test_logits_at_input_size_for_any_size(size):
    torch.manual_seed(0)
    model = FastSCNN(num_classes=5, in_channels=3, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 5, *size)
    assert torch.isfinite(out).all()


def test_in_channels_and_train_mode_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = FastSCNN(num_classes=2, in_channels=1, **SMALL).train()
    x = torch.rand(2, 1, 47, 41)
    target = torch.randint(0, 2, (2, 47, 41))
    F.cross_entropy(model(x), target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_batch_one_trains_when_the_coarse_map_has_several_pixels():
    model = FastSCNN(num_classes=3, **SMALL).train()
    out = model(torch.rand(1, 3, 70, 70))  # 1/32 map is 3 x 3
    out.mean().backward()
    assert out.shape == (1, 3, 70, 70)


def test_batch_one_with_a_single_coarse_pixel_raises_a_clear_error():
    model = FastSCNN(num_classes=3, **SMALL).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        model(torch.rand(1, 3, 32, 32))
    model.eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="num_classes"):
        FastSCNN(num_classes=0)
    with pytest.raises(ValueError, match="block_channels"):
        FastSCNN(num_classes=2, block_channels=(16, 32))
    with pytest.raises(ValueError, match="in_channels=3"):
        FastSCNN(num_classes=2, **SMALL)(torch.rand(1, 1, 32, 32))


def test_parameter_count_matches_the_paper():
    # Poudel et al. (2019) report 1.11 million parameters (19 Cityscapes classes).
    # Our pyramid pooling projects the concatenation back with a 1x1 conv, which adds a few percent.
    count = sum(p.numel() for p in FastSCNN(num_classes=19).parameters())
    assert abs(count - 1.11e6) / 1.11e6 < 0.05, count


def test_learning_to_downsample_parameter_count_by_hand():
    c_in, c1, c2, c3 = 3, 32, 48, 64
    conv = c_in * c1 * 9 + 2 * c1
    dsconv1 = (c1 * 9 + 2 * c1) + (c1 * c2 + 2 * c2)
    dsconv2 = (c2 * 9 + 2 * c2) + (c2 * c3 + 2 * c3)
    model = FastSCNN(num_classes=19)
    count = sum(p.numel() for p in model.learning_to_downsample.parameters())
    assert count == conv + dsconv1 + dsconv2


def test_depthwise_separable_conv_matches_per_channel_loop():
    torch.manual_seed(0)
    block = DepthwiseSeparableConv(4, 6, stride=2).eval()
    x = torch.randn(2, 4, 11, 9)
    depthwise, pointwise = block[0], block[1]
    # Reference: each channel convolved with its own 3x3 filter, one channel at a time.
    per_channel = torch.cat(
        [
            F.conv2d(x[:, c : c + 1], depthwise[0].weight[c : c + 1], stride=2, padding=1)
            for c in range(4)
        ],
        dim=1,
    )
    hidden = F.relu(depthwise[1](per_channel))
    mixed = torch.einsum("nchw,oc->nohw", hidden, pointwise[0].weight[:, :, 0, 0])
    expected = F.relu(pointwise[1](mixed))
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


def test_inverted_residual_uses_identity_only_when_shapes_allow():
    assert InvertedResidual(8, 8, stride=1).use_residual
    assert not InvertedResidual(8, 8, stride=2).use_residual
    assert not InvertedResidual(8, 16, stride=1).use_residual
    block = InvertedResidual(8, 8).eval()
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(block(x), x + block.block(x))


def test_pyramid_pooling_global_branch_is_the_image_mean():
    torch.manual_seed(0)
    module = PyramidPooling(8, 8, bins=(1,)).eval()
    x = torch.randn(2, 8, 6, 10)
    conv = module.branches[0][0]
    mean = x.mean(dim=(2, 3))  # (N, C): the 1 x 1 bin is the global average
    branch = F.relu(mean @ conv.weight[:, :, 0, 0].T + conv.bias)  # (N, C / 1)
    expected = module.project(torch.cat([x, branch[:, :, None, None].expand(-1, -1, 6, 10)], dim=1))
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)
