"""Tests of course_lib.viz: palette values, colouring, overlays, grids, bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import viz  # noqa: E402

# Published PASCAL VOC colours (class id -> RGB), typed in from the VOC devkit colour map.
VOC_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (0, 128, 0),
    3: (128, 128, 0),
    4: (0, 0, 128),
    5: (128, 0, 128),
    7: (128, 128, 128),
    8: (64, 0, 0),
    15: (192, 128, 128),
    20: (0, 64, 128),
    255: (224, 224, 192),
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_palette_matches_voc():
    assert viz.PALETTE.shape == (256, 3) and viz.PALETTE.dtype == np.uint8
    for class_id, rgb in VOC_COLOURS.items():
        assert tuple(viz.PALETTE[class_id]) == rgb, f"class {class_id}"
    assert len({tuple(c) for c in viz.PALETTE}) == 256, "palette colours must be distinct"


@pytest.mark.parametrize("make", [np.asarray, torch.as_tensor])
def test_colorize_looks_up_each_pixel(make):
    mask = make(np.array([[0, 1, 2], [15, 255, 1]], dtype=np.int64))
    rgb = viz.colorize(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    for (y, x), class_id in np.ndenumerate(np.asarray(mask)):
        assert tuple(rgb[y, x]) == VOC_COLOURS[class_id]


def test_colorize_accepts_bool_and_other_int_dtypes_and_grad_tensors():
    torch.testing.assert_close(
        torch.from_numpy(viz.colorize(np.eye(2, dtype=bool))),
        torch.from_numpy(viz.colorize(np.eye(2, dtype=np.uint8))),
    )
    logits = torch.randn(3, 4, 4, requires_grad=True)
    assert viz.colorize(logits.argmax(0)).shape == (4, 4, 3)


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (np.zeros((2, 2, 2), np.int64), ValueError, "shape"),
        (np.zeros((2, 2), np.float32), TypeError, "argmax"),
        (np.full((2, 2), 256), ValueError, "256"),
        (np.full((2, 2), -1), ValueError, "-1"),
        ([[0, 1]], TypeError, "list"),
    ],
)
def test_colorize_rejects_bad_masks(mask, error, match):
    with pytest.raises(error, match=match):
        viz.colorize(mask)


def test_overlay_blends_by_hand_computed_values():
    image = torch.full((3, 2, 2), 0.5)  # tensor layout (C, H, W)
    mask = torch.tensor([[0, 1], [2, 0]])
    out = viz.overlay(image, mask, alpha=0.25)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    expected_class1 = np.round((0.75 * 0.5 + 0.25 * np.array([128, 0, 0]) / 255) * 255)
    np.testing.assert_array_equal(out[0, 1], expected_class1)
    np.testing.assert_array_equal(out[0, 0], [128, 128, 128])  # background untouched
    full = viz.overlay(image, mask, alpha=1.0, skip_background=False)
    np.testing.assert_array_equal(full, viz.colorize(mask))


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 5, 3), 255, np.uint8),
        np.ones((4, 5), np.float32),
        torch.ones(1, 4, 5),
        np.ones((4, 5, 1), np.float64),
    ],
)
def test_overlay_accepts_image_layouts(image):
    out = viz.overlay(image, np.zeros((4, 5), np.int64))
    np.testing.assert_array_equal(out, np.full((4, 5, 3), 255, np.uint8))


def test_overlay_stretches_normalised_images_and_checks_input():
    out = viz.overlay(torch.tensor([[[-2.0, 2.0]]]).expand(3, 1, 2), np.zeros((1, 2), np.int64))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255])
    with pytest.raises(ValueError, match="same size"):
        viz.overlay(torch.zeros(3, 4, 4), torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.int64), alpha=1.5)
    with pytest.raises(ValueError, match="channels"):
        viz.overlay(np.zeros((4, 4, 5)), np.zeros((4, 4), np.int64))


def test_colorize_instances_distinct_stable_colours():
    instances = torch.tensor([[0, 1, 1], [2, 2, 3]])
    rgb = viz.colorize_instances(instances)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    colours = {tuple(rgb[0, 1]), tuple(rgb[1, 0]), tuple(rgb[1, 2])}
    assert len(colours) == 3 and (0, 0, 0) not in colours
    assert tuple(rgb[0, 1]) == tuple(rgb[0, 2])
    again = viz.colorize_instances(np.array([[3, 1]]))  # same id, same colour in another picture
    assert tuple(again[0, 0]) == tuple(rgb[1, 2]) and tuple(again[0, 1]) == tuple(rgb[0, 1])
    many = viz.colorize_instances(np.arange(60).reshape(6, 10))
    assert len({tuple(c) for c in many.reshape(-1, 3)}) == 60


def test_colorize_instances_boundaries_mark_label_changes():
    rgb = viz.colorize_instances(np.array([[1, 1, 2, 2]]), boundaries=True)
    white = (rgb == 255).all(axis=-1)[0]
    np.testing.assert_array_equal(white, [False, True, False, False])


def test_colorize_panoptic_stuff_keeps_class_colour_and_instances_differ():
    divisor = 1000
    panoptic = np.array([[1 * divisor, 1 * divisor, 7 * divisor + 1, 7 * divisor + 2]])
    rgb = viz.colorize_panoptic(panoptic, label_divisor=divisor, boundaries=False)
    assert tuple(rgb[0, 0]) == VOC_COLOURS[1]  # stuff pixel: exact class colour
    assert tuple(rgb[0, 2]) != tuple(rgb[0, 3])  # two cars of one class look different
    edges = viz.colorize_panoptic(panoptic, label_divisor=divisor)
    assert (edges[0, 2] == 255).all() and (edges[0, 1] == 255).all()
    small = viz.colorize_panoptic(torch.tensor([[7 * 10 + 1]]), label_divisor=10, boundaries=False)
    np.testing.assert_array_equal(small, rgb[:, 2:3])


def test_colorize_panoptic_bad_input():
    with pytest.raises(ValueError, match="label_divisor"):
        viz.colorize_panoptic(np.zeros((2, 2), np.int64), label_divisor=0)
    with pytest.raises(ValueError, match="panoptic"):
        viz.colorize_panoptic(np.full((2, 2), 256 * 1000), label_divisor=1000)


def test_show_grid_layout_and_logits():
    images = torch.rand(5, 3, 8, 8)
    masks = torch.randint(0, 3, (5, 8, 8))
    logits = torch.randn(5, 3, 8, 8)
    fig = viz.show_grid(images, masks, logits, class_names=["a", "b", "c"], max_rows=2)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * 3
    shown = image_axes[2].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), viz.colorize(logits[0].argmax(0)))
    assert [ax.get_title() for ax in image_axes[:3]] == ["image", "ground truth", "prediction"]
    assert len(fig.legends) == 1


def test_show_grid_checks_lengths():
    with pytest.raises(ValueError, match="samples"):
        viz.show_grid(torch.rand(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="max_rows"):
        viz.show_grid(torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.int64), max_rows=0)


def test_plot_history_splits_losses_and_metrics():
    history = {
        "train_loss": [1.0, 0.5],
        "val_loss": [1.2, 0.7],
        "miou": [0.2, 0.4],
        "iou_per_class": [[0.1, 0.2], [0.3, 0.4]],
    }
    fig = viz.plot_history(history)
    loss_ax, metric_ax = fig.axes
    assert sorted(line.get_label() for line in loss_ax.lines) == ["train_loss", "val_loss"]
    assert [line.get_label() for line in metric_ax.lines] == ["miou"]
    np.testing.assert_array_equal(metric_ax.lines[0].get_ydata(), [0.2, 0.4])
    with pytest.raises(ValueError, match="no list"):
        viz.plot_history({"iou_per_class": [[0.1]]})
    with pytest.raises(TypeError, match="dict"):
        viz.plot_history([1.0, 2.0])


def test_show_grid_accepts_lists_of_arrays_without_predictions():
    images = [np.full((6, 7, 3), 200, np.uint8), np.zeros((6, 7, 3), np.uint8)]
    masks = [np.zeros((6, 7), np.int64), np.ones((6, 7), np.int64)]
    fig = viz.show_grid(images, masks)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 4 and not fig.legends
    np.testing.assert_array_equal(
        np.asarray(image_axes[3].images[0].get_array()), viz.colorize(masks[1])
    )
    np.testing.assert_allclose(
        np.asarray(image_axes[0].images[0].get_array()), 200 / 255, rtol=1e-6
    )


def test_class_palette_gives_familiar_names_their_colours_and_keeps_voc_otherwise():
    palette = viz.class_palette(["background", "Sky", "widget", "road", "tree"])
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[1]) == viz.CLASS_COLORS["sky"]  # case-insensitive
    red, green, blue = palette[1].astype(int)
    assert blue > green > red  # sky blue
    assert len(set(palette[3].tolist())) == 1 and 0 < palette[3, 0] < 255  # road grey
    assert palette[4].argmax() == 1  # tree green
    np.testing.assert_array_equal(palette[2], viz.PALETTE[2])  # unknown name: VOC colour
    np.testing.assert_array_equal(palette[5:], viz.PALETTE[5:])  # void 255 stays cream
    with pytest.raises(ValueError, match="sequence"):
        viz.class_palette("sky")


def test_show_grid_with_class_names_draws_and_labels_the_class_colours():
    names = ["background", "sky", "road"]
    masks = torch.tensor([[[0, 1], [2, 2]]])
    fig = viz.show_grid(torch.rand(1, 3, 2, 2), masks, class_names=names)
    drawn = np.asarray([ax for ax in fig.axes if ax.images][1].images[0].get_array())
    np.testing.assert_array_equal(drawn[0, 1], viz.CLASS_COLORS["sky"])
    np.testing.assert_array_equal(drawn[1, 0], viz.CLASS_COLORS["road"])
    legend = {
        t.get_text(): h.get_facecolor()[:3]
        for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)
    }
    np.testing.assert_allclose(legend["sky"], np.array(viz.CLASS_COLORS["sky"]) / 255)
