"""Hidden graded tests of exercise 08: instance ids when instances are skipped, another label
divisor and ignore index, no instances at all, ids in the given order among equal scores,
matching on random maps with void on both sides, matches sorted by target id when the pred ids
run the other way, and PQ edge cases (a segment exactly half on void, a class only predicted,
one-pixel maps).

References: `course_lib.panoptic.merge_panoptic`, `course_lib.metrics.panoptic_quality`, and a
pixel-set loop for the matches; hand-worked expectations are in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import metrics
from course_lib.panoptic import merge_panoptic as reference_merge

EXERCISE = "ex08_panoptic"


def boxes_mask(shape, *boxes):
    """A bool mask that is True inside the (row0, col0, row1, col1) half-open boxes."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for r0, c0, r1, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def merge_both(exercise, what, semantic, masks, scores, labels, **options):
    """The learner's merge and course_lib's on one case; returns the expected map."""
    masks = torch.stack(masks) if masks else torch.zeros(0, *semantic.shape, dtype=torch.bool)
    scores = torch.tensor(scores, dtype=torch.float32)
    labels = torch.tensor(labels, dtype=torch.int64)
    expected = reference_merge(semantic, masks, scores, labels, **options)
    got = exercise.merge_panoptic(semantic, masks, scores, labels, **options)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"merge_panoptic, {what}: expected\n{expected.tolist()}\ngot\n"
            f"{got.tolist() if isinstance(got, torch.Tensor) else got}\n{m}"
        ),
    )
    return expected


# ------------------------------------------------------------------------------- merge_panoptic


@pytest.mark.points(2)
def test_merge_numbers_only_the_kept_instances(exercise):
    shape = (4, 6)
    semantic = torch.tensor(
        [[0, 0, 0, 1, 1, 1], [0, 6, 6, 1, 1, 1], [0, 6, 6, 7, 7, 1], [0, 0, 0, 7, 7, 1]]
    )
    first = boxes_mask(shape, (0, 0, 3, 3))  # 9 px, score 0.95: id 1
    empty = torch.zeros(shape, dtype=torch.bool)  # score 0.9, empty: skipped, no id
    inside = boxes_mask(shape, (1, 1, 3, 3))  # score 0.85, all taken: nothing free, no id
    half = boxes_mask(shape, (0, 2, 2, 4))  # score 0.7, 2 of 4 px taken: id 2, keeps 2 px
    at_threshold = boxes_mask(shape, (2, 3, 4, 5))  # score exactly 0.5: kept, id 3
    weak = boxes_mask(shape, (3, 0, 4, 2))  # score 0.45 < 0.5: dropped
    # listed out of score order; overlap_threshold=1.0 lets the fully covered mask through the
    # overlap rule, so only "no free pixel" can drop it
    expected = merge_both(
        exercise,
        "an empty mask, a fully covered mask, a score equal to score_threshold",
        semantic,
        [weak, half, empty, at_threshold, inside, first],
        [0.45, 0.7, 0.9, 0.5, 0.85, 0.95],
        [6, 6, 7, 7, 6, 6],
        stuff_classes=[0, 1],
        score_threshold=0.5,
        overlap_threshold=1.0,
        stuff_area_threshold=2,
    )
    assert sorted(set(expected[expected % 1000 > 0].tolist())) == [6001, 6002, 7003]


@pytest.mark.points(1)
def test_merge_with_another_label_divisor_ignore_index_and_no_instances(exercise):
    semantic = torch.tensor(
        [[2, 2, 2, 5, 5, 99, 0], [2, 2, 3, 3, 5, 5, 0], [3, 3, 3, 3, 5, 5, 0]]
    )  # (3, 7); 99 is a class no one claims
    car = boxes_mask((3, 7), (1, 2, 3, 5))
    options = {
        "stuff_classes": [0, 2, 3],
        "score_threshold": 0.4,
        "overlap_threshold": 0.5,
        "stuff_area_threshold": 3,
        "label_divisor": 256,
        "ignore_index": 99,
    }
    expected = merge_both(
        exercise, "label_divisor=256, ignore_index=99", semantic, [car], [0.6], [5], **options
    )
    assert expected[0, 5] == 99 * 256 and expected[1, 2] == 5 * 256 + 1
    # no instances at all: masks (0, 3, 7); stuff 3 keeps 3 px, stuff 0 and 2 as above
    merge_both(
        exercise,
        "no instances (masks of shape (0, 3, 7)), label_divisor=256",
        semantic,
        [],
        [],
        [],
        **options,
    )


@pytest.mark.points(1)
def test_merge_keeps_the_given_order_for_equal_scores(exercise):
    # 20 one-pixel instances on a (4, 5) map, instance i on pixel i: 18 of them tie at 0.8 (more
    # ties than a sort keeps in order by chance), instance 7 scores 0.9 and instance 3 scores 0.6
    shape, count = (4, 5), 20
    masks = torch.zeros(count, *shape, dtype=torch.bool)
    for i in range(count):
        masks[i, i // 5, i % 5] = True
    scores = torch.full((count,), 0.8)
    scores[7], scores[3] = 0.9, 0.6
    labels = torch.tensor([4, 5, 6, 5] * 5)
    order = [7] + [i for i in range(count) if i not in (3, 7)] + [3]  # ties: the given order
    expected = torch.zeros(shape, dtype=torch.int64)  # (4, 5)
    for instance_id, i in enumerate(order, start=1):
        expected[i // 5, i % 5] = int(labels[i]) * 1000 + instance_id
    semantic = torch.zeros(shape, dtype=torch.int64)  # every pixel is taken by an instance
    got = exercise.merge_panoptic(semantic, masks, scores, labels, [0], stuff_area_threshold=0)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"merge_panoptic with 20 one-pixel instances, 18 of them of equal score 0.8: the ids "
            f"follow the score, and the given order among equal scores (a stable sort): expected"
            f"\n{expected.tolist()}\ngot\n"
            f"{got.tolist() if isinstance(got, torch.Tensor) else got}\n{m}"
        ),
    )


# ------------------------------------------------------------------------------ match_segments


def matches_by_pixel_sets(pred, target, label_divisor, ignore_index):
    """Every (pred_id, target_id, iou) with the same non-void class and IoU > 0.5, by target id."""

    def segments(panoptic):
        found = {}
        for r, row in enumerate(panoptic.tolist()):
            for c, value in enumerate(row):
                found.setdefault(value, set()).add((r, c))
        return found

    pred_segments, target_segments = segments(pred), segments(target)
    void = set().union(
        *[pixels for t, pixels in target_segments.items() if t // label_divisor == ignore_index]
    )
    matches = []
    for t, t_pixels in sorted(target_segments.items()):
        for p, p_pixels in sorted(pred_segments.items()):
            if t // label_divisor == ignore_index or p // label_divisor != t // label_divisor:
                continue
            inter = len(p_pixels & t_pixels)
            union = len(p_pixels) + len(t_pixels) - inter - len(p_pixels & void)
            if inter and inter / union > 0.5:
                matches.append((p, t, inter / union))
    return matches


def check_matches(got, expected, what):
    assert isinstance(got, list), (
        f"match_segments ({what}) should return a list, got {type(got).__name__}"
    )
    assert [(p, t) for p, t, _ in got] == [(p, t) for p, t, _ in expected], (
        f"match_segments ({what}): expected pairs (pred_id, target_id) sorted by target_id "
        f"{[(p, t) for p, t, _ in expected]}, got {[tuple(g[:2]) for g in got]}"
    )
    for (p, t, iou), (_, _, expected_iou) in zip(got, expected):
        assert math.isclose(iou, expected_iou, rel_tol=1e-6), (
            f"match_segments ({what}): IoU of pred {p} with target {t} should be "
            f"{expected_iou:.4f}, got {iou}"
        )


@pytest.mark.points(2)
def test_match_segments_on_random_maps_with_void_on_both_sides(exercise):
    generator = torch.Generator().manual_seed(5)
    divisor, void = 100, 9  # ids class * 100 + instance; class 9 is void
    for case in range(3):
        # (5, 7) target: stuff 0, things 1 and 2 with instances 1..3, a void band
        target = torch.randint(0, 3, (5, 7), generator=generator) * divisor
        target += (target > 0) * torch.randint(1, 4, (5, 7), generator=generator)
        target[:, 5 - case] = void * divisor
        pred = target.clone()
        change = torch.rand(5, 7, generator=generator) < 0.25
        pred[change] = torch.randint(0, 3, (int(change.sum()),), generator=generator) * divisor + 2
        pred[0, :2] = void * divisor  # void in the prediction belongs to no segment
        expected = matches_by_pixel_sets(pred, target, divisor, void)
        assert len(expected) >= 3, "the case should produce several matches"
        got = exercise.match_segments(pred, target, label_divisor=divisor, ignore_index=void)
        check_matches(
            got,
            expected,
            f"random (5, 7) maps {case}, label_divisor=100, "
            f"ignore_index=9, void in both maps is never matched",
        )
    one = torch.tensor([[2003]])  # a single pixel segment matches itself
    check_matches(exercise.match_segments(one, one), [(2003, 2003, 1.0)], "one-pixel maps")


# ---------------------------------------------------------------------------- panoptic_quality


@pytest.mark.points(1)
def test_match_segments_sorted_by_target_id_when_pred_ids_run_the_other_way(exercise):
    # pred 1002 lies on target 1001 and pred 1001 on target 1002: sorted by target id, the pred
    # ids come out descending; a third pair of another class follows
    target = torch.tensor([[1001, 1001, 1002, 1002, 2001], [1001, 1001, 1002, 1002, 2001]])
    pred = torch.tensor([[1002, 1002, 1001, 1001, 2007], [1002, 1002, 1001, 1001, 2007]])
    expected = matches_by_pixel_sets(pred, target, 1000, 255)
    assert [(p, t) for p, t, _ in expected] == [(1002, 1001), (1001, 1002), (2007, 2001)]
    check_matches(
        exercise.match_segments(pred, target),
        expected,
        "pred ids in the opposite order of the target ids they match",
    )


@pytest.mark.points(1)
def test_pq_half_on_void_class_only_predicted_and_one_pixel_maps(exercise):
    divisor, void_class = 100, 9
    void = void_class * divisor
    target = torch.tensor([[void, void, 301, 301, 301], [0, 0, 301, 301, 301]])
    pred = torch.tensor([[402, 402, 301, 301, 301], [402, 402, 301, 301, 301]])
    # person 402: 2 of its 4 px on void, exactly half, not more: a false positive of class 4
    # (a class only the prediction has), and stuff 0 is missed: FN
    reference = metrics.panoptic_quality(
        pred, target, 5, label_divisor=divisor, ignore_index=void_class
    )
    assert reference["per_class"][4]["fp"] == 1 and reference["per_class"][0]["fn"] == 1
    cases = [(pred, target, "a segment exactly half on void, label_divisor=100, ignore_index=9")]
    cases.append((torch.tensor([[301]]), torch.tensor([[301]]), "one-pixel maps, same id"))
    cases.append((torch.tensor([[void]]), torch.tensor([[301]]), "one-pixel void prediction"))
    for pred, target, what in cases:
        expected = metrics.panoptic_quality(
            pred, target, 5, label_divisor=divisor, ignore_index=void_class
        )
        got = exercise.panoptic_quality(
            pred, target, 5, label_divisor=divisor, ignore_index=void_class
        )
        assert isinstance(got, dict), f"panoptic_quality ({what}) should return a dict"
        for key in ("pq", "sq", "rq"):
            assert key in got, f"panoptic_quality ({what}) has no key {key!r}"
            assert math.isclose(got[key], expected[key], rel_tol=1e-6, abs_tol=1e-9), (
                f"panoptic_quality ({what}): {key} should be {expected[key]:.4f}, got {got[key]}"
            )
