"""Full mode's GPU memory, host RAM and time, measured on the CPU instead of guessed.

Full mode (COURSE_MODE=full: a Colab GPU, real data sets, pretrained encoders) has never run end
to end. This tool takes each notebook's full-mode constants from its jupytext twin
(`notebooks/NN_*.py`, read with `ast`, FAST=False and REHEARSAL=False), rebuilds the heaviest steps
with the real models at the real batch and image size on the `meta` device (shapes, no data: a
ResNet-50 DeepLab at 16 x 256^2 costs nothing), and measures, per step:

- memory: parameters + gradients + AdamW's two state tensors + the tensors autograd saves for
  backward (`torch.autograd.graph.saved_tensors_hooks`, each storage once) + the largest set of
  forward temporaries; cross-checked by tracing every storage alive during forward and backward;
- FLOPs of forward + backward (`torch.utils.flop_counter.FlopCounterMode`), times the number of
  steps and validation images full mode runs, turned into T4 minutes at a documented throughput.

    python tools/full_mode_budget.py             # print the tables
    python tools/full_mode_budget.py --write     # also write docs/full_mode_budget.md
    python tools/full_mode_budget.py --measure   # re-time the CPU-side constants on this machine

`tests/test_full_mode_budget.py` recomputes everything and compares it with the doc's tables.
"""

from __future__ import annotations

import argparse
import ast
import functools
import io
import math
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DOC = ROOT / "docs" / "full_mode_budget.md"
GiB = 2**30

# The limits of the issue ("full mode rehearsed", item 2), in bytes and minutes.
GPU_LIMIT = 12e9  # a T4 has 15 GB; the rest is the CUDA context, cuDNN workspaces, fragmentation
HOST_LIMIT = 10e9  # Colab's free runtime has 12.7 GB; the rest is the kernel itself
MINUTES_LIMIT = 15.0

# Data-set sizes full mode reads (the official split files).
VOC_TRAIN, VOC_VAL = 1464, 1449  # VOC2012 ImageSets/Segmentation/{train,val}.txt
PET_TRAINVAL, PET_TEST = 3680, 3669  # oxford-iiit-pet annotations/{trainval,test}.txt

# Throughput of a T4, from one documented benchmark: NVIDIA DeepLearningExamples,
# PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Inference performance: NVIDIA T4",
# batch 128: 426 img/s in FP32, 1190 img/s in mixed precision, at 224 x 224. Times the FLOPs of
# that forward pass (counted below with the same counter) this is ~43 % of the 8.1 TFLOP/s FP32
# peak and ~15 % of the 65 TFLOP/s FP16 tensor-core peak. Inference at batch 128 is the best case:
# training kernels (weight gradients, BatchNorm backward) run less efficiently, so the minutes
# below are lower bounds.
T4_PEAK = {"fp32": 8.1e12, "AMP": 65e12}
T4_RESNET50_IMAGES_PER_S = {"fp32": 426, "AMP": 1190}

# CPU-side costs, measured on this machine (AMD EPYC, one thread; `--measure` re-times them).
# Colab's free runtime has two vCPUs, one physical core: assume one thread of similar speed.
MEASURED_ON_CPU = {
    "cpu_flop_per_s": 21e9,  # notebook 05's U-Net training step (batch 8, 128^2), one thread
    "scene_ms": {128: 1.2, 192: 2.1, 256: 3.4},  # ScenesDataset.__getitem__ at that size
    "cells_ms": {128: 2.7, 256: 4.0},  # CellsDataset.__getitem__
    "photo_ms": 10.0,  # 500 x 375 JPEG + PNG mask decoded, train/val transforms to 256^2
    "augment_64_ms": 0.74,  # train_transforms(64) on one 64^2 scene and its mask (notebook 06)
    "crf_s_per_megapixel": 2.3,  # dense_crf(window=7, num_iterations=5), six classes
}


# ---------------------------------------------------------------------------------------------
# Full-mode constants, read from the notebooks' jupytext twins
# ---------------------------------------------------------------------------------------------


class Call(NamedTuple):
    """A call in a notebook: its simple positional and keyword arguments, and its line."""

    args: list
    kwargs: dict
    line: int


class NotSimple(Exception):
    """An expression that is not a literal built from literals, FAST, REHEARSAL and constants."""


class NotebookSource:
    """The module-level constants of a notebook as full mode sees them (FAST and REHEARSAL False).

    Assignments at the top level and inside `if` blocks whose test can be decided (`if FAST:`,
    `if not FAST:`, `if REHEARSAL:`) are evaluated without executing anything: only literals,
    `a if FAST else b`, tuples, dicts, `dict(...)` and arithmetic on known constants.
    """

    def __init__(self, prefix: str, text: str | None = None):
        if text is None:
            self.path = next(NOTEBOOKS.glob(f"{prefix}_*.py"))
            text = self.path.read_text()
        else:
            self.path = Path(f"{prefix}_source.py")
        self.tree = ast.parse(text)
        self.values: dict[str, object] = {"FAST": False, "REHEARSAL": False}
        self.lines: dict[str, int] = {}
        self._collect(self.tree.body)

    def __getitem__(self, name: str):
        return self.values[name]

    def where(self, *names: str) -> str:
        """`notebooks/NN_x.py:line` of the assignment of the first name (for the doc)."""
        return f"notebooks/{self.path.name}:{self.lines[names[0]]}"

    def calls(self, func: str, having: tuple[str, ...] = ()) -> list[Call]:
        """Every call of `func` (a name or an attribute) anywhere in the notebook whose keywords
        include `having`, in source order; arguments that are not simple are left out."""
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and _func_name(node.func) == func:
                names = {k.arg for k in node.keywords if k.arg}
                if not set(having) <= names:
                    continue
                args = [self._try(a) for a in node.args]
                kwargs = {k.arg: self._try(k.value) for k in node.keywords if k.arg}
                found.append(
                    Call(args, {k: v for k, v in kwargs.items() if v is not _UNKNOWN}, node.lineno)
                )
        return sorted(found, key=lambda c: c.line)

    def loop_values(self, target: str) -> tuple:
        """The literal tuple a `for target in (...)` loop runs over."""
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.For)
                and isinstance(node.target, ast.Name)
                and node.target.id == target
            ):
                return tuple(self._eval(node.iter))
        raise KeyError(f"no `for {target} in ...` loop in {self.path.name}")

    def dict_keys(self, name: str) -> tuple:
        """The keys of a dict literal assigned to `name` (its values need not be simple), or of a
        comprehension `{key: ... for key in (literal tuple)}`."""
        for node in ast.walk(self.tree):
            if not (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name
            ):
                continue
            if isinstance(node.value, ast.Dict):
                return tuple(self._eval(k) for k in node.value.keys)
            if (
                isinstance(node.value, ast.DictComp)
                and len(node.value.generators) == 1
                and isinstance(node.value.key, ast.Name)
                and isinstance(node.value.generators[0].target, ast.Name)
                and node.value.key.id == node.value.generators[0].target.id
            ):
                return tuple(self._eval(node.value.generators[0].iter))
        raise KeyError(f"no dict literal {name} in {self.path.name}")

    def deletes(self, name: str) -> bool:
        """Whether the notebook has a top-level `del name` (it frees what `name` held)."""
        deleted = [
            target
            for node in self.tree.body
            if isinstance(node, ast.Delete)
            for t in node.targets
            for target in (t.elts if isinstance(t, ast.Tuple) else [t])  # del (a, b)
        ]
        return any(isinstance(t, ast.Name) and t.id == name for t in deleted)

    def function_calls(self, function: str, func: str) -> bool:
        """Whether the body of the notebook's `def function` calls `func` (a name or attribute)."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef) and node.name == function:
                return any(
                    isinstance(n, ast.Call) and _func_name(n.func) == func for n in ast.walk(node)
                )
        raise KeyError(f"no `def {function}` in {self.path.name}")

    def _collect(self, body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                test = self._try(node.test)
                if test is not _UNKNOWN:
                    self._collect(node.body if test else node.orelse)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                value = self._try(node.value)
                if value is not _UNKNOWN:
                    self._bind(node.targets[0], value, node.lineno)

    def _bind(self, target: ast.expr, value, line: int) -> None:
        if isinstance(target, ast.Name):
            self.values[target.id], self.lines[target.id] = value, line
        elif (
            isinstance(target, ast.Tuple)
            and isinstance(value, tuple)
            and len(value) == len(target.elts)
        ):
            for element, item in zip(target.elts, value):
                self._bind(element, item, line)

    def _try(self, node: ast.expr):
        try:
            return self._eval(node)
        except NotSimple:
            return _UNKNOWN

    def _eval(self, node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in self.values:
                raise NotSimple(node.id)
            return self.values[node.id]
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self._eval(e) for e in node.elts)
        if isinstance(node, ast.Dict) and None not in node.keys:
            return {self._eval(k): self._eval(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            operand = self._eval(node.operand)
            return (not operand) if isinstance(node.op, ast.Not) else -operand
        if isinstance(node, ast.BoolOp):
            values = [self._eval(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](self._eval(node.left), self._eval(node.right))
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
            and isinstance(getattr(torch, node.attr, None), torch.dtype)
        ):
            return getattr(torch, node.attr)  # torch.float16 and the other dtypes
        if isinstance(node, ast.Call) and _func_name(node.func) == "dict" and not node.args:
            return {k.arg: self._eval(k.value) for k in node.keywords}
        raise NotSimple(ast.dump(node)[:60])


_UNKNOWN = object()
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Div: lambda a, b: a / b,
}


def _func_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


# ---------------------------------------------------------------------------------------------
# Measuring one step: saved tensors, live storages, FLOPs
# ---------------------------------------------------------------------------------------------


def _storage(t: torch.Tensor):
    return t.untyped_storage()


class SavedTally:
    """Bytes of the tensors autograd saves for backward, each storage counted once; the
    parameters' own storages are left out (they are counted as parameters)."""

    def __init__(self, exclude: set[int] = frozenset()):
        self.exclude = exclude
        self.storages: dict[int, int] = {}
        self.tensors: list[torch.Tensor] = []  # kept alive, as autograd keeps them

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = _storage(t)
        if storage._cdata not in self.exclude:
            self.storages.setdefault(storage._cdata, storage.nbytes())
        self.tensors.append(t)
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


class LiveStorages(TorchDispatchMode):
    """Every storage an operation creates inside this mode, while it is alive: the current total
    and its peak. Storages in `exclude` (the parameters, which views like `weight.t()` share) are
    not new memory. With `saved`, also the peak of (live - saved for backward) during forward,
    taken after each operation once autograd has saved what that operation needs."""

    def __init__(self, saved: SavedTally | None = None, exclude: set[int] = frozenset()):
        super().__init__()
        self.saved, self.exclude = saved, exclude
        self.live: dict[int, int] = {}
        self.now = self.peak = self.forward_temporaries = 0
        self._after_last_op: int | None = None  # `now` when the previous operation returned

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._settle()
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(_storage(t))
        self.peak = max(self.peak, self.now)
        if self.saved is not None:
            self._after_last_op = self.now
        return out

    def end_forward(self) -> None:
        """Stop counting forward temporaries (call it before backward)."""
        self._settle()
        self.saved = None

    def _settle(self) -> None:
        if self._after_last_op is not None:  # the previous operation's saved tensors are packed
            temporaries = self._after_last_op - self.saved.bytes
            self.forward_temporaries = max(self.forward_temporaries, temporaries)
            self._after_last_op = None

    def _track(self, storage) -> None:
        key = storage._cdata
        if key in self.live or key in self.exclude:
            return
        self.live[key] = storage.nbytes()
        self.now += self.live[key]
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """The gradient of the input and the gradient of the weight each cost one forward convolution.
    (torch 2.14's formula forgets `groups` in the weight gradient and counts a depthwise conv's
    backward `groups` times too high; fixed upstream by pytorch/pytorch#183405.)"""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flop}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


@dataclass(frozen=True)
class StepCost:
    """The memory and FLOPs of one training step (forward, loss, backward) at one batch size."""

    batch: int
    params: int  # number of parameters
    model_bytes: int  # parameters and buffers
    trainable_bytes: int  # parameters that get a gradient and optimiser state
    saved_bytes: int  # unique storages saved for backward (activations, the batch)
    temporary_bytes: int  # the most bytes alive in forward that are not saved for backward
    traced_bytes: int  # peak of every storage alive during forward + backward (grads included)
    forward_flops: int
    step_flops: int  # forward + backward

    @property
    def tally_bytes(self) -> int:
        """parameters + gradients + AdamW's two states + saved + forward temporaries."""
        return self.model_bytes + 3 * self.trainable_bytes + self.saved_bytes + self.temporary_bytes

    @property
    def traced_total_bytes(self) -> int:
        return self.model_bytes + 2 * self.trainable_bytes + self.traced_bytes

    @property
    def peak_bytes(self) -> int:
        return max(self.tally_bytes, self.traced_total_bytes)

    def scaled(self, batch: int) -> StepCost:
        """Activations and FLOPs scaled linearly from this batch to `batch` (a CPU fallback)."""
        k = batch / self.batch
        grads = self.trainable_bytes
        return replace(
            self,
            batch=batch,
            saved_bytes=round(self.saved_bytes * k),
            temporary_bytes=round(self.temporary_bytes * k),
            traced_bytes=round((self.traced_bytes - grads) * k) + grads,
            forward_flops=round(self.forward_flops * k),
            step_flops=round(self.step_flops * k),
        )


def measure_step(
    model: nn.Module, make_batch: Callable[[], tuple], loss_fn: Callable, batch: int
) -> StepCost:
    """Run one forward + loss + backward of `model` on the batch `make_batch()` builds and tally
    its memory and FLOPs. Works on meta tensors (the usual case) and on real CPU tensors.
    Parameters with requires_grad=False are frozen: no gradient, no optimiser state."""
    model.train()
    weights = list(model.parameters()) + list(model.buffers())
    weight_storages = {_storage(w)._cdata for w in weights}
    saved = SavedTally(exclude=weight_storages)
    live = LiveStorages(saved, exclude=weight_storages)
    with live, flop_counter() as flops:
        inputs, targets = make_batch()  # created inside: the batch lives on the GPU too
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            loss = loss_fn(model(inputs), targets)
        forward_flops = flops.get_total_flops()
        live.end_forward()
        loss.backward()
        step_flops = flops.get_total_flops()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return StepCost(
        batch=batch,
        params=sum(p.numel() for p in model.parameters()),
        model_bytes=sum(_nbytes(w) for w in weights),
        trainable_bytes=sum(_nbytes(p) for p in trainable),
        saved_bytes=saved.bytes,
        temporary_bytes=live.forward_temporaries,
        traced_bytes=live.peak,
        forward_flops=forward_flops,
        step_flops=step_flops,
    )


def traced_peak(function: Callable[[], object], model: nn.Module | None = None) -> int:
    """Peak bytes of the storages `function` creates (no autograd), e.g. an inference pass;
    `model`'s parameters and buffers are not counted."""
    weights = [] if model is None else list(model.parameters()) + list(model.buffers())
    with LiveStorages(exclude={_storage(w)._cdata for w in weights}) as live, torch.no_grad():
        function()
    return live.peak


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _image_batch(batch: int, channels: int, size: int, *, device="meta", classes: int = 2):
    def make():
        images = torch.randn(batch, channels, size, size, device=device)  # (N, C, H, W)
        targets = torch.randint(0, classes, (batch, size, size), device=device)  # (N, H, W)
        return images, targets

    return make


def cross_entropy(ignore_index: int = -100) -> Callable:
    return lambda logits, target: F.cross_entropy(logits, target, ignore_index=ignore_index)


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The arithmetic of `losses.BCEDiceLoss` for one logit channel, without its input checks
    (they read values, which meta tensors do not have); its memory is the model's, not this."""
    logits = logits[:, 0]  # (N, H, W)
    target = target.float()
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


@functools.lru_cache
def t4_flop_per_s(precision: str) -> float:
    """Images/s of the documented ResNet-50 benchmark times the FLOPs of its forward pass."""
    from torchvision.models import resnet50

    model = on_meta(resnet50).eval()
    with flop_counter() as flops, torch.no_grad():
        model(torch.randn(1, 3, 224, 224, device="meta"))
    return T4_RESNET50_IMAGES_PER_S[precision] * flops.get_total_flops()


# ---------------------------------------------------------------------------------------------
# The notebooks' full-mode steps
# ---------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One piece of a notebook's full mode: its heaviest step and what the notebook runs of it."""

    notebook: str
    name: str
    shape: str  # "batch × size²" of the heaviest step
    source: str  # where the constants come from
    params: int = 0
    gpu_bytes: int = 0  # peak on the GPU: the step plus what stays resident around it
    host_bytes: int = 0  # what the notebook holds in host RAM at the peak (kernel excluded)
    flops: float = 0.0  # training steps + validation / inference passes
    precision: str = "fp32"  # "fp32", "AMP" (engine.fit) or "CPU"
    cpu_seconds: float = 0.0  # CPU work in the notebook's process that the GPU waits for
    step: StepCost | None = None
    step_name: str = ""  # which model's step `step` measures
    note: str = ""
    fix: str = "none proposed"  # what to change if it does not fit
    fix_by: str = "suggestion"  # or "the issue's", when the issue proposes it

    def gpu_minutes(self, rates: dict[str, float]) -> float:
        return 0.0 if self.precision == "CPU" else self.flops / rates[self.precision] / 60

    def cpu_minutes(self) -> float:
        return self.cpu_seconds / 60

    def misses(self, rates: dict[str, float]) -> list[str]:
        out = []
        if self.gpu_bytes > GPU_LIMIT:
            out.append("GPU")
        if self.host_bytes > HOST_LIMIT:
            out.append("RAM")
        if self.gpu_minutes(rates) + self.cpu_minutes() > MINUTES_LIMIT:
            out.append("time")
        return out


def _scenes_ms(size: int) -> float:
    return MEASURED_ON_CPU["scene_ms"][size]


def notebook_01() -> list[Phase]:
    nb = NotebookSource("01")
    scenes = nb.calls("ScenesDataset", having=("length", "return_instances"))[0].kwargs
    length, size = scenes["length"], scenes["image_size"]
    return [
        Phase(
            "01",
            f"no training: {length} scenes counted one at a time",
            f"1 × {size}²",
            nb.where("SIZE"),
            host_bytes=3 * 4 * size * size,
            cpu_seconds=length * _scenes_ms(size) / 1e3,
            precision="CPU",
        )
    ]


def notebook_02() -> list[Phase]:
    from course_lib.data import ScenesDataset
    from course_lib.models import FCN

    nb = NotebookSource("02")
    size, steps, batch, num_val = nb["SIZE"], nb["STEPS"], nb["BATCH"], nb["NUM_VAL"]
    num_train, seeds = nb["NUM_TRAIN"], nb["SEEDS"]
    variants = nb.loop_values("variant")
    small = next(c.kwargs for c in nb.calls("FCN") if c.kwargs.get("backbone") == "small")
    k = ScenesDataset.num_classes
    costs = [
        measure_step(
            on_meta(lambda v=v: FCN(num_classes=k, variant=v, **small)),
            _image_batch(batch, 3, size, classes=k),
            cross_entropy(),
            batch,
        )
        for v in variants
    ]
    heaviest = max(costs, key=lambda c: c.peak_bytes)
    heaviest_variant = variants[costs.index(heaviest)]
    runs = len(variants) * len(seeds)
    # map(torch.stack, zip(*(...))): the per-image list and the stacked copy coexist once.
    scene_bytes = (num_train + num_val) * (3 * 4 + 8) * size * size  # float32 image, int64 mask
    scenes = Phase(
        "02",
        f"FCN-{'/'.join(variants)} (small encoder) on scenes, {len(seeds)} seeds: {runs} runs",
        f"{batch} × {size}²",
        nb.where("SIZE"),
        params=heaviest.params,
        gpu_bytes=heaviest.peak_bytes,
        step=heaviest,
        step_name=f"FCN-{heaviest_variant} small",
        flops=len(seeds)
        * sum(c.step_flops * steps + c.forward_flops / batch * num_val for c in costs),
        host_bytes=2 * scene_bytes,
        cpu_seconds=(num_train + num_val) * _scenes_ms(size) / 1e3,
        note=f"{runs} × {steps} steps; the scenes rendered once and stacked in RAM",
        fix="fewer steps or seeds",
    )

    voc_kwargs = next(c.kwargs for c in nb.calls("FCN") if c.kwargs.get("backbone") == "resnet18")
    voc_size, voc_batch, epochs = nb["VOC_SIZE"], nb["VOC_BATCH"], nb["VOC_EPOCHS"]
    voc = measure_step(
        on_meta(lambda: FCN(**voc_kwargs)),
        _image_batch(voc_batch, 3, voc_size, classes=21),
        cross_entropy(255),
        voc_batch,
    )
    train_steps = epochs * (VOC_TRAIN // voc_batch)  # drop_last=True
    workers = nb.calls("DataLoader", having=("num_workers",))[0].kwargs["num_workers"]
    flops = voc.step_flops * train_steps + voc.forward_flops / voc_batch * VOC_VAL * epochs
    loading = epochs * (VOC_TRAIN + VOC_VAL) * MEASURED_ON_CPU["photo_ms"] / 1e3 / workers
    pascal = Phase(
        "02",
        f"FCN-8s ResNet-18 fine-tuned on Pascal VOC 2012, {epochs} epochs",
        f"{voc_batch} × {voc_size}²",
        nb.where("VOC_SIZE"),
        params=voc.params,
        gpu_bytes=voc.peak_bytes,
        step=voc,
        step_name="FCN-8s ResNet-18",
        precision="AMP",
        flops=flops,
        cpu_seconds=max(0.0, loading - flops / t4_flop_per_s("AMP")),
        note=(
            f"{train_steps} steps + {epochs} × {VOC_VAL} val images; {workers} loader "
            "workers (only loading beyond the GPU time counts)"
        ),
        fix="fewer epochs",
    )
    return [scenes, pascal]


def notebook_03() -> list[Phase]:
    from course_lib.models import UNet

    nb = NotebookSource("03")
    size, steps, batch, num_val = nb["SIZE"], nb["STEPS"], nb["BATCH"], nb["NUM_VAL"]
    runs = nb.loop_values("skips")
    kwargs = nb.calls("UNet", having=("skip_connections",))[0].kwargs
    costs = [
        measure_step(
            on_meta(lambda s=s: UNet(**kwargs, skip_connections=s)),
            _image_batch(batch, kwargs["in_channels"], size),
            cross_entropy(),
            batch,
        )
        for s in runs
    ]
    heaviest = max(costs, key=lambda c: c.peak_bytes)
    return [
        Phase(
            "03",
            f"U-Net (base {kwargs['base_channels']}, depth {kwargs['depth']}) with and without "
            f"skips on cells",
            f"{batch} × {size}²",
            nb.where("SIZE"),
            params=heaviest.params,
            gpu_bytes=heaviest.peak_bytes,
            step=heaviest,
            step_name=f"U-Net {'with' if runs[costs.index(heaviest)] else 'without'} skips",
            flops=sum(c.step_flops * steps + c.forward_flops / batch * num_val for c in costs),
            cpu_seconds=len(runs)
            * (steps * batch + num_val)
            * MEASURED_ON_CPU["cells_ms"][size]
            / 1e3,
            note=f"{len(runs)} × {steps} steps; cells rendered in the main process",
            fix="fewer steps, or DataLoader workers for the rendering",
        )
    ]


def notebook_04() -> list[Phase]:
    from course_lib import crf
    from course_lib.data import ScenesDataset
    from course_lib.models import DeepLabV3, DeepLabV3Plus

    nb = NotebookSource("04")
    size, batch, k = nb["SIZE"], nb["BATCH"], ScenesDataset.num_classes
    num_train, num_val = nb["NUM_TRAIN"], nb["NUM_VAL"]
    v3_kwargs = {
        "num_classes": k,
        "backbone": nb["BACKBONE"],
        "aspp_channels": nb["ASPP_CHANNELS"],
        "output_stride": nb.calls("DeepLabV3")[0].kwargs["output_stride"],
    }
    image_bytes = 3 * 4 * size * size  # float32 (3, H, W)
    mask_bytes = 8 * size * size  # int64 (H, W)
    # map(torch.stack, zip(*(...))): the per-image list and the stacked copy coexist once.
    data_bytes = (num_train + num_val) * (image_bytes + mask_bytes)

    v3 = on_meta(lambda: DeepLabV3(**v3_kwargs))
    encoder = measure_step(v3, _image_batch(batch, 3, size, classes=k), cross_entropy(), batch)
    # OS_SEEDS models trained alike (the first is v3, which stays resident while the others
    # train), each evaluated on the val images at output stride 16 and, rebuilt, at 8.
    seeds = nb["OS_SEEDS"]
    os8 = on_meta(lambda: DeepLabV3(**{**v3_kwargs, "output_stride": 8}))
    with flop_counter() as os8_flops, torch.no_grad():
        os8.eval()(torch.randn(batch, 3, size, size, device="meta"))
    eval_flops = (encoder.forward_flops + os8_flops.get_total_flops()) / batch * num_val
    end_to_end = Phase(
        "04",
        f"DeepLabV3 {nb['BACKBONE']} end to end on scenes, {len(seeds)} seeds, "
        "each evaluated at OS 16 and 8",
        f"{batch} × {size}²",
        nb.where("ENCODER_STEPS"),
        params=encoder.params,
        gpu_bytes=encoder.peak_bytes + (encoder.model_bytes if len(seeds) > 1 else 0),
        step=encoder,
        step_name=f"DeepLabV3 {nb['BACKBONE']}",
        flops=len(seeds) * (encoder.step_flops * nb["ENCODER_STEPS"] + eval_flops),
        host_bytes=2 * data_bytes,
        cpu_seconds=(num_train + num_val) * _scenes_ms(size) / 1e3,
        note=(
            f"{len(seeds)} × {nb['ENCODER_STEPS']} steps (the first model stays resident while "
            f"the others train); all {num_train} + {num_val} scenes stacked in RAM first (list "
            "and stacked copy coexist)"
        ),
        fix="fewer end-to-end steps or seeds, or stack the scenes into preallocated tensors",
    )

    # Frozen features: low (N, 256, H/4, W/4) and ASPP output (N, 256, H/16, W/16) of every
    # training image, in CACHE_DTYPE on CACHE_DEVICE; joined by torch.cat, the list of batches and
    # the result coexist once, written into preallocated tensors they do not.
    with torch.no_grad():
        x = torch.randn(batch, 3, size, size, device="meta")
        low, *_, high = v3.eval().backbone(x)  # c2 and c5 of the encoder's four maps
        context = v3.aspp(high)
    cache_dtype, cache_device = nb["CACHE_DTYPE"], nb["CACHE_DEVICE"]
    cache_bytes = (low[0].numel() + context[0].numel()) * cache_dtype.itemsize * num_train
    concatenated = nb.function_calls("frozen_features", "cat")
    cache_peak = 2 * cache_bytes if concatenated else cache_bytes
    on_cpu = cache_device == "cpu"
    features_peak = traced_peak(lambda: v3.aspp(v3.backbone(x)[-1]), v3)
    v3plus = on_meta(lambda: DeepLabV3Plus(**v3_kwargs))
    resident = (
        encoder.model_bytes
        + 2 * encoder.trainable_bytes
        + sum(  # v3, its Adam, v3plus
            _nbytes(w) for w in list(v3plus.parameters()) + list(v3plus.buffers())
        )
    )
    for p in list(v3plus.backbone.parameters()) + list(v3plus.aspp.parameters()):
        p.requires_grad_(False)  # only low_project and decoder train

    def v3plus_head_step():  # a batch of the cache, moved to the device in float32
        low_batch = torch.randn(batch, *low.shape[1:], device="meta")  # low_train[index]
        context_batch = torch.randn(batch, *context.shape[1:], device="meta")
        targets = torch.randint(0, k, (batch, size, size), device="meta")
        return (low_batch, context_batch), targets

    def v3plus_head(inputs):  # notebook 04, v3plus_head + the interpolation in train_head
        low_batch, context_batch = inputs
        up = F.interpolate(context_batch, size=low_batch.shape[-2:], mode="bilinear")
        fused = torch.cat([up, v3plus.low_project(low_batch)], dim=1)  # (N, 256 + 48, H/4, W/4)
        return F.interpolate(v3plus.decoder(fused), size=(size, size), mode="bilinear")

    head = measure_step(_Wrapped(v3plus, v3plus_head), v3plus_head_step, cross_entropy(), batch)
    head_dynamic = head.peak_bytes - head.model_bytes  # v3plus itself is in `resident`
    targets = torch.zeros(batch, size, size, dtype=torch.long, device="meta")
    with flop_counter() as v3_head_flops:  # notebook 04's v3_head, trained by the same loop
        logits = F.interpolate(v3.train().head(context), size=(size, size), mode="bilinear")
        F.cross_entropy(logits, targets).backward()
    predict_flops = 2 * encoder.forward_flops / batch * num_val  # v3 and v3plus on val
    if on_cpu:
        heads_gpu = resident + max(features_peak, head_dynamic)
        heads_host = data_bytes + cache_peak
    else:
        heads_gpu = resident + max(cache_peak + features_peak, cache_bytes + head_dynamic)
        heads_host = data_bytes
    where = "host RAM" if on_cpu else "the device"
    heads = Phase(
        "04",
        f"frozen-feature cache of the training set ({str(cache_dtype)[6:]}, in {where}) "
        "+ V3 head and V3+ decoder",
        f"{num_train} × {size}² cached",
        nb.where("NUM_TRAIN"),
        params=head.params,
        gpu_bytes=heads_gpu,
        step=head,
        step_name="V3+ decoder on cached features",
        host_bytes=heads_host,
        flops=(
            encoder.forward_flops / batch * num_train
            + nb["HEAD_STEPS"] * (head.step_flops + v3_head_flops.get_total_flops())
            + predict_flops
        ),
        note=(
            f"cache {cache_bytes / GiB:.1f} GiB in {where} ({str(cache_dtype)[6:]} stride-4 "
            "features and ASPP outputs), "
            + (
                "doubled while torch.cat joins the batches"
                if concatenated
                else "written batch by batch into preallocated tensors"
            )
            + ("; each training batch moved to the device in float32" if on_cpu else "")
            + "; DeepLabV3, its Adam state and DeepLabV3+ stay resident"
        ),
        fix_by="the issue's",
        fix=f"the cache in float16 ({cache_bytes / cache_dtype.itemsize * 2 / GiB:.1f} GiB), for "
        "a subset of the images, or on the CPU, written batch by batch into one preallocated "
        "tensor (no torch.cat copy)",
    )

    # dense_crf(probs_v3, val_images, ..., chunk_size=CRF_CHUNK): the one call over the val set
    crf_kwargs = (nb.calls("dense_crf", having=("chunk_size",)) or nb.calls("dense_crf"))[-1].kwargs
    chunk = crf_kwargs.get("chunk_size") or num_val
    probs_bytes = num_val * k * size * size * 4  # (N, K, H, W) float32
    with mock.patch.object(crf, "_check_inputs", lambda *a, **kw: None):  # its checks read values
        probs = torch.randn(num_val, k, size, size, device="meta")
        images = torch.randn(num_val, 3, size, size, device="meta")
        crf_peak = traced_peak(
            lambda: crf.dense_crf(probs, images, **crf_kwargs)
        )  # output included
    cache_left = on_cpu and not (nb.deletes("low_train") and nb.deletes("context_train"))
    megapixels = num_val * size * size / 1e6
    how = f"in chunks of {chunk} images" if chunk < num_val else "all at once"
    refine = Phase(
        "04",
        f"local dense CRF (window {crf_kwargs['window']}, {crf_kwargs['num_iterations']} "
        f"iterations) over {num_val} val images {how}, on the CPU",
        f"{num_val} × {size}²",
        nb.where("NUM_VAL"),
        precision="CPU",
        host_bytes=data_bytes + 2 * probs_bytes + crf_peak + (cache_bytes if cache_left else 0),
        cpu_seconds=megapixels * MEASURED_ON_CPU["crf_s_per_megapixel"],
        note=(
            f"CRF working set {crf_peak / GiB:.2f} GiB ({how}; window² - 1 kernels per pixel, "
            "the refined output included, traced on meta) on top of the stacked scenes and two "
            "sets of probabilities"
            + (
                "; the feature cache is still held"
                if cache_left
                else ("; the feature cache was freed (`del`)" if on_cpu else "")
            )
        ),
        fix_by="the issue's",
        fix=f"the CRF in chunks of a few images (its working set is "
        f"{crf_peak / chunk / 2**20:.0f} MiB per {size}² image)",
    )
    return [end_to_end, heads, refine]


class _Wrapped(nn.Module):
    """A module whose forward is `function(inputs)`, holding `model` for its parameters."""

    def __init__(self, model: nn.Module, function: Callable):
        super().__init__()
        self.model, self.function = model, function

    def forward(self, inputs):
        return self.function(inputs)


def notebook_05() -> list[Phase]:
    from course_lib.models import UNet

    nb = NotebookSource("05")
    size, steps, seeds = nb["IMAGE_SIZE"], nb["STEPS"], nb["SEEDS"]
    num_train, num_val = nb["NUM_TRAIN"], nb["NUM_VAL"]
    # The training loop's draw: randint(0, len(train_x), (8,), generator=...); other randint
    # calls of the notebook make toy tensors.
    batch = nb.calls("randint", having=("generator",))[0].args[2][0]
    # UNet(in_channels=train_x.shape[1], ...): Kvasir-SEG photographs are RGB, UNet's default.
    kwargs = nb.calls("UNet", having=("base_channels", "depth"))[0].kwargs
    losses = nb.dict_keys("EXPERIMENT_LOSSES")
    runs = len(seeds) * len(losses)
    step = measure_step(
        on_meta(lambda: UNet(**kwargs)), _image_batch(batch, 3, size), bce_dice, batch
    )
    stacked = (num_train + num_val) * (3 * 4 * size * size + 8 * size * size)  # float32, int64
    return [
        Phase(
            "05",
            f"U-Net (base {kwargs['base_channels']}, depth {kwargs['depth']}) on Kvasir-SEG, "
            f"{len(losses)} losses × {len(seeds)} seeds",
            f"{batch} × {size}²",
            nb.where("IMAGE_SIZE"),
            params=step.params,
            gpu_bytes=step.peak_bytes,
            step=step,
            step_name="U-Net",
            flops=runs * (step.step_flops * steps + step.forward_flops / batch * num_val),
            host_bytes=2 * stacked,  # the list of samples and the stacked copy coexist once
            cpu_seconds=(num_train + num_val) * MEASURED_ON_CPU["photo_ms"] / 1e3,
            note=(
                f"{runs} runs × {steps} steps, float32 (no autocast); all {num_train + num_val} "
                "images decoded once and stacked in RAM"
            ),
            fix_by="the issue's",
            fix="train on the device, with DataLoader workers",
        ),
        _small_objects_05(nb, kwargs, batch),
    ]


def _small_objects_05(nb: NotebookSource, kwargs: dict, batch: int) -> Phase:
    """Notebook 05's small-object experiment: the same U-Net and loop on scenes, person vs rest."""
    from course_lib.models import UNet

    size, steps, seeds = nb["SMALL_SIZE"], nb["SMALL_STEPS"], nb["SMALL_SEEDS"]
    num_train, num_val = nb["SMALL_TRAIN"], nb["SMALL_VAL"]
    runs = len(seeds) * len(nb.dict_keys("SMALL_OBJECT_LOSSES"))
    step = measure_step(
        on_meta(lambda: UNet(**kwargs)), _image_batch(batch, 3, size), bce_dice, batch
    )
    stacked = (num_train + num_val) * (3 * 4 + 8 + 8) * size * size  # images, masks, instance ids
    return Phase(
        "05",
        f"the same U-Net on {size}² scenes, person vs rest, {runs // len(seeds)} losses × "
        f"{len(seeds)} seeds",
        f"{batch} × {size}²",
        nb.where("SMALL_SIZE"),
        params=step.params,
        gpu_bytes=step.peak_bytes,
        step=step,
        step_name="U-Net",
        flops=runs * (step.step_flops * steps + step.forward_flops / batch * num_val),
        host_bytes=stacked,
        # scenes are rendered once; a 128² scene's time bounds a smaller one's
        cpu_seconds=(num_train + num_val) * _scenes_ms(128) / 1e3,
        note=f"{runs} runs × {steps} steps, float32; {num_train + num_val} scenes rendered once",
    )


def notebook_06() -> list[Phase]:
    from course_lib.data import ScenesDataset
    from course_lib.models import UNet

    nb = NotebookSource("06")
    draws = 4  # notebook 06, section 8: `draws = [pets[i] for i in range(4)]`
    size, steps, seeds = nb["AUG_SIZE"], nb["AUG_STEPS"], nb["AUG_SEEDS"]
    few, held_out = nb["FEW"], nb["HELD_OUT"]
    kwargs = nb.calls("UNet", having=("base_channels", "depth"))[0].kwargs
    batch = nb.calls("randint", having=("generator",))[0].args[2][0]  # train_on_few's draw
    runs = 2 * len(seeds)  # with and without train_transforms
    step = measure_step(
        on_meta(lambda: UNet(**kwargs)),
        _image_batch(batch, 3, size, classes=ScenesDataset.num_classes),
        cross_entropy(255),
        batch,
    )
    return [
        Phase(
            "06",
            "no training: Oxford-IIIT Pet downloaded (~800 MB), 4 augmented draws",
            "4 × 256²",
            f"notebooks/{nb.path.name}",
            precision="CPU",
            cpu_seconds=draws * MEASURED_ON_CPU["photo_ms"] / 1e3,
            note="download time not estimated",
        ),
        Phase(
            "06",
            f"U-Net (base {kwargs['base_channels']}, depth {kwargs['depth']}) on {few} scenes, "
            f"augmentation on and off × {len(seeds)} seeds",
            f"{batch} × {size}²",
            nb.where("AUG_SIZE"),
            params=step.params,
            gpu_bytes=step.peak_bytes,
            step=step,
            step_name="U-Net",
            flops=runs * (step.step_flops * steps + step.forward_flops / batch * (few + held_out)),
            # every step augments its batch on the CPU (measured at 64²; AUG_SIZE is 64 in full mode)
            cpu_seconds=runs * steps * batch * MEASURED_ON_CPU["augment_64_ms"] / 1e3,
            note=(
                f"{runs} runs × {steps} steps, float32; each batch transformed on the CPU (every "
                "run counted at train_transforms' cost: half of them only normalise)"
            ),
        ),
    ]


def notebook_07() -> list[Phase]:
    from course_lib.models import DeepLabV3

    nb = NotebookSource("07")
    size, batch, epochs = nb["IMAGE_SIZE"], nb["BATCH_SIZE"], nb["EPOCHS"]
    val_images, workers = min(nb["VAL_IMAGES"], PET_TEST), nb["NUM_WORKERS"]
    exp_images, exp_epochs = min(nb["EXP_IMAGES"], PET_TRAINVAL), nb["EXP_EPOCHS"]
    exp_val = min(nb["EXP_VAL_IMAGES"], PET_TEST)
    kwargs = nb.calls("DeepLabV3")[0].kwargs
    runs = len(nb.dict_keys("experiment"))  # the loss experiment's fits
    # Fits of the main run's length: section 2's, and section 7's with the encoder from scratch.
    main_runs = sum(1 for call in nb.calls("fit") if call.kwargs.get("epochs") == epochs)
    step = measure_step(
        on_meta(lambda: DeepLabV3(**kwargs)), _image_batch(batch, 3, size), bce_dice, batch
    )
    rate, photo_s = t4_flop_per_s("AMP"), MEASURED_ON_CPU["photo_ms"] / 1e3
    per_image = step.forward_flops / batch
    # (training steps, validation images): the main fit (drop_last=True), sections 3 and 4
    # (three passes over the validation images), the loss experiment
    main = (main_runs * epochs * (PET_TRAINVAL // batch), main_runs * epochs * val_images)
    sections = (0, 3 * val_images)
    experiment = (runs * exp_epochs * math.ceil(exp_images / batch), runs * exp_epochs * exp_val)
    parts = [main, sections, experiment]
    train_steps = sum(p[0] for p in parts)
    val_passes = sum(p[1] for p in parts)
    flops = step.step_flops * train_steps + per_image * val_passes
    # Loader workers decode while the GPU computes: only decoding beyond the GPU time counts,
    # for the training images and for the validation images separately.
    train_gpu = step.step_flops * train_steps / rate
    train_load = (
        (main_runs * epochs * (PET_TRAINVAL // batch) * batch + runs * exp_epochs * exp_images)
        * photo_s
        / max(workers, 1)
    )
    val_gpu, val_load = per_image * val_passes / rate, val_passes * photo_s / max(workers, 1)
    cpu_seconds = max(0.0, train_load - train_gpu) + max(0.0, val_load - val_gpu)
    # While the loss experiment trains, the models of sections 2 and 6 (`model`, `straight`,
    # `resumed`) are still on the device unless the notebook deletes them.
    freed = all(nb.deletes(name) for name in ("model", "straight", "resumed"))
    resident = 0 if freed else 3 * step.model_bytes
    loaders = f"{workers} loader workers" if workers else "loaders without workers"
    return [
        Phase(
            "07",
            f"DeepLabV3 {kwargs['backbone']} on Oxford-IIIT Pet: "
            f"{f'{main_runs} × ' if main_runs > 1 else ''}{epochs} epochs + "
            f"{runs} × {exp_epochs} epochs on {exp_images} images",
            f"{batch} × {size}²",
            nb.where("IMAGE_SIZE"),
            params=step.params,
            gpu_bytes=resident + step.peak_bytes,
            step=step,
            step_name=f"DeepLabV3 {kwargs['backbone']}",
            precision="AMP",
            flops=flops,
            cpu_seconds=cpu_seconds,
            note=(
                f"{train_steps} steps + {val_passes} val images ({val_images} of the {PET_TEST} "
                f"test photos per pass; the loss experiment on {exp_images} training and "
                f"{exp_val} test photos); {loaders}"
                + (
                    " (only decoding beyond the GPU time counts)"
                    if workers
                    else ": JPEG decoding and augmentation in the main process"
                )
                + (
                    "; the earlier DeepLabV3s are deleted before the loss experiment"
                    if freed
                    else "; three earlier DeepLabV3s stay on the device"
                )
            ),
            fix="one fit instead of four (the loss experiment on a subset or for a few "
            "epochs), fewer epochs, DataLoader workers for the JPEG decoding",
        )
    ]


def notebook_08() -> list[Phase]:
    from course_lib import models
    from course_lib.data import ScenesDataset
    from course_lib.panoptic import build_mask_rcnn, instance_targets

    nb = NotebookSource("08")
    size, images, epochs, num_val = (
        nb["TRAIN_SIZE"],
        nb["TRAIN_IMAGES"],
        nb["EPOCHS"],
        nb["VAL_IMAGES"],
    )
    batch = nb.calls("DataLoader", having=("shuffle",))[0].kwargs["batch_size"]
    k = ScenesDataset.num_classes
    resident, peaks, flops = 0, [], 0.0
    steps = epochs * math.ceil(images / batch)
    costs = {}
    for label, (name, kwargs) in nb["CONFIGS"].items():

        def build(name=name, kwargs=kwargs):
            return models.build_model(name, num_classes=k, in_channels=3, **kwargs)

        cost = measure_step(
            on_meta(build), _image_batch(batch, 3, size, classes=k), cross_entropy(), batch
        )
        costs[label] = cost
        peaks.append(resident + cost.peak_bytes)  # the models trained before stay on the device
        resident += cost.model_bytes
        flops += cost.step_flops * steps + cost.forward_flops / batch * num_val * epochs
    heaviest = max(costs, key=lambda label: costs[label].peak_bytes)
    # rendered(...) draws every scene once into a TensorDataset (the list of scenes and the
    # stacked copy coexist once); otherwise each model and epoch draws them again.
    once = bool(nb.calls("TensorDataset"))
    scene_bytes = (images + num_val) * (3 * 4 + 8) * size * size  # float32 image, int64 mask
    renders = (images + num_val) * (1 if once else len(costs) * epochs)
    six = Phase(
        "08",
        f"{len(costs)} models × {epochs} epochs on scenes (heaviest: {heaviest})",
        f"{batch} × {size}²",
        nb.where("TRAIN_SIZE"),
        params=costs[heaviest].params,
        gpu_bytes=max(peaks),
        step=costs[heaviest],
        step_name=heaviest,
        precision="AMP",
        flops=flops,
        host_bytes=2 * scene_bytes if once else 0,
        cpu_seconds=renders * _scenes_ms(size) / 1e3,
        note=(
            f"{len(costs)} × {steps} steps; "
            + (
                f"the {images} + {num_val} scenes rendered once and held as tensors"
                if once
                else "scenes rendered in the main process for every model and epoch"
            )
        ),
        fix_by="the issue's",
        fix="render with DataLoader workers (then the rendering overlaps the GPU time), or fewer "
        "scenes / epochs",
    )

    detector_kwargs = next(
        c.kwargs for c in nb.calls("build_mask_rcnn") if c.kwargs.get("backbone") == "resnet18"
    )
    detector_size = detector_kwargs["image_size"]
    d_steps, d_batch = nb["DETECTOR_STEPS"], nb["DETECTOR_BATCH"]
    # Mask R-CNN samples proposals by value, which meta tensors do not have: one real scene on
    # the CPU at batch 1, scaled linearly to the notebook's batch.
    torch.manual_seed(0)
    detector = build_mask_rcnn(len(ScenesDataset.thing_classes) + 1, **detector_kwargs)
    scene = ScenesDataset(length=1, image_size=detector_size, seed=2, return_instances=True)[0]
    target = instance_targets(scene[1], scene[2], ScenesDataset.thing_classes)

    def one_scene():
        images = [scene[0].clone()]  # (3, H, W) each
        targets = [{key: value.clone() for key, value in target.items()}]
        return (images, targets), None

    one = measure_step(
        _Wrapped(detector, lambda inputs: detector(*inputs)),
        one_scene,
        lambda losses, _: sum(losses.values()),
        1,
    )
    detector_step = one.scaled(d_batch)
    mask_rcnn = Phase(
        "08",
        f"Mask R-CNN {detector_kwargs['backbone']}-FPN, {d_steps} steps",
        f"{d_batch} × {detector_size}²",
        nb.where("DETECTOR_STEPS"),
        params=detector_step.params,
        gpu_bytes=resident + detector_step.peak_bytes,
        step=detector_step,
        step_name=f"Mask R-CNN (batch 1, scaled ×{d_batch})",
        flops=detector_step.step_flops * d_steps,
        cpu_seconds=d_steps * d_batch * _scenes_ms(detector_size) / 1e3,
        note=(
            f"measured at batch 1 on the CPU and scaled ×{d_batch} (data-dependent ops do not "
            "run on meta); the six segmentation models stay resident"
        ),
        fix="fewer steps",
    )
    return [six, mask_rcnn]


NOTEBOOK_PHASES = (
    notebook_01,
    notebook_02,
    notebook_03,
    notebook_04,
    notebook_05,
    notebook_06,
    notebook_07,
    notebook_08,
)


def compute() -> tuple[list[Phase], dict[str, float]]:
    rates = {precision: t4_flop_per_s(precision) for precision in T4_PEAK}
    return [phase for build in NOTEBOOK_PHASES for phase in build()], rates


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

PHASE_HEADER = (
    "notebook",
    "heaviest step",
    "batch × size",
    "parameters",
    "peak GPU GiB",
    "host RAM GiB",
    "FLOPs (train + eval)",
    "T4 min",
    "CPU-side min",
    "fits?",
)
NOTEBOOK_HEADER = (
    "notebook",
    "peak GPU GiB",
    "host RAM GiB",
    "FLOPs",
    "T4 min",
    "CPU-side min",
    "total min",
    "fits?",
)
MEMORY_HEADER = (
    "notebook",
    "step",
    "params + buffers",
    "grads",
    "Adam(W) states",
    "saved for backward",
    "forward temporaries",
    "tally",
    "traced",
    "estimate",
)


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def _flops(n: float) -> str:
    return "0" if n == 0 else f"{n / 1e15:.3g} PFLOP"


def _params(n: int) -> str:
    return "—" if n == 0 else f"{n / 1e6:.2f} M"


def _fits(misses: list[str]) -> str:
    return "yes" if not misses else "no: " + ", ".join(misses)


def phase_rows(phases: list[Phase], rates: dict[str, float]) -> list[tuple[str, ...]]:
    return [
        (
            p.notebook,
            p.name,
            p.shape + ("" if p.precision == "fp32" else f" ({p.precision})"),
            _params(p.params),
            _gib(p.gpu_bytes),
            _gib(p.host_bytes),
            _flops(p.flops),
            f"{p.gpu_minutes(rates):.1f}",
            f"{p.cpu_minutes():.1f}",
            _fits(p.misses(rates)),
        )
        for p in phases
    ]


def notebook_rows(phases: list[Phase], rates: dict[str, float]) -> list[tuple[str, ...]]:
    rows = []
    for notebook in sorted({p.notebook for p in phases}):
        mine = [p for p in phases if p.notebook == notebook]
        gpu = max(p.gpu_bytes for p in mine)
        host = max(p.host_bytes for p in mine)
        t4 = sum(p.gpu_minutes(rates) for p in mine)
        cpu = sum(p.cpu_minutes() for p in mine)
        misses = [
            name
            for name, over in (
                ("GPU", gpu > GPU_LIMIT),
                ("RAM", host > HOST_LIMIT),
                ("time", t4 + cpu > MINUTES_LIMIT),
            )
            if over
        ]
        rows.append(
            (
                notebook,
                _gib(gpu),
                _gib(host),
                _flops(sum(p.flops for p in mine)),
                f"{t4:.1f}",
                f"{cpu:.1f}",
                f"{t4 + cpu:.1f}",
                _fits(misses),
            )
        )
    return rows


def memory_rows(phases: list[Phase]) -> list[tuple[str, ...]]:
    rows = []
    for p in phases:
        s = p.step
        if s is None:
            continue
        rows.append(
            (
                p.notebook,
                f"{p.step_name}, batch {s.batch}",
                _gib(s.model_bytes),
                _gib(s.trainable_bytes),
                _gib(2 * s.trainable_bytes),
                _gib(s.saved_bytes),
                _gib(s.temporary_bytes),
                _gib(s.tally_bytes),
                _gib(s.traced_total_bytes),
                _gib(s.peak_bytes),
            )
        )
    return rows


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_tables(markdown: str) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Every Markdown table in `markdown`: header -> rows of cells (stripped strings)."""
    tables: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    header = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = tuple(c.strip() for c in line.strip().strip("|").split("|"))
        if header is None:
            header = cells
            tables[header] = []
        elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
            tables[header].append(cells)
    return tables


def render_tables(phases: list[Phase], rates: dict[str, float]) -> str:
    return "\n\n".join(
        [
            "### Per step\n\n" + markdown_table(PHASE_HEADER, phase_rows(phases, rates)),
            "### Per notebook\n\n" + markdown_table(NOTEBOOK_HEADER, notebook_rows(phases, rates)),
            "### Where the GPU memory goes (one training step, float32, GiB)\n\n"
            + markdown_table(MEMORY_HEADER, memory_rows(phases)),
        ]
    )


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def document(phases: list[Phase], rates: dict[str, float]) -> str:
    not_fitting = "\n".join(
        f"- **{p.notebook}, {p.name}**: over on {', '.join(p.misses(rates))} "
        f"({_gib(p.gpu_bytes)} GiB GPU, {_gib(p.host_bytes)} GiB RAM, "
        f"{p.gpu_minutes(rates) + p.cpu_minutes():.0f} min). Fix ({p.fix_by}): {p.fix}."
        for p in phases
        if p.misses(rates)
    )
    notes = "\n".join(
        f"- {p.notebook}, {p.name}: {p.note}. Constants: `{p.source}`." for p in phases if p.note
    )
    by_notebook = "; ".join(
        f"{row[0]} ({row[-1][4:]}, {row[6]} min in all)"
        for row in notebook_rows(phases, rates)
        if row[-1] != "yes"
    )
    moved_05 = (
        ""
        if any(p.misses(rates) for p in phases if p.notebook == "05")
        else (
            "Notebook 05 was on the issue's list (its U-Net trained on the CPU); since commit 0bf4c14\n"
            "it trains on the device (Kvasir-SEG), which is what is measured above.\n\n"
        )
    )
    what_changed = (
        "Notebooks 04, 07 and 08 did not fit at first (04: 17.3 GiB of GPU and "
        "17.9 GiB of\nhost RAM; 07: about 149 minutes; 08: about 26); what changed is in their "
        "notes below: 04's feature\ncache in float16 in host RAM, written into preallocated "
        "tensors, and its CRF in chunks; 07's main\nrun shortened, the loss comparison on a "
        "subset, loader workers, the earlier models freed; 08's\nscenes rendered once, fewer "
        "epochs and detector steps."
    )
    fit_section = (
        f"By notebook: {by_notebook}. By step:\n\n{not_fitting}"
        if not_fitting
        else f"Nothing: every step and every notebook is within the limits.\n\n{what_changed}"
    )
    cpu = MEASURED_ON_CPU
    fp32, amp = rates["fp32"], rates["AMP"]
    return f"""# Full mode's memory and time, measured rather than guessed

Generated by `python tools/full_mode_budget.py --write`; `tests/test_full_mode_budget.py`
recomputes every figure and fails if this file has drifted from the notebooks or the code.
Limits: peak GPU ≤ 12 GB ({GPU_LIMIT / GiB:.1f} GiB), host RAM ≤ 10 GB
({HOST_LIMIT / GiB:.1f} GiB), time ≤ {MINUTES_LIMIT:.0f} minutes per notebook on a Colab T4.
"T4 min" is GPU compute, "CPU-side min" the CPU work the GPU waits for; a step's "fits?" judges
that step alone, a notebook's the sum of its steps.

{render_tables(phases, rates)}

## Method

- **Constants** come from the notebooks' jupytext twins, read with `ast` as full mode sees them
  (`FAST = False`, `REHEARSAL = False`): image sizes, batch sizes, steps, epochs, numbers of
  images, model arguments, loop counts (the line of each phase's first constant is under "Notes
  per step"). Data-set sizes are the official split files: Pascal VOC 2012 segmentation train
  {VOC_TRAIN} / val {VOC_VAL}, Oxford-IIIT Pet trainval {PET_TRAINVAL} / test {PET_TEST}.
- **Models** are the course's own (`course_lib.models`, torchvision backbones), built on the
  `meta` device: shapes without data, so a ResNet-50 DeepLabV3 at 16 × 256² is measured in a
  second. Mask R-CNN picks its proposals by value, which meta tensors do not have: it runs one
  real scene on the CPU at batch 1 (random weights; the numbers of sampled proposals are fixed by
  its settings), and its activations and FLOPs are scaled linearly to the notebook's batch.
- **GPU memory of a step** = parameters and buffers + gradients + Adam(W)'s two state tensors +
  the tensors autograd saves for backward (`saved_tensors_hooks`, each storage once, the batch
  included) + the largest set of forward temporaries (live bytes minus saved bytes, after each
  operation). A second figure traces every storage alive during forward and backward (a
  `TorchDispatchMode` with a finalizer on each storage), which also sees backward's temporaries;
  the estimate is the larger of the two. Around the step comes what stays resident: notebook 04's
  feature cache and its other models, notebook 08's trained models. All in float32:
  `engine.fit` trains in mixed precision on a GPU, which roughly halves the activations, so the
  "(AMP)" rows are upper bounds. Not counted: the CUDA context and cuDNN workspaces (the 12 GB
  limit leaves 3 GB of a T4's 15 GB for them) and allocator fragmentation.
- **Host RAM** counts what the notebook itself holds at its peak (stacked tensors, CPU work traced
  the same way); the kernel (Python, torch, the CUDA libraries) comes on top, and is what the
  10 GB limit leaves Colab's 12.7 GB for.
- **FLOPs**: `torch.utils.flop_counter.FlopCounterMode` over forward + backward (matrix products
  and convolutions; element-wise operations are not counted), times the steps full mode runs,
  plus forward passes over the validation and prediction images. Its convolution-backward formula
  is replaced by one that honours `groups`: torch {torch.__version__.split("+")[0]} counts the
  weight gradient of a grouped convolution `groups` times too high (pytorch/pytorch#183405).
- **T4 minutes** = FLOPs / throughput, from one documented benchmark: NVIDIA's ResNet-50 v1.5 on
  a T4 (DeepLearningExamples, PyTorch ConvNets README, inference, batch 128: 426 img/s FP32,
  1190 img/s mixed precision) times that forward pass's FLOPs as counted here. That is
  **{fp32 / 1e12:.2f} TFLOP/s for float32 loops** ({fp32 / T4_PEAK["fp32"]:.0%} of the 8.1 TFLOP/s
  peak) and **{amp / 1e12:.2f} TFLOP/s for `engine.fit`'s mixed precision**
  ({amp / T4_PEAK["AMP"]:.0%} of the 65 TFLOP/s FP16 tensor-core peak: a 70 W T4 does not
  sustain the 30-40 % often assumed).
  These are inference rates at a large batch; training runs less efficiently per FLOP, so the
  minutes are lower bounds.
- **CPU-side minutes**: scenes and cells rendered and JPEGs decoded in the notebook's own process
  (loaders without workers), the CRF. Per-item costs were timed on this machine with one thread
  (`--measure` re-times them): a scene {cpu["scene_ms"][256]} ms at 256², cells
  {cpu["cells_ms"][256]} ms at 256², a 500 × 375 photograph decoded and augmented
  {cpu["photo_ms"]} ms, the CRF {cpu["crf_s_per_megapixel"]} s per megapixel. Colab's two vCPUs
  are one physical core, so these too are lower bounds. With loader workers only the loading
  beyond the GPU time counts.

## What does not fit

{fit_section}

{moved_05}Also found while measuring:

- `torch.cuda.is_bf16_supported()` returns True on a T4 (compute capability 7.5) because
  bfloat16 can be *emulated* there (`including_emulation=True` is its default), and a T4's tensor
  cores do not run bfloat16. `engine.resolve_amp("auto")` therefore asks
  `is_bf16_supported(including_emulation=False)` and picks float16 on a T4, which is what the
  mixed-precision rate above assumes.

## Notes per step

{notes}

## Not measured

- Notebook 08's COCO example (a pretrained Mask R-CNN ResNet-50-FPN and DeepLabV3 ResNet-50 on
  two photographs at 480 × 640): inference only, about 85 M parameters, negligible next to the
  training rows; Mask R-CNN does not run on meta tensors.
- Downloads (Pascal VOC about 2 GB, Oxford-IIIT Pet about 800 MB, Kvasir-SEG about 45 MB,
  weights), checkpoint writes (notebook 07 writes one per epoch), the small runs of notebook 07's
  sections 2 and 6 (its written-out loop on three batches, a few dozen steps), notebook 08's CPU
  speed measurement (a few batch-2 forward passes), and metrics computed on the CPU (HD95,
  boundary scores).
- Nothing here ran on a GPU. The figures bound the cost from the models' shapes; one epoch on a
  T4 is what will confirm them.
"""


# ---------------------------------------------------------------------------------------------
# Re-timing the CPU-side constants
# ---------------------------------------------------------------------------------------------


def measure_cpu_constants() -> dict:
    """Time the CPU-side items of MEASURED_ON_CPU on this machine (one thread)."""
    import numpy as np
    from PIL import Image

    from course_lib.crf import dense_crf
    from course_lib.data import CellsDataset, ScenesDataset
    from course_lib.models import UNet
    from course_lib.transforms import train_transforms

    torch.set_num_threads(1)

    def per_call(function, repeats=20) -> float:
        function()
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        return (time.perf_counter() - start) / repeats

    out: dict = {}
    model = UNet(in_channels=1, num_classes=1, base_channels=8, depth=3)
    optimizer = torch.optim.Adam(model.parameters())
    x, y = torch.rand(8, 1, 128, 128), (torch.rand(8, 128, 128) > 0.8).long()
    with flop_counter() as counter:
        bce_dice(model(x), y).backward()

    def step():
        optimizer.zero_grad()
        bce_dice(model(x), y).backward()
        optimizer.step()

    out["cpu_flop_per_s"] = counter.get_total_flops() / per_call(step, 5)
    out["scene_ms"] = {
        s: 1e3 * per_call(lambda s=s: ScenesDataset(8, s, seed=0)[3]) for s in (128, 192, 256)
    }
    out["cells_ms"] = {
        s: 1e3 * per_call(lambda s=s: CellsDataset(8, s, seed=0)[3]) for s in (128, 256)
    }
    scene, scene_mask = ScenesDataset(length=1, image_size=64, seed=0)[0]
    augment = train_transforms(64, seed=0)
    out["augment_64_ms"] = 1e3 * per_call(
        lambda: augment(image=scene.permute(1, 2, 0).numpy(), mask=scene_mask.numpy()), 200
    )
    photo = ScenesDataset(length=1, image_size=(375, 500), seed=0)[0][0]
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray((photo.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(jpeg, "JPEG")
    Image.fromarray(np.random.default_rng(0).integers(1, 4, (375, 500), dtype=np.uint8)).save(
        png, "PNG"
    )
    transform = train_transforms(256, seed=0)

    def load():
        image = (
            np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB"), dtype=np.float32)
            / 255
        )
        mask = np.asarray(Image.open(io.BytesIO(png.getvalue())), dtype=np.int64)
        transform(image=image, mask=mask)

    out["photo_ms"] = 1e3 * per_call(load)
    scenes = ScenesDataset(length=4, image_size=256, seed=2)
    images = torch.stack([scenes[i][0] for i in range(4)])
    probs = torch.rand(4, 6, 256, 256).softmax(1)
    seconds = per_call(lambda: dense_crf(probs, images, window=7, num_iterations=5), 2)
    out["crf_s_per_megapixel"] = seconds / (4 * 256 * 256 / 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="re-time the CPU-side constants on this machine and print them",
    )
    args = parser.parse_args(argv)
    if args.measure:
        print("measured here:", measure_cpu_constants())
        print("in use:       ", MEASURED_ON_CPU)
        return 0
    phases, rates = compute()
    print(render_tables(phases, rates))
    if args.write:
        DOC.write_text(document(phases, rates))
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
