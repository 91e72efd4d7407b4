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
  2019; skin lesions). `download_file` fetches with a SHA-256 check when a checksum is pinned.

Everything lives under `course_lib.utils.data_dir()` (COURSE_DATA_DIR, default ~/.cache/course_lib).
Nothing is downloaded unless `download=True`; without the files each class fails at once with a
message saying what to download and where to put it.

Samples follow the course contract: image `(3, H, W)` float32 in [0, 1], mask `(H, W)` int64; with
`transform`, `out = transform(image=(H, W, 3) float32, mask=(H, W) int64)` and its "image", "mask".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from course_lib.data.folder import SegmentationFolder
from course_lib.utils import data_dir

__all__ = [
    "OxfordPetSegmentation",
    "PascalVOCSegmentation",
    "VOC_CLASSES",
    "MedicalRecipe",
    "MEDICAL_DATASETS",
    "medical_dataset",
    "download_file",
    "extract_archive",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


class OxfordPetSegmentation(Dataset):
    """Oxford-IIIT Pet photos with trimap masks (see the module docstring for the label mapping).

    Files: `root/oxford-iiit-pet/images/*.jpg`, `.../annotations/trimaps/*.png` and
    `.../annotations/{trainval,test}.txt`, the layout torchvision downloads (about 800 MB).
    """

    URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"

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
            raise ValueError("boundary must be 'class' (3 classes) or 'ignore' (2 classes), "
                             f"got {boundary!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index < 3:
            raise ValueError("ignore_index must be an int >= 3 (0, 1, 2 are classes), "
                             f"got {ignore_index!r}")
        _check_transform(transform)
        root = Path(root).expanduser() if root is not None else data_dir()
        base = root / "oxford-iiit-pet"
        images, trimaps = base / "images", base / "annotations" / "trimaps"
        split_file = base / "annotations" / f"{split}.txt"
        if not download and not all(path.exists() for path in (images, trimaps, split_file)):
            raise FileNotFoundError(
                f"Oxford-IIIT Pet not found: expected {images}/*.jpg, {trimaps}/*.png and "
                f"{split_file}. Pass download=True (about 800 MB), or download images.tar.gz and "
                f"annotations.tar.gz from {self.URL} and extract both into {base}. "
                "Set COURSE_DATA_DIR to use another folder."
            )
        self._pets = _with_download_hint(
            lambda: OxfordIIITPet(str(root), split=split, target_types="segmentation",
                                  download=download),
            f"Oxford-IIIT Pet ({self.URL}) into {base}",
        )
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

    def __getitem__(self, index: int):
        image, trimap = self._pets[index]
        values = np.asarray(trimap, dtype=np.int64)  # (H, W) in {1, 2, 3}
        if values.min() < 1 or values.max() > 3:
            where = getattr(self._pets, "_segs", [f"trimap {index}"] * (index + 1))[index]
            raise ValueError(f"{where}: trimap values {sorted(np.unique(values).tolist())} "
                             f"outside {{1, 2, 3}}; the file is not an Oxford-IIIT Pet trimap")
        return _sample(image, self._lookup[values], self.transform)


class PascalVOCSegmentation(Dataset):
    """Pascal VOC 2012 segmentation: 21 classes, 255 = ignore (object outlines, difficult parts).

    Files: `root/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`, the
    layout of the official VOCtrainval_11-May-2012.tar that torchvision downloads (about 2 GB).
    """

    URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
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
        if not download and not split_file.exists():
            raise FileNotFoundError(
                f"Pascal VOC 2012 not found: expected {split_file} next to {base}/JPEGImages and "
                f"{base}/SegmentationClass. Pass download=True (about 2 GB), or download "
                f"VOCtrainval_11-May-2012.tar from {self.URL} and extract it into {root}. "
                f"Set COURSE_DATA_DIR to use another folder."
            )
        self._voc = _with_download_hint(
            # an extracted tree is used as it is: torchvision would fetch the 2 GB tar again
            lambda: VOCSegmentation(str(root), year="2012", image_set=image_set,
                                    download=download and not split_file.exists()),
            f"VOCtrainval_11-May-2012.tar ({self.URL}) into {root}",
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self._voc)

    def __getitem__(self, index: int):
        image, target = self._voc[index]
        if target.mode != "P":
            raise ValueError(f"{self._voc.masks[index]}: expected a palette PNG (mode 'P'), "
                             f"got mode {target.mode!r}")
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
    archives: tuple[tuple[str, str | None], ...]  # (url, sha256 or None when no checksum is pinned)
    image_dir: str  # relative to the dataset folder
    mask_dir: str
    mask_suffix: str = ""
    jpeg_masks: bool = False  # masks shipped as JPEG: thresholded once into <mask_dir>_png


_ISIC_BUCKET = "https://isic-challenge-data.s3.amazonaws.com/2018"

MEDICAL_DATASETS: dict[str, MedicalRecipe] = {
    "kvasir-seg": MedicalRecipe(
        title="Kvasir-SEG (1000 colonoscopy images with polyp masks, about 45 MB)",
        homepage="https://datasets.simula.no/kvasir-seg/",
        archives=(("https://datasets.simula.no/downloads/kvasir-seg.zip", None),),
        image_dir="Kvasir-SEG/images",
        mask_dir="Kvasir-SEG/masks",
        jpeg_masks=True,
    ),
    "isic2018": MedicalRecipe(
        title="ISIC 2018 Task 1 (2594 dermoscopy images with lesion masks, about 11 GB)",
        homepage="https://challenge.isic-archive.com/data/#2018",
        archives=(
            (f"{_ISIC_BUCKET}/ISIC2018_Task1-2_Training_Input.zip", None),
            (f"{_ISIC_BUCKET}/ISIC2018_Task1_Training_GroundTruth.zip", None),
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
    if download and not (images.is_dir() and masks.is_dir()):
        folder.mkdir(parents=True, exist_ok=True)
        for url, sha256 in recipe.archives:
            archive = download_file(url, folder / url.rsplit("/", 1)[-1], sha256=sha256)
            extract_archive(archive, folder)
            archive.unlink()
    if not (images.is_dir() and masks.is_dir()):
        urls = " and ".join(url for url, _ in recipe.archives)
        raise FileNotFoundError(
            f"{recipe.title} not found: expected images in {images} and masks in {masks}. Pass "
            f"download=True, or download {urls} (see {recipe.homepage}) and extract into {folder}. "
            f"Set COURSE_DATA_DIR to use another folder."
        )
    if recipe.jpeg_masks:
        masks = _threshold_jpeg_masks(masks, masks.with_name(masks.name + "_png"))
    return SegmentationFolder(images, masks, transform=transform, num_classes=2,
                              mask_format="binary", mask_suffix=recipe.mask_suffix,
                              check_files=check_files)


def download_file(url: str, destination: str | Path, sha256: str | None = None,
                  timeout: float = 60.0) -> Path:
    """Download `url` to `destination` atomically; verify its SHA-256 when `sha256` is given.

    The bytes go to `<destination>.part` and are renamed only when complete and verified, so an
    interrupted or corrupted download never leaves a file that looks finished.
    """
    destination = Path(destination)
    if destination.exists():
        if sha256 is None or _sha256_of(destination) == sha256.lower():
            return destination
        raise ValueError(f"{destination} exists but its SHA-256 differs from {sha256}; "
                         "delete it and retry")
    partial = destination.with_name(destination.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"could not download {url} ({error}); download it by hand and save it "
                           f"as {destination}") from error
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        partial.unlink()
        raise ValueError(f"{url}: SHA-256 {digest.hexdigest()} differs from the expected {sha256}; "
                         f"the download is corrupt or the file changed upstream")
    os.replace(partial, destination)
    return destination


def extract_archive(archive: str | Path, destination: str | Path) -> Path:
    """Extract a .zip or .tar(.gz) into `destination` via a temporary folder (all or nothing)."""
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".extract-") as scratch:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)  # zipfile drops absolute paths and ".." itself
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tarred:
                _extract_tar_safely(tarred, Path(scratch))
        else:
            raise ValueError(f"{archive}: not a zip or tar archive")
        for entry in Path(scratch).iterdir():
            target = destination / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
    return destination


def _extract_tar_safely(tarred: tarfile.TarFile, folder: Path) -> None:
    """Extract regular files and folders only, refusing paths that leave `folder`."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
        tarred.extractall(folder, filter="data")
        return
    root = folder.resolve()
    for member in tarred.getmembers():
        target = (folder / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
            raise ValueError(f"{tarred.name}: refusing to extract {member.name!r}")
    tarred.extractall(folder)


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
        raise TypeError("transform must be callable as transform(image=..., mask=...), "
                        f"got {transform!r}")


def _with_download_hint(build: Callable, what: str):
    try:
        return build()
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise RuntimeError(f"{error}. Download {what}, or pass download=True") from error
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(f"download failed ({error}); download {what} by hand") from error


def _sample(image: Image.Image, mask: np.ndarray, transform: Callable | None):
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    if transform is not None:
        out = transform(image=array, mask=mask)
        return out["image"], out["mask"]
    image_chw = torch.from_numpy(array.transpose(2, 0, 1).copy())  # (3, H, W)
    return image_chw, torch.from_numpy(mask.astype(np.int64))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
