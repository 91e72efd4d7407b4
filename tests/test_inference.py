"""Inference: predict, flip TTA and sliding-window blending against direct full-image forwards."""

import pytest
import torch
from torch import nn

from course_lib.inference import (
    predict,
    probabilities,
    sliding_window,
    window_positions,
    window_weights,
)


def _conv_model(kernel_size=3, in_channels=3, num_classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2)


def _edge_touched(size, window, starts):
    """1-D mask of positions that sit on the first/last row of some window (inside the image)."""
    touched = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        for pos in (start, start + window - 1):
            if 0 < pos < size - 1:
                touched[pos] = True
    return touched


def test_probabilities_softmax_and_binary():
    logits = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(probabilities(logits), torch.softmax(logits, 1))
    single = torch.randn(2, 1, 4, 5)
    probs = probabilities(single)
    torch.testing.assert_close(probs[:, 1:], torch.sigmoid(single))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 4, 5))


def test_predict_batches_match_one_forward():
    model = _conv_model()
    images = torch.rand(5, 3, 9, 11)
    expected = torch.softmax(model(images), 1).detach()
    torch.testing.assert_close(predict(model, images, batch_size=2, output="probs"), expected)
    torch.testing.assert_close(predict(model, images, batch_size=3), expected.argmax(1))
    assert predict(model, images[0]).shape == (9, 11)


def test_flip_tta_averages_flipped_predictions():
    model = _conv_model()
    image = torch.rand(1, 3, 8, 8)
    plain = torch.softmax(model(image), 1)
    flipped = torch.softmax(model(image.flip(-1)), 1).flip(-1)
    expected = ((plain + flipped) / 2).detach()
    torch.testing.assert_close(predict(model, image, output="probs", tta=True), expected)
    assert not torch.allclose(expected, plain.detach()), "the flip should change something here"


def test_predict_restores_training_mode_and_checks_input():
    model = _conv_model()
    model.train()
    predict(model, torch.rand(1, 3, 4, 4))
    assert model.training
    with pytest.raises(ValueError, match="output must be"):
        predict(model, torch.rand(1, 3, 4, 4), output="logits")
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
        predict(model, torch.rand(4, 4))
    with pytest.raises(TypeError, match="float tensor"):
        predict(model, torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="tta must be"):
        predict(model, torch.rand(1, 3, 4, 4), tta=("rotate",))


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_sliding_window_equals_full_forward_in_window_interiors(blend):
    model = _conv_model(kernel_size=3)
    image = torch.rand(3, 40, 37)
    expected = torch.softmax(model(image[None]), 1)[0].detach()
    got = sliding_window(model, image, window=16, overlap=0.5, blend=blend)
    rows = _edge_touched(40, 16, window_positions(40, 16, 8))
    cols = _edge_touched(37, 16, window_positions(37, 16, 8))
    interior = ~rows[:, None] & ~cols[None, :]
    assert interior.float().mean() > 0.5
    torch.testing.assert_close(got[:, interior], expected[:, interior])
    assert not torch.allclose(got, expected), "window borders should differ for a 3x3 conv"


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_sliding_window_exact_for_pointwise_model(overlap):
    model = _conv_model(kernel_size=1)
    image = torch.rand(2, 3, 23, 30)
    expected = torch.softmax(model(image), 1).detach()
    torch.testing.assert_close(sliding_window(model, image, (8, 12), overlap), expected)
    torch.testing.assert_close(
        sliding_window(model, image, (8, 12), overlap, output="labels"), expected.argmax(1)
    )


def test_window_larger_than_image_pads_with_zeros_like_conv_padding():
    model = _conv_model(kernel_size=3)
    image = torch.rand(3, 10, 13)
    expected = torch.softmax(model(image[None]), 1)[0].detach()
    torch.testing.assert_close(sliding_window(model, image, window=16), expected)


def test_blending_weights_normalise():
    class ConstantProbs(nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
            return logits.expand(x.shape[0], 3, x.shape[2], x.shape[3]) + 0 * self.anchor

    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).view(3, 1, 1).expand(3, 21, 19)
    for blend in ("constant", "gaussian"):
        got = sliding_window(
            ConstantProbs(), torch.rand(3, 21, 19), window=8, overlap=0.6, blend=blend
        )
        torch.testing.assert_close(got, expected)


def test_window_weights_shapes_and_values():
    torch.testing.assert_close(window_weights((3, 4), "constant"), torch.ones(3, 4))
    weights = window_weights((9, 9), "gaussian", sigma_scale=0.125)
    assert weights.max() == 1.0 and weights[4, 4] == 1.0
    torch.testing.assert_close(weights, weights.flip(0))
    torch.testing.assert_close(weights, weights.T)
    # Hand value: exp(-0.5 * (d / sigma)^2) with d = 2, sigma = 9 / 8, in one dimension.
    assert weights[4, 6].item() == pytest.approx(
        torch.exp(torch.tensor(-0.5 * (2 / 1.125) ** 2)).item(), rel=1e-5
    )
    assert weights.min() >= 1e-3
    with pytest.raises(ValueError, match="blend must be"):
        window_weights((3, 3), "box")


def test_window_positions_cover_everything():
    assert window_positions(10, 4, 3) == [0, 3, 6]
    assert window_positions(11, 4, 3) == [0, 3, 6, 7]
    assert window_positions(4, 4, 2) == [0]


def test_sliding_window_checks_arguments():
    model = _conv_model()
    with pytest.raises(ValueError, match="overlap must be"):
        sliding_window(model, torch.rand(3, 8, 8), 4, overlap=1.0)
    with pytest.raises(ValueError, match="window must be"):
        sliding_window(model, torch.rand(3, 8, 8), 0)
    with pytest.raises(ValueError, match="pad_mode"):
        sliding_window(model, torch.rand(3, 8, 8), 4, pad_mode="wrap")


class _XDerivative(nn.Module):
    """d/dx by central differences: a model whose answer depends on the scale it is applied at."""

    def forward(self, x):
        kernel = torch.tensor([[[[-0.5, 0.0, 0.5]]]], dtype=x.dtype)
        x = nn.functional.pad(x, (1, 1, 0, 0), mode="replicate")  # window borders stay near-right
        return nn.functional.conv2d(x, kernel)


def test_segment_applies_the_model_at_the_scale_it_was_trained_on():
    from course_lib.inference import segment

    ramp = torch.arange(96, dtype=torch.float32).repeat(64, 1)[
        None, None
    ]  # (1, 1, 64, 96), d/dx = 1
    native = segment(_XDerivative(), ramp, window=32, scale=1.0)
    half = segment(_XDerivative(), ramp, window=32, scale=0.5)
    assert native.shape == half.shape == (1, 1, 64, 96)  # answered at the input's own size
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    torch.testing.assert_close(native[inner], torch.ones_like(native[inner]), atol=0.01, rtol=0)
    torch.testing.assert_close(half[inner], torch.full_like(half[inner], 2.0), atol=0.1, rtol=0)


def test_segment_at_scale_one_is_the_plain_forward_when_the_window_holds_the_image():
    from course_lib.inference import segment

    model = _conv_model(num_classes=3)
    images = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(segment(model, images, window=32), expected)
    torch.testing.assert_close(
        segment(model, images, window=32, output="labels"), expected.argmax(1)
    )
    probs = segment(model, images[0], window=32, output="probs")
    torch.testing.assert_close(probs, torch.softmax(expected[0], 0))


def test_segment_odd_sizes_and_bad_arguments():
    from course_lib.inference import segment

    model = _conv_model(num_classes=2)
    out = segment(model, torch.rand(1, 3, 37, 53), window=16, scale=0.3, output="labels")
    assert out.shape == (1, 37, 53) and out.dtype == torch.int64
    with pytest.raises(ValueError, match="scale must be a positive factor"):
        segment(model, torch.rand(1, 3, 8, 8), window=8, scale=0)
    with pytest.raises(ValueError, match="output must be"):
        segment(model, torch.rand(1, 3, 8, 8), window=8, output="mask")
