"""The data of a command-line run: presets, the data spec a checkpoint records, building data sets.

`train_settings` merges explicit options over the preset of (dataset family, course mode);
`DataSpec` is the one record of which data a run used: built from the options by `data_spec`,
stored in `last.pt` as plain values, and turned back into the same train and validation sets by
`build_datasets`, so `evaluate` and `predict` see the data that `train` saw.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, TensorDataset

if TYPE_CHECKING:
    from course_lib.data import SegmentationFolder

__all__ = [
    "PRESETS",
    "REAL",
    "SYNTHETIC",
    "DataSpec",
    "UsageError",
    "build_datasets",
    "data_spec",
    "folder_of",
    "normalisation",
    "train_settings",
]

SYNTHETIC = ("cells", "scenes")
REAL = ("pets", "voc")

# Defaults per (dataset family, course mode). The fast cells preset is the course's quality
# target: U-Net, BCE + Dice, Dice >= 0.90 on the validation split in well under a minute of CPU
# (measured by benchmarks/bench_quality.py).
# fmt: off
PRESETS = {
    ("cells", "fast"):  dict(image_size=64, num_train=128, num_val=32, base_channels=8, depth=3,
                             lr=5e-3, batch_size=8, epochs=6),
    ("scenes", "fast"): dict(image_size=64, num_train=128, num_val=32, base_channels=16, depth=3,
                             lr=3e-3, batch_size=8, epochs=8),
    ("folder", "fast"): dict(image_size=256, num_train=None, num_val=None, base_channels=16,
                             depth=4, lr=3e-3, batch_size=8, epochs=10),
    ("real", "fast"):   dict(image_size=128, num_train=None, num_val=None, base_channels=16,
                             depth=3, lr=1e-3, batch_size=8, epochs=2),
    ("cells", "full"):  dict(image_size=256, num_train=1024, num_val=256, base_channels=32,
                             depth=4, lr=1e-3, batch_size=16, epochs=30),
    ("scenes", "full"): dict(image_size=256, num_train=1024, num_val=256, base_channels=32,
                             depth=4, lr=1e-3, batch_size=16, epochs=30),
    ("folder", "full"): dict(image_size=256, num_train=None, num_val=None, base_channels=32,
                             depth=4, lr=1e-3, batch_size=16, epochs=40),
    ("real", "full"):   dict(image_size=256, num_train=None, num_val=None, base_channels=32,
                             depth=4, lr=3e-4, batch_size=16, epochs=30),
}
# fmt: on


class UsageError(Exception):
    """A problem with the options: reported on one line, exit status 2."""


def train_settings(args: argparse.Namespace, mode: str) -> dict:
    """The effective settings: explicit options win over the preset of (dataset family, mode)."""
    family = "folder" if args.images is not None else (args.dataset or "cells")
    family = "real" if family in REAL else family
    settings = dict(PRESETS[(family, mode)])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["minutes"] = getattr(args, "minutes", None)
    if settings["minutes"] is not None:
        settings["epochs"] = args.epochs  # a time budget, and an epoch limit only if given
    for key in ("image_size", "base_channels", "depth", "epochs", "batch_size"):
        if key == "epochs" and settings[key] is None and settings["minutes"] is not None:
            continue
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise UsageError(
                f"--{key.replace('_', '-')} must be a positive integer, got {settings[key]!r}"
            )
    for key in ("num_train", "num_val"):
        if settings[key] is not None and settings[key] < 1:
            raise UsageError(
                f"--{key.replace('_', '-')} must be a positive integer, got {settings[key]!r}"
            )
    if not settings["lr"] > 0:
        raise UsageError(f"--lr must be > 0, got {settings['lr']!r}")
    return settings


def _materialise(dataset: Dataset) -> TensorDataset:
    """Render a synthetic data set once (it is deterministic) instead of once per epoch."""
    images, masks = zip(*(dataset[i] for i in range(len(dataset))))
    return TensorDataset(torch.stack(images), torch.stack(masks))


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains and validates on, in plain values a checkpoint can store.

    kind: "cells" | "scenes" (synthetic), "pets" | "voc" (real data sets) or "folder" (own
    images; then `images`/`masks` and optionally `val_images`/`val_masks` are folder paths).
    Synthetic data are `num_train` + `num_val` images drawn from `seed`; a folder without its
    own validation folders is split by `val_fraction` with `seed`. `mask_mapping` is the mapping a
    trained checkpoint recorded (`SegmentationFolder.mask_mapping`); without one, `num_classes` and
    `mask_threshold` are passed on as given.
    """

    kind: str
    image_size: int
    seed: int = 0
    scale: float = 1.0
    val_fraction: float = 0.2
    num_train: int | None = None
    num_val: int | None = None
    images: str | None = None
    masks: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    grayscale: bool = False
    num_classes: int | None = None
    mask_threshold: int | None = None
    mask_mapping: dict | None = None

    def __post_init__(self):
        if self.kind not in SYNTHETIC + REAL + ("folder",):
            raise ValueError(
                f"unknown data kind {self.kind!r}; expected one of {SYNTHETIC + REAL + ('folder',)}"
            )
        if self.kind == "folder" and (self.images is None or self.masks is None):
            raise ValueError("a folder data spec needs images and masks folders")
        if self.kind in SYNTHETIC and (self.num_train is None or self.num_val is None):
            raise ValueError(f"synthetic data ({self.kind}) need num_train and num_val")

    def to_dict(self) -> dict:
        """Plain values (str, int, float, bool, None, dict) for the checkpoint and metrics.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DataSpec:
        """The spec a checkpoint stored; keys it does not know are refused by name."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"data spec has unknown keys {unknown}; train the model again")
        return cls(**values)

    def with_changes(self, **changes: Any) -> DataSpec:
        return replace(self, **changes)


def data_spec(args: argparse.Namespace, settings: dict[str, Any]) -> DataSpec:
    """The spec of the data the options name (the preset settings fill what they leave out)."""
    common = dict(
        image_size=settings["image_size"],
        seed=args.seed,
        scale=args.scale,
        val_fraction=args.val_fraction,
    )
    if args.images is None:
        return DataSpec(
            kind=args.dataset or "cells",
            num_train=settings["num_train"],
            num_val=settings["num_val"],
            **common,
        )
    return DataSpec(
        kind="folder",
        images=str(args.images),
        masks=str(args.masks),
        val_images=str(args.val_images) if args.val_images else None,
        val_masks=str(args.val_masks) if args.val_masks else None,
        grayscale=args.grayscale or _all_grayscale(args.images),
        num_classes=args.num_classes,
        mask_threshold=args.mask_threshold,
        **common,
    )


def _all_grayscale(folder) -> bool:
    """True when every image file of `folder` is stored with one channel (read from the headers)."""
    from PIL import Image

    from course_lib.data.folder import IMAGE_EXTENSIONS

    files = (
        [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        if folder.is_dir()
        else []
    )
    modes = set()
    for path in files:
        try:
            with Image.open(path) as pil:
                modes.add(pil.mode)
        except OSError:
            return False  # SegmentationFolder reports the unreadable file by name
    return bool(modes) and modes <= {"L", "1", "I", "I;16", "I;16B", "I;16L"}  # 1, 8, 16 bits


def _folder_datasets(spec: DataSpec, train: bool):
    from course_lib.data import SegmentationFolder, train_val_split
    from course_lib.transforms import train_transforms, val_transforms

    mean, std = normalisation(spec)
    image_mode = "L" if spec.grayscale else "RGB"
    mapping = spec.mask_mapping or {
        "num_classes": spec.num_classes,
        "mask_threshold": spec.mask_threshold,
    }
    common = dict(image_mode=image_mode, **mapping)  # a checkpoint's mapping, or the options
    if (spec.val_images is None) != (spec.val_masks is None):
        raise UsageError("give both --val-images and --val-masks, or neither")
    train_t = (
        train_transforms(spec.image_size, mean=mean, std=std, rescale=spec.scale, seed=spec.seed)
        if train
        else None
    )
    val_t = val_transforms(None, mean=mean, std=std)  # whole images, scaled by inference.segment
    if spec.val_images is not None:
        val_set = SegmentationFolder(spec.val_images, spec.val_masks, val_t, **common)
        train_set = (
            SegmentationFolder(spec.images, spec.masks, train_t, **common) if train else None
        )
    else:
        plain = SegmentationFolder(spec.images, spec.masks, train_t, **common)
        evaluation = SegmentationFolder(spec.images, spec.masks, val_t, **common)
        train_set, val_set = train_val_split(
            plain, spec.val_fraction, spec.seed, val_dataset=evaluation
        )
        return train_set, val_set, plain.num_classes, None
    return train_set, val_set, val_set.num_classes, None


def _real_datasets(spec: DataSpec, train: bool, download: bool):
    from course_lib.data.real import OxfordPetSegmentation, PascalVOCSegmentation
    from course_lib.transforms import train_transforms, val_transforms

    train_t = (
        train_transforms(spec.image_size, rescale=spec.scale, seed=spec.seed) if train else None
    )
    val_t = val_transforms(None)  # whole images, scaled by inference.segment
    if spec.kind == "pets":
        val_set = OxfordPetSegmentation(split="test", transform=val_t, download=download)
        train_set = (
            OxfordPetSegmentation(split="trainval", transform=train_t, download=download)
            if train
            else None
        )
        return train_set, val_set, 3, ("background", "pet", "boundary")
    val_set = PascalVOCSegmentation(image_set="val", transform=val_t, download=download)
    train_set = (
        PascalVOCSegmentation(image_set="train", transform=train_t, download=download)
        if train
        else None
    )
    return (
        train_set,
        val_set,
        PascalVOCSegmentation.num_classes,
        tuple(PascalVOCSegmentation.CLASSES),
    )


def folder_of(dataset: Dataset) -> SegmentationFolder | None:
    """The `SegmentationFolder` under a (possibly nested) `Subset`, or None."""
    from course_lib.data import SegmentationFolder

    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, SegmentationFolder) else None


def normalisation(
    spec: DataSpec,
) -> tuple[tuple[float, ...], tuple[float, ...]] | tuple[None, None]:
    """(mean, std) of the model input, or (None, None) for synthetic data used as it is."""
    if spec.kind in SYNTHETIC:
        return None, None
    if spec.kind == "folder" and spec.grayscale:
        return (0.5,), (0.25,)
    from course_lib.transforms import IMAGENET_MEAN, IMAGENET_STD

    return IMAGENET_MEAN, IMAGENET_STD


def build_datasets(
    spec: DataSpec | dict, train: bool = True, download: bool = False
) -> tuple[Dataset | None, Dataset, int, tuple[str, ...] | None]:
    """(train_set or None, val_set, num_classes, class_names or None) for a data spec.

    `spec` may also be the plain dict a checkpoint stores (`DataSpec.to_dict()`).
    """
    spec = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    if spec.kind in SYNTHETIC:
        from course_lib.data import CellsDataset, ScenesDataset

        cls = CellsDataset if spec.kind == "cells" else ScenesDataset
        total = spec.num_train + spec.num_val
        full = _materialise(cls(length=total, image_size=spec.image_size, seed=spec.seed))
        train_set = torch.utils.data.Subset(full, range(spec.num_train)) if train else None
        val_set = torch.utils.data.Subset(full, range(spec.num_train, total))
        return train_set, val_set, cls.num_classes, tuple(cls.CLASSES)
    if spec.kind == "folder":
        return _folder_datasets(spec, train)
    return _real_datasets(spec, train, download)
