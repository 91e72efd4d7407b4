"""A learner's module run with reference weights: the reference on the grader's side, the learner's
output from the worker.

Grader's side (the test's process): `reference_case` builds the course's module from a seed,
randomises its batch-norm statistics so that they matter, draws an input and computes the expected
output. Only the weights (`state_dict`, in registration order) and the input travel to the worker.

Worker: `forward_with_weights` builds the learner's module, loads those weights into it tensor by
tensor in registration order, runs it in eval mode and returns its output and parameter count,
nothing else. `ModelCase.run` sends that request and checks the answer's type before the test
compares it with `ModelCase.expected`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from course_grader.learner.client import LearnerError
from course_lib.models.weights import randomize_batchnorm

__all__ = [
    "LearnerOutput",
    "ModelCase",
    "forward_with_weights",
    "parameter_count",
    "reference_case",
]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class LearnerOutput:
    """What the worker sent back: the learner's output and parameter count."""

    output: torch.Tensor
    parameters: int


@dataclass(frozen=True)
class ModelCase:
    """One reference run, computed in the grader's process, and the request that repeats it on the
    learner's module: `probe(learner_module, *args, weights, x)` in the worker."""

    probe: str
    args: tuple
    weights: dict[str, torch.Tensor]
    x: torch.Tensor
    expected: torch.Tensor
    expected_parameters: int

    def run(self, exercise) -> LearnerOutput:
        """The learner's output on `x` with `weights`, type-checked before the test reads it."""
        __tracebackhide__ = True
        answer = exercise.probe(self.probe, *self.args, self.weights, self.x)
        if (
            type(answer) is not dict
            or set(answer) != {"output", "parameters"}
            or type(answer["output"]) is not torch.Tensor
            or type(answer["parameters"]) is not int
        ):
            raise LearnerError(
                f"the probe {self.probe} answered {_kind(answer)}, not "
                "{'output': tensor, 'parameters': int}; the learner's code changed the grader's probe"
            )
        return LearnerOutput(answer["output"], answer["parameters"])


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:5]}"
    return f"a {type(value).__name__}"


def reference_case(
    probe: str,
    args: tuple,
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    seed: int,
) -> ModelCase:
    """Build the reference with `build()` from `seed`, draw an input of `input_shape`, run it.

    The global RNG (which the reference's initialisation draws from) is restored afterwards, so
    building a case does not change the test process's random numbers.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = build()
    randomize_batchnorm(reference, generator)
    x = torch.randn(*input_shape, generator=generator)  # (B, C, H, W)
    with torch.no_grad():
        expected = reference.eval()(x)
    weights = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    return ModelCase(probe, tuple(args), weights, x, expected, parameter_count(reference))


def forward_with_weights(
    learner: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor, what: str, hint: str
) -> dict:
    """Worker side: load `weights` into `learner` in registration order, run it in eval mode on `x`.

    Returns {"output": the learner's output, "parameters": its parameter count}.
    """
    if not isinstance(learner, nn.Module):
        raise TypeError(f"{what}(...) built a {type(learner).__name__}, not an nn.Module")
    source, target = list(weights.items()), learner.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"your {what} has {len(target)} weight tensors (parameters and batch-norm buffers), "
            f"the reference has {len(source)}: {hint}"
        )
    for (ref_name, ref), (name, mine) in zip(source, target.items()):
        if ref.shape != mine.shape:
            raise ValueError(
                f"your {what}.{name} has shape {tuple(mine.shape)}, the reference "
                f"{ref_name} has {tuple(ref.shape)}: {hint}"
            )
    learner.load_state_dict(dict(zip(target.keys(), (tensor for _, tensor in source))))
    with torch.no_grad():
        output = learner.eval()(x)
    return {"output": output, "parameters": parameter_count(learner)}
