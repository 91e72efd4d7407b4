"""Public graded tests of the demo exercise (7 points)."""

import pytest
import torch
from torch import nn

from course_grader.learner.fixtures import unpack

EXERCISE = "ex90_demo"


@pytest.mark.points(1)
def test_add_one_float(exercise):
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    expected = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(exercise.add_one(x), expected, msg=lambda m: f"add_one on a float tensor: {m}")


@pytest.mark.points(1)
def test_add_one_keeps_int_dtype(exercise):
    x = torch.tensor([[-1, 0], [5, 9]])
    expected = torch.tensor([[0, 1], [6, 10]])
    torch.testing.assert_close(exercise.add_one(x), expected, msg=lambda m: f"add_one on an int64 tensor: {m}")


@pytest.mark.points(2)
def test_count_labels_matches_loop(exercise):
    mask = torch.tensor([[0, 2, 2], [1, 2, 0]])
    expected = torch.zeros(4, dtype=torch.int64)
    for value in mask.flatten().tolist():
        expected[value] += 1
    torch.testing.assert_close(exercise.count_labels(mask, 4), expected, msg=lambda m: f"count_labels: {m}")


@pytest.mark.points(1)
def test_count_parameters_of_linear(exercise):
    expected = sum(p.numel() for p in nn.Linear(3, 5).parameters())
    got = exercise.count_parameters(3, 5)
    assert got == expected and type(got) is int, f"count_parameters(3, 5): expected {expected}, got {got!r}"


@pytest.mark.points(2)
def test_doubler_probe(exercise):
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    out, grad = unpack(exercise.probe("doubler_output_and_grad", x), "output", "gradient")
    torch.testing.assert_close(out, 2 * x, msg=lambda m: f"Doubler output: {m}")
    torch.testing.assert_close(grad, x.sum(), msg=lambda m: f"gradient of the scale: {m}")
