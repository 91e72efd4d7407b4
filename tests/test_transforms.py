"""Tests for course_lib.transforms: valid labels, aligned image and mask, dtypes, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from course_lib import transforms as T

NUM_CLASSES = 4
IGNORE = 255


def blocky_sample(seed: int, size: int = 64, block: int = 16, channels: int = 3):
    """A mask of random square blocks of labels, and an image whose brightness encodes the label."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, NUM_CLASSES, (size // block, size // block))
    mask = np.kron(cells, np.ones((block, block), dtype=np.int64)).astype(np.int64)  # (H, W)
    value = mask.astype(np.float32) / (NUM_CLASSES - 1)  # label k -> brightness k / (K - 1)
    image = np.repeat(value[:, :, None], channels, axis=2)  # (H, W, C)
    return image, mask


def labels_from_image(image: torch.Tensor, mean, std) -> torch.Tensor:
    plain = T.denormalize(image, mean, std)[0]  # (H, W) in [0, 1]
    return torch.round(plain * (NUM_CLASSES - 1)).long()


PIPELINES = {
    "train_default": lambda: T.train_transforms(48, seed=1),
    "train_all_geometric": lambda: T.train_transforms(
        (40, 56), vflip=0.5, distortion=1.0, rotate=40.0, scale=(0.5, 1.5), seed=2
    ),
    "train_gray": lambda: T.train_transforms(32, mean=(0.5,), std=(0.25,), distortion=0.5, seed=3),
    "val_resize": lambda: T.val_transforms((40, 30)),
    "val_identity": lambda: T.val_transforms(),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_masks_hold_only_valid_labels_and_ignore(name):
    transform = PIPELINES[name]()
    rng = np.random.default_rng(0)
    channels = transform.in_channels
    seen = set()
    for _ in range(25):
        image = rng.random((50, 70, channels), dtype=np.float32)
        mask = rng.integers(0, NUM_CLASSES, (50, 70))
        mask[rng.random((50, 70)) < 0.05] = IGNORE
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = transform(image=image, mask=mask)
        assert out["image"].dtype == torch.float32 and out["image"].shape[0] == channels
        assert out["mask"].dtype == torch.int64 and out["mask"].ndim == 2
        assert out["image"].shape[1:] == out["mask"].shape
        seen |= set(out["mask"].unique().tolist())
    assert seen <= set(range(NUM_CLASSES)) | {IGNORE}, f"{name} produced labels {sorted(seen)}"


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 60),
    width=st.integers(8, 60),
    out=st.integers(8, 40),
    rotate=st.floats(0, 90),
    low=st.floats(0.3, 1.0),
    high=st.floats(1.0, 2.0),
    seed=st.integers(0, 2**16),
)
def test_labels_stay_valid_for_any_pipeline_settings(height, width, out, rotate, low, high, seed):
    transform = T.train_transforms(
        out, scale=(low, high), rotate=rotate, vflip=0.5, distortion=0.5, seed=seed
    )
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, NUM_CLASSES, (height, width))
    mask[rng.random((height, width)) < 0.1] = IGNORE
    result = transform(image=rng.random((height, width, 3), dtype=np.float32), mask=mask)
    assert result["mask"].shape == (out, out) and result["image"].shape == (3, out, out)
    assert set(result["mask"].unique().tolist()) <= set(range(NUM_CLASSES)) | {IGNORE}


def test_bilinear_mask_interpolation_would_invent_labels():
    """The check above can fail: interpolating labels linearly creates classes never drawn."""
    image, mask = blocky_sample(0)
    mask = np.where(mask == 1, 3, 0).astype(np.uint8)  # labels {0, 3}
    out = A.Resize(37, 37, mask_interpolation=cv2.INTER_LINEAR)(image=image, mask=mask)
    invented = set(np.unique(out["mask"]).tolist()) - {0, 3}
    assert invented, "linear resizing should create labels 1 and 2"


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned(seed):
    transform = T.train_transforms(64, vflip=0.5, distortion=1.0, rotate=30.0, color=0.0, seed=seed)
    image, mask = blocky_sample(seed)
    out = transform(image=image, mask=mask)
    labels = labels_from_image(out["image"], T.IMAGENET_MEAN, T.IMAGENET_STD)
    valid = out["mask"] != IGNORE
    assert valid.float().mean() > 0.5
    agreement = (labels[valid] == out["mask"][valid]).float().mean().item()
    assert agreement > 0.9, f"image and mask disagree on {1 - agreement:.1%} of the pixels"
    shifted = torch.roll(out["mask"], shifts=8, dims=1)  # a mask transformed differently
    both = valid & (shifted != IGNORE)
    control = (labels[both] == shifted[both]).float().mean().item()
    assert control < agreement - 0.2


def test_padding_is_ignore_in_mask_and_zero_in_image():
    transform = T.train_transforms(64, scale=(0.5, 0.5), rotate=0.0, hflip=0.0, color=0.0, seed=0)
    image = np.full((64, 64, 3), 0.8, dtype=np.float32)
    mask = np.ones((64, 64), dtype=np.int64)
    out = transform(image=image, mask=mask)
    padded = out["mask"] == IGNORE
    assert 0.5 < padded.float().mean().item() < 0.9  # a half-size copy leaves 3/4 of the area empty
    plain = T.denormalize(out["image"])
    assert plain[:, padded].abs().max().item() < 1e-5
    assert set(out["mask"].unique().tolist()) == {1, IGNORE}


def test_same_seed_same_output_and_different_seed_differs():
    image, mask = blocky_sample(3)
    first = T.train_transforms(48, distortion=1.0, seed=5)(image=image, mask=mask)
    again = T.train_transforms(48, distortion=1.0, seed=5)(image=image, mask=mask)
    other = T.train_transforms(48, distortion=1.0, seed=6)(image=image, mask=mask)
    torch.testing.assert_close(first["image"], again["image"])
    torch.testing.assert_close(first["mask"], again["mask"])
    assert not torch.equal(first["mask"], other["mask"])


class _SameSample(Dataset):
    """Eight copies of one sample: any difference between outputs comes from augmentation."""

    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, index):
        image, mask = blocky_sample(0, size=32, block=8)
        return self.transform(image=image, mask=mask)["mask"]


def test_dataloader_workers_draw_different_augmentations_and_runs_repeat():
    def run():
        torch.manual_seed(0)
        dataset = _SameSample(T.train_transforms(24, seed=0))
        loader = DataLoader(dataset, batch_size=1, num_workers=2)
        return [batch[0] for batch in loader]  # batches alternate between worker 0 and worker 1

    first, second = run(), run()
    pairs_equal = [torch.equal(first[k], first[k + 1]) for k in range(0, 8, 2)]
    assert not all(pairs_equal), "both workers produced the same augmentations"
    assert all(torch.equal(a, b) for a, b in zip(first, second)), "a seeded run did not repeat"


def test_val_pipeline_normalises_and_denormalize_inverts_it():
    rng = np.random.default_rng(1)
    image = rng.random((20, 30, 3), dtype=np.float32)
    mask = rng.integers(0, 3, (20, 30))
    out = T.val_transforms()(image=image, mask=mask)
    mean = np.array(T.IMAGENET_MEAN, dtype=np.float32)
    std = np.array(T.IMAGENET_STD, dtype=np.float32)
    expected = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1))
    torch.testing.assert_close(out["image"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["mask"], torch.from_numpy(mask).long())
    torch.testing.assert_close(
        T.denormalize(out["image"]),
        torch.from_numpy(image.transpose(2, 0, 1)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_uint8_images_are_rescaled():
    image = np.full((8, 8, 3), 255, dtype=np.uint8)
    identity = T.val_transforms(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = identity(image=image, mask=np.zeros((8, 8), int))
    torch.testing.assert_close(out["image"], torch.ones(3, 8, 8))


def test_dataset_stats_match_numpy():
    rng = np.random.default_rng(2)
    images = [torch.from_numpy(rng.random((2, 5, 7 + i))).float() for i in range(3)]
    dataset = [(img, None) for img in images]
    pixels = np.concatenate([img.numpy().reshape(2, -1) for img in images], axis=1)
    mean, std = T.dataset_stats(dataset)
    np.testing.assert_allclose(mean, pixels.mean(1), atol=1e-4)
    np.testing.assert_allclose(std, pixels.std(1), atol=1e-4)
    mean_one, _ = T.dataset_stats(dataset, max_samples=1)
    np.testing.assert_allclose(mean_one, images[0].numpy().reshape(2, -1).mean(1), atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    transform = T.train_transforms(32)
    image = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="channels"):
        transform(image=np.zeros((16, 16, 1), np.float32), mask=np.zeros((16, 16), int))
    with pytest.raises(ValueError, match="differs from image size"):
        transform(image=image, mask=np.zeros((16, 15), int))
    with pytest.raises(ValueError, match="integer"):
        transform(image=image, mask=np.zeros((16, 16), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        transform(image=torch.zeros(16, 16, 3), mask=np.zeros((16, 16), int))
    for size in (0, 1.5, (32,), (32, 0), "32"):
        with pytest.raises(ValueError, match="size"):
            T.train_transforms(size)
    with pytest.raises(ValueError, match="hflip"):
        T.train_transforms(32, hflip=1.5)
    with pytest.raises(ValueError, match="mean and std"):
        T.val_transforms(mean=(0.5,), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="ignore_index"):
        T.train_transforms(32, ignore_index=-1)


def test_import_and_use_emit_no_warnings():
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import numpy as np\n"
        "from course_lib import transforms as T\n"
        "t = T.train_transforms(32, distortion=1.0, vflip=0.5, color=1.0, seed=0)\n"
        "t(image=np.zeros((40, 40, 3), np.float32), mask=np.zeros((40, 40), np.int64))\n"
        "v = T.val_transforms(32)\n"
        "v(image=np.zeros((40, 40, 3), np.float32), mask=np.zeros((40, 40), np.int64))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def _stripes(height: int, width: int, period: int):
    """Vertical stripes `period` pixels wide: mask 0/1, image its brightness, 1 channel."""
    mask = ((np.arange(width) // period) % 2).astype(np.int64)[None, :].repeat(height, 0)
    return mask.astype(np.float32)[:, :, None], mask


def _run_lengths(row: np.ndarray) -> list[int]:
    """Lengths of the runs of equal values in a 1-D array, first and last runs dropped (cut)."""
    edges = np.flatnonzero(np.diff(row)) + 1
    return np.diff(edges).tolist()


@pytest.mark.parametrize("rescale, expected", [(1.0, 8), (0.5, 4), (2.0, 16)])
def test_native_crops_keep_the_image_scale(rescale, expected):
    """rescale=f: objects in the crop are f times their size in the file, not resized to the crop."""
    image, mask = _stripes(200, 300, period=8)
    transform = T.train_transforms(
        48,
        mean=(0.0,),
        std=(1.0,),
        rescale=rescale,
        scale=(1.0, 1.0),
        rotate=0.0,
        hflip=0.0,
        color=0.0,
        seed=0,
    )
    for _ in range(5):
        out = transform(image=image, mask=mask)["mask"].numpy()  # (48, 48)
        assert out.shape == (48, 48)
        widths = _run_lengths(out[24])
        assert widths and all(abs(w - expected) <= 1 for w in widths), widths


def test_the_resize_to_crop_mode_changes_the_scale():
    """The synthetic-data mode (rescale=None) resizes the shorter side to the crop: 200 -> 48."""
    image, mask = _stripes(200, 300, period=40)
    transform = T.train_transforms(
        48, mean=(0.0,), std=(1.0,), scale=(1.0, 1.0), rotate=0.0, hflip=0.0, color=0.0, seed=0
    )
    row = transform(image=image, mask=mask)["mask"].numpy()[24]
    widths = _run_lengths(row[row != IGNORE])  # the affine shift may bring in an ignored border
    assert len(widths) >= 2 and abs(np.median(widths) - 40 * 48 / 200) <= 1, widths


def test_native_crops_of_small_images_are_padded_with_ignore_index():
    image = np.full((20, 30, 1), 0.5, np.float32)
    mask = np.ones((20, 30), np.int64)
    transform = T.train_transforms(
        32,
        mean=(0.0,),
        std=(1.0,),
        rescale=1.0,
        scale=(1.0, 1.0),
        rotate=0.0,
        hflip=0.0,
        color=0.0,
        seed=0,
    )
    out = transform(image=image, mask=mask)["mask"]
    assert out.shape == (32, 32)
    assert int((out == 1).sum()) == 20 * 30 and int((out == IGNORE).sum()) == 32 * 32 - 20 * 30


def test_native_crop_scale_jitter_stays_in_range():
    image, mask = _stripes(400, 400, period=20)
    transform = T.train_transforms(
        64,
        mean=(0.0,),
        std=(1.0,),
        rescale=1.0,
        scale=(0.5, 1.5),
        rotate=0.0,
        hflip=0.0,
        color=0.0,
        seed=1,
    )
    widths = set()
    for _ in range(30):
        widths.update(_run_lengths(transform(image=image, mask=mask)["mask"].numpy()[32]))
    assert min(widths) >= 20 * 0.5 - 1 and max(widths) <= 20 * 1.5 + 1
    assert max(widths) - min(widths) >= 6  # the factor really varies


def test_rescale_must_be_a_factor():
    with pytest.raises(ValueError, match="rescale must be None or a factor"):
        T.train_transforms(32, rescale=0.0)
