"""Graded tests for exercise 07: poly_lr, train_one_epoch, evaluate."""

import math

import pytest
import torch
from torch import nn

from course_grader.probes.ex07 import build_case, case_data
from course_lib import engine
from course_lib.schedules import poly_factor

EXERCISE = "ex07_training"


def _brute_force_cm(pred, target, k):
    cm = torch.zeros(k, k, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        cm[t, p] += 1
    return cm


def _iou_from_loops(cm):
    k = cm.shape[0]
    values = []
    for c in range(k):
        tp = cm[c, c].item()
        union = cm[c, :].sum().item() + cm[:, c].sum().item() - tp
        values.append(tp / union if union else math.nan)
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.points(1)
def test_poly_lr_hand_values(exercise):
    cases = [
        ((0.01, 0, 100), 0.01),
        ((0.01, 50, 100), 0.01 * 0.5**0.9),
        ((0.01, 100, 100), 0.0),
        ((0.01, 130, 100), 0.0),
        ((2.0, 3, 4, 1.0), 0.5),
    ]
    for args, expected in cases:
        got = exercise.poly_lr(*args)
        assert isinstance(got, float) and not isinstance(got, complex), (
            f"poly_lr{args} must return a float, got {type(got).__name__}"
        )
        assert got == pytest.approx(expected, abs=1e-12), (
            f"poly_lr{args}: expected {expected}, got {got}"
        )


@pytest.mark.points(1)
def test_poly_lr_matches_the_course_schedule_on_every_step(exercise):
    total = 37
    for step in range(total + 3):
        expected = 0.3 * poly_factor(step, total, power=0.9)
        got = exercise.poly_lr(0.3, step, total)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-15), (
            f"poly_lr(0.3, {step}, {total}): expected {expected:.6g}, got {got}"
        )


@pytest.mark.points(2)
def test_train_one_epoch_matches_the_reference_loop(exercise):
    got = exercise.probe("train_one_epoch_run", case_data(0, 8, 4), 2)  # dropout seed 2
    model, loader, optimizer = build_case(0, 8, 4)  # the same case, trained here by the course
    torch.manual_seed(2)
    expected_loss = engine.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, "cpu")
    expected_weights = torch.cat(
        [t.detach().flatten().double() for t in model.state_dict().values()]
    )
    assert got["training"], "train_one_epoch must put the model in training mode (model.train())"
    torch.testing.assert_close(
        got["weights"],
        expected_weights,
        rtol=1e-5,
        atol=1e-6,
        msg=lambda m: (
            f"weights after one epoch differ from the reference "
            f"(zero_grad, backward, step once per batch): {m}"
        ),
    )
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5), (
        f"mean loss: expected {expected_loss:.6f}, got {got['loss']:.6f}"
    )


@pytest.mark.points(1)
def test_train_one_epoch_weighs_a_short_last_batch(exercise):
    batch_losses = []

    def recording_loss(logits, targets):
        loss = nn.functional.cross_entropy(logits, targets)
        batch_losses.append(loss.item())
        return loss

    model, loader, optimizer = build_case(5, 5, 2)  # batches of 2, 2 and 1 images
    torch.manual_seed(7)
    expected = engine.train_one_epoch(model, loader, recording_loss, optimizer, "cpu")
    unweighted = sum(batch_losses) / len(batch_losses)
    assert abs(unweighted - expected) > 1e-4, "the case must separate the two averages"
    got = exercise.probe("train_one_epoch_run", case_data(5, 5, 2), 7)["loss"]
    assert got == pytest.approx(expected, rel=1e-5), (
        f"expected the mean loss per image {expected:.6f}, got {got:.6f}"
        + (
            " (that is the plain mean of the batch losses; weigh each by its number of images)"
            if got == pytest.approx(unweighted, rel=1e-5)
            else ""
        )
    )


@pytest.mark.points(2)
def test_evaluate_matches_the_course_engine_in_eval_mode(exercise):
    got = exercise.probe("evaluate_run", case_data(3, 10, 4))
    model, loader, _ = build_case(3, 10, 4)
    expected = engine.evaluate(model, loader, 3, "cpu")
    assert got["weights_unchanged"], (
        "evaluate changed the model's state (BatchNorm statistics?): "
        "call model.eval() and use torch.no_grad()"
    )
    assert got["repeat_miou"] == got["miou"], (
        "two evaluations gave different numbers: dropout still active? call model.eval()"
    )
    torch.testing.assert_close(
        got["confusion_matrix"],
        expected["confusion_matrix"],
        msg=lambda m: f"confusion matrix (rows = target): {m}",
    )
    torch.testing.assert_close(
        got["iou_per_class"],
        torch.tensor(expected["iou_per_class"], dtype=torch.float64),
        equal_nan=True,
        msg=lambda m: f"iou_per_class: {m}",
    )
    assert got["miou"] == pytest.approx(expected["miou"], rel=1e-9)


@pytest.mark.points(2)
def test_evaluate_accumulates_instead_of_averaging_batches(exercise):
    # Image 0: a large class-1 region predicted perfectly. Image 1: a single class-1 pixel, missed.
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, :, :3] = 1
    target[1, 0, 0] = 1
    pred = target.clone()
    pred[1, 0, 0] = 0
    logits = nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()  # (2, 2, 4, 4)
    cm = _brute_force_cm(pred, target, 2)
    expected_iou = _iou_from_loops(cm)
    expected_miou = expected_iou.mean().item()
    per_batch = (
        sum(
            _iou_from_loops(_brute_force_cm(pred[i], target[i], 2)).nanmean().item()
            for i in range(2)
        )
        / 2
    )
    assert abs(per_batch - expected_miou) > 0.05
    got = exercise.probe("evaluate_fixed_logits", logits, target, 1)
    torch.testing.assert_close(got["confusion_matrix"], cm, msg=lambda m: f"confusion matrix: {m}")
    assert got["miou"] == pytest.approx(expected_miou), (
        f"expected the data-set mIoU {expected_miou:.4f}, got {got['miou']:.4f}"
        + (
            " (the average of per-batch mIoUs: accumulate the confusion matrix instead)"
            if got["miou"] == pytest.approx(per_batch)
            else ""
        )
    )


@pytest.mark.points(1)
def test_evaluate_leaves_absent_classes_out_of_the_mean(exercise):
    target = torch.tensor([[[0, 0, 1], [1, 1, 0]]])  # class 2 never appears ...
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0]]])  # ... and is never predicted
    logits = nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()  # (1, 3, 2, 3)
    expected_iou = _iou_from_loops(_brute_force_cm(pred, target, 3))
    got = exercise.probe("evaluate_fixed_logits", logits, target, 1)
    torch.testing.assert_close(
        got["iou_per_class"],
        expected_iou,
        equal_nan=True,
        msg=lambda m: f"iou_per_class (NaN for a class absent everywhere): {m}",
    )
    assert got["miou"] == pytest.approx(expected_iou[:2].mean().item()), (
        "mIoU must average only the classes whose IoU is not NaN"
    )
