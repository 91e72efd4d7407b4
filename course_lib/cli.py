"""The command line: `python -m course_lib train | evaluate | predict`.

    python -m course_lib train --model unet --dataset cells --epochs 5 --out runs/demo
    python -m course_lib train --images DIR --masks DIR [--val-images DIR --val-masks DIR]
    python -m course_lib evaluate --checkpoint runs/demo/last.pt [--dataset cells]
    python -m course_lib predict --checkpoint runs/demo/last.pt --input DIR --output DIR
    torchrun --nproc_per_node=4 -m course_lib train --distributed ...   # several GPUs

A thin layer over `engine.fit`, `engine.evaluate` and `inference`: it builds the data set and the
model from the options (or from the checkpoint, which records the model name, its constructor
arguments, the data settings and the class names), then writes its results atomically:
`last.pt` (checkpoint), `metrics.json`, `curves.png` and `predictions.png` (the worst validation
images). Options left unset take the defaults of the course mode (`utils.course_mode`): fast mode
trains small models on synthetic data in seconds on a CPU, full mode uses larger images, models
and schedules. Bad options end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from course_lib.atomic import write_bytes_atomic
from course_lib.cli_data import (
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

__all__ = ["CHECKPOINT_FILE", "build_parser", "main"]

CHECKPOINT_FILE = "last.pt"  # what `train` writes into --out and `evaluate`/`predict` read

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_ENCODER_MODELS = ("fcn", "deeplabv3", "deeplabv3plus")
_LOSSES = ("auto", "ce", "dice", "ce_dice", "bce_dice", "focal", "lovasz")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m course_lib",
                     description="Train, evaluate and apply the segmentation models of the course.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                     metavar="{train,evaluate,predict}")

    train = commands.add_parser("train", help="train a model and write checkpoint, metrics, plots",
                                description="Train a model; unset options take the defaults of the "
                                            "course mode (COURSE_MODE=fast|full).")
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=SYNTHETIC + REAL, default=None,
                      help="synthetic 'cells' (default, binary, grayscale) or 'scenes' (6 classes), "
                           "or a real data set of full mode: 'pets' (Oxford-IIIT Pet trimaps) or "
                           "'voc' (Pascal VOC 2012); ignored when --images is given")
    data.add_argument("--images", type=Path, help="folder of training images (your own data)")
    data.add_argument("--masks", type=Path, help="folder of training masks, paired by file stem")
    data.add_argument("--val-images", type=Path, help="folder of validation images (optional)")
    data.add_argument("--val-masks", type=Path, help="folder of validation masks (optional)")
    data.add_argument("--val-fraction", type=float, default=0.2,
                      help="share of the data held out for validation when no validation folders "
                           "are given (default 0.2)")
    data.add_argument("--num-classes", type=int,
                      help="number of classes of folder data (default: read from the masks)")
    data.add_argument("--grayscale", action="store_true",
                      help="read folder images as one-channel grayscale (the default when every "
                           "training image is stored as grayscale)")
    data.add_argument("--mask-threshold", type=int, metavar="VALUE",
                      help="binarise folder masks: class 1 where the mask value >= VALUE, else 0 "
                           "(for anti-aliased or JPEG-saved binary masks, e.g. 128)")
    data.add_argument("--image-size", type=int,
                      help="training crop size (pixels, at --scale), or synthetic image size")
    data.add_argument("--scale", type=float, default=1.0,
                      help="resize folder and real images by this factor for training, evaluation "
                           "and prediction alike (default 1.0: native resolution; e.g. 0.5 for "
                           "large images with large structures); predictions come back at the "
                           "original size")
    data.add_argument("--num-train", type=int, help="number of synthetic training images")
    data.add_argument("--num-val", type=int, help="number of synthetic validation images")
    data.add_argument("--download", action="store_true",
                      help="allow downloading a real data set into COURSE_DATA_DIR")
    data.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")

    model = train.add_argument_group("model")
    model.add_argument("--model", default="unet",
                       help="model name from course_lib.models.MODELS (default unet)")
    model.add_argument("--base-channels", type=int, help="U-Net width of the first level")
    model.add_argument("--depth", type=int, help="U-Net number of poolings")
    model.add_argument("--backbone", help="encoder of fcn/deeplabv3/deeplabv3plus "
                                          "(default resnet18 in fast mode, resnet50 in full mode)")
    model.add_argument("--pretrained", action="store_true",
                       help="start the encoder from ImageNet weights (downloads them once)")

    optim = train.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, help="number of epochs")
    optim.add_argument("--minutes", type=float,
                       help="train for this many minutes of wall time instead of a number of "
                            "epochs: the learning-rate schedule spans the budget and the checkpoint "
                            "is written at the end (with --epochs too: whichever ends first)")
    optim.add_argument("--batch-size", type=int, help="images per batch (per process)")
    optim.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    optim.add_argument("--loss", choices=_LOSSES, default="auto",
                       help="auto = bce_dice for two classes (one output channel), ce_dice otherwise")
    optim.add_argument("--schedule", choices=("poly", "cosine", "constant"), default="poly",
                       help="learning-rate schedule, stepped per batch (default poly, as DeepLab)")
    optim.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    optim.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                       help="mixed precision (auto: bf16/fp16 on CUDA, off on the CPU)")
    optim.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    optim.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop after PATIENCE epochs without a better validation mIoU")

    run = train.add_argument_group("run")
    run.add_argument("--out", type=Path, default=Path("runs/demo"),
                     help="output folder for last.pt, metrics.json, curves.png, predictions.png")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an OUT that already holds a checkpoint (replacing it)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: best available")
    run.add_argument("--threads", type=int,
                     help="CPU threads for PyTorch (default: 1 in fast mode, whose tensors are too "
                          "small to gain from more and which then runs steadily on a busy machine; "
                          "PyTorch's default in full mode)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--distributed", action="store_true",
                     help="DistributedDataParallel; launch with torchrun --nproc_per_node=N")
    run.add_argument("--sync-batchnorm", action="store_true",
                     help="with --distributed on GPUs: synchronise BatchNorm statistics")

    evaluate = commands.add_parser("evaluate", help="metrics of a checkpoint on a validation set",
                                   description="Evaluate a checkpoint on the validation data it "
                                               "was trained with, or on other data.")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="a last.pt written by train")
    evaluate.add_argument("--dataset", choices=SYNTHETIC + REAL,
                          help="evaluate on this data set (default: the one of the checkpoint)")
    evaluate.add_argument("--images", type=Path, help="folder of images to evaluate on")
    evaluate.add_argument("--masks", type=Path, help="folder of the matching masks")
    evaluate.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    evaluate.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: best available")
    evaluate.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    evaluate.add_argument("--download", action="store_true", help="allow downloading a real data set")

    predict = commands.add_parser("predict", help="colour masks and overlays for a folder of images",
                                  description="Segment every image of a folder; writes NAME_mask.png "
                                              "(colours), NAME_overlay.png and NAME_labels.png "
                                              "(class ids).")
    predict.add_argument("--checkpoint", type=Path, required=True, help="a last.pt written by train")
    predict.add_argument("--input", type=Path, required=True, help="folder of images")
    predict.add_argument("--output", type=Path, required=True, help="folder for the results")
    predict.add_argument("--window", type=int,
                         help="sliding-window size (default: the one the checkpoint records)")
    predict.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1)")
    predict.add_argument("--tta", action="store_true", help="average with the horizontal flip")
    predict.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: best available")
    return parser


# ------------------------------------------------------------------------------------ file output

def _write_json(path: Path, content: dict) -> None:
    write_bytes_atomic(path, json.dumps(_jsonable(content), indent=2, allow_nan=True).encode())


def _write_figure(path: Path, figure) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------------------------------ model

def _model_kwargs(args, settings, in_channels: int, out_channels: int, mode: str) -> dict:
    from course_lib.models import MODELS

    if args.model not in MODELS:
        raise UsageError(f"--model must be one of {', '.join(sorted(MODELS))}, got {args.model!r}")
    kwargs = {"in_channels": in_channels, "num_classes": out_channels}
    if args.model == "unet":
        kwargs |= {"base_channels": settings["base_channels"], "depth": settings["depth"]}
    if args.model in _ENCODER_MODELS:
        kwargs["backbone"] = args.backbone or ("resnet18" if mode == "fast" else "resnet50")
    elif args.backbone is not None:
        raise UsageError(f"--backbone applies to {', '.join(_ENCODER_MODELS)}, not {args.model}")
    if args.pretrained and args.model not in _ENCODER_MODELS:
        raise UsageError(f"--pretrained needs a model with an ImageNet encoder "
                         f"({', '.join(_ENCODER_MODELS)}), got {args.model}")
    return kwargs


def _build_loss(name: str, num_classes: int, ignore_index: int):
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


def _rebuild_model(checkpoint: dict):
    from course_lib.models import build_model

    if not checkpoint.get("model_name"):
        raise UsageError("the checkpoint does not record its model name; was it written by "
                         "`python -m course_lib train`?")
    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()


# ----------------------------------------------------------------------------------------- train

def _predicted_labels(model, image: torch.Tensor, preprocessing, device, *, window=None,
                      overlap: float = 0.5, tta: bool = False) -> torch.Tensor:
    """(C, H, W) normalised image -> (H, W) labels, by the checkpoint's scale, window and rule."""
    from course_lib.inference import probabilities, segment

    logits = segment(model, image[None].to(device), window=window or preprocessing.window,
                     scale=preprocessing.scale, overlap=overlap, tta=tta)  # (1, K, H, W)
    return preprocessing.labels_from_probabilities(probabilities(logits))[0].cpu()  # (H, W)


def _worst_gallery(model, val_set, preprocessing, device, count: int = 4):
    """image | ground truth | prediction for the validation images with the lowest mIoU."""
    import torch.nn.functional as F

    from course_lib import metrics, viz
    from course_lib.transforms import denormalize

    scored = []
    for index in range(min(len(val_set), 64)):
        image, mask = val_set[index]
        prediction = _predicted_labels(model, image, preprocessing, device)  # (H, W)
        score = metrics.mean_iou(metrics.confusion_matrix(
            prediction, mask, preprocessing.num_classes, ignore_index=preprocessing.ignore_index))
        scored.append((score if not math.isnan(score) else 1.0, index, image, mask, prediction))
    scored.sort(key=lambda item: item[0])
    chosen = scored[:count]
    size = tuple(chosen[0][2].shape[-2:])  # whole images differ in size: show them at one size
    images = torch.stack([F.interpolate(item[2][None], size=size, mode="bilinear")[0]
                          for item in chosen])
    images = denormalize(images, preprocessing.mean, preprocessing.std)

    def labels_at_size(labels):
        return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()

    masks = torch.stack([labels_at_size(item[3]) for item in chosen])
    masks = torch.where(masks == preprocessing.ignore_index, torch.zeros_like(masks), masks)
    predictions = torch.stack([labels_at_size(item[4]) for item in chosen])
    figure = viz.show_grid(images, masks, predictions, class_names=preprocessing.class_names,
                           max_rows=count)
    figure.suptitle("lowest-mIoU validation images", y=1.02)
    return figure


def _train(args) -> int:
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
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {args.val_fraction}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if not (0.0 < args.scale <= 4.0):
        raise UsageError(f"--scale must be a factor in (0, 4], got {args.scale}")
    if args.scale != 1.0 and args.images is None and args.dataset not in REAL:
        raise UsageError("--scale applies to folder and real data sets; synthetic images are drawn "
                         "at --image-size")
    if args.minutes is not None and not 0.0 < args.minutes < math.inf:
        raise UsageError(f"--minutes must be a positive number, got {args.minutes}")
    checkpoint = args.out / CHECKPOINT_FILE
    if args.resume and not checkpoint.is_file():
        raise UsageError(f"--resume: no checkpoint at {checkpoint}")
    if checkpoint.is_file() and not (args.resume or args.overwrite):
        raise UsageError(f"{args.out} already holds a checkpoint ({checkpoint.name}); pass --resume "
                         "to continue it, --overwrite to replace it, or choose another --out")
    synthetic = args.images is None and args.dataset not in REAL
    threads = args.threads if args.threads is not None else (1 if mode == "fast" and synthetic else None)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    settings = train_settings(args, mode)
    if synthetic and settings["num_train"] is None:
        raise UsageError(f"--dataset {args.dataset} has no preset size; give --num-train and --num-val")
    spec = data_spec(args, settings)
    context = distributed.setup_distributed() if args.distributed else None
    code = _train_run(args, mode, settings, spec, context)  # on an error torchrun stops the others
    if context is not None:
        distributed.cleanup_distributed()  # all ranks together, after _train_run freed its DDP model
    return code


def _preprocessing_for(spec: DataSpec, settings: dict, val_set, num_classes: int, class_names,
                       out_channels: int):
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
        mean=tuple(mean), std=tuple(std), num_classes=num_classes,
        image_mode="L" if in_channels == 1 else "RGB", scale=spec.scale,
        crop_size=settings["image_size"], window=window,
        mask_mapping=folder.mask_mapping if folder is not None else {},
        class_names=tuple(class_names) if class_names else None,
        decision="sigmoid" if out_channels == 1 else "argmax")


def _train_run(args, mode: str, settings: dict, spec: DataSpec, context) -> int:
    """Build data and model, run `engine.fit`, evaluate, and (on rank 0) write the run folder."""
    from course_lib import distributed, engine, viz
    from course_lib.utils import get_device, seed_everything

    device = context.device if context else get_device(args.device)
    seed_everything(args.seed)
    train_set, val_set, num_classes, class_names = build_datasets(spec, train=True,
                                                                 download=args.download)
    loss_name = args.loss if args.loss != "auto" else ("bce_dice" if num_classes == 2 else "ce_dice")
    if loss_name == "bce_dice" and num_classes != 2:
        raise UsageError(f"--loss bce_dice is for two classes, the data has {num_classes}")
    out_channels = 1 if loss_name == "bce_dice" else num_classes
    preprocessing = _preprocessing_for(spec, settings, val_set, num_classes, class_names,
                                       out_channels)
    kwargs = _model_kwargs(args, settings, preprocessing.in_channels, out_channels, mode)
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
            train_set, val_set, settings["batch_size"], seed=args.seed, num_workers=args.workers,
            val_batch_size=val_batch)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        train_loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=True,
                                  generator=generator, num_workers=args.workers,
                                  drop_last=len(train_set) > settings["batch_size"])
        val_loader = DataLoader(val_set, batch_size=val_batch, num_workers=args.workers)
    out = args.out
    checkpoint = out / CHECKPOINT_FILE
    main_process = distributed.is_main_process()
    if main_process:
        length = (f"{settings['minutes']:g} minutes" if settings["minutes"] is not None
                  else f"{settings['epochs']} epochs")
        print(f"training {args.model} on {spec.kind} ({len(train_set)} train / {len(val_set)} val "
              f"images, {num_classes} classes) for {length} on {device}, loss {loss_name}, "
              f"mode {mode}", flush=True)
        folder = folder_of(val_set)
        if folder is not None:
            print(f"masks: {folder.describe_mapping()}", flush=True)
        print(f"preprocessing: {preprocessing.describe()}", flush=True)
    validation = preprocessing if whole_images else None
    history = engine.fit(
        model, train_loader, val_loader, epochs=settings["epochs"], minutes=settings["minutes"],
        loss_fn=_build_loss(loss_name, num_classes, 255), num_classes=num_classes, device=device,
        lr=settings["lr"], weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_steps=args.warmup_steps, amp=args.amp, grad_clip=args.grad_clip,
        early_stopping=args.early_stopping, ignore_index=255, checkpoint=checkpoint,
        resume=checkpoint if args.resume else None, seed=args.seed,
        progress=False if args.no_progress else None, verbose=True, model_name=args.model,
        model_kwargs=kwargs, preprocessing=validation,
        extra={"data": spec.to_dict(), "class_names": class_names, "mean": preprocessing.mean,
               "std": preprocessing.std, "num_classes": num_classes, "loss": loss_name,
               "preprocessing": preprocessing.to_dict()})
    final = engine.evaluate(model, val_loader, num_classes, device, ignore_index=255,
                            preprocessing=validation)
    if main_process:
        bare = model.module if hasattr(model, "module") else model
        summary = {key: final[key] for key in ("miou", "dice", "dice_foreground", "pixel_accuracy",
                                               "iou_per_class", "dice_per_class")}
        _write_json(out / "metrics.json", {
            "model": args.model, "model_kwargs": kwargs, "data": spec.to_dict(), "class_names": class_names,
            "loss": loss_name, "settings": settings, "preprocessing": preprocessing.to_dict(),
            "device": str(device), "final": summary,
            "confusion_matrix": final["confusion_matrix"], "history": history})
        _write_figure(out / "curves.png", viz.plot_history(
            {k: history[k] for k in ("train_loss", "val_loss", "miou", "dice")}))
        _write_figure(out / "predictions.png", _worst_gallery(bare, val_set, preprocessing, device))
        print(f"validation: miou {final['miou']:.4f}  dice {final['dice']:.4f}  "
              f"foreground dice {final['dice_foreground']:.4f}  "
              f"pixel accuracy {final['pixel_accuracy']:.4f}", flush=True)
        print(f"wrote {checkpoint}, {out / 'metrics.json'}, {out / 'curves.png'}, "
              f"{out / 'predictions.png'}", flush=True)
    return 0


# -------------------------------------------------------------------------------- evaluate, predict

def _load(path: Path, device) -> dict:
    from course_lib.checkpoint import load_checkpoint

    return load_checkpoint(path, map_location=device)


def _preprocessing_of(checkpoint: dict):
    from course_lib.preprocessing import Preprocessing

    record = checkpoint.get("extra", {}).get("preprocessing")
    if not record:
        raise UsageError("the checkpoint records no preprocessing (written by an older course_lib?); "
                         "train it again with `python -m course_lib train`")
    return Preprocessing.from_dict(record)


# Synthetic images drawn for `evaluate --dataset` from a seed no training run uses by default.
_OTHER_DATASET_SEED = 12345


def _other_dataset(kind: str, trained_on: DataSpec) -> DataSpec:
    """The validation data of `kind` at the trained size (`evaluate --dataset` on other data)."""
    if kind in SYNTHETIC:
        return DataSpec(kind=kind, image_size=trained_on.image_size, seed=_OTHER_DATASET_SEED,
                        num_train=1, num_val=trained_on.num_val or 32)
    return DataSpec(kind=kind, image_size=trained_on.image_size, scale=trained_on.scale)


def _evaluate(args) -> int:
    from course_lib import engine
    from course_lib.utils import get_device

    if (args.images is None) != (args.masks is None):
        raise UsageError("give both --images and --masks, or neither")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = get_device(args.device)
    checkpoint = _load(args.checkpoint, device)
    preprocessing = _preprocessing_of(checkpoint)
    if args.images is not None:  # other images, decoded and scaled as in training
        spec = DataSpec(kind="folder", images=str(args.images), masks=str(args.masks),
                        val_images=str(args.images), val_masks=str(args.masks),
                        grayscale=preprocessing.image_mode == "L",
                        image_size=preprocessing.crop_size, scale=preprocessing.scale,
                        mask_mapping=preprocessing.mask_mapping or None,
                        num_classes=preprocessing.num_classes)
    else:
        if not checkpoint["extra"].get("data"):
            raise UsageError("the checkpoint records no data settings; pass --images and --masks")
        spec = DataSpec.from_dict(checkpoint["extra"]["data"])
        if args.dataset is not None and args.dataset != spec.kind:
            spec = _other_dataset(args.dataset, spec)
    _, val_set, num_classes, class_names = build_datasets(spec, train=False, download=args.download)
    if num_classes != preprocessing.num_classes:
        raise UsageError(f"the data has {num_classes} classes, the checkpoint "
                         f"{preprocessing.num_classes}")
    model = _rebuild_model(checkpoint).to(device)
    whole_images = spec.kind not in SYNTHETIC
    loader = DataLoader(val_set, batch_size=1 if whole_images else args.batch_size)
    results = engine.evaluate(model, loader, num_classes, device, ignore_index=255,
                              preprocessing=preprocessing if whole_images else None)
    names = class_names or tuple(f"class {i}" for i in range(num_classes))
    print(f"{checkpoint['model_name']} on {spec.kind} ({len(val_set)} images)")
    print(f"  miou {results['miou']:.4f}  dice {results['dice']:.4f}  "
          f"pixel accuracy {results['pixel_accuracy']:.4f}")
    for name, iou, dice in zip(names, results["iou_per_class"], results["dice_per_class"]):
        print(f"  {name:<12} iou {iou:.4f}  dice {dice:.4f}")
    if args.json is not None:
        _write_json(args.json, results)
    return 0


def _predict(args) -> int:

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
    checkpoint = _load(args.checkpoint, device)
    preprocessing = _preprocessing_of(checkpoint)
    model = _rebuild_model(checkpoint).to(device)
    print(f"preprocessing: {preprocessing.describe()}", flush=True)
    for path in progress_bar(files, desc="predict", unit="image", disable=not interactive()):
        image = read_image(path, preprocessing.image_mode)  # (C, H, W) in [0, 1]
        labels = _predicted_labels(model, preprocessing.normalize(image), preprocessing, device,
                                   window=args.window, overlap=args.overlap, tta=args.tta)
        labels_u8 = labels.numpy().astype(np.uint8)  # (H, W), the size of the file
        _write_png(args.output / f"{path.stem}_labels.png", labels_u8)
        _write_png(args.output / f"{path.stem}_mask.png", viz.colorize(labels_u8))
        _write_png(args.output / f"{path.stem}_overlay.png", viz.overlay(image, labels_u8))
    print(f"wrote masks and overlays of {len(files)} images to {args.output}")
    return 0


# ------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m course_lib`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        command = {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.command]
        return command(args)
    except UsageError as error:
        print(f"python -m course_lib: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        message = " ".join(str(error).split())
        print(f"python -m course_lib: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2
