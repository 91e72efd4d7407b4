"""Quality target of fast mode: a U-Net on the synthetic cells reaches Dice >= 0.90 within 60 s.

Trains the command line's fast-mode preset for `--dataset cells` (course_lib.cli.data.PRESETS) with the
same code path as `python -m course_lib train` (data, model, BCE + Dice loss, engine.fit) and
prints the foreground (nucleus) Dice on the validation split after every epoch, the seconds of
training at which it was reached, and the share of the 60-second budget used.

    python benchmarks/bench_quality.py                 # the preset, one CPU thread (the CLI default)
    python benchmarks/bench_quality.py --threads 2     # compare with more threads
    python benchmarks/bench_quality.py --epochs 10 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("COURSE_MODE", "fast")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from course_lib import engine, losses, models  # noqa: E402
from course_lib.cli.data import PRESETS, DataSpec, build_datasets  # noqa: E402
from course_lib.utils import seed_everything  # noqa: E402

BUDGET_S = 60.0
TARGET_DICE = 0.90


class _TimedLoader:
    """Wraps a loader and records the clock each time a full pass over it ends."""

    def __init__(self, loader):
        self.loader = loader
        self.finished: list[float] = []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        yield from self.loader
        self.finished.append(time.perf_counter())


def run(seed: int, epochs: int | None) -> dict:
    preset = dict(PRESETS[("cells", "fast")])
    if epochs is not None:
        preset["epochs"] = epochs
    spec = DataSpec(
        kind="cells",
        image_size=preset["image_size"],
        num_train=preset["num_train"],
        num_val=preset["num_val"],
        seed=seed,
    )
    start = time.perf_counter()
    seed_everything(seed)
    train_set, val_set, num_classes, _ = build_datasets(spec)
    data_s = time.perf_counter() - start
    torch.manual_seed(seed)
    model = models.UNet(
        in_channels=1, num_classes=1, base_channels=preset["base_channels"], depth=preset["depth"]
    )
    train_loader = DataLoader(
        train_set,
        batch_size=preset["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
    )
    val_loader = _TimedLoader(DataLoader(val_set, batch_size=32))
    start = time.perf_counter()
    history = engine.fit(
        model,
        train_loader,
        val_loader,
        epochs=preset["epochs"],
        loss_fn=losses.BCEDiceLoss(),
        num_classes=num_classes,
        device="cpu",
        options=engine.FitOptions(lr=preset["lr"], seed=seed, progress=False),
    )
    fit_s = time.perf_counter() - start
    seconds = [t - start for t in val_loader.finished]
    reached = next(
        (s for s, d in zip(seconds, history["dice_foreground"]) if d >= TARGET_DICE), None
    )
    return {
        "preset": preset,
        "data_s": data_s,
        "fit_s": fit_s,
        "seconds": seconds,
        "dice": history["dice_foreground"],
        "reached_s": reached,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds to run (default 0)"
    )
    parser.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1, as the command line in fast mode)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    passed = True
    for seed in args.seeds:
        result = run(seed, args.epochs)
        preset = result["preset"]
        print(
            f"\nseed {seed}: U-Net base_channels={preset['base_channels']} depth={preset['depth']} "
            f"({result['parameters']:,} parameters), {preset['num_train']} train / "
            f"{preset['num_val']} val images of {preset['image_size']} px, batch {preset['batch_size']}, "
            f"lr {preset['lr']}, {preset['epochs']} epochs, BCE + Dice"
        )
        print(f"  data rendered in {result['data_s']:.1f} s (not counted as training)")
        for epoch, (seconds, dice) in enumerate(zip(result["seconds"], result["dice"]), start=1):
            print(f"  epoch {epoch:2d}  {seconds:6.1f} s  foreground Dice {dice:.4f}")
        final = result["dice"][-1]
        print(
            f"  final Dice {final:.4f} after {result['fit_s']:.1f} s of training "
            f"= {result['fit_s'] / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget"
        )
        if result["reached_s"] is None:
            print(f"  target Dice >= {TARGET_DICE} NOT reached")
            passed = False
        else:
            print(
                f"  target Dice >= {TARGET_DICE} first reached at {result['reached_s']:.1f} s "
                f"= {result['reached_s'] / BUDGET_S:.2f} x budget"
            )
            passed &= result["fit_s"] <= BUDGET_S and final >= TARGET_DICE
    print("\nquality target met" if passed else "\nquality target NOT met on this machine/load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
