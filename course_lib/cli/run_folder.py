"""What a run folder holds: the checkpoint `train` writes and `evaluate`/`predict` read back, and
the metrics and figures, each written atomically."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from course_lib.atomic import write_bytes_atomic
from course_lib.cli.data import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from course_lib.preprocessing import Preprocessing

__all__ = [
    "CHECKPOINT_FILE",
    "load_run_checkpoint",
    "preprocessing_of",
    "rebuild_model",
    "write_figure",
    "write_json",
    "write_png",
]

CHECKPOINT_FILE = "last.pt"  # what `train` writes into --out and `evaluate`/`predict` read


def write_json(path: Path, content: dict) -> None:
    write_bytes_atomic(path, json.dumps(jsonable(content), indent=2, allow_nan=True).encode())


def write_figure(path: Path, figure: Figure) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def jsonable(value: Any) -> Any:
    """`value` with tensors, tuples, paths and NaN turned into what JSON holds (NaN: null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_run_checkpoint(path: Path, device: torch.device | str | None) -> dict:
    from course_lib.checkpoint import load_checkpoint

    return load_checkpoint(path, map_location=device)


def rebuild_model(checkpoint: dict) -> nn.Module:
    from course_lib.models import build_model

    if not checkpoint.get("model_name"):
        raise UsageError(
            "the checkpoint does not record its model name; was it written by "
            "`python -m course_lib train`?"
        )
    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def preprocessing_of(checkpoint: dict) -> Preprocessing:
    from course_lib.preprocessing import Preprocessing

    record = checkpoint.get("extra", {}).get("preprocessing")
    if not record:
        raise UsageError(
            "the checkpoint records no preprocessing (written by an older course_lib?); "
            "train it again with `python -m course_lib train`"
        )
    return Preprocessing.from_dict(record)
