"""Probes for exercise 04: the learner's `ASPP` with the weights of `course_lib.models.ASPP`.

`aspp_case` runs in the test's process: the course's ASPP from a seed, batch-norm statistics
randomised, one seeded batch and the expected output. `aspp_forward` runs in the worker: the
learner's ASPP loaded with those weights (tensor by tensor, in registration order) on that batch;
only its output comes back (`ModelCase.run`).
"""

from __future__ import annotations

from types import ModuleType

import torch

from course_grader.probes._models import ModelCase, forward_with_weights, reference_case
from course_lib.models.deeplab import ASPP as ReferenceASPP

__all__ = ["aspp_case", "aspp_forward"]


def aspp_case(
    in_channels: int,
    out_channels: int,
    atrous_rates: list[int],
    height: int,
    width: int,
    seed: int = 0,
    batch: int = 2,
) -> ModelCase:
    """The course's ASPP on a seeded (batch, in_channels, height, width) input: expected output
    (batch, out_channels, height, width)."""
    rates = [int(rate) for rate in atrous_rates]
    return reference_case(
        "aspp_forward",
        (in_channels, out_channels, rates),
        lambda: ReferenceASPP(in_channels, out_channels, tuple(rates)),
        (batch, in_channels, height, width),
        seed,
    )


def aspp_forward(
    module: ModuleType,
    in_channels: int,
    out_channels: int,
    atrous_rates: list[int],
    weights: dict,
    x: torch.Tensor,
) -> dict:
    """{"output", "parameters"} of the learner's ASPP loaded with `weights`, on `x`."""
    learner = module.ASPP(in_channels, out_channels, tuple(atrous_rates))
    return forward_with_weights(
        learner, weights, x, "ASPP", "keep the given layers of ASPP.__init__ and write forward"
    )
