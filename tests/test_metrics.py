"""Confusion matrix, pixel metrics and panoptic quality against hand-computed cases and loops."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import metrics
from course_lib.metrics import ConfusionMatrix, confusion_matrix


def brute_force_confusion(pred, target, num_classes, ignore_index=None):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        cm[t, p] += 1
    return torch.from_numpy(cm)


# --------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_hand_computed():
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])
    pred = torch.tensor([[0, 2, 2], [1, 0, 1]])
    expected = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    torch.testing.assert_close(confusion_matrix(pred, target, 3, ignore_index=255), expected)


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(1, 6),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
    ignore_index=st.sampled_from([None, 255, -1, 0, 6]),
)
def test_confusion_matrix_matches_loop(num_classes, shape, seed, ignore_index):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=g)
    pred = torch.randint(0, num_classes, shape, generator=g)
    if ignore_index is not None:
        target[torch.rand(shape, generator=g) < 0.3] = ignore_index
    got = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)
    expected = brute_force_confusion(pred, target, num_classes, ignore_index)
    torch.testing.assert_close(got, expected)
    counted = target.numel() if ignore_index is None else int((target != ignore_index).sum())
    assert int(got.sum()) == counted


def test_confusion_matrix_from_logits_is_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    torch.testing.assert_close(
        confusion_matrix(logits, target, 4), brute_force_confusion(logits.argmax(1), target, 4)
    )


def test_confusion_matrix_binary_logits_threshold():
    logits = torch.tensor([-2.0, -0.1, 0.1, 3.0]).view(1, 1, 1, 4)
    target = torch.tensor([0, 1, 0, 1]).view(1, 1, 4)
    # sigmoid: 0.12, 0.475, 0.525, 0.95
    torch.testing.assert_close(confusion_matrix(logits, target, 2), torch.tensor([[1, 1], [1, 1]]))
    torch.testing.assert_close(
        confusion_matrix(logits, target, 2, threshold=0.9), torch.tensor([[2, 0], [1, 1]])
    )


def test_confusion_matrix_all_ignored_and_empty():
    target = torch.full((1, 2, 2), 255)
    pred = torch.zeros(1, 2, 2, dtype=torch.long)
    torch.testing.assert_close(
        confusion_matrix(pred, target, 3, ignore_index=255), torch.zeros(3, 3, dtype=torch.int64)
    )
    empty = torch.zeros(0, 4, 4, dtype=torch.long)
    torch.testing.assert_close(
        confusion_matrix(empty, empty, 2), torch.zeros(2, 2, dtype=torch.int64)
    )


def test_confusion_matrix_input_errors_name_the_problem():
    target = torch.tensor([[0, 1, 7]])
    pred = torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match=r"target has values \[7\]"):
        confusion_matrix(pred, target, 3)
    with pytest.raises(ValueError, match=r"\[7\].*ignore_index=255"):
        confusion_matrix(pred, target, 3, ignore_index=255)
    with pytest.raises(ValueError, match=r"target has values \[-1\]"):
        confusion_matrix(pred, torch.tensor([[0, -1, 1]]), 3)
    with pytest.raises(ValueError, match=r"target has values \[3, 300\]"):
        confusion_matrix(
            torch.zeros(1, 4, dtype=torch.long),
            torch.tensor([[3, 255, 300, 0]]),
            3,
            ignore_index=255,
        )
    with pytest.raises(ValueError, match=r"pred has values \[5\]"):
        confusion_matrix(torch.tensor([[0, 5, 1]]), torch.tensor([[0, 1, 1]]), 3)
    with pytest.raises(TypeError, match="target must hold integer"):
        confusion_matrix(pred, target.float(), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(
            torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 3
        )
    with pytest.raises(ValueError, match="4 channels but num_classes=3"):
        confusion_matrix(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(pred, target, 0)


def test_accumulator_update_reset_merge():
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randint(0, 3, (2, 4, 4), generator=g), torch.randint(0, 3, (2, 4, 4), generator=g))
        for _ in range(4)
    ]
    whole = ConfusionMatrix(3)
    first, second = ConfusionMatrix(3), ConfusionMatrix(3)
    for i, (p, t) in enumerate(batches):
        whole.update(p, t)
        (first if i < 2 else second).update(p, t)
    all_pred = torch.cat([p for p, _ in batches])
    all_target = torch.cat([t for _, t in batches])
    torch.testing.assert_close(whole.compute(), brute_force_confusion(all_pred, all_target, 3))
    torch.testing.assert_close(first.merge(second).compute(), whole.compute())
    whole.reset()
    assert int(whole.compute().sum()) == 0
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ConfusionMatrix(4))


def _ddp_worker(rank, world_size, init_file, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    g = torch.Generator().manual_seed(123)
    pred = torch.randint(0, 4, (4, 6, 6), generator=g)
    target = torch.randint(0, 4, (4, 6, 6), generator=g)
    target[:, 0] = 255
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred[rank::world_size], target[rank::world_size])  # each rank sees half the batch
    cm.all_reduce()
    torch.save(cm.compute(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_all_reduce_two_processes_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    g = torch.Generator().manual_seed(123)
    pred = torch.randint(0, 4, (4, 6, 6), generator=g)
    target = torch.randint(0, 4, (4, 6, 6), generator=g)
    target[:, 0] = 255
    expected = brute_force_confusion(pred, target, 4, ignore_index=255)
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), expected)


def test_all_reduce_without_process_group_is_noop():
    cm = ConfusionMatrix(2).update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    torch.testing.assert_close(cm.all_reduce().compute(), torch.tensor([[1, 1], [0, 0]]))


# --------------------------------------------------------------------------- pixel metrics


def test_metrics_from_matrix_hand_computed():
    # rows = target. class 0: TP 3, FN 1, FP 1; class 1: TP 4, FN 2, FP 1; class 2: TP 0, FN 0, FP 1
    # class 3: absent from target and prediction.
    cm = torch.tensor([[3, 1, 0, 0], [1, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    iou = metrics.iou_per_class(cm)
    torch.testing.assert_close(iou[:3], torch.tensor([3 / 5, 4 / 7, 0.0], dtype=torch.float64))
    assert math.isnan(iou[3])
    assert metrics.mean_iou(cm) == pytest.approx((3 / 5 + 4 / 7 + 0.0) / 3)
    dice = metrics.dice_per_class(cm)
    torch.testing.assert_close(dice[:3], torch.tensor([6 / 8, 8 / 11, 0.0], dtype=torch.float64))
    assert math.isnan(dice[3])
    assert metrics.pixel_accuracy(cm) == pytest.approx(7 / 10)
    recall = metrics.recall_per_class(cm)
    torch.testing.assert_close(recall[:2], torch.tensor([3 / 4, 4 / 6], dtype=torch.float64))
    assert math.isnan(recall[2]) and math.isnan(recall[3])
    precision = metrics.precision_per_class(cm)
    torch.testing.assert_close(
        precision[:3], torch.tensor([3 / 4, 4 / 5, 0.0], dtype=torch.float64)
    )
    assert metrics.mean_class_accuracy(cm) == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert metrics.frequency_weighted_iou(cm) == pytest.approx(0.4 * 3 / 5 + 0.6 * 4 / 7)


def test_metrics_accept_accumulator_and_numpy():
    cm = torch.tensor([[2, 1], [0, 3]])
    acc = ConfusionMatrix(2)
    acc.matrix += cm
    assert metrics.mean_iou(acc) == pytest.approx(metrics.mean_iou(cm.numpy()))
    assert metrics.mean_iou(cm) == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_all_nan_and_empty_matrix():
    cm = torch.zeros(3, 3, dtype=torch.int64)
    assert math.isnan(metrics.mean_iou(cm))
    assert math.isnan(metrics.pixel_accuracy(cm))
    with pytest.raises(ValueError, match="square"):
        metrics.mean_iou(torch.zeros(2, 3))


def test_summarize_keys():
    summary = metrics.summarize(torch.tensor([[5, 1], [2, 2]]))
    assert summary["miou"] == pytest.approx((5 / 8 + 2 / 5) / 2)
    assert summary["pixel_accuracy"] == pytest.approx(0.7)
    assert len(summary["iou_per_class"]) == 2


# --------------------------------------------------------------------------- panoptic quality


def brute_force_pq(pred, target, num_classes, div=1000, void=255, crowd=()):
    """Reference PQ by looping over every pair of segments with boolean masks (COCO crowd rules:
    crowd segments are skipped, and excuse predictions of their own class lying mostly on them)."""
    stats = {c: [0, 0, 0, 0.0] for c in range(num_classes)}
    for p_img, t_img in zip(
        pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])
    ):
        t_void = (t_img // div) == void
        p_ids = [i for i in torch.unique(p_img).tolist() if i // div != void]
        t_ids = [i for i in torch.unique(t_img).tolist() if i // div != void and i not in crowd]
        matched_p, matched_t = set(), set()
        for t_id in t_ids:
            for p_id in p_ids:
                if t_id // div != p_id // div:
                    continue
                pm, tm = p_img == p_id, t_img == t_id
                inter = (pm & tm).sum().item()
                union = (pm | tm).sum().item() - (pm & t_void).sum().item()
                if inter / union > 0.5:
                    stats[t_id // div][0] += 1
                    stats[t_id // div][3] += inter / union
                    matched_p.add(p_id)
                    matched_t.add(t_id)
        for t_id in set(t_ids) - matched_t:
            stats[t_id // div][2] += 1
        for p_id in set(p_ids) - matched_p:
            pm = p_img == p_id
            crowd_here = torch.zeros_like(pm)
            for c_id in crowd:
                if c_id // div == p_id // div:
                    crowd_here |= t_img == c_id
            if (pm & (t_void | crowd_here)).sum().item() / pm.sum().item() <= 0.5:
                stats[p_id // div][1] += 1
    pqs = []
    for tp, fp, fn, iou in stats.values():
        if tp + fp + fn:
            pqs.append(iou / (tp + 0.5 * fp + 0.5 * fn))
    return sum(pqs) / len(pqs), stats


def test_pq_hand_computed_with_void_and_unmatched():
    target = torch.tensor([[0, 0, 1001, 1001, 1001, 1001, 2001, 2001, 255000, 255000]])
    pred = torch.tensor([[0, 0, 0, 1001, 1001, 1001, 1001, 0, 2005, 2005]])
    result = metrics.panoptic_quality(pred, target, num_classes=3)
    # class 0: IoU 2/4 = 0.5 is not > 0.5 -> one FN and one FP.
    assert result["per_class"][0] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    # class 1: IoU 3/5 -> TP.
    c1 = result["per_class"][1]
    assert (c1["tp"], c1["fp"], c1["fn"]) == (1, 0, 0)
    assert c1["pq"] == pytest.approx(0.6) and c1["sq"] == pytest.approx(0.6) and c1["rq"] == 1.0
    # class 2: the predicted segment lies on void (not an FP); the target segment is missed (FN).
    assert (
        result["per_class"][2]["tp"],
        result["per_class"][2]["fp"],
        result["per_class"][2]["fn"],
    ) == (0, 0, 1)
    assert result["pq"] == pytest.approx(0.2)
    assert result["sq"] == pytest.approx(0.2)
    assert result["rq"] == pytest.approx(1 / 3)


def test_pq_void_pixels_leave_the_union():
    target = torch.tensor([[1001, 1001, 1001, 255000]])
    pred = torch.tensor([[1001, 1001, 1001, 1001]])
    result = metrics.panoptic_quality(pred, target, num_classes=2)
    assert result["per_class"][1]["sq"] == pytest.approx(1.0)  # 3 / (4 + 3 - 3 - 1)
    assert math.isnan(result["per_class"][0]["pq"])  # class 0 absent from both
    assert result["pq"] == pytest.approx(1.0)


def test_pq_perfect_and_things_stuff_split():
    target = torch.tensor([[0, 0, 1001, 1002], [0, 2000, 2000, 1002]])
    result = metrics.panoptic_quality(target, target.clone(), num_classes=3, thing_classes=[1])
    assert result["pq"] == 1.0 and result["sq"] == 1.0 and result["rq"] == 1.0
    assert result["per_class"][1]["tp"] == 2
    assert result["pq_things"] == 1.0 and result["pq_stuff"] == 1.0


def test_pq_instance_ids_do_not_need_to_agree():
    target = torch.tensor([[1001, 1001, 1002, 1002]])
    pred = torch.tensor([[1007, 1007, 1003, 1003]])
    assert metrics.panoptic_quality(pred, target, num_classes=2)["pq"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_pq_matches_brute_force_on_random_maps(seed):
    g = torch.Generator().manual_seed(seed)
    n, h, w, k = 2, 8, 8, 3
    semantic = torch.randint(0, k, (n, h, w), generator=g)
    target = semantic * 1000 + torch.randint(0, 3, (n, h, w), generator=g) * (semantic > 0)
    target[:, :2, :3] = 255000
    pred = target.clone()
    noise = torch.rand(n, h, w, generator=g) < 0.25
    pred[noise] = (torch.randint(0, k, (n, h, w), generator=g) * 1000 + 1)[noise]
    # Blocky maps make matches likely, random noise makes the counts non-trivial.
    semantic_b = (
        torch.randint(0, k, (n, 1, 4, 4), generator=g)
        .repeat_interleave(2, 2)
        .repeat_interleave(2, 3)[:, 0]
    )
    if seed % 2:
        target = semantic_b * 1000 + (semantic_b > 0).long()
        target[:, 0, :] = 255000
        pred = target.clone()
        pred[noise] = (torch.randint(0, k, (n, h, w), generator=g) * 1000)[noise]
    crowd = [1002, 2001] if seed >= 3 else []  # some segments become crowd regions
    expected_pq, stats = brute_force_pq(pred, target, k, crowd=crowd)
    result = metrics.panoptic_quality(pred, target, num_classes=k, crowd_ids=crowd)
    assert result["pq"] == pytest.approx(expected_pq)
    for c in range(k):
        got = result["per_class"][c]
        assert [got["tp"], got["fp"], got["fn"]] == stats[c][:3]


def test_pq_input_errors():
    with pytest.raises(ValueError, match="shape"):
        metrics.panoptic_quality(
            torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match=r"class ids \[7\]"):
        metrics.panoptic_quality(torch.full((2, 2), 7001), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="integer panoptic ids"):
        metrics.panoptic_quality(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 3)


def test_pq_crowd_regions_follow_the_coco_rules():
    # Class 1: instance 1001 and a crowd region 1009 (iscrowd). Class 2: instance 2001.
    target = torch.tensor([[1001, 1001, 1001, 1009, 1009, 1009, 1009, 2001, 2001, 2001]])
    # A class-1 prediction lying on the crowd only, and a class-2 prediction on two crowd pixels
    # and one pixel of the class-2 object.
    pred = torch.tensor([[1001, 1001, 1001, 1005, 1005, 2003, 2003, 2003, 2001, 2001]])
    result = metrics.panoptic_quality(pred, target, num_classes=3, crowd_ids=[1009])
    c1, c2 = result["per_class"][1], result["per_class"][2]
    # 1001 matches (IoU 1); 1005 lies 2/2 on a class-1 crowd: not a FP; the crowd is not a FN.
    assert (c1["tp"], c1["fp"], c1["fn"]) == (1, 0, 0) and c1["sq"] == 1.0
    # 2001 (target, 3 px) vs 2001 (pred, 2 px): IoU 2/3 -> TP. 2003 lies 2/3 on a crowd of
    # class 1: the crowd of another class excuses nothing -> FP.
    assert (c2["tp"], c2["fp"], c2["fn"]) == (1, 1, 0)
    assert c2["pq"] == pytest.approx((2 / 3) / (1 + 0.5))
    # Without crowd_ids the crowd region is an ordinary segment: 1005 misses it (IoU 2/4).
    plain = metrics.panoptic_quality(pred, target, num_classes=3)["per_class"][1]
    assert (plain["tp"], plain["fp"], plain["fn"]) == (1, 1, 1)
    # Marking the crowd void instead would excuse the class-2 prediction too: COCO does not.
    as_void = torch.where(target == 1009, 255000, target)
    voided = metrics.panoptic_quality(pred, as_void, num_classes=3)["per_class"][2]
    assert voided["fp"] == 0 and voided["tp"] == 1
    with pytest.raises(ValueError, match=r"crowd_ids \[7001\]"):
        metrics.panoptic_quality(pred, target, num_classes=3, crowd_ids=[7001])
