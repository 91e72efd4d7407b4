"""The real datasets of full mode: Oxford-IIIT Pet, Pascal VOC 2012 and medical folders.

- Oxford-IIIT Pet (Parkhi et al., 2012) through `torchvision.datasets.OxfordIIITPet`: 37 breeds of
  cats and dogs with a trimap per photo. The trimap stores 1 = pet, 2 = background and 3 = the
  uncertain band along the outline; the course maps them to 1 (pet), 0 (background) and, with
  `boundary="class"` (default), 2 (boundary, three classes) or, with `boundary="ignore"`,
  `ignore_index` (two classes, the band left out of losses and metrics).
- Pascal VOC 2012 (Everingham et al., 2010) through `torchvision.datasets.VOCSegmentation`:
  21 classes (background + 20 objects); the palette PNG masks mark object outlines and difficult
  regions with 255, the course's `ignore_index`.
- Medical binary-mask sets as `SegmentationFolder` recipes: Kvasir-SEG (Jha et al., 2020; colon
  polyps, masks shipped as JPEG and thresholded to PNG once) and ISIC 2018 Task 1 (Codella et al.,
  2019; skin lesions).

Everything lives under `course_lib.utils.data_dir()` (COURSE_DATA_DIR, default ~/.cache/course_lib).
Nothing is downloaded unless `download=True`; without the files each class fails at once with a
message saying what to download and where to put it. Each data set lists its archives as
`RemoteFile`s (mirrors tried in order, checksum, size); `course_lib.data.download` fetches them
with resume, verification and safe extraction.

Checksums. The SHA-256 of every archive is unknown: no source we could read publishes one, and
without the internet none could be computed here from a trusted download. What is pinned instead:
- `VOCtrainval_11-May-2012.tar`: md5 6cd6e144f989b92b3379bac3b3de84fd (from torchvision's source);
- Oxford-IIIT Pet `images.tar.gz`: md5 5c4f3ee8e5d25df40f4fd59a7f44e54c and `annotations.tar.gz`:
  md5 95a8c909bbe2e81eed6a22bccdf3f68f (from torchvision's source), with their byte sizes;
- Kvasir-SEG `kvasir-seg.zip` and the two ISIC 2018 Task 1 zips: no checksum at all (none is
  published); only the size the server announces is checked.

Samples follow the course contract: image `(3, H, W)` float32 in [0, 1], mask `(H, W)` int64; with
`transform`, `out = transform(image=(H, W, 3) float32, mask=(H, W) int64)` and its "image", "mask".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from course_lib.data.download import (  # download_file, extract_archive: public here as before
    DownloadError,
    RemoteFile,
    download_and_extract,
    download_file,
    extract_archive,
    manual_steps,
)
from course_lib.data.folder import SegmentationFolder
from course_lib.utils import data_dir

__all__ = [
    "MEDICAL_DATASETS",
    "VOC_CLASSES",
    "DownloadError",
    "MedicalRecipe",
    "OxfordPetSegmentation",
    "PascalVOCSegmentation",
    "RemoteFile",
    "download_file",
    "extract_archive",
    "medical_dataset",
]

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class OxfordPetSegmentation(Dataset):
    """Oxford-IIIT Pet photos with trimap masks (see the module docstring for the label mapping).

    Files: `root/oxford-iiit-pet/images/*.jpg`, `.../annotations/trimaps/*.png` and
    `.../annotations/{trainval,test}.txt`: the two archives extracted into `root/oxford-iiit-pet`,
    the layout torchvision uses (about 810 MB).
    """

    # md5: torchvision.datasets.OxfordIIITPet._RESOURCES (torchvision 0.29). Sizes: the
    # Content-Length of these files in public download logs. Mirrors: the files moved from the
    # official page's links (torchvision's URLs, which now redirect) to thor.robots.ox.ac.uk; both
    # thor paths appear in public code; none could be tried from here (no internet).
    FILES = tuple(
        RemoteFile(
            name,
            (
                f"https://thor.robots.ox.ac.uk/datasets/pets/{name}",
                f"https://thor.robots.ox.ac.uk/pets/{name}",
                f"https://www.robots.ox.ac.uk/~vgg/data/pets/data/{name}",
            ),
            checksum,
            size,
        )
        for name, checksum, size in (
            ("images.tar.gz", "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c", 791_918_971),
            ("annotations.tar.gz", "md5:95a8c909bbe2e81eed6a22bccdf3f68f", 19_173_078),
        )
    )
    LAYOUT = (
        "images/*.jpg",
        "annotations/trimaps/*.png",
        "annotations/trainval.txt",
        "annotations/test.txt",
    )

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "trainval",
        transform: Callable | None = None,
        download: bool = False,
        boundary: str = "class",
        ignore_index: int = 255,
    ):
        from torchvision.datasets import OxfordIIITPet

        if split not in ("trainval", "test"):
            raise ValueError(f"split must be 'trainval' or 'test', got {split!r}")
        if boundary not in ("class", "ignore"):
            raise ValueError(
                f"boundary must be 'class' (3 classes) or 'ignore' (2 classes), got {boundary!r}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index < 3:
            raise ValueError(
                f"ignore_index must be an int >= 3 (0, 1, 2 are classes), got {ignore_index!r}"
            )
        _check_transform(transform)
        root = Path(root).expanduser() if root is not None else data_dir()
        base = root / "oxford-iiit-pet"
        images, trimaps = base / "images", base / "annotations" / "trimaps"
        split_file = base / "annotations" / f"{split}.txt"
        needed = (images, trimaps, split_file)
        if download and not all(path.exists() for path in needed):
            download_and_extract("Oxford-IIIT Pet", self.FILES, base, self.LAYOUT)
        if not all(path.exists() for path in needed):
            raise FileNotFoundError(
                f"Oxford-IIIT Pet not found: expected {images}/*.jpg, {trimaps}/*.png and "
                f"{split_file}. Pass download=True (about 810 MB), or:\n"
                + manual_steps("Oxford-IIIT Pet", self.FILES, base, self.LAYOUT)
            )
        self._pets = OxfordIIITPet(str(root), split=split, target_types="segmentation")
        self.transform = transform
        self.ignore_index = ignore_index
        self.boundary = boundary
        self.CLASSES = ("background", "pet") + (("boundary",) if boundary == "class" else ())
        self.num_classes = len(self.CLASSES)
        band = 2 if boundary == "class" else ignore_index
        # trimap value -> label: 0 (unused) -> ignore, 1 pet -> 1, 2 background -> 0,
        # 3 band -> 2 or ignore
        self._lookup = np.array([ignore_index, 1, 0, band], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._pets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, trimap = self._pets[index]
        values = np.asarray(trimap, dtype=np.int64)  # (H, W) in {1, 2, 3}
        if values.min() < 1 or values.max() > 3:
            where = getattr(self._pets, "_segs", [f"trimap {index}"] * (index + 1))[index]
            raise ValueError(
                f"{where}: trimap values {sorted(np.unique(values).tolist())} "
                f"outside {{1, 2, 3}}; the file is not an Oxford-IIIT Pet trimap"
            )
        return _sample(image, self._lookup[values], self.transform)


class PascalVOCSegmentation(Dataset):
    """Pascal VOC 2012 segmentation: 21 classes, 255 = ignore (object outlines, difficult parts).

    Files: `root/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`, the
    layout of the official VOCtrainval_11-May-2012.tar extracted into `root` (about 2 GB).
    """

    # md5 and the first mirror: torchvision.datasets.voc.DATASET_YEAR_DICT["2012"] (torchvision
    # 0.29, which moved from the original host to thor). The original host has been unreliable
    # for months; d2l's DATA_URL serves the same tar (a torchvision pull request, #9335, proposed
    # it as the replacement); pjreddie's mirror is the long-standing community one, reported dead
    # in late 2025. Size: the Content-Length in public download logs. None could be tried from
    # here (no internet); the md5 rejects any mirror that serves other bytes.
    FILES = (
        RemoteFile(
            "VOCtrainval_11-May-2012.tar",
            (
                "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",
                "http://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",
            ),
            "md5:6cd6e144f989b92b3379bac3b3de84fd",
            1_999_639_040,
        ),
    )
    LAYOUT = (
        "VOCdevkit/VOC2012/JPEGImages/*.jpg",
        "VOCdevkit/VOC2012/SegmentationClass/*.png",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt",
    )
    CLASSES = VOC_CLASSES
    num_classes = len(VOC_CLASSES)
    ignore_index = 255

    def __init__(
        self,
        root: str | Path | None = None,
        image_set: str = "train",
        transform: Callable | None = None,
        download: bool = False,
    ):
        from torchvision.datasets import VOCSegmentation

        if image_set not in ("train", "val", "trainval"):
            raise ValueError(f"image_set must be 'train', 'val' or 'trainval', got {image_set!r}")
        _check_transform(transform)
        root = Path(root).expanduser() if root is not None else data_dir()
        base = root / "VOCdevkit" / "VOC2012"
        split_file = base / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        if download and not split_file.exists():  # an extracted tree is used as it is
            download_and_extract("Pascal VOC 2012", self.FILES, root, self.LAYOUT)
        if not split_file.exists():
            raise FileNotFoundError(
                f"Pascal VOC 2012 not found: expected {split_file} next to {base}/JPEGImages and "
                f"{base}/SegmentationClass. Pass download=True (about 2 GB), or:\n"
                + manual_steps("Pascal VOC 2012", self.FILES, root, self.LAYOUT)
            )
        self._voc = VOCSegmentation(str(root), year="2012", image_set=image_set)
        self.transform = transform

    def __len__(self) -> int:
        return len(self._voc)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self._voc[index]
        if target.mode != "P":
            raise ValueError(
                f"{self._voc.masks[index]}: expected a palette PNG (mode 'P'), "
                f"got mode {target.mode!r}"
            )
        mask = np.asarray(target, dtype=np.int64)  # (H, W) palette indices = class ids
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            found = sorted(set(mask[bad].tolist()))[:8]
            raise ValueError(f"{self._voc.masks[index]}: labels {found} outside [0, 21), not 255")
        return _sample(image, mask, self.transform)


class MedicalRecipe(NamedTuple):
    """Where a binary-mask medical dataset comes from and how its folders are laid out."""

    title: str
    homepage: str
    archives: tuple[RemoteFile, ...]  # extracted into the data set's folder
    image_dir: str  # relative to the dataset folder
    mask_dir: str
    mask_suffix: str = ""
    jpeg_masks: bool = False  # masks shipped as JPEG: thresholded once into <mask_dir>_png


_ISIC_BUCKET = "https://isic-challenge-data.s3.amazonaws.com/2018"

# No checksums: neither Simula nor the ISIC challenge publishes one, no library we could read pins
# one, and there was no internet here to compute one from a download we could trust. Only the size
# the server announces is checked. No second mirror serving the same archives is known either.
MEDICAL_DATASETS: dict[str, MedicalRecipe] = {
    "kvasir-seg": MedicalRecipe(
        title="Kvasir-SEG (1000 colonoscopy images with polyp masks, about 45 MB)",
        homepage="https://datasets.simula.no/kvasir-seg/",
        archives=(
            RemoteFile("kvasir-seg.zip", ("https://datasets.simula.no/downloads/kvasir-seg.zip",)),
        ),
        image_dir="Kvasir-SEG/images",
        mask_dir="Kvasir-SEG/masks",
        jpeg_masks=True,
    ),
    "isic2018": MedicalRecipe(
        title="ISIC 2018 Task 1 (2594 dermoscopy images with lesion masks, about 11 GB)",
        homepage="https://challenge.isic-archive.com/data/#2018",
        archives=tuple(
            RemoteFile(name, (f"{_ISIC_BUCKET}/{name}",))
            for name in (
                "ISIC2018_Task1-2_Training_Input.zip",
                "ISIC2018_Task1_Training_GroundTruth.zip",
            )
        ),
        image_dir="ISIC2018_Task1-2_Training_Input",
        mask_dir="ISIC2018_Task1_Training_GroundTruth",
        mask_suffix="_segmentation",
    ),
}


def medical_dataset(
    name: str,
    root: str | Path | None = None,
    transform: Callable | None = None,
    download: bool = False,
    check_files: bool = True,
) -> SegmentationFolder:
    """A `SegmentationFolder` over a medical set of `MEDICAL_DATASETS` (masks 0/1, 2 classes).

    The files live in `root/<name>/` (root defaults to `data_dir()`); `download=True` fetches and
    extracts the archives first. `check_files=False` skips decoding every file on construction
    (ISIC holds thousands of large photographs).
    """
    if name not in MEDICAL_DATASETS:
        raise ValueError(f"name must be one of {sorted(MEDICAL_DATASETS)}, got {name!r}")
    recipe = MEDICAL_DATASETS[name]
    folder = (Path(root).expanduser() if root is not None else data_dir()) / name
    images, masks = folder / recipe.image_dir, folder / recipe.mask_dir
    layout = (f"{recipe.image_dir}/*.jpg", f"{recipe.mask_dir}/*{recipe.mask_suffix}.*")
    if download and not (images.is_dir() and masks.is_dir()):
        download_and_extract(recipe.title, recipe.archives, folder, layout)
    if not (images.is_dir() and masks.is_dir()):
        raise FileNotFoundError(
            f"{recipe.title} not found: expected images in {images} and masks in {masks} (see "
            f"{recipe.homepage}). Pass download=True, or:\n"
            + manual_steps(recipe.title, recipe.archives, folder, layout)
        )
    if recipe.jpeg_masks:
        masks = _threshold_jpeg_masks(masks, masks.with_name(masks.name + "_png"))
    return SegmentationFolder(
        images,
        masks,
        transform=transform,
        num_classes=2,
        mask_format="binary",
        mask_suffix=recipe.mask_suffix,
        check_files=check_files,
    )


def _threshold_jpeg_masks(source: Path, target: Path) -> Path:
    """Write every JPEG mask of `source` as a 0/255 PNG in `target` (threshold 128), once."""
    target.mkdir(exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        out = target / f"{path.stem}.png"
        if out.exists():
            continue
        with Image.open(path) as pil:
            gray = np.asarray(pil.convert("L"))
        partial = out.with_name(out.name + ".part")
        Image.fromarray(np.where(gray >= 128, 255, 0).astype(np.uint8)).save(partial, format="PNG")
        os.replace(partial, out)
    return target


def _check_transform(transform) -> None:
    if transform is not None and not callable(transform):
        raise TypeError(
            f"transform must be callable as transform(image=..., mask=...), got {transform!r}"
        )


def _sample(image: Image.Image, mask: np.ndarray, transform: Callable | None):
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    if transform is not None:
        out = transform(image=array, mask=mask)
        return out["image"], out["mask"]
    image_chw = torch.from_numpy(array.transpose(2, 0, 1).copy())  # (3, H, W)
    return image_chw, torch.from_numpy(mask.astype(np.int64))
