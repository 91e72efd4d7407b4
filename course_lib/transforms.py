"""Joint image/mask augmentation pipelines built on albumentations 2.x.

A segmentation sample is an image and a mask that must move together: every geometric transform
(resize, crop, flip, rotation, affine, elastic or grid distortion) is applied with the same random
parameters to both, with bilinear interpolation for the image and nearest-neighbour interpolation
for the mask (interpolating labels invents classes that were never drawn). Pixels that a transform
brings in from outside the image (padding, rotation corners) are filled with 0 in the image and
with `ignore_index` in the mask, so losses and metrics skip them. Colour transforms touch the image
only. (Buslaev et al., 2020, "Albumentations: fast and flexible image augmentations".)

Tensor contract, the one the course datasets use (`transform(image=..., mask=...)`):

    in:  image (H, W, C) float32 numpy in [0, 1] (uint8 in [0, 255] is accepted and rescaled),
         mask  (H, W) integer numpy with labels in [0, num_classes) or ignore_index
    out: {"image": (C, H', W') float32 tensor, normalised, "mask": (H', W') int64 tensor}
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network request, no warning on import

from collections.abc import Sequence  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from torch.utils.data import Dataset, get_worker_info  # noqa: E402

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationTransform",
    "train_transforms",
    "val_transforms",
    "dataset_stats",
    "denormalize",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class SegmentationTransform:
    """An albumentations pipeline with the course's input checks and output dtypes.

    Calling it as `out = t(image=image_hwc, mask=mask_hw)` returns `{"image", "mask"}` tensors:
    image `(C, H, W)` float32 and mask `(H, W)` int64 (albumentations alone hands back int32
    masks). `in_channels` is the number of image channels the normalisation expects.

    Inside a DataLoader worker the random state is re-seeded from the worker's torch seed. Forked
    workers otherwise inherit one copy of the generator each and draw the very same augmentations;
    with the torch seed they differ from worker to worker and a seeded run stays repeatable.
    """

    def __init__(
        self, transforms: Sequence[A.BasicTransform], in_channels: int, seed: int | None = None
    ):
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.pipeline = A.Compose(list(transforms), seed=seed)
        self._worker_seed: int | None = None

    def __call__(self, *, image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        image = _as_float_image(image)  # (H, W, C) float32 in [0, 1]
        if image.shape[2] != self.in_channels:
            raise ValueError(
                f"image has {image.shape[2]} channels but this pipeline normalises "
                f"{self.in_channels}; build it with mean/std of length {image.shape[2]} "
                "(e.g. from dataset_stats(dataset))"
            )
        mask = _as_label_mask(mask, image.shape[:2])  # (H, W) int32
        self._seed_for_worker()
        out = self.pipeline(image=image, mask=mask)
        return {"image": out["image"].float(), "mask": out["mask"].long()}

    def _seed_for_worker(self) -> None:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed  # base_seed + worker id, new for each epoch's workers
            self.pipeline.set_random_seed(worker.seed)

    def __repr__(self) -> str:
        return f"SegmentationTransform(in_channels={self.in_channels},\n{self.pipeline!r})"


def train_transforms(
    size: int | tuple[int, int] = 128,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    scale: tuple[float, float] = (0.75, 1.25),
    rotate: float = 15.0,
    hflip: float = 0.5,
    vflip: float = 0.0,
    distortion: float = 0.0,
    color: float = 0.5,
    rescale: float | None = None,
    seed: int | None = None,
) -> SegmentationTransform:
    """Training augmentation: a random crop of `size`, affine, flips, distortion, colour.

    Two ways to cut the crop:
    - `rescale=None` (images drawn at the training size, like the synthetic data sets): the shorter
      side is resized to the larger side of `size` (aspect ratio kept), a window of `size` is cut
      out, and a random affine map zooms by a factor in `scale`;
    - `rescale=f` (photographs, your own folders): the image keeps its own resolution times `f`
      (1.0: native), jittered by a random factor in `scale` (as torchvision's segmentation
      references: random resize, then random crop); images smaller than the crop are padded with
      `ignore_index`. Inference must then see the image at the same scale
      (`inference.segment(..., scale=f)`): a model trained on images shrunk to the crop size
      and applied at full resolution sees objects several times larger than it ever learned.
    The affine map also rotates by up to `rotate` degrees and shifts by up to 5 %. `hflip`,
    `vflip`, `distortion` (elastic or grid, useful for cells and tissue) and `color` are
    probabilities. `seed` makes the draws repeatable.
    """
    height, width = _check_size(size)
    _check_stats(mean, std)
    _check_label(ignore_index, "ignore_index")
    probabilities = {"hflip": hflip, "vflip": vflip, "distortion": distortion, "color": color}
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a probability and must lie in [0, 1], got {p!r}")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
    if rotate < 0:
        raise ValueError(f"rotate is the largest rotation in degrees, >= 0, got {rotate!r}")
    if rescale is not None and not 0 < rescale <= 4:
        raise ValueError(f"rescale must be None or a factor in (0, 4], got {rescale!r}")
    borders = dict(border_mode=cv2.BORDER_CONSTANT, fill=0.0, fill_mask=ignore_index)
    nearest = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
    if rescale is None:
        steps: list[A.BasicTransform] = [
            A.SmallestMaxSize(max_size=max(height, width), **nearest),
            A.RandomCrop(height, width),
            A.Affine(
                scale=scale,
                rotate=(-rotate, rotate),
                translate_percent=(-0.05, 0.05),
                p=1.0,
                **nearest,
                **borders,
            ),
        ]
    else:  # the image's own resolution (times rescale), jittered, then a crop
        factors = (rescale * scale[0] - 1.0, rescale * scale[1] - 1.0)  # RandomScale adds 1
        steps = [
            A.RandomScale(scale_limit=factors, area_for_downscale="image", p=1.0, **nearest),
            A.RandomCrop(height, width, pad_if_needed=True, pad_position="random", **borders),
            A.Affine(rotate=(-rotate, rotate), p=1.0, **nearest, **borders),
        ]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(A.VerticalFlip(p=vflip))
    if distortion > 0:
        steps.append(
            A.OneOf(
                [
                    A.ElasticTransform(alpha=30.0, sigma=6.0, **nearest, **borders),
                    A.GridDistortion(num_steps=5, distort_limit=0.25, **nearest, **borders),
                ],
                p=distortion,
            )
        )
    if color > 0:
        steps.append(
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2, hue=0.03, p=color)
        )
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0), ToTensorV2()]
    return SegmentationTransform(steps, in_channels=len(mean), seed=seed)


def val_transforms(
    size: int | tuple[int, int] | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationTransform:
    """Evaluation: optional resize to `size` (mask nearest-neighbour), normalise, to tensors."""
    _check_stats(mean, std)
    steps: list[A.BasicTransform] = []
    if size is not None:
        height, width = _check_size(size)
        steps.append(
            A.Resize(
                height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
            )
        )
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0), ToTensorV2()]
    return SegmentationTransform(steps, in_channels=len(mean))


def dataset_stats(
    dataset: Dataset,
    max_samples: int | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a dataset's images (no transform applied).

    `dataset[i]` must return `(image, ...)` with image `(C, H, W)` in [0, 1]; every pixel of the
    first `max_samples` images counts once. Use the result as `mean`/`std` of the pipelines, e.g.
    for grayscale microscopy where ImageNet statistics do not apply.
    """
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if count < 1:
        raise ValueError(
            f"dataset_stats needs at least one image, got max_samples={max_samples} "
            f"and len(dataset)={len(dataset)}"
        )
    total = total_sq = None
    pixels = 0
    for index in range(count):
        image = torch.as_tensor(dataset[index][0], dtype=torch.float64)  # (C, H, W)
        if image.ndim != 3:
            raise ValueError(
                f"dataset[{index}] image must be (C, H, W), got shape {tuple(image.shape)}"
            )
        flat = image.flatten(1)  # (C, H*W)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = (flat**2).sum(1) if total_sq is None else total_sq + (flat**2).sum(1)
        pixels += flat.shape[1]
    mean = total / pixels
    std = (total_sq / pixels - mean**2).clamp_min(0).sqrt()
    std = std.clamp_min(1e-3)  # a constant channel would divide by zero
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo `Normalize` for display: `(C, H, W)` or `(N, C, H, W)`, clipped to [0, 1]."""
    _check_stats(mean, std)
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise ValueError(
            "image must be a (C, H, W) or (N, C, H, W) tensor, got "
            f"{type(image).__name__} of shape {tuple(getattr(image, 'shape', ()))}"
        )
    channels = image.shape[-3]
    if channels != len(mean):
        raise ValueError(f"image has {channels} channels but mean/std have {len(mean)} values")
    shape = (channels, 1, 1)
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(shape)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(shape)
    return (image * s + m).clamp(0.0, 1.0)


def _as_float_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, C), got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]  # (H, W, 1)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C) or (H, W), got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype not in (np.float32, np.float64):
        raise TypeError(f"image must be float32 in [0, 1] or uint8, got dtype {image.dtype}")
    return np.ascontiguousarray(image, dtype=np.float32)


def _as_label_mask(mask, image_hw: tuple[int, int]) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array (H, W), got {type(mask).__name__}")
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"mask must be an (H, W) integer array, got shape {mask.shape} dtype {mask.dtype}"
        )
    if mask.shape != image_hw:
        raise ValueError(f"mask shape {mask.shape} differs from image size {image_hw}")
    if mask.size and (mask.min() < 0 or mask.max() > np.iinfo(np.int32).max):
        raise ValueError(
            f"mask labels must be non-negative int32 values, got range [{mask.min()}, {mask.max()}]"
        )
    return mask.astype(np.int32)  # OpenCV warps int32, not int64


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    pair = tuple(size) if isinstance(size, (tuple, list)) else ()
    positive = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    if len(pair) != 2 or not positive:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return pair


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(std) or len(mean) == 0:
        raise ValueError(
            f"mean and std must have one value per channel, got mean={mean!r}, std={std!r}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {std!r}")


def _check_label(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
