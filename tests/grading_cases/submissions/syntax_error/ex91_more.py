"""Second demo exercise: one function, so a broken ex90 can be seen not to stop ex91's grading."""

import torch


def square(x: torch.Tensor) -> torch.Tensor:
    """Element-wise square of `x`."""
    # BEGIN SOLUTION
    # HINT: multiply the tensor by itself.
    return x * x
    # END SOLUTION
