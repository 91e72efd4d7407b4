"""`predict`: masks and overlays for a folder of images, at the checkpoint's scale and window."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from course_lib.cli.data import UsageError
from course_lib.cli.run_folder import (
    load_run_checkpoint,
    preprocessing_of,
    rebuild_model,
    write_png,
)
from course_lib.data.folder import IMAGE_EXTENSIONS  # what `train --images` reads

if TYPE_CHECKING:
    from course_lib.preprocessing import Preprocessing

__all__ = ["predict_command", "predicted_labels"]


def predicted_labels(
    model: nn.Module,
    image: torch.Tensor,
    preprocessing: Preprocessing,
    device: torch.device | str,
    *,
    window: int | tuple[int, int] | None = None,
    overlap: float = 0.5,
    tta: bool = False,
) -> torch.Tensor:
    """(C, H, W) normalised image -> (H, W) labels, by the checkpoint's scale, window and rule."""
    from course_lib.inference import probabilities, segment

    logits = segment(
        model,
        image[None].to(device),
        window=window or preprocessing.window,
        scale=preprocessing.scale,
        overlap=overlap,
        tta=tta,
    )  # (1, K, H, W)
    return preprocessing.labels_from_probabilities(probabilities(logits))[0].cpu()  # (H, W)


def predict_command(args: argparse.Namespace) -> int:

    from course_lib import viz
    from course_lib.preprocessing import read_image
    from course_lib.utils import get_device, interactive, progress_bar

    if not args.input.is_dir():
        raise UsageError(f"--input {args.input} is not a folder")
    if not 0.0 <= args.overlap < 1.0:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.window is not None and args.window < 1:
        raise UsageError(f"--window must be >= 1, got {args.window}")
    files = sorted(p for p in args.input.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UsageError(f"--input {args.input} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    device = get_device(args.device)
    checkpoint = load_run_checkpoint(args.checkpoint, device)
    preprocessing = preprocessing_of(checkpoint)
    model = rebuild_model(checkpoint).to(device)
    print(f"preprocessing: {preprocessing.describe()}", flush=True)
    for path in progress_bar(files, desc="predict", unit="image", disable=not interactive()):
        image = read_image(path, preprocessing.image_mode)  # (C, H, W) in [0, 1]
        labels = predicted_labels(
            model,
            preprocessing.normalize(image),
            preprocessing,
            device,
            window=args.window,
            overlap=args.overlap,
            tta=args.tta,
        )
        labels_u8 = labels.numpy().astype(np.uint8)  # (H, W), the size of the file
        write_png(args.output / f"{path.stem}_labels.png", labels_u8)
        write_png(args.output / f"{path.stem}_mask.png", viz.colorize(labels_u8))
        write_png(args.output / f"{path.stem}_overlay.png", viz.overlay(image, labels_u8))
    print(f"wrote masks and overlays of {len(files)} images to {args.output}")
    return 0
