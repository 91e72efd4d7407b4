"""Hidden graded tests of exercise 06: resize and flip together on odd shapes, one-hot with another
ignore index and with a label equal to num_classes (a ValueError, not one_hot's own error), class
weights with an even number of classes, absent classes and ignored pixels.

References: the docstring's nearest-neighbour index formula and `torch.nn.functional.interpolate`
for the resize, a loop over classes for one-hot, per-pixel counting loops and `numpy.median` for
the class weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import expect_raises, unpack

EXERCISE = "ex06_data_augmentation"


def random_pair(channels: int, height: int, width: int, seed: int, dtype=torch.float32):
    """An image (C, H, W) and a mask (H, W) int64 with labels {1, 4, 9, 255}."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1, 4, 9, 255])
    mask = labels[torch.randint(0, 4, (height, width), generator=generator)]  # (H, W)
    image = torch.rand(channels, height, width, generator=generator, dtype=torch.float64)
    return image.to(dtype), mask


def nearest_then_flip(mask: torch.Tensor, size: tuple[int, int], hflip: bool) -> torch.Tensor:
    """Output (i, j) takes input (floor(i * H / H_out), floor(j * W / W_out)), then the flip."""
    height, width = mask.shape
    rows = [(i * height) // size[0] for i in range(size[0])]
    cols = [(j * width) // size[1] for j in range(size[1])]
    out = torch.tensor([[int(mask[r, c]) for c in cols] for r in rows])  # (H_out, W_out)
    return out.flip(-1) if hflip else out


# (channels, input size, output size, hflip, image dtype): non-square, one pixel in and out,
# ratios that are not integers (where flipping before resizing gives another mask).
CASES = [
    (1, (5, 7), (3, 4), True, torch.float32),
    (5, (4, 9), (8, 3), True, torch.float64),
    (2, (1, 1), (2, 5), True, torch.float32),
    (3, (6, 5), (1, 1), False, torch.float32),
    (3, (3, 8), (7, 6), True, torch.float32),
]


@pytest.mark.points(2)
def test_resize_then_flip_on_odd_non_square_sizes(exercise):
    for seed, (channels, in_size, out_size, hflip, dtype) in enumerate(CASES):
        what = f"{channels}-channel {dtype} image {in_size} -> {out_size}, hflip={hflip}"
        image, mask = random_pair(channels, *in_size, seed=seed, dtype=dtype)
        got_image, got_mask = unpack(
            exercise.resize_and_flip(image, mask, out_size, hflip), "image", "mask"
        )
        expected_mask = nearest_then_flip(mask, out_size, hflip)  # (H_out, W_out)
        torch.testing.assert_close(
            got_mask,
            expected_mask,
            msg=lambda m, what=what: (
                f"mask of a {what} (resize with the index formula, then flip): {m}"
            ),
        )
        expected_image = F.interpolate(
            image[None].float(), size=out_size, mode="bilinear", align_corners=False
        )[0]  # (C, H_out, W_out) float32
        if hflip:
            expected_image = expected_image.flip(-1)
        torch.testing.assert_close(
            got_image,
            expected_image,
            msg=lambda m, what=what: f"image of a {what} (bilinear, float32 out): {m}",
        )


@pytest.mark.points(1)
def test_resize_rejects_sizes_that_are_not_two_positive_ints(exercise):
    image, mask = random_pair(3, 4, 6, seed=9)
    _, got = unpack(  # valid: must not raise
        exercise.resize_and_flip(image, mask, (3, 5), True), "image", "mask"
    )
    torch.testing.assert_close(
        got,
        nearest_then_flip(mask, (3, 5), True),
        msg=lambda m: f"mask resized (4, 6) -> (3, 5) and flipped: {m}",
    )
    for size in [(4, 5, 6), (3, -2), (4.5, 5), (7,)]:
        expect_raises(
            lambda size=size: exercise.resize_and_flip(image, mask, size, False),
            ValueError,
            when=f"size={size!r} is not two positive ints",
        )
    expect_raises(
        lambda: exercise.resize_and_flip(image, mask[None], (4, 4), False),
        ValueError,
        when="the mask is (1, H, W) instead of (H, W)",
    )


@pytest.mark.points(1)
def test_one_hot_with_ignore_index_minus_one_and_absent_classes(exercise):
    mask = torch.tensor([[[0, -1, 2, 2, 0, -1, 2]]])  # (1, 1, 7): a batch of one non-square mask
    got = exercise.one_hot(mask, 5, ignore_index=-1)
    expected = torch.zeros(1, 5, 1, 7)  # classes 1, 3, 4 never appear but keep their channel
    for k in range(5):
        expected[0, k] = (mask[0] == k).float()
    torch.testing.assert_close(
        got, expected, msg=lambda m: f"one_hot(mask (1, 1, 7), num_classes=5, ignore_index=-1): {m}"
    )
    all_ignored = torch.full((2, 3), 255)
    torch.testing.assert_close(
        exercise.one_hot(all_ignored, 2),
        torch.zeros(2, 2, 3),
        msg=lambda m: f"one_hot of a mask whose pixels are all 255: {m}",
    )
    expect_raises(
        lambda: exercise.one_hot(torch.tensor([[0, 255]]), 3, ignore_index=-1),
        ValueError,
        when="ignore_index=-1, so 255 is a label, and num_classes=3",
    )
    expect_raises(
        lambda: exercise.one_hot(torch.tensor([[0, -2]]), 3),
        ValueError,
        when="the mask holds label -2 (default ignore_index=255)",
    )


def counts_by_loop(masks: torch.Tensor, num_classes: int, ignore_index: int):
    """(c_k, P_k) by visiting every pixel: class pixel counts and counted pixels of the images
    in which each class appears."""
    counts = [0] * num_classes
    image_pixels = [0] * num_classes
    for mask in masks.tolist():
        labels = [v for row in mask for v in row if v != ignore_index]
        for v in labels:
            counts[v] += 1
        for k in set(labels):
            image_pixels[k] += len(labels)
    return counts, image_pixels


@pytest.mark.points(1)
def test_median_weights_with_an_even_number_of_classes(exercise):
    generator = torch.Generator().manual_seed(11)
    masks = torch.tensor([0, 1, 3, 4, 4, 4])[torch.randint(0, 6, (3, 4, 5), generator=generator)]
    masks[1, :2] = 255  # ignored pixels
    masks[2][masks[2] == 1] = 0  # class 1 is missing from the last image
    counts, image_pixels = counts_by_loop(masks, 5, 255)
    present = [k for k in range(5) if counts[k] > 0]
    assert present == [0, 1, 3, 4], "the case needs four classes (an even number) present"
    frequency = {k: counts[k] / image_pixels[k] for k in present}
    median = float(np.median(list(frequency.values())))  # mean of the two middle values
    expected = torch.tensor([median / frequency[k] if k in frequency else 0.0 for k in range(5)])
    got = exercise.class_weights(masks, 5, "median")
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"median-frequency weights with 4 classes present (median = mean of the middle two, "
            f"not torch.median's lower one), class 2 absent: {m}"
        ),
    )


@pytest.mark.points(1)
def test_inverse_weights_with_absent_classes_and_another_ignore_index(exercise):
    masks = torch.tensor(
        [[[2, 2, 2, 0, 7, 7]], [[0, 7, 7, 7, 7, 2]]]
    )  # (2, 1, 6); 7 is ignored, classes 1, 3 absent
    counts, _ = counts_by_loop(masks, 4, 7)
    total = sum(counts)  # T = 6 counted pixels
    expected = torch.tensor([total / (4 * c) if c else 0.0 for c in counts])  # K = 4, not 2
    got = exercise.class_weights(masks, 4, "inverse", ignore_index=7)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"inverse weights T / (num_classes * c_k) with num_classes=4, classes 1 and 3 absent, "
            f"ignore_index=7: {m}"
        ),
    )
    everything_ignored = torch.full((1, 2, 3), 255)
    for method in ("inverse", "median"):
        torch.testing.assert_close(
            exercise.class_weights(everything_ignored, 3, method),
            torch.zeros(3),
            msg=lambda m: (
                f"{method} weights when every pixel is ignored (no class "
                f"appears, all weights 0.0): {m}"
            ),
        )
    expect_raises(
        lambda: exercise.class_weights(torch.tensor([[[0, 4]]]), 4, "inverse"),
        ValueError,
        when="the masks hold label 4 and num_classes=4",
    )


@pytest.mark.points(1)
def test_one_hot_with_a_single_class_and_ignored_pixels(exercise):
    mask = torch.tensor([[0, 255, 0], [255, 0, 0]])  # (2, 3): one class, two ignored pixels
    expected = (mask == 0).float()[None]  # (1, 2, 3): 1.0 on class 0, 0.0 on ignored pixels
    got = exercise.one_hot(mask, 1)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"one_hot(mask with 255 pixels, num_classes=1): an ignored pixel must not be encoded "
            f"as a label that does not exist: {m}"
        ),
    )


@pytest.mark.points(1)
def test_one_hot_rejects_the_label_equal_to_num_classes(exercise):
    mask = torch.tensor([[[3, 0, 255], [1, 2, 3]], [[2, 2, 0], [255, 1, 3]]])  # (2, 2, 3), K = 4
    expected = torch.stack([(mask == k).float() for k in range(4)], dim=1)  # (2, 4, 2, 3)
    got = exercise.one_hot(mask, 4)  # valid: labels 0..3 and the ignore index
    torch.testing.assert_close(
        got, expected, msg=lambda m: f"one_hot of a (2, 2, 3) batch with labels 0..3, K=4: {m}"
    )
    too_high = mask.clone()
    too_high[1, 0, 1] = 4  # one pixel holds label 4 == num_classes: classes run from 0 to 3
    expect_raises(
        lambda: exercise.one_hot(too_high, 4),
        ValueError,
        when="one pixel holds label 4 and num_classes=4 (labels must be below num_classes)",
    )
