"""Your own folder through the command line: one scale from training to prediction, honest
validation, masks mapped on purpose, a wall-time budget."""

import json

import numpy as np
import pytest
from PIL import Image

from course_lib.checkpoint import load_checkpoint
from course_lib.cli import main
from course_lib.data.membranes import write_membrane_folder
from course_lib.preprocessing import Preprocessing

pytestmark = pytest.mark.usefixtures("restore_threads")  # `main` sets the thread count


QUICK = [
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--base-channels",
    "8",
    "--depth",
    "2",
    "--no-progress",
    "--threads",
    "1",
]


def _dice_from_pngs(prediction_dir, mask_dir) -> tuple[float, np.ndarray]:
    """Foreground Dice over every pixel of the folder, from predict's label PNGs (numpy only)."""
    tp = fp = fn = 0
    matrix = np.zeros((2, 2), np.int64)
    for mask_path in sorted(mask_dir.iterdir()):
        truth = np.asarray(Image.open(mask_path)) > 0  # 0/255 masks
        with Image.open(prediction_dir / f"{mask_path.stem}_labels.png") as png:
            assert png.size == (truth.shape[1], truth.shape[0])  # the file's own size
            predicted = np.asarray(png) == 1
        tp += int((truth & predicted).sum())
        fp += int((~truth & predicted).sum())
        fn += int((truth & ~predicted).sum())
        for t in (0, 1):
            for p in (0, 1):
                matrix[t, p] += int(((truth == t) & (predicted == p)).sum())
    return 2 * tp / (2 * tp + fp + fn), matrix


@pytest.fixture(scope="module")
def membranes(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    write_membrane_folder(root, num_train=8, num_test=3, size=(96, 136), seed=3)
    return root


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_validation_evaluate_and_predict_agree(membranes, tmp_path, capsys, scale):
    """The figure training reports is the figure of the masks `predict` writes."""
    train, test = membranes / "train", membranes / "test"
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--images",
                str(train / "images"),
                "--masks",
                str(train / "masks"),
                "--val-images",
                str(test / "images"),
                "--val-masks",
                str(test / "masks"),
                "--epochs",
                "2",
                "--scale",
                str(scale),
                "--out",
                str(out),
            ]
            + QUICK
        )
        == 0
    )
    reported = json.loads((out / "metrics.json").read_text())["final"]

    evaluated_json = tmp_path / "evaluate.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "last.pt"),
                "--images",
                str(test / "images"),
                "--masks",
                str(test / "masks"),
                "--json",
                str(evaluated_json),
            ]
        )
        == 0
    )
    evaluated = json.loads(evaluated_json.read_text())

    predictions = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(out / "last.pt"),
                "--input",
                str(test / "images"),
                "--output",
                str(predictions),
            ]
        )
        == 0
    )  # no option repeated
    from_pngs, matrix = _dice_from_pngs(predictions, test / "masks")

    assert matrix.sum() == 3 * 96 * 136  # every pixel of the originals, at their own size
    assert (
        evaluated["confusion_matrix"]
        == json.loads((out / "metrics.json").read_text())["confusion_matrix"]
    )
    differing = np.abs(np.asarray(evaluated["confusion_matrix"]) - matrix).sum() / 2
    assert differing <= 5, f"predict's PNGs and evaluate differ on {differing} pixels"
    assert reported["dice_per_class"][1] == pytest.approx(evaluated["dice_per_class"][1], abs=1e-9)
    assert from_pngs == pytest.approx(evaluated["dice_per_class"][1], abs=2e-3)


def test_checkpoint_carries_the_preprocessing(membranes, tmp_path, capsys):
    train = membranes / "train"
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--images",
                str(train / "images"),
                "--masks",
                str(train / "masks"),
                "--epochs",
                "1",
                "--scale",
                "0.5",
                "--out",
                str(out),
            ]
            + QUICK
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "masks: binary masks: value 0 -> class 0, 255" in printed
    record = Preprocessing.from_dict(load_checkpoint(out / "last.pt")["extra"]["preprocessing"])
    assert record.image_mode == "L"  # the membrane images are stored as grayscale
    assert (record.scale, record.crop_size, record.window) == (0.5, 32, 64)
    assert record.decision == "sigmoid" and record.num_classes == 2
    assert record.mask_mapping["mask_format"] == "binary"
    assert len(record.mean) == 1 and record.std[0] > 0


def _stray_value_folder(root):
    """Binary 0/255 masks, one of which holds an anti-aliased edge of value 128."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, 10:30] = 255
        if i == 2:
            mask[10, 10:30] = 128
        image = (mask // 2 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        Image.fromarray(image).save(images / f"img{i}.png")
        Image.fromarray(mask).save(masks / f"img{i}.png")
    return images, masks


def test_a_stray_mask_value_stops_with_the_file_and_the_fix(tmp_path, capsys):
    images, masks = _stray_value_folder(tmp_path)
    argv = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    ] + QUICK
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "img2.png" in error and "128" in error and "--mask-threshold 128" in error
    assert not (tmp_path / "run" / "last.pt").exists()

    assert main(argv + ["--mask-threshold", "128", "--val-fraction", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "2 classes" in printed and "mask values >= 128 -> class 1" in printed
    mapping = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["preprocessing"][
        "mask_mapping"
    ]
    assert mapping["mask_threshold"] == 128


def test_minutes_budget_trains_for_the_time_given(tmp_path, capsys):
    images, masks = _stray_value_folder(tmp_path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--minutes",
                "0.05",
                "--mask-threshold",
                "128",
                "--val-fraction",
                "0.5",
                "--out",
                str(out),
            ]
            + QUICK
        )
        == 0
    )
    checkpoint = load_checkpoint(out / "last.pt")
    assert 3.0 <= checkpoint["extra"]["seconds"]  # ran until the budget was spent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["minutes"] == 0.05 and metrics["settings"]["epochs"] is None
    assert metrics["history"]["lr"][-1] < 0.1 * metrics["settings"]["lr"]  # the schedule ran out
    assert "for 0.05 minutes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--scale", "0"], "--scale must be a factor"),
        (["train", "--dataset", "cells", "--scale", "0.5"], "--scale applies to folder"),
        (["train", "--minutes", "-1"], "--minutes must be a positive number"),
        (["train", "--mask-threshold", "128"], "--mask-threshold applies to folder masks"),
    ],
)
def test_bad_own_data_options(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_real_data_set_of_mixed_sizes_trains_on_native_crops_and_scores_whole_images(
    tmp_path, monkeypatch, capsys
):
    """Oxford-IIIT Pet's on-disk layout, images of different sizes: validation one whole image
    at a time, and the predictions come back at each image's own size."""
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    sizes = {"Abyssinian_1": (40, 56), "beagle_12": (52, 36), "pug_3": (30, 44)}
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        trimap = np.full((height, width), 2, np.uint8)  # 1 pet, 2 background, 3 boundary band
        trimap[height // 4 : -height // 4, width // 4 : -width // 4] = 1
        photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        photo[trimap == 1] //= 3
        Image.fromarray(photo).save(base / "images" / f"{name}.jpg")
        Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
    lines = [f"{name} {i + 1} 1 1" for i, name in enumerate(sizes)]
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines[:2]) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(lines[1:]) + "\n")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))

    out = tmp_path / "run"
    assert (
        main(
            ["train", "--dataset", "pets", "--model", "unet", "--epochs", "1", "--out", str(out)]
            + QUICK
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert int(np.sum(metrics["confusion_matrix"])) == 52 * 36 + 30 * 44  # whole test images
    assert (out / "predictions.png").is_file()  # the gallery copes with mixed sizes
    predictions = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(out / "last.pt"),
                "--input",
                str(base / "images"),
                "--output",
                str(predictions),
            ]
        )
        == 0
    )
    for name, (height, width) in sizes.items():
        with Image.open(predictions / f"{name}_labels.png") as png:
            assert png.size == (width, height)
            assert set(np.unique(np.asarray(png)).tolist()) <= {0, 1, 2}


def test_a_finished_run_is_not_overwritten_by_accident(tmp_path, capsys):
    images, masks = _stray_value_folder(tmp_path)
    out = tmp_path / "run"
    argv = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--epochs",
        "1",
        "--mask-threshold",
        "128",
        "--val-fraction",
        "0.5",
        "--out",
        str(out),
    ] + QUICK
    assert main(argv) == 0
    before = (out / "last.pt").read_bytes()
    assert main(argv) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before  # the earlier run is untouched
    assert main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert (out / "last.pt").read_bytes() != before
