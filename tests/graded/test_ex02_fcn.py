"""Graded tests for exercise 02: transposed-conv size, bilinear kernel, FC as conv, skip fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import unpack
from course_lib.models.blocks import bilinear_kernel as reference_bilinear_kernel

EXERCISE = "ex02_fcn"


@pytest.mark.points(2)
@pytest.mark.parametrize(
    "size, kernel, stride, padding, output_padding",
    [
        (4, 4, 2, 1, 0),
        (7, 64, 32, 0, 0),
        (5, 3, 2, 1, 1),
        (9, 16, 8, 4, 0),
        (1, 2, 2, 0, 0),
        (6, 5, 3, 2, 2),
    ],
)
def test_transposed_conv_output_size_matches_pytorch(
    exercise, size, kernel, stride, padding, output_padding
):
    out = F.conv_transpose2d(
        torch.zeros(1, 1, size, 1),
        torch.zeros(1, 1, kernel, 1),
        stride=stride,
        padding=(padding, 0),
        output_padding=(output_padding, 0),
    )
    got = exercise.transposed_conv_output_size(size, kernel, stride, padding, output_padding)
    assert got == out.shape[2], (
        f"transposed_conv_output_size({size}, {kernel}, {stride}, {padding}, {output_padding}) "
        f"returned {got}; nn.ConvTranspose2d gives {out.shape[2]}"
    )


@pytest.mark.points(1)
def test_bilinear_kernel_hand_computed_taps(exercise):
    weight = exercise.bilinear_kernel(1, 4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(
        weight,
        torch.outer(taps, taps).view(1, 1, 4, 4),
        msg=lambda m: f"bilinear_kernel(1, 4) should be the outer product of .25 .75 .75 .25: {m}",
    )


@pytest.mark.points(2)
@pytest.mark.parametrize("channels, kernel_size", [(3, 4), (2, 16), (2, 3), (1, 7)])
def test_bilinear_kernel_matches_course_lib(exercise, channels, kernel_size):
    got = exercise.bilinear_kernel(channels, kernel_size)
    expected = reference_bilinear_kernel(channels, channels, kernel_size)
    torch.testing.assert_close(
        got, expected, msg=lambda m: f"bilinear_kernel({channels}, {kernel_size}): {m}"
    )


@pytest.mark.points(2)
@pytest.mark.parametrize("stride", [2, 4])
def test_bilinear_kernel_upsamples_like_interpolate(exercise, stride):
    torch.manual_seed(stride)
    x = torch.randn(1, 2, 6, 5)
    weight = exercise.bilinear_kernel(2, 2 * stride)
    got = F.conv_transpose2d(x, weight, stride=stride, padding=stride // 2)
    expected = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
    inner = (Ellipsis, slice(stride, -stride), slice(stride, -stride))  # borders differ by design
    torch.testing.assert_close(
        got[inner],
        expected[inner],
        msg=lambda m: (
            f"a transposed conv with your kernel (stride {stride}) "
            f"should equal bilinear interpolation inside the image: {m}"
        ),
    )


@pytest.mark.points(2)
def test_linear_to_conv_gives_the_same_numbers(exercise):
    torch.manual_seed(0)
    linear = torch.nn.Linear(4 * 3 * 5, 6)
    weight, bias = linear.weight.detach(), linear.bias.detach()
    conv_weight, conv_bias = unpack(
        exercise.linear_to_conv(weight, bias, 4, 3, 5), "conv_weight", "conv_bias"
    )
    assert tuple(conv_weight.shape) == (6, 4, 3, 5), (
        f"conv weight shape {tuple(conv_weight.shape)}, expected (6, 4, 3, 5)"
    )
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(
        F.conv2d(x, conv_weight, conv_bias).flatten(1),
        linear(x.flatten(1)).detach(),
        msg=lambda m: f"conv2d with your weights should equal the linear layer: {m}",
    )


@pytest.mark.points(2)
def test_linear_to_conv_slides_over_a_larger_map(exercise):
    torch.manual_seed(1)
    weight, bias = torch.randn(3, 2 * 2 * 2), torch.randn(3)
    conv_weight, conv_bias = unpack(
        exercise.linear_to_conv(weight, bias, 2, 2, 2), "conv_weight", "conv_bias"
    )
    x = torch.randn(1, 2, 4, 5)
    scores = F.conv2d(x, conv_weight, conv_bias)  # (1, 3, 3, 4): one classification per window
    for i in range(3):
        for j in range(4):
            window = x[:, :, i : i + 2, j : j + 2].flatten(1)
            torch.testing.assert_close(
                scores[:, :, i, j],
                F.linear(window, weight, bias),
                msg=lambda m: f"score map at ({i}, {j}) should classify that window: {m}",
            )


def _reference_fusion(coarse, skip, score_weight, score_bias, up_weight, offset):
    upsampled = F.conv_transpose2d(coarse, up_weight, stride=2)
    h, w = upsampled.shape[-2:]
    scores = torch.einsum("nchw,kc->nkhw", skip, score_weight[:, :, 0, 0]) + score_bias.view(
        1, -1, 1, 1
    )
    return upsampled + scores[..., offset : offset + h, offset : offset + w]


@pytest.mark.points(3)
@pytest.mark.parametrize(
    "coarse_size, skip_size, offset", [((3, 4), (18, 20), 5), ((5, 5), (21, 21), 9)]
)
def test_skip_fusion_matches_a_reference(exercise, coarse_size, skip_size, offset):
    torch.manual_seed(2)
    k, c = 3, 8
    coarse = torch.randn(2, k, *coarse_size)
    skip = torch.randn(2, c, *skip_size)
    score_weight, score_bias = torch.randn(k, c, 1, 1), torch.randn(k)
    up_weight = torch.randn(k, k, 4, 4)
    got = exercise.skip_fusion(coarse, skip, score_weight, score_bias, up_weight, offset)
    expected = _reference_fusion(coarse, skip, score_weight, score_bias, up_weight, offset)
    torch.testing.assert_close(
        got, expected, rtol=1e-4, atol=1e-4, msg=lambda m: f"skip_fusion with offset {offset}: {m}"
    )


@pytest.mark.points(1)
def test_skip_fusion_with_zero_score_layer_is_plain_upsampling(exercise):
    # the paper starts the skip score layers at zero: fusion then only upsamples the coarse scores
    coarse = torch.arange(2 * 2 * 3.0).view(1, 2, 2, 3)
    up_weight = reference_bilinear_kernel(2, 2, 4)
    got = exercise.skip_fusion(
        coarse, torch.randn(1, 5, 12, 12), torch.zeros(2, 5, 1, 1), torch.zeros(2), up_weight, 2
    )
    torch.testing.assert_close(
        got,
        F.conv_transpose2d(coarse, up_weight, stride=2),
        msg=lambda m: f"with a zero score layer the result is the upsampled map: {m}",
    )


def _resnet18_maps(height, width, seed=0):
    """layer2, layer3, layer4 of a seeded torchvision ResNet-18 on a random image."""
    import torchvision

    torch.manual_seed(seed)
    r = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        x = torch.rand(1, 3, height, width)
        c3 = r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))
        c4 = r.layer3(c3)
        return c3, c4, r.layer4(c4)


def _reference_head(maps, weights, biases, size):
    scores = [
        torch.einsum("nchw,kc->nkhw", c, w[:, :, 0, 0]) + b.view(1, -1, 1, 1)
        for c, w, b in zip(maps, weights, biases)
    ]
    fused = scores[2]
    for finer in (scores[1], scores[0]):
        fused = F.interpolate(fused, size=finer.shape[-2:], mode="bilinear") + finer
    return F.interpolate(fused, size=size, mode="bilinear")


@pytest.mark.points(3)
@pytest.mark.parametrize("height, width", [(97, 131), (64, 64)])
def test_fcn8s_head_on_resnet18_maps(exercise, height, width):
    maps = _resnet18_maps(height, width)
    torch.manual_seed(1)
    weights = [0.05 * torch.randn(4, c.shape[1], 1, 1) for c in maps]
    biases = [torch.randn(4) for _ in maps]
    got = exercise.fcn8s_head(*maps, weights, biases, (height, width))
    expected = _reference_head(maps, weights, biases, (height, width))
    assert tuple(got.shape) == (1, 4, height, width), (
        f"fcn8s_head on a {height}x{width} image returned shape {tuple(got.shape)}, "
        f"expected (1, 4, {height}, {width})"
    )
    torch.testing.assert_close(
        got,
        expected,
        rtol=1e-4,
        atol=1e-4,
        msg=lambda m: f"fcn8s_head on ResNet-18 maps of a {height}x{width} image: {m}",
    )


@pytest.mark.points(1)
def test_fcn8s_head_with_zero_skips_is_fcn32s(exercise):
    maps = _resnet18_maps(70, 45, seed=2)
    torch.manual_seed(3)
    weights = [torch.zeros(2, c.shape[1], 1, 1) for c in maps[:2]] + [torch.randn(2, 512, 1, 1)]
    biases = [torch.zeros(2), torch.zeros(2), torch.randn(2)]
    got = exercise.fcn8s_head(*maps, weights, biases, (70, 45))
    s5 = F.conv2d(maps[2], weights[2], biases[2])
    s5 = F.interpolate(s5, size=maps[1].shape[-2:], mode="bilinear")
    s5 = F.interpolate(s5, size=maps[0].shape[-2:], mode="bilinear")
    expected = F.interpolate(s5, size=(70, 45), mode="bilinear")
    torch.testing.assert_close(
        got,
        expected,
        rtol=1e-4,
        atol=1e-4,
        msg=lambda m: (
            f"with zero pool3/pool4 score layers the head is FCN-32s upsampled in steps: {m}"
        ),
    )
