"""Hidden graded tests of exercise 07: poly_lr with other powers and short schedules, a training
epoch with another loss and batches of one image, an evaluation with uneven batches and
classes that only the prediction or only the target holds, and one with classes of a single pixel
(a union of 1 still gives an IoU).

References: the poly formula written out with `math`, `course_lib.engine.train_one_epoch` on the
identical seeded case (`probes.ex07.build_case`; the worker is sent its `case_data`), and confusion
matrices counted pixel by pixel.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_grader.probes.ex07 import build_case, case_data
from course_lib import engine

EXERCISE = "ex07_training"


def cm_by_loop(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """cm[t, p] counted one pixel at a time: (K, K) int64."""
    cm = torch.zeros(k, k, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        cm[t, p] += 1
    return cm


def iou_by_loop(cm: torch.Tensor) -> torch.Tensor:
    """TP / (row + column - TP) per class, NaN for an empty union: (K,) float64."""
    values = []
    for c in range(cm.shape[0]):
        tp = cm[c, c].item()
        union = cm[c, :].sum().item() + cm[:, c].sum().item() - tp
        values.append(tp / union if union else math.nan)
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.points(1)
def test_poly_lr_other_powers_and_short_schedules(exercise):
    for base_lr, total, power in ((1e-3, 7, 2.0), (0.05, 1, 0.5), (1, 5, 1.0), (0.2, 3, 3.3)):
        for step in range(total + 3):
            expected = base_lr * max(0.0, 1.0 - step / total) ** power
            got = exercise.poly_lr(base_lr, step, total, power)
            assert isinstance(got, float), (
                f"poly_lr({base_lr}, {step}, {total}, {power}) must return a float, "
                f"got {type(got).__name__}"
            )
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-15), (
                f"poly_lr({base_lr}, {step}, {total}, power={power}): expected {expected:.6g}, "
                f"got {got}" + (" (past the end the rate stays 0.0)" if step >= total else "")
            )


WEIGHTED = ([0.5, 2.0, 1.25], 0.2)  # class weights and label smoothing of the loss_fn


@pytest.mark.points(2)
def test_train_one_epoch_uses_the_given_loss_with_batches_of_one(exercise):
    class_weight, smoothing = WEIGHTED
    for seed, num_images, batch_size in ((9, 3, 1), (4, 6, 16)):  # batches of one; one batch
        what = f"{num_images} images in batches of {batch_size}"
        got = exercise.probe(
            "train_one_epoch_weighted_run",
            case_data(seed, num_images, batch_size),
            seed + 2,
            class_weight,
            smoothing,
        )
        model, loader, optimizer = build_case(seed, num_images, batch_size)
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(class_weight), label_smoothing=smoothing)
        torch.manual_seed(seed + 2)
        expected_loss = engine.train_one_epoch(model, loader, loss_fn, optimizer, "cpu")
        expected_weights = torch.cat(
            [t.detach().flatten().double() for t in model.state_dict().values()]
        )
        assert got["training"], f"{what}: the model must be in training mode (model.train())"
        torch.testing.assert_close(
            got["weights"],
            expected_weights,
            rtol=1e-5,
            atol=1e-6,
            msg=lambda m, what=what: (
                f"{what}, loss_fn = weighted, label-smoothed cross-entropy: "
                f"weights after one epoch differ from the reference (call "
                f"the loss_fn you are given, one step per batch): {m}"
            ),
        )
        assert got["loss"] == pytest.approx(expected_loss, rel=1e-5), (
            f"{what}, weighted cross-entropy: expected the mean loss per image "
            f"{expected_loss:.6f}, got {got['loss']:.6f}"
        )


@pytest.mark.points(1)
def test_train_one_epoch_returns_a_python_float(exercise):
    got = exercise.probe(
        "train_one_epoch_weighted_run", case_data(1, 5, 2), 3, [1.0, 1.0, 1.0], 0.0
    )
    assert got["loss_is_float"], (
        f"train_one_epoch must return the mean loss as a Python float (loss.item()), got a "
        f"{got['loss_type']}; summing loss tensors also keeps every batch's graph alive"
    )


@pytest.mark.points(2)
def test_evaluate_with_uneven_batches_and_one_sided_classes(exercise):
    generator = torch.Generator().manual_seed(21)
    # 5 images of 3 x 5 pixels, K = 4: class 2 is only in the targets, class 3 only predicted,
    # so both have IoU 0.0 (not NaN) and count in the mean.
    target = torch.tensor([0, 1, 2])[torch.randint(0, 3, (5, 3, 5), generator=generator)]
    pred = torch.tensor([0, 1, 3])[torch.randint(0, 3, (5, 3, 5), generator=generator)]
    pred[target == 0] = torch.where(torch.rand(5, 3, 5, generator=generator) < 0.7, 0, 3)[
        target == 0
    ]
    logits = nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()  # (5, 4, 3, 5)
    logits = logits + 0.1 * torch.rand(5, 4, 3, 5, generator=generator)  # argmax unchanged
    cm = cm_by_loop(pred, target, 4)
    expected_iou = iou_by_loop(cm)
    assert expected_iou[2] == 0 and expected_iou[3] == 0 and not expected_iou.isnan().any()
    expected_miou = expected_iou.mean().item()
    for batch_size in (2, 1):
        what = f"5 images of 3 x 5 pixels in batches of {batch_size}, K = 4"
        got = exercise.probe("evaluate_fixed_logits", logits, target, batch_size)
        torch.testing.assert_close(
            got["confusion_matrix"],
            cm,
            msg=lambda m, what=what: f"{what}: confusion matrix (rows = target): {m}",
        )
        torch.testing.assert_close(
            got["iou_per_class"],
            expected_iou,
            equal_nan=True,
            msg=lambda m, what=what: (
                f"{what}: iou_per_class (a class only in the target or "
                f"only predicted has IoU 0.0): {m}"
            ),
        )
        assert got["miou"] == pytest.approx(expected_miou, rel=1e-9), (
            f"{what}: expected mIoU {expected_miou:.6f} over all 4 classes, got {got['miou']}"
        )


@pytest.mark.points(1)
def test_evaluate_with_classes_of_a_single_pixel(exercise):
    # K = 3, 2 images of 2 x 3: class 1 is one target pixel, predicted right (IoU 1.0 from a union
    # of 1); class 2 is one wrongly predicted pixel (IoU 0.0 from a union of 1). Both count.
    target = torch.zeros(2, 2, 3, dtype=torch.long)
    target[0, 1, 1] = 1
    pred = target.clone()
    pred[1, 0, 2] = 2
    logits = nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()  # (2, 3, 2, 3)
    cm = cm_by_loop(pred, target, 3)
    expected_iou = iou_by_loop(cm)
    assert expected_iou.tolist() == pytest.approx([10 / 11, 1.0, 0.0])  # by hand: union 11, 1, 1
    expected_miou = (10 / 11 + 1.0 + 0.0) / 3
    got = exercise.probe("evaluate_fixed_logits", logits, target, 1)
    torch.testing.assert_close(
        got["confusion_matrix"], cm, msg=lambda m: f"confusion matrix (rows = target): {m}"
    )
    torch.testing.assert_close(
        got["iou_per_class"],
        expected_iou,
        equal_nan=True,
        msg=lambda m: (
            f"iou_per_class (a class whose union is a single pixel has an IoU, not NaN): {m}"
        ),
    )
    assert got["miou"] == pytest.approx(expected_miou, rel=1e-9), (
        f"expected mIoU {expected_miou:.6f} over all 3 classes, got {got['miou']}"
    )
