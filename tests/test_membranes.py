"""Tests of course_lib.data.membranes: what makes the slices ISBI-like, determinism, the folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from course_lib.data import SegmentationFolder, membrane_sample, write_membrane_folder

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def samples():
    return [membrane_sample(512, rng=seed) for seed in SEEDS]


def _best_threshold_dice(image: np.ndarray, membrane: np.ndarray) -> float:
    """Dice of the best rule `image <= t` or `image > t` over all 256 thresholds t."""
    counts = np.bincount(image.ravel(), minlength=256)  # (256,) pixels per grey value
    hits = np.bincount(image[membrane], minlength=256)  # (256,) membrane pixels per grey value
    dark_predicted, dark_hits = np.cumsum(counts), np.cumsum(hits)  # rule image <= t
    bright_predicted, bright_hits = image.size - dark_predicted, membrane.sum() - dark_hits
    dice_dark = 2 * dark_hits / (dark_predicted + membrane.sum())
    dice_bright = 2 * bright_hits / np.maximum(bright_predicted + membrane.sum(), 1)
    return float(max(dice_dark.max(), dice_bright.max()))


def test_best_threshold_dice_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    membrane = rng.random((40, 50)) < 0.3
    direct = max(
        2 * ((image <= t) & membrane).sum() / ((image <= t).sum() + membrane.sum())
        for t in range(256)
    )
    assert _best_threshold_dice(image, membrane) >= direct - 1e-12


def test_shapes_dtypes_and_mask_values(samples):
    for image, mask in samples:
        assert image.shape == mask.shape == (512, 512)
        assert image.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 255}
    image, mask = membrane_sample((80, 120), rng=5)
    assert image.shape == mask.shape == (80, 120)


def test_membranes_cover_about_a_fifth_of_the_image(samples):
    fractions = [float((mask == 255).mean()) for _, mask in samples]
    assert all(0.12 <= f <= 0.28 for f in fractions), fractions


def test_membranes_form_one_connected_network(samples):
    for _, mask in samples:
        labels, count = ndimage.label(mask == 255)  # 4-connectivity
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() >= 0.9 * sizes.sum(), (count, sorted(sizes)[-3:])


def test_membranes_are_thin_lines(samples):
    for _, mask in samples:
        membrane = mask == 255
        eroded = ndimage.binary_erosion(membrane, structure=np.ones((5, 5), bool))
        assert eroded.sum() <= 0.3 * membrane.sum()


def test_no_global_threshold_segments_the_membranes(samples):
    for image, mask in samples:
        assert _best_threshold_dice(image, mask == 255) < 0.85


def test_same_seed_same_sample_other_seed_other_sample():
    image, mask = membrane_sample(128, rng=7)
    again_image, again_mask = membrane_sample(128, rng=np.random.default_rng(7))
    other_image, other_mask = membrane_sample(128, rng=8)
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)
    assert not np.array_equal(mask, other_mask) and not np.array_equal(image, other_image)


@pytest.mark.parametrize("size", [32, 0, (64,), 64.0, True])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="size"):
        membrane_sample(size, rng=0)


def test_folder_layout_pairs_stems_and_is_deterministic(tmp_path):
    paths = write_membrane_folder(tmp_path / "a", num_train=3, num_test=2, size=96, seed=4)
    write_membrane_folder(tmp_path / "b", num_train=3, num_test=2, size=96, seed=4)
    assert sorted(paths) == ["test_images", "test_masks", "train_images", "train_masks"]
    stems = {name: sorted(p.stem for p in folder.iterdir()) for name, folder in paths.items()}
    assert stems["train_images"] == stems["train_masks"] == ["slice_000", "slice_001", "slice_002"]
    assert stems["test_images"] == stems["test_masks"] == ["slice_003", "slice_004"]
    for folder in paths.values():
        for path in folder.iterdir():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert path.read_bytes() == twin.read_bytes()
    with Image.open(paths["train_masks"] / "slice_000.png") as mask:
        assert mask.mode == "L" and mask.size == (96, 96)
        assert set(np.unique(np.asarray(mask)).tolist()) == {0, 255}
    dataset = SegmentationFolder(paths["train_images"], paths["train_masks"], image_mode="L")
    image, target = dataset[0]
    assert len(dataset) == 3 and image.shape == (1, 96, 96)
    assert set(target.unique().tolist()) == {0, 1}


def test_folder_refuses_to_overwrite_unless_asked(tmp_path):
    root = tmp_path / "em"
    paths = write_membrane_folder(root, num_train=3, num_test=1, size=64, seed=0)
    before = (paths["train_images"] / "slice_000.png").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_membrane_folder(root, num_train=3, num_test=1, size=64, seed=1)
    assert (paths["train_images"] / "slice_000.png").read_bytes() == before
    (root / "notes.txt").write_text("mine")
    write_membrane_folder(root, num_train=2, num_test=1, size=64, seed=1, overwrite=True)
    assert (paths["train_images"] / "slice_000.png").read_bytes() != before
    assert sorted(p.stem for p in paths["train_masks"].iterdir()) == ["slice_000", "slice_001"]
    assert sorted(p.name for p in paths["test_images"].iterdir()) == ["slice_002.png"]
    assert (root / "notes.txt").read_text() == "mine"
