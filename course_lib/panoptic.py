"""Panoptic segmentation from two networks: Mask R-CNN for "things", a semantic model for "stuff".

This module owns the prediction side: building a panoptic map from the two networks' outputs.
Scoring a panoptic map is `metrics.panoptic`; converting between semantic, instance and panoptic
maps is `instances`.

Kirillov et al., "Panoptic Segmentation" (CVPR 2019) define the task and its merging heuristic;
Mask R-CNN is He et al. (ICCV 2017), used here as torchvision builds it.

Every pixel gets one panoptic id = class_id * label_divisor + instance_id (the convention of
`course_lib.instances.encode_panoptic`): stuff segments have instance_id 0, thing instances are
numbered 1..n, and pixels no segment claims are void, id ignore_index * label_divisor.

`merge_panoptic` applies the usual rules (Kirillov et al., Sec. 7; Panoptic FPN):
1. instances in decreasing score order, dropping those below `score_threshold`;
2. an instance whose mask is covered more than `overlap_threshold` by higher-scored instances is
   dropped; otherwise it takes only the pixels that are still free (no pixel has two owners);
3. each stuff class of the semantic map takes its still-free pixels, if at least
   `stuff_area_threshold` of them remain (tiny stuff fragments are noise, left void);
4. everything else is void, including pixels that the semantic model calls a thing class but no
   kept instance covers (a thing needs an instance id, which the semantic map cannot give).

Tensor contract:
    semantic   (H, W) int64 class ids (argmax of a semantic model)
    masks      (M, H, W) bool, or float probabilities thresholded at `mask_threshold`
    scores     (M,) float, labels (M,) int64 class ids of the instances
    panoptic   (H, W) int64 -> returned by merge_panoptic; PanopticPipeline gives (N, H, W)
Detector targets (torchvision detection API, per image): boxes (M, 4) float (x1, y1, x2, y2),
labels (M,) int64 in 1..T (0 is the detector's background), masks (M, H, W) uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.models import WeightsEnum
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign, masks_to_boxes

from course_lib.models.blocks import ConvBNReLU

__all__ = [
    "merge_panoptic",
    "instance_targets",
    "build_mask_rcnn",
    "train_mask_rcnn",
    "PanopticPipeline",
]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def _class_ids(values: Iterable[int], name: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(v) for v in values)
    except TypeError:
        raise TypeError(
            f"{name} must be an iterable of class ids, got {type(values).__name__}"
        ) from None
    if any(v < 0 for v in ids):
        raise ValueError(f"{name} must hold non-negative class ids, got {ids}")
    return ids


def merge_panoptic(
    semantic: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    stuff_classes: Iterable[int],
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area_threshold: int = 64,
    mask_threshold: float = 0.5,
    label_divisor: int = 1000,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Merge instance predictions and a semantic map into one panoptic map (module doc: rules).

    Args:
        semantic: (H, W) integer class map.
        masks: (M, H, W) bool masks or float probabilities (a pixel belongs when > mask_threshold).
        scores: (M,) confidences; labels: (M,) class ids of the instances (not stuff classes).
        stuff_classes: the semantic classes that become stuff segments.
        score_threshold: instances with a lower score are dropped.
        overlap_threshold: drop an instance when more than this fraction of its mask is taken.
        stuff_area_threshold: a stuff class needs at least this many free pixels to be kept.
    Returns:
        (H, W) int64 panoptic ids on the device of `semantic`.
    """
    semantic = _as_tensor(semantic, "semantic")
    masks = _as_tensor(masks, "masks")
    scores = _as_tensor(scores, "scores")
    labels = _as_tensor(labels, "labels")
    stuff = _class_ids(stuff_classes, "stuff_classes")
    if semantic.dim() != 2 or semantic.is_floating_point() or semantic.dtype == torch.bool:
        raise ValueError(
            f"semantic must be an (H, W) integer class map, got shape "
            f"{tuple(semantic.shape)} and dtype {semantic.dtype}"
        )
    if masks.dim() != 3 or masks.shape[1:] != semantic.shape:
        raise ValueError(
            f"masks must have shape (M, {semantic.shape[0]}, {semantic.shape[1]}) "
            f"to match semantic, got {tuple(masks.shape)}"
        )
    m = masks.shape[0]
    if scores.shape != (m,) or labels.shape != (m,):
        raise ValueError(
            f"scores and labels must have shape ({m},) for {m} masks, got "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if not isinstance(label_divisor, int) or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    if not 0.0 <= overlap_threshold <= 1.0:
        raise ValueError(f"overlap_threshold must be in [0, 1], got {overlap_threshold!r}")
    if not isinstance(stuff_area_threshold, int) or stuff_area_threshold < 0:
        raise ValueError(
            f"stuff_area_threshold must be a non-negative int (pixels), "
            f"got {stuff_area_threshold!r}"
        )
    clash = sorted(set(labels.tolist()) & set(stuff))
    if clash:
        raise ValueError(
            f"labels {clash} are stuff_classes {stuff}: instances must be of thing classes"
        )
    if (labels < 0).any() or (labels >= ignore_index).any():
        raise ValueError(f"labels must be class ids in [0, {ignore_index}), got {labels.tolist()}")

    device = semantic.device
    masks = masks.to(device)
    binary = masks > mask_threshold if masks.is_floating_point() else masks.bool()  # (M, H, W)
    panoptic = torch.full(
        semantic.shape, ignore_index * label_divisor, dtype=torch.int64, device=device
    )  # (H, W): void until a segment claims the pixel
    taken = torch.zeros(semantic.shape, dtype=torch.bool, device=device)  # (H, W)

    instance_id = 0
    for i in torch.argsort(scores.detach().cpu(), descending=True, stable=True).tolist():
        if scores[i] < score_threshold:
            break  # sorted: every later score is lower
        area = int(binary[i].sum())
        if area == 0:
            continue
        free = binary[i] & ~taken  # (H, W)
        if (area - int(free.sum())) / area > overlap_threshold or not free.any():
            continue
        instance_id += 1
        if instance_id >= label_divisor:
            raise ValueError(f"more than {label_divisor - 1} instances kept: raise label_divisor")
        panoptic[free] = int(labels[i]) * label_divisor + instance_id
        taken |= free

    for class_id in stuff:
        region = (semantic == class_id) & ~taken  # (H, W)
        if int(region.sum()) >= max(stuff_area_threshold, 1):
            panoptic[region] = class_id * label_divisor
            taken |= region
    return panoptic


def instance_targets(
    mask: torch.Tensor | np.ndarray,
    instances: torch.Tensor | np.ndarray,
    thing_classes: Sequence[int],
) -> dict[str, torch.Tensor]:
    """Turn a semantic mask and an instance map into the target dict of torchvision's Mask R-CNN.

    mask (H, W) class ids and instances (H, W) ids (0 = none, 1..n) -> {"boxes": (M, 4) float
    x1, y1, x2, y2 with x2, y2 one past the last pixel, "labels": (M,) int64 detector labels
    (1 + position of the class in `thing_classes`), "masks": (M, H, W) uint8}. Instances of a
    class not in `thing_classes` are left out.
    """
    mask = _as_tensor(mask, "mask")
    instances = _as_tensor(instances, "instances")
    things = _class_ids(thing_classes, "thing_classes")
    if mask.dim() != 2 or mask.shape != instances.shape:
        raise ValueError(
            f"mask and instances must be (H, W) maps of the same shape, got "
            f"{tuple(mask.shape)} and {tuple(instances.shape)}"
        )
    binary, labels = [], []
    for instance_id in torch.unique(instances).tolist():
        if instance_id == 0:
            continue
        region = instances == instance_id  # (H, W)
        classes = torch.unique(mask[region]).tolist()
        if len(classes) != 1:
            raise ValueError(
                f"instance {instance_id} covers classes {classes}; an instance must "
                f"lie on one class of mask"
            )
        if classes[0] in things:
            binary.append(region)
            labels.append(things.index(classes[0]) + 1)
    height, width = mask.shape
    if not binary:
        return {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, height, width, dtype=torch.uint8),
        }
    stacked = torch.stack(binary)  # (M, H, W)
    boxes = masks_to_boxes(stacked).float()  # (M, 4) inclusive pixel corners
    boxes[:, 2:] += 1  # one past the last pixel, so a one-pixel object has a positive width
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": stacked.to(torch.uint8),
    }


class _TinyBackbone(nn.Sequential):
    """Six conv layers to a stride-4 map: a backbone that trains from scratch in seconds."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(
            ConvBNReLU(in_channels, channels // 2, 3, padding=1, stride=2),
            ConvBNReLU(channels // 2, channels, 3, padding=1),
            ConvBNReLU(channels, channels, 3, padding=1, stride=2),
            ConvBNReLU(channels, channels, 3, padding=1),
            ConvBNReLU(channels, channels, 3, padding=2, dilation=2),  # context for big objects
            ConvBNReLU(channels, channels, 3, padding=4, dilation=4),
        )
        self.out_channels = channels  # the attribute torchvision's detection heads read


def build_mask_rcnn(
    num_classes: int,
    *,
    backbone: str = "tiny",
    weights: str | WeightsEnum | None = None,
    weights_backbone: str | WeightsEnum | None = None,
    image_size: int = 128,
    channels: int = 32,
) -> MaskRCNN:
    """A Mask R-CNN from torchvision. `num_classes` counts the detector's background (things + 1).

    backbone="tiny": a small stride-4 CNN with small heads, trained from scratch (fast mode);
    "resnet18" / "resnet34" / "resnet50": a ResNet-FPN (`weights_backbone` passed through);
    "resnet50" with `weights` (e.g. "DEFAULT", COCO): torchvision's `maskrcnn_resnet50_fpn`, whose
    91 COCO labels then replace `num_classes`. Defaults never download anything.
    `image_size` is the shorter side the detector resizes images to.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (background + things), got {num_classes!r}"
        )
    if weights is not None:
        if backbone != "resnet50":
            raise ValueError(
                f"weights are available for backbone='resnet50' only, got {backbone!r}"
            )
        return maskrcnn_resnet50_fpn(
            weights=weights,
            weights_backbone=None,
            min_size=image_size,
            max_size=math.ceil(image_size * 1333 / 800),
        )
    if backbone in ("resnet18", "resnet34", "resnet50"):
        from_scratch = weights_backbone is None
        body = resnet_fpn_backbone(
            backbone_name=backbone,
            weights=weights_backbone,
            trainable_layers=5 if from_scratch else 3,
            norm_layer=nn.BatchNorm2d if from_scratch else None,
        )
        return MaskRCNN(
            body,
            num_classes=num_classes,
            min_size=image_size,
            max_size=math.ceil(image_size * 1333 / 800),
        )
    if backbone != "tiny":
        raise ValueError(
            f"backbone must be 'tiny', 'resnet18', 'resnet34' or 'resnet50', got {backbone!r}"
        )
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2)
    return MaskRCNN(
        _TinyBackbone(3, channels),
        num_classes=None,  # the class count is in the predictors
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((8, 16, 32, 64),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=150,
        rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=64,
        box_roi_pool=pool,
        box_head=TwoMLPHead(channels * 7 * 7, 128),
        box_predictor=FastRCNNPredictor(128, num_classes),
        box_batch_size_per_image=64,
        box_detections_per_img=20,
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(channels, [channels, channels], 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
    )


def train_mask_rcnn(
    model: MaskRCNN,
    dataset: Dataset,
    thing_classes: Sequence[int],
    *,
    steps: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> list[float]:
    """Train `model` for `steps` AdamW steps on random batches of `dataset`; returns the losses.

    `dataset[i]` must give (image (3, H, W), mask (H, W), instances (H, W)), as
    `ScenesDataset(return_instances=True)` does.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    sample = dataset[0]
    if not isinstance(sample, (tuple, list)) or len(sample) != 3:
        raise ValueError(
            "dataset[i] must be (image, mask, instances): build the dataset with "
            "return_instances=True"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4
    )
    history = []
    for _ in range(steps):
        indices = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
        images, targets = [], []
        for i in indices:
            image, mask, instances = dataset[i]
            images.append(image.to(device))
            target = instance_targets(mask, instances, thing_classes)
            targets.append({key: value.to(device) for key, value in target.items()})
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    model.eval()
    return history


class PanopticPipeline:
    """Detector + semantic model + `merge_panoptic`: (N, 3, H, W) images -> (N, H, W) panoptic ids.

    Args:
        detector: a torchvision Mask R-CNN (eval mode outputs boxes, labels, scores, masks).
        semantic_model: a model giving logits (N, K, H, W) (or a dict with key "out", as
            torchvision's segmentation models do).
        thing_label_map: detector label -> panoptic class id (e.g. {1: 3, 2: 4, 3: 5}); detections
            with a label outside the map are ignored.
        stuff_classes: the semantic classes that become stuff segments.
        semantic_transform: optional function applied to the images before the semantic model
            (e.g. ImageNet normalisation); the detector normalises its input itself.
        Thresholds and ids as in `merge_panoptic`.
    """

    def __init__(
        self,
        detector: nn.Module,
        semantic_model: nn.Module,
        *,
        thing_label_map: Mapping[int, int],
        stuff_classes: Iterable[int],
        semantic_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        score_threshold: float = 0.5,
        overlap_threshold: float = 0.5,
        stuff_area_threshold: int = 64,
        label_divisor: int = 1000,
        ignore_index: int = 255,
    ):
        if not isinstance(thing_label_map, Mapping) or not thing_label_map:
            raise TypeError(
                f"thing_label_map must be a non-empty dict detector label -> class id, "
                f"got {thing_label_map!r}"
            )
        self.detector = detector
        self.semantic_model = semantic_model
        self.thing_label_map = {int(k): int(v) for k, v in thing_label_map.items()}
        self.stuff_classes = _class_ids(stuff_classes, "stuff_classes")
        clash = sorted(set(self.thing_label_map.values()) & set(self.stuff_classes))
        if clash:
            raise ValueError(f"classes {clash} are both things (thing_label_map) and stuff_classes")
        self.semantic_transform = semantic_transform
        self.merge_options = dict(
            score_threshold=score_threshold,
            overlap_threshold=overlap_threshold,
            stuff_area_threshold=stuff_area_threshold,
            label_divisor=label_divisor,
            ignore_index=ignore_index,
        )

    def __repr__(self) -> str:
        return (
            f"PanopticPipeline(detector={type(self.detector).__name__}, "
            f"semantic_model={type(self.semantic_model).__name__}, "
            f"things={self.thing_label_map}, stuff={self.stuff_classes})"
        )

    @torch.no_grad()
    def predict_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """The two halves before merging: semantic maps (N, H, W) and, per image, the detections
        {"masks": (M, H, W) probabilities, "scores": (M,), "labels": (M,) panoptic class ids}."""
        if (
            not isinstance(images, torch.Tensor)
            or images.dim() != 4
            or not images.is_floating_point()
        ):
            raise ValueError(
                f"images must be a float tensor (N, C, H, W), got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        self.detector.eval()
        self.semantic_model.eval()
        semantic_input = self.semantic_transform(images) if self.semantic_transform else images
        logits = self.semantic_model(semantic_input)
        logits = logits["out"] if isinstance(logits, dict) else logits  # (N, K, H, W)
        semantic = logits.argmax(dim=1)  # (N, H, W)
        detections = []
        for output in self.detector(list(images)):
            keep = torch.tensor(
                [int(label) in self.thing_label_map for label in output["labels"]],
                dtype=torch.bool,
                device=output["labels"].device,
            )
            labels = [self.thing_label_map[int(label)] for label in output["labels"][keep]]
            detections.append(
                {
                    "masks": output["masks"][keep, 0],  # (M, H, W) probabilities
                    "scores": output["scores"][keep],
                    "labels": torch.tensor(
                        labels, dtype=torch.int64, device=output["labels"].device
                    ),
                }
            )
        return semantic, detections

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        semantic, detections = self.predict_parts(images)
        return torch.stack(
            [
                merge_panoptic(
                    s,
                    d["masks"],
                    d["scores"],
                    d["labels"],
                    stuff_classes=self.stuff_classes,
                    **self.merge_options,
                )
                for s, d in zip(semantic, detections)
            ]
        )  # (N, H, W)
