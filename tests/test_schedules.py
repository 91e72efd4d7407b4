"""Learning-rate schedules against their closed-form definitions."""

import math

import pytest
import torch

from course_lib.schedules import LRFactor, build_scheduler, cosine_factor, poly_factor


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_poly_matches_deeplab_formula_hand_values():
    assert poly_factor(0, 10) == 1.0
    assert poly_factor(5, 10) == pytest.approx(0.5**0.9)
    assert poly_factor(10, 10) == 0.0
    assert poly_factor(15, 10) == 0.0
    assert poly_factor(3, 4, power=1.0) == pytest.approx(0.25)


def test_cosine_hand_values():
    assert cosine_factor(0, 8) == pytest.approx(1.0)
    assert cosine_factor(4, 8) == pytest.approx(0.5)
    assert cosine_factor(8, 8) == pytest.approx(0.0, abs=1e-12)
    assert cosine_factor(4, 8, min_factor=0.2) == pytest.approx(0.6)


def test_scheduler_lrs_follow_poly_per_step():
    scheduler = build_scheduler(_optimizer(0.1), "poly", total_steps=6)
    expected = [0.1 * (1 - t / 6) ** 0.9 for t in range(6)]
    assert _lrs(scheduler, 6) == pytest.approx(expected)


def test_warmup_then_cosine():
    scheduler = build_scheduler(_optimizer(1.0), "cosine", total_steps=10, warmup_steps=4)
    expected = [0.25, 0.5, 0.75, 1.0] + [0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    assert _lrs(scheduler, 10) == pytest.approx(expected)


def test_constant_schedule_and_state_dict_roundtrip():
    scheduler = build_scheduler(_optimizer(0.3), "constant", total_steps=5, warmup_steps=2)
    assert _lrs(scheduler, 4) == pytest.approx([0.15, 0.3, 0.3, 0.3])
    state = scheduler.state_dict()
    fresh = build_scheduler(_optimizer(0.3), "poly", total_steps=5)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "linear", "total_steps": 5}, "schedule must be one of"),
        ({"name": "poly", "total_steps": 0}, "total_steps must be a positive int"),
        ({"name": "poly", "total_steps": 5, "warmup_steps": 5}, "warmup_steps"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRFactor(**kwargs)


def test_build_scheduler_rejects_non_optimizer():
    with pytest.raises(TypeError, match="optimizer must be"):
        build_scheduler("adam", total_steps=3)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_time_budget_factor_follows_the_clock(monkeypatch):
    from course_lib import schedules

    clock = _Clock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    factor = schedules.TimeBudgetFactor("poly", total_seconds=100.0)
    assert factor(0) == 1.0
    clock.now += 50.0
    assert factor(1) == pytest.approx(0.5**0.9, rel=1e-5)  # half the budget: poly at t/T = 0.5
    clock.now += 60.0
    assert factor(2) == 0.0  # past the budget it stays at the end value
    cosine = schedules.TimeBudgetFactor("cosine", total_seconds=10.0, spent_before=2.5)
    assert cosine(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-5)
    warm = schedules.TimeBudgetFactor("poly", total_seconds=10.0, warmup_steps=4)
    assert [warm(s) for s in range(3)] == [0.25, 0.5, 0.75]


def test_build_scheduler_takes_steps_or_seconds_not_both():
    with pytest.raises(ValueError, match="exactly one of total_steps and total_seconds"):
        build_scheduler(_optimizer(), "poly", total_steps=3, total_seconds=3.0)
    with pytest.raises(ValueError, match="exactly one of"):
        build_scheduler(_optimizer(), "poly")
    with pytest.raises(ValueError, match="total_seconds must be a positive"):
        build_scheduler(_optimizer(), "poly", total_seconds=0)
