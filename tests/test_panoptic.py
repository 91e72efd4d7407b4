"""Tests for course_lib.panoptic: merge rules on hand-built cases, a brute-force merge, the
detector targets, and the pipeline end to end on tiny images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.data import ScenesDataset
from course_lib.models import SegFormer
from course_lib.panoptic import (
    PanopticPipeline,
    build_mask_rcnn,
    instance_targets,
    merge_panoptic,
    train_mask_rcnn,
)

VOID = 255 * 1000


def boxes_mask(shape, *boxes):
    """A bool mask that is True inside the (row0, col0, row1, col1) half-open boxes."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for r0, c0, r1, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def merge(semantic, masks, scores, labels, **kwargs):
    kwargs.setdefault("stuff_classes", (0, 1))
    kwargs.setdefault("stuff_area_threshold", 0)
    stacked = torch.stack(masks) if masks else torch.zeros(0, *semantic.shape)
    return merge_panoptic(
        semantic,
        stacked,
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.int64),
        **kwargs,
    )


def test_stuff_and_separate_instances():
    semantic = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 2, 1]])
    a = boxes_mask((3, 4), (1, 1, 3, 2))
    b = boxes_mask((3, 4), (1, 2, 3, 3))
    got = merge(semantic, [a, b], [0.9, 0.8], [2, 2])
    expected = torch.tensor([[0, 0, 1000, 1000], [0, 2001, 2002, 1000], [0, 2001, 2002, 1000]])
    torch.testing.assert_close(got, expected)


def test_higher_score_owns_the_overlap_whatever_the_input_order():
    semantic = torch.zeros(2, 6, dtype=torch.int64)
    low = boxes_mask((2, 6), (0, 0, 2, 4))  # 8 pixels, 4 of them shared
    high = boxes_mask((2, 6), (0, 2, 2, 6))
    got = merge(semantic, [low, high], [0.6, 0.9], [3, 4], overlap_threshold=0.5)
    # high (class 4) comes first: id 1; low keeps its 4 free pixels (overlap 4/8 is not > 0.5): id 2
    expected = torch.tensor([[3002, 3002, 4001, 4001, 4001, 4001]] * 2)
    torch.testing.assert_close(got, expected)


def test_instance_mostly_covered_is_dropped_and_its_pixels_fall_to_stuff_or_void():
    semantic = torch.tensor([[0, 0, 5, 5, 5, 5]])
    big = boxes_mask((1, 6), (0, 2, 1, 6))
    covered = boxes_mask((1, 6), (0, 1, 1, 5))  # 3 of its 4 pixels are taken by `big`
    got = merge(semantic, [big, covered], [0.9, 0.8], [5, 5], overlap_threshold=0.5)
    torch.testing.assert_close(got, torch.tensor([[0, 0, 5001, 5001, 5001, 5001]]))
    got = merge(semantic, [big, covered], [0.9, 0.8], [5, 5], overlap_threshold=0.8)
    torch.testing.assert_close(got, torch.tensor([[0, 5002, 5001, 5001, 5001, 5001]]))


def test_score_threshold_drops_weak_instances_and_thing_pixels_become_void():
    semantic = torch.tensor([[1, 3, 3, 1]])
    weak = boxes_mask((1, 4), (0, 1, 1, 3))
    got = merge(semantic, [weak], [0.3], [3], score_threshold=0.5)
    torch.testing.assert_close(got, torch.tensor([[1000, VOID, VOID, 1000]]))
    got = merge(semantic, [weak], [0.3], [3], score_threshold=0.2)
    torch.testing.assert_close(got, torch.tensor([[1000, 3001, 3001, 1000]]))


def test_stuff_area_threshold_counts_only_free_pixels():
    semantic = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    thing = boxes_mask((1, 8), (0, 3, 1, 6))  # covers three of the five class-1 pixels
    got = merge(semantic, [thing], [0.9], [2], stuff_area_threshold=3)
    # class 0 has 3 free pixels (kept), class 1 only 2 (left void)
    torch.testing.assert_close(got, torch.tensor([[0, 0, 0, 2001, 2001, 2001, VOID, VOID]]))
    got = merge(semantic, [thing], [0.9], [2], stuff_area_threshold=2)
    torch.testing.assert_close(got, torch.tensor([[0, 0, 0, 2001, 2001, 2001, 1000, 1000]]))


def test_ignore_pixels_of_the_semantic_map_stay_void_and_float_masks_are_thresholded():
    semantic = torch.tensor([[255, 0, 0, 0]])
    probabilities = torch.tensor([[[0.2, 0.7, 0.4, 0.9]]])
    got = merge_panoptic(
        semantic,
        probabilities,
        torch.tensor([0.9]),
        torch.tensor([2]),
        stuff_classes=(0,),
        stuff_area_threshold=0,
        mask_threshold=0.5,
    )
    torch.testing.assert_close(got, torch.tensor([[VOID, 2001, 0, 2001]]))


def test_no_instances_and_a_custom_label_divisor():
    semantic = torch.tensor([[0, 1], [2, 1]])
    got = merge(semantic, [], [], [], stuff_classes=(0, 1), label_divisor=10)
    torch.testing.assert_close(got, torch.tensor([[0, 10], [2550, 10]]))


def brute_force_merge(
    semantic, masks, scores, labels, stuff, score_threshold, overlap_threshold, stuff_area
):
    """The merge rules with Python sets of pixels, one instance at a time."""
    height, width = len(semantic), len(semantic[0])
    owner: dict[tuple[int, int], int] = {}
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    next_id = 1
    for i in order:
        if scores[i] < score_threshold:
            continue
        pixels = {(r, c) for r in range(height) for c in range(width) if masks[i][r][c]}
        if not pixels:
            continue
        free = {p for p in pixels if p not in owner}
        if (len(pixels) - len(free)) / len(pixels) > overlap_threshold or not free:
            continue
        for p in free:
            owner[p] = labels[i] * 1000 + next_id
        next_id += 1
    for class_id in stuff:
        free = {
            (r, c)
            for r in range(height)
            for c in range(width)
            if semantic[r][c] == class_id and (r, c) not in owner
        }
        if free and len(free) >= stuff_area:
            for p in free:
                owner[p] = class_id * 1000
    return torch.tensor([[owner.get((r, c), VOID) for c in range(width)] for r in range(height)])


@pytest.mark.parametrize("seed", range(6))
def test_merge_matches_a_brute_force_merge_on_random_inputs(seed):
    generator = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, 5, (7, 9), generator=generator)
    count = int(torch.randint(0, 6, (1,), generator=generator))
    masks = torch.rand(count, 7, 9, generator=generator) > 0.6
    scores = torch.rand(count, generator=generator)
    labels = torch.randint(3, 5, (count,), generator=generator)
    options = dict(score_threshold=0.3, overlap_threshold=0.4, stuff_area_threshold=4)
    got = merge_panoptic(semantic, masks, scores, labels, stuff_classes=(0, 1, 2), **options)
    expected = brute_force_merge(
        semantic.tolist(), masks.tolist(), scores.tolist(), labels.tolist(), (0, 1, 2), 0.3, 0.4, 4
    )
    torch.testing.assert_close(got, expected)


def test_merge_rejects_bad_inputs_with_clear_messages():
    semantic = torch.zeros(4, 4, dtype=torch.int64)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    one, zero = torch.ones(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="masks must have shape"):
        merge_panoptic(semantic, torch.zeros(1, 3, 4), torch.ones(1), one, stuff_classes=(0,))
    with pytest.raises(ValueError, match="scores and labels"):
        merge_panoptic(semantic, masks, torch.ones(2), one, stuff_classes=(0,))
    with pytest.raises(ValueError, match="stuff_classes"):
        merge_panoptic(semantic, masks, torch.ones(1), zero, stuff_classes=(0,))
    with pytest.raises(ValueError, match="semantic must be"):
        merge_panoptic(semantic.float(), masks, torch.ones(1), one, stuff_classes=(0,))
    with pytest.raises(TypeError, match="labels must be integer"):
        merge_panoptic(semantic, masks, torch.ones(1), torch.ones(1), stuff_classes=(0,))


def test_instance_targets_by_hand():
    mask = torch.tensor([[0, 3, 3, 0, 0], [0, 3, 3, 0, 4], [1, 1, 0, 0, 4]])
    instances = torch.tensor(
        [[0, 2, 2, 0, 0], [0, 2, 2, 0, 5], [7, 7, 0, 0, 5]]
    )  # instance 7 lies on a stuff class: left out
    target = instance_targets(mask, instances, thing_classes=(3, 4, 5))
    expected_boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [4.0, 1.0, 5.0, 3.0]])  # x1, y1, x2, y2
    torch.testing.assert_close(target["boxes"], expected_boxes)
    torch.testing.assert_close(target["labels"], torch.tensor([1, 2]))
    assert target["masks"].dtype == torch.uint8
    expected_masks = torch.stack([instances == 2, instances == 5])
    torch.testing.assert_close(target["masks"].bool(), expected_masks)


def test_instance_targets_empty_and_errors():
    empty = torch.zeros(3, 3, dtype=torch.int64)
    target = instance_targets(empty, empty, (3,))
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 3, 3)
    with pytest.raises(ValueError, match="one class"):
        instance_targets(torch.tensor([[3, 4]]), torch.tensor([[1, 1]]), (3, 4))


class FixedDetector(nn.Module):
    """Stands in for Mask R-CNN: the same detections for every image (torchvision output format)."""

    def forward(self, images):
        height, width = images[0].shape[-2:]
        masks = torch.zeros(2, 1, height, width)
        masks[0, 0, :2, :2] = 0.9
        masks[1, 0, 2:, 2:] = 0.8
        return [
            {
                "boxes": torch.zeros(2, 4),
                "labels": torch.tensor([1, 9]),
                "scores": torch.tensor([0.95, 0.9]),
                "masks": masks,
            }
            for _ in images
        ]


class ConstantSemantic(nn.Module):
    """Logits that make class 0 win on the left half and class 1 on the right half."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 0, :, : x.shape[-1] // 2] = 1.0
        logits[:, 1, :, x.shape[-1] // 2 :] = 1.0
        return {"out": logits}


def test_pipeline_maps_detector_labels_and_ignores_unknown_ones():
    pipeline = PanopticPipeline(
        FixedDetector(),
        ConstantSemantic(),
        thing_label_map={1: 2},
        stuff_classes=(0, 1),
        stuff_area_threshold=0,
    )
    got = pipeline(torch.rand(2, 3, 4, 4))
    expected = torch.tensor(
        [[2001, 2001, 1000, 1000], [2001, 2001, 1000, 1000], [0, 0, 1000, 1000], [0, 0, 1000, 1000]]
    )
    torch.testing.assert_close(got, torch.stack([expected, expected]))


def test_pipeline_end_to_end_after_one_training_step():
    torch.manual_seed(0)
    dataset = ScenesDataset(length=2, image_size=48, seed=0, return_instances=True)
    things = ScenesDataset.thing_classes
    detector = build_mask_rcnn(len(things) + 1, image_size=48, channels=8)
    losses = train_mask_rcnn(detector, dataset, things, steps=1, batch_size=2)
    assert len(losses) == 1 and losses[0] > 0
    semantic_model = SegFormer(
        num_classes=ScenesDataset.num_classes,
        embed_dims=(8, 8, 8, 8),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        decoder_channels=8,
    )
    pipeline = PanopticPipeline(
        detector,
        semantic_model,
        thing_label_map={i + 1: c for i, c in enumerate(things)},
        stuff_classes=ScenesDataset.stuff_classes,
        score_threshold=0.0,
    )
    images = torch.stack([dataset[i][0] for i in range(2)])
    panoptic = pipeline(images)
    assert panoptic.shape == (2, 48, 48) and panoptic.dtype == torch.int64
    classes = set((panoptic // 1000).unique().tolist())
    assert classes <= set(range(ScenesDataset.num_classes)) | {255}
    stuff_ids = panoptic[torch.isin(panoptic // 1000, torch.tensor(ScenesDataset.stuff_classes))]
    assert (stuff_ids % 1000 == 0).all()


def test_build_mask_rcnn_options_never_download():
    with pytest.raises(ValueError, match="num_classes"):
        build_mask_rcnn(1)
    with pytest.raises(ValueError, match="backbone"):
        build_mask_rcnn(4, backbone="vgg")
    with pytest.raises(ValueError, match="resnet50"):
        build_mask_rcnn(4, backbone="tiny", weights="DEFAULT")
    model = build_mask_rcnn(4, backbone="resnet18", image_size=64)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4


def test_pipeline_and_training_reject_bad_arguments():
    with pytest.raises(ValueError, match="both things"):
        PanopticPipeline(
            FixedDetector(), ConstantSemantic(), thing_label_map={1: 0}, stuff_classes=(0, 1)
        )
    with pytest.raises(TypeError, match="thing_label_map"):
        PanopticPipeline(
            FixedDetector(), ConstantSemantic(), thing_label_map=[2], stuff_classes=(0, 1)
        )
    pipeline = PanopticPipeline(
        FixedDetector(), ConstantSemantic(), thing_label_map={1: 2}, stuff_classes=(0, 1)
    )
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pipeline(torch.rand(3, 4, 4))
    detector = build_mask_rcnn(4, image_size=32, channels=8)
    with pytest.raises(ValueError, match="return_instances=True"):
        train_mask_rcnn(detector, ScenesDataset(length=2, image_size=32), (3, 4, 5), steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_mask_rcnn(
            detector,
            ScenesDataset(length=2, image_size=32, return_instances=True),
            (3, 4, 5),
            steps=0,
        )
