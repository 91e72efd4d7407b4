"""The options of `python -m course_lib train | evaluate | predict` (argparse only, no work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from course_lib.cli.data import REAL, SYNTHETIC, UsageError

__all__ = ["ENCODER_MODELS", "LOSSES", "build_parser"]

ENCODER_MODELS = ("fcn", "deeplabv3", "deeplabv3plus")
LOSSES = ("auto", "ce", "dice", "ce_dice", "bce_dice", "focal", "lovasz")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m course_lib",
        description="Train, evaluate and apply the segmentation models of the course.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="{train,evaluate,predict}"
    )

    train = commands.add_parser(
        "train",
        help="train a model and write checkpoint, metrics, plots",
        description="Train a model; unset options take the defaults of the "
        "course mode (COURSE_MODE=fast|full).",
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=SYNTHETIC + REAL,
        default=None,
        help="synthetic 'cells' (default, binary, grayscale) or 'scenes' (6 classes), "
        "or a real data set of full mode: 'pets' (Oxford-IIIT Pet trimaps) or "
        "'voc' (Pascal VOC 2012); ignored when --images is given",
    )
    data.add_argument("--images", type=Path, help="folder of training images (your own data)")
    data.add_argument("--masks", type=Path, help="folder of training masks, paired by file stem")
    data.add_argument("--val-images", type=Path, help="folder of validation images (optional)")
    data.add_argument("--val-masks", type=Path, help="folder of validation masks (optional)")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the data held out for validation when no validation folders "
        "are given (default 0.2)",
    )
    data.add_argument(
        "--num-classes",
        type=int,
        help="number of classes of folder data (default: read from the masks)",
    )
    data.add_argument(
        "--grayscale",
        action="store_true",
        help="read folder images as one-channel grayscale (the default when every "
        "training image is stored as grayscale)",
    )
    data.add_argument(
        "--mask-threshold",
        type=int,
        metavar="VALUE",
        help="binarise folder masks: class 1 where the mask value >= VALUE, else 0 "
        "(for anti-aliased or JPEG-saved binary masks, e.g. 128)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        help="training crop size (pixels, at --scale), or synthetic image size",
    )
    data.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize folder and real images by this factor for training, evaluation "
        "and prediction alike (default 1.0: native resolution; e.g. 0.5 for "
        "large images with large structures); predictions come back at the "
        "original size",
    )
    data.add_argument("--num-train", type=int, help="number of synthetic training images")
    data.add_argument("--num-val", type=int, help="number of synthetic validation images")
    data.add_argument(
        "--download",
        action="store_true",
        help="allow downloading a real data set into COURSE_DATA_DIR",
    )
    data.add_argument(
        "--workers", type=int, default=0, help="data-loader worker processes (default 0)"
    )

    model = train.add_argument_group("model")
    model.add_argument(
        "--model", default="unet", help="model name from course_lib.models.MODELS (default unet)"
    )
    model.add_argument("--base-channels", type=int, help="U-Net width of the first level")
    model.add_argument("--depth", type=int, help="U-Net number of poolings")
    model.add_argument(
        "--backbone",
        help="encoder of fcn/deeplabv3/deeplabv3plus "
        "(default resnet18 in fast mode, resnet50 in full mode)",
    )
    model.add_argument(
        "--pretrained",
        action="store_true",
        help="start the encoder from ImageNet weights (downloads them once)",
    )

    optim = train.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, help="number of epochs")
    optim.add_argument(
        "--minutes",
        type=float,
        help="train for this many minutes of wall time instead of a number of "
        "epochs: the learning-rate schedule spans the budget and the checkpoint "
        "is written at the end (with --epochs too: whichever ends first)",
    )
    optim.add_argument("--batch-size", type=int, help="images per batch (per process)")
    optim.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    optim.add_argument(
        "--loss",
        choices=LOSSES,
        default="auto",
        help="auto = bce_dice for two classes (one output channel), ce_dice otherwise",
    )
    optim.add_argument(
        "--schedule",
        choices=("poly", "cosine", "constant"),
        default="poly",
        help="learning-rate schedule, stepped per batch (default poly, as DeepLab)",
    )
    optim.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    optim.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        default="auto",
        help="mixed precision (auto: bf16/fp16 on CUDA, off on the CPU)",
    )
    optim.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    optim.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation mIoU",
    )

    run = train.add_argument_group("run")
    run.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="output folder for last.pt, metrics.json, curves.png, predictions.png",
    )
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an OUT that already holds a checkpoint (replacing it)",
    )
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: best available")
    run.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch (default: 1 in fast mode, whose tensors are too "
        "small to gain from more and which then runs steadily on a busy machine; "
        "PyTorch's default in full mode)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--distributed",
        action="store_true",
        help="DistributedDataParallel; launch with torchrun --nproc_per_node=N",
    )
    run.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="with --distributed on GPUs: synchronise BatchNorm statistics",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of a checkpoint on a validation set",
        description="Evaluate a checkpoint on the validation data it "
        "was trained with, or on other data.",
    )
    evaluate.add_argument(
        "--checkpoint", type=Path, required=True, help="a last.pt written by train"
    )
    evaluate.add_argument(
        "--dataset",
        choices=SYNTHETIC + REAL,
        help="evaluate on this data set (default: the one of the checkpoint)",
    )
    evaluate.add_argument("--images", type=Path, help="folder of images to evaluate on")
    evaluate.add_argument("--masks", type=Path, help="folder of the matching masks")
    evaluate.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    evaluate.add_argument(
        "--device", choices=("cuda", "mps", "cpu"), help="default: best available"
    )
    evaluate.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    evaluate.add_argument(
        "--download", action="store_true", help="allow downloading a real data set"
    )

    predict = commands.add_parser(
        "predict",
        help="colour masks and overlays for a folder of images",
        description="Segment every image of a folder; writes NAME_mask.png "
        "(colours), NAME_overlay.png and NAME_labels.png "
        "(class ids).",
    )
    predict.add_argument(
        "--checkpoint", type=Path, required=True, help="a last.pt written by train"
    )
    predict.add_argument("--input", type=Path, required=True, help="folder of images")
    predict.add_argument("--output", type=Path, required=True, help="folder for the results")
    predict.add_argument(
        "--window", type=int, help="sliding-window size (default: the one the checkpoint records)"
    )
    predict.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1)")
    predict.add_argument("--tta", action="store_true", help="average with the horizontal flip")
    predict.add_argument("--device", choices=("cuda", "mps", "cpu"), help="default: best available")
    return parser
