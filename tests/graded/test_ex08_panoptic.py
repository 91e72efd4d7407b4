"""Graded tests of exercise 08: merging into a panoptic map, matching segments, panoptic quality.

References: `course_lib.panoptic.merge_panoptic`, `course_lib.metrics.panoptic_quality` and
small cases whose answer is worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import metrics
from course_lib.panoptic import merge_panoptic as reference_merge

EXERCISE = "ex08_panoptic"

VOID = 255 * 1000


def boxes_mask(shape, *boxes):
    """A bool mask that is True inside the (row0, col0, row1, col1) half-open boxes."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for r0, c0, r1, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def check_merge(exercise, what, semantic, masks, scores, labels, **options):
    """Compare the learner's merge with course_lib's on one case."""
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
def test_merge_stuff_and_two_separate_instances(exercise):
    semantic = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 2, 1]])
    left, right = boxes_mask((3, 4), (1, 1, 3, 2)), boxes_mask((3, 4), (1, 2, 3, 3))
    expected = check_merge(
        exercise,
        "two cars of class 2 side by side on stuff 0 and 1",
        semantic,
        [left, right],
        [0.9, 0.8],
        [2, 2],
        stuff_classes=[0, 1],
        stuff_area_threshold=0,
    )
    assert expected[1, 1] == 2001 and expected[1, 2] == 2002 and expected[0, 3] == 1000


@pytest.mark.points(2)
def test_merge_higher_score_owns_the_overlap(exercise):
    semantic = torch.zeros(2, 6, dtype=torch.int64)
    low = boxes_mask((2, 6), (0, 0, 2, 4))
    high = boxes_mask((2, 6), (0, 2, 2, 6))
    # listed low first: the merge must sort by score, so `high` gets id 1 and the shared pixels
    check_merge(
        exercise,
        "two overlapping instances listed in increasing score order",
        semantic,
        [low, high],
        [0.6, 0.9],
        [3, 4],
        stuff_classes=[0],
        stuff_area_threshold=0,
    )


@pytest.mark.points(2)
def test_merge_overlap_threshold(exercise):
    semantic = torch.tensor([[0, 0, 5, 5, 5, 5]])
    big = boxes_mask((1, 6), (0, 2, 1, 6))
    covered = boxes_mask((1, 6), (0, 1, 1, 5))  # 3 of its 4 pixels already belong to `big`
    for threshold in (0.5, 0.8):
        check_merge(
            exercise,
            f"a mask 75% covered, overlap_threshold={threshold}",
            semantic,
            [big, covered],
            [0.9, 0.8],
            [5, 5],
            stuff_classes=[0],
            stuff_area_threshold=0,
            overlap_threshold=threshold,
        )
    # exactly at the threshold the instance is kept (the rule is "more than")
    half = boxes_mask((1, 6), (0, 0, 1, 4))  # 2 of its 4 pixels are taken
    check_merge(
        exercise,
        "a mask 50% covered, overlap_threshold=0.5",
        semantic,
        [big, half],
        [0.9, 0.8],
        [5, 5],
        stuff_classes=[0],
        stuff_area_threshold=0,
    )


@pytest.mark.points(1)
def test_merge_score_threshold(exercise):
    semantic = torch.tensor([[1, 3, 3, 1]])
    weak = boxes_mask((1, 4), (0, 1, 1, 3))
    for threshold in (0.5, 0.2):
        check_merge(
            exercise,
            f"an instance of score 0.3, score_threshold={threshold}",
            semantic,
            [weak],
            [0.3],
            [3],
            stuff_classes=[0, 1],
            score_threshold=threshold,
            stuff_area_threshold=0,
        )


@pytest.mark.points(2)
def test_merge_stuff_area_threshold_and_void(exercise):
    semantic = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [255, 4, 4, 1, 1, 1, 1, 1]])
    thing = boxes_mask((2, 8), (0, 3, 2, 6))  # takes 6 of the 10 class-1 pixels
    for area in (3, 4, 5):
        what = f"stuff_area_threshold={area}, uncovered thing pixels, ignore pixels"
        expected = check_merge(
            exercise,
            what,
            semantic,
            [thing],
            [0.9],
            [2],
            stuff_classes=[0, 1],
            stuff_area_threshold=area,
        )
        assert expected[1, 1] == VOID and expected[1, 0] == VOID


@pytest.mark.points(1)
def test_merge_skips_empty_masks(exercise):
    semantic = torch.tensor([[0, 3, 3, 0, 3, 3]])
    first = boxes_mask((1, 6), (0, 1, 1, 3))
    empty = torch.zeros(1, 6, dtype=torch.bool)  # a detection with no pixel: no id
    second = boxes_mask((1, 6), (0, 4, 1, 6))
    expected = check_merge(
        exercise,
        "an empty mask between two kept instances",
        semantic,
        [first, empty, second],
        [0.9, 0.8, 0.7],
        [3, 3, 3],
        stuff_classes=[0],
        stuff_area_threshold=0,
    )
    assert expected.tolist() == [[0, 3001, 3001, 0, 3002, 3002]]


@pytest.mark.points(2)
def test_merge_random_cases(exercise):
    generator = torch.Generator().manual_seed(8)
    for case in range(5):
        semantic = torch.randint(0, 5, (7, 9), generator=generator)
        count = 2 + case
        masks = list(torch.rand(count, 7, 9, generator=generator) > 0.6)
        scores = torch.rand(count, generator=generator).tolist()
        labels = torch.randint(3, 5, (count,), generator=generator).tolist()
        check_merge(
            exercise,
            f"random case {case}",
            semantic,
            masks,
            scores,
            labels,
            stuff_classes=[0, 1, 2],
            score_threshold=0.3,
            overlap_threshold=0.4,
            stuff_area_threshold=4,
        )


# ------------------------------------------------------------------------------ match_segments


def check_matches(got, expected, what):
    assert isinstance(got, list), (
        f"match_segments ({what}) should return a list, got {type(got).__name__}"
    )
    assert [(p, t) for p, t, _ in got] == [(p, t) for p, t, _ in expected], (
        f"match_segments ({what}): expected pairs (pred_id, target_id) "
        f"{[(p, t) for p, t, _ in expected]}, got {[tuple(g[:2]) for g in got]}"
    )
    for (p, t, iou), (_, _, expected_iou) in zip(got, expected):
        assert math.isclose(iou, expected_iou, rel_tol=1e-6), (
            f"match_segments ({what}): IoU of pred {p} with target {t} should be "
            f"{expected_iou:.4f}, got {iou}"
        )


@pytest.mark.points(2)
def test_match_segments_by_hand(exercise):
    target = torch.tensor([[1000, 1000, 3001, 3001, 3002, 3002]] * 2)
    pred = torch.tensor([[1000, 1000, 3001, 3001, 3001, 3002]] * 2)
    # stuff 1000: IoU 4/4. pred 3001 (6 px) vs target 3001 (4 px): 4/6 > 0.5.
    # pred 3002 (2 px) vs target 3002 (4 px): 2/4 = 0.5, not > 0.5: no match.
    expected = [(1000, 1000, 1.0), (3001, 3001, 4 / 6)]
    check_matches(exercise.match_segments(pred, target), expected, "merged car")


@pytest.mark.points(1)
def test_match_segments_needs_the_same_class(exercise):
    target = torch.tensor([[3001, 3001, 3001, 0]])
    pred = torch.tensor([[4001, 4001, 4001, 0]])
    check_matches(exercise.match_segments(pred, target), [(0, 0, 1.0)], "car predicted as person")


@pytest.mark.points(2)
def test_match_segments_leaves_void_out_of_the_union(exercise):
    target = torch.tensor([[VOID, VOID, VOID, 3001, 3001]])
    pred = torch.tensor([[3005, 3005, 3005, 3005, 3005]])
    # union 5 - 3 void pixels = 2, intersection 2: IoU 1.0 (without the rule it would be 2/5)
    check_matches(exercise.match_segments(pred, target), [(3005, 3001, 1.0)], "pred over void")
    # the matches must agree with the counts of course_lib's panoptic quality
    reference = metrics.panoptic_quality(pred, target, num_classes=4)["per_class"][3]
    assert reference["tp"] == 1 and reference["sq"] == 1.0


# ---------------------------------------------------------------------------- panoptic_quality


def check_pq(exercise, pred, target, num_classes, what):
    expected = metrics.panoptic_quality(pred, target, num_classes)
    got = exercise.panoptic_quality(pred, target, num_classes)
    assert isinstance(got, dict), f"panoptic_quality ({what}) should return a dict"
    for key in ("pq", "sq", "rq"):
        assert key in got, f"panoptic_quality ({what}) has no key {key!r}"
        if math.isnan(expected[key]):
            assert math.isnan(got[key]), (
                f"panoptic_quality ({what}): {key} should be NaN, got {got[key]}"
            )
        else:
            assert math.isclose(got[key], expected[key], rel_tol=1e-6, abs_tol=1e-9), (
                f"panoptic_quality ({what}): {key} should be {expected[key]:.4f}, got {got[key]}"
            )


@pytest.mark.points(2)
def test_pq_merged_instances_missed_small_object_and_stuff_error(exercise):
    base = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 3001, 3001, 3002, 3002, 0],
            [0, 3001, 3001, 3002, 3002, 4003],
            [1000, 1000, 1000, 1000, 1000, 1000],
        ]
    )
    merged = base.clone()
    merged[merged == 3002] = 3001  # two cars predicted as one
    missed = base.clone()
    missed[missed == 4003] = 0  # the one-pixel person is missed
    stuff_error = base.clone()
    stuff_error[3, :4] = 0  # most of the road called background
    for pred, what in (
        (merged, "merged instances"),
        (missed, "missed small object"),
        (stuff_error, "stuff error"),
        (base, "perfect prediction"),
    ):
        check_pq(exercise, pred, base, num_classes=5, what=what)


@pytest.mark.points(2)
def test_pq_with_void(exercise):
    target = torch.tensor([[VOID, VOID, VOID, 3001, 3001, 0], [VOID, VOID, VOID, 3001, 3001, 0]])
    mostly_void = torch.tensor(
        [[4007, 4007, 4007, 3001, 3001, 0], [4007, 4007, 4007, 3001, 3001, 0]]
    )  # person on void: not an FP
    partly_void = torch.tensor(
        [[0, 0, 4007, 4007, 3001, 0], [0, 0, 0, 3001, 3001, 0]]
    )  # person half off void: an FP
    for pred, what in (
        (mostly_void, "prediction lying on void"),
        (partly_void, "prediction partly on void"),
    ):
        check_pq(exercise, pred, target, num_classes=5, what=what)


@pytest.mark.points(1)
def test_pq_random_maps_and_empty_case(exercise):
    generator = torch.Generator().manual_seed(3)
    for case in range(3):
        target = torch.randint(0, 3, (6, 8), generator=generator) * 1000
        target += (target >= 1000) * torch.randint(1, 3, (6, 8), generator=generator)
        pred = target.clone()
        flip = torch.rand(6, 8, generator=generator) < 0.3
        pred[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=generator) * 1000 + 1
        check_pq(exercise, pred, target, num_classes=3, what=f"random case {case}")
    void = torch.full((2, 2), VOID)
    check_pq(exercise, void, void, num_classes=3, what="everything void (all NaN)")
