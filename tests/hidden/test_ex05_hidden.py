"""Hidden graded tests of exercise 05: the same losses and metrics on cases the public tests skip.

- `soft_dice_loss`: an `ignore_index` that is also a class label (0) and a negative one (-1), batch
  3 and batch 1, odd non-square images, float32 logits, a class whose pixels are all ignored.
- `focal_loss`: a fractional gamma with `ignore_index=0`, and float32 logits so confident that
  softmax underflows to 0 (the loss must stay finite).
- `confusion_matrix`: 1-D and 4-D label tensors, classes that never occur, `ignore_index` 0 and -1.
- `iou_per_class` / `mean_iou`: a 1x1 matrix, a matrix with no correct pixel, counts beyond 2**40.

References: `course_lib.losses.dice_loss` (smooth 0), per-pixel loops with `math` (a max-shifted
log-sum-exp for the focal loss), a pixel loop for the confusion matrix and hand-computed IoU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import losses

EXERCISE = "ex05_losses_metrics"


def random_batch(
    seed: int, n: int, k: int, h: int, w: int, scale: float = 2.0, dtype=torch.float64
):
    """Logits (N, K, H, W) of `dtype` and a target (N, H, W) int64 with labels in [0, K)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, h, w, generator=g, dtype=torch.float64) * scale).to(dtype)
    target = torch.randint(0, k, (n, h, w), generator=g)
    return logits, target


def loop_focal(logits, target, gamma, ignore_index):
    """Mean over non-ignored pixels of -(1 - p_t) ** gamma * log p_t, one pixel at a time in
    float64, log p_t = l_t - max l - log sum exp(l - max l)."""
    n, k, h, w = logits.shape
    terms = []
    for b in range(n):
        for i in range(h):
            for j in range(w):
                t = int(target[b, i, j])
                if t == ignore_index:
                    continue
                scores = [float(logits[b, c, i, j]) for c in range(k)]
                top = max(scores)
                log_pt = scores[t] - top - math.log(sum(math.exp(s - top) for s in scores))
                terms.append(-((1 - math.exp(log_pt)) ** gamma) * log_pt)
    return sum(terms) / len(terms)


def loop_confusion(pred, target, num_classes, ignore_index=None):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if t != ignore_index:
            cm[t, p] += 1
    return torch.from_numpy(cm)


def as_float(value, what: str) -> float:
    assert isinstance(value, (torch.Tensor, float, int)), (
        f"{what} should return a tensor, got {type(value).__name__}"
    )
    value = torch.as_tensor(value)
    assert value.numel() == 1, f"{what} should return a scalar, got shape {tuple(value.shape)}"
    return float(value)


# ----------------------------------------------------------------------------- soft Dice


@pytest.mark.points(1)
@pytest.mark.parametrize("ignore_index", [0, -1])
def test_soft_dice_with_a_class_or_negative_ignore_index(exercise, ignore_index):
    if ignore_index == 0:
        # batch 3, 5x9: every pixel of class 0 is ignored, so class 0 is absent from the mean
        logits, target = random_batch(10, n=3, k=3, h=5, w=9)
    else:
        # batch 1, 7x3, float32: about half the pixels ignored, among them every pixel of class 0,
        # which is then absent (a one-hot of the labels with -1 replaced by 0, left unmasked,
        # would make it present)
        logits, target = random_batch(11, n=1, k=3, h=7, w=3, dtype=torch.float32)
        g = torch.Generator().manual_seed(12)
        target[(target == 0) | (torch.rand(target.shape, generator=g) < 0.3)] = -1
    expected = losses.dice_loss(
        logits.double(), target, mode="multiclass", smooth=0.0, ignore_index=ignore_index
    )
    got = exercise.soft_dice_loss(logits, target, ignore_index=ignore_index)
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64),
        expected,
        atol=1e-5,
        rtol=1e-5,
        msg=lambda m: (
            f"logits {tuple(logits.shape)} {logits.dtype}, ignore_index={ignore_index} "
            f"(target classes left: {sorted(set(target.flatten().tolist()) - {ignore_index})}): {m}"
        ),
    )


# ----------------------------------------------------------------------------- focal loss


@pytest.mark.points(1)
def test_focal_with_fractional_gamma_and_ignore_index_zero(exercise):
    logits, target = random_batch(13, n=2, k=3, h=3, w=5)  # (2, 3, 3, 5), (2, 3, 5)
    expected = loop_focal(logits, target, gamma=0.5, ignore_index=0)
    got = as_float(exercise.focal_loss(logits, target, gamma=0.5, ignore_index=0), "focal_loss")
    assert got == pytest.approx(expected, rel=1e-6), (
        f"gamma=0.5, ignore_index=0 (class 0 pixels ignored) on (2, 3, 3, 5) logits: "
        f"expected {expected:.6f}, got {got:.6f}"
    )


@pytest.mark.points(1)
def test_focal_stays_finite_for_very_confident_float32_logits(exercise):
    # (1, 3, 2, 3) float32: one logit 150 above the others at every pixel, so softmax(logits)
    # underflows to exactly 0 for the other classes; three pixels are confidently right
    # (loss ~ 0), three confidently wrong (loss ~ 150 each).
    winner = torch.tensor([[[0, 1, 2], [2, 0, 1]]])
    target = torch.tensor([[[0, 1, 2], [0, 1, 2]]])
    logits = torch.zeros(1, 3, 2, 3)
    logits.scatter_(1, winner.unsqueeze(1), 150.0)
    expected = loop_focal(logits, target, gamma=2.0, ignore_index=None)
    got = as_float(exercise.focal_loss(logits, target, gamma=2.0), "focal_loss")
    assert math.isfinite(got) and got == pytest.approx(expected, rel=1e-5), (
        f"float32 logits with a margin of 150 (half the pixels confidently wrong): expected "
        f"{expected:.4f}, got {got}"
    )


# ----------------------------------------------------------------------------- confusion matrix


@pytest.mark.points(1)
def test_confusion_matrix_on_1d_and_4d_labels_with_absent_classes(exercise):
    g = torch.Generator().manual_seed(14)
    cases = []
    # 1-D, 6 classes of which 4 and 5 never occur; ignore_index 0 is a class label too
    cases.append(
        (torch.randint(0, 4, (23,), generator=g), torch.randint(0, 4, (23,), generator=g), 6, 0)
    )
    # (2, 1, 3, 4), 3 classes, about a third of the target ignored as -1
    target = torch.randint(0, 3, (2, 1, 3, 4), generator=g)
    target[torch.rand(2, 1, 3, 4, generator=g) < 0.35] = -1
    cases.append((torch.randint(0, 3, (2, 1, 3, 4), generator=g), target, 3, -1))
    for pred, target, num_classes, ignore_index in cases:
        got = exercise.confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)
        what = (
            f"labels of shape {tuple(target.shape)}, {num_classes} classes, "
            f"ignore_index={ignore_index} (rows = target)"
        )
        torch.testing.assert_close(
            got,
            loop_confusion(pred, target, num_classes, ignore_index),
            msg=lambda m, what=what: f"{what}: {m}",
        )


# ----------------------------------------------------------------------------- IoU and mIoU


@pytest.mark.points(1)
def test_iou_and_mean_iou_on_one_class_no_hits_and_huge_counts(exercise):
    big = 2**40
    cases = [
        # (K, K) matrix (rows = target), expected IoU per class
        (torch.tensor([[7]]), [1.0]),
        (torch.tensor([[0]]), [math.nan]),
        (torch.tensor([[0, 3], [5, 0]]), [0.0, 0.0]),  # no correct pixel: 0, not NaN
        # float32 would round big + 1 to big (IoU 1.0) and 1 / (big + 1) to 1 / big
        (
            torch.tensor([[big + 1, 0, 1], [0, 1, big], [0, 0, 0]]),
            [(big + 1) / (big + 2), 1 / (big + 2), 0.0],
        ),
    ]
    for cm, iou in cases:
        expected = torch.tensor(iou, dtype=torch.float64)
        torch.testing.assert_close(
            exercise.iou_per_class(cm),
            expected,
            equal_nan=True,
            rtol=1e-12,
            atol=0.0,
            msg=lambda m, cm=cm: f"iou_per_class of {cm.tolist()} (float64 expected): {m}",
        )
        defined = [v for v in iou if not math.isnan(v)]
        expected_miou = sum(defined) / len(defined) if defined else math.nan
        got = exercise.mean_iou(cm)
        assert isinstance(got, float), (
            f"mean_iou should return a Python float, got {type(got).__name__}"
        )
        assert got == pytest.approx(expected_miou, rel=1e-12, nan_ok=True), (
            f"mIoU of {cm.tolist()}: expected {expected_miou}, got {got}"
        )
