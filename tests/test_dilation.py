"""The dilation identity: a dilated convolution equals an ordinary convolution whose kernel has
dilation - 1 zeros inserted between its taps; and the output-size formula of a dilated conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.receptive_field import effective_kernel_size


def zero_inserted(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """(O, I, k, k) -> (O, I, d(k-1)+1, d(k-1)+1), tap (a, b) moved to (a*d, b*d), zeros elsewhere."""
    o, i, k, _ = weight.shape
    size = dilation * (k - 1) + 1
    out = torch.zeros(o, i, size, size, dtype=weight.dtype)
    for a in range(k):
        for b in range(k):
            out[:, :, a * dilation, b * dilation] = weight[:, :, a, b]
    return out


@pytest.mark.parametrize(
    "kernel, dilation, stride, padding", [(3, 2, 1, 2), (3, 4, 1, 0), (5, 3, 2, 1), (2, 3, 1, 0)]
)
def test_dilated_conv_equals_conv_with_zero_inserted_kernel(kernel, dilation, stride, padding):
    g = torch.Generator().manual_seed(kernel * 10 + dilation)
    x = torch.randn(2, 3, 23, 19, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, kernel, kernel, generator=g, dtype=torch.float64)
    dilated = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    big = zero_inserted(w, dilation)
    assert big.shape[-1] == effective_kernel_size(kernel, dilation)
    torch.testing.assert_close(F.conv2d(x, big, stride=stride, padding=padding), dilated)


@pytest.mark.parametrize(
    "size, kernel, stride, padding, dilation",
    [(33, 3, 1, 6, 6), (65, 3, 2, 1, 1), (20, 5, 3, 2, 2)],
)
def test_output_size_formula(size, kernel, stride, padding, dilation):
    out = F.conv2d(
        torch.zeros(1, 1, size, size),
        torch.zeros(1, 1, kernel, kernel),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    expected = (size + 2 * padding - effective_kernel_size(kernel, dilation)) // stride + 1
    assert out.shape[-1] == expected
