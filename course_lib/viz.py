"""Pictures of segmentation: class colours, overlays, image / truth / prediction grids, instance and
panoptic colouring, training curves.

Every function accepts torch tensors (CPU or GPU, with or without grad) or numpy arrays.
    mask       (H, W) integer class ids in [0, 255]           -> colorize: (H, W, 3) uint8
    image      (3, H, W) / (1, H, W) as tensors, or (H, W, 3) / (H, W) as arrays;
               float in [0, 1] or uint8
    instances  (H, W) integer, 0 = no object                  -> colorize_instances: (H, W, 3) uint8
    panoptic   (H, W) integer, class_id * label_divisor + instance_id
The default palette is the one of PASCAL VOC (Everingham et al., 2010): class 0 black, 255 (void)
cream. `class_palette(class_names)` gives classes with familiar names the colours a reader expects
(sky blue, road grey, tree green, ...; `CLASS_COLORS`) and keeps VOC colours for the others;
`show_grid` uses it whenever it is given `class_names`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "CLASS_COLORS",
    "class_palette",
    "colorize",
    "overlay",
    "show_grid",
    "colorize_instances",
    "colorize_panoptic",
    "legend_handles",
    "plot_history",
]


def _voc_palette() -> np.ndarray:
    """The VOC colour map: the bits of the class id are spread over the high bits of R, G and B."""
    ids = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> channel) & 1  # bits 0, 3, 6 -> red; 1, 4, 7 -> green; 2, 5 -> blue
            palette[:, channel] |= bit << (7 - shift)
        ids = ids >> 3
    return palette.astype(np.uint8)


PALETTE: np.ndarray = _voc_palette()
"""(256, 3) uint8: the colour of each class id, VOC style (0 black, 1 dark red, ..., 255 cream)."""


CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "sky": (120, 180, 235),  # sky blue
    "road": (128, 128, 128),  # asphalt grey
    "car": (0, 0, 142),  # dark blue, as in Cityscapes
    "person": (220, 20, 60),  # crimson, as in Cityscapes
    "tree": (60, 150, 40),  # vegetation green
    "vegetation": (60, 150, 40),
    "building": (150, 110, 90),
    "nucleus": (255, 210, 60),  # bright, like a stained nucleus
    "cell": (255, 210, 60),
}
"""Colours (RGB 0-255) for class names whose look everybody knows; `class_palette` reads it."""


def class_palette(class_names: Sequence[str]) -> np.ndarray:
    """A (256, 3) uint8 palette: class i coloured by `CLASS_COLORS[class_names[i]]` when the name
    is known (case-insensitive), by its VOC colour otherwise; 255 (void) stays cream."""
    if isinstance(class_names, str) or len(class_names) > 255:
        raise ValueError(
            f"class_names must be a sequence of at most 255 names, got {class_names!r:.80}"
        )
    palette = PALETTE.copy()
    for index, name in enumerate(class_names):
        color = CLASS_COLORS.get(str(name).lower())
        if color is not None:
            palette[index] = color
    return palette


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def _label_map(x, name: str, max_value: int | None = 255) -> np.ndarray:
    """Check and convert an (H, W) integer map; values in [0, max_value]."""
    array = _to_numpy(x, name)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {tuple(array.shape)}")
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer ids, got dtype {array.dtype}; "
            "for logits (K, H, W) take .argmax(0) first"
        )
    if array.size and (array.min() < 0 or (max_value is not None and array.max() > max_value)):
        raise ValueError(
            f"{name} must hold values in [0, {max_value}], "
            f"got values from {array.min()} to {array.max()}"
        )
    return array.astype(np.int64)


def _image_hwc(image, name: str = "image") -> np.ndarray:
    """Any supported image layout -> (H, W, 3) float32 in [0, 1].

    Float images outside [0, 1] (for example normalised with ImageNet statistics) are stretched
    to [0, 1] so they can still be looked at.
    """
    is_tensor = isinstance(image, torch.Tensor)
    array = _to_numpy(image, name)
    if array.ndim == 3:
        channels_first = array.shape[0] in (1, 3) and (is_tensor or array.shape[-1] not in (1, 3))
        if channels_first:
            array = array.transpose(1, 2, 0)  # (H, W, C)
        elif array.shape[-1] not in (1, 3):
            raise ValueError(f"{name} must have 1 or 3 channels, got shape {tuple(array.shape)}")
    elif array.ndim == 2:
        array = array[..., None]
    else:
        raise ValueError(
            f"{name} must be (C, H, W), (H, W, C) or (H, W), got shape {tuple(array.shape)}"
        )
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        array = array.astype(np.float32)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
        if low < 0.0 or high > 1.0:
            array = (array - low) / max(high - low, 1e-12)
    else:
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got dtype {array.dtype}")
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def colorize(mask: torch.Tensor | np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Class ids (H, W) -> RGB (H, W, 3) uint8, one palette colour per class."""
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be (num_colors, 3), got shape {palette.shape}")
    labels = _label_map(mask, "mask", max_value=len(palette) - 1)
    return palette.astype(np.uint8)[labels]


def overlay(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    skip_background: bool = True,
    palette: np.ndarray = PALETTE,
) -> np.ndarray:
    """Blend the class colours of `mask` over `image`: (H, W, 3) uint8.

    `alpha` is the weight of the mask colour; with `skip_background` class 0 stays unblended.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    rgb = _image_hwc(image)
    colors = colorize(mask, palette).astype(np.float32) / 255.0
    if rgb.shape[:2] != colors.shape[:2]:
        raise ValueError(
            f"image is {rgb.shape[0]}x{rgb.shape[1]} but mask is "
            f"{colors.shape[0]}x{colors.shape[1]}; they must have the same size"
        )
    weight = np.full(rgb.shape[:2] + (1,), alpha, np.float32)  # (H, W, 1)
    if skip_background:
        weight[_label_map(mask, "mask") == 0] = 0.0
    blended = (1.0 - weight) * rgb + weight * colors
    return np.round(blended * 255.0).astype(np.uint8)


def _instance_colors(count: int) -> np.ndarray:
    """(count + 1, 3) uint8: black for id 0, then well-spread hues (golden-ratio steps)."""
    from matplotlib.colors import hsv_to_rgb

    ids = np.arange(1, count + 1)
    hsv = np.stack(
        [
            (ids * 0.618033988749895) % 1.0,
            0.55 + 0.35 * ((ids * 0.37) % 1.0),
            0.8 + 0.2 * ((ids * 0.71) % 1.0),
        ],
        axis=1,
    )
    colors = np.zeros((count + 1, 3), np.uint8)
    colors[1:] = np.round(hsv_to_rgb(hsv) * 255).astype(np.uint8)
    return colors


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """True where a pixel's right or lower neighbour carries another label. (H, W) bool."""
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def colorize_instances(
    instances: torch.Tensor | np.ndarray, boundaries: bool = False
) -> np.ndarray:
    """Instance ids (H, W) -> (H, W, 3) uint8: 0 black, each object its own colour.

    Colours depend only on the id, so the same id has the same colour in every picture.
    With `boundaries`, object outlines are drawn in white.
    """
    ids = _label_map(instances, "instances", max_value=None)
    rgb = _instance_colors(int(ids.max()) if ids.size else 0)[ids]
    if boundaries:
        rgb[_boundaries(ids)] = 255
    return rgb


def colorize_panoptic(
    panoptic: torch.Tensor | np.ndarray,
    label_divisor: int = 1000,
    boundaries: bool = True,
    palette: np.ndarray = PALETTE,
) -> np.ndarray:
    """Panoptic ids (class_id * label_divisor + instance_id) -> (H, W, 3) uint8.

    Each pixel takes its class colour; the pixels of a counted object (instance_id > 0) are made
    lighter or darker by an amount that depends on the instance id, and with `boundaries` the
    outlines between segments are drawn in white, so touching objects of one class stay apart.
    """
    if isinstance(label_divisor, bool) or not isinstance(label_divisor, int) or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    ids = _label_map(panoptic, "panoptic", max_value=256 * label_divisor - 1)
    classes, instance_ids = ids // label_divisor, ids % label_divisor  # (H, W), (H, W)
    rgb = np.asarray(palette)[classes].astype(np.float32)
    spread = (instance_ids * 0.618033988749895) % 1.0  # golden-ratio steps: neighbours differ
    factor = np.where(instance_ids > 0, 0.55 + 0.9 * spread, 1.0)
    rgb = np.clip(rgb * factor[..., None] + 40.0 * (instance_ids > 0)[..., None], 0, 255)
    rgb = rgb.astype(np.uint8)
    if boundaries:
        rgb[_boundaries(ids)] = 255
    return rgb


def legend_handles(
    class_names: Sequence[str],
    class_ids: Sequence[int] | None = None,
    palette: np.ndarray = PALETTE,
) -> list:
    """Matplotlib patches for `ax.legend(handles=...)`: one coloured square per class."""
    from matplotlib.patches import Patch

    ids = range(len(class_names)) if class_ids is None else class_ids
    return [
        Patch(facecolor=palette[i] / 255.0, edgecolor="gray", label=class_names[i]) for i in ids
    ]


def _batch(x, name: str) -> list:
    """A batch tensor/array or a list of samples -> list of samples."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return [x[i] for i in range(x.shape[0])]
    raise TypeError(f"{name} must be a batch tensor/array or a list, got {type(x).__name__}")


def show_grid(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    masks: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    predictions: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_rows: int = 4,
    cell_size: float = 2.2,
    titles: Sequence[str] | None = None,
) -> Figure:
    """One row per sample: image | ground truth | prediction (colour-coded classes).

    images (N, C, H, W) or a list; masks (N, H, W); predictions (N, H, W) class ids or
    (N, K, H, W) logits (the arg-max is shown). `class_names` colours the classes with
    `class_palette(class_names)` and adds a legend of the classes seen. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
    images, masks = _batch(images, "images"), _batch(masks, "masks")
    if len(images) != len(masks):
        raise ValueError(f"images has {len(images)} samples but masks has {len(masks)}")
    columns = [images, masks]
    if predictions is not None:
        if isinstance(predictions, (torch.Tensor, np.ndarray)) and predictions.ndim == 4:
            predictions = predictions.argmax(1)  # logits (N, K, H, W) -> (N, H, W)
        predictions = _batch(predictions, "predictions")
        if len(predictions) != len(images):
            raise ValueError(
                f"predictions has {len(predictions)} samples but images has {len(images)}"
            )
        columns.append(predictions)
    titles = list(titles or ["image", "ground truth", "prediction"])[: len(columns)]
    rows = min(len(images), max_rows)
    figsize = (cell_size * len(columns), cell_size * rows)
    fig, axes = plt.subplots(rows, len(columns), figsize=figsize, squeeze=False)
    names = ["images", "masks", "predictions"]
    palette = PALETTE if class_names is None else class_palette(class_names)
    seen: set[int] = set()
    for r in range(rows):
        axes[r, 0].imshow(_image_hwc(images[r], f"images[{r}]"))
        for c in range(1, len(columns)):
            labels = _label_map(columns[c][r], f"{names[c]}[{r}]")
            seen |= set(np.unique(labels).tolist())
            axes[r, c].imshow(colorize(labels, palette), interpolation="nearest")
        for c in range(len(columns)):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c])
    if class_names is not None:
        shown = [i for i in sorted(seen) if i < len(class_names)]
        fig.legend(
            handles=legend_handles(class_names, shown, palette),
            loc="lower center",
            ncol=max(min(len(shown), 6), 1),
            frameon=False,
            fontsize="small",
        )
    fig.tight_layout(rect=(0, 0.06 if class_names is not None else 0, 1, 1))
    return fig


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def plot_history(history: dict, figsize: tuple[float, float] = (9.0, 3.2)) -> Figure:
    """Training curves from a history dict of per-epoch lists: losses left, other metrics right.

    Entries that are not lists of numbers (for example per-class IoU lists) are skipped.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of per-epoch lists, got {type(history).__name__}")
    curves = {
        k: [float(v) for v in values]
        for k, values in history.items()
        if isinstance(values, (list, tuple)) and values and all(map(_is_number, values))
    }
    if not curves:
        raise ValueError(f"history has no list of numbers to plot; keys: {sorted(history)}")
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=figsize)
    for name, values in curves.items():
        ax = loss_ax if "loss" in name else metric_ax
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    for ax, title in ((loss_ax, "loss"), (metric_ax, "metrics")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig
