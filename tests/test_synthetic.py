"""Tests of course_lib.data.synthetic: contract, determinism, consistency, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from course_lib.data import CellsDataset, ScenesDataset, classic_scene

DATASETS = [ScenesDataset, CellsDataset]


@pytest.mark.parametrize("cls", DATASETS)
@pytest.mark.parametrize("size", [128, (37, 61), 8])
def test_sample_shapes_dtypes_ranges(cls, size):
    ds = cls(length=3, image_size=size, seed=1)
    height, width = (size, size) if isinstance(size, int) else size
    channels = 3 if cls is ScenesDataset else 1
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (channels, height, width) and image.dtype == torch.float32
        assert mask.shape == (height, width) and mask.dtype == torch.int64
        assert image.is_contiguous()
        assert 0.0 <= image.min().item() and image.max().item() <= 1.0
        assert 0 <= mask.min().item() and mask.max().item() < cls.num_classes


@pytest.mark.parametrize("cls", DATASETS)
def test_class_attributes_are_consistent(cls):
    assert cls.CLASSES[0] == "background"
    assert cls.num_classes == len(cls.CLASSES)
    assert sorted(cls.thing_classes + cls.stuff_classes) == list(range(cls.num_classes))


@pytest.mark.parametrize("cls", DATASETS)
def test_same_seed_and_index_give_the_same_sample_in_any_order(cls):
    a = cls(length=5, image_size=64, seed=3, return_instances=True)
    b = cls(length=5, image_size=64, seed=3, return_instances=True)
    later = [t.clone() for t in a[4]]
    _ = a[0], a[2]
    for x, y, z in zip(later, b[4], a[-1]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
        torch.testing.assert_close(x, z, rtol=0, atol=0)


@pytest.mark.parametrize("cls", DATASETS)
def test_other_index_or_seed_gives_another_sample(cls):
    image0, _ = cls(length=2, image_size=64, seed=0)[0]
    image1, _ = cls(length=2, image_size=64, seed=0)[1]
    other_seed, _ = cls(length=2, image_size=64, seed=1)[0]
    assert not torch.equal(image0, image1)
    assert not torch.equal(image0, other_seed)


def test_sampling_leaves_the_global_generators_alone():
    torch.manual_seed(0)
    np.random.seed(0)
    expected_torch, expected_np = torch.rand(1), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    ScenesDataset(length=1, image_size=32)[0]
    assert torch.rand(1).item() == expected_torch.item() and np.random.rand() == expected_np


def test_scenes_show_every_class_across_a_few_samples():
    ds = ScenesDataset(length=6, image_size=96)
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds[i][1].unique().tolist())
    assert seen == set(range(ScenesDataset.num_classes))


@pytest.mark.parametrize("cls", DATASETS)
def test_instances_agree_with_the_semantic_mask(cls):
    ds = cls(length=6, image_size=96, seed=2, return_instances=True)
    things = torch.tensor(cls.thing_classes)
    for i in range(len(ds)):
        _, mask, instances = ds[i]
        assert instances.dtype == torch.int64 and instances.shape == mask.shape
        torch.testing.assert_close(
            instances > 0,
            torch.isin(mask, things),
            msg=f"sample {i}: instances must cover exactly the thing pixels",
        )
        ids = instances.unique()
        ids = ids[ids > 0]
        torch.testing.assert_close(
            ids, torch.arange(1, len(ids) + 1), msg=f"sample {i}: instance ids must be 1..n"
        )
        for k in ids.tolist():
            assert mask[instances == k].unique().numel() == 1, f"instance {k} has several classes"


def test_scenes_have_several_objects_per_image():
    ds = ScenesDataset(length=6, image_size=96, return_instances=True)
    counts = [int(ds[i][2].max()) for i in range(len(ds))]
    assert min(counts) >= 3, counts


def test_cells_foreground_fraction_like_nuclei_data():
    ds = CellsDataset(length=8, image_size=128)
    fractions = [ds[i][1].float().mean().item() for i in range(len(ds))]
    assert all(0.05 <= f <= 0.3 for f in fractions), fractions


def test_cells_are_connected_and_some_touch():
    ds = CellsDataset(length=8, image_size=128, return_instances=True)
    touching_samples = 0
    for i in range(len(ds)):
        _, mask, instances = ds[i]
        inst = instances.numpy()
        for k in range(1, inst.max() + 1):
            assert ndimage.label(inst == k)[1] == 1, f"sample {i}: nucleus {k} is not one piece"
        blobs = ndimage.label(mask.numpy())[1]
        touching_samples += blobs < inst.max()  # fewer blobs than nuclei: some of them touch
    assert touching_samples >= 4, f"only {touching_samples} of 8 samples have touching nuclei"


def test_cells_vary_in_size_and_brightness():
    image, _, instances = CellsDataset(length=1, image_size=256, return_instances=True)[0]
    ids = range(1, int(instances.max()) + 1)
    areas = torch.tensor([(instances == k).sum().item() for k in ids], dtype=torch.float32)
    brightness = torch.tensor([image[0][instances == k].mean().item() for k in ids])
    assert areas.max() > 2 * areas.min()
    assert brightness.max() - brightness.min() > 0.2


def test_classic_scene_two_cars_and_a_person_where_the_cars_merge():
    image, mask, instances = classic_scene(128)
    assert image.shape == (3, 128, 128) and mask.shape == instances.shape == (128, 128)
    car, person = ScenesDataset.CLASSES.index("car"), ScenesDataset.CLASSES.index("person")
    assert instances[mask == car].unique().numel() == 2
    assert instances[mask == person].unique().numel() == 1
    assert ndimage.label((mask == car).numpy())[1] == 1, "the two cars must touch"
    torch.testing.assert_close(classic_scene(128)[0], image, rtol=0, atol=0)


def test_transform_receives_numpy_hwc_and_its_output_is_returned():
    seen = {}

    def transform(image, mask):
        seen["image"], seen["mask"] = image, mask
        return {"image": "img", "mask": "msk"}

    out = ScenesDataset(length=1, image_size=(20, 30), transform=transform)[0]
    assert out == ("img", "msk")
    assert seen["image"].shape == (20, 30, 3) and seen["image"].dtype == np.float32
    assert seen["mask"].shape == (20, 30) and seen["mask"].dtype == np.int64


def test_albumentations_flip_matches_flipped_raw_sample():
    albumentations = pytest.importorskip("albumentations")
    from albumentations.pytorch import ToTensorV2

    flip = albumentations.Compose([albumentations.HorizontalFlip(p=1.0), ToTensorV2()])
    raw_image, raw_mask = CellsDataset(length=1, image_size=32)[0]
    image, mask = CellsDataset(length=1, image_size=32, transform=flip)[0]
    torch.testing.assert_close(image, raw_image.flip(-1))
    torch.testing.assert_close(mask, raw_mask.flip(-1))


def test_works_with_a_dataloader():
    loader = torch.utils.data.DataLoader(ScenesDataset(length=4, image_size=32), batch_size=2)
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"length": -1}, "length"),
        ({"length": 2.5}, "length"),
        ({"image_size": 4}, "image_size"),
        ({"image_size": (32,)}, "image_size"),
        ({"image_size": (32, 32.0)}, "image_size"),
        ({"seed": -3}, "seed"),
        ({"transform": lambda image, mask: {}, "return_instances": True}, "return_instances"),
    ],
)
@pytest.mark.parametrize("cls", DATASETS)
def test_bad_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_transform_and_index():
    with pytest.raises(TypeError, match="transform"):
        ScenesDataset(transform="flip")
    ds = ScenesDataset(length=2, image_size=16)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    with pytest.raises(TypeError, match="index"):
        ds[0.5]
