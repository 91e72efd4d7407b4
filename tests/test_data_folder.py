"""Tests for course_lib.data.folder.SegmentationFolder on tiny folders written by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from course_lib.data.folder import MAX_AUTO_CLASS_ID, SegmentationFolder


def make_image(seed: int, size=(12, 16), channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = size + (channels,) if channels > 1 else size
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_pair(
    root: Path,
    stem: str,
    mask: np.ndarray,
    *,
    image_ext=".png",
    mask_mode=None,
    palette=None,
    mask_name=None,
    image=None,
) -> tuple[Path, Path]:
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    image = make_image(len(stem), mask.shape[:2]) if image is None else image
    image_path = root / "images" / f"{stem}{image_ext}"
    Image.fromarray(image).save(image_path)
    pil = Image.fromarray(mask) if mask_mode is None else Image.fromarray(mask, mode=mask_mode)
    if palette is not None:
        pil = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
        pil.putpalette(palette)
    mask_path = root / "masks" / (mask_name or f"{stem}.png")
    pil.save(mask_path)
    return image_path, mask_path


def folder(root: Path, **kwargs) -> SegmentationFolder:
    return SegmentationFolder(root / "images", root / "masks", **kwargs)


def test_index_masks_round_trip_with_mixed_image_extensions(tmp_path):
    rng = np.random.default_rng(0)
    masks = {}
    for i, ext in enumerate([".png", ".jpg", ".bmp"]):
        mask = rng.integers(0, 3, (12, 16)).astype(np.uint8)
        mask[0, :4] = 255
        masks[f"s{i}"] = mask
        write_pair(tmp_path, f"s{i}", mask, image_ext=ext)
    ds = folder(tmp_path)
    assert len(ds) == 3 and ds.mask_format == "index" and ds.num_classes == 3
    for i in range(3):
        image, mask = ds[i]
        assert image.shape == (3, 12, 16) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        stem = ds.samples[i][1].stem
        torch.testing.assert_close(mask, torch.from_numpy(masks[stem].astype(np.int64)))


def test_png_image_values_are_exactly_scaled(tmp_path):
    raw = make_image(5)
    write_pair(tmp_path, "a", np.zeros((12, 16), np.uint8), image=raw)
    image, _ = folder(tmp_path, num_classes=2)[0]
    expected = torch.from_numpy(raw.transpose(2, 0, 1).astype(np.float32) / 255)  # (3, H, W)
    torch.testing.assert_close(image, expected)


def test_grayscale_images(tmp_path):
    write_pair(tmp_path, "a", np.zeros((12, 16), np.uint8), image=make_image(1, channels=1))
    image, _ = folder(tmp_path, image_mode="L", num_classes=2)[0]
    assert image.shape == (1, 12, 16)


def test_16_bit_grayscale_images_are_rescaled_not_clipped(tmp_path):
    raw = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300  # 0 .. 57,300
    write_pair(tmp_path, "deep", np.zeros((12, 16), np.uint8), image=raw)
    assert Image.open(tmp_path / "images" / "deep.png").mode.startswith("I")  # stored in 16 bits
    for mode, channels in [("L", 1), ("RGB", 3)]:
        image, _ = folder(tmp_path, image_mode=mode, num_classes=2)[0]
        expected = torch.from_numpy(raw.astype(np.float64) / 65535).float()  # (H, W)
        assert image.shape == (channels, 12, 16)
        for channel in image:
            torch.testing.assert_close(channel, expected)
    assert len(set(image[0].flatten().tolist())) == 12 * 16  # PIL's convert("L") would clip


def test_floating_point_images_are_refused_with_their_file(tmp_path):
    write_pair(tmp_path, "f", np.zeros((12, 16), np.uint8))
    Image.fromarray(np.ones((12, 16), np.float32)).save(tmp_path / "images" / "f.tiff")
    (tmp_path / "images" / "f.png").unlink()
    ds = folder(tmp_path, num_classes=2)
    with pytest.raises(ValueError, match=r"f\.tiff: floating-point image"):
        ds[0]


def test_palette_masks_decode_to_indices(tmp_path):
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [200, 200, 200] * 253
    mask = np.array([[0, 1, 2, 255]] * 3, dtype=np.uint8)
    write_pair(tmp_path, "voc", mask, palette=palette)
    ds = folder(tmp_path)
    assert ds.mask_format == "palette" and ds.num_classes == 3
    torch.testing.assert_close(ds[0][1], torch.from_numpy(mask.astype(np.int64)))


def test_rgb_masks_with_colour_table(tmp_path):
    table = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 0, 255): 2}
    labels = np.array([[0, 1, 2, 1]] * 3)
    colours = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255)], dtype=np.uint8)[labels]  # (H, W, 3)
    write_pair(tmp_path, "a", colours)
    ds = folder(tmp_path, color_to_class=table)
    assert ds.mask_format == "rgb" and ds.num_classes == 3
    torch.testing.assert_close(ds[0][1], torch.from_numpy(labels))


def test_rgb_mask_without_table_or_with_unknown_colour_is_reported(tmp_path):
    colours = np.zeros((3, 4, 3), np.uint8)
    colours[0, 0] = (10, 20, 30)
    _, mask_path = write_pair(tmp_path, "a", colours)
    with pytest.raises(ValueError, match="color_to_class") as info:
        folder(tmp_path)
    assert str(mask_path) in str(info.value)
    with pytest.raises(ValueError, match=r"\(10, 20, 30\)"):
        folder(tmp_path, color_to_class={(0, 0, 0): 0})


def test_binary_0_255_masks_become_0_1(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[3:7, 5:9] = 255
    write_pair(tmp_path, "lesion", mask)
    write_pair(tmp_path, "empty", np.zeros((12, 16), np.uint8))
    ds = folder(tmp_path)
    assert ds.mask_format == "binary" and ds.num_classes == 2
    got = {ds.samples[i][1].stem: ds[i][1] for i in range(2)}
    torch.testing.assert_close(got["lesion"], torch.from_numpy((mask > 0).astype(np.int64)))
    assert got["empty"].sum() == 0


def test_binary_values_in_jpeg_style_mask_are_reported(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[3:7, 5:9] = 255
    mask[3, 5] = 250  # what lossy compression leaves behind
    write_pair(tmp_path, "a", mask)
    with pytest.raises(ValueError, match="binary mask has values"):
        folder(tmp_path, mask_format="binary")


def test_zero_255_with_more_classes_is_an_index_mask_with_ignore(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[0] = 255
    write_pair(tmp_path, "a", mask)
    ds = folder(tmp_path, num_classes=3)
    assert ds.mask_format == "index"
    assert set(ds[0][1].unique().tolist()) == {0, 255}


def test_value_to_class_mapping(tmp_path):
    mask = np.array([[0, 100, 200, 255]] * 3, dtype=np.uint8)
    write_pair(tmp_path, "a", mask)
    ds = folder(tmp_path, value_to_class={0: 0, 100: 1, 200: 2})
    torch.testing.assert_close(ds[0][1], torch.tensor([[0, 1, 2, 255]] * 3))
    with pytest.raises(ValueError, match=r"\[200\] are not in value_to_class"):
        folder(tmp_path, value_to_class={0: 0, 100: 1})


def test_mask_suffix_pairs_isic_style_names(tmp_path):
    write_pair(
        tmp_path, "ISIC_001", np.zeros((12, 16), np.uint8), mask_name="ISIC_001_segmentation.png"
    )
    ds = folder(tmp_path, mask_suffix="_segmentation", num_classes=2)
    assert len(ds) == 1 and ds.samples[0][0].stem == "ISIC_001"


def test_every_problem_names_its_file_and_strict_false_keeps_good_pairs(tmp_path):
    good = np.zeros((12, 16), np.uint8)
    write_pair(tmp_path, "good", good)
    lonely_image, _ = write_pair(tmp_path, "lonely_image", good)
    (tmp_path / "masks" / "lonely_image.png").unlink()
    _, lonely_mask = write_pair(tmp_path, "lonely_mask", good)
    (tmp_path / "images" / "lonely_mask.png").unlink()
    _, wrong_size = write_pair(tmp_path, "wrong_size", good, image=make_image(2, (10, 16)))
    _, out_of_range = write_pair(tmp_path, "out_of_range", np.full((12, 16), 7, np.uint8))
    truncated, _ = write_pair(tmp_path, "truncated", good, image=make_image(3, (64, 64)))
    truncated.write_bytes(truncated.read_bytes()[:200])
    jpeg_mask = tmp_path / "masks" / "jpeg_mask.jpg"
    Image.fromarray(good).save(jpeg_mask)

    with pytest.raises(ValueError) as info:
        folder(tmp_path, num_classes=3)
    assert "strict=False" in str(info.value)

    ds = folder(tmp_path, num_classes=3, strict=False)
    assert [p[0].stem for p in ds.samples] == ["good"]
    expected = {
        lonely_image: "has no mask",
        lonely_mask: "has no image",
        wrong_size: "differs from image",
        out_of_range: "outside [0, 3)",
        truncated: "truncated",
        jpeg_mask: "must be PNG",
    }
    assert len(ds.problems) == len(expected)
    for path, phrase in expected.items():
        found = any(str(path) in p and phrase in p for p in ds.problems)
        assert found, f"no problem reported for {path.name}: {ds.problems}"
    assert ds.validate() == ds.problems


def test_transform_gets_albumentations_style_arguments(tmp_path):
    write_pair(tmp_path, "a", np.ones((12, 16), np.uint8))
    calls = []

    def transform(*, image, mask):
        calls.append((image.dtype, image.shape, mask.dtype, mask.shape))
        return {"image": torch.from_numpy(image.transpose(2, 0, 1)), "mask": torch.from_numpy(mask)}

    image, mask = folder(tmp_path, num_classes=2, transform=transform)[0]
    assert calls == [(np.float32, (12, 16, 3), np.int64, (12, 16))]
    assert image.shape == (3, 12, 16) and mask.dtype == torch.int64


def test_works_with_course_transforms_and_a_dataloader(tmp_path):
    from course_lib.transforms import train_transforms

    for i in range(4):
        mask = np.random.default_rng(i).integers(0, 2, (12, 16)).astype(np.uint8)
        write_pair(tmp_path, f"s{i}", mask)
    ds = folder(tmp_path, transform=train_transforms(8, seed=0))
    images, masks = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and masks.shape == (4, 8, 8) and masks.dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(mask_format="jpeg"), ValueError, "mask_format"),
        (dict(mask_format="rgb"), ValueError, "color_to_class"),
        (dict(image_mode="CMYK"), ValueError, "image_mode"),
        (dict(num_classes=0), ValueError, "num_classes"),
        (dict(ignore_index=-1), ValueError, "ignore_index"),
        (dict(value_to_class={0: 0}, mask_format="binary"), ValueError, "value_to_class"),
        (dict(color_to_class={(0, 0): 0}), ValueError, "color_to_class"),
        (dict(transform="flip"), TypeError, "transform"),
        (dict(mask_threshold=0), ValueError, "mask_threshold must be a positive int"),
        (dict(mask_threshold=-128), ValueError, "mask_threshold must be a positive int"),
        (dict(mask_threshold=127.5), ValueError, "mask_threshold must be a positive int"),
        (dict(mask_threshold=True), ValueError, "mask_threshold must be a positive int"),
        (dict(mask_threshold="128"), ValueError, "mask_threshold must be a positive int"),
        (
            dict(mask_threshold=128, mask_format="index"),
            ValueError,
            "mask_format 'auto' or 'binary'",
        ),
        (dict(mask_threshold=128, num_classes=3), ValueError, "num_classes=3"),
        (dict(mask_threshold=128, value_to_class={0: 0}), ValueError, "give one"),
        (dict(mask_threshold=128, color_to_class={(0, 0, 0): 0}), ValueError, "give one"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    write_pair(tmp_path, "a", np.zeros((12, 16), np.uint8))
    with pytest.raises(error, match=match):
        folder(tmp_path, **kwargs)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_dir"):
        SegmentationFolder(tmp_path / "nope", tmp_path)


def test_check_files_false_pairs_names_and_checks_labels_when_loading(tmp_path):
    write_pair(tmp_path, "a", np.full((12, 16), 5, np.uint8))
    _, orphan = write_pair(tmp_path, "b", np.zeros((12, 16), np.uint8))
    (tmp_path / "images" / "b.png").unlink()
    ds = folder(tmp_path, check_files=False, mask_format="index", num_classes=3, strict=False)
    assert len(ds) == 1 and any(str(orphan) in p for p in ds.problems)
    with pytest.raises(ValueError, match=r"a\.png: mask labels \[5\] outside \[0, 3\)"):
        ds[0]
    with pytest.raises(ValueError, match="check_files=False"):
        folder(tmp_path, check_files=False, num_classes=3)


# -- stray mask values: reported, never turned into extra classes ---------------------------------


def square_mask(size=(12, 16)) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[3:7, 5:9] = 255
    return mask


def jpeg_round_trip(mask: np.ndarray) -> np.ndarray:
    """What a 0/255 mask holds after being saved as JPEG once: noise near every edge."""
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(buffer).convert("L"))


def stored(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


def test_binary_folder_with_one_anti_aliased_value_is_reported_not_129_classes(tmp_path):
    write_pair(tmp_path, "a", square_mask())
    write_pair(tmp_path, "b", square_mask())
    edge = square_mask()
    edge[3, 4] = 128  # one anti-aliased pixel
    _, edge_path = write_pair(tmp_path, "c", edge)
    with pytest.raises(ValueError) as info:
        folder(tmp_path)
    message = str(info.value)
    assert str(edge_path) in message and "values [0, 128, 255] (3 distinct)" in message
    assert "anti-aliased or JPEG-saved binary mask" in message
    assert "mask_threshold=128" in message and "--mask-threshold 128" in message
    assert "num_classes / value_to_class" in message

    kept = folder(tmp_path, strict=False)  # the clean masks are still read as binary
    assert kept.mask_format == "binary" and kept.num_classes == 2 and len(kept) == 2
    assert len(kept.problems) == 1 and str(edge_path) in kept.problems[0]


def test_jpeg_noisy_mask_is_reported_with_its_values(tmp_path):
    write_pair(tmp_path, "clean", square_mask((32, 32)))
    noisy = jpeg_round_trip(square_mask((32, 32)))
    assert len(np.unique(noisy)) > 10 and (noisy[noisy < 255] > 0).any()  # small values too
    _, noisy_path = write_pair(tmp_path, "noisy", noisy)
    with pytest.raises(ValueError) as info:
        folder(tmp_path)
    message = str(info.value)
    distinct = len(np.unique(noisy))
    assert str(noisy_path) in message and f"{distinct} distinct" in message
    assert "JPEG-saved binary mask" in message and "mask_threshold=128" in message
    kept = folder(tmp_path, strict=False)  # the noisy mask holds small values, yet not "index"
    assert kept.mask_format == "binary" and [p[1].stem for p in kept.samples] == ["clean"]


def test_mask_threshold_binarises_exactly_like_numpy(tmp_path):
    edge = square_mask((32, 32))
    edge[3, 4] = 128
    paths = [
        write_pair(tmp_path, "edge", edge)[1],
        write_pair(tmp_path, "noisy", jpeg_round_trip(square_mask((32, 32))))[1],
    ]
    ds = folder(tmp_path, mask_threshold=128)
    assert ds.mask_format == "binary" and ds.num_classes == 2 and len(ds) == 2
    for i, (_, mask_path) in enumerate(ds.samples):
        expected = (stored(mask_path) >= 128).astype(np.int64)
        torch.testing.assert_close(ds[i][1], torch.from_numpy(expected))
    assert sorted(p[1] for p in ds.samples) == sorted(paths)
    assert stored(paths[0])[3, 4] == 128 and ds[0][1][3, 4] == 1


def test_mask_threshold_compares_16_bit_stored_values(tmp_path):
    mask = np.zeros((12, 16), np.uint16)
    mask[2:6, 3:9] = 40000
    mask[2, 3] = 20000
    _, mask_path = write_pair(tmp_path, "deep", mask)
    with pytest.raises(ValueError, match=r"\[20000, 40000\].*mask_threshold"):
        folder(tmp_path)
    ds = folder(tmp_path, mask_threshold=32768)
    expected = (stored(mask_path) >= 32768).astype(np.int64)
    torch.testing.assert_close(ds[0][1], torch.from_numpy(expected))
    assert ds[0][1][2, 3] == 0 and ds[0][1].sum() == 4 * 6 - 1


@pytest.mark.parametrize("threshold, side, label", [(250, "above", 0), (5, "at or below", 1)])
def test_mask_threshold_that_puts_every_pixel_in_one_class_is_refused(
    tmp_path, threshold, side, label
):
    for stem in ("a", "b"):
        mask = np.full((12, 16), 10, np.uint8)
        mask[2:6, 3:9] = 200
        write_pair(tmp_path, stem, mask)
    with pytest.raises(
        ValueError,
        match=rf"mask_threshold={threshold} is {side} every stored "
        rf"mask value \(\[10, 200\] in 2 masks\).*class {label}",
    ):
        folder(tmp_path, mask_threshold=threshold)
    assert folder(tmp_path, mask_threshold=100)[0][1].sum() == 4 * 6


def test_mask_threshold_rejects_palette_and_colour_masks(tmp_path):
    palette = [0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254
    _, palette_path = write_pair(tmp_path, "p", np.array([[0, 1]] * 3, np.uint8), palette=palette)
    with pytest.raises(ValueError, match="mask_threshold binarises grayscale masks") as info:
        folder(tmp_path, mask_threshold=128)
    assert str(palette_path) in str(info.value)
    colours = np.zeros((3, 4, 3), np.uint8)
    colours[0, 0] = (255, 0, 0)
    (tmp_path / "colour").mkdir()
    write_pair(tmp_path / "colour", "c", colours)
    with pytest.raises(ValueError, match="mask_threshold binarises grayscale masks"):
        folder(tmp_path / "colour", mask_threshold=128)


def test_small_class_ids_with_ignore_stay_index_masks(tmp_path):
    mask = np.array([[0, 1, 2, 255]] * 3, dtype=np.uint8)
    write_pair(tmp_path, "a", mask)
    ds = folder(tmp_path)
    assert ds.mask_format == "index" and ds.num_classes == 3
    torch.testing.assert_close(ds[0][1], torch.from_numpy(mask.astype(np.int64)))
    assert ds.describe_mapping() == "class ids as stored (0..2), 255 ignored"


def test_largest_auto_class_id_is_the_constant_minus_one(tmp_path):
    write_pair(tmp_path, "a", np.array([[0, MAX_AUTO_CLASS_ID - 1]] * 3, dtype=np.uint8))
    assert folder(tmp_path).num_classes == MAX_AUTO_CLASS_ID
    _, too_large = write_pair(tmp_path, "b", np.array([[0, MAX_AUTO_CLASS_ID]] * 3, np.uint8))
    with pytest.raises(ValueError, match=rf"\[{MAX_AUTO_CLASS_ID}\] are not class ids") as info:
        folder(tmp_path)
    assert str(too_large) in str(info.value)


def test_explicit_num_classes_allows_large_class_ids(tmp_path):
    mask = np.array([[0, 7, 150, 255]] * 3, dtype=np.uint8)
    write_pair(tmp_path, "a", mask)
    ds = folder(tmp_path, num_classes=200)
    assert ds.mask_format == "index" and ds.num_classes == 200
    torch.testing.assert_close(ds[0][1], torch.from_numpy(mask.astype(np.int64)))


# -- the mapping, reported and rebuilt ------------------------------------------------------------


def folder_of(kind: str, root: Path) -> dict:
    """Write a one-pair folder of a kind; return the constructor arguments that read it."""
    if kind == "binary":
        write_pair(root, "a", square_mask())
        return {}
    if kind == "threshold":
        edge = square_mask()
        edge[3, 4] = 128
        write_pair(root, "a", edge)
        return {"mask_threshold": 100}
    if kind == "index":
        write_pair(root, "a", np.array([[0, 1, 2, 255]] * 3, dtype=np.uint8))
        return {}
    if kind == "value_to_class":
        write_pair(root, "a", np.array([[0, 100, 200, 255]] * 3, dtype=np.uint8))
        return {"value_to_class": {0: 0, 100: 1, 200: 2}}
    if kind == "palette":
        palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [200, 200, 200] * 253
        write_pair(root, "a", np.array([[0, 1, 2, 255]] * 3, np.uint8), palette=palette)
        return {}
    labels = np.array([[0, 1, 1, 0]] * 3)
    write_pair(root, "a", np.array([(0, 0, 0), (255, 0, 0)], dtype=np.uint8)[labels])
    return {"color_to_class": {(0, 0, 0): 0, (255, 0, 0): 1}}


@pytest.mark.parametrize(
    "kind", ["binary", "threshold", "index", "value_to_class", "palette", "rgb"]
)
def test_mask_mapping_rebuilds_the_same_dataset(tmp_path, kind):
    ds = folder(tmp_path, **folder_of(kind, tmp_path))
    mapping = ds.mask_mapping
    assert set(mapping) == {
        "mask_format",
        "mask_threshold",
        "value_to_class",
        "color_to_class",
        "num_classes",
        "ignore_index",
    }
    assert mapping["mask_format"] == ds.mask_format and mapping["num_classes"] == ds.num_classes
    rebuilt = folder(tmp_path, **mapping)
    assert rebuilt.mask_mapping == mapping and rebuilt.num_classes == ds.num_classes
    torch.testing.assert_close(rebuilt[0][1], ds[0][1])
    mapping["num_classes"] = 99  # a copy: changing it leaves the dataset alone
    assert ds.mask_mapping["num_classes"] == ds.num_classes


def test_mask_mapping_is_plain_data(tmp_path):
    ds = folder(tmp_path, **folder_of("value_to_class", tmp_path))
    assert ds.mask_mapping == {
        "mask_format": "index",
        "mask_threshold": None,
        "value_to_class": {0: 0, 100: 1, 200: 2},
        "color_to_class": None,
        "num_classes": 3,
        "ignore_index": 255,
    }
    assert all(type(key) is int for key in ds.mask_mapping["value_to_class"])


@pytest.mark.parametrize(
    "kind, line",
    [
        ("binary", "binary masks: value 0 -> class 0, 255 (or 1) -> class 1"),
        ("threshold", "mask values >= 100 -> class 1, below -> class 0"),
        ("index", "class ids as stored (0..2), 255 ignored"),
        ("value_to_class", "mask values -> classes: 0->0, 100->1, 200->2, 255 ignored"),
        ("palette", "palette indices 0..2 as class ids, 255 ignored"),
        ("rgb", "colours -> classes: (0,0,0)->0, (255,0,0)->1"),
    ],
)
def test_describe_mapping(tmp_path, kind, line):
    assert folder(tmp_path, **folder_of(kind, tmp_path)).describe_mapping() == line
