"""Hidden graded tests of exercise 02: the same five functions, on cases the public tests skip.

- `transposed_conv_output_size` with its default arguments and stride 1 (reference: the shape
  `F.conv_transpose2d` gives);
- `bilinear_kernel` at the smallest kernels (1 and 2) and an odd one with several channels
  (reference: a per-tap loop over the docstring's triangle formula), and odd kernels used as
  upsamplers (reference: `F.interpolate(..., align_corners=True)`, which they reproduce exactly);
- `linear_to_conv` on a 1x1 map and a VGG-like fc6 -> fc7 chain in float64 (reference: `F.linear` on
  every window, a loop), and a weight whose width does not match the map (a ValueError, after a
  valid call);
- `skip_fusion` with batch 1, one class, a single coarse pixel, offset 0 and non-square maps
  (reference: a brute-force loop that scatters each coarse pixel through the 4x4 kernel and scores
  each skip pixel on its own);
- `fcn8s_head` with batches of 2 and 3, one class, odd map sizes (5x7 -> 3x4 -> 2x2, a single row
  at 1/16 and 1/32) and an image that is not 8 times the c3 map (reference: 1x1 scores by a loop
  over channels, bilinear resizing as two interpolation matrices built from the align_corners=False
  sampling formula, in float64).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import expect_raises, unpack

EXERCISE = "ex02_fcn"


def _triangle_filter(kernel_size: int) -> list[list[float]]:
    """The (k, k) bilinear filter, tap by tap, from the docstring's formula (Python floats)."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = [1 - abs(t - centre) / factor for t in range(kernel_size)]
    return [[a * b for b in taps] for a in taps]


def _brute_force_fusion(coarse, skip, score_weight, score_bias, up_weight, offset):
    """Upsample by scattering each coarse pixel, score each skip pixel by a dot product, add."""
    n, k, h, w = coarse.shape
    out = torch.zeros(n, k, 2 * h + 2, 2 * w + 2, dtype=torch.float64)  # (N, K, 2h + 2, 2w + 2)
    for b in range(n):
        for ki in range(k):  # input channel of the transposed conv
            for i in range(h):
                for j in range(w):
                    for ko in range(k):
                        out[b, ko, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += (
                            coarse[b, ki, i, j].double() * up_weight[ki, ko].double()
                        )
    for b in range(n):
        for ko in range(k):
            for y in range(out.shape[2]):
                for x in range(out.shape[3]):
                    pixel = skip[b, :, offset + y, offset + x].double()  # (C,)
                    out[b, ko, y, x] += (
                        pixel @ score_weight[ko, :, 0, 0].double() + score_bias[ko].double()
                    )
    return out.float()


@pytest.mark.points(1)
def test_transposed_conv_output_size_defaults_and_stride_one(exercise):
    cases = [
        ((5, 3), {}),  # stride 1, no padding: the "full" transposed conv
        ((6, 3), {"padding": 1}),  # stride 1, padding 1: same size
        ((1, 1), {}),  # a single pixel through a 1x1 kernel
        ((11, 7), {"stride": 3, "padding": 3, "output_padding": 2}),
    ]
    for (size, kernel), kwargs in cases:
        stride, padding = kwargs.get("stride", 1), kwargs.get("padding", 0)
        output_padding = kwargs.get("output_padding", 0)
        out = F.conv_transpose2d(
            torch.zeros(1, 1, size, 1),
            torch.zeros(1, 1, kernel, 1),
            stride=stride,
            padding=(padding, 0),
            output_padding=(output_padding, 0),
        )
        got = exercise.transposed_conv_output_size(size, kernel, **kwargs)
        assert got == out.shape[2], (
            f"transposed_conv_output_size({size}, {kernel}, stride={stride}, padding={padding}, "
            f"output_padding={output_padding}) returned {got}; nn.ConvTranspose2d gives "
            f"{out.shape[2]}"
        )


@pytest.mark.points(1)
def test_bilinear_kernel_smallest_and_odd_kernels(exercise):
    # kernel 1: the identity [1.0]; kernel 2: [0.5, 0.5]; kernel 5: 1/3, 2/3, 1, 2/3, 1/3
    for channels, kernel_size in ((4, 1), (3, 2), (5, 5)):
        filt = torch.tensor(_triangle_filter(kernel_size))  # (k, k)
        expected = torch.zeros(channels, channels, kernel_size, kernel_size)  # (C, C, k, k)
        for c in range(channels):
            expected[c, c] = filt
        got = exercise.bilinear_kernel(channels, kernel_size)
        what = (
            f"bilinear_kernel({channels}, {kernel_size}): expected the triangle filter on the "
            "channel diagonal and zeros elsewhere"
        )
        torch.testing.assert_close(got, expected, msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.points(1)
def test_bilinear_odd_kernel_interpolates_between_pixel_centres(exercise):
    # kernel 2s - 1 with padding s - 1 samples a (H - 1) s + 1 grid through the input pixel centres:
    # exactly align_corners=True bilinear interpolation, borders included
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(1, 3, 4, 7, generator=generator)  # (1, 3, 4, 7), non-square
    for stride in (2, 3):
        kernel_size = 2 * stride - 1
        weight = exercise.bilinear_kernel(3, kernel_size)
        assert tuple(weight.shape) == (3, 3, kernel_size, kernel_size), (
            f"bilinear_kernel(3, {kernel_size}) has shape {tuple(weight.shape)}, "
            f"expected {(3, 3, kernel_size, kernel_size)}"
        )
        got = F.conv_transpose2d(x, weight, stride=stride, padding=stride - 1)
        expected = F.interpolate(
            x, size=(3 * stride + 1, 6 * stride + 1), mode="bilinear", align_corners=True
        )  # (1, 3, 3s + 1, 6s + 1)
        what = (
            f"a transposed conv with your kernel of size {kernel_size} (stride {stride}, "
            f"padding {stride - 1}) should equal align_corners=True interpolation"
        )
        torch.testing.assert_close(got, expected, msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.points(1)
def test_linear_to_conv_one_pixel_map_and_float64_chain(exercise):
    generator = torch.Generator().manual_seed(3)
    # fc6 on a 2x3 map of 3 channels (7 outputs), then fc7 on the 1x1 map it makes (5 outputs)
    w6 = torch.randn(7, 3 * 2 * 3, dtype=torch.float64, generator=generator)
    b6 = torch.randn(7, dtype=torch.float64, generator=generator)
    w7 = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    b7 = torch.randn(5, dtype=torch.float64, generator=generator)
    conv6, bias6 = unpack(exercise.linear_to_conv(w6, b6, 3, 2, 3), "conv_weight", "conv_bias")
    conv7, bias7 = unpack(exercise.linear_to_conv(w7, b7, 7, 1, 1), "conv_weight", "conv_bias")
    for name, got, shape in (("fc6", conv6, (7, 3, 2, 3)), ("fc7", conv7, (5, 7, 1, 1))):
        assert tuple(got.shape) == shape and got.dtype == torch.float64, (
            f"{name}: conv weight {tuple(got.shape)} {got.dtype}, expected {shape} torch.float64"
        )
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64, generator=generator)  # (1, 3, 4, 5)
    scores = F.conv2d(F.relu(F.conv2d(x, conv6, bias6)), conv7, bias7)  # (1, 5, 3, 3)
    assert tuple(scores.shape) == (1, 5, 3, 3), (
        f"score map {tuple(scores.shape)}, expected (1, 5, 3, 3)"
    )
    for i in range(3):
        for j in range(3):
            window = x[:, :, i : i + 2, j : j + 3].flatten(1)  # (1, 18)
            expected = F.linear(F.relu(F.linear(window, w6, b6)), w7, b7)  # (1, 5)
            what = (
                f"fc6 -> relu -> fc7 as convolutions (float64): the score at ({i}, {j}) "
                "should classify that 2x3 window"
            )
            torch.testing.assert_close(
                scores[:, :, i, j], expected, msg=lambda m, what=what: f"{what}: {m}"
            )


@pytest.mark.points(2)
def test_skip_fusion_edge_sizes_against_a_loop(exercise):
    cases = [  # batch, classes K, skip channels C, coarse (h, w), skip (H', W'), offset
        (1, 1, 2, (1, 1), (4, 4), 0),  # one class, one coarse pixel, no crop at all
        (1, 2, 3, (2, 5), (9, 16), 2),  # non-square maps, a skip map larger than needed
        (3, 2, 1, (3, 1), (11, 6), 1),  # one skip channel, a tall map
    ]
    generator = torch.Generator().manual_seed(4)
    for batch, k, c, coarse_size, skip_size, offset in cases:
        coarse = torch.randn(batch, k, *coarse_size, generator=generator)  # (N, K, h, w)
        skip = torch.randn(batch, c, *skip_size, generator=generator)  # (N, C, H', W')
        score_weight = torch.randn(k, c, 1, 1, generator=generator)
        score_bias = torch.randn(k, generator=generator)
        up_weight = torch.randn(k, k, 4, 4, generator=generator)
        expected = _brute_force_fusion(coarse, skip, score_weight, score_bias, up_weight, offset)
        got = exercise.skip_fusion(coarse, skip, score_weight, score_bias, up_weight, offset)
        what = (
            f"skip_fusion (batch {batch}, {k} classes, coarse {coarse_size}, skip {skip_size}, "
            f"offset {offset})"
        )
        assert tuple(got.shape) == tuple(expected.shape), (
            f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        )
        torch.testing.assert_close(
            got, expected, rtol=1e-4, atol=1e-4, msg=lambda m, what=what: f"{what}: {m}"
        )


@pytest.mark.points(1)
def test_linear_to_conv_rejects_a_weight_of_the_wrong_width(exercise):
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 2 * 3 * 3, generator=generator)  # (4, 18)
    bias = torch.randn(4, generator=generator)
    conv_weight, _ = unpack(
        exercise.linear_to_conv(weight, bias, 2, 3, 3), "conv_weight", "conv_bias"
    )
    assert tuple(conv_weight.shape) == (4, 2, 3, 3), (
        f"linear_to_conv of a (4, 18) weight for a 2x3x3 map: conv weight "
        f"{tuple(conv_weight.shape)}, expected (4, 2, 3, 3)"
    )
    # 18 input features cannot come from a 2x3x4 map (24): a clear ValueError, not a reshape error
    expect_raises(
        lambda: exercise.linear_to_conv(weight, bias, 2, 3, 4),
        ValueError,
        when="the weight has 18 input features and the map 2 * 3 * 4 = 24",
    )


def _bilinear_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float64 matrix of align_corners=False bilinear resizing along one axis.

    Output pixel i samples the input at (i + 0.5) * size_in / size_out - 0.5, clamped at 0 below
    and at the last pixel above; the two neighbouring input pixels share the weight linearly.
    """
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        source = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(math.floor(source)), size_in - 1)
        high = min(low + 1, size_in - 1)
        fraction = source - low if low < size_in - 1 else 0.0
        matrix[i, low] += 1.0 - fraction
        matrix[i, high] += fraction
    return matrix


def _resize_by_matrices(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W) float64: rows then columns through `_bilinear_matrix`."""
    rows = _bilinear_matrix(x.shape[-2], size[0])  # (H, h)
    columns = _bilinear_matrix(x.shape[-1], size[1])  # (W, w)
    return torch.einsum("Hh,nkhw,Ww->nkHW", rows, x.double(), columns)


def _score_by_loop(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution class by class: sum over channels of weight[k, c] * map[c], + bias[k]."""
    n, channels, h, w = c.shape
    scores = torch.zeros(n, weight.shape[0], h, w, dtype=torch.float64)  # (N, K, h, w)
    for k in range(weight.shape[0]):
        scores[:, k] = bias[k].double()
        for ci in range(channels):
            scores[:, k] += weight[k, ci, 0, 0].double() * c[:, ci].double()
    return scores


@pytest.mark.points(2)
def test_fcn8s_head_odd_sizes_batches_and_one_class_against_interpolation_matrices(exercise):
    cases = [  # batch, classes K, channels (C3, C4, C5), c3 size (h3, w3), image (H, W)
        (2, 3, (4, 5, 6), (5, 7), (37, 53)),  # odd maps: 5x7 -> 3x4 -> 2x2, batch of two
        (1, 1, (2, 3, 1), (2, 9), (16, 72)),  # one class, one c5 channel, 1 row at 1/16, 1/32
        (3, 2, (3, 2, 4), (4, 3), (30, 23)),  # an image that is not 8 times the c3 map
    ]
    generator = torch.Generator().manual_seed(6)
    for batch, k, (ch3, ch4, ch5), (h3, w3), image_size in cases:
        h4, w4 = (h3 + 1) // 2, (w3 + 1) // 2
        h5, w5 = (h4 + 1) // 2, (w4 + 1) // 2
        maps = [
            torch.randn(batch, ch, h, w, generator=generator)
            for ch, (h, w) in ((ch3, (h3, w3)), (ch4, (h4, w4)), (ch5, (h5, w5)))
        ]
        weights = [torch.randn(k, ch, 1, 1, generator=generator) for ch in (ch3, ch4, ch5)]
        biases = [torch.randn(k, generator=generator) for _ in range(3)]
        s3, s4, s5 = (_score_by_loop(c, w, b) for c, w, b in zip(maps, weights, biases))
        fused = _resize_by_matrices(s5, (h4, w4)) + s4  # FCN-16s
        fused = _resize_by_matrices(fused, (h3, w3)) + s3  # FCN-8s
        expected = _resize_by_matrices(fused, image_size).float()  # (N, K, H, W)
        got = exercise.fcn8s_head(*maps, weights, biases, image_size)
        what = (
            f"fcn8s_head (batch {batch}, {k} classes, maps {h3}x{w3}, {h4}x{w4}, {h5}x{w5}, "
            f"image {image_size[0]}x{image_size[1]})"
        )
        assert tuple(got.shape) == (batch, k, *image_size), (
            f"{what}: shape {tuple(got.shape)}, expected {(batch, k, *image_size)}"
        )
        torch.testing.assert_close(
            got, expected, rtol=1e-4, atol=1e-4, msg=lambda m, what=what: f"{what}: {m}"
        )
