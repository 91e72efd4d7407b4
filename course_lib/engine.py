"""The training engine: one epoch of training, a data-set evaluation, and `fit` that runs both.

Plain functions, no trainer class: a learner can read the loop top to bottom.

    history = engine.fit(model, train_loader, val_loader, loss_fn=loss, num_classes=2, epochs=10,
                         options=engine.FitOptions(lr=3e-3), checkpoint="runs/demo/last.pt")

Tensor contract: loaders yield `(images, targets)` with images `(N, C, H, W)` float and targets
`(N, H, W)` int64; the model returns logits `(N, K, H, W)` (or `(N, 1, H, W)` for a binary model,
then `num_classes=2`); `loss_fn(logits, targets)` returns a scalar.

What `fit` adds around the two loops:
- AdamW by default and a per-step learning-rate schedule (`schedules`: DeepLab's poly, cosine,
  linear warm-up);
- mixed precision on CUDA (bfloat16 when the GPU supports it, else float16 with a GradScaler);
  full float32 on the CPU;
- gradient clipping, early stopping on a validation metric, history of every epoch;
- a checkpoint after each epoch (atomic, with optimiser, scheduler, scaler and RNG states) and
  `Checkpointing(path, resume=path)` that continues to exactly the result of an uninterrupted run;
- a guard that stops on a NaN/inf loss before the bad step reaches the weights, leaving the last
  good checkpoint on disk;
- `torch.distributed` awareness: the same function runs under torchrun with DDP (see
  `course_lib.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from course_lib import distributed, inference
from course_lib.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from course_lib.metrics import ConfusionMatrix, summarize
from course_lib.schedules import SCHEDULES, schedule_factor
from course_lib.utils import get_device, interactive, progress_bar, seed_everything

__all__ = [
    "NonFiniteLossError",
    "resolve_amp",
    "train_one_epoch",
    "evaluate",
    "FitOptions",
    "Checkpointing",
    "fit",
]

_MONITORS = {
    "miou": "max",
    "dice": "max",
    "dice_foreground": "max",
    "pixel_accuracy": "max",
    "val_loss": "min",
}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; raised before the optimiser step, weights are untouched."""


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full float32.

    amp: "auto" (bf16 on a GPU that supports it, else fp16; off on the CPU), "bf16", "fp16",
    or "off" / False / None.
    """
    device = torch.device(device)
    if amp in ("off", False, None):
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        # A T4 (Colab's free GPU) "supports" bfloat16 only by emulation, slower than float16's
        # tensor cores: ask for native support.
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError(f"amp='fp16' needs a CUDA device, got {device}; use 'bf16' or 'off'")
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress_enabled(progress: bool | None) -> bool:
    """None -> on in a terminal or a notebook, off when output goes to a log file (CI)."""
    if not distributed.is_main_process():
        return False
    if progress is None:
        return interactive()
    return bool(progress)


def _batch_bar(loader, description: str, progress: bool | None):
    """A progress bar updated by hand: wrapping the loader itself would let tqdm create an extra
    loader iterator, which draws from the global RNG and changes the shuffling of the run."""
    total = len(loader) if hasattr(loader, "__len__") else None
    return progress_bar(
        total=total, desc=description, leave=False, disable=not _progress_enabled(progress)
    )


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            "a loader must yield (images, targets) pairs; got "
            f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
        )
    return batch[0], batch[1]


def train_one_epoch(
    model: nn.Module,
    loader,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress: bool | None = False,
    description: str = "train",
    deadline: float | None = None,
) -> float:
    """One pass over `loader` with an optimiser step per batch; returns the mean loss per image.

    The scheduler (if any) is stepped after every optimiser step. `deadline` (a `time.monotonic()`
    value) ends the pass early, after the first step that finishes past it. A NaN/inf loss raises
    `NonFiniteLossError` before `backward`, so the weights keep their last finite values.
    Under torch.distributed the returned mean is over the images of all processes.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    image_count = torch.zeros((), dtype=torch.float64, device=device)
    bar = _batch_bar(loader, description, progress)
    for step, batch in enumerate(loader):
        images, targets = _unpack(batch)
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits = model(images)  # (N, K, H, W)
            loss = loss_fn(logits, targets)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(f"the loss is {loss.item()} at batch {step} of this epoch")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach().double() * images.shape[0]
        image_count += images.shape[0]
        if not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update(1)
        if deadline is not None and time.monotonic() >= deadline:
            break
    bar.close()
    distributed.all_reduce_sum(loss_sum)
    distributed.all_reduce_sum(image_count)
    if image_count.item() == 0:
        raise ValueError("the training loader yielded no batch")
    return float(loss_sum / image_count)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    device: torch.device | str,
    *,
    loss_fn: Callable | None = None,
    ignore_index: int | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool | None = False,
    preprocessing: Any = None,
) -> dict:
    """Data-set metrics from one confusion matrix accumulated over every batch (and process).

    With `preprocessing` (a `preprocessing.Preprocessing`), each batch of whole images goes
    through `inference.segment` at the recorded scale and window, with its decision threshold:
    the numbers are those of the masks `predict` writes. Without it, `model(images)` is scored.

    Returns a dict with "miou", "iou_per_class", "dice" (mean over classes), "dice_per_class",
    "dice_foreground" (mean over classes 1..K-1), "pixel_accuracy", precision/recall per class,
    "confusion_matrix" (K, K) int64 on the CPU, and "loss" (mean per image) when `loss_fn` is given.
    Summing counts first is what makes these data-set numbers: averaging per-batch scores would
    weigh a batch with a few pixels of a class as much as one full of them. `ignore_index=None`
    takes the one the loader's data set declares (its `ignore_index` attribute), if any.
    """
    device = torch.device(device)
    if ignore_index is None:
        ignore_index = _declared_ignore_index(loader)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    threshold = preprocessing.threshold if preprocessing is not None else 0.5
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, threshold=threshold)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    image_count = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    bar = _batch_bar(loader, "evaluate", progress)
    for batch in loader:
        images, targets = _unpack(batch)
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            if preprocessing is None:
                logits = model(images)  # (N, K, H, W)
            else:
                logits = inference.segment(
                    model, images, window=preprocessing.window, scale=preprocessing.scale
                )  # (N, K, H, W)
            if loss_fn is not None:
                loss_sum += loss_fn(logits, targets).double() * images.shape[0]
        image_count += images.shape[0]
        matrix.update(logits.float(), targets)
        bar.update(1)
    bar.close()
    model.train(was_training)
    matrix.all_reduce()
    distributed.all_reduce_sum(loss_sum)
    distributed.all_reduce_sum(image_count)
    cm = matrix.compute().cpu()  # (K, K)
    results = summarize(cm)
    foreground = torch.tensor(results["dice_per_class"][1:], dtype=torch.float64)
    foreground = foreground[~torch.isnan(foreground)]
    results["dice_foreground"] = float(foreground.mean()) if foreground.numel() else math.nan
    results["confusion_matrix"] = cm
    if loss_fn is not None:
        results["loss"] = float(loss_sum / image_count) if image_count.item() else math.nan
    return results


def _declared_ignore_index(loader) -> int | None:
    """The `ignore_index` that the loader's data set declares (through Subset/ConcatDataset)."""
    dataset = getattr(loader, "dataset", None)
    while dataset is not None and not hasattr(dataset, "ignore_index"):
        if isinstance(dataset, torch.utils.data.Subset):
            dataset = dataset.dataset
        elif isinstance(dataset, torch.utils.data.ConcatDataset):
            dataset = dataset.datasets[0]
        else:
            return None
    return getattr(dataset, "ignore_index", None)


def _loader_generators(loader) -> dict[str, torch.Generator]:
    """Generators that decide the shuffling of `loader` (restored on resume)."""
    found = {}
    if getattr(loader, "generator", None) is not None:
        found["loader"] = loader.generator
    if getattr(getattr(loader, "sampler", None), "generator", None) is not None:
        found["sampler"] = loader.sampler.generator
    return found


def _is_better(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _epochs_since_best(
    values: list[float], mode: str, min_delta: float
) -> tuple[float | None, int]:
    best, stale = None, 0
    for value in values:
        if _is_better(value, best, mode, min_delta):
            best, stale = value, 0
        else:
            stale += 1
    return best, stale


@dataclass(frozen=True)
class FitOptions:
    """How `fit` trains, validates and reports; change only what you need: `FitOptions(lr=5e-3)`.

    lr, weight_decay: the default optimiser's (AdamW). schedule: "poly" | "cosine" | "constant",
    stepped per batch, after `warmup_steps` of linear warm-up. amp: see `resolve_amp`.
    grad_clip: largest gradient norm (None: no clipping). channels_last: NHWC memory format.
    early_stopping: stop after that many validations without `monitor` ("miou", "dice",
    "dice_foreground", "pixel_accuracy" or "val_loss") improving by more than `min_delta`.
    ignore_index: target value left out of the metrics; None takes the one the validation data
    set declares (an `ignore_index` attribute, as `SegmentationFolder` and the real data sets have).
    seed: `seed_everything(seed)` first (seed the model's initialisation yourself, before building
    it). progress: tqdm bars (None = auto). verbose: one printed line per validation.
    preprocessing: a `preprocessing.Preprocessing`; validation then scores whole images through
    `inference.segment` (see `evaluate`), and the checkpoint stores it as `extra["preprocessing"]`.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"
    warmup_steps: int = 0
    amp: str | bool | None = "auto"
    grad_clip: float | None = None
    channels_last: bool = False
    early_stopping: int | None = None
    monitor: str = "miou"
    min_delta: float = 0.0
    ignore_index: int | None = None
    seed: int | None = None
    progress: bool | None = None
    verbose: bool = False
    preprocessing: Any = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.monitor not in _MONITORS:
            raise ValueError(f"monitor must be one of {tuple(_MONITORS)}, got {self.monitor!r}")
        patience = self.early_stopping
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(
                f"early_stopping must be a positive int (patience in epochs) or None, "
                f"got {patience!r}"
            )


@dataclass(frozen=True)
class Checkpointing:
    """Where `fit` saves the run after every validation, and which saved run it continues.

    path: file written atomically (by rank 0) after every validation; None writes none.
    resume: a checkpoint of this run (often `path` itself): training continues from its epoch
    with the optimiser, scheduler, scaler, history and RNG states it holds, so 2 + 2 epochs give
    the weights and history of 4 straight epochs. model_name / model_kwargs / extra are stored so
    that `models.build_model(model_name, **model_kwargs)` rebuilds the model.
    """

    path: str | Path | None = None
    resume: str | Path | None = None
    model_name: str | None = None
    model_kwargs: dict | None = None
    extra: dict | None = None


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    *,
    loss_fn: Callable,
    num_classes: int,
    epochs: int | None = None,
    minutes: float | None = None,
    device: torch.device | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    options: FitOptions | None = None,
    checkpoint: Checkpointing | str | Path | None = None,
) -> dict[str, list]:
    """Train for `epochs` epochs (or `minutes` of wall time), validating as it goes; returns the history.

    history: dict of per-validation lists "epoch" (epochs completed), "lr" (at that point),
    "train_loss" (mean since the last validation), "val_loss", "miou", "dice", "dice_foreground",
    "pixel_accuracy", "iou_per_class", "dice_per_class".

    optimizer: default AdamW(options.lr, options.weight_decay). options: `FitOptions` (schedule,
    mixed precision, clipping, early stopping, seed, progress, ...). checkpoint: a file to write
    after every validation, or `Checkpointing(path, resume=..., ...)` to also continue a run.

    minutes: a wall-time budget instead of (or on top of) `epochs`: the learning-rate schedule runs
    over the budget (`schedules.TimeBudgetFactor`), the last epoch ends at the first step past it,
    validation runs after each quarter of the budget (whole-image validation is not free), and the
    checkpoint is written each time, with the wall time spent so far (`extra["seconds"]`); a
    resumed run counts that time against the budget.
    """
    _check_fit_arguments(epochs, minutes, num_classes, loss_fn, train_loader)
    options = options or FitOptions()
    if not isinstance(checkpoint, Checkpointing):
        checkpoint = Checkpointing(path=checkpoint)
    if options.seed is not None:
        seed_everything(options.seed)
    device = get_device() if device is None else torch.device(device)
    amp_dtype = resolve_amp(options.amp, device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=options.lr, weight_decay=options.weight_decay
        )
    budget = None if minutes is None else 60.0 * minutes  # seconds
    factor = schedule_factor(
        options.schedule,
        warmup_steps=options.warmup_steps,
        total_seconds=budget,
        total_steps=None if budget is not None else epochs * len(train_loader),
    )
    # A plain function, not the factor object: the checkpoint then keeps only the step count, and
    # a resumed run follows this call's schedule (e.g. one extended to more epochs).
    scheduler = LambdaLR(optimizer, lambda step: factor(step))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    generators = _loader_generators(train_loader)
    ignore_index = options.ignore_index
    if ignore_index is None:  # e.g. Oxford-IIIT Pet with boundary="ignore" declares 255
        ignore_index = _declared_ignore_index(val_loader)
    extra = dict(checkpoint.extra or {})
    if options.preprocessing is not None:
        extra["preprocessing"] = options.preprocessing.to_dict()

    history, start_epoch, spent_before = {key: [] for key in _HISTORY_KEYS}, 0, 0.0
    if checkpoint.resume is not None:
        state = load_checkpoint(
            checkpoint.resume,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            map_location=device,
        )
        start_epoch, history = state["epoch"], state["history"]
        restore_rng_state(state["rng"], generators)
        spent_before = float(state.get("extra", {}).get("seconds", 0.0))  # wall time already used
    started = time.monotonic()
    deadline = None if budget is None else started + budget - spent_before
    if budget is not None:
        factor.spent_before = spent_before
        factor.start()
    mode = _MONITORS[options.monitor]
    best, stale = _epochs_since_best(history.get(options.monitor, []), mode, options.min_delta)
    save_to = Path(checkpoint.path) if checkpoint.path is not None else None
    show = _progress_enabled(options.progress)
    if budget is None:
        bar = progress_bar(total=epochs, initial=start_epoch, desc="epochs", disable=not show)
    else:
        bar = progress_bar(
            total=round(budget),
            initial=round(min(spent_before, budget)),
            unit="s",
            desc="minutes budget",
            disable=not show,
        )

    epoch, losses, last_check = start_epoch, [], started
    while (epochs is None or epoch < epochs) and (deadline is None or time.monotonic() < deadline):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        try:
            losses.append(
                train_one_epoch(
                    model,
                    train_loader,
                    loss_fn,
                    optimizer,
                    device,
                    scheduler=scheduler,
                    scaler=scaler,
                    amp_dtype=amp_dtype,
                    grad_clip=options.grad_clip,
                    channels_last=options.channels_last,
                    progress=show and budget is None,
                    description=f"epoch {epoch + 1}",
                    deadline=deadline,
                )
            )
        except NonFiniteLossError as error:
            raise _stopped_by_non_finite_loss(
                error, epoch, save_to, history, start_epoch
            ) from error
        epoch += 1
        now = time.monotonic()
        if budget is not None:
            bar.update(round(min(spent_before + now - started, budget)) - bar.n)
            finished = now >= deadline or (epochs is not None and epoch >= epochs)
            if not finished and now - last_check < budget / 4:
                continue  # validate four times over a time budget
        last_check = now
        results = evaluate(
            model,
            val_loader,
            num_classes,
            device,
            loss_fn=loss_fn,
            ignore_index=ignore_index,
            amp_dtype=amp_dtype,
            channels_last=options.channels_last,
            progress=False,
            preprocessing=options.preprocessing,
        )
        seconds = spent_before + time.monotonic() - started
        record = _history_record(epoch, optimizer, losses, results)
        losses = []
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        if budget is None:
            bar.update(1)
        if show:
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", miou=f"{results['miou']:.3f}")
        if options.verbose and distributed.is_main_process():
            total = f"/{epochs}" if epochs is not None else ""
            clock = f"{seconds:.0f} s  " if budget is not None else ""
            print(
                f"epoch {epoch}{total}  {clock}"
                f"train_loss {record['train_loss']:.4f}  val_loss {results['loss']:.4f}  "
                f"miou {results['miou']:.4f}  dice {results['dice']:.4f}  "
                f"lr {record['lr']:.2e}",
                flush=True,
            )
        if save_to is not None and distributed.is_main_process():
            save_checkpoint(
                save_to,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                epoch=epoch,
                history=history,
                rng=capture_rng_state(generators),
                model_name=checkpoint.model_name,
                model_kwargs=checkpoint.model_kwargs,
                extra={**extra, "seconds": seconds},
            )
        value = record[options.monitor]
        if _is_better(value, best, mode, options.min_delta):
            best, stale = value, 0
        else:
            stale += 1
        if options.early_stopping is not None and stale >= options.early_stopping:
            if options.verbose and distributed.is_main_process():
                print(
                    f"early stopping: {options.monitor} did not improve for {stale} validations "
                    f"(best {best:.4f})",
                    flush=True,
                )
            break
    bar.close()
    distributed.barrier()
    return history


_HISTORY_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "miou",
    "dice",
    "dice_foreground",
    "pixel_accuracy",
    "iou_per_class",
    "dice_per_class",
)


def _check_fit_arguments(epochs, minutes, num_classes, loss_fn, train_loader) -> None:
    if epochs is None and minutes is None:
        raise ValueError("give epochs, minutes, or both")
    if epochs is not None and (
        not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1
    ):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
        raise ValueError(f"minutes must be a positive number of minutes, got {minutes!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (label classes; a binary model with one "
            f"output channel has num_classes=2), got {num_classes!r}"
        )
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets), got {loss_fn!r}")
    if len(train_loader) == 0:
        raise ValueError("train_loader is empty: no batch to train on")


def _history_record(epoch: int, optimizer, losses: list[float], results: dict) -> dict:
    """One entry of every history list, after a validation."""
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": sum(losses) / len(losses),
        "val_loss": results["loss"],
        **{key: results[key] for key in _HISTORY_KEYS[4:]},
    }


def _stopped_by_non_finite_loss(error, epoch: int, save_to, history: dict, start_epoch: int):
    """The error `fit` raises on a NaN/inf loss: what was kept and what to try."""
    if save_to is not None and save_to.exists():
        last_good = history["epoch"][-1] if history["epoch"] else start_epoch
        kept = f"the last good checkpoint {save_to} (epoch {last_good}) is kept"
    else:
        kept = "no checkpoint was written (pass checkpoint= to keep one)"
    return NonFiniteLossError(
        f"training stopped in epoch {epoch + 1}: {error}; {kept}. Lower the learning rate, "
        f"set grad_clip, or check the data and the loss for invalid values."
    )
