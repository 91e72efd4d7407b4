"""Own data at the same wall time: the command line with its defaults against a plain PyTorch loop.

The data are a generated folder of EM membrane slices (course_lib.data.membranes, ISBI 2012 style:
512x512 grayscale, 0/255 masks, thin membranes on ~20 % of the pixels). Two ways to train on it,
each for the same number of minutes:

- the command line exactly as a learner would call it on their own folder, with no option but
  the folders, the time and the output (COURSE_MODE=fast):
      python -m course_lib train --images TRAIN/images --masks TRAIN/masks --minutes M --out RUN
      python -m course_lib predict --checkpoint RUN/last.pt --input TEST/images --output PRED
- a reference loop written out below (`reference_run`): U-Net (base 16, depth 4), random 256x256
  crops at native resolution with flips, BCE + Dice, Adam lr 1e-3, batch 8, images normalised by
  the training set's mean and std, then each test image predicted whole at native resolution.

Both are scored the same way, with numpy and nothing from course_lib: Dice of the membrane class
and pixel error (the share of wrong pixels, ISBI's simplest measure), pooled over the test
pixels. The ratio CLI / reference of the Dice says how much of what a plain loop reaches in the
same time the defaults give a learner. The reference uses PyTorch's default threads and the
best device; the command line chooses its own (its fast-mode default is one CPU thread).

    python benchmarks/bench_own_data.py                       # 3 minutes each, 24 train / 6 test
    python benchmarks/bench_own_data.py --minutes 1 --num-train 8 --num-test 2 --keep
    python benchmarks/bench_own_data.py --data /tmp/em        # reuse (or create) a data folder
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from course_lib.data import write_membrane_folder
from course_lib.models import build_model

REPO = Path(__file__).resolve().parents[1]
CROP, BATCH, LR = 256, 8, 1e-3


def read_folder(folder: Path) -> dict[str, np.ndarray]:
    """Every PNG of `folder` as a uint8 (H, W) array, by file stem, in name order."""
    arrays = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            arrays[path.stem] = np.asarray(image.convert("L"))
    return arrays


def reference_run(data: Path, seconds: float, *, seed: int = 0) -> dict:
    """Train the plain loop for `seconds` of wall time on data/train, predict data/test.

    Returns the membrane predictions (H, W) bool by stem, the seconds spent in the training loop
    and in all (reading, training, predicting) and the number of optimiser steps.
    """
    start_all = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = np.stack(list(read_folder(data / "train/images").values())).astype(np.float32) / 255
    masks = np.stack(list(read_folder(data / "train/masks").values())) == 255  # (N, H, W) bool
    mean, std = float(images.mean()), float(images.std())
    x_all = torch.from_numpy((images - mean) / std)[:, None]  # (N, 1, H, W)
    y_all = torch.from_numpy(masks.astype(np.float32))[:, None]  # (N, 1, H, W)
    n, _, height, width = x_all.shape
    crop = min(CROP, height, width)
    model = build_model("unet", in_channels=1, num_classes=1, base_channels=16, depth=4).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    model.train()
    start, steps = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        xs, ys = [], []
        for i in rng.integers(0, n, BATCH):
            top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
            flip = [d for d, f in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if f]
            xs.append(
                x_all[i, :, top : top + crop, left : left + crop].flip(flip)
            )  # (1, crop, crop)
            ys.append(y_all[i, :, top : top + crop, left : left + crop].flip(flip))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)  # (B, 1, crop, crop)
        logits = model(x)  # (B, 1, crop, crop)
        probs = torch.sigmoid(logits)
        dice = (2 * (probs * y).sum() + 1) / (probs.sum() + y.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (1 - dice)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.monotonic() - start

    model.eval()
    predictions = {}
    with torch.no_grad():
        for stem, image in read_folder(data / "test/images").items():
            x = torch.from_numpy((image.astype(np.float32) / 255 - mean) / std)[None, None]
            h, w = image.shape
            pad = (0, -w % 16, 0, -h % 16)  # right and bottom, to a multiple of 2**depth
            logits = model(F.pad(x, pad, mode="reflect").to(device))[0, 0, :h, :w]  # (H, W)
            predictions[stem] = (logits > 0).cpu().numpy()  # sigmoid > 0.5
    return {
        "predictions": predictions,
        "train_s": train_s,
        "steps": steps,
        "wall_s": time.monotonic() - start_all,
        "device": device.type,
    }


def score(predictions: dict[str, np.ndarray], mask_folder: Path) -> tuple[float, float]:
    """Membrane Dice and pixel error of (H, W) bool predictions against the 0/255 masks."""
    truths = {stem: mask == 255 for stem, mask in read_folder(mask_folder).items()}
    if sorted(predictions) != sorted(truths):
        raise ValueError(f"predictions for {sorted(predictions)} but masks for {sorted(truths)}")
    overlap = predicted = actual = wrong = total = 0
    for stem, truth in truths.items():
        prediction = predictions[stem]
        if prediction.shape != truth.shape:
            raise ValueError(
                f"{stem}: prediction {prediction.shape} is not at the mask's "
                f"native size {truth.shape}"
            )
        overlap += int((prediction & truth).sum())
        predicted, actual = predicted + int(prediction.sum()), actual + int(truth.sum())
        wrong, total = wrong + int((prediction != truth).sum()), total + truth.size
    return 2 * overlap / max(predicted + actual, 1), wrong / total


def cli_run(data: Path, work: Path, minutes: float) -> dict:
    """Train and predict with the command line; predictions by stem, or the error's last lines."""
    env = dict(os.environ, COURSE_MODE="fast")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run, output = work / "cli_run", work / "cli_predictions"
    commands = {
        "train": [
            "train",
            "--images",
            data / "train/images",
            "--masks",
            data / "train/masks",
            "--minutes",
            f"{minutes:g}",
            "--out",
            run,
        ],
        "predict": [
            "predict",
            "--checkpoint",
            run / "last.pt",
            "--input",
            data / "test/images",
            "--output",
            output,
        ],
    }
    result = {}
    for name, options in commands.items():
        command = [sys.executable, "-m", "course_lib", *map(str, options)]
        print(f"  $ {' '.join(command[1:])}", flush=True)
        start = time.monotonic()
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        result[f"{name}_s"] = time.monotonic() - start
        (work / f"cli_{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = "\n    ".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            return {**result, "error": f"{name} exited {done.returncode}:\n    {tail}"}
    labels = read_folder(output)
    result["predictions"] = {
        stem.removesuffix("_labels"): array == 1
        for stem, array in labels.items()
        if stem.endswith("_labels")
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="wall-time budget of each training (default 3)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="data folder: used as it is when it holds train/images, else written "
        "there (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run and prediction folders")
    parser.add_argument("--size", type=int, default=512, help="generated slice size (default 512)")
    parser.add_argument("--num-train", type=int, default=24, help="generated training slices")
    parser.add_argument("--num-test", type=int, default=6, help="generated test slices")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the reference")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")

    work = Path(tempfile.mkdtemp(prefix="bench_own_data_"))
    data = args.data or work / "data"
    if (data / "train/images").is_dir():
        print(f"data: using the existing folder {data}")
    else:
        start = time.monotonic()
        write_membrane_folder(
            data, num_train=args.num_train, num_test=args.num_test, size=args.size, seed=args.seed
        )
        print(
            f"data: wrote {args.num_train} train / {args.num_test} test slices of {args.size} px "
            f"to {data} in {time.monotonic() - start:.1f} s"
        )
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; budget {args.minutes:g} min of training each"
    )

    print("command line (COURSE_MODE=fast, default options):")
    cli = cli_run(data, work, args.minutes)
    print(f"reference loop ({torch.get_num_threads()} threads):", flush=True)
    reference = reference_run(data, 60 * args.minutes, seed=args.seed)
    ref_dice, ref_error = score(reference["predictions"], data / "test/masks")

    print(f"\n{'method':<32}{'train s':>9}{'all s':>8}{'Dice':>8}{'pixel err':>11}{'Dice/ref':>10}")
    print(
        f"{'reference loop (' + reference['device'] + ')':<32}{reference['train_s']:>9.1f}"
        f"{reference['wall_s']:>8.1f}{ref_dice:>8.4f}{ref_error:>11.4f}{1.0:>10.3f}"
    )
    status = 0
    if "error" in cli:
        print(f"{'command line':<32}  failed: {cli['error']}")
        status = 1
    else:
        cli_dice, cli_error = score(cli["predictions"], data / "test/masks")
        print(
            f"{'command line (defaults)':<32}{cli['train_s']:>9.1f}"
            f"{cli['train_s'] + cli['predict_s']:>8.1f}{cli_dice:>8.4f}{cli_error:>11.4f}"
            f"{cli_dice / max(ref_dice, 1e-12):>10.3f}"
        )
    print(
        f"\nreference: {reference['steps']} steps of {BATCH} crops of {CROP} px in "
        f"{reference['train_s']:.1f} s; 'train s' of the command line is the wall time of the "
        f"whole `train` process (start-up, validation and plots included)"
    )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
