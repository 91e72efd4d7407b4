"""Command line end to end on tiny synthetic and folder data (1 epoch, small images)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from course_lib import engine
from course_lib.checkpoint import load_checkpoint
from course_lib.cli import main
from course_lib.cli.data import build_datasets
from course_lib.models import build_model

pytestmark = pytest.mark.usefixtures("restore_threads")  # `main` sets the thread count


TINY = [
    "--epochs",
    "1",
    "--num-train",
    "8",
    "--num-val",
    "4",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    assert main(["train", "--model", "unet", "--dataset", "cells", "--out", str(out)] + TINY) == 0
    torch.set_num_threads(threads)
    return out


def test_train_writes_checkpoint_metrics_and_pictures(trained):
    for name in ("last.pt", "metrics.json", "curves.png", "predictions.png"):
        assert (trained / name).is_file(), name
    assert not [p for p in trained.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["model"] == "unet" and metrics["loss"] == "bce_dice"
    assert len(metrics["history"]["train_loss"]) == 1
    checkpoint = load_checkpoint(trained / "last.pt")
    assert checkpoint["model_name"] == "unet"
    assert checkpoint["model_kwargs"] == {
        "in_channels": 1,
        "num_classes": 1,
        "base_channels": 8,
        "depth": 3,
    }
    # The reported numbers are those of an independent evaluation of the saved weights.
    model = build_model("unet", **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"])
    _, val_set, num_classes, _ = build_datasets(checkpoint["extra"]["data"], train=False)
    results = engine.evaluate(model, DataLoader(val_set, batch_size=3), num_classes, "cpu")
    assert metrics["final"]["miou"] == pytest.approx(results["miou"])
    assert metrics["confusion_matrix"] == results["confusion_matrix"].tolist()
    assert int(results["confusion_matrix"].sum()) == 4 * 32 * 32
    with Image.open(trained / "predictions.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100


def test_evaluate_prints_the_training_metrics(trained, capsys, tmp_path):
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained / "last.pt"),
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((trained / "metrics.json").read_text())
    assert f"miou {metrics['final']['miou']:.4f}" in printed
    assert "nucleus" in printed
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["confusion_matrix"] == metrics["confusion_matrix"]


def test_predict_writes_masks_and_overlays_with_sliding_window(trained, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(source / "small.png")
    Image.fromarray(rng.integers(0, 255, (70, 45, 3), dtype=np.uint8)).save(source / "large.jpg")
    Image.fromarray(rng.integers(0, 255, (33, 30, 3), dtype=np.uint8)).save(source / "web.webp")
    (source / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(trained / "last.pt"),
                "--input",
                str(source),
                "--output",
                str(out),
                "--tta",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    # every file type `train --images` reads, .webp included
    for stem, size in (("small", (24, 20)), ("large", (45, 70)), ("web", (30, 33))):
        with Image.open(out / f"{stem}_labels.png") as labels:
            assert labels.size == size and set(np.unique(np.asarray(labels))) <= {0, 1}
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            assert overlay.size == size and overlay.mode == "RGB"
        assert (out / f"{stem}_mask.png").is_file()


def _folder_tree(root, count=6, size=24):
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        mask[top : top + size // 2, left : left + size // 2] = (
            255  # binary 0/255, the medical format
        )
        image = np.stack([mask // 2 + rng.integers(0, 60, (size, size), dtype=np.uint8)] * 3, -1)
        Image.fromarray(image.astype(np.uint8)).save(images / f"case{i}.jpg")
        Image.fromarray(mask).save(masks / f"case{i}.png")
    return images, masks


def test_train_on_folder_data_makes_a_validation_split(tmp_path):
    images, masks = _folder_tree(tmp_path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--epochs",
                "1",
                "--image-size",
                "24",
                "--batch-size",
                "2",
                "--out",
                str(out),
                "--no-progress",
                "--val-fraction",
                "0.34",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["kind"] == "folder"
    assert int(np.sum(metrics["confusion_matrix"])) == 2 * 24 * 24  # 2 of 6 images held out


def test_resume_continues_the_run(trained, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "last.pt").write_bytes((trained / "last.pt").read_bytes())
    args = ["train", "--dataset", "cells", "--out", str(out), "--resume"] + TINY
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    first = json.loads((trained / "metrics.json").read_text())["history"]
    assert history["epoch"] == [1, 2]
    assert history["train_loss"][0] == first["train_loss"][0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "--epochs must be a positive integer"),
        (["train", "--model", "resnet"], "--model must be one of"),
        (["train", "--images", "x"], "--images needs --masks"),
        (["train", "--masks", "x"], "need --images"),
        (["train", "--model", "unet", "--pretrained"], "--pretrained needs a model"),
        (["train", "--val-fraction", "1.5"], "--val-fraction must lie"),
        (["train", "--dataset", "mnist"], "invalid choice"),
        (["evaluate", "--checkpoint", "missing.pt"], "checkpoint not found"),
        (
            ["predict", "--checkpoint", "c.pt", "--input", "nowhere", "--output", "o"],
            "is not a folder",
        ),
        ([], "required"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_module_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "course_lib", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    for option in (
        "--dataset",
        "--images",
        "--val-images",
        "--epochs",
        "--pretrained",
        "--distributed",
        "--resume",
        "--out",
    ):
        assert option in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "course_lib", "train", "--epochs", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_checkpoint_kwargs_rebuild_without_download(trained):
    checkpoint = load_checkpoint(trained / "last.pt")
    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    assert sum(p.numel() for p in model.parameters()) == sum(
        v.numel()
        for k, v in checkpoint["model"].items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert torch.isfinite(model(torch.rand(1, 1, 32, 32))).all()


def test_data_spec_round_trips_through_plain_values_and_refuses_unknown_keys(tmp_path):
    from course_lib.cli.data import DataSpec

    spec = DataSpec(
        kind="folder",
        image_size=64,
        images=str(tmp_path),
        masks=str(tmp_path),
        mask_threshold=128,
        scale=0.5,
    )
    values = spec.to_dict()
    assert all(isinstance(v, (str, int, float, bool, type(None), dict)) for v in values.values())
    assert DataSpec.from_dict(values) == spec
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        DataSpec.from_dict({**values, "colour": 1})
    with pytest.raises(ValueError, match="unknown data kind 'mnist'"):
        DataSpec(kind="mnist", image_size=64)
    with pytest.raises(ValueError, match="needs images and masks"):
        DataSpec(kind="folder", image_size=64)
    with pytest.raises(ValueError, match="need num_train and num_val"):
        DataSpec(kind="cells", image_size=64)
    # A synthetic spec builds exactly the images its seed draws.
    _, val_set, _, _ = build_datasets(
        DataSpec(kind="cells", image_size=32, num_train=2, num_val=1, seed=3), train=False
    )
    from course_lib.data import CellsDataset

    torch.testing.assert_close(val_set[0][0], CellsDataset(length=3, image_size=32, seed=3)[2][0])
