"""Graded tests for exercise 06: joint resize/flip, one-hot encoding, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_grader.learner.fixtures import expect_raises, unpack

EXERCISE = "ex06_data_augmentation"

SIZES = [((6, 8), (9, 13)), ((6, 8), (4, 5)), ((7, 9), (11, 5))]


def labelled_pair(height: int, width: int, seed: int = 0):
    """A mask with labels {0, 3, 7, 255} and an image whose first channel stores the label."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 3, 7, 255])
    mask = labels[torch.randint(0, 4, (height, width), generator=generator)]  # (H, W) int64
    image = torch.rand(3, height, width, generator=generator)
    image[0] = mask.float()
    return image, mask


def nearest_by_formula(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Output pixel (i, j) takes input (floor(i * H / H_out), floor(j * W / W_out))."""
    height, width = mask.shape
    rows = torch.tensor([(i * height) // size[0] for i in range(size[0])])
    cols = torch.tensor([(j * width) // size[1] for j in range(size[1])])
    return mask[rows][:, cols]


@pytest.mark.points(2)
@pytest.mark.parametrize("in_size, out_size", SIZES)
def test_resize_mask_is_nearest_neighbour(exercise, in_size, out_size):
    image, mask = labelled_pair(*in_size)
    _, got = unpack(exercise.resize_and_flip(image, mask, out_size, False), "image", "mask")
    expected = nearest_by_formula(mask, out_size)
    torch.testing.assert_close(
        got, expected, msg=lambda m: f"mask resized {in_size} -> {out_size}: {m}"
    )


@pytest.mark.points(1)
def test_resize_never_invents_labels(exercise):
    image, mask = labelled_pair(6, 8, seed=1)
    for size in [(9, 13), (4, 5), (17, 3)]:
        _, got = unpack(exercise.resize_and_flip(image, mask, size, True), "image", "mask")
        invented = set(got.unique().tolist()) - {0, 3, 7, 255}
        assert not invented, (
            f"resizing to {size} created labels {sorted(invented)} that were not in the mask"
        )


@pytest.mark.points(1)
def test_resize_image_is_bilinear(exercise):
    image, mask = labelled_pair(6, 8, seed=2)
    got, _ = unpack(exercise.resize_and_flip(image, mask, (9, 13), False), "image", "mask")
    expected = F.interpolate(image[None], size=(9, 13), mode="bilinear", align_corners=False)[0]
    assert got.dtype == torch.float32, f"image dtype should be float32, got {got.dtype}"
    torch.testing.assert_close(got, expected, msg=lambda m: f"image resized bilinearly: {m}")


@pytest.mark.points(2)
def test_flip_keeps_image_and_mask_aligned(exercise):
    image, mask = labelled_pair(7, 9, seed=3)
    plain_image, plain_mask = unpack(
        exercise.resize_and_flip(image, mask, (7, 9), False), "image", "mask"
    )
    flipped_image, flipped_mask = unpack(
        exercise.resize_and_flip(image, mask, (7, 9), True), "image", "mask"
    )
    torch.testing.assert_close(
        plain_mask, mask, msg=lambda m: f"same size, no flip: mask unchanged: {m}"
    )
    torch.testing.assert_close(flipped_mask, mask.flip(-1), msg=lambda m: f"flipped mask: {m}")
    torch.testing.assert_close(flipped_image, image.flip(-1), msg=lambda m: f"flipped image: {m}")
    # the first image channel stores the label: it must still agree with the mask after the flip
    torch.testing.assert_close(
        flipped_image[0].long(),
        flipped_mask,
        msg=lambda m: f"image and mask no longer aligned: {m}",
    )


@pytest.mark.points(1)
def test_resize_checks_its_inputs(exercise):
    image, mask = labelled_pair(6, 8)
    _, got = unpack(  # valid: must not raise
        exercise.resize_and_flip(image, mask, (4, 4), False), "image", "mask"
    )
    torch.testing.assert_close(
        got, nearest_by_formula(mask, (4, 4)), msg=lambda m: f"mask resized (6, 8) -> (4, 4): {m}"
    )
    _, got = unpack(  # 1 is a positive size
        exercise.resize_and_flip(image, mask, (1, 5), False), "image", "mask"
    )
    torch.testing.assert_close(
        got, nearest_by_formula(mask, (1, 5)), msg=lambda m: f"mask resized (6, 8) -> (1, 5): {m}"
    )
    expect_raises(
        lambda: exercise.resize_and_flip(image, mask[:5], (4, 4), False),
        ValueError,
        when="the mask has 5 rows and the image 6",
    )
    expect_raises(
        lambda: exercise.resize_and_flip(image[0], mask, (4, 4), False),
        ValueError,
        when="the image is (H, W) instead of (C, H, W)",
    )
    expect_raises(
        lambda: exercise.resize_and_flip(image, mask, (0, 4), False),
        ValueError,
        when="size=(0, 4) has a zero height",
    )


@pytest.mark.points(2)
def test_one_hot_matches_a_loop_over_classes(exercise):
    generator = torch.Generator().manual_seed(4)
    mask = torch.randint(0, 4, (2, 5, 6), generator=generator)
    mask[0, 0, :3] = 255
    got = exercise.one_hot(mask, 4)
    expected = torch.zeros(2, 4, 5, 6)
    for n in range(2):
        for k in range(4):
            expected[n, k] = (mask[n] == k).float()
    torch.testing.assert_close(got, expected, msg=lambda m: f"one_hot of a (2, 5, 6) batch: {m}")
    single = exercise.one_hot(mask[1], 4)
    torch.testing.assert_close(
        single, expected[1], msg=lambda m: f"one_hot of one (5, 6) mask: {m}"
    )


@pytest.mark.points(1)
def test_one_hot_rejects_labels_out_of_range(exercise):
    got = exercise.one_hot(torch.tensor([[0, 1], [255, 2]]), 3)  # valid: must not raise
    expected = torch.tensor(
        [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]
    )
    torch.testing.assert_close(
        got, expected, msg=lambda m: f"one_hot([[0, 1], [255, 2]], 3), 255 ignored: {m}"
    )
    expect_raises(
        lambda: exercise.one_hot(torch.tensor([[0, 1], [5, 2]]), 3),
        ValueError,
        when="the mask holds label 5 and num_classes=3",
    )


MASKS = torch.tensor(
    [[[0, 0], [0, 1]], [[0, 2], [2, 255]]]
)  # counts: class 0: 4, class 1: 1, class 2: 2; 7 counted


@pytest.mark.points(1)
def test_inverse_frequency_weights_by_hand(exercise):
    got = exercise.class_weights(MASKS, 3, "inverse")
    expected = torch.tensor([7 / 12, 7 / 3, 7 / 6])  # T / (K * c_k) with T = 7, K = 3
    torch.testing.assert_close(got, expected, msg=lambda m: f"inverse-frequency weights: {m}")


@pytest.mark.points(2)
def test_median_frequency_weights_by_hand(exercise):
    got = exercise.class_weights(MASKS, 4, "median")
    # f_0 = 4 / 7 (in both images, 4 + 3 counted pixels), f_1 = 1 / 4, f_2 = 2 / 3; class 3 absent
    frequency = torch.tensor([4 / 7, 1 / 4, 2 / 3])
    expected = torch.tensor([*(frequency.median() / frequency).tolist(), 0.0])
    torch.testing.assert_close(got, expected, msg=lambda m: f"median-frequency weights: {m}")


@pytest.mark.points(1)
def test_balanced_data_gets_equal_weights_and_unknown_method_fails(exercise):
    masks = torch.tensor([[[0, 1], [2, 3]], [[3, 2], [1, 0]]])
    for method in ("inverse", "median"):
        torch.testing.assert_close(
            exercise.class_weights(masks, 4, method),
            torch.ones(4),
            msg=lambda m: f"{method} weights of balanced masks: {m}",
        )
    expect_raises(
        lambda: exercise.class_weights(masks, 4, "sqrt"),
        ValueError,
        when="method='sqrt' (only 'inverse' and 'median' exist)",
    )
    expect_raises(
        lambda: exercise.class_weights(masks, 3, "inverse"),
        ValueError,
        when="the masks hold label 3 and num_classes=3",
    )


@pytest.mark.points(1)
def test_median_frequency_weights_with_four_classes(exercise):
    masks = torch.tensor([[[0, 0, 0, 1], [2, 2, 3, 3]], [[0, 0, 1, 1], [0, 3, 3, 3]]])
    # c = (6, 3, 2, 5); P = (16, 16, 8, 16) (class 2 only in the first image), so
    # f = (6/16, 3/16, 2/8, 5/16). Four classes: the median is the mean of the two middle values,
    # (4/16 + 5/16) / 2, not torch.median's lower one (4/16)
    frequency = np.array([6 / 16, 3 / 16, 2 / 8, 5 / 16])
    expected = torch.tensor(float(np.median(frequency)) / frequency, dtype=torch.float32)
    got = exercise.class_weights(masks, 4, "median")
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"median-frequency weights with 4 classes: expected {[round(w, 3) for w in expected.tolist()]} "
            f"(median = mean of the two middle frequencies), got "
            f"{got.tolist() if isinstance(got, torch.Tensor) else got}: {m}"
        ),
    )
