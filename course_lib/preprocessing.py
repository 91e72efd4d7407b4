"""What stands between an image file and the model, and between the model and a label map.

A model only works at the scale, normalisation and label coding it was trained with. The usual
tutorial keeps these in the training script and asks the user to repeat them at prediction time;
forgetting one (e.g. training on images shrunk 4x, then predicting at full resolution) gives a
model that "works" in validation and fails on the user's images. `Preprocessing` is one record of
all of it, stored in the checkpoint, so `evaluate` and `predict` repeat training exactly:

- input: `image_mode` ("RGB" or "L"), `mean`/`std` of the normalisation;
- scale: the model sees every image resized by `scale` (1.0: native resolution); training cuts
  `crop_size` crops at that scale, inference slides `window`-sized windows over the whole
  (rescaled) image and resizes the class probabilities back to the original size;
- labels: the mask coding (`mask_mapping`, e.g. 0/255 -> 0/1), `num_classes`, `class_names`,
  `ignore_index`;
- the decision rule: "sigmoid" (one output channel, class 1 where p > `threshold`) or "argmax".

Tensor contract of `labels_from_probabilities`: probabilities `(N, K, H, W)` -> labels `(N, H, W)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

__all__ = ["Preprocessing", "read_image"]

_DECISIONS = ("argmax", "sigmoid")


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing a checkpoint carries (see the module docstring)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    image_mode: str = "RGB"
    scale: float = 1.0
    crop_size: int = 256
    window: int = 256
    mask_mapping: dict = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    ignore_index: int = 255
    decision: str = "argmax"
    threshold: float = 0.5

    def __post_init__(self):
        if self.image_mode not in ("RGB", "L"):
            raise ValueError(f"image_mode must be 'RGB' or 'L', got {self.image_mode!r}")
        if len(self.mean) != (3 if self.image_mode == "RGB" else 1) or len(self.std) != len(
            self.mean
        ):
            raise ValueError(
                f"mean/std need one value per channel of {self.image_mode!r} images, "
                f"got mean={self.mean!r}, std={self.std!r}"
            )
        if not (
            isinstance(self.scale, (int, float))
            and 0 < self.scale <= 4
            and math.isfinite(self.scale)
        ):
            raise ValueError(f"scale must be a factor in (0, 4], got {self.scale!r}")
        if not all(isinstance(v, int) and v >= 1 for v in (self.crop_size, self.window)):
            raise ValueError(
                f"crop_size and window must be positive ints, got "
                f"{self.crop_size!r} and {self.window!r}"
            )
        if self.decision not in _DECISIONS:
            raise ValueError(f"decision must be one of {_DECISIONS}, got {self.decision!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if self.decision == "sigmoid" and self.num_classes != 2:
            raise ValueError(
                f"decision 'sigmoid' is for two classes, got num_classes={self.num_classes}"
            )

    @property
    def in_channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict:
        """Plain values for a checkpoint (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        values = dict(values)
        for key in ("mean", "std", "class_names"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) or (N, C, H, W) in [0, 1] -> the normalised model input."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(shape)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(shape)
        return (image - mean) / std

    def labels_from_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        """The decision rule: (N, K, H, W) class probabilities -> (N, H, W) int64 labels."""
        if self.decision == "sigmoid":
            return (probs[:, 1] > self.threshold).long()
        return probs.argmax(dim=1)

    def describe(self) -> str:
        """One line for the start of training and for `predict`."""
        channels = "grayscale" if self.image_mode == "L" else "RGB"
        scale = "native resolution" if self.scale == 1 else f"images resized by {self.scale:g}"
        rule = f"sigmoid > {self.threshold:g}" if self.decision == "sigmoid" else "argmax"
        return (
            f"{channels}, {scale}, {self.crop_size} px crops, {self.window} px windows, "
            f"{self.num_classes} classes, decision {rule}"
        )


def read_image(path: str | Path, image_mode: str = "RGB") -> torch.Tensor:
    """An image file as a (C, H, W) float32 tensor in [0, 1] (C = 3 for "RGB", 1 for "L")."""
    from PIL import Image, UnidentifiedImageError

    from course_lib.data.folder import image_array

    try:
        with Image.open(path) as pil:
            array = image_array(pil, image_mode, path)  # (H, W, C); 16-bit kept, not clipped
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(array.transpose(2, 0, 1).copy())  # (C, H, W)
