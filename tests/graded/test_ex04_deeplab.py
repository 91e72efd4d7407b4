"""Graded tests for exercise 04: receptive field, dilated-conv output size, ASPP, a CRF step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import expect_raises
from course_grader.probes.ex04 import aspp_case
from course_lib.receptive_field import receptive_field as reference_receptive_field

EXERCISE = "ex04_deeplab"


@pytest.mark.points(1)
def test_receptive_field_of_hand_computed_stacks(exercise):
    assert exercise.receptive_field([]) == 1, "an empty stack sees one pixel"
    assert exercise.receptive_field([(3, 1, 1)] * 3) == 7, "three 3x3 convs see 7 pixels"
    assert exercise.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)]) == 15, (
        "dilations 1, 2, 4 see 15 pixels"
    )


@pytest.mark.points(2)
@pytest.mark.parametrize(
    "layers",
    [
        [(7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)],
        [(3, 2, 1), (3, 1, 2), (3, 2, 1), (3, 1, 6), (1, 1, 1), (3, 1, 12)],
        [(2, 2, 1), (5, 1, 3), (2, 2, 1), (3, 3, 2)],
    ],
)
def test_receptive_field_with_strides_and_dilations(exercise, layers):
    expected = reference_receptive_field(layers)
    got = exercise.receptive_field(layers)
    assert got == expected, f"receptive_field({layers}) returned {got}, expected {expected}"


@pytest.mark.points(2)
@pytest.mark.parametrize(
    "size, kernel, stride, padding, dilation",
    [
        (33, 3, 1, 6, 6),
        (65, 3, 2, 1, 1),
        (20, 5, 3, 2, 2),
        (17, 3, 1, 0, 4),
        (513, 7, 2, 3, 1),
    ],
)
def test_dilated_conv_output_size_matches_conv2d(exercise, size, kernel, stride, padding, dilation):
    out = F.conv2d(
        torch.zeros(1, 1, size, 1),
        torch.zeros(1, 1, kernel, 1),
        stride=stride,
        padding=(padding, 0),
        dilation=dilation,
    )
    got = exercise.dilated_conv_output_size(size, kernel, stride, padding, dilation)
    assert got == out.shape[2], (
        f"dilated_conv_output_size({size}, {kernel}, {stride}, {padding}, {dilation}) "
        f"returned {got}; nn.Conv2d gives {out.shape[2]}"
    )


@pytest.mark.points(1)
def test_dilated_conv_output_size_rejects_too_short_inputs(exercise):
    got = exercise.dilated_conv_output_size(13, 3, 1, 0, 6)  # valid: effective kernel 13 == 13
    assert got == 1, f"dilated_conv_output_size(13, 3, 1, 0, 6) returned {got}; nn.Conv2d gives 1"
    expect_raises(
        lambda: exercise.dilated_conv_output_size(8, 3, 1, 0, 6),
        ValueError,
        when="the input (8 pixels, no padding) is shorter than the effective kernel (13)",
    )
    expect_raises(
        lambda: exercise.dilated_conv_output_size(2, 5, 1, 1, 1),
        ValueError,
        when="the padded input (2 + 2 * 1 = 4 pixels) is shorter than the kernel (5)",
    )


@pytest.mark.points(3)
@pytest.mark.parametrize(
    "in_channels, out_channels, rates, height, width",
    [
        (8, 4, [1, 2, 3], 9, 11),
        (6, 5, [2, 6], 7, 7),
    ],
)
def test_aspp_forward_matches_course_lib(exercise, in_channels, out_channels, rates, height, width):
    case = aspp_case(in_channels, out_channels, rates, height, width)  # the course's ASPP, run here
    torch.testing.assert_close(
        case.run(exercise).output,
        case.expected,
        msg=lambda m: (
            f"ASPP({in_channels}, {out_channels}, {rates}) on a (2, {in_channels}, {height}, {width}) "
            f"input, weights copied from course_lib: {m}"
        ),
    )


def brute_force_step(
    probs,
    image,
    q,
    spatial_std,
    spatial_weight,
    bilateral_spatial_std,
    bilateral_color_std,
    bilateral_weight,
):
    """The update written pixel by pixel, one pair at a time."""
    k, h, w = probs.shape
    pixels = [(y, x) for y in range(h) for x in range(w)]
    out = torch.zeros_like(probs)
    for a in pixels:
        message = [0.0] * k
        for b in pixels:
            if b == a:
                continue
            pos2 = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
            col2 = sum(
                (255.0 * (image[c, a[0], a[1]] - image[c, b[0], b[1]]).item()) ** 2
                for c in range(image.shape[0])
            )
            kernel = spatial_weight * math.exp(
                -pos2 / (2 * spatial_std**2)
            ) + bilateral_weight * math.exp(
                -pos2 / (2 * bilateral_spatial_std**2) - col2 / (2 * bilateral_color_std**2)
            )
            for label in range(k):
                message[label] += kernel * q[label, b[0], b[1]].item()
        energies = [
            math.log(probs[label, a[0], a[1]].item()) - (sum(message) - message[label])
            for label in range(k)
        ]
        top = max(energies)
        total = sum(math.exp(e - top) for e in energies)
        for label in range(k):
            out[label, a[0], a[1]] = math.exp(energies[label] - top) / total
    return out


@pytest.mark.points(3)
@pytest.mark.parametrize(
    "params",
    [
        dict(
            spatial_std=2.0,
            spatial_weight=0.3,
            bilateral_spatial_std=4.0,
            bilateral_color_std=40.0,
            bilateral_weight=0.5,
        ),
        dict(
            spatial_std=3.0,
            spatial_weight=3.0,
            bilateral_spatial_std=80.0,
            bilateral_color_std=13.0,
            bilateral_weight=10.0,
        ),
    ],
)
def test_mean_field_step_matches_brute_force(exercise, params):
    g = torch.Generator().manual_seed(7)
    probs = (
        torch.randn(3, 4, 5, generator=g, dtype=torch.float64).mul(2).softmax(dim=0)
    )  # (K, H, W)
    image = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    image[:, :2] = (
        0.2 + 0.01 * image[:, :2]
    )  # a flat region: colour differences small enough to matter
    q = torch.randn(3, 4, 5, generator=g, dtype=torch.float64).softmax(dim=0)
    expected = brute_force_step(probs, image, q, **params)
    got = exercise.mean_field_step(probs, image, q, **params)
    torch.testing.assert_close(
        got,
        expected,
        rtol=1e-6,
        atol=1e-9,
        msg=lambda m: f"mean_field_step on a 4x5 image with {params}: {m}",
    )
