"""Checkpoints: round trip of every state, RNG restore, atomic writes."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import checkpoint as ckpt
from course_lib.schedules import build_scheduler


def _trained_objects():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = build_scheduler(optimizer, "poly", total_steps=10)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(2, 1, 5, 5)).square().mean().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_roundtrip_restores_model_optimizer_scheduler(tmp_path):
    model, optimizer, scheduler = _trained_objects()
    path = ckpt.save_checkpoint(
        tmp_path / "c.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=3,
        history={"train_loss": [1.0, 0.5]},
        model_name="tiny",
        model_kwargs={"num_classes": 2},
    )
    torch.manual_seed(1)
    model2 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    optimizer2 = torch.optim.AdamW(model2.parameters(), lr=0.01)
    scheduler2 = build_scheduler(optimizer2, "poly", total_steps=10)
    loaded = ckpt.load_checkpoint(path, model=model2, optimizer=optimizer2, scheduler=scheduler2)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[key], value)
    state, state2 = optimizer.state_dict()["state"], optimizer2.state_dict()["state"]
    for index in state:
        torch.testing.assert_close(state2[index]["exp_avg"], state[index]["exp_avg"])
    assert scheduler2.last_epoch == 3
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 3 / 10) ** 0.9)
    assert loaded["epoch"] == 3 and loaded["history"] == {"train_loss": [1.0, 0.5]}
    assert loaded["model_name"] == "tiny" and loaded["model_kwargs"] == {"num_classes": 2}


def test_rng_state_restore_repeats_random_draws():
    generator = torch.Generator().manual_seed(5)
    state = ckpt.capture_rng_state({"loader": generator})
    first = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    )
    ckpt.restore_rng_state(state, {"loader": generator})
    second = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    )
    assert first == second


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    real_save = torch.save

    def save_then_fail(obj, file, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, file)  # bytes reach the disk, then the write dies
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="simulated"):
        ckpt.atomic_save({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    survived = torch.load(path, weights_only=False)
    assert survived["epoch"] == 1
    torch.testing.assert_close(survived["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "temporary file left behind"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        ckpt.load_checkpoint(garbage)
    model, _, _ = _trained_objects()
    path = ckpt.save_checkpoint(tmp_path / "c.pt", model=model)
    with pytest.raises(ValueError, match="no optimizer state"):
        ckpt.load_checkpoint(path, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_save_checks_arguments(tmp_path):
    with pytest.raises(TypeError, match="model must be"):
        ckpt.save_checkpoint(tmp_path / "c.pt", model={"w": 1})
    with pytest.raises(ValueError, match="epoch must be"):
        ckpt.save_checkpoint(tmp_path / "c.pt", model=nn.Linear(1, 1), epoch=-1)
