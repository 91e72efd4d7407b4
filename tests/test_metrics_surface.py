"""Per-image Dice/IoU, Hausdorff/HD95/ASSD and boundary metrics against brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import metrics


def brute_surface(mask):
    """Mask pixels with a 4-neighbour outside the mask or outside the image, by explicit loops."""
    h, w = mask.shape
    points = []
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                a, b = i + di, j + dj
                if not (0 <= a < h and 0 <= b < w) or not mask[a, b]:
                    points.append((i, j))
                    break
    return np.array(points, dtype=float)


def brute_directed(a, b, spacing=(1.0, 1.0)):
    scale = np.array(spacing)
    return np.array([min(np.linalg.norm((p - q) * scale) for q in b) for p in a])


def random_blob(rng, shape=(10, 12)):
    mask = np.zeros(shape, dtype=bool)
    for _ in range(3):
        i, j = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        mask[i : i + rng.integers(1, 5), j : j + rng.integers(1, 6)] = True
    return mask


def test_per_image_dice_iou_hand_computed_and_empty_policy():
    pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 0]]])
    target = torch.tensor([[[1, 0, 0, 1]], [[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    dice = metrics.dice_per_image(pred, target)
    torch.testing.assert_close(dice, torch.tensor([2 / 4, 1.0, 0.0], dtype=torch.float64))
    iou = metrics.iou_per_image(pred, target, empty_score=math.nan)
    assert iou[0].item() == pytest.approx(1 / 3) and math.isnan(iou[1]) and iou[2].item() == 0.0
    with pytest.raises(ValueError, match=r"values \[2\]"):
        metrics.dice_per_image(pred * 2, target)
    with pytest.raises(TypeError, match="threshold"):
        metrics.dice_per_image(pred.float(), target)


def test_hausdorff_single_pixels_and_spacing():
    a = np.zeros((5, 6), dtype=bool)
    b = np.zeros((5, 6), dtype=bool)
    a[0, 0] = True
    b[3, 4] = True
    assert metrics.hausdorff_distance(a, b) == pytest.approx(5.0)
    assert metrics.hausdorff_distance(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(36 + 16))
    assert metrics.average_surface_distance(a, b) == pytest.approx(5.0)


@pytest.mark.parametrize("seed", range(5))
def test_surface_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred, target = random_blob(rng), random_blob(rng)
    spacing = (1.5, 0.5) if seed % 2 else (1.0, 1.0)
    sp, st = brute_surface(pred), brute_surface(target)
    np.testing.assert_array_equal(np.argwhere(metrics.mask_surface(pred)), sp.astype(int))
    forward, backward = brute_directed(sp, st, spacing), brute_directed(st, sp, spacing)
    assert metrics.hausdorff_distance(pred, target, spacing=spacing) == pytest.approx(
        max(forward.max(), backward.max())
    )
    assert metrics.hausdorff_distance(
        torch.from_numpy(pred), torch.from_numpy(target), percentile=95, spacing=spacing
    ) == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)))
    assert metrics.average_surface_distance(pred, target, spacing=spacing) == pytest.approx(
        (forward.sum() + backward.sum()) / (len(forward) + len(backward))
    )


def test_surface_empty_policy_and_errors():
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    assert metrics.hausdorff_distance(empty, empty) == 0.0
    assert metrics.hausdorff_distance(empty, full) == math.inf
    assert metrics.average_surface_distance(full, empty) == math.inf
    assert metrics.hausdorff_distance(full, full, percentile=95) == 0.0
    with pytest.raises(ValueError, match="percentile"):
        metrics.hausdorff_distance(full, full, percentile=150)
    with pytest.raises(ValueError, match="spacing"):
        metrics.hausdorff_distance(full, full, spacing=(1.0,))


def brute_band(mask, width):
    """Mask pixels within `width` of a pixel outside the mask (the image is padded with outside)."""
    h, w = mask.shape
    outside = [
        (i, j)
        for i in range(-1, h + 1)
        for j in range(-1, w + 1)
        if not (0 <= i < h and 0 <= j < w) or not mask[i, j]
    ]
    band = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            if mask[i, j] and min(math.hypot(i - a, j - b) for a, b in outside) <= width:
                band[i, j] = True
    return band


@pytest.mark.parametrize("seed", range(3))
def test_boundary_iou_matches_brute_force(seed):
    rng = np.random.default_rng(10 + seed)
    pred, target = random_blob(rng), random_blob(rng)
    pb, tb = brute_band(pred, 2), brute_band(target, 2)
    expected = (pb & tb).sum() / (pb | tb).sum()
    assert metrics.boundary_iou(pred, target, width=2) == pytest.approx(expected)


def test_boundary_iou_is_stricter_than_iou_on_a_large_object():
    target = np.zeros((64, 64), dtype=bool)
    target[8:56, 8:56] = True
    pred = np.zeros_like(target)
    pred[10:58, 10:58] = True  # shifted by 2 pixels
    iou = metrics.iou_per_image(pred[None], target[None]).item()
    assert metrics.boundary_iou(pred, target, width=2) < iou
    assert metrics.boundary_iou(target, target) == 1.0


def test_boundary_f1_known_values():
    target = np.zeros((20, 20), dtype=bool)
    target[5:15, 5:15] = True
    assert metrics.boundary_f1(target, target, tolerance=0) == 1.0
    shifted = np.roll(target, 3, axis=1)
    assert metrics.boundary_f1(shifted, target, tolerance=3) == 1.0
    sp, st = brute_surface(shifted), brute_surface(target)
    precision = (brute_directed(sp, st) <= 1).mean()
    recall = (brute_directed(st, sp) <= 1).mean()
    expected = 2 * precision * recall / (precision + recall)
    assert metrics.boundary_f1(shifted, target, tolerance=1) == pytest.approx(expected)
    assert metrics.boundary_f1(np.zeros_like(target), target) == 0.0
    assert metrics.boundary_f1(np.zeros_like(target), np.zeros_like(target)) == 1.0
