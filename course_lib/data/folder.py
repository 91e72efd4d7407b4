"""A dataset of your own: a folder of images and a folder of PNG masks, paired by file stem.

    images/cat_001.jpg  <->  masks/cat_001.png        (mask_suffix="" , the default)
    images/ISIC_0001.jpg <-> masks/ISIC_0001_segmentation.png   (mask_suffix="_segmentation")

Masks are stored in one of four ways, all decoded to an `(H, W)` int64 label map:
- "index":   8/16-bit grayscale PNG whose pixel value is the class id (optionally remapped by
             `value_to_class`, e.g. {0: 0, 128: 1, 255: 2});
- "palette": palette PNG (mode "P", the Pascal VOC format): the palette index is the class id and
             the colours are only for display;
- "rgb":     colour PNG, decoded through `color_to_class`, e.g. {(0, 0, 0): 0, (255, 0, 0): 1};
- "binary":  0/255 (or 0/1) masks, the usual medical format (Kvasir-SEG, ISIC), mapped to 0/1;
             with `mask_threshold=t` any grayscale mask is binarised instead: class 1 where the
             stored value is >= t, class 0 below (every pixel, `ignore_index` too, becomes 0 or 1).
             t is compared with stored values: 128 suits 8-bit masks, 32768 16-bit ones.

Masks are mapped on purpose, never by accident. The trap: a folder of 0/255 masks in which one
file holds a stray 128 (an anti-aliased edge) or dozens of values (a mask once saved as JPEG) looks
like class ids up to 255, and `num_classes = max + 1` would give a 129-class model that learns
nothing. So `mask_format="auto"` decides as follows:
- "rgb" when `color_to_class` is given, "palette" when every mask is a palette PNG (the indices are
  class ids), "binary" when `mask_threshold` is given;
- "binary" when every mask is grayscale, some hold 255, and each mask without stray values
  (below) holds only 0 and 255 (and `num_classes` is None or 2 and no `value_to_class` is given);
- else "index": stored values are class ids.
Without `num_classes` or `value_to_class`, a grayscale value is taken as a class id only when it is
below `MAX_AUTO_CLASS_ID` (or is `ignore_index`). A mask holding a larger value (a stray value) is
a problem that names the file and the values and points to the fix: `mask_threshold=128`
(`--mask-threshold 128` on the command line) to binarise, or `num_classes` / `value_to_class` when
the values really are class ids. Such a mask does not take part in choosing the format, so with
`strict=False` the clean 0/255 masks are still read as binary.

`ds.mask_mapping` reports the decision as the constructor arguments that rebuild it, and
`ds.describe_mapping()` says it in one line (see the method docs).

The folder is checked on construction: an image without a mask and a mask without an image,
unreadable or truncated files, image/mask sizes that differ, masks that are not PNG and labels
outside `[0, num_classes)` other than `ignore_index`. Each problem names the file. `strict=True`
raises a ValueError; `strict=False` keeps the good pairs and lists the problems in `.problems`.
Checking decodes every file once; for thousands of large photographs `check_files=False` only
pairs the names (give `mask_format` and `num_classes`) and each sample is checked when loaded.

Contract (as the synthetic datasets): `image, mask = ds[i]`, image `(C, H, W)` float32 in [0, 1]
(C = 3 for image_mode "RGB", 1 for "L"), mask `(H, W)` int64. With `transform`, the dataset calls
`transform(image=(H, W, C) float32 numpy, mask=(H, W) int64 numpy)` and returns its "image" and
"mask".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "SegmentationFolder",
    "IMAGE_EXTENSIONS",
    "MASK_FORMATS",
    "MAX_AUTO_CLASS_ID",
    "image_array",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_FORMATS = ("auto", "index", "palette", "rgb", "binary")
# Grayscale values below this are read as class ids when num_classes is inferred (max + 1). Real
# class-id masks rarely need more; a larger value usually means anti-aliasing or JPEG noise.
MAX_AUTO_CLASS_ID = 32
_IMAGE_MODES = ("RGB", "L")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # how PIL opens 16-bit grayscale files


def image_array(pil: Image.Image, image_mode: str, path: str | Path) -> np.ndarray:
    """A PIL image as a (H, W, C) float32 array in [0, 1], C = 3 for "RGB", 1 for "L".

    16-bit grayscale (microscopy, medical scans) is divided by 65535: PIL's `convert("L")` would
    clip every value above 255 to white instead of rescaling it.
    """
    if pil.mode == "F":
        raise ValueError(
            f"{path}: floating-point image (PIL mode 'F'); save it as an 8- or 16-bit image"
        )
    if pil.mode not in _SIXTEEN_BIT_MODES:
        array = np.asarray(pil.convert(image_mode), dtype=np.float32) / 255.0
        return array[:, :, None] if array.ndim == 2 else array
    gray = np.asarray(pil, dtype=np.float32)  # (H, W)
    if gray.size and (gray.min() < 0 or gray.max() > 65535):
        raise ValueError(
            f"{path}: 32-bit integer image with values {gray.min():.0f}.."
            f"{gray.max():.0f}, outside 16 bits (0..65535); rescale it to 8 or 16 bits"
        )
    gray = gray[:, :, None] / 65535.0  # (H, W, 1)
    return gray if image_mode == "L" else np.repeat(gray, 3, axis=2)


class SegmentationFolder(Dataset):
    """Images and masks in two folders, paired by stem, checked on construction (see module doc)."""

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        transform: Callable | None = None,
        num_classes: int | None = None,
        mask_format: str = "auto",
        color_to_class: Mapping[tuple[int, int, int], int] | None = None,
        value_to_class: Mapping[int, int] | None = None,
        ignore_index: int = 255,
        image_mode: str = "RGB",
        strict: bool = True,
        mask_suffix: str = "",
        check_files: bool = True,
        mask_threshold: int | None = None,
    ):
        self.image_dir = _existing_dir(image_dir, "image_dir")
        self.mask_dir = _existing_dir(mask_dir, "mask_dir")
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
        if image_mode not in _IMAGE_MODES:
            raise ValueError(f"image_mode must be 'RGB' or 'L', got {image_mode!r}")
        if num_classes is not None and not _is_count(num_classes, minimum=1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        if not _is_count(ignore_index, minimum=0):
            raise ValueError(f"ignore_index must be a non-negative int, got {ignore_index!r}")
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable as transform(image=..., mask=...), got {transform!r}"
            )
        self.color_to_class = _check_color_table(color_to_class, mask_format)
        self.value_to_class = _check_value_table(value_to_class, mask_format)
        self.mask_threshold = _check_threshold(
            mask_threshold, mask_format, num_classes, value_to_class, color_to_class
        )
        if self.mask_threshold is not None:
            mask_format, num_classes = "binary", 2
        self.transform = transform
        self.ignore_index = ignore_index
        self.image_mode = image_mode
        self.mask_suffix = mask_suffix
        if not check_files and (mask_format == "auto" or num_classes is None):
            raise ValueError(
                "check_files=False reads no mask on construction, so give mask_format "
                f"and num_classes explicitly (got mask_format={mask_format!r}, "
                f"num_classes={num_classes!r})"
            )
        self.check_files = check_files
        self._requested_format = mask_format
        self._requested_classes = num_classes
        self.samples, self.problems, self.mask_format, self.num_classes = self._scan()
        if self.problems and strict:
            more = len(self.problems) - 1
            tail = (
                f"\n(and {more} more; SegmentationFolder(..., strict=False).problems "
                "lists them all)"
                if more
                else ""
            )
            raise ValueError(f"{self.problems[0]}{tail}")

    @property
    def mask_mapping(self) -> dict:
        """How mask values become classes, as the constructor arguments that rebuild it.

        `SegmentationFolder(image_dir, mask_dir, **ds.mask_mapping)` decodes every mask to the
        same labels. Keys: mask_format, mask_threshold, value_to_class, color_to_class,
        num_classes, ignore_index. The values are plain Python data (str, int, None, dict), fit for
        a `torch.save` checkpoint; value_to_class keys are ints and color_to_class keys
        (r, g, b) tuples, so for JSON convert those keys yourself (JSON keys are strings).
        """
        return {
            "mask_format": self.mask_format,
            "mask_threshold": self.mask_threshold,
            "value_to_class": _copy(self.value_to_class),
            "color_to_class": _copy(self.color_to_class),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }

    def describe_mapping(self) -> str:
        """One line saying how stored mask values become class ids, e.g. for a training log."""
        ignored = f", {self.ignore_index} ignored"
        if self.mask_threshold is not None:
            return f"mask values >= {self.mask_threshold} -> class 1, below -> class 0"
        if self.mask_format == "binary":
            return "binary masks: value 0 -> class 0, 255 (or 1) -> class 1"
        if self.mask_format == "rgb":
            pairs = ", ".join(f"({r},{g},{b})->{c}" for (r, g, b), c in self.color_to_class.items())
            return f"colours -> classes: {pairs}"
        stored = "palette indices" if self.mask_format == "palette" else "mask values"
        if self.value_to_class is not None:
            pairs = ", ".join(f"{v}->{c}" for v, c in sorted(self.value_to_class.items()))
            return f"{stored} -> classes: {pairs}{ignored}"
        if self.mask_format == "palette":
            return f"palette indices 0..{self.num_classes - 1} as class ids{ignored}"
        return f"class ids as stored (0..{self.num_classes - 1}){ignored}"

    def validate(self) -> list[str]:
        """Check the folders again and return every problem found (empty when all is well)."""
        return self._scan()[1]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        with Image.open(image_path) as pil:
            image = image_array(pil, self.image_mode, image_path)  # (H, W, C) in [0, 1]
        mask = self._decode_mask(mask_path)  # (H, W) int64
        invalid = (mask >= self.num_classes) & (mask != self.ignore_index)
        if invalid.any():
            bad = sorted(set(mask[invalid].tolist()))[:8]
            raise ValueError(
                f"{mask_path}: mask labels {bad} outside [0, {self.num_classes}) and "
                f"not ignore_index={self.ignore_index}"
            )
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            return out["image"], out["mask"]
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask)

    def __repr__(self) -> str:
        return (
            f"SegmentationFolder({len(self)} pairs, mask_format={self.mask_format!r}, "
            f"num_classes={self.num_classes}, image_dir={str(self.image_dir)!r})"
        )

    # -- scanning ---------------------------------------------------------------------------------

    def _scan(self) -> tuple[list[tuple[Path, Path]], list[str], str, int]:
        problems: list[str] = []
        images = _by_stem(self.image_dir, IMAGE_EXTENSIONS, "", problems)
        masks = _by_stem(self.mask_dir, (".png",), self.mask_suffix, problems)
        for path in sorted(self.mask_dir.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.suffix.lower() != ".png":
                problems.append(
                    f"{path}: masks must be PNG files (lossless); convert it, "
                    "thresholding binary masks at 128 if it was saved as JPEG"
                )
        for stem in sorted(images.keys() - masks.keys()):
            expected = f"{stem}{self.mask_suffix}.png"
            problems.append(f"{images[stem]}: image has no mask {expected} in {self.mask_dir}")
        for stem in sorted(masks.keys() - images.keys()):
            problems.append(f"{masks[stem]}: mask has no image named {stem}.* in {self.image_dir}")

        if not self.check_files:
            pairs = [(images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]
            return pairs, problems, self._requested_format, self._requested_classes
        summaries = {}
        for stem in sorted(images.keys() & masks.keys()):
            summary = self._summarise_pair(images[stem], masks[stem], problems)
            if summary is not None:
                summaries[stem] = summary
        mask_format = self._resolve_format(summaries.values())

        labels_by_stem: dict[str, set[int]] = {}
        for stem, (mode, values) in summaries.items():
            labels, problem = self._labels_of(masks[stem], mode, values, mask_format)
            if problem is not None:
                problems.append(problem)
            else:
                labels_by_stem[stem] = labels
        if self.mask_threshold is not None and labels_by_stem:
            problems.extend(self._threshold_problem(summaries, labels_by_stem))
        num_classes = self._resolve_num_classes(mask_format, set().union(*labels_by_stem.values()))
        good: list[tuple[Path, Path]] = []
        for stem, labels in labels_by_stem.items():
            bad = sorted(v for v in labels if v >= num_classes and v != self.ignore_index)
            if bad:
                problems.append(
                    f"{masks[stem]}: mask labels {bad[:8]} outside [0, {num_classes}) "
                    f"and not ignore_index={self.ignore_index}; fix num_classes, "
                    "value_to_class or ignore_index"
                )
            else:
                good.append((images[stem], masks[stem]))
        if not good and not problems:
            extensions = ", ".join(IMAGE_EXTENSIONS)
            problems.append(f"{self.image_dir}: no image files ({extensions}) found")
        return good, problems, mask_format, num_classes

    def _threshold_problem(self, summaries: dict, labels_by_stem: dict) -> list[str]:
        """A problem when mask_threshold puts every pixel of every mask in one class."""
        labels = set().union(*labels_by_stem.values())
        if len(labels) > 1:
            return []
        stored = set().union(*(summaries[stem][1] for stem in labels_by_stem))
        side = "above" if labels == {0} else "at or below"
        return [
            f"{self.mask_dir}: mask_threshold={self.mask_threshold} is {side} every stored "
            f"mask value ({_few(stored)} in {len(labels_by_stem)} masks), so every pixel "
            f"would be class {labels.pop()}; choose a threshold between the background and "
            "the foreground values"
        ]

    def _summarise_pair(self, image_path: Path, mask_path: Path, problems: list[str]):
        """(mask mode, unique values or colours) of a readable, size-matched pair, else None."""
        try:
            with Image.open(image_path) as pil:
                pil.load()
                image_size = pil.size
        except Exception as error:  # PIL raises several types for broken files
            problems.append(f"{image_path}: unreadable or truncated image ({error})")
            return None
        try:
            with Image.open(mask_path) as pil:
                pil.load()
                mode, mask_size = pil.mode, pil.size
                array = np.asarray(pil)
        except Exception as error:
            problems.append(f"{mask_path}: unreadable or truncated mask ({error})")
            return None
        if mask_size != image_size:
            problems.append(
                f"{mask_path}: mask size {mask_size[0]}x{mask_size[1]} differs from "
                f"image {image_path.name} size {image_size[0]}x{image_size[1]} "
                "(width x height)"
            )
            return None
        if mode in ("RGB", "RGBA"):
            rgb = array[:, :, :3]
            if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
                return "gray", frozenset(np.unique(rgb[:, :, 0]).tolist())
            colours = np.unique(rgb.reshape(-1, 3), axis=0)
            return "rgb", frozenset(tuple(int(c) for c in colour) for colour in colours)
        if mode == "LA":
            array = array[:, :, 0]
        if array.ndim != 2:
            problems.append(f"{mask_path}: mask mode {mode!r} is not a single-channel label map")
            return None
        values = frozenset(np.unique(array).astype(np.int64).tolist())
        return ("palette" if mode == "P" else "gray"), values

    def _resolve_format(self, summaries) -> str:
        if self._requested_format != "auto":
            return self._requested_format
        summaries = list(summaries)
        if self.color_to_class is not None:
            return "rgb"
        if summaries and all(mode == "palette" for mode, _ in summaries):
            return "palette"
        binary_allowed = self.value_to_class is None and self._requested_classes in (None, 2)
        gray = [values for mode, values in summaries if mode == "gray"]
        clean = [values for values in gray if not self._stray_values(values)]  # strays: reported
        zero_255 = len(gray) == len(summaries) and all(values <= {0, 255} for values in clean)
        if binary_allowed and zero_255 and any(255 in values for values in gray):
            return "binary"
        return "index"

    def _stray_values(self, values: frozenset) -> list[int]:
        """Values too large to be taken for class ids when num_classes is inferred."""
        return sorted(v for v in values if v >= MAX_AUTO_CLASS_ID and v != self.ignore_index)

    def _labels_of(self, mask_path: Path, mode: str, values: frozenset, mask_format: str):
        """Class labels a mask decodes to, or a problem message."""
        if mask_format == "rgb":
            if mode != "rgb" and mode != "gray":
                return set(), f"{mask_path}: mask_format='rgb' needs a colour PNG, got a {mode} PNG"
            colours = values if mode == "rgb" else {(v, v, v) for v in values}
            unknown = sorted(c for c in colours if c not in self.color_to_class)
            if unknown:
                return set(), (
                    f"{mask_path}: colours {unknown[:5]} are not in color_to_class; "
                    "add them to the table (map them to "
                    f"ignore_index={self.ignore_index} to skip them)"
                )
            return {self.color_to_class[c] for c in colours}, None
        if self.mask_threshold is not None:
            if mode != "gray":
                return set(), (
                    f"{mask_path}: mask_threshold binarises grayscale masks, got a "
                    f"{mode!r} mask; drop mask_threshold or save the mask as grayscale"
                )
            return {int(v >= self.mask_threshold) for v in values}, None
        if mode == "rgb":
            return set(), (
                f"{mask_path}: is a colour mask; pass color_to_class="
                "{(r, g, b): class_id, ...} or save it as an index or palette PNG"
            )
        if mask_format == "palette" and mode != "palette":
            return set(), (
                f"{mask_path}: mask_format='palette' needs a palette PNG (mode 'P'), "
                "got a grayscale PNG"
            )
        if mask_format == "binary":
            if not values <= {0, 1, 255} or {1, 255} <= values:
                return set(), (
                    f"{mask_path}: binary mask has values {_few(values)} "
                    f"({len(values)} distinct), expected 0/255 or 0/1; "
                    f"{_stray_values_advice(mask_path)}"
                )
            return {1 if v else 0 for v in values}, None
        if self.value_to_class is not None:
            known = set(self.value_to_class) | {self.ignore_index}
            unknown = sorted(v for v in values if v not in known)
            if unknown:
                return set(), f"{mask_path}: mask values {unknown[:8]} are not in value_to_class"
            return {self.value_to_class.get(v, v) for v in values}, None
        stray = self._stray_values(values)
        if stray and mode == "gray" and self._requested_classes is None:
            return set(), (
                f"{mask_path}: mask values {_few(stray)} are not class ids below "
                f"MAX_AUTO_CLASS_ID={MAX_AUTO_CLASS_ID} ({len(values)} distinct values "
                f"in the mask); {_stray_values_advice(mask_path)}"
            )
        return set(values), None

    def _resolve_num_classes(self, mask_format: str, labels: set[int]) -> int:
        if self._requested_classes is not None:
            return self._requested_classes
        if mask_format == "binary":
            return 2
        real = [v for v in labels if v != self.ignore_index]
        return max(real) + 1 if real else 1

    # -- decoding ---------------------------------------------------------------------------------

    def _decode_mask(self, mask_path: Path) -> np.ndarray:
        with Image.open(mask_path) as pil:
            mode = pil.mode
            array = np.asarray(pil)
        if mode in ("RGB", "RGBA"):
            rgb = array[:, :, :3].astype(np.int64)  # (H, W, 3)
            if self.mask_format == "rgb":
                return _lookup(
                    rgb[:, :, 0] * 65536 + rgb[:, :, 1] * 256 + rgb[:, :, 2],
                    self._colour_keys(),
                    mask_path,
                )
            values = rgb[:, :, 0]  # a gray mask saved as RGB: the three channels agree
        elif mode == "LA":
            values = array[:, :, 0].astype(np.int64)
        else:
            values = array.astype(np.int64)  # (H, W)
        if self.mask_format == "rgb":
            # gray v is the colour (v, v, v): v * 65536 + v * 256 + v = v * 65793
            return _lookup(values * 65793, self._colour_keys(), mask_path)
        if self.mask_format == "binary" and self.mask_threshold is not None:
            return (values >= self.mask_threshold).astype(np.int64)
        if self.mask_format == "binary":
            return (values > 0).astype(np.int64)  # 0/255 or 0/1
        if self.value_to_class is not None:
            table = dict(self.value_to_class)
            table.setdefault(self.ignore_index, self.ignore_index)
            return _lookup(values, table, mask_path)
        return values

    def _colour_keys(self) -> dict[int, int]:
        """color_to_class with each (r, g, b) packed into one integer r * 65536 + g * 256 + b."""
        return {r * 65536 + g * 256 + b: label for (r, g, b), label in self.color_to_class.items()}


def _lookup(keys: np.ndarray, table: dict[int, int], path: Path) -> np.ndarray:
    """Map every entry of `keys` through `table` (vectorised with a sorted search)."""
    source = np.array(sorted(table), dtype=np.int64)
    target = np.array([table[k] for k in source.tolist()], dtype=np.int64)
    position = np.clip(np.searchsorted(source, keys), 0, len(source) - 1)
    if not (source[position] == keys).all():
        raise ValueError(
            f"{path}: mask holds values missing from the class table "
            "(file changed since the dataset was built?)"
        )
    return target[position]


def _stray_values_advice(mask_path: Path) -> str:
    """How to fix a mask whose values are not class ids (re-reads the file: only on error)."""
    with Image.open(mask_path) as pil:
        array = np.asarray(pil)
    gray = array[:, :, 0] if array.ndim == 3 else array  # (H, W): LA, or gray saved as RGB
    share = float(np.isin(gray, (0, 255)).mean())
    looks_binary = (
        f"{share:.1%} of its pixels are 0 or 255, so it looks like an anti-aliased "
        "or JPEG-saved binary mask; "
        if share > 0.5
        else ""
    )
    return (
        f"{looks_binary}pass mask_threshold=128 (--mask-threshold 128 on the command line) to "
        "binarise the masks, or num_classes / value_to_class if the values are class ids"
    )


def _few(values, shown: int = 8) -> str:
    """Sorted values as a short list: all of them, or the first and last few."""
    values = sorted(values)
    if len(values) <= shown:
        return str(values)
    half = shown // 2
    return f"[{', '.join(map(str, values[:half]))}, ..., {', '.join(map(str, values[-half:]))}]"


def _copy(table: dict | None) -> dict | None:
    return None if table is None else dict(table)


def _existing_dir(path, name: str) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{name} {str(folder)!r} is not a folder")
    return folder


def _by_stem(
    folder: Path, extensions: tuple[str, ...], suffix: str, problems: list[str]
) -> dict[str, Path]:
    """{stem without suffix: path} of the files of `folder` with one of `extensions`."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in extensions:
            continue
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                problems.append(f"{path}: mask name does not end with mask_suffix {suffix!r}")
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            problems.append(
                f"{path}: two files share the stem {stem!r} ({found[stem].name} and {path.name})"
            )
            continue
        found[stem] = path
    return found


def _check_color_table(table, mask_format: str):
    if table is None:
        if mask_format == "rgb":
            raise ValueError("mask_format='rgb' needs color_to_class={(r, g, b): class_id, ...}")
        return None
    if mask_format not in ("auto", "rgb"):
        raise ValueError(
            f"color_to_class only applies to mask_format 'rgb' or 'auto', got {mask_format!r}"
        )
    if not isinstance(table, Mapping) or not table:
        raise TypeError(
            f"color_to_class must be a non-empty dict {{(r, g, b): class_id}}, got {table!r}"
        )
    checked = {}
    for colour, label in table.items():
        if (
            not isinstance(colour, tuple)
            or len(colour) != 3
            or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in colour)
        ):
            raise ValueError(
                f"color_to_class keys must be (r, g, b) tuples of ints in [0, 255], got {colour!r}"
            )
        if not _is_count(label, minimum=0):
            raise ValueError(
                f"color_to_class[{colour}] must be a non-negative class id, got {label!r}"
            )
        checked[tuple(int(c) for c in colour)] = int(label)
    return checked


def _check_value_table(table, mask_format: str):
    if table is None:
        return None
    if mask_format not in ("auto", "index", "palette"):
        raise ValueError(
            "value_to_class applies to mask_format 'index', 'palette' or 'auto', "
            f"got {mask_format!r}"
        )
    if not isinstance(table, Mapping) or not table:
        raise TypeError(
            f"value_to_class must be a non-empty dict {{stored_value: class_id}}, got {table!r}"
        )
    checked = {}
    for value, label in table.items():
        if not (_is_count(value, minimum=0) and _is_count(label, minimum=0)):
            raise ValueError(
                "value_to_class keys and values must be non-negative ints, "
                f"got {value!r}: {label!r}"
            )
        checked[int(value)] = int(label)
    return checked


def _check_threshold(threshold, mask_format: str, num_classes, value_to_class, color_to_class):
    """The validated mask_threshold: a positive int compared with stored values (8 or 16 bit)."""
    if threshold is None:
        return None
    if not _is_count(threshold, minimum=1):
        raise ValueError(
            "mask_threshold must be a positive int (class 1 where the stored value "
            f">= it; 128 for 8-bit masks), got {threshold!r}"
        )
    if mask_format not in ("auto", "binary"):
        raise ValueError(
            "mask_threshold makes binary masks; use it with mask_format 'auto' or "
            f"'binary', got {mask_format!r}"
        )
    if num_classes not in (None, 2):
        raise ValueError(f"mask_threshold gives 2 classes (0 and 1), got num_classes={num_classes}")
    if value_to_class is not None or color_to_class is not None:
        raise ValueError(
            "mask_threshold, value_to_class and color_to_class are three ways to map "
            "mask values; give one"
        )
    return int(threshold)


def _is_count(value, minimum: int) -> bool:
    """True for an int (Python or NumPy, not bool) that is at least `minimum`."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum
