"""Demo exercise of the grader's own tests: three functions and a small module."""

import torch
from torch import nn


def add_1(x: torch.Tensor) -> torch.Tensor:
    """Return `x + 1` with the dtype and shape of `x`."""
    # BEGIN SOLUTION
    # HINT: tensors support `+` with a Python number.
    return x + 1
    # END SOLUTION


def count_labels(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels per class of an (H, W) int64 mask: a (num_classes,) int64 tensor."""
    # BEGIN SOLUTION
    # HINT: torch.bincount has a `minlength` argument.
    return torch.bincount(mask.flatten(), minlength=num_classes)
    # END SOLUTION


def count_parameters(in_features: int, out_features: int) -> int:
    """Number of parameters of `nn.Linear(in_features, out_features)`: weights and bias."""
    # BEGIN SOLUTION
    # HINT: a weight matrix (out, in) and a bias vector (out,).
    return in_features * out_features + out_features
    # END SOLUTION


class Doubler(nn.Module):
    """Multiplies its input by a learnable scale that starts at 2."""

    def __init__(self):
        super().__init__()
        # BEGIN SOLUTION
        # HINT: store an nn.Parameter holding 2.0.
        self.scale = nn.Parameter(torch.tensor(2.0))
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        # HINT: multiply by the scale.
        return x * self.scale
        # END SOLUTION
