"""Hidden graded tests of exercise 01: harder shapes than the public tests, same functions.

References: `scipy.ndimage.label` for connected components, `divmod` per pixel for panoptic ids,
a per-pixel loop for the class look-up.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from course_grader.learner.fixtures import unpack

EXERCISE = "ex01_segmentation_types"


def _same_partition(got: torch.Tensor, expected: np.ndarray) -> bool:
    """True when `got` labels exactly the regions of `expected`, up to renumbering."""
    got = got.numpy()
    if got.shape != expected.shape or not np.array_equal(got == 0, expected == 0):
        return False
    pairs = {(int(a), int(b)) for a, b in zip(got[got > 0], expected[expected > 0])}
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def _spiral(size: int) -> np.ndarray:
    """Nested one-pixel-wide rings joined into a single winding region full of U-turns."""
    grid = np.zeros((size, size), dtype=bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        grid[top, left : right + 1] = True
        grid[top : bottom + 1, right] = True
        grid[bottom, left : right + 1] = True
        grid[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            grid[top - 1, left] = True
    return grid


@pytest.mark.points(2)
def test_connected_components_on_a_spiral_and_a_diagonal_chain(exercise):
    spiral = _spiral(15)
    chain = np.eye(7, dtype=bool)[::-1]  # touching only through corners
    for binary, connectivity in ((spiral, 4), (chain, 8), (chain, 4)):
        structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        expected, count = ndimage.label(binary, structure=structure)
        labels, got_count = unpack(
            exercise.connected_components(torch.from_numpy(binary.copy()), connectivity),
            "labels",
            "count",
        )
        assert got_count == count, (
            f"connectivity={connectivity}: expected {count} regions, got {got_count}"
        )
        assert _same_partition(labels, expected), (
            f"connectivity={connectivity}: regions differ from scipy's"
        )


@pytest.mark.points(1)
def test_decode_panoptic_with_another_label_divisor(exercise):
    generator = torch.Generator().manual_seed(7)
    panoptic = torch.randint(0, 20 * 256, (5, 9), generator=generator)
    semantic, instances = unpack(exercise.decode_panoptic(panoptic, 256), "semantic", "instances")
    expected = [divmod(int(v), 256) for v in panoptic.flatten()]
    torch.testing.assert_close(
        semantic.flatten(),
        torch.tensor([c for c, _ in expected]),
        msg=lambda m: f"decode_panoptic(label_divisor=256) classes: {m}",
    )
    torch.testing.assert_close(
        instances.flatten(),
        torch.tensor([i for _, i in expected]),
        msg=lambda m: f"decode_panoptic(label_divisor=256) instances: {m}",
    )


@pytest.mark.points(1)
def test_semantic_from_instances_with_a_non_zero_unlabelled_class(exercise):
    instances = torch.tensor([[0, 2, 2, 1, 0, 3]])
    table = [5, 1, 2, 2]
    expected = torch.tensor([[table[i] for i in row] for row in instances.tolist()])
    torch.testing.assert_close(
        exercise.semantic_from_instances(instances, table),
        expected,
        msg=lambda m: f"semantic_from_instances with instance_classes={table}: {m}",
    )
