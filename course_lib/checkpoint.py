"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one `torch.save` file holding a dict:
    "model"       model.state_dict() (unwrapped from DistributedDataParallel)
    "optimizer"   optimizer.state_dict() or None
    "scheduler"   scheduler.state_dict() or None
    "scaler"      GradScaler.state_dict() or None (fp16 mixed precision on CUDA)
    "epoch"       number of completed epochs
    "history"     dict of per-epoch lists (see `engine.fit`)
    "rng"         Python, NumPy, PyTorch CPU/CUDA and data-loader generator states
    "model_name", "model_kwargs"   how to rebuild the model with `models.build_model`
    "extra"       free-form metadata (dataset name, image size, ...)

Files are written atomically: the dict goes to a temporary file in the same folder, which is then
renamed over the target with `os.replace`. A write that fails halfway leaves the previous
checkpoint untouched.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib.atomic import atomic_open

__all__ = [
    "atomic_save",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "unwrap_model",
]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return (
        model.module
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
        else model
    )


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` through a temporary file and `os.replace` (never half-written)."""
    path = Path(path)
    with atomic_open(path) as stream:
        torch.save(obj, stream)
    return path


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """States of the Python, NumPy and PyTorch random generators (plus named extra generators)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(
    state: dict[str, Any], generators: dict[str, torch.Generator] | None = None
) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        if name in state["generators"]:
            generator.set_state(state["generators"][name])


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    history: dict | None = None,
    model_name: str | None = None,
    model_kwargs: dict | None = None,
    rng: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    checkpoint = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "history": history if history is not None else {},
        "rng": rng if rng is not None else capture_rng_state(),
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "extra": dict(extra or {}),
    }
    return atomic_save(checkpoint, path)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Read a checkpoint and load its states into the objects given; returns the dict.

    The file is unpickled with `weights_only=False` (it holds NumPy and Python RNG states), so load
    only checkpoints you trust, as with any pickle. RNG states are not restored here (call
    `restore_rng_state(checkpoint["rng"])` to continue a run exactly);
    `engine.fit(..., checkpoint=engine.Checkpointing(path, resume=path))` does both.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a course checkpoint (no 'model' entry)")
    if model is not None:
        unwrap_model(model).load_state_dict(checkpoint["model"])
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is None:
            continue
        if checkpoint.get(name) is None:
            raise ValueError(f"checkpoint {path} holds no {name} state but a {name} was given")
        target.load_state_dict(checkpoint[name])
    return checkpoint
