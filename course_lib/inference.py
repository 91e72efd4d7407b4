"""Inference: batched prediction, sliding-window inference on large images, flip test-time augmentation.

Tensor contract: images `(N, C, H, W)` float (a single `(C, H, W)` image is accepted), class
probabilities `(N, K, H, W)` summing to 1 over K, labels `(N, H, W)` int64. A model with a single
output channel is treated as binary: its probabilities are `(1 - sigmoid, sigmoid)`, K = 2.

Sliding-window inference cuts the (padded) image into overlapping windows of the training size,
runs the model on each and blends the window probabilities with a weight map: constant weights
(a plain average where windows overlap) or a Gaussian centred in the window, which trusts window
centres more than borders (the blending of nnU-Net, Isensee et al., 2021).

`segment` is the whole path from a normalised image of any size to an answer at that size: resize
by the training scale, slide the training window, resize back. Validation during training,
`evaluate` and `predict` of the command line all go through it, so the score measured in training
is the score of the masks the user gets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "probabilities",
    "predict",
    "window_weights",
    "window_positions",
    "sliding_window",
    "segment",
]

_FLIPS = {"hflip": (-1,), "vflip": (-2,)}


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_batch(images: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be (N, C, H, W) or (C, H, W), got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {images.dtype}")
    if images.ndim == 3:
        return images.unsqueeze(0), True
    return images, False


def _flip_list(tta: bool | tuple[str, ...] | list[str]) -> list[tuple[int, ...]]:
    if tta is False or tta is None:
        return [()]
    names = ("hflip",) if tta is True else tuple(tta)
    unknown = [n for n in names if n not in _FLIPS]
    if unknown:
        raise ValueError(f"tta must be a bool or a sequence of {tuple(_FLIPS)}, got {tta!r}")
    return [()] + [_FLIPS[n] for n in names]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or (1 - sigmoid, sigmoid) for a single-channel logit map."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, K, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits.float())  # (N, 1, H, W)
        return torch.cat([1 - foreground, foreground], dim=1)  # (N, 2, H, W)
    return torch.softmax(logits.float(), dim=1)  # (N, K, H, W)


@torch.no_grad()
def _probabilities_with_tta(
    model: nn.Module, batch: torch.Tensor, flips: list[tuple[int, ...]], as_logits: bool = False
) -> torch.Tensor:
    """Mean over the flips of the class probabilities (or of the raw logits, `as_logits`)."""
    total = None
    for dims in flips:
        x = torch.flip(batch, dims) if dims else batch
        out = model(x).float() if as_logits else probabilities(model(x))  # (n, K, h, w)
        out = torch.flip(out, dims) if dims else out  # back to the original orientation
        total = out if total is None else total + out
    return total / len(flips)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 8,
    output: str = "labels",
    tta: bool | tuple[str, ...] = False,
) -> torch.Tensor:
    """Run `model` in eval mode on `images` in batches.

    output: "labels" -> (N, H, W) int64; "probs" -> (N, K, H, W) float32.
    tta: True averages the probabilities of the image and its horizontal flip; a tuple such as
    ("hflip", "vflip") picks the flips. Results are returned on the device of `images`.
    """
    if output not in ("labels", "probs"):
        raise ValueError(f"output must be 'labels' or 'probs', got {output!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch, single = _as_batch(images, "images")
    flips = _flip_list(tta)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, batch.shape[0], batch_size):
        x = batch[start : start + batch_size].to(device)
        chunks.append(_probabilities_with_tta(model, x, flips).to(batch.device))
    model.train(was_training)
    probs = torch.cat(chunks)  # (N, K, H, W)
    result = probs.argmax(dim=1) if output == "labels" else probs
    return result[0] if single else result


def window_weights(
    window: tuple[int, int], blend: str = "gaussian", sigma_scale: float = 0.125
) -> torch.Tensor:
    """(h, w) weight map of one window: ones ("constant") or a Gaussian with sigma = sigma_scale * size.

    The Gaussian is scaled to a maximum of 1 and clipped below at 1e-3 so that every pixel of a
    window keeps some weight (image corners are covered by window corners only).
    """
    height, width = window
    if blend == "constant":
        return torch.ones(height, width)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale!r}")
    ys = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    gy = torch.exp(-0.5 * (ys / (sigma_scale * height)) ** 2)
    gx = torch.exp(-0.5 * (xs / (sigma_scale * width)) ** 2)
    weights = gy[:, None] * gx[None, :]  # (h, w), separable
    return (weights / weights.max()).clamp_min(1e-3).float()


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of length `window` covering `size` (size >= window), last flush right."""
    if size < window:
        raise ValueError(f"size ({size}) must be >= window ({window}); pad the image first")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


@torch.no_grad()
def sliding_window(
    model: nn.Module,
    image: torch.Tensor,
    window: int | tuple[int, int],
    overlap: float = 0.5,
    *,
    blend: str = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 4,
    output: str = "probs",
    tta: bool | tuple[str, ...] = False,
    pad_mode: str = "constant",
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Predict a large image window by window and blend the overlapping window probabilities.

    image: (N, C, H, W) or (C, H, W). window: the training size, an int or (h, w). overlap in
    [0, 1): the fraction of a window shared with its neighbour (stride = window * (1 - overlap)).
    An image smaller than the window (or whose border is not reached by the stride) is padded
    (`pad_mode` "constant" with `pad_value`, or "reflect"/"replicate") and the result cropped back.
    output: "probs" -> (N, K, H, W) float32, "labels" -> (N, H, W) int64, "logits" -> the blended
    raw model outputs (N, K_model, H, W) (one channel for a binary model), on the device of `image`.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if output not in ("labels", "probs", "logits"):
        raise ValueError(f"output must be 'labels', 'probs' or 'logits', got {output!r}")
    if pad_mode not in ("constant", "reflect", "replicate"):
        raise ValueError(f"pad_mode must be 'constant', 'reflect' or 'replicate', got {pad_mode!r}")
    batch, single = _as_batch(image, "image")
    win_h, win_w = _pair(window, "window")
    flips = _flip_list(tta)
    n, _, height, width = batch.shape
    stride_h = max(1, int(math.floor(win_h * (1 - overlap))))
    stride_w = max(1, int(math.floor(win_w * (1 - overlap))))
    pad_h, pad_w = max(0, win_h - height), max(0, win_w - width)
    if pad_mode == "reflect" and (pad_h >= height or pad_w >= width):
        pad_mode = "replicate"  # reflect padding needs the pad to be smaller than the image
    padded = batch
    if pad_h or pad_w:
        padded = F.pad(
            batch,
            (0, pad_w, 0, pad_h),
            mode=pad_mode,
            value=pad_value if pad_mode == "constant" else None,
        )  # (N, C, H', W')
    full_h, full_w = padded.shape[-2:]
    device = _model_device(model)
    weights = window_weights((win_h, win_w), blend, sigma_scale).to(device)  # (h, w)
    tops = window_positions(full_h, win_h, stride_h)
    lefts = window_positions(full_w, win_w, stride_w)
    boxes = [(top, left) for top in tops for left in lefts]
    was_training = model.training
    model.eval()
    results = []
    for index in range(n):
        accumulated = None
        weight_sum = torch.zeros(full_h, full_w, device=device)
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start : start + batch_size]
            crops = torch.stack([padded[index, :, t : t + win_h, x : x + win_w] for t, x in chunk])
            probs = _probabilities_with_tta(
                model, crops.to(device), flips, as_logits=output == "logits"
            )  # (b, K, h, w)
            if accumulated is None:
                accumulated = torch.zeros(probs.shape[1], full_h, full_w, device=device)
            for (top, left), window_probs in zip(chunk, probs):
                accumulated[:, top : top + win_h, left : left + win_w] += window_probs * weights
                weight_sum[top : top + win_h, left : left + win_w] += weights
        blended = accumulated / weight_sum  # (K, H', W'), every pixel covered at least once
        results.append(blended[:, :height, :width].to(batch.device))
    model.train(was_training)
    probs = torch.stack(results)  # (N, K, H, W)
    result = probs.argmax(dim=1) if output == "labels" else probs
    return result[0] if single else result


@torch.no_grad()
def segment(
    model: nn.Module,
    images: torch.Tensor,
    *,
    window: int,
    scale: float = 1.0,
    overlap: float = 0.5,
    tta: bool | tuple[str, ...] = False,
    batch_size: int = 4,
    output: str = "logits",
) -> torch.Tensor:
    """Whole images of any size, at the scale the model was trained on, answered at their own size.

    images: normalised (N, C, H, W) or (C, H, W). The images are resized by `scale` (bilinear,
    antialiased when shrinking, as the training crops were), cut into `window`-sized windows
    (`sliding_window`, padded when smaller), and the blended logits are resized back to (H, W).
    output: "logits" (N, K_model, H, W) float32, the blended raw outputs that losses and
    `metrics.ConfusionMatrix` take; "probs" (N, K, H, W); "labels" (N, H, W) by argmax.
    """
    if output not in ("logits", "probs", "labels"):
        raise ValueError(f"output must be 'logits', 'probs' or 'labels', got {output!r}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a positive factor, got {scale!r}")
    batch, single = _as_batch(images, "images")
    height, width = batch.shape[-2:]
    x = batch
    if scale != 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = F.interpolate(
            batch, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
        )  # (N, C, h, w)
    logits = sliding_window(
        model, x, window, overlap, batch_size=batch_size, output="logits", tta=tta
    )  # (N, K_model, h, w)
    if scale != 1:
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    if output != "logits":
        logits = probabilities(logits)
        logits = logits.argmax(dim=1) if output == "labels" else logits
    return logits[0] if single else logits
