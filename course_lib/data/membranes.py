"""Electron-microscopy membranes, ISBI 2012 style: a folder of "own data" drawn on any machine.

The ISBI 2012 challenge (Arganda-Carreras et al., 2015, "Crowdsourcing the creation of image
segmentation algorithms for connectomics") segments cell membranes in serial-section EM slices:
512x512 grayscale images in which the membranes, dark lines a few pixels wide that close around
every cell, cover about 20 % of the pixels. This module draws look-alikes, so that training on a
folder of one's own images can be shown, and benchmarked, without a download:

- cells: the Voronoi regions of seed points on a jittered grid, in coordinates warped by smooth
  noise so that the boundaries curve as real membranes do;
- membranes: the pixels whose nearest and second-nearest seed distances are close,
  `d2 - d1 < width(y, x)`: lines a few pixels wide whose width varies along them, scaled so that
  they cover a drawn share of the image (15-25 %) and forming one connected network;
- what makes it a segmentation problem and not a threshold: cells of different tone with a
  grainy texture, dark organelles (mitochondria, vesicles) that are NOT membrane, membrane
  stretches that are faint, uneven illumination, blur and sensor noise. A pixel's own intensity
  does not tell membrane from organelle; the shape around it (a long thin line) does.

Contract:
    membrane_sample(size, rng=...)    -> image (H, W) uint8, mask (H, W) uint8 in {0, 255}
    write_membrane_folder(root, ...)  -> the folder, in the layout `SegmentationFolder` and
                                         `python -m course_lib train --images ... --masks ...` read:
        root/train/images/slice_000.png   <->  root/train/masks/slice_000.png
        root/test/images/slice_024.png    <->  root/test/masks/slice_024.png
Masks hold 0 (background) and 255 (membrane), the usual format of binary medical masks, which the
folder reader decodes to classes 0 and 1.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from course_lib.atomic import write_bytes_atomic
from course_lib.data.synthetic import _check_nonnegative_int

__all__ = ["membrane_sample", "write_membrane_folder"]

_MIN_SIZE = 64
_SUBFOLDERS = ("train/images", "train/masks", "test/images", "test/masks")
_FILE_NAME = re.compile(r"slice_\d+\.png")  # what write_membrane_folder writes (and may replace)


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise ValueError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(size) < _MIN_SIZE:
        raise ValueError(
            f"size must be at least {_MIN_SIZE} pixels per side (a cell is about "
            f"40 pixels across), got {size!r}"
        )
    return int(size[0]), int(size[1])


def _spline_weights(length: int, nodes: int, scale: float) -> np.ndarray:
    """Cubic B-spline weights of `nodes` grid nodes `scale` pixels apart at `length` pixels.

    (length, nodes) float32; each row sums to 1. Multiplying a coarse grid by these on both sides
    upsamples it smoothly: the same result as `ndimage.zoom` with a B-spline, ten times faster.
    """
    offset = np.abs((np.arange(length) + 0.5)[:, None] / scale + 1.0 - np.arange(nodes)[None, :])
    near = 2.0 / 3.0 - offset**2 + 0.5 * offset**3  # |offset| < 1
    far = np.clip(2.0 - offset, 0.0, None) ** 3 / 6.0  # 1 <= |offset| < 2, 0 beyond
    return np.where(offset < 1.0, near, far).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Noise whose features are about `scale` pixels across; zero mean, unit std. (H, W) float32.

    A coarse grid of Gaussian values, upsampled by a cubic B-spline: far cheaper than blurring
    full-size white noise with a wide Gaussian, and as smooth.
    """
    height, width = shape
    rows = _spline_weights(height, int(height / scale) + 4, scale)  # (H, gh)
    cols = _spline_weights(width, int(width / scale) + 4, scale)  # (W, gw)
    grid = rng.standard_normal((rows.shape[1], cols.shape[1])).astype(np.float32)  # (gh, gw)
    field = rows @ grid @ cols.T  # (H, W)
    return (field - field.mean()) / (field.std() + 1e-6)


def _seed_points(rng: np.random.Generator, height: int, width: int, spacing: float) -> np.ndarray:
    """Cell centres: a square grid `spacing` apart, each point moved at random. (P, 2) as (y, x)."""
    rows = np.arange(-1, height / spacing + 1)  # one row beyond each border: no empty margins
    cols = np.arange(-1, width / spacing + 1)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)  # (P, 2)
    return (grid + rng.uniform(-0.3, 0.3, grid.shape)) * spacing


def _dark_blobs(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, coverage: float
) -> np.ndarray:
    """Blobs about `scale` pixels across covering roughly `coverage` of the image. (H, W) bool."""
    noise = _smooth_noise(rng, shape, scale)
    return noise > np.quantile(noise, 1.0 - coverage)


def membrane_sample(
    size: int | tuple[int, int] = 512, *, rng: np.random.Generator | int
) -> tuple[np.ndarray, np.ndarray]:
    """One EM-like slice and its membrane mask: image (H, W) uint8, mask (H, W) uint8 in {0, 255}.

    `rng` is a numpy Generator (drawn from, so consecutive calls differ) or a seed (the same seed
    gives the same sample on every machine). A 512x512 sample takes 0.1-0.2 s on one CPU core.
    """
    height, width = _check_size(size)
    rng = np.random.default_rng(rng)
    shape = (height, width)

    # Cells: Voronoi regions of jittered seeds, in coordinates bent by smooth noise.
    spacing = rng.uniform(34.0, 42.0)  # cell diameter in pixels
    seeds = _seed_points(rng, height, width, spacing)  # (P, 2)
    bend = 0.18 * spacing
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each
    yy += bend * _smooth_noise(rng, shape, spacing)
    xx += bend * _smooth_noise(rng, shape, spacing)
    coords = np.stack([yy.ravel(), xx.ravel()], axis=1)  # (H*W, 2)
    distances, nearest = cKDTree(seeds).query(coords, k=2)  # (H*W, 2) each, sorted by distance
    gap = (distances[:, 1] - distances[:, 0]).reshape(shape).astype(np.float32)  # 0 on a boundary
    cell = nearest[:, 0].reshape(shape)  # (H, W) id of the cell a pixel lies in

    # Membranes: gap < width; width varies along the lines and is scaled to the drawn coverage.
    profile = np.exp(0.22 * _smooth_noise(rng, shape, 24.0))  # relative width, about 0.65-1.55
    coverage = rng.uniform(0.17, 0.23)
    width_scale = np.quantile(gap / profile, coverage)
    line_width = width_scale * profile  # (H, W) membrane width in pixels, about 2-6
    membrane = gap < line_width  # (H, W) bool: the mask

    # Intensities in [0, 1]: cytoplasm, then dark organelles and membranes on top of it.
    tone = rng.normal(0.0, 0.05, len(seeds)).astype(np.float32)[cell]  # each cell its own tone
    image = (
        0.64 + tone + 0.05 * _smooth_noise(rng, shape, 12.0) + 0.04 * _smooth_noise(rng, shape, 2.5)
    )  # (H, W) grainy cytoplasm
    inside = gap > line_width + 5  # organelles keep off the membranes, so the mask stays exact
    mitochondria = _dark_blobs(rng, shape, rng.uniform(6.0, 9.0), 0.05) & inside
    vesicles = _dark_blobs(rng, shape, 2.0, 0.02) & inside
    organelles = ndimage.gaussian_filter((mitochondria | vesicles).astype(np.float32), 1.0)
    image -= rng.uniform(0.28, 0.38) * organelles
    darkness = 0.38 + 0.12 * np.tanh(_smooth_noise(rng, shape, 30.0))  # 0.26 (faint) to 0.5
    line = np.exp(-0.8 * (gap / line_width) ** 2)  # 1 on the boundary, 0.45 at the mask's edge
    image -= darkness * line
    image *= 1.0 + 0.08 * _smooth_noise(rng, shape, 160.0)  # uneven illumination
    image = ndimage.gaussian_filter(image, rng.uniform(0.7, 1.1))  # the microscope's blur
    image += rng.normal(0.0, rng.uniform(0.05, 0.07), shape).astype(np.float32)  # sensor noise

    image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return image_u8, membrane.astype(np.uint8) * 255


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # mode "L": 8-bit grayscale
    return buffer.getvalue()


def write_membrane_folder(
    root: str | os.PathLike,
    *,
    num_train: int = 24,
    num_test: int = 6,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a train/test folder of membrane slices; returns the paths of its four subfolders.

    Layout: `root/{train,test}/{images,masks}/slice_NNN.png`, an image and its mask sharing the
    stem; train slices are numbered from 0, test slices after them, like slices of one stack.
    Slice `i` is drawn from the seed `(seed, i)`, so a seed gives the same folder on every
    machine. Each file is written atomically (a reader never sees half a PNG).

    A folder that already holds files is refused with a FileExistsError, so an earlier data set
    (or someone's own images) is never replaced silently; `overwrite=True` rewrites the slices
    and removes stale `slice_NNN.png` files of an earlier, larger folder (other files are kept).
    """
    num_train = _check_nonnegative_int("num_train", num_train)
    num_test = _check_nonnegative_int("num_test", num_test)
    size = _check_size(size)
    seed = _check_nonnegative_int("seed", seed)
    root = Path(root)
    paths = {name.replace("/", "_"): root / name for name in _SUBFOLDERS}
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another root")
    existing = [path for path in root.rglob("*") if path.is_file()] if root.exists() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{root} already holds {len(existing)} files (e.g. {existing[0]}); "
            f"choose an empty folder or pass overwrite=True to replace them"
        )

    indices = {"train": range(num_train), "test": range(num_train, num_train + num_test)}
    for split, split_indices in indices.items():
        stems = [f"slice_{index:03d}" for index in split_indices]
        for index, stem in zip(split_indices, stems):
            image, mask = membrane_sample(size, rng=np.random.default_rng([seed, index]))
            write_bytes_atomic(paths[f"{split}_images"] / f"{stem}.png", _png_bytes(image))
            write_bytes_atomic(paths[f"{split}_masks"] / f"{stem}.png", _png_bytes(mask))
        for kind in ("images", "masks"):
            folder = paths[f"{split}_{kind}"]
            folder.mkdir(parents=True, exist_ok=True)  # an empty split still has its folders
            for path in folder.iterdir():
                if _FILE_NAME.fullmatch(path.name) and path.stem not in stems:
                    path.unlink()  # left over from an earlier folder with more slices
    return paths
