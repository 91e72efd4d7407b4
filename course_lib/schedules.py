"""Learning-rate schedules: polynomial decay, cosine decay and a linear warm-up.

The "poly" schedule is the one of DeepLab (Chen et al., 2017, section 4.1):
    lr(t) = base_lr * (1 - t / T) ** power,   power = 0.9,
with t the optimiser step (iteration, not epoch) and T the total number of steps.
Cosine decay follows SGDR (Loshchilov & Hutter, 2017) without restarts:
    lr(t) = base_lr * (m + (1 - m) * (1 + cos(pi * t / T)) / 2),   m = min_factor.
A linear warm-up (Goyal et al., 2017) ramps the factor from 1/W to 1 over the first W steps and
the main schedule then runs over the remaining T - W steps.

A run can also be given a wall-time budget instead of a step count (`TimeBudgetFactor`): t / T is
then the share of the budget spent so far, so the rate reaches its end value when time is up,
however fast the machine turns out to be.

Every schedule is a multiplicative factor of the optimiser's base learning rate, wrapped in a
`torch.optim.lr_scheduler.LambdaLR` that is stepped once per optimiser step.
"""

from __future__ import annotations

import math
import time

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULES",
    "poly_factor",
    "cosine_factor",
    "LRFactor",
    "TimeBudgetFactor",
    "schedule_factor",
    "build_scheduler",
]

SCHEDULES = ("poly", "cosine", "constant")


def _check_step(step: int, total_steps: int) -> None:
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """(1 - step / total_steps) ** power, held at 0 once step >= total_steps."""
    _check_step(step, total_steps)
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    return max(0.0, 1.0 - step / total_steps) ** power


def cosine_factor(step: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Half a cosine from 1 down to `min_factor` over `total_steps`, then held at `min_factor`."""
    _check_step(step, total_steps)
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")
    progress = min(step / total_steps, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRFactor:
    """Step -> learning-rate factor: an optional linear warm-up followed by a decay schedule.

    A plain object (not a closure) so that `LambdaLR.state_dict()` can store it in a checkpoint.
    """

    def __init__(
        self,
        name: str,
        total_steps: int,
        warmup_steps: int = 0,
        power: float = 0.9,
        min_factor: float = 0.0,
    ):
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"warmup_steps must be an int in [0, total_steps={total_steps}), got {warmup_steps!r}"
            )
        self.name = name
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.power = power
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self._decay(*self._decay_position(step))

    def _decay_position(self, step: int) -> tuple[int, int]:
        """(steps done, steps in all) of the decay that follows the warm-up."""
        return step - self.warmup_steps, self.total_steps - self.warmup_steps

    def _decay(self, done: int, total: int) -> float:
        if self.name == "poly":
            return poly_factor(done, total, self.power)
        if self.name == "cosine":
            return cosine_factor(done, total, self.min_factor)
        return 1.0

    def __repr__(self) -> str:
        return (
            f"LRFactor({self.name!r}, total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps})"
        )


class TimeBudgetFactor(LRFactor):
    """Step -> factor of schedule `name` over a wall-time budget of `total_seconds`.

    Progress is `(spent_before + seconds since start) / total_seconds`, read from the clock at
    each step, after an optional warm-up of `warmup_steps` steps. `spent_before` is time a resumed
    run already used; `start()` sets the clock's zero (when training begins, not when built).
    The warm-up and the decay are `LRFactor`'s; only the position in the decay comes from the clock.
    """

    def __init__(
        self,
        name: str,
        total_seconds: float,
        warmup_steps: int = 0,
        power: float = 0.9,
        min_factor: float = 0.0,
        spent_before: float = 0.0,
    ):
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
        if not (isinstance(total_seconds, (int, float)) and total_seconds > 0):
            raise ValueError(f"total_seconds must be a positive number, got {total_seconds!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        self.name = name
        self.total_seconds = float(total_seconds)
        self.warmup_steps = warmup_steps
        self.power = power
        self.min_factor = min_factor
        self.spent_before = float(spent_before)
        self.started_at = time.monotonic()

    def start(self) -> None:
        self.started_at = time.monotonic()

    def progress(self) -> float:
        """Share of the budget spent, in [0, 1]."""
        spent = self.spent_before + time.monotonic() - self.started_at
        return min(max(spent / self.total_seconds, 0.0), 1.0)

    def _decay_position(self, step: int) -> tuple[int, int]:
        resolution = 1_000_000  # the share of the budget spent, as a count of a million steps
        return round(self.progress() * resolution), resolution

    def __repr__(self) -> str:
        return (
            f"TimeBudgetFactor({self.name!r}, total_seconds={self.total_seconds:g}, "
            f"warmup_steps={self.warmup_steps})"
        )


def schedule_factor(
    name: str = "poly",
    *,
    total_steps: int | None = None,
    total_seconds: float | None = None,
    warmup_steps: int = 0,
    power: float = 0.9,
    min_factor: float = 0.0,
) -> LRFactor:
    """The step -> factor object of schedule `name` ("poly", "cosine", "constant").

    Give `total_steps` (the schedule runs over that many steps) or `total_seconds` (over that much
    wall time, see `TimeBudgetFactor`), not both.
    """
    if (total_steps is None) == (total_seconds is None):
        raise ValueError(
            "give exactly one of total_steps and total_seconds, got "
            f"total_steps={total_steps!r}, total_seconds={total_seconds!r}"
        )
    if total_seconds is not None:
        return TimeBudgetFactor(name, total_seconds, warmup_steps, power, min_factor)
    return LRFactor(name, total_steps, warmup_steps, power, min_factor)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "poly",
    *,
    total_steps: int | None = None,
    total_seconds: float | None = None,
    warmup_steps: int = 0,
    power: float = 0.9,
    min_factor: float = 0.0,
) -> LambdaLR:
    """A `LambdaLR` for schedule `name` (see `schedule_factor`); call `.step()` per batch."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    factor = schedule_factor(
        name,
        total_steps=total_steps,
        total_seconds=total_seconds,
        warmup_steps=warmup_steps,
        power=power,
        min_factor=min_factor,
    )
    return LambdaLR(optimizer, factor)
