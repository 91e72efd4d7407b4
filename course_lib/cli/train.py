"""`train`: data and model from the options, `engine.fit`, then the run folder."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course_lib.cli.data import (
    REAL,
    SYNTHETIC,
    DataSpec,
    UsageError,
    build_datasets,
    data_spec,
    folder_of,
    normalisation,
    train_settings,
)
from course_lib.cli.parser import ENCODER_MODELS
from course_lib.cli.predict import predicted_labels
from course_lib.cli.run_folder import CHECKPOINT_FILE, write_figure, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from course_lib.distributed import DistributedContext
    from course_lib.preprocessing import Preprocessing

__all__ = ["train_command"]


def model_kwargs(
    args: argparse.Namespace,
    settings: dict[str, Any],
    in_channels: int,
    out_channels: int,
    mode: str,
) -> dict:
    from course_lib.models import MODELS

    if args.model not in MODELS:
        raise UsageError(f"--model must be one of {', '.join(sorted(MODELS))}, got {args.model!r}")
    kwargs = {"in_channels": in_channels, "num_classes": out_channels}
    if args.model == "unet":
        kwargs |= {"base_channels": settings["base_channels"], "depth": settings["depth"]}
    if args.model in ENCODER_MODELS:
        kwargs["backbone"] = args.backbone or ("resnet18" if mode == "fast" else "resnet50")
    elif args.backbone is not None:
        raise UsageError(f"--backbone applies to {', '.join(ENCODER_MODELS)}, not {args.model}")
    if args.pretrained and args.model not in ENCODER_MODELS:
        raise UsageError(
            f"--pretrained needs a model with an ImageNet encoder "
            f"({', '.join(ENCODER_MODELS)}), got {args.model}"
        )
    return kwargs


def build_loss(name: str, num_classes: int, ignore_index: int) -> nn.Module:
    from course_lib import losses

    if name == "bce_dice":
        return losses.BCEDiceLoss(ignore_index=ignore_index)
    if name == "ce_dice":
        return losses.CEDiceLoss(ignore_index=ignore_index)
    if name == "ce":
        return losses.CrossEntropyLoss(ignore_index=ignore_index)
    if name == "dice":
        return losses.DiceLoss(mode="multiclass", ignore_index=ignore_index)
    if name == "focal":
        return losses.FocalLoss(ignore_index=ignore_index)
    return losses.LovaszLoss(ignore_index=ignore_index)


def worst_gallery(
    model: nn.Module,
    val_set: Dataset,
    preprocessing: Preprocessing,
    device: torch.device | str,
    count: int = 4,
) -> Figure:
    """image | ground truth | prediction for the validation images with the lowest mIoU."""
    import torch.nn.functional as F

    from course_lib import metrics, viz
    from course_lib.transforms import denormalize

    scored = []
    for index in range(min(len(val_set), 64)):
        image, mask = val_set[index]
        prediction = predicted_labels(model, image, preprocessing, device)  # (H, W)
        score = metrics.mean_iou(
            metrics.confusion_matrix(
                prediction, mask, preprocessing.num_classes, ignore_index=preprocessing.ignore_index
            )
        )
        scored.append((score if not math.isnan(score) else 1.0, index, image, mask, prediction))
    scored.sort(key=lambda item: item[0])
    chosen = scored[:count]
    size = tuple(chosen[0][2].shape[-2:])  # whole images differ in size: show them at one size
    images = torch.stack(
        [F.interpolate(item[2][None], size=size, mode="bilinear")[0] for item in chosen]
    )
    images = denormalize(images, preprocessing.mean, preprocessing.std)

    def labels_at_size(labels):
        return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()

    masks = torch.stack([labels_at_size(item[3]) for item in chosen])
    masks = torch.where(masks == preprocessing.ignore_index, torch.zeros_like(masks), masks)
    predictions = torch.stack([labels_at_size(item[4]) for item in chosen])
    figure = viz.show_grid(
        images, masks, predictions, class_names=preprocessing.class_names, max_rows=count
    )
    figure.suptitle("lowest-mIoU validation images", y=1.02)
    return figure


def train_command(args: argparse.Namespace) -> int:
    from course_lib import distributed
    from course_lib.utils import course_mode

    mode = course_mode()
    if args.images is None and (args.masks or args.val_images or args.val_masks):
        raise UsageError("--masks / --val-images / --val-masks need --images")
    if args.images is not None and args.masks is None:
        raise UsageError("--images needs --masks (a folder of masks paired by file stem)")
    if args.mask_threshold is not None and args.images is None:
        raise UsageError("--mask-threshold applies to folder masks (--images/--masks)")
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(
            f"--val-fraction must lie strictly between 0 and 1, got {args.val_fraction}"
        )
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if not (0.0 < args.scale <= 4.0):
        raise UsageError(f"--scale must be a factor in (0, 4], got {args.scale}")
    if args.scale != 1.0 and args.images is None and args.dataset not in REAL:
        raise UsageError(
            "--scale applies to folder and real data sets; synthetic images are drawn "
            "at --image-size"
        )
    if args.minutes is not None and not 0.0 < args.minutes < math.inf:
        raise UsageError(f"--minutes must be a positive number, got {args.minutes}")
    checkpoint = args.out / CHECKPOINT_FILE
    if args.resume and not checkpoint.is_file():
        raise UsageError(f"--resume: no checkpoint at {checkpoint}")
    if checkpoint.is_file() and not (args.resume or args.overwrite):
        raise UsageError(
            f"{args.out} already holds a checkpoint ({checkpoint.name}); pass --resume "
            "to continue it, --overwrite to replace it, or choose another --out"
        )
    synthetic = args.images is None and args.dataset not in REAL
    threads = (
        args.threads if args.threads is not None else (1 if mode == "fast" and synthetic else None)
    )
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    settings = train_settings(args, mode)
    if synthetic and settings["num_train"] is None:
        raise UsageError(
            f"--dataset {args.dataset} has no preset size; give --num-train and --num-val"
        )
    spec = data_spec(args, settings)
    context = distributed.setup_distributed() if args.distributed else None
    code = train_run(args, mode, settings, spec, context)  # on an error torchrun stops the others
    if context is not None:
        distributed.cleanup_distributed()  # all ranks together, after train_run freed its DDP model
    return code


def preprocessing_for(
    spec: DataSpec,
    settings: dict,
    val_set: Dataset,
    num_classes: int,
    class_names: Sequence[str] | None,
    out_channels: int,
) -> Preprocessing:
    """The `Preprocessing` record of this run: what evaluate and predict will repeat."""
    from course_lib.preprocessing import Preprocessing

    in_channels = int(val_set[0][0].shape[0])
    mean, std = normalisation(spec)
    if mean is None:  # synthetic images are used as drawn
        mean, std = (0.0,) * in_channels, (1.0,) * in_channels
    folder = folder_of(val_set)
    # Windows twice the crop: more context per window and fewer seams, at a cost that inference
    # (no gradients) can afford; synthetic images are one window of their own size.
    window = settings["image_size"] * (1 if spec.kind in SYNTHETIC else 2)
    return Preprocessing(
        mean=tuple(mean),
        std=tuple(std),
        num_classes=num_classes,
        image_mode="L" if in_channels == 1 else "RGB",
        scale=spec.scale,
        crop_size=settings["image_size"],
        window=window,
        mask_mapping=folder.mask_mapping if folder is not None else {},
        class_names=tuple(class_names) if class_names else None,
        decision="sigmoid" if out_channels == 1 else "argmax",
    )


def train_run(
    args: argparse.Namespace,
    mode: str,
    settings: dict,
    spec: DataSpec,
    context: DistributedContext | None,
) -> int:
    """Build data and model, run `engine.fit`, evaluate, and (on rank 0) write the run folder."""
    from course_lib import distributed, engine, viz
    from course_lib.utils import get_device, seed_everything

    device = context.device if context else get_device(args.device)
    seed_everything(args.seed)
    train_set, val_set, num_classes, class_names = build_datasets(
        spec, train=True, download=args.download
    )
    loss_name = (
        args.loss if args.loss != "auto" else ("bce_dice" if num_classes == 2 else "ce_dice")
    )
    if loss_name == "bce_dice" and num_classes != 2:
        raise UsageError(f"--loss bce_dice is for two classes, the data has {num_classes}")
    out_channels = 1 if loss_name == "bce_dice" else num_classes
    preprocessing = preprocessing_for(
        spec, settings, val_set, num_classes, class_names, out_channels
    )
    kwargs = model_kwargs(args, settings, preprocessing.in_channels, out_channels, mode)
    from course_lib.models import build_model

    build_kwargs = dict(kwargs)
    if args.pretrained:
        build_kwargs["backbone_weights"] = "DEFAULT"
    torch.manual_seed(args.seed)
    model = build_model(args.model, **build_kwargs)
    # Synthetic images share one size and are scored in batches; folder and real images are
    # scored whole, one at a time, at the scale and window that predict will use.
    whole_images = spec.kind not in SYNTHETIC
    val_batch = 1 if whole_images else settings["batch_size"]
    if context is not None:
        model = distributed.wrap_model(model, device, sync_batchnorm=args.sync_batchnorm)
        train_loader, val_loader = distributed.distributed_loaders(
            train_set,
            val_set,
            settings["batch_size"],
            seed=args.seed,
            num_workers=args.workers,
            val_batch_size=val_batch,
        )
    else:
        generator = torch.Generator().manual_seed(args.seed)
        train_loader = DataLoader(
            train_set,
            batch_size=settings["batch_size"],
            shuffle=True,
            generator=generator,
            num_workers=args.workers,
            drop_last=len(train_set) > settings["batch_size"],
        )
        val_loader = DataLoader(val_set, batch_size=val_batch, num_workers=args.workers)
    out = args.out
    checkpoint = out / CHECKPOINT_FILE
    main_process = distributed.is_main_process()
    if main_process:
        length = (
            f"{settings['minutes']:g} minutes"
            if settings["minutes"] is not None
            else f"{settings['epochs']} epochs"
        )
        print(
            f"training {args.model} on {spec.kind} ({len(train_set)} train / {len(val_set)} val "
            f"images, {num_classes} classes) for {length} on {device}, loss {loss_name}, "
            f"mode {mode}",
            flush=True,
        )
        folder = folder_of(val_set)
        if folder is not None:
            print(f"masks: {folder.describe_mapping()}", flush=True)
        print(f"preprocessing: {preprocessing.describe()}", flush=True)
    validation = preprocessing if whole_images else None
    options = engine.FitOptions(
        lr=settings["lr"],
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        amp=args.amp,
        grad_clip=args.grad_clip,
        early_stopping=args.early_stopping,
        ignore_index=255,
        seed=args.seed,
        progress=False if args.no_progress else None,
        verbose=True,
        preprocessing=validation,
    )
    saving = engine.Checkpointing(
        path=checkpoint,
        resume=checkpoint if args.resume else None,
        model_name=args.model,
        model_kwargs=kwargs,
        extra={
            "data": spec.to_dict(),
            "class_names": class_names,
            "mean": preprocessing.mean,
            "std": preprocessing.std,
            "num_classes": num_classes,
            "loss": loss_name,
            "preprocessing": preprocessing.to_dict(),
        },
    )
    history = engine.fit(
        model,
        train_loader,
        val_loader,
        loss_fn=build_loss(loss_name, num_classes, 255),
        num_classes=num_classes,
        epochs=settings["epochs"],
        minutes=settings["minutes"],
        device=device,
        options=options,
        checkpoint=saving,
    )
    final = engine.evaluate(
        model, val_loader, num_classes, device, ignore_index=255, preprocessing=validation
    )
    if main_process:
        bare = model.module if hasattr(model, "module") else model
        summary = {
            key: final[key]
            for key in (
                "miou",
                "dice",
                "dice_foreground",
                "pixel_accuracy",
                "iou_per_class",
                "dice_per_class",
            )
        }
        write_json(
            out / "metrics.json",
            {
                "model": args.model,
                "model_kwargs": kwargs,
                "data": spec.to_dict(),
                "class_names": class_names,
                "loss": loss_name,
                "settings": settings,
                "preprocessing": preprocessing.to_dict(),
                "device": str(device),
                "final": summary,
                "confusion_matrix": final["confusion_matrix"],
                "history": history,
            },
        )
        write_figure(
            out / "curves.png",
            viz.plot_history({k: history[k] for k in ("train_loss", "val_loss", "miou", "dice")}),
        )
        write_figure(out / "predictions.png", worst_gallery(bare, val_set, preprocessing, device))
        print(
            f"validation: miou {final['miou']:.4f}  dice {final['dice']:.4f}  "
            f"foreground dice {final['dice_foreground']:.4f}  "
            f"pixel accuracy {final['pixel_accuracy']:.4f}",
            flush=True,
        )
        print(
            f"wrote {checkpoint}, {out / 'metrics.json'}, {out / 'curves.png'}, "
            f"{out / 'predictions.png'}",
            flush=True,
        )
    return 0
