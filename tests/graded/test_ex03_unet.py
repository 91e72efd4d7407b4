"""Graded tests for exercise 03: DoubleConv, centre crop, U-Net forward with skip connections."""

from __future__ import annotations

import pytest
import torch

from course_grader.probes.ex03 import double_conv_case, unet_case

EXERCISE = "ex03_unet"


@pytest.mark.points(1)
def test_center_crop_hand_computed(exercise):
    x = torch.arange(7 * 8).view(1, 1, 7, 8)
    got = exercise.center_crop(x, (3, 4))
    torch.testing.assert_close(
        got,
        x[..., 2:5, 2:6],
        msg=lambda m: f"center_crop of a 7x8 map to 3x4 keeps rows 2..4, columns 2..5: {m}",
    )


@pytest.mark.points(1)
def test_center_crop_paper_sizes(exercise):
    # the paper's first skip: a 568x568 encoder map cropped to the 392x392 decoder map (offset 88)
    x = torch.randn(1, 2, 568, 568)
    got = exercise.center_crop(x, (392, 392))
    torch.testing.assert_close(
        got, x[..., 88:480, 88:480], msg=lambda m: f"568 -> 392 should start at offset 88: {m}"
    )
    same = exercise.center_crop(x[..., :10, :12], (10, 12))
    torch.testing.assert_close(
        same, x[..., :10, :12], msg=lambda m: f"cropping to the same size is a no-op: {m}"
    )


@pytest.mark.points(2)
@pytest.mark.parametrize("padding, batch_norm", [("same", True), ("valid", False), ("valid", True)])
def test_double_conv_matches_course_lib(exercise, padding, batch_norm):
    case = double_conv_case(3, 5, padding, batch_norm, 11, 9)  # the course's DoubleConv, run here
    got = case.run(exercise)  # the learner's, with the same weights and input, run in the worker
    assert got.parameters == case.expected_parameters, (
        f"DoubleConv(3, 5, {padding!r}, batch_norm={batch_norm}) has {got.parameters} "
        f"parameters, expected {case.expected_parameters}"
    )
    torch.testing.assert_close(
        got.output,
        case.expected,
        msg=lambda m: (
            f"DoubleConv(3, 5, {padding!r}, batch_norm={batch_norm}) "
            f"with the reference weights: {m}"
        ),
    )


@pytest.mark.points(2)
def test_unet_paper_parameter_count(exercise):
    got = exercise.probe("unet_parameter_count", 1, 2, 64, 4, False)
    assert got == 31_030_658, (
        f"the paper's U-Net (1 -> 2 classes, 64 channels, depth 4, no BN) has "
        f"31,030,658 parameters, yours has {got:,}"
    )


@pytest.mark.points(2)
def test_unet_valid_572_gives_388(exercise):
    shape = exercise.probe("unet_output_shape", 1, 2, 2, 4, "valid", 572, 572)
    assert shape == (1, 2, 388, 388), (
        f"a 572x572 input should give (1, 2, 388, 388) logits, got {shape}"
    )


@pytest.mark.points(3)
@pytest.mark.parametrize(
    "in_channels, num_classes, base, depth, padding, batch_norm, height, width",
    [
        (3, 4, 4, 2, "same", True, 16, 20),
        (1, 2, 4, 3, "same", True, 24, 16),
        (2, 3, 4, 2, "valid", False, 44, 48),
    ],
)
def test_unet_forward_matches_course_lib(
    exercise, in_channels, num_classes, base, depth, padding, batch_norm, height, width
):
    case = unet_case(in_channels, num_classes, base, depth, padding, batch_norm, height, width)
    got = case.run(exercise).output
    assert got.shape == case.expected.shape, (
        f"UNet(depth={depth}, padding={padding!r}) on {height}x{width}: output shape "
        f"{tuple(got.shape)}, expected {tuple(case.expected.shape)}"
    )
    torch.testing.assert_close(
        got,
        case.expected,
        rtol=1e-4,
        atol=1e-4,
        msg=lambda m: f"UNet(depth={depth}, padding={padding!r}) with the reference weights: {m}",
    )
