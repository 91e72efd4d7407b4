"""Tests for course_lib.data.real on tiny fixture trees in each dataset's real on-disk layout.

No network: the download path is exercised with file:// URLs to archives the tests build
(mirrors, resume and unsafe archives are tested over a local HTTP server in test_downloads.py).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data import real
from course_lib.data.real import (
    MEDICAL_DATASETS,
    DownloadError,
    OxfordPetSegmentation,
    PascalVOCSegmentation,
    RemoteFile,
    download_file,
    extract_archive,
    medical_dataset,
)
from course_lib.transforms import val_transforms


def rgb(seed: int, height: int = 10, width: int = 14) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# -- Oxford-IIIT Pet -----------------------------------------------------------------------------

TRIMAP = np.array([[2, 2, 3, 1, 1, 3, 2]] * 5, dtype=np.uint8)  # 1 pet, 2 background, 3 band


def pet_tree(root: Path, names=("Abyssinian_1", "beagle_12")) -> Path:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    lines = []
    for i, name in enumerate(names):
        Image.fromarray(rgb(i, *TRIMAP.shape)).save(base / "images" / f"{name}.jpg")
        Image.fromarray(TRIMAP).save(base / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {i + 1} {1 + (i % 2)} 1")  # image id, breed, species, breed id
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (base / "annotations" / "test.txt").write_text(lines[0] + "\n")
    return root


def test_pet_trimap_maps_to_three_classes(tmp_path):
    ds = OxfordPetSegmentation(pet_tree(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 3 and ds.CLASSES == ("background", "pet", "boundary")
    image, mask = ds[0]
    assert image.shape == (3, 5, 7) and image.dtype == torch.float32
    assert 0 <= image.min() <= image.max() <= 1
    expected = torch.tensor([[0, 0, 2, 1, 1, 2, 0]] * 5)
    torch.testing.assert_close(mask, expected)


def test_pet_boundary_ignored_gives_two_classes(tmp_path):
    ds = OxfordPetSegmentation(pet_tree(tmp_path), split="test", boundary="ignore")
    assert len(ds) == 1 and ds.num_classes == 2
    torch.testing.assert_close(ds[0][1], torch.tensor([[0, 0, 255, 1, 1, 255, 0]] * 5))


def test_pet_with_course_transform(tmp_path):
    image, mask = OxfordPetSegmentation(pet_tree(tmp_path), transform=val_transforms(8))[1]
    assert image.shape == (3, 8, 8) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1, 2}


def test_pet_rejects_files_that_are_not_trimaps(tmp_path):
    pet_tree(tmp_path)
    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(
        tmp_path / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_1.png"
    )
    with pytest.raises(ValueError, match=r"Abyssinian_1\.png: trimap values \[9\]"):
        OxfordPetSegmentation(tmp_path)[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(split="val"), ValueError, "split"),
        (dict(boundary="drop"), ValueError, "boundary"),
        (dict(ignore_index=1), ValueError, "ignore_index"),
        (dict(transform="flip"), TypeError, "transform"),
    ],
)
def test_pet_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        OxfordPetSegmentation(pet_tree(tmp_path), **kwargs)


def test_pet_missing_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        OxfordPetSegmentation()
    message = str(info.value)
    assert str(tmp_path / "oxford-iiit-pet") in message
    assert "download=True" in message and "annotations.tar.gz" in message


# -- Pascal VOC 2012 -----------------------------------------------------------------------------


def voc_tree(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [64, 64, 64] * 253
    masks = {}
    for i, name in enumerate(["2007_000032", "2007_000039", "2008_000001"]):
        mask = np.zeros((6, 9), np.uint8)
        mask[1:4, 2:6] = 15 if i else 20  # person / tvmonitor
        mask[1, 2:6] = 255  # object outline
        Image.fromarray(rgb(i, 6, 9)).save(base / "JPEGImages" / f"{name}.jpg")
        pil = Image.fromarray(mask, mode="L").convert("P")
        pil.putpalette(palette)
        pil.save(base / "SegmentationClass" / f"{name}.png")
        masks[name] = mask
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000039\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000001\n")
    return root, masks


def test_voc_reads_palette_indices_and_keeps_255(tmp_path):
    root, masks = voc_tree(tmp_path)
    train = PascalVOCSegmentation(root)
    val = PascalVOCSegmentation(root, image_set="val")
    assert len(train) == 2 and len(val) == 1 and train.num_classes == 21
    image, mask = train[0]
    assert image.shape == (3, 6, 9) and image.dtype == torch.float32
    torch.testing.assert_close(mask, torch.from_numpy(masks["2007_000032"].astype(np.int64)))
    assert set(val[0][1].unique().tolist()) == {0, 15, 255}


def test_voc_missing_fails_fast_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        PascalVOCSegmentation(tmp_path / "nothing")
    assert "VOCtrainval_11-May-2012.tar" in str(info.value) and "download=True" in str(info.value)


# -- medical folders, download and extraction ------------------------------------------------------


def kvasir_zip(path: Path) -> dict[str, np.ndarray]:
    """A zip shaped like kvasir-seg.zip: Kvasir-SEG/images/*.jpg and Kvasir-SEG/masks/*.jpg."""
    truth = {}
    with zipfile.ZipFile(path, "w") as archive:
        for i, name in enumerate(["cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv"]):
            mask = np.zeros((16, 16), np.uint8)
            mask[4:12, 3 + i : 10 + i] = 255
            truth[name] = (mask > 0).astype(np.int64)
            for folder, array in (("images", rgb(i, 16, 16)), ("masks", mask)):
                buffer = io.BytesIO()
                Image.fromarray(array).save(buffer, format="JPEG", quality=70)  # lossy, as shipped
                archive.writestr(f"Kvasir-SEG/{folder}/{name}.jpg", buffer.getvalue())
    return truth


def test_kvasir_download_extract_threshold_and_load(tmp_path, monkeypatch):
    archive = tmp_path / "served" / "kvasir-seg.zip"
    archive.parent.mkdir()
    truth = kvasir_zip(archive)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    recipe = MEDICAL_DATASETS["kvasir-seg"]._replace(
        archives=(RemoteFile("kvasir-seg.zip", (archive.as_uri(),), f"sha256:{sha}"),)
    )
    monkeypatch.setitem(real.MEDICAL_DATASETS, "kvasir-seg", recipe)
    ds = medical_dataset("kvasir-seg", root=tmp_path / "data", download=True)
    assert len(ds) == 2 and ds.num_classes == 2 and ds.mask_format == "binary"
    assert not (tmp_path / "data" / "kvasir-seg" / "kvasir-seg.zip").exists()
    for i, (image_path, _) in enumerate(ds.samples):
        image, mask = ds[i]
        assert image.shape == (3, 16, 16)
        agreement = (mask == torch.from_numpy(truth[image_path.stem])).float().mean().item()
        assert agreement > 0.97  # JPEG ringing moves at most a few outline pixels
    again = medical_dataset("kvasir-seg", root=tmp_path / "data")  # no download the second time
    assert again.samples == ds.samples


def test_isic_layout_with_suffix_masks(tmp_path):
    base = tmp_path / "isic2018"
    images = base / "ISIC2018_Task1-2_Training_Input"
    masks = base / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    (images / "LICENSE.txt").write_text("licence text shipped with the archive")
    mask = np.zeros((8, 12), np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(rgb(0, 8, 12)).save(images / "ISIC_0000000.jpg")
    Image.fromarray(mask).save(masks / "ISIC_0000000_segmentation.png")
    ds = medical_dataset("isic2018", root=tmp_path)
    torch.testing.assert_close(ds[0][1], torch.from_numpy((mask > 0).astype(np.int64)))


def test_medical_missing_fails_fast_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        medical_dataset("kvasir-seg", root=tmp_path)
    assert "kvasir-seg.zip" in str(info.value) and str(tmp_path / "kvasir-seg") in str(info.value)
    with pytest.raises(ValueError, match="name must be one of"):
        medical_dataset("drive", root=tmp_path)


def test_download_rejects_a_wrong_checksum_and_leaves_no_file(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"segmentation" * 100)
    target = tmp_path / "out" / "file.bin"
    target.parent.mkdir()
    with pytest.raises(DownloadError, match="sha256 checksum"):
        download_file([source.as_uri()], target, checksum="sha256:" + "0" * 64)
    assert list(target.parent.iterdir()) == []
    good = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert download_file([source.as_uri()], target, good).read_bytes() == source.read_bytes()


def test_download_failure_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="Download it by hand"):
        download_file([(tmp_path / "absent.zip").as_uri()], tmp_path / "x.zip")
    assert not (tmp_path / "x.zip.part").exists()


def test_extract_tar_and_zip(tmp_path):
    payload = tmp_path / "payload.txt"
    payload.write_text("hello")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tarred:
        tarred.add(payload, arcname="top/inner/payload.txt")
    extract_archive(tmp_path / "a.tar.gz", tmp_path / "x")
    assert (tmp_path / "x" / "top" / "inner" / "payload.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["top"]  # no scratch folder left behind
    with pytest.raises(ValueError, match="not a zip or tar"):
        extract_archive(payload, tmp_path / "y")


@pytest.mark.parametrize("python_filter", [True, False])
def test_tar_members_leaving_the_folder_are_refused(tmp_path, monkeypatch, python_filter):
    if not python_filter:  # the check used on Pythons without tarfile's "data" filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    payload = tmp_path / "payload.txt"
    payload.write_text("hello")
    with tarfile.open(tmp_path / "evil.tar", "w") as tarred:
        tarred.add(payload, arcname="../escaped.txt")
    with pytest.raises((ValueError, tarfile.TarError)):
        extract_archive(tmp_path / "evil.tar", tmp_path / "x")
    assert not (tmp_path / "escaped.txt").exists()
