"""Small copies of the real data sets' archives, in their exact on-disk layouts, for rehearsals.

A full-mode rehearsal (`utils.rehearsal()`) runs the real data-set classes on a machine with no
internet: they are pointed (through `COURSE_DATA_DIR`) at a folder written here, with the same
folders, file names, formats and split files as the extracted archives, and images of the real
sizes, so that every line of the full-mode path runs, only on a handful of images.

    write_rehearsal_data(root)   # everything the notebooks' full mode reads, under root
    COURSE_MODE=full COURSE_REHEARSAL=1 COURSE_DATA_DIR=root jupyter ...

Layouts (as the archives extract):
- Pascal VOC 2012: `VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg`, palette PNGs with VOC's colour
  map in `SegmentationClass/` (class ids 0..20, object outlines 255), and
  `ImageSets/Segmentation/{train,val,trainval}.txt`; images at most 500 pixels a side.
- Oxford-IIIT Pet: `oxford-iiit-pet/images/Abyssinian_1.jpg`, trimaps in
  `annotations/trimaps/Abyssinian_1.png` (1 pet, 2 background, 3 border band) and
  `annotations/{trainval,test}.txt` ("name class-id species breed-id" lines).
- Kvasir-SEG: `kvasir-seg/Kvasir-SEG/images/<id>.jpg` and the masks as JPEG files of the same
  names in `Kvasir-SEG/masks/` (white polyp on black, with JPEG's soft edges), images of varied
  sizes as in the archive (332x487 up to 1920x1072), plus `kavsir_bboxes.json`.
- COCO val2017 samples: `coco_samples/000000039769.jpg` and `000000397133.jpg` (640 wide).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from course_lib.atomic import write_bytes_atomic

__all__ = [
    "voc_palette",
    "write_voc",
    "write_pets",
    "write_kvasir",
    "write_coco_samples",
    "write_rehearsal_data",
]

_PET_BREEDS = (("Abyssinian", 1, 1), ("beagle", 2, 2), ("Bengal", 6, 1), ("pug", 28, 2))
_KVASIR_IDS = (
    "cju0qkwl35piu0993l0dewei2",
    "cju0qoxqj9q6s0835b43399p4",
    "cju0qx73cjw570799j4n5cjze",
    "cju0roawvklrq0799vmjorwfv",
    "cju0rx1idathl0835detmsp84",
    "cju0s2a9ekvms080138tjjpxr",
    "cju0s690hkp960855tjuaqvv0",
    "cju0sr5ghl0nd08789uzf1raf",
    "cju0sxqiclckk08551ycbwhno",
    "cju0t4oil7vzk099370nun5h9",
    "cju0tl3uz8blh0993wxvn7ly3",
    "cju0u2g7pmnux0801vkk47ivj",
    "cju0u82z3cuma0835wlxrnrjv",
    "cju0ue769mxii08019zqgdbxn",
    "cju0vtox5ain6099360pu62rp",
    "cju0w68hdcabh0818aqe9vtdv",
)
_VOC_NAMES = (
    "2007_000032",
    "2007_000039",
    "2007_000063",
    "2007_000129",
    "2007_000170",
    "2007_000323",
    "2007_000332",
    "2007_000346",
    "2007_000452",
    "2007_000464",
)
COCO_SAMPLES = {"000000039769.jpg": (480, 640), "000000397133.jpg": (427, 640)}


def voc_palette() -> list[int]:
    """Pascal VOC's colour map: class c gets the bits of c spread over R, G and B (768 values)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _photo(rng: np.random.Generator, height: int, width: int, shapes: list) -> Image.Image:
    """A textured RGB photo with each shape (label, box) painted in a colour of its own."""
    base = rng.integers(60, 200, 3)
    noise = rng.normal(0, 18, (height, width, 3))
    photo = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(photo)
    for label, box in shapes:
        colour = tuple(int(v) for v in (37 * label % 256, 91 * label % 256, 151 * label % 256))
        draw.ellipse(box, fill=colour)
    return photo


def _shapes(rng: np.random.Generator, height: int, width: int, labels) -> list:
    shapes = []
    for label in labels:
        h, w = rng.integers(height // 5, height // 2), rng.integers(width // 5, width // 2)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        shapes.append((int(label), (int(left), int(top), int(left + w), int(top + h))))
    return shapes


def write_voc(root: str | Path, *, num_train: int = 6, num_val: int = 4, seed: int = 0) -> Path:
    """Pascal VOC 2012 segmentation in the layout of VOCtrainval_11-May-2012.tar; returns root."""
    if num_train + num_val > len(_VOC_NAMES):
        raise ValueError(f"at most {len(_VOC_NAMES)} images, got {num_train} + {num_val}")
    base = Path(root) / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    names = list(_VOC_NAMES[: num_train + num_val])
    for name in names:
        height, width = (375, 500) if rng.random() < 0.7 else (500, 375)
        shapes = _shapes(rng, height, width, rng.integers(1, 21, rng.integers(1, 4)))
        write_bytes_atomic(
            base / "JPEGImages" / f"{name}.jpg",
            _encoded(_photo(rng, height, width, shapes), "JPEG"),
        )
        mask = Image.new("P", (width, height), 0)
        draw = ImageDraw.Draw(mask)
        for label, box in shapes:
            draw.ellipse(box, fill=label, outline=255, width=3)  # VOC outlines objects with 255
        mask.putpalette(palette)
        write_bytes_atomic(base / "SegmentationClass" / f"{name}.png", _encoded(mask, "PNG"))
    splits = {"train": names[:num_train], "val": names[num_train:], "trainval": names}
    for split, members in splits.items():
        write_bytes_atomic(
            base / "ImageSets" / "Segmentation" / f"{split}.txt",
            "".join(f"{n}\n" for n in members).encode(),
        )
    return Path(root)


def write_pets(root: str | Path, *, per_breed: int = 3, seed: int = 0) -> Path:
    """Oxford-IIIT Pet in the layout of images.tar.gz + annotations.tar.gz; returns root."""
    base = Path(root) / "oxford-iiit-pet"
    rng = np.random.default_rng(seed)
    lines = []
    for breed, class_id, species in _PET_BREEDS:
        for number in range(1, per_breed + 1):
            name = f"{breed}_{number}"
            height, width = int(rng.integers(300, 500)), int(rng.integers(300, 500))
            shapes = _shapes(rng, height, width, [class_id])
            write_bytes_atomic(
                base / "images" / f"{name}.jpg",
                _encoded(_photo(rng, height, width, shapes), "JPEG"),
            )
            trimap = Image.new("L", (width, height), 2)  # 2 background
            draw = ImageDraw.Draw(trimap)
            draw.ellipse(shapes[0][1], fill=1, outline=3, width=4)  # 1 pet, 3 the border band
            write_bytes_atomic(
                base / "annotations" / "trimaps" / f"{name}.png", _encoded(trimap, "PNG")
            )
            lines.append(f"{name} {class_id} {species} {number}")
    test = lines[::3]
    trainval = [line for line in lines if line not in test]
    for split, members in (("trainval", trainval), ("test", test)):
        write_bytes_atomic(
            base / "annotations" / f"{split}.txt", "".join(f"{line}\n" for line in members).encode()
        )
    return Path(root)


def write_kvasir(root: str | Path, *, num_images: int = 16, seed: int = 0) -> Path:
    """Kvasir-SEG in the layout of kvasir-seg.zip (extracted into `root/kvasir-seg`); returns root."""
    if num_images > len(_KVASIR_IDS):
        raise ValueError(f"at most {len(_KVASIR_IDS)} images, got {num_images}")
    base = Path(root) / "kvasir-seg" / "Kvasir-SEG"
    rng = np.random.default_rng(seed)
    boxes = {}
    for name in _KVASIR_IDS[:num_images]:
        height, width = int(rng.integers(332, 1072)), int(rng.integers(487, 1350))
        shapes = _shapes(rng, height, width, [1])
        write_bytes_atomic(
            base / "images" / f"{name}.jpg", _encoded(_photo(rng, height, width, shapes), "JPEG")
        )
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse(shapes[0][1], fill=255)
        write_bytes_atomic(base / "masks" / f"{name}.jpg", _encoded(mask, "JPEG"))
        left, top, right, bottom = shapes[0][1]
        boxes[name] = {
            "height": height,
            "width": width,
            "bbox": [{"label": "polyp", "xmin": left, "ymin": top, "xmax": right, "ymax": bottom}],
        }
    write_bytes_atomic(base / "kavsir_bboxes.json", json.dumps(boxes).encode())
    return Path(root)


def write_coco_samples(root: str | Path, *, seed: int = 0) -> Path:
    """The two COCO val2017 photographs notebook 08 reads, as `coco_samples/NAME.jpg`."""
    rng = np.random.default_rng(seed)
    for name, (height, width) in COCO_SAMPLES.items():
        shapes = _shapes(rng, height, width, rng.integers(1, 20, 3))
        write_bytes_atomic(
            Path(root) / "coco_samples" / name, _encoded(_photo(rng, height, width, shapes), "JPEG")
        )
    return Path(root)


def write_rehearsal_data(root: str | Path, *, seed: int = 0) -> Path:
    """Every tree the notebooks' full mode reads, under `root` (use it as COURSE_DATA_DIR)."""
    write_voc(root, seed=seed)
    write_pets(root, seed=seed)
    write_kvasir(root, seed=seed)
    write_coco_samples(root, seed=seed)
    return Path(root)
