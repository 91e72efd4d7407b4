"""Synthetic segmentation datasets that need no download: street scenes and microscopy nuclei.

Every sample is drawn from a local random generator seeded by `(seed, index)`, so the same
index gives the same sample on every machine, in any order, in any worker process. Shapes are
drawn with vectorised numpy (a 256x256 sample takes a few milliseconds).

Tensor contract of `dataset[i]`:
    image      (C, H, W) float32 in [0, 1]      C = 3 for scenes, 1 for cells
    mask       (H, W) int64 in [0, num_classes)
    instances  (H, W) int64, 0 = no object, 1..n one id per visible object   (return_instances=True)

With `transform`, the dataset calls `transform(image=image_hwc, mask=mask_hw)` on numpy arrays
(albumentations style) and returns `out["image"], out["mask"]` as the transform produced them,
except that a tensor mask is returned as int64 (the dtype cross-entropy expects).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

__all__ = ["ScenesDataset", "CellsDataset", "classic_scene"]

_MIN_SIZE = 8


def _check_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    elif isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair, got {image_size!r}")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        raise ValueError(f"image_size must hold ints, got {image_size!r}")
    if min(size) < _MIN_SIZE:
        raise ValueError(
            f"image_size must be at least {_MIN_SIZE} pixels per side, got {image_size!r}"
        )
    return int(size[0]), int(size[1])


def _check_nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, bilinearly upsampled. (H, W) float32."""
    cell = max(cell, 1.0)
    grid = rng.random((int(height / cell) + 2, int(width / cell) + 2), dtype=np.float32)
    y = np.arange(height, dtype=np.float32) / cell
    x = np.arange(width, dtype=np.float32) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0.astype(np.float32))[:, None], x - x0.astype(np.float32)
    columns = grid[:, x0] * (1 - fx) + grid[:, x0 + 1] * fx  # (grid_h, W)
    return columns[y0] * (1 - fy) + columns[y0 + 1] * fy  # (H, W)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Zero-mean pixel noise with standard deviation `std` (uniform: 3x cheaper than Gaussian)."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(std * math.sqrt(12))


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> np.ndarray:
    """Boolean mask of a filled ellipse rotated by `angle` radians (broadcast of yy and xx)."""
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u = (dx * c + dy * s) / max(rx, 0.5)
    v = (-dx * s + dy * c) / max(ry, 0.5)
    return u * u + v * v <= 1.0


def _box(yy: np.ndarray, xx: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Boolean mask of the axis-aligned box [y0, y1) x [x0, x1) (at least one pixel wide)."""
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def _to_tensors(image_hwc: np.ndarray, mask: np.ndarray, instances: np.ndarray):
    image = torch.from_numpy(np.ascontiguousarray(image_hwc.transpose(2, 0, 1)))  # (C, H, W)
    return image, torch.from_numpy(mask), torch.from_numpy(instances)


# ----------------------------------------------------------------------------- scenes

_BACKGROUND, _SKY, _ROAD, _CAR, _PERSON, _TREE = range(6)
_CAR_COLORS = np.array(
    [
        [0.80, 0.10, 0.10],
        [0.10, 0.25, 0.75],
        [0.90, 0.80, 0.15],
        [0.92, 0.92, 0.92],
        [0.15, 0.15, 0.18],
        [0.95, 0.50, 0.10],
    ],
    np.float32,
)


def _draw_car(yy, xx, rng, bottom, center, height, paint):
    width = 2.3 * height
    left = center - width / 2
    cabin_shift = rng.uniform(-0.08, 0.08) * width  # some cars face left, some right
    body = _box(yy, xx, bottom - 0.62 * height, left, bottom - 0.18 * height, left + width)
    cabin = _box(
        yy,
        xx,
        bottom - height,
        left + 0.22 * width + cabin_shift,
        bottom - 0.55 * height,
        left + 0.74 * width + cabin_shift,
    )
    window = _box(
        yy,
        xx,
        bottom - 0.9 * height,
        left + 0.27 * width + cabin_shift,
        bottom - 0.62 * height,
        left + 0.69 * width + cabin_shift,
    )
    wheel_r = 0.2 * height
    wheels = _ellipse(yy, xx, bottom - wheel_r, left + 0.22 * width, wheel_r, wheel_r) | _ellipse(
        yy, xx, bottom - wheel_r, left + 0.78 * width, wheel_r, wheel_r
    )
    color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1)
    paint(body | cabin, color)
    paint(window, np.array([0.35, 0.5, 0.6], np.float32) * rng.uniform(0.7, 1.0), label=False)
    paint(wheels, np.array([0.06, 0.06, 0.06], np.float32))


def _draw_person(yy, xx, rng, bottom, center, height, paint):
    head_r = 0.1 * height
    head = _ellipse(yy, xx, bottom - height + head_r, center, head_r, 0.85 * head_r)
    torso = _box(
        yy,
        xx,
        bottom - 0.8 * height,
        center - 0.14 * height,
        bottom - 0.45 * height,
        center + 0.14 * height,
    )
    arms = (
        _box(
            yy,
            xx,
            bottom - 0.78 * height,
            center - 0.2 * height,
            bottom - 0.5 * height,
            center + 0.2 * height,
        )
        & ~torso
    )
    hip = bottom - 0.47 * height
    legs = _box(yy, xx, hip, center - 0.12 * height, bottom, center - 0.02 * height) | _box(
        yy, xx, hip, center + 0.02 * height, bottom, center + 0.12 * height
    )
    shirt = rng.random(3).astype(np.float32) * 0.8 + 0.1
    paint(torso | arms, shirt)
    paint(head, np.array([0.93, 0.75, 0.6], np.float32) * rng.uniform(0.6, 1.0))
    paint(legs, np.array([0.15, 0.15, 0.35], np.float32) * rng.uniform(0.6, 1.3))


def _draw_tree(yy, xx, rng, bottom, center, height, paint):
    half = 0.06 * height
    trunk = _box(yy, xx, bottom - 0.5 * height, center - half, bottom, center + half)
    crown = _ellipse(yy, xx, bottom - 0.65 * height, center, 0.35 * height, 0.28 * height)
    paint(trunk, np.array([0.4, 0.25, 0.1], np.float32) * rng.uniform(0.8, 1.2))
    paint(crown, np.array([0.05, 0.35, 0.08], np.float32) * rng.uniform(0.8, 1.2), texture=1.2)


_DRAW = {_CAR: _draw_car, _PERSON: _draw_person, _TREE: _draw_tree}
_SIZE = {_CAR: 0.16, _PERSON: 0.32, _TREE: 0.45}  # object height at the bottom edge, fraction of H


def _render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    objects: list[tuple[int, float, float]] | None = None,
    layout: tuple[float, float, float] | None = None,
):
    """Draw one street scene with `rng`: numpy (image (H, W, 3), mask (H, W), instances (H, W)).

    `objects` is an optional list of (class_id, bottom, center) in fractions of the image height
    and width (class_id in car, person, tree) and `layout` an optional (horizon, road_top,
    road_bottom) in fractions of the height; by default both are drawn at random.

    Drawing paints integer "layers" (one per coloured part) into a canvas and looks the colours
    up once at the end; each object is drawn only inside a window around it.
    """
    yy = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    xx = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
    if layout is None:
        horizon = rng.uniform(0.3, 0.42)
        road_top = horizon + rng.uniform(0.2, 0.35) * (1 - horizon)
        road_bottom = min(road_top + rng.uniform(0.3, 0.45) * (1 - horizon), 1.0)
    else:
        horizon, road_top, road_bottom = layout

    mask = np.zeros((height, width), np.int64)
    instances = np.zeros((height, width), np.int64)
    layer = np.zeros((height, width), np.int64)  # index into colors / textures
    colors = [np.array([0.35, 0.6, 0.95], np.float32)]  # layer 0: sky, lighter towards the horizon
    textures = [0.0]  # strength of the noise texture on each layer

    def paint(region, color, label=None, instance=0, texture=0.0, window=(slice(None),) * 2):
        layer[window][region] = len(colors)
        colors.append(np.asarray(color, np.float32))
        textures.append(texture)
        if label is not None:
            mask[window][region] = label
            instances[window][region] = instance

    sky = (yy < horizon * height) & (xx >= 0)  # (H, W)
    paint(~sky, [0.3, 0.55, 0.2], label=_BACKGROUND, texture=0.35)
    road = (yy >= road_top * height) & (yy < road_bottom * height) & (xx >= 0)
    paint(road, np.array([0.38, 0.38, 0.4]) * rng.uniform(0.8, 1.2), label=_ROAD, texture=0.1)
    mask[sky] = _SKY
    lane_y = (road_top + road_bottom) / 2 * height
    lane = _box(yy, xx, lane_y - 0.006 * height, 0, lane_y + 0.006 * height, width)
    paint(lane & road & ((xx % (0.12 * width)) < 0.06 * width), [0.9, 0.9, 0.9])

    if objects is None:
        objects = []
        ground = 1 - horizon
        for _ in range(rng.integers(1, 4)):
            bottom = rng.uniform(road_top + 0.1 * (road_bottom - road_top), road_bottom)
            objects.append((_CAR, bottom, rng.uniform(0.1, 0.9)))
        for _ in range(rng.integers(1, 4)):
            bottom = rng.uniform(horizon + 0.15 * ground, 1.0)
            objects.append((_PERSON, bottom, rng.uniform(0.05, 0.95)))
        for _ in range(rng.integers(1, 3)):
            bottom = rng.uniform(horizon + 0.05 * ground, road_top)
            objects.append((_TREE, bottom, rng.uniform(0.05, 0.95)))
    objects = sorted(objects, key=lambda o: o[1])  # far (high in the image) first: near occlude far

    for instance_id, (class_id, bottom, center) in enumerate(objects, start=1):
        depth = (bottom - horizon) / (1 - horizon)  # 0 at the horizon, 1 at the bottom edge
        size = _SIZE[class_id] * height * (0.35 + 0.8 * depth)
        bottom, center = bottom * height, center * width  # in pixels
        y0, y1 = max(int(bottom - 1.05 * size) - 2, 0), min(int(bottom) + 2, height)
        x0, x1 = max(int(center - 1.3 * size) - 2, 0), min(int(center + 1.3 * size) + 2, width)
        window = (slice(y0, y1), slice(x0, x1))  # every part of the object lies inside

        def paint_part(
            region,
            color,
            label=True,
            texture=0.0,
            class_id=class_id,
            instance_id=instance_id,
            window=window,
        ):
            """A part of the object; a detail such as a car window keeps the label below it."""
            paint(region, color, class_id if label else None, instance_id, texture, window)

        _DRAW[class_id](yy[y0:y1], xx[:, x0:x1], rng, bottom, center, size, paint_part)

    visible = np.flatnonzero(np.bincount(instances.ravel(), minlength=len(objects) + 1))
    relabel = np.zeros(len(objects) + 1, np.int64)
    relabel[visible] = np.arange(len(visible))  # consecutive ids 1..n for the visible objects
    instances = relabel[instances]

    cell = max(2.0, max(height, width) / 40)
    noise = _smooth_noise(rng, height, width, cell) - 0.5  # (H, W)
    shade = 1.0 + np.asarray(textures, np.float32)[layer] * noise  # (H, W)
    image = np.stack(colors)[layer] * shade[..., None]  # (H, W, 3)
    image += (sky * (0.6 / height) * yy)[..., None]  # the sky lightens towards the horizon
    image *= rng.uniform(0.85, 1.1)
    image += _sensor_noise(rng, image.shape, rng.uniform(0.015, 0.045))
    np.clip(image, 0.0, 1.0, out=image)
    return image, mask, instances


class _SyntheticDataset(Dataset):
    """Indexing, argument checks and the transform hook shared by the synthetic datasets."""

    CLASSES: tuple[str, ...] = ()
    num_classes = 0
    thing_classes: tuple[int, ...] = ()
    stuff_classes: tuple[int, ...] = ()

    def __init__(
        self,
        length: int = 64,
        image_size: int | tuple[int, int] = 128,
        seed: int = 0,
        transform: Callable | None = None,
        return_instances: bool = False,
    ):
        self.length = _check_nonnegative_int("length", length)
        self.image_size = _check_size(image_size)
        self.seed = _check_nonnegative_int("seed", seed)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        if not isinstance(return_instances, bool):
            raise TypeError(f"return_instances must be a bool, got {return_instances!r}")
        if transform is not None and return_instances:
            raise ValueError(
                "transform and return_instances=True cannot be combined: a transform "
                "only moves image and mask; draw instances without a transform"
            )
        self.transform = transform
        self.return_instances = return_instances

    def __len__(self) -> int:
        return self.length

    def _index(self, index) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return index % self.length

    def _render(self, rng: np.random.Generator):
        raise NotImplementedError

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self._index(index)])
        image, mask, instances = self._render(rng)  # numpy (H, W, C), (H, W), (H, W)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            mask = out["mask"]
            if isinstance(mask, torch.Tensor) and mask.dtype != torch.int64:
                mask = mask.long()  # albumentations may hand int64 masks back as int32
            return out["image"], mask
        image, mask, instances = _to_tensors(image, mask, instances)
        return (image, mask, instances) if self.return_instances else (image, mask)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(length={self.length}, image_size={self.image_size}, "
            f"seed={self.seed}, num_classes={self.num_classes})"
        )


class ScenesDataset(_SyntheticDataset):
    """Street scenes with sky, grass, road, cars, people and trees, and their instance maps.

    `image, mask = ds[i]`: image (3, H, W) float32 in [0, 1], mask (H, W) int64 in [0, 6).
    With `return_instances=True`: `image, mask, instances = ds[i]`, instances (H, W) int64
    (0 on stuff, 1..n one id per visible car, person or tree). Objects nearer to the viewer
    (lower in the image) occlude farther ones, so an instance can be cut in two pieces.
    """

    CLASSES = ("background", "sky", "road", "car", "person", "tree")
    num_classes = len(CLASSES)
    thing_classes = (_CAR, _PERSON, _TREE)
    stuff_classes = (_BACKGROUND, _SKY, _ROAD)

    def _render(self, rng: np.random.Generator):
        return _render_scene(rng, *self.image_size)


def classic_scene(
    image_size: int | tuple[int, int] = 128, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classic illustration: two cars on a road and a person beside them, plus a tree.

    Returns tensors (image (3, H, W) float32, mask (H, W) int64, instances (H, W) int64) with the
    classes of `ScenesDataset`. The layout is fixed; `seed` only changes colours and noise.
    The two cars overlap, so connected components of the semantic mask merge them into one blob.
    """
    height, width = _check_size(image_size)
    rng = np.random.default_rng([_check_nonnegative_int("seed", seed), 2**31])
    objects = [(_TREE, 0.55, 0.12), (_CAR, 0.8, 0.33), (_CAR, 0.86, 0.56), (_PERSON, 0.93, 0.84)]
    return _to_tensors(*_render_scene(rng, height, width, objects, layout=(0.36, 0.62, 1.0)))


# ----------------------------------------------------------------------------- cells


def _render_cells(rng: np.random.Generator, height: int, width: int):
    """Draw one fluorescence-microscopy-like field of nuclei with `rng`.

    Returns numpy (image (H, W, 1) float32, mask (H, W) int64 0/1, instances (H, W) int64).
    Nuclei are rotated ellipses of varying size and brightness; some are placed against a
    neighbour so they touch. Nuclei cover 10-25 % of the image, as in typical nuclei data.
    """
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    side = min(height, width)
    target = rng.uniform(0.10, 0.25) * height * width
    instances = np.zeros((height, width), np.int64)
    image = np.zeros((height, width), np.float32)
    chromatin = _smooth_noise(rng, height, width, cell=max(1.5, side / 40))
    covered, count, previous = 0, 0, None
    for _ in range(400):
        if covered >= target:
            break
        r = max(1.5, rng.uniform(0.03, 0.07) * side)
        ry, rx, angle = r * rng.uniform(0.6, 1.0), r, rng.uniform(0, math.pi)
        if previous is not None and rng.random() < 0.4:  # touch the previous nucleus
            py, px, pr = previous
            theta = rng.uniform(0, 2 * math.pi)
            distance = (pr + 0.8 * ry) * 0.95
            cy, cx = py + distance * math.sin(theta), px + distance * math.cos(theta)
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, height)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, width)
        if y0 >= y1 or x0 >= x1:
            continue
        window = (slice(y0, y1), slice(x0, x1))
        shape = _ellipse(yy[y0:y1], xx[:, x0:x1], cy, cx, ry, rx, angle)
        free = shape & (instances[window] == 0)
        area = int(free.sum())
        if area < 4 or area < 0.7 * shape.sum() or ndimage.label(free)[1] != 1:
            continue  # hidden behind earlier nuclei, or cut in pieces: reject
        count += 1
        covered += area
        instances[window][free] = count
        brightness = rng.uniform(0.3, 0.95)
        image[window][free] = brightness * (0.7 + 0.3 * chromatin[window][free])
        previous = (cy, cx, min(ry, rx))

    illumination = 0.04 + 0.1 * _smooth_noise(rng, height, width, cell=side / 3)
    image = np.maximum(image, illumination * rng.uniform(0.5, 1.5))
    image = ndimage.gaussian_filter(image, sigma=max(0.5, side / 256))
    image += _sensor_noise(rng, image.shape, rng.uniform(0.01, 0.04))
    np.clip(image, 0.0, 1.0, out=image)
    return image[..., None], (instances > 0).astype(np.int64), instances


class CellsDataset(_SyntheticDataset):
    """Grayscale nuclei, like fluorescence microscopy: a binary segmentation task.

    `image, mask = ds[i]`: image (1, H, W) float32 in [0, 1], mask (H, W) int64 in {0, 1}.
    With `return_instances=True` also the instance map (H, W) int64 (one id per nucleus).
    Many nuclei touch, so instances cannot be recovered from the mask by connected components alone.
    """

    CLASSES = ("background", "nucleus")
    num_classes = 2
    thing_classes = (1,)
    stuff_classes = (0,)

    def _render(self, rng: np.random.Generator):
        return _render_cells(rng, *self.image_size)
