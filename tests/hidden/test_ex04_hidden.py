"""Hidden graded tests of exercise 04: the same four pieces on cases the public tests do not show.

- `receptive_field`: 1x1 layers (no growth, only a jump), one strongly dilated layer, a stack of
  strided 2x2 poolings (the field must grow before the jump is multiplied).
- `dilated_conv_output_size`: the default arguments, a stride larger than the kernel, a padded
  input exactly as long as the effective kernel (one output), padding that makes a short input
  valid, and one pixel too few (ValueError).
- `ASPP.forward` (through the probe `aspp_forward`): batch 1, a 1x1 feature map, a single rate, four
  rates on a non-square map, a rate larger than the map.
- `mean_field_step`: one pixel (no pairs: the unary alone), a grayscale row and column with two
  labels, and a float32 input with two colour channels and the default parameters.

References: `course_lib.receptive_field.receptive_field` and hand-computed values,
`torch.nn.functional.conv2d` output shapes, `course_lib.models.ASPP` (run in this process,
`probes.ex04.aspp_case`), and the all-pairs CRF of `course_lib.crf` (`exact_kernels` without
normalisation, `exact_message`, `mean_field_step`) computed in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import expect_raises
from course_grader.probes.ex04 import aspp_case
from course_lib import crf
from course_lib.receptive_field import receptive_field as reference_receptive_field

EXERCISE = "ex04_deeplab"

CRF_DEFAULTS = {
    "spatial_std": 3.0,
    "spatial_weight": 3.0,
    "bilateral_spatial_std": 80.0,
    "bilateral_color_std": 13.0,
    "bilateral_weight": 10.0,
}


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Length of nn.Conv2d's output along the height axis, measured on a zero input."""
    out = F.conv2d(
        torch.zeros(1, 1, size, 1),
        torch.zeros(1, 1, kernel, 1),
        stride=stride,
        padding=(padding, 0),
        dilation=dilation,
    )
    return out.shape[2]


def reference_step(probs, image, q, params):
    """One unnormalised all-pairs mean-field step of course_lib.crf, in float64.

    probs, q (K, H, W); image (C, H, W) -> new marginals (K, H, W) float64."""
    probs, image, q = (t.to(torch.float64).unsqueeze(0) for t in (probs, image, q))  # (1, ., H, W)
    smooth, appearance = crf.exact_kernels(
        image,
        spatial_std=params["spatial_std"],
        bilateral_spatial_std=params["bilateral_spatial_std"],
        bilateral_color_std=params["bilateral_color_std"],
        normalize=False,
    )  # each (1, HW, HW)
    kernel = params["spatial_weight"] * smooth + params["bilateral_weight"] * appearance
    message = crf.exact_message(kernel, q)  # (1, K, H, W)
    return crf.mean_field_step(probs.log(), message)[0]  # (K, H, W)


def crf_inputs(seed: int, k: int, c: int, h: int, w: int, dtype=torch.float64):
    """probs and q (K, H, W), probabilities along K; image (C, H, W) in [0, 1], half of it flat."""
    g = torch.Generator().manual_seed(seed)
    probs = (torch.randn(k, h, w, generator=g, dtype=torch.float64) * 2).softmax(dim=0)
    image = torch.rand(c, h, w, generator=g, dtype=torch.float64)
    flat = image.view(c, h * w)[:, : (h * w + 1) // 2]  # the first half of the pixels, a view
    flat.copy_(0.4 + 0.02 * flat)  # small colour differences: the bilateral kernel matters
    q = torch.randn(k, h, w, generator=g, dtype=torch.float64).softmax(dim=0)
    return probs.to(dtype), image.to(dtype), q.to(dtype)


# ----------------------------------------------------------------------------- receptive field


@pytest.mark.points(1)
def test_receptive_field_of_pointwise_layers_poolings_and_one_dilated_layer(exercise):
    for layers in [
        [(1, 1, 1)] * 4,  # 1x1 convs see one pixel
        [(1, 2, 1), (3, 1, 1)],  # a strided 1x1 only doubles the jump: 1 + 2 * 2 = 5
        [(5, 1, 3)],  # one layer, effective kernel 3 * 4 + 1 = 13
        [(2, 2, 1)] * 5,  # five 2x2 poolings: 1 + 1 + 2 + 4 + 8 + 16 = 32
        [(3, 2, 1), (1, 1, 1), (3, 1, 5), (2, 2, 1), (3, 1, 2)],
    ]:
        expected = reference_receptive_field(layers)
        got = exercise.receptive_field(layers)
        assert got == expected, f"receptive_field({layers}) returned {got}, expected {expected}"


# ----------------------------------------------------------------------------- output size


@pytest.mark.points(1)
def test_dilated_conv_output_size_defaults_and_boundaries(exercise):
    got = exercise.dilated_conv_output_size(11, 4)  # stride 1, padding 0, dilation 1
    assert got == conv_output_size(11, 4), (
        f"dilated_conv_output_size(11, 4) with the default stride/padding/dilation returned {got}, "
        f"expected {conv_output_size(11, 4)}"
    )
    for args in [
        (10, 1, 4, 0, 1),  # stride larger than the kernel: pixels 0, 4, 8
        (3, 3, 1, 1, 2),  # padded length 5 == effective kernel 5: exactly one output
        (4, 3, 2, 2, 3),  # 4 < effective 7, but padded to 8: the padding counts
        (1, 3, 1, 6, 6),  # a single pixel with 'same' padding for dilation 6
        (6, 2, 5, 0, 5),  # even kernel, stride 5: one output
    ]:
        expected = conv_output_size(*args)
        got = exercise.dilated_conv_output_size(*args)
        assert got == expected, (
            f"dilated_conv_output_size{args} returned {got}; nn.Conv2d gives {expected}"
        )
    expect_raises(
        lambda: exercise.dilated_conv_output_size(2, 3, 1, 1, 2),
        ValueError,
        when="the padded length (4) is shorter than the effective kernel (5)",
    )


# ----------------------------------------------------------------------------- ASPP


@pytest.mark.points(2)
def test_aspp_forward_on_batch_one_tiny_and_non_square_maps(exercise):
    cases = [
        # in, out, rates, H, W, batch
        (3, 2, [1], 1, 1, 1),  # batch 1, a single pixel, one rate
        (5, 3, [3, 6, 9, 12], 6, 13, 3),  # four rates, non-square, batch 3
        (4, 6, [18], 5, 3, 1),  # a rate far larger than the map, more outputs than inputs
    ]
    for in_channels, out_channels, rates, height, width, batch in cases:
        case = aspp_case(in_channels, out_channels, rates, height, width, 3, batch)  # seed 3
        what = (
            f"ASPP({in_channels}, {out_channels}, {rates}) on a ({batch}, {in_channels}, "
            f"{height}, {width}) input, weights copied from course_lib"
        )
        torch.testing.assert_close(
            case.run(exercise).output, case.expected, msg=lambda m, what=what: f"{what}: {m}"
        )


# ----------------------------------------------------------------------------- CRF step


@pytest.mark.points(1)
def test_mean_field_step_on_one_pixel_and_grayscale_rows_and_columns(exercise):
    params = {
        "spatial_std": 1.5,
        "spatial_weight": 0.4,
        "bilateral_spatial_std": 5.0,
        "bilateral_color_std": 30.0,
        "bilateral_weight": 0.7,
    }
    # (K, C, H, W): one pixel has no pair, so the update is softmax(log probs) = probs
    for seed, (k, c, h, w) in enumerate([(3, 3, 1, 1), (2, 1, 1, 7), (2, 1, 6, 1)]):
        probs, image, q = crf_inputs(seed, k, c, h, w)
        expected = probs.clone() if h * w == 1 else reference_step(probs, image, q, params)
        got = exercise.mean_field_step(probs, image, q, **params)
        what = f"mean_field_step with K={k} labels on a {h}x{w} image, {c} channel(s), {params}"
        torch.testing.assert_close(
            got, expected, rtol=1e-6, atol=1e-9, msg=lambda m, what=what: f"{what}: {m}"
        )


@pytest.mark.points(1)
def test_mean_field_step_float32_two_channels_default_parameters(exercise):
    # probs (4, 3, 5), image (2, 3, 5), q (4, 3, 5)
    probs, image, q = crf_inputs(5, 4, 2, 3, 5, dtype=torch.float32)
    expected = reference_step(probs, image, q, CRF_DEFAULTS).to(torch.float32)
    got = exercise.mean_field_step(probs, image, q)
    torch.testing.assert_close(
        got,
        expected,
        rtol=1e-4,
        atol=1e-6,
        msg=lambda m: (
            f"mean_field_step with its default parameters on float32 inputs (K=4 "
            f"labels, a 3x5 image with 2 channels; a float32 result is expected): {m}"
        ),
    )
