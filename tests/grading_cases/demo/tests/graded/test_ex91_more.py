"""Public graded test of the second demo exercise (1 point)."""

import pytest
import torch

EXERCISE = "ex91_more"


@pytest.mark.points(1)
def test_square(exercise):
    x = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(exercise.square(x), torch.tensor([4.0, 0.25, 9.0]), msg=lambda m: f"square: {m}")
