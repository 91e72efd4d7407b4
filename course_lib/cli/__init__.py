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

Parsing lives in `parser.py`, the data a run uses in `data.py`, the run folder (checkpoint,
metrics, figures) in `run_folder.py`, and each command in a module of its own.
"""

from __future__ import annotations

import sys

from course_lib.cli.data import UsageError
from course_lib.cli.evaluate import evaluate_command
from course_lib.cli.parser import build_parser
from course_lib.cli.predict import predict_command
from course_lib.cli.run_folder import CHECKPOINT_FILE
from course_lib.cli.train import train_command

__all__ = ["CHECKPOINT_FILE", "build_parser", "main"]

_COMMANDS = {"train": train_command, "evaluate": evaluate_command, "predict": predict_command}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m course_lib`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        command = _COMMANDS[args.command]
        return command(args)
    except UsageError as error:
        print(f"python -m course_lib: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        message = " ".join(str(error).split())
        print(f"python -m course_lib: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2
