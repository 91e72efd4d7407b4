"""Tests of course_lib.instances against a brute-force flood fill and hand-computed cases."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from course_lib.data import ScenesDataset
from course_lib.instances import (
    decode_panoptic,
    encode_panoptic,
    instances_from_semantic,
    semantic_from_instances,
)

NEIGHBOURS = {
    4: [(-1, 0), (1, 0), (0, -1), (0, 1)],
    8: [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)],
}


def flood_fill_reference(mask: np.ndarray, classes, connectivity: int) -> np.ndarray:
    """Breadth-first flood fill, class by class in ascending order, seeds in raster order."""
    height, width = mask.shape
    out = np.zeros(mask.shape, np.int64)
    next_id = 1
    for class_id in sorted(classes):
        for y in range(height):
            for x in range(width):
                if mask[y, x] != class_id or out[y, x]:
                    continue
                out[y, x] = next_id
                queue = deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    for dy, dx in NEIGHBOURS[connectivity]:
                        ny, nx = cy + dy, cx + dx
                        inside = 0 <= ny < height and 0 <= nx < width
                        if inside and mask[ny, nx] == class_id and not out[ny, nx]:
                            out[ny, nx] = next_id
                            queue.append((ny, nx))
                next_id += 1
    return out


masks = arrays(
    np.int64, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 3)
)


@settings(max_examples=60, deadline=None)
@given(mask=masks, connectivity=st.sampled_from([4, 8]))
def test_connected_components_match_flood_fill(mask, connectivity):
    expected = flood_fill_reference(mask, [1, 2, 3], connectivity)
    got = instances_from_semantic(mask, connectivity=connectivity)
    np.testing.assert_array_equal(got, expected)


def test_hand_computed_case_4_vs_8_connectivity():
    mask = torch.tensor([[1, 0, 0], [0, 1, 0], [2, 2, 1]])
    four = torch.tensor([[1, 0, 0], [0, 2, 0], [4, 4, 3]])
    eight = torch.tensor([[1, 0, 0], [0, 1, 0], [2, 2, 1]])
    torch.testing.assert_close(instances_from_semantic(mask, connectivity=4), four)
    torch.testing.assert_close(instances_from_semantic(mask, connectivity=8), eight)


def test_classes_argument_background_and_void():
    mask = np.array([[0, 1, 255], [3, 1, 255]])
    np.testing.assert_array_equal(instances_from_semantic(mask), [[0, 1, 0], [2, 1, 0]])
    np.testing.assert_array_equal(
        instances_from_semantic(mask, classes=[3]), [[0, 0, 0], [1, 0, 0]]
    )
    np.testing.assert_array_equal(instances_from_semantic(mask, classes=[]), np.zeros((2, 3)))


def test_empty_and_single_pixel_masks():
    assert instances_from_semantic(torch.zeros(0, 0, dtype=torch.long)).shape == (0, 0)
    torch.testing.assert_close(instances_from_semantic(torch.tensor([[5]])), torch.tensor([[1]]))
    torch.testing.assert_close(
        instances_from_semantic(torch.zeros(3, 3, dtype=torch.long)),
        torch.zeros(3, 3, dtype=torch.long),
    )


def test_touching_objects_merge_into_one_instance():
    mask = torch.zeros(6, 10, dtype=torch.long)
    mask[1:4, 1:5] = 3  # first car
    mask[2:5, 5:9] = 3  # second car, touching the first
    recovered = instances_from_semantic(mask)
    assert recovered.max().item() == 1, "two touching cars are one connected component"


def test_returns_same_kind_and_int64():
    mask = np.array([[1, 1], [0, 2]], dtype=np.uint8)
    out = instances_from_semantic(mask)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    out = instances_from_semantic(torch.from_numpy(mask))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64


@pytest.mark.parametrize(
    "table", [[0, 4, 4, 5], np.array([0, 4, 4, 5]), torch.tensor([0, 4, 4, 5]), {1: 4, 2: 4, 3: 5}]
)
def test_semantic_from_instances_table_forms(table):
    instances = torch.tensor([[0, 1, 1], [2, 0, 3]])
    torch.testing.assert_close(
        semantic_from_instances(instances, table), torch.tensor([[0, 4, 4], [4, 0, 5]])
    )


def test_semantic_from_instances_on_scene_dataset():
    _, mask, instances = ScenesDataset(length=1, image_size=64, seed=4, return_instances=True)[0]
    table = {k: int(mask[instances == k][0]) for k in range(1, int(instances.max()) + 1)}
    things = instances > 0
    semantic = semantic_from_instances(instances, table)
    torch.testing.assert_close(semantic[things], mask[things])
    assert (semantic[~things] == 0).all()


def test_semantic_from_instances_missing_ids():
    instances = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"\[2\]"):
        semantic_from_instances(instances, {1: 3})
    with pytest.raises(ValueError, match=r"\[2\]"):
        semantic_from_instances(instances, [0, 3])
    with pytest.raises(ValueError, match="1-D"):
        semantic_from_instances(instances, [[0, 1, 2]])


def test_panoptic_hand_computed_and_round_trip():
    semantic = torch.tensor([[1, 3, 3], [255, 3, 1]])
    instances = torch.tensor([[0, 1, 2], [0, 2, 0]])
    panoptic = encode_panoptic(semantic, instances, label_divisor=1000)
    torch.testing.assert_close(panoptic, torch.tensor([[1000, 3001, 3002], [255000, 3002, 1000]]))
    back_semantic, back_instances = decode_panoptic(panoptic, label_divisor=1000)
    torch.testing.assert_close(back_semantic, semantic)
    torch.testing.assert_close(back_instances, instances)


@settings(max_examples=40, deadline=None)
@given(semantic=masks, divisor=st.integers(1, 300), data=st.data())
def test_panoptic_round_trip_random(semantic, divisor, data):
    instances = data.draw(arrays(np.int64, semantic.shape, elements=st.integers(0, divisor - 1)))
    panoptic = encode_panoptic(semantic, instances, label_divisor=divisor)
    np.testing.assert_array_equal(panoptic, semantic * divisor + instances)
    back_semantic, back_instances = decode_panoptic(panoptic, label_divisor=divisor)
    np.testing.assert_array_equal(back_semantic, semantic)
    np.testing.assert_array_equal(back_instances, instances)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: instances_from_semantic(np.zeros((2, 2), np.float32)), TypeError, "integer"),
        (lambda: instances_from_semantic(np.zeros((1, 2, 2), np.int64)), ValueError, r"\(H, W\)"),
        (lambda: instances_from_semantic(np.full((2, 2), -1)), ValueError, "non-negative"),
        (
            lambda: instances_from_semantic(np.zeros((2, 2), np.int64), connectivity=6),
            ValueError,
            "4 or 8",
        ),
        (lambda: instances_from_semantic([[1, 2]]), TypeError, "list"),
        (
            lambda: encode_panoptic(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64)),
            ValueError,
            "shape",
        ),
        (
            lambda: encode_panoptic(
                np.zeros((1, 1), np.int64), np.full((1, 1), 10), label_divisor=10
            ),
            ValueError,
            "label_divisor",
        ),
        (
            lambda: decode_panoptic(np.zeros((1, 1), np.int64), label_divisor=0),
            ValueError,
            "label_divisor",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
