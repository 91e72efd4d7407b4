"""Graded tests of exercise 01: semantic, instance and panoptic maps.

References are independent of the learner's code: `scipy.ndimage.label` for connected
components, a per-pixel loop for look-ups, and hand-computed small cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from course_grader.learner.fixtures import expect_raises, unpack
from course_lib.data import ScenesDataset

EXERCISE = "ex01_segmentation_types"

STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def scipy_components(binary: torch.Tensor, connectivity: int) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(binary.numpy(), structure=STRUCTURE[connectivity])
    return labels, count


def partition_problem(got, expected: np.ndarray) -> str | None:
    """Why `got` is not the same labelling as `expected` up to renumbering, or None."""
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {type(got).__name__}"
    if tuple(got.shape) != expected.shape:
        return f"expected shape {expected.shape}, got {tuple(got.shape)}"
    got = got.numpy()
    wrong_zero = np.argwhere((got == 0) != (expected == 0))
    if len(wrong_zero):
        y, x = wrong_zero[0]
        return (
            f"pixel ({y}, {x}) should be {'0' if expected[y, x] == 0 else 'labelled (not 0)'}, "
            f"got {got[y, x]}"
        )
    for mine, theirs, name in (
        (got, expected, "one of your labels covers two separate regions"),
        (expected, got, "one region is split over several of your labels"),
    ):
        for value in np.unique(mine[mine > 0]):
            inside = np.unique(theirs[mine == value])
            if len(inside) > 1:
                ys, xs = np.nonzero(mine == value)
                return f"{name} (label {value} around pixel ({ys[0]}, {xs[0]}))"
    return None


def random_mask(
    seed: int, shape=(14, 17), num_classes: int = 3, density: float = 0.45
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    classes = torch.randint(1, num_classes + 1, shape, generator=generator)
    keep = torch.rand(shape, generator=generator) < density
    return torch.where(keep, classes, torch.zeros_like(classes))


# ----------------------------------------------------------------------- semantic_from_instances


@pytest.mark.points(1)
def test_semantic_from_instances_small_case(exercise):
    instances = torch.tensor([[0, 1, 1], [2, 0, 3]])
    got = exercise.semantic_from_instances(instances, [0, 3, 3, 4])
    expected = torch.tensor([[0, 3, 3], [3, 0, 4]])
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: (
            f"instances {instances.tolist()} with "
            f"table [0, 3, 3, 4] should give {expected.tolist()}: {m}"
        ),
    )


@pytest.mark.points(2)
def test_semantic_from_instances_on_a_scene(exercise):
    _, mask, instances = ScenesDataset(length=1, image_size=48, seed=5, return_instances=True)[0]
    table = [0] * (int(instances.max()) + 1)
    for k in range(1, len(table)):
        table[k] = int(mask[instances == k][0])
    expected = torch.zeros_like(mask)
    for k, class_id in enumerate(table):  # pixel look-up, one instance at a time
        expected[instances == k] = class_id
    got = exercise.semantic_from_instances(instances, table)
    torch.testing.assert_close(
        got,
        expected,
        msg=lambda m: f"scene with {len(table) - 1} objects, class table {table}: {m}",
    )


@pytest.mark.points(1)
def test_semantic_from_instances_rejects_unknown_ids(exercise):
    got = exercise.semantic_from_instances(
        torch.tensor([[0, 1, 1]]), [0, 5]
    )  # valid: must not raise
    torch.testing.assert_close(
        got,
        torch.tensor([[0, 5, 5]]),
        msg=lambda m: f"instances [[0, 1, 1]] with table [0, 5]: {m}",
    )
    expect_raises(
        lambda: exercise.semantic_from_instances(torch.tensor([[0, 1, 2]]), [0, 5]),
        ValueError,
        when="instance id 2 meets a class table of only 2 entries",
    )


# ----------------------------------------------------------------------- connected_components


@pytest.mark.points(1)
def test_connected_components_empty_and_single_pixel(exercise):
    labels, count = unpack(
        exercise.connected_components(torch.zeros(4, 5, dtype=torch.bool)), "labels", "count"
    )
    assert count == 0, f"an all-False mask has 0 regions, you returned count={count}"
    torch.testing.assert_close(
        labels,
        torch.zeros(4, 5, dtype=torch.int64),
        msg=lambda m: f"an all-False mask must be labelled all 0: {m}",
    )
    single = torch.zeros(3, 3, dtype=torch.bool)
    single[1, 2] = True
    labels, count = unpack(exercise.connected_components(single), "labels", "count")
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[1, 2] = 1
    assert count == 1, f"one True pixel is 1 region, you returned count={count}"
    torch.testing.assert_close(labels, expected, msg=lambda m: f"one True pixel at (1, 2): {m}")


@pytest.mark.points(2)
def test_connected_components_diagonal_4_vs_8(exercise):
    binary = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    for connectivity, regions in ((4, 4), (8, 1)):
        labels, count = unpack(
            exercise.connected_components(binary, connectivity), "labels", "count"
        )
        assert count == regions, (
            f"with connectivity={connectivity} the mask "
            f"{binary.int().tolist()} "
            f"has {regions} regions, you returned count={count}"
        )
        problem = partition_problem(labels, scipy_components(binary, connectivity)[0])
        assert problem is None, f"connectivity={connectivity}: {problem}"


@pytest.mark.points(3)
@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_scipy(exercise, connectivity):
    for seed in range(6):
        binary = random_mask(seed, shape=(11 + seed, 19 - seed), num_classes=1) > 0
        expected, regions = scipy_components(binary, connectivity)
        labels, count = unpack(
            exercise.connected_components(binary, connectivity), "labels", "count"
        )
        assert count == regions, (
            f"random mask (seed {seed}, connectivity {connectivity}): "
            f"scipy.ndimage.label finds {regions} regions, "
            f"you returned {count}"
        )
        problem = partition_problem(labels, expected)
        assert problem is None, f"random mask (seed {seed}, connectivity {connectivity}): {problem}"
        ids = sorted(set(labels[labels > 0].tolist()))
        assert ids == list(range(1, count + 1)), f"labels must be 1..{count}, got {ids[:12]}"


@pytest.mark.points(1)
def test_connected_components_rejects_bad_connectivity(exercise):
    for connectivity in (4, 8):  # valid: must not raise
        labels, count = unpack(
            exercise.connected_components(torch.ones(2, 2, dtype=torch.bool), connectivity),
            "labels",
            "count",
        )
        assert count == 1, (
            f"a 2x2 block is 1 region (connectivity={connectivity}), got count={count}"
        )
        torch.testing.assert_close(
            labels,
            torch.ones(2, 2, dtype=torch.int64),
            msg=lambda m: f"a 2x2 block labelled 1 (connectivity={connectivity}): {m}",
        )
    expect_raises(
        lambda: exercise.connected_components(torch.ones(2, 2, dtype=torch.bool), 6),
        ValueError,
        when="connectivity=6 (only 4 and 8 exist)",
    )


# ----------------------------------------------------------------------- instances_from_semantic


def expected_instances(mask: torch.Tensor, thing_classes, connectivity: int) -> np.ndarray:
    out = np.zeros(mask.shape, np.int64)
    offset = 0
    for class_id in thing_classes:
        labels, count = scipy_components(mask == class_id, connectivity)
        out[labels > 0] = labels[labels > 0] + offset
        offset += count
    return out


@pytest.mark.points(2)
def test_instances_from_semantic_match_scipy_per_class(exercise):
    for seed in range(4):
        mask = random_mask(100 + seed, num_classes=3)
        got = exercise.instances_from_semantic(mask, [1, 3])
        expected = expected_instances(mask, [1, 3], 4)
        problem = partition_problem(got, expected)
        assert problem is None, f"random mask (seed {100 + seed}), thing classes [1, 3]: {problem}"
        count = int(expected.max())
        ids = sorted(set(got[got > 0].tolist()))
        assert ids == list(range(1, count + 1)), f"instance ids must be 1..{count}, got {ids[:12]}"


@pytest.mark.points(1)
def test_instances_from_semantic_neighbouring_classes_stay_apart(exercise):
    mask = torch.tensor([[3, 3, 4, 4], [3, 3, 4, 4], [0, 0, 0, 3]])
    got = exercise.instances_from_semantic(mask, [3, 4], 8)
    problem = partition_problem(got, expected_instances(mask, [3, 4], 8))
    assert problem is None, (
        "a car (3) next to a person (4) are two instances, and the lone "
        "car pixel at (2, 3) touches no other car pixel, so it is a third: "
        f"{problem}"
    )


@pytest.mark.points(1)
def test_instances_from_semantic_touching_cars_merge(exercise):
    mask = torch.zeros(6, 10, dtype=torch.int64)
    mask[1:4, 1:5] = 3
    mask[2:5, 5:9] = 3  # a second car touching the first
    mask[0, 9] = 1  # a stuff pixel (sky): not a thing class
    got = exercise.instances_from_semantic(mask, [3])
    assert isinstance(got, torch.Tensor), f"expected a tensor, got {type(got).__name__}"
    assert int(got.max()) == 1 and int(got[0, 9]) == 0, (
        "two touching cars form ONE connected region, so one instance; the sky pixel gets 0; "
        f"you returned ids {sorted(set(got.flatten().tolist()))}"
    )


# ----------------------------------------------------------------------- panoptic ids


@pytest.mark.points(1)
def test_encode_panoptic_small_case(exercise):
    semantic = torch.tensor([[1, 3, 3], [255, 3, 1]])
    instances = torch.tensor([[0, 1, 2], [0, 2, 0]])
    expected = torch.tensor([[1000, 3001, 3002], [255000, 3002, 1000]])
    got = exercise.encode_panoptic(semantic, instances)
    torch.testing.assert_close(got, expected, msg=lambda m: f"label_divisor=1000: {m}")
    got = exercise.encode_panoptic(semantic, instances, 10)
    torch.testing.assert_close(
        got, semantic * 10 + instances, msg=lambda m: f"label_divisor=10: {m}"
    )


@pytest.mark.points(1)
def test_decode_panoptic_inverts_encode(exercise):
    generator = torch.Generator().manual_seed(7)
    semantic = torch.randint(0, 20, (9, 11), generator=generator)
    instances = torch.randint(0, 37, (9, 11), generator=generator)
    for divisor in (37, 256, 1000):
        panoptic = semantic * divisor + instances
        got_semantic, got_instances = unpack(
            exercise.decode_panoptic(panoptic, divisor), "semantic", "instances"
        )
        torch.testing.assert_close(
            got_semantic, semantic, msg=lambda m: f"classes, divisor {divisor}: {m}"
        )
        torch.testing.assert_close(
            got_instances, instances, msg=lambda m: f"instance ids, divisor {divisor}: {m}"
        )


@pytest.mark.points(1)
def test_encode_panoptic_rejects_ids_that_do_not_fit(exercise):
    semantic, instances = torch.tensor([[1, 2]]), torch.tensor([[0, 10]])
    got = exercise.encode_panoptic(semantic, torch.tensor([[0, 9]]), 10)  # valid: must not raise
    torch.testing.assert_close(
        got,
        torch.tensor([[10, 29]]),
        msg=lambda m: f"instance id 9 with label_divisor=10 fits: {m}",
    )
    expect_raises(
        lambda: exercise.encode_panoptic(semantic, instances, 10),
        ValueError,
        when="instance id 10 does not fit below label_divisor=10",
    )
