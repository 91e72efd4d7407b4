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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from course_lib import distributed, inference
from course_lib.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from course_lib.metrics import ConfusionMatrix, summarize
from course_lib.preprocessing import Preprocessing
from course_lib.schedules import SCHEDULES, LRFactor, schedule_factor
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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
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


def _batch_bar(loader: Iterable[Any], description: str, progress: bool | None) -> Any:
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
    loader: Iterable[Any],
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
    loader: Iterable[Any],
    num_classes: int,
    device: torch.device | str,
    *,
    loss_fn: Callable | None = None,
    ignore_index: int | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool | None = False,
    preprocessing: Preprocessing | None = None,
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


def _declared_ignore_index(loader: Iterable[Any]) -> int | None:
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


def _loader_generators(loader: Iterable[Any]) -> dict[str, torch.Generator]:
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
    preprocessing: Preprocessing | None = None

    def __post_init__(self) -> None:
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
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
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
    clock = _Clock(minutes)  # the wall-time budget, if any: deadline, when to validate
    # The model on its device, AdamW unless given, the per-step schedule, the fp16 grad scaler.
    run = _set_up(model, train_loader, epochs, device, optimizer, options, clock)
    history, start_epoch = _resume(checkpoint.resume, run, clock)  # empty and 0 for a new run
    clock.start(run.factor)
    ignore_index = options.ignore_index
    if ignore_index is None:  # e.g. Oxford-IIIT Pet with boundary="ignore" declares 255
        ignore_index = _declared_ignore_index(val_loader)
    stopper = _EarlyStopping(options, history)
    show = _progress_enabled(options.progress)
    bar = _FitBar(epochs, start_epoch, clock, show)

    epoch, losses = start_epoch, []
    while (epochs is None or epoch < epochs) and clock.time_left():
        try:
            losses.append(_train_epoch(run, train_loader, loss_fn, epoch, options, clock, show))
        except NonFiniteLossError as error:
            raise _stopped_by_non_finite_loss(
                error, epoch, checkpoint.path, history, start_epoch
            ) from error
        epoch += 1
        bar.after_epoch()
        if not clock.validation_due(epoch, epochs):
            continue  # over a time budget: after each quarter of it, and at the end
        results = evaluate(
            run.model,
            val_loader,
            num_classes,
            run.device,
            loss_fn=loss_fn,
            ignore_index=ignore_index,
            amp_dtype=run.amp_dtype,
            channels_last=options.channels_last,
            progress=False,
            preprocessing=options.preprocessing,
        )
        seconds = clock.seconds()
        record = _history_record(epoch, run.optimizer, losses, results)
        losses = []
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        bar.after_validation(record)
        if options.verbose and distributed.is_main_process():
            print(_validation_line(record, epochs, clock, seconds), flush=True)
        if checkpoint.path is not None and distributed.is_main_process():
            _save(checkpoint, run, epoch, history, options, seconds)
        if stopper.should_stop(record[options.monitor]):  # options.early_stopping validations
            if options.verbose and distributed.is_main_process():
                print(stopper.message(), flush=True)
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


def _check_fit_arguments(
    epochs: Any, minutes: Any, num_classes: Any, loss_fn: Any, train_loader: DataLoader
) -> None:
    """Clear errors for `fit`'s arguments before anything is built."""
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


def _history_record(
    epoch: int, optimizer: torch.optim.Optimizer, losses: list[float], results: dict
) -> dict:
    """One entry of every history list, after a validation."""
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": sum(losses) / len(losses),
        "val_loss": results["loss"],
        **{key: results[key] for key in _HISTORY_KEYS[4:]},
    }


def _stopped_by_non_finite_loss(
    error: NonFiniteLossError,
    epoch: int,
    path: str | Path | None,
    history: dict[str, list],
    start_epoch: int,
) -> NonFiniteLossError:
    """The error `fit` raises on a NaN/inf loss: what was kept and what to try."""
    save_to = Path(path) if path is not None else None
    if save_to is not None and save_to.exists():
        last_good = history["epoch"][-1] if history["epoch"] else start_epoch
        kept = f"the last good checkpoint {save_to} (epoch {last_good}) is kept"
    else:
        kept = "no checkpoint was written (pass checkpoint= to keep one)"
    return NonFiniteLossError(
        f"training stopped in epoch {epoch + 1}: {error}; {kept}. Lower the learning rate, "
        f"set grad_clip, or check the data and the loss for invalid values."
    )


@dataclass
class _Run:
    """What `fit` trains with and what its checkpoint holds, set up once by `_set_up`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler | None
    factor: LRFactor  # the schedule's step -> factor (a clock over a time budget)
    device: torch.device
    amp_dtype: torch.dtype | None
    generators: dict[str, torch.Generator]  # the training loader's shuffling, for a resume


def _set_up(
    model: nn.Module,
    train_loader: DataLoader,
    epochs: int | None,
    device: torch.device | str | None,
    optimizer: torch.optim.Optimizer | None,
    options: FitOptions,
    clock: _Clock,
) -> _Run:
    """The model on its device, the optimiser (AdamW by default), the per-step schedule, the scaler."""
    device = get_device() if device is None else torch.device(device)
    amp_dtype = resolve_amp(options.amp, device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=options.lr, weight_decay=options.weight_decay
        )
    factor = schedule_factor(
        options.schedule,
        warmup_steps=options.warmup_steps,
        total_seconds=clock.budget,
        total_steps=None if clock.budget is not None else epochs * len(train_loader),
    )
    # A plain function, not the factor object: the checkpoint then keeps only the step count, and
    # a resumed run follows this call's schedule (e.g. one extended to more epochs).
    scheduler = LambdaLR(optimizer, lambda step: factor(step))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    generators = _loader_generators(train_loader)
    return _Run(model, optimizer, scheduler, scaler, factor, device, amp_dtype, generators)


def _resume(path: str | Path | None, run: _Run, clock: _Clock) -> tuple[dict[str, list], int]:
    """(history, epochs done): empty for a new run; for a resumed one, every state restored.

    The weights, optimiser, scheduler, scaler and RNG states (the loaders' shuffling included)
    come from the checkpoint at `path`, and the wall time it had spent goes on the clock.
    """
    if path is None:
        return {key: [] for key in _HISTORY_KEYS}, 0
    state = load_checkpoint(
        path,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        map_location=run.device,
    )
    restore_rng_state(state["rng"], run.generators)
    clock.spent_before = float(state.get("extra", {}).get("seconds", 0.0))
    return state["history"], state["epoch"]


class _Clock:
    """The wall time of a run: the budget of `fit(minutes=...)`, its deadline, when to validate.

    Without a budget it only counts seconds (for the checkpoint); `validation_due` is then
    always true.
    """

    def __init__(self, minutes: float | None) -> None:
        self.budget = None if minutes is None else 60.0 * minutes  # seconds
        self.spent_before = 0.0  # by the run this one resumes (set by `_resume`)
        self.started = self.last_check = 0.0
        self.deadline: float | None = None

    def start(self, factor: LRFactor) -> None:
        """Start counting now, and start the schedule's clock if it runs over the budget."""
        self.started = self.last_check = time.monotonic()
        if self.budget is not None:
            self.deadline = self.started + self.budget - self.spent_before
            factor.spent_before = self.spent_before
            factor.start()

    def seconds(self) -> float:
        """Wall time spent by the run so far, the resumed run's included."""
        return self.spent_before + time.monotonic() - self.started

    def time_left(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline

    def validation_due(self, epoch: int, epochs: int | None) -> bool:
        """After every epoch without a budget; with one, after each quarter of it and at the end."""
        now = time.monotonic()
        if self.budget is not None:
            finished = now >= self.deadline or (epochs is not None and epoch >= epochs)
            if not finished and now - self.last_check < self.budget / 4:
                return False
        self.last_check = now
        return True


class _FitBar:
    """The outer progress bar of `fit`: epochs done, or seconds of the time budget spent."""

    def __init__(self, epochs: int | None, start_epoch: int, clock: _Clock, show: bool) -> None:
        self.clock, self.show = clock, show
        if clock.budget is None:
            self.bar = progress_bar(
                total=epochs, initial=start_epoch, desc="epochs", disable=not show
            )
        else:
            self.bar = progress_bar(
                total=round(clock.budget),
                initial=round(min(clock.spent_before, clock.budget)),
                unit="s",
                desc="minutes budget",
                disable=not show,
            )

    def after_epoch(self) -> None:
        if self.clock.budget is not None:
            spent = round(min(self.clock.seconds(), self.clock.budget))
            self.bar.update(spent - self.bar.n)

    def after_validation(self, record: dict[str, Any]) -> None:
        if self.clock.budget is None:
            self.bar.update(1)
        if self.show:
            self.bar.set_postfix(loss=f"{record['train_loss']:.4f}", miou=f"{record['miou']:.3f}")

    def close(self) -> None:
        self.bar.close()


class _EarlyStopping:
    """Counts validations since `options.monitor` last improved by more than `min_delta`.

    The count starts from the history, so a resumed run stops where the uninterrupted one would.
    """

    def __init__(self, options: FitOptions, history: dict[str, list]) -> None:
        self.monitor, self.patience = options.monitor, options.early_stopping
        self.mode, self.min_delta = _MONITORS[options.monitor], options.min_delta
        self.best, self.stale = None, 0
        for value in history.get(options.monitor, []):
            self._update(value)

    def _update(self, value: float) -> None:
        if _is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.stale = value, 0
        else:
            self.stale += 1

    def should_stop(self, value: float) -> bool:
        """Count the validation that gave `value`; True once the patience has run out."""
        self._update(value)
        return self.patience is not None and self.stale >= self.patience

    def message(self) -> str:
        return (
            f"early stopping: {self.monitor} did not improve for {self.stale} validations "
            f"(best {self.best:.4f})"
        )


def _train_epoch(
    run: _Run,
    loader: DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epoch: int,
    options: FitOptions,
    clock: _Clock,
    show: bool,
) -> float:
    """`train_one_epoch` with the run's settings; a distributed sampler reshuffles per epoch."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return train_one_epoch(
        run.model,
        loader,
        loss_fn,
        run.optimizer,
        run.device,
        scheduler=run.scheduler,
        scaler=run.scaler,
        amp_dtype=run.amp_dtype,
        grad_clip=options.grad_clip,
        channels_last=options.channels_last,
        progress=show and clock.budget is None,
        description=f"epoch {epoch + 1}",
        deadline=clock.deadline,
    )


def _validation_line(
    record: dict[str, Any], epochs: int | None, clock: _Clock, seconds: float
) -> str:
    """The line `FitOptions(verbose=True)` prints after each validation."""
    total = f"/{epochs}" if epochs is not None else ""
    spent = f"{seconds:.0f} s  " if clock.budget is not None else ""
    return (
        f"epoch {record['epoch']}{total}  {spent}"
        f"train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  "
        f"miou {record['miou']:.4f}  dice {record['dice']:.4f}  "
        f"lr {record['lr']:.2e}"
    )


def _save(
    checkpoint: Checkpointing,
    run: _Run,
    epoch: int,
    history: dict[str, list],
    options: FitOptions,
    seconds: float,
) -> None:
    """Write the checkpoint: every state `_resume` restores, and what rebuilds the model."""
    extra = dict(checkpoint.extra or {})
    if options.preprocessing is not None:
        extra["preprocessing"] = options.preprocessing.to_dict()
    save_checkpoint(
        Path(checkpoint.path),
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        epoch=epoch,
        history=history,
        rng=capture_rng_state(run.generators),
        model_name=checkpoint.model_name,
        model_kwargs=checkpoint.model_kwargs,
        extra={**extra, "seconds": seconds},
    )
