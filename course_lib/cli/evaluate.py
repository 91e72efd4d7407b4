"""`evaluate`: a checkpoint scored on its validation data, another data set, or other folders."""

from __future__ import annotations

import argparse

from torch.utils.data import DataLoader

from course_lib.cli.data import SYNTHETIC, DataSpec, UsageError, build_datasets
from course_lib.cli.run_folder import (
    load_run_checkpoint,
    preprocessing_of,
    rebuild_model,
    write_json,
)

__all__ = ["evaluate_command"]

# Synthetic images drawn for `evaluate --dataset` from a seed no training run uses by default.
OTHER_DATASET_SEED = 12345


def other_dataset(kind: str, trained_on: DataSpec) -> DataSpec:
    """The validation data of `kind` at the trained size (`evaluate --dataset` on other data)."""
    if kind in SYNTHETIC:
        return DataSpec(
            kind=kind,
            image_size=trained_on.image_size,
            seed=OTHER_DATASET_SEED,
            num_train=1,
            num_val=trained_on.num_val or 32,
        )
    return DataSpec(kind=kind, image_size=trained_on.image_size, scale=trained_on.scale)


def evaluate_command(args: argparse.Namespace) -> int:
    from course_lib import engine
    from course_lib.utils import get_device

    if (args.images is None) != (args.masks is None):
        raise UsageError("give both --images and --masks, or neither")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = get_device(args.device)
    checkpoint = load_run_checkpoint(args.checkpoint, device)
    preprocessing = preprocessing_of(checkpoint)
    if args.images is not None:  # other images, decoded and scaled as in training
        spec = DataSpec(
            kind="folder",
            images=str(args.images),
            masks=str(args.masks),
            val_images=str(args.images),
            val_masks=str(args.masks),
            grayscale=preprocessing.image_mode == "L",
            image_size=preprocessing.crop_size,
            scale=preprocessing.scale,
            mask_mapping=preprocessing.mask_mapping or None,
            num_classes=preprocessing.num_classes,
        )
    else:
        if not checkpoint["extra"].get("data"):
            raise UsageError("the checkpoint records no data settings; pass --images and --masks")
        spec = DataSpec.from_dict(checkpoint["extra"]["data"])
        if args.dataset is not None and args.dataset != spec.kind:
            spec = other_dataset(args.dataset, spec)
    _, val_set, num_classes, class_names = build_datasets(spec, train=False, download=args.download)
    if num_classes != preprocessing.num_classes:
        raise UsageError(
            f"the data has {num_classes} classes, the checkpoint {preprocessing.num_classes}"
        )
    model = rebuild_model(checkpoint).to(device)
    whole_images = spec.kind not in SYNTHETIC
    loader = DataLoader(val_set, batch_size=1 if whole_images else args.batch_size)
    results = engine.evaluate(
        model,
        loader,
        num_classes,
        device,
        ignore_index=255,
        preprocessing=preprocessing if whole_images else None,
    )
    names = class_names or tuple(f"class {i}" for i in range(num_classes))
    print(f"{checkpoint['model_name']} on {spec.kind} ({len(val_set)} images)")
    print(
        f"  miou {results['miou']:.4f}  dice {results['dice']:.4f}  "
        f"pixel accuracy {results['pixel_accuracy']:.4f}"
    )
    for name, iou, dice in zip(names, results["iou_per_class"], results["dice_per_class"]):
        print(f"  {name:<12} iou {iou:.4f}  dice {dice:.4f}")
    if args.json is not None:
        write_json(args.json, results)
    return 0
