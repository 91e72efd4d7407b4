"""Graded tests of exercise 05: soft Dice, focal loss, confusion matrix and mIoU.

References are independent of the learner's code: hand-computed cases, per-pixel loops,
`torch.nn.functional.cross_entropy` and the course's own `course_lib.losses` / `course_lib.metrics`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import losses, metrics

EXERCISE = "ex05_losses_metrics"


def random_batch(seed: int, n: int = 2, k: int = 4, h: int = 5, w: int = 7, ignore: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, k, (n, h, w), generator=g)
    if ignore:
        target[torch.rand(n, h, w, generator=g) < ignore] = 255
    return logits, target


def loop_confusion(pred, target, num_classes, ignore_index=None):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if t != ignore_index:
            cm[t, p] += 1
    return torch.from_numpy(cm)


def as_scalar(value, what: str) -> float:
    assert isinstance(value, (torch.Tensor, float, int)), (
        f"{what} should return a tensor, got {type(value).__name__}"
    )
    value = torch.as_tensor(value)
    assert value.numel() == 1, f"{what} should return a scalar, got shape {tuple(value.shape)}"
    return float(value)


# ----------------------------------------------------------------------------- soft Dice


@pytest.mark.points(1)
def test_soft_dice_hand_computed(exercise):
    logits = torch.zeros(1, 2, 1, 4)  # p = 0.5 for both classes everywhere
    target = torch.tensor([[[0, 1, 1, 1]]])
    # class 0: 2 * 0.5 / (2 + 1) = 1/3; class 1: 2 * 1.5 / (2 + 3) = 3/5; loss = 1 - (1/3 + 3/5) / 2
    got = as_scalar(exercise.soft_dice_loss(logits, target), "soft_dice_loss")
    assert got == pytest.approx(8 / 15, abs=1e-6), (
        f"logits all 0, target [0, 1, 1, 1]: expected 8/15, got {got}"
    )


@pytest.mark.points(2)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_dice_matches_course_lib(exercise, seed):
    logits, target = random_batch(seed, ignore=0.2 if seed else 0.0)
    if seed == 2:
        target[target == 3] = 1  # class 3 absent from the target: left out of the mean
    kwargs = {"ignore_index": 255} if seed else {}
    expected = losses.dice_loss(
        logits, target, mode="multiclass", smooth=0.0, ignore_index=255 if seed else None
    )
    got = exercise.soft_dice_loss(logits, target, **kwargs)
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64),
        expected,
        atol=1e-6,
        rtol=1e-6,
        msg=lambda m: f"random batch (seed {seed}, ignore {kwargs}): {m}",
    )


@pytest.mark.points(2)
def test_soft_dice_gradient(exercise):
    logits, target = random_batch(3, ignore=0.2)
    result = exercise.probe(
        "loss_and_gradient", "soft_dice_loss", logits, target, {"ignore_index": 255}
    )
    reference = logits.clone().requires_grad_(True)
    losses.dice_loss(reference, target, smooth=0.0, ignore_index=255).backward()
    torch.testing.assert_close(
        result["grad"],
        reference.grad,
        atol=1e-6,
        rtol=1e-5,
        msg=lambda m: f"gradient of soft_dice_loss w.r.t. logits: {m}",
    )


@pytest.mark.points(1)
def test_soft_dice_edge_cases(exercise):
    logits, target = random_batch(4, n=1, h=1, w=1)
    got = as_scalar(exercise.soft_dice_loss(logits, target), "soft_dice_loss")
    p = logits.softmax(1)[0, target.item(), 0, 0].item()
    expected = 1 - 2 * p / (p + 1)  # only the pixel's class is present: Dice = 2p / (p + 1)
    assert got == pytest.approx(expected, abs=1e-6), (
        f"a single pixel: expected {expected:.6f}, got {got}"
    )
    all_ignored = torch.full_like(target, 255)
    got = as_scalar(
        exercise.soft_dice_loss(logits, all_ignored, ignore_index=255), "soft_dice_loss"
    )
    assert got == 0.0, f"every pixel ignored: the loss should be 0, got {got}"


# ----------------------------------------------------------------------------- focal loss


@pytest.mark.points(1)
def test_focal_gamma_zero_is_cross_entropy(exercise):
    logits, target = random_batch(5, ignore=0.2)
    got = exercise.focal_loss(logits, target, gamma=0.0, ignore_index=255)
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64),
        expected,
        msg=lambda m: f"focal_loss with gamma=0 must equal cross-entropy: {m}",
    )


@pytest.mark.points(2)
def test_focal_matches_pixel_loop(exercise):
    logits, target = random_batch(6, n=1, k=3, h=3, w=4)
    probs = logits.softmax(1)
    terms = []
    for i in range(3):
        for j in range(4):
            pt = probs[0, target[0, i, j], i, j].item()
            terms.append(-((1 - pt) ** 2) * math.log(pt))
    got = as_scalar(exercise.focal_loss(logits, target, gamma=2.0), "focal_loss")
    expected = sum(terms) / len(terms)
    assert got == pytest.approx(expected, rel=1e-6), (
        f"gamma=2 on a 3x4 image: expected {expected:.6f}, got {got:.6f}"
    )


@pytest.mark.points(1)
def test_focal_gradient_and_all_ignored(exercise):
    logits, target = random_batch(7, ignore=0.3)
    result = exercise.probe(
        "loss_and_gradient", "focal_loss", logits, target, {"gamma": 2.0, "ignore_index": 255}
    )
    reference = logits.clone().requires_grad_(True)
    losses.focal_loss(reference, target, gamma=2.0, ignore_index=255).backward()
    torch.testing.assert_close(
        result["grad"],
        reference.grad,
        atol=1e-7,
        rtol=1e-5,
        msg=lambda m: f"gradient of focal_loss w.r.t. logits: {m}",
    )
    got = as_scalar(
        exercise.focal_loss(logits, torch.full_like(target, 255), ignore_index=255), "focal_loss"
    )
    assert got == 0.0, f"every pixel ignored: the loss should be 0, got {got}"


# ----------------------------------------------------------------------------- confusion matrix


@pytest.mark.points(1)
def test_confusion_matrix_hand_computed(exercise):
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])
    pred = torch.tensor([[0, 2, 2], [1, 0, 1]])
    expected = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    got = exercise.confusion_matrix(pred, target, 3, ignore_index=255)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"target {target.tolist()}, pred {pred.tolist()}, ignore_index=255 (rows = target): {m}"
        ),
    )


@pytest.mark.points(2)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_confusion_matrix_matches_loop(exercise, seed):
    g = torch.Generator().manual_seed(seed)
    k = 2 + seed
    target = torch.randint(0, k, (2, 6, 5), generator=g)
    pred = torch.randint(0, k, (2, 6, 5), generator=g)
    ignore_index = 255 if seed % 2 else None
    if ignore_index is not None:
        target[torch.rand(2, 6, 5, generator=g) < 0.3] = 255
    got = exercise.confusion_matrix(pred, target, k, ignore_index=ignore_index)
    torch.testing.assert_close(
        got,
        loop_confusion(pred, target, k, ignore_index),
        msg=lambda m: f"random labels (seed {seed}, {k} classes, ignore_index={ignore_index}): {m}",
    )


@pytest.mark.points(1)
def test_confusion_matrix_edge_cases(exercise):
    got = exercise.confusion_matrix(torch.tensor([[2]]), torch.tensor([[1]]), 3)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[1, 2] = 1
    torch.testing.assert_close(got, expected, msg=lambda m: f"one pixel, target 1, pred 2: {m}")
    got = exercise.confusion_matrix(
        torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255), 3, ignore_index=255
    )
    torch.testing.assert_close(
        got,
        torch.zeros(3, 3, dtype=torch.int64),
        msg=lambda m: f"every pixel ignored gives an all-zero (3, 3) matrix: {m}",
    )


# ----------------------------------------------------------------------------- IoU and mIoU


@pytest.mark.points(2)
def test_iou_per_class_nan_policy(exercise):
    # class 0: TP 3, FP 1, FN 1; class 1: TP 4, FP 1, FN 2; class 2 predicted but absent: IoU 0;
    # class 3 absent from target and prediction: NaN.
    cm = torch.tensor([[3, 1, 0, 0], [1, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    expected = torch.tensor([3 / 5, 4 / 7, 0.0, math.nan], dtype=torch.float64)
    got = exercise.iou_per_class(cm)
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64),
        expected,
        equal_nan=True,
        msg=lambda m: f"IoU of {cm.tolist()} (rows = target): {m}",
    )


@pytest.mark.points(2)
def test_mean_iou_leaves_nan_classes_out(exercise):
    cm = torch.tensor([[3, 1, 0, 0], [1, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    got = exercise.mean_iou(cm)
    expected = (3 / 5 + 4 / 7 + 0.0) / 3
    assert isinstance(got, float), (
        f"mean_iou should return a Python float, got {type(got).__name__}"
    )
    assert got == pytest.approx(expected), (
        f"mIoU of {cm.tolist()}: expected {expected:.4f}, got {got}"
    )
    g = torch.Generator().manual_seed(8)
    cm = torch.randint(0, 20, (5, 5), generator=g)
    cm[2] = 0
    cm[:, 2] = 0
    assert exercise.mean_iou(cm) == pytest.approx(metrics.mean_iou(cm)), "mIoU of a random matrix"
    empty = exercise.mean_iou(torch.zeros(3, 3, dtype=torch.int64))
    assert isinstance(empty, float) and math.isnan(empty), (
        f"an all-zero matrix has mIoU NaN, got {empty}"
    )
