"""The training engine: one epoch of training, a data-set evaluation, and `fit` that runs both.

Plain functions, no trainer class: a learner can read the loop top to bottom.

    history = engine.fit(model, train_loader, val_loader, epochs=10, loss_fn=loss,
                         num_classes=2, checkpoint="runs/demo/last.pt")

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
  `resume=` that continues to exactly the result of an uninterrupted run;
- a guard that stops on a NaN/inf loss before the bad step reaches the weights, leaving the last
  good checkpoint on disk;
- `torch.distributed` awareness: the same function runs under torchrun with DDP (see
  `course_lib.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from course_lib import distributed, inference
from course_lib.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from course_lib.metrics import ConfusionMatrix, summarize
from course_lib.schedules import SCHEDULES, build_scheduler
from course_lib.utils import get_device, interactive, progress_bar, seed_everything

__all__ = [
    "NonFiniteLossError",
    "resolve_amp",
    "train_one_epoch",
    "evaluate",
    "fit",
]

_MONITORS = {"miou": "max", "dice": "max", "dice_foreground": "max", "pixel_accuracy": "max",
             "val_loss": "min"}


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
    return progress_bar(total=total, desc=description, leave=False, disable=not _progress_enabled(progress))


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError("a loader must yield (images, targets) pairs; got "
                        f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}")
    return batch[0], batch[1]


def train_one_epoch(model: nn.Module, loader, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    device: torch.device | str, *, scheduler: Any = None, scaler: Any = None,
                    amp_dtype: torch.dtype | None = None, grad_clip: float | None = None,
                    channels_last: bool = False, progress: bool | None = False,
                    description: str = "train", deadline: float | None = None) -> float:
    """One pass over `loader` with an optimiser step per batch; returns the mean loss per image.

    The scheduler (if any) is stepped after every optimiser step. `deadline` (a `time.monotonic()`
    value) ends the pass early, after the first step that finishes past it. A NaN/inf loss raises
    `NonFiniteLossError` before `backward`, so the weights keep their last finite values.
    Under torch.distributed the returned mean is over the images of all processes.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
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
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device | str, *,
             loss_fn: Callable | None = None, ignore_index: int | None = None,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             progress: bool | None = False, preprocessing: Any = None) -> dict:
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
                logits = inference.segment(model, images, window=preprocessing.window,
                                           scale=preprocessing.scale)  # (N, K, H, W)
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


def _epochs_since_best(values: list[float], mode: str, min_delta: float) -> tuple[float | None, int]:
    best, stale = None, 0
    for value in values:
        if _is_better(value, best, mode, min_delta):
            best, stale = value, 0
        else:
            stale += 1
    return best, stale


def fit(model: nn.Module, train_loader, val_loader, *, epochs: int | None, loss_fn: Callable,
        num_classes: int, optimizer: torch.optim.Optimizer | None = None,
        device: torch.device | str | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
        schedule: str = "poly", warmup_steps: int = 0, amp: str | bool | None = "auto",
        grad_clip: float | None = None, early_stopping: int | None = None, monitor: str = "miou",
        min_delta: float = 0.0, ignore_index: int | None = None, checkpoint: str | Path | None = None,
        resume: str | Path | None = None, seed: int | None = None, channels_last: bool = False,
        progress: bool | None = None, verbose: bool = False, model_name: str | None = None,
        model_kwargs: dict | None = None, extra: dict | None = None, minutes: float | None = None,
        preprocessing: Any = None) -> dict[str, list]:
    """Train for `epochs` epochs (or `minutes` of wall time), validating as it goes; returns the history.

    history: dict of per-validation lists "epoch" (epochs completed), "lr" (at that point),
    "train_loss" (mean since the last validation), "val_loss", "miou", "dice", "dice_foreground",
    "pixel_accuracy", "iou_per_class", "dice_per_class".

    optimizer: default AdamW(lr, weight_decay). schedule: "poly" | "cosine" | "constant", stepped
    per batch, with `warmup_steps` of linear warm-up. amp: see `resolve_amp`. early_stopping: stop
    after that many validations without improvement of `monitor` (one of "miou", "dice",
    "dice_foreground", "pixel_accuracy", "val_loss"). checkpoint: file written (atomically, by
    rank 0) after every validation. resume: a checkpoint of this run; training continues from its
    epoch with the optimiser, scheduler, scaler, history and RNG states it holds, so 2 + 2 epochs
    give the weights and history of 4 straight epochs. seed: `seed_everything(seed)` first (seed
    the model's initialisation yourself, before building it). progress: tqdm bars (None = auto).
    verbose: one printed line per validation. model_name / model_kwargs / extra are stored in the
    checkpoint so that `models.build_model(model_name, **model_kwargs)` rebuilds the model.

    minutes: a wall-time budget instead of (or on top of) `epochs`: the learning-rate schedule runs
    over the budget (`schedules.TimeBudgetFactor`), the last epoch ends at the first step past it,
    validation runs after each quarter of the budget (whole-image validation is not free), and the checkpoint is
    written each time, with the wall time spent so far (`extra["seconds"]`); a resumed run counts
    that time against the budget.
    ignore_index: target value left out of the metrics; None takes the one the validation data
    set declares (an `ignore_index` attribute, as `SegmentationFolder` and the real data sets have).
    preprocessing: a `preprocessing.Preprocessing`; validation then scores whole images through
    `inference.segment` (see `evaluate`), and the checkpoint stores it as `extra["preprocessing"]`.
    """
    if epochs is None and minutes is None:
        raise ValueError("give epochs, minutes, or both")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
        raise ValueError(f"minutes must be a positive number of minutes, got {minutes!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (label classes; a binary model with one "
                         f"output channel has num_classes=2), got {num_classes!r}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets), got {loss_fn!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if monitor not in _MONITORS:
        raise ValueError(f"monitor must be one of {tuple(_MONITORS)}, got {monitor!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ValueError(f"early_stopping must be a positive int (patience in epochs) or None, "
                         f"got {early_stopping!r}")
    if len(train_loader) == 0:
        raise ValueError("train_loader is empty: no batch to train on")
    if ignore_index is None:  # e.g. Oxford-IIIT Pet with boundary="ignore" declares 255
        ignore_index = _declared_ignore_index(val_loader)
    if seed is not None:
        seed_everything(seed)
    device = get_device() if device is None else torch.device(device)
    amp_dtype = resolve_amp(amp, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    budget = None if minutes is None else 60.0 * minutes  # seconds
    if budget is None:
        scheduler = build_scheduler(optimizer, schedule, total_steps=epochs * len(train_loader),
                                    warmup_steps=warmup_steps)
    else:
        scheduler = build_scheduler(optimizer, schedule, total_seconds=budget,
                                    warmup_steps=warmup_steps)
    use_scaler = amp_dtype == torch.float16
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    generators = _loader_generators(train_loader)
    history: dict[str, list] = {key: [] for key in (
        "epoch", "lr", "train_loss", "val_loss", "miou", "dice", "dice_foreground",
        "pixel_accuracy", "iou_per_class", "dice_per_class")}
    if preprocessing is not None:
        extra = {**(extra or {}), "preprocessing": preprocessing.to_dict()}
    start_epoch, spent_before = 0, 0.0  # spent_before: wall time of the run(s) resumed
    if resume is not None:
        # The schedule follows this call's arguments (a run may be extended to more epochs);
        # only its step count comes from the checkpoint, whose load overwrites the factor's fields.
        schedule_settings = dict(vars(scheduler.lr_lambdas[0]))
        state = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, map_location=device)
        vars(scheduler.lr_lambdas[0]).update(schedule_settings)
        start_epoch, history = state["epoch"], state["history"]
        restore_rng_state(state["rng"], generators)
        spent_before = float(state.get("extra", {}).get("seconds", 0.0))
    started = time.monotonic()
    deadline = None if budget is None else started + budget - spent_before
    if budget is not None:
        scheduler.lr_lambdas[0].spent_before = spent_before
        scheduler.lr_lambdas[0].start()
    mode = _MONITORS[monitor]
    best, stale = _epochs_since_best(history.get(monitor, []), mode, min_delta)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    show = _progress_enabled(progress)
    if budget is None:
        bar = progress_bar(total=epochs, initial=start_epoch, desc="epochs", disable=not show)
    else:
        bar = progress_bar(total=round(budget), initial=round(min(spent_before, budget)), unit="s",
                   desc="minutes budget", disable=not show)
    epoch, losses, last_check = start_epoch, [], started
    while (epochs is None or epoch < epochs) and (deadline is None or time.monotonic() < deadline):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        try:
            losses.append(train_one_epoch(
                model, train_loader, loss_fn, optimizer, device, scheduler=scheduler,
                scaler=scaler, amp_dtype=amp_dtype, grad_clip=grad_clip,
                channels_last=channels_last, progress=show and budget is None,
                description=f"epoch {epoch + 1}", deadline=deadline))
        except NonFiniteLossError as error:
            if checkpoint is not None and checkpoint.exists():
                last_good = history["epoch"][-1] if history["epoch"] else start_epoch
                kept = f"the last good checkpoint {checkpoint} (epoch {last_good}) is kept"
            else:
                kept = "no checkpoint was written (pass checkpoint= to keep one)"
            raise NonFiniteLossError(
                f"training stopped in epoch {epoch + 1}: {error}; {kept}. Lower the learning rate, "
                f"set grad_clip, or check the data and the loss for invalid values.") from error
        epoch += 1
        now = time.monotonic()
        if budget is not None:
            bar.update(round(min(spent_before + now - started, budget)) - bar.n)
            finished = now >= deadline or (epochs is not None and epoch >= epochs)
            if not finished and now - last_check < budget / 4:
                continue  # validate four times over a time budget
        last_check = now
        results = evaluate(model, val_loader, num_classes, device, loss_fn=loss_fn,
                           ignore_index=ignore_index, amp_dtype=amp_dtype,
                           channels_last=channels_last, progress=False, preprocessing=preprocessing)
        seconds = spent_before + time.monotonic() - started
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": sum(losses) / len(losses), "val_loss": results["loss"],
                  "miou": results["miou"], "dice": results["dice"],
                  "dice_foreground": results["dice_foreground"],
                  "pixel_accuracy": results["pixel_accuracy"],
                  "iou_per_class": results["iou_per_class"],
                  "dice_per_class": results["dice_per_class"]}
        losses = []
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        if budget is None:
            bar.update(1)
        if show:
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", miou=f"{results['miou']:.3f}")
        if verbose and distributed.is_main_process():
            total = f"/{epochs}" if epochs is not None else ""
            clock = f"{seconds:.0f} s  " if budget is not None else ""
            print(f"epoch {epoch}{total}  {clock}"
                  f"train_loss {record['train_loss']:.4f}  val_loss {results['loss']:.4f}  "
                  f"miou {results['miou']:.4f}  dice {results['dice']:.4f}  "
                  f"lr {record['lr']:.2e}", flush=True)
        if checkpoint is not None and distributed.is_main_process():
            save_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, epoch=epoch, history=history,
                            rng=capture_rng_state(generators), model_name=model_name,
                            model_kwargs=model_kwargs, extra={**(extra or {}), "seconds": seconds})
        value = record[monitor]
        if _is_better(value, best, mode, min_delta):
            best, stale = value, 0
        else:
            stale += 1
        if early_stopping is not None and stale >= early_stopping:
            if verbose and distributed.is_main_process():
                print(f"early stopping: {monitor} did not improve for {stale} validations "
                      f"(best {best:.4f})", flush=True)
            break
    bar.close()
    distributed.barrier()
    return history
