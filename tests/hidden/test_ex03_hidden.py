"""Hidden graded tests of exercise 03: the same pieces as the public tests, on other shapes.

- `center_crop` with uneven margins (an odd difference rounds down), different row and column
  offsets, a 1x1 window, a crop along one axis only, integer maps (reference: slices at offsets
  computed by hand);
- `DoubleConv` with "same" padding and no batch norm (the combination the public tests leave out)
  and "valid" padding on the smallest input it accepts, batch 1, and a padding that is neither
  "same" nor "valid" (a ValueError, after a valid call with the same weights);
- `UNet.forward` with a single level (depth 1), batch 1, one output class, odd channel widths, and
  with three levels, "valid" padding and batch norm on a non-square input, and four levels on a
  wide input (reference: `course_lib.models.UNet` run in this process, its weights copied into the
  learner's U-Net by the probes of `course_grader/probes/ex03.py`; the output sizes are checked
  against hand-computed ones).
"""

from __future__ import annotations

import pytest
import torch

from course_grader.learner.fixtures import expect_raises
from course_grader.probes.ex03 import double_conv_case, unet_case

EXERCISE = "ex03_unet"


def _check_unet(exercise, config: tuple, batch: int, expected_shape: tuple) -> None:
    """Run the learner's U-Net and the course's with the same weights; compare shape and logits."""
    in_channels, num_classes, base, depth, padding, batch_norm, height, width = config
    case = unet_case(*config, batch=batch)  # the course's U-Net, run here
    got = case.run(exercise).output  # the learner's, same weights and input, run in the worker
    what = (
        f"UNet(in_channels={in_channels}, num_classes={num_classes}, base_channels={base}, "
        f"depth={depth}, padding={padding!r}, batch_norm={batch_norm}) on a "
        f"({batch}, {in_channels}, {height}, {width}) input"
    )
    assert tuple(case.expected.shape) == expected_shape, (
        f"test set-up: the reference {what} gives {tuple(case.expected.shape)}, "
        f"not {expected_shape}"
    )
    assert tuple(got.shape) == expected_shape, (
        f"{what}: output shape {tuple(got.shape)}, expected {expected_shape}"
    )
    torch.testing.assert_close(
        got,
        case.expected,
        rtol=1e-4,
        atol=1e-4,
        msg=lambda m: f"{what} with the reference weights: {m}",
    )


@pytest.mark.points(1)
def test_center_crop_uneven_margins_and_one_axis(exercise):
    cases = [  # input (N, C, H, W), size (h, w), hand-computed (top, left)
        ((3, 2, 9, 6), (2, 5), (3, 0)),  # rows and columns start at different offsets
        ((1, 1, 6, 5), (3, 2), (1, 1)),  # margins of 3: (6 - 3) // 2 = 1, not 2
        ((2, 1, 4, 4), (1, 1), (1, 1)),  # a single pixel
        ((1, 3, 5, 8), (5, 2), (0, 3)),  # rows kept whole, columns cropped
    ]
    for shape, (h, w), (top, left) in cases:
        x = torch.arange(torch.Size(shape).numel()).view(shape)  # int64, every value distinct
        expected = x[:, :, top : top + h, left : left + w]  # (N, C, h, w)
        got = exercise.center_crop(x, (h, w))
        what = (
            f"center_crop of a {shape[2]}x{shape[3]} map to {h}x{w} should keep rows "
            f"{top}..{top + h - 1} and columns {left}..{left + w - 1}"
        )
        torch.testing.assert_close(got, expected, msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.points(1)
def test_double_conv_same_without_batch_norm_and_smallest_valid_input(exercise):
    cases = [  # in, out, padding, batch_norm, H, W, seed, output (H', W')
        (1, 2, "same", False, 7, 3, 3, (7, 3)),
        (4, 3, "valid", True, 5, 6, 4, (1, 2)),  # two valid 3x3 convs: 5x6 -> 1x2
    ]
    for cin, cout, padding, batch_norm, height, width, seed, out_size in cases:
        what = (
            f"DoubleConv({cin}, {cout}, {padding!r}, batch_norm={batch_norm}) on {height}x{width}"
        )
        case = double_conv_case(cin, cout, padding, batch_norm, height, width, seed, batch=1)
        got = case.run(exercise)
        assert got.parameters == case.expected_parameters, (
            f"{what} has {got.parameters} parameters, expected {case.expected_parameters}"
        )
        assert tuple(got.output.shape) == (1, cout, *out_size), (
            f"{what}: output shape {tuple(got.output.shape)}, expected {(1, cout, *out_size)}"
        )
        torch.testing.assert_close(
            got.output,
            case.expected,
            msg=lambda m, what=what: f"{what} with the reference weights: {m}",
        )


@pytest.mark.points(2)
def test_unet_single_level_batch_of_one(exercise):
    # depth 1: one skip, one upsampler; odd widths (3, 6) and a single output class
    _check_unet(exercise, (2, 1, 3, 1, "same", True, 6, 10), 1, (1, 1, 6, 10))
    # the smallest "valid" input of depth 1 is 18 pixels: 18 -> 14 -> 7 -> 3 -> 6 -> 2
    _check_unet(exercise, (1, 2, 2, 1, "valid", False, 18, 20), 1, (1, 2, 2, 4))


@pytest.mark.points(2)
def test_unet_deeper_valid_with_batch_norm_and_wide_input(exercise):
    # depth 3, "valid", batch norm: 92 -> 4 and 100 -> 12 (a centre crop at every level)
    _check_unet(exercise, (1, 3, 2, 3, "valid", True, 92, 100), 2, (2, 3, 4, 12))
    # depth 4, "same", no batch norm, a 16x48 input: the bottleneck is 1x3
    _check_unet(exercise, (3, 2, 2, 4, "same", False, 16, 48), 1, (1, 2, 16, 48))


@pytest.mark.points(1)
def test_double_conv_rejects_an_unknown_padding(exercise):
    case = double_conv_case(2, 3, "valid", False, 6, 7, seed=5, batch=1)
    got = case.run(exercise)
    assert tuple(got.output.shape) == (1, 3, 2, 3), (
        f"DoubleConv(2, 3, 'valid', batch_norm=False) on 6x7: output shape "
        f"{tuple(got.output.shape)}, expected (1, 3, 2, 3)"
    )
    torch.testing.assert_close(
        got.output,
        case.expected,
        msg=lambda m: f"DoubleConv(2, 3, 'valid', batch_norm=False), reference weights: {m}",
    )
    # the same weights fit a block built with padding "full", but that is neither "same" nor "valid"
    expect_raises(
        lambda: exercise.probe("double_conv_forward", 2, 3, "full", False, case.weights, case.x),
        ValueError,
        when="DoubleConv is given padding='full' (only 'same' and 'valid' exist)",
    )
