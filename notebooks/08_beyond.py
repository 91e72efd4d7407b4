# %%
# Course set-up cell: on Google Colab, clone the course and install course_lib; elsewhere do nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    course = "/content/course"
    if not os.path.isdir(course):
        url = "https://github.com/semantic-segmentation-course/semantic-segmentation-course"
        subprocess.run(["git", "clone", "--depth", "1", url, course], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", course], check=True)
    sys.path.insert(0, course)

# %% [markdown]
# # 08 · Beyond the classics: panoptic segmentation, a real-time model, a transformer
#
# The earlier lessons built FCN, U-Net and DeepLab and learned to train and measure them. This
# last lesson looks at three directions the field took next, each with working code:
#
# 1. **Panoptic segmentation** gives every pixel a class *and*, for countable things, an object
#    id. We see why its metric, panoptic quality (PQ), and mIoU can disagree on the very same
#    prediction.
# 2. **A real-time model**, Fast-SCNN, and **a hierarchical transformer**, SegFormer, both in
#    `course_lib.models`.
# 3. **A speed / accuracy table** of every model of the course, measured here: parameters,
#    images per second, and mIoU after the same short training.
# 4. **A panoptic pipeline**: a Mask R-CNN for things plus a semantic model for stuff, merged
#    into one panoptic map and scored with PQ.
#
# In fast mode everything runs on the CPU on the synthetic street scenes, with tiny models and a
# few training steps, so the numbers are small and the point is the comparison. Full mode (a GPU)
# uses longer training and, for the panoptic pipeline, COCO-pretrained Mask R-CNN weights.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Patch
from torch.utils.data import DataLoader, TensorDataset

from course_lib import engine, metrics, models, viz
from course_lib.data import ScenesDataset
from course_lib.instances import encode_panoptic
from course_lib.panoptic import (
    PanopticPipeline,
    build_mask_rcnn,
    merge_panoptic,
    train_mask_rcnn,
)
from course_lib.utils import (
    count_parameters,
    course_mode,
    get_device,
    median_seconds,
    pretrained,
    rehearsal,
    seed_everything,
)

seed_everything(0)
FAST = course_mode() == "fast"
REHEARSAL = rehearsal()  # full mode's sizes on a few images (COURSE_REHEARSAL=1, tools/rehearse.py)
if FAST:
    torch.set_num_threads(1)  # small models and images: one thread is as fast, and steadier
DEVICE = get_device()
plt.rcParams["figure.dpi"] = 80 if FAST else 100
CLASSES = ScenesDataset.CLASSES
K = ScenesDataset.num_classes
THINGS, STUFF = ScenesDataset.thing_classes, ScenesDataset.stuff_classes
print("course mode:", course_mode())
LEGEND = viz.legend_handles(CLASSES) + [Patch(facecolor=viz.PALETTE[255] / 255, label="void")]
print("things:", [CLASSES[c] for c in THINGS], " stuff:", [CLASSES[c] for c in STUFF])

# %% [markdown]
# ## 1. PQ and mIoU on the same predictions
#
# A panoptic map stores `class_id * 1000 + instance_id` per pixel (stuff has instance id 0).
# **mIoU** only looks at the class part, pixel by pixel. **PQ** (Kirillov et al., 2019) first
# matches predicted and true *segments* of the same class (a match needs IoU > 0.5), then
#
# $$PQ = \underbrace{\frac{\sum_{\text{matches}} IoU}{TP}}_{SQ\ \text{(segmentation quality)}}
#   \times \underbrace{\frac{TP}{TP + \tfrac12 FP + \tfrac12 FN}}_{RQ\ \text{(recognition quality)}}$$
#
# per class, averaged over classes. One scene with two cars, three people (one of them only
# 27 pixels) and a tree is our ground truth; we edit it into four imperfect predictions.

# %%
scene = ScenesDataset(length=12, image_size=128, seed=0, return_instances=True)
image, mask, instances = scene[11]
target = encode_panoptic(mask, instances)  # (H, W) int64
segments = {
    int(i): (int(mask[instances == i][0]), int((instances == i).sum()))
    for i in instances.unique()
    if i > 0
}
for i, (c, area) in segments.items():
    print(f"instance {i}: {CLASSES[c]:<6} {area:4d} pixels")

# %%
car_ids = [i for i, (c, _) in segments.items() if c == CLASSES.index("car")]
small_person = min(
    (i for i, (c, _) in segments.items() if c == CLASSES.index("person")),
    key=lambda i: segments[i][1],
)
road = CLASSES.index("road")
road_rows = torch.nonzero((mask == road).any(dim=1)).flatten()  # image rows that contain road


def road_called_background(fraction: float) -> torch.Tensor:
    """The true map with the top `fraction` of the road rows predicted as background."""
    pred = target.clone()
    cut = road_rows[0] + int(fraction * len(road_rows))
    band = torch.zeros_like(mask, dtype=torch.bool)
    band[:cut] = True
    pred[band & (mask == road)] = 0  # class 0, stuff: id 0
    return pred


merged = target.clone()
merged[torch.isin(instances, torch.tensor(car_ids))] = CLASSES.index("car") * 1000 + car_ids[0]
missed = target.clone()
missed[instances == small_person] = 0  # the small person is predicted as background
predictions = {
    "perfect": target,
    "cars merged": merged,
    "small person missed": missed,
    "top 50% of road wrong": road_called_background(0.5),
    "top 60% of road wrong": road_called_background(0.6),
}


# %%
# NBVAL_CHECK_OUTPUT
def scores(pred_panoptic: torch.Tensor) -> dict[str, float]:
    cm = metrics.confusion_matrix(pred_panoptic // 1000, mask, K)
    pq = metrics.panoptic_quality(pred_panoptic, target, K, thing_classes=THINGS)
    return {
        "mIoU": metrics.mean_iou(cm),
        "PQ": pq["pq"],
        "PQ things": pq["pq_things"],
        "PQ stuff": pq["pq_stuff"],
    }


print(f"{'prediction':<22}" + "".join(f"{k:>10}" for k in ("mIoU", "PQ", "PQ things", "PQ stuff")))
table = {name: scores(pred) for name, pred in predictions.items()}
for name, row in table.items():
    print(f"{name:<22}" + "".join(f"{v:>10.3f}" for v in row.values()))

# %%
fig, axes = plt.subplots(1, len(predictions) + 1, figsize=(13, 2.6))
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("image", fontsize=9)
for ax, (name, pred) in zip(axes[1:], predictions.items()):
    ax.imshow(viz.colorize_panoptic(pred))
    ax.set_title(f"{name}\nmIoU {table[name]['mIoU']:.2f}  PQ {table[name]['PQ']:.2f}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.legend(handles=LEGEND, loc="lower center", ncol=len(LEGEND), fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))

# %% [markdown]
# Each object is drawn in its class colour, lighter or darker per instance, with white outlines
# between segments: the merged cars lose the outline between them. Read the table row by row:
#
# - **Cars merged**: every pixel has the right class, so mIoU stays at 1. PQ sees one car
#   segment where there are two: the merged segment still overlaps the larger car with
#   IoU > 0.5 (a true positive with a lower IoU), and the smaller car is a false negative.
# - **Small person missed**: 27 pixels out of 16 384 barely move the person IoU, so mIoU hardly
#   changes. For PQ a missed object is a whole false negative, however small: RQ of the person
#   class drops from 1 to 2/2.5.
# - **Road errors**: with the top half of the road called background, the road IoU is 0.55 and
#   both metrics drop by the same amount (the road segment still matches, and for a matched
#   stuff segment PQ is its IoU). Ten more percent of rows take the road IoU to 0.46, below
#   0.5: no match, so the road class gets PQ = 0 (one FP and one FN). mIoU falls by 0.02, PQ by
#   0.10: a cliff that mIoU, which falls smoothly, does not have.
#
# mIoU answers "how many pixels got the right class?"; PQ answers "how many objects and regions
# did we find, and how well did we outline them?". Report both when objects matter.

# %% [markdown]
# ## 2. Two newer architectures
#
# ### Fast-SCNN: a real-time model (Poudel et al., 2019)
#
# Fast-SCNN spends almost nothing at full resolution. A *learning to downsample* module (one
# conv and two depthwise-separable convs) goes straight to 1/8; a *global feature extractor*
# (MobileNetV2 bottlenecks and pyramid pooling) works at 1/32; a *fusion* adds the two. The
# depthwise-separable conv is the key saving: a 3x3 filter per channel, then a 1x1 mix.

# %%
# NBVAL_CHECK_OUTPUT
fast_scnn = models.FastSCNN(num_classes=K).eval()
x = torch.rand(1, 3, 256, 256)
with torch.no_grad():
    high = fast_scnn.learning_to_downsample(x)
    low = fast_scnn.global_features(high)
    print("input                 ", tuple(x.shape))
    print("learning to downsample", tuple(high.shape), " (1/8: spatial detail)")
    print("global features       ", tuple(low.shape), " (1/32: context)")
    print("logits                ", tuple(fast_scnn(x).shape))
full = 3 * 3 * 64 * 128
separable = 3 * 3 * 64 + 64 * 128
print(
    f"weights of a 3x3 conv 64 -> 128: full {full}, depthwise-separable {separable} "
    f"({full / separable:.1f}x fewer)"
)
print(f"Fast-SCNN parameters: {count_parameters(fast_scnn) / 1e6:.2f} M")

# %% [markdown]
# ### SegFormer: a hierarchical transformer (Xie et al., 2021)
#
# SegFormer cuts the image into *overlapping* patches (a 7x7 conv with stride 4) and runs
# transformer blocks in four stages at 1/4, 1/8, 1/16 and 1/32, like the stages of a CNN. Two
# tricks keep it small and fast:
#
# - **efficient self-attention**: keys and values come from a map shrunk R x R times by a
#   strided conv, so attention over L tokens costs L x L / R² instead of L x L;
# - **Mix-FFN**: a depthwise 3x3 conv inside the MLP tells each token where it is, so there is
#   no positional encoding and any image size works.
#
# The decoder is "all-MLP": project every stage to one width, upsample to 1/4, concatenate, fuse.

# %%
# NBVAL_CHECK_OUTPUT
segformer = models.SegFormer(num_classes=K).eval()
x = torch.rand(1, 3, 256, 256)
with torch.no_grad():
    out = x
    for i, stage in enumerate(segformer.stages):
        out = stage(out)
        tokens = out.shape[-2] * out.shape[-1]
        r = stage.blocks[0].attn.sr_ratio
        keys = math.ceil(out.shape[-2] / r) * math.ceil(out.shape[-1] / r)
        print(
            f"stage {i + 1}: {tuple(out.shape)}  {tokens:5d} queries x {keys:4d} keys "
            f"(R={r}: {tokens / keys:4.0f}x less than full attention)"
        )
print(f"SegFormer (tiny) parameters: {count_parameters(segformer) / 1e6:.2f} M")

# %% [markdown]
# ## 3. Every model of the course: parameters, speed, accuracy
#
# Each model is trained with the **same budget**: the same images, batch size, number of steps,
# optimiser and learning rate, from scratch (no pretrained weights). Speed is the forward pass
# in eval mode at 256x256 on this machine's CPU (and GPU if there is one). The configurations
# are the small ones of the course; `benchmarks/bench_beyond.py` prints the same speed table as
# ratios against U-Net.

# %%
CONFIGS = {  # label -> (name in models.MODELS, keyword arguments)
    "U-Net": ("unet", dict(base_channels=16, depth=3)),
    "FCN-8s": ("fcn", dict(variant="8s", backbone="resnet18")),
    "DeepLabV3": ("deeplabv3", dict(backbone="resnet18")),
    "DeepLabV3+": ("deeplabv3plus", dict(backbone="resnet18")),
    "Fast-SCNN": ("fastscnn", dict()),
    "SegFormer": ("segformer", dict()),
}
TRAIN_SIZE, TRAIN_IMAGES, EPOCHS = (64, 64, 2) if FAST else (256, 1000, 20)
VAL_IMAGES = 16 if FAST else 200
if REHEARSAL:
    TRAIN_IMAGES, EPOCHS, VAL_IMAGES = 16, 1, 8


def rendered(dataset):
    """Every scene of `dataset` drawn once and held as tensors: six models x all epochs read the
    same scenes, and drawing them again each time would cost more than training on them."""
    return TensorDataset(*map(torch.stack, zip(*(dataset[i] for i in range(len(dataset))))))


train_set = rendered(ScenesDataset(length=TRAIN_IMAGES, image_size=TRAIN_SIZE, seed=0))
val_set = rendered(ScenesDataset(length=VAL_IMAGES, image_size=TRAIN_SIZE, seed=1))
val_loader = DataLoader(val_set, batch_size=8)
print(
    f"{TRAIN_IMAGES} training images of {TRAIN_SIZE}x{TRAIN_SIZE}, batch 8, {EPOCHS} epochs: "
    f"{EPOCHS * TRAIN_IMAGES // 8} steps per model"
)


def images_per_second(model: torch.nn.Module, device: torch.device, repeats: int = 2) -> float:
    """Median images per second of a batch-2 forward pass at 256x256, after one warm-up pass.

    `median_seconds` synchronises CUDA around every call: GPU kernels run asynchronously, and an
    unsynchronised timer would measure only how fast they are queued.
    """
    model = model.to(device).eval()
    x = torch.rand(2, 3, 256, 256, device=device)
    with torch.no_grad():
        return 2 / median_seconds(lambda: model(x), repeats, device, warmup=1)


# %%
results, trained = {}, {}
for label, (name, kwargs) in CONFIGS.items():
    seed_everything(0)
    model = models.build_model(name, num_classes=K, in_channels=3, **kwargs)
    loader = DataLoader(
        train_set, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    history = engine.fit(
        model,
        loader,
        val_loader,
        epochs=EPOCHS,
        num_classes=K,
        loss_fn=torch.nn.CrossEntropyLoss(),
        device=DEVICE,
        options=engine.FitOptions(lr=2e-3, seed=0, progress=False),
    )
    results[label] = {
        "params": count_parameters(model),
        "cpu": images_per_second(model, torch.device("cpu")),
        "gpu": images_per_second(model, DEVICE) if DEVICE.type == "cuda" else math.nan,
        "miou": history["miou"][-1],
    }
    trained[label] = model.to(DEVICE).eval()
    print(f"{label:<11} trained: mIoU {results[label]['miou']:.3f}")
print(f"CPU speed measured with {torch.get_num_threads()} thread(s)")

# %% [markdown]
# The measured table (the timings depend on the machine; the ratios are what travels):

# %%
base = results["U-Net"]
print(f"{'model':<11} {'params':>8} {'CPU img/s':>10} {'x U-Net':>8} {'GPU img/s':>10} {'mIoU':>6}")
for label, row in results.items():
    gpu = f"{row['gpu']:10.1f}" if not math.isnan(row["gpu"]) else f"{'n/a':>10}"
    print(
        f"{label:<11} {row['params'] / 1e6:7.2f}M {row['cpu']:10.1f} "
        f"{row['cpu'] / base['cpu']:8.2f} {gpu} {row['miou']:6.3f}"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for label, row in results.items():
    ax.scatter(row["cpu"], row["miou"], s=20 + 8 * row["params"] / 1e5, alpha=0.6)
    ax.annotate(
        label, (row["cpu"], row["miou"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
    )
ax.set_xscale("log")
ax.set_xlabel("CPU images / second at 256x256 (log)")
ax.set_ylabel(f"mIoU after {EPOCHS * TRAIN_IMAGES // 8} steps")
ax.set_title("speed vs accuracy (marker area ~ parameters)", fontsize=10)
fig.tight_layout()

# %% [markdown]
# Beside them, what the papers report, **on their own datasets, hardware and schedules**, so not
# comparable with our table or with each other; they show what each design was built for:
#
# | model | paper reports |
# |---|---|
# | U-Net (Ronneberger et al., 2015) | IoU 0.92 on the PhC-U373 cell tracking data |
# | FCN-8s (Long et al., 2015) | 62.2 % mIoU, PASCAL VOC 2012 test |
# | DeepLabV3 (Chen et al., 2017) | 85.7 % mIoU, PASCAL VOC 2012 test |
# | DeepLabV3+ (Chen et al., 2018) | 89.0 % mIoU, PASCAL VOC 2012 test |
# | Fast-SCNN (Poudel et al., 2019) | 68.0 % mIoU on Cityscapes at 123.5 frames/s, 1.11 M parameters |
# | SegFormer-B0 (Xie et al., 2021) | 37.4 % mIoU on ADE20K with 3.8 M parameters |
#
# Our tiny-budget table shows the same trade-off in small: the ResNet-based FCN and DeepLab
# carry 10-20x more weights than the real-time and transformer models and run slower on a CPU.
# After so short a training from scratch, the accuracy column mostly says which model learns
# fastest, not which one is best when trained properly. Fast-SCNN in particular was designed for 1024x2048
# street images: it downsamples 8x before anything else, so on our 64x64 training images its
# detail branch sees an 8x8 grid and its context branch 2x2.

# %% [markdown]
# ## 4. A panoptic pipeline: Mask R-CNN for things, a semantic model for stuff
#
# Panoptic FPN (Kirillov et al., 2019) and many systems after it produce a panoptic map from two
# outputs: **instances** from a detector (Mask R-CNN: a box, a class, a score and a mask per
# object) and a **semantic map** for the stuff. `course_lib.panoptic.merge_panoptic` combines
# them with the usual rules:
#
# 1. instances in decreasing score order, skipping scores below a threshold;
# 2. an instance mostly hidden by higher-scored ones (overlap > 0.5) is dropped, otherwise it
#    takes only its free pixels;
# 3. each stuff class takes its free pixels, if enough remain (small stuff fragments are noise);
# 4. the rest is void (including thing pixels that no instance claims).
#
# First the rules on a hand-made case: two overlapping detections and a weak one.

# %%
# NBVAL_CHECK_OUTPUT
semantic_toy = torch.tensor(
    [[1, 1, 1, 1, 1, 1], [0, 3, 3, 3, 3, 3], [0, 3, 3, 3, 3, 3], [2, 2, 2, 2, 2, 2]]
)
masks_toy = torch.zeros(3, 4, 6, dtype=torch.bool)
masks_toy[0, 1:3, 1:5] = True  # car A, score 0.6, 8 pixels
masks_toy[1, 1:3, 3:5] = True  # car B, score 0.9: takes 4 of A's pixels first
masks_toy[2, 0:2, 0:2] = True  # a weak detection, score 0.3: dropped
panoptic_toy = merge_panoptic(
    semantic_toy,
    masks_toy,
    torch.tensor([0.6, 0.9, 0.3]),
    torch.tensor([3, 3, 3]),
    stuff_classes=STUFF,
    stuff_area_threshold=0,
)
print(panoptic_toy)

# %% [markdown]
# Car B (score 0.9) became instance 1 and car A kept only its free pixels as instance 2: half of
# its mask was taken, which is not *more* than the 0.5 overlap threshold. The weak detection
# disappeared and the stuff classes filled the rest. The last column is void (255000): the
# semantic map calls it car, but no detection claims it, so it has no instance id to get.
#
# Now the real thing. In fast mode we train a small Mask R-CNN (torchvision's `MaskRCNN` with a
# tiny CNN backbone) from scratch for a few dozen steps on the scenes' instance maps, and take
# the SegFormer trained above (on 64x64 scenes; it accepts any size) as the stuff model.
# `instance_targets` turns a scene's instance map into what Mask R-CNN trains on: a box, a label
# and a mask per object.

# %%
PANOPTIC_SIZE = 128
if FAST:
    instance_train = ScenesDataset(
        length=64, image_size=PANOPTIC_SIZE, seed=2, return_instances=True
    )
    seed_everything(0)
    detector = build_mask_rcnn(len(THINGS) + 1, image_size=PANOPTIC_SIZE)
    losses = train_mask_rcnn(
        detector, instance_train, THINGS, steps=60, batch_size=4, lr=3e-3, device=DEVICE
    )
else:
    DETECTOR_IMAGES, DETECTOR_STEPS, DETECTOR_BATCH = (16, 2, 2) if REHEARSAL else (1000, 1500, 8)
    instance_train = ScenesDataset(
        length=DETECTOR_IMAGES, image_size=PANOPTIC_SIZE, seed=2, return_instances=True
    )
    seed_everything(0)
    detector = build_mask_rcnn(len(THINGS) + 1, backbone="resnet18", image_size=PANOPTIC_SIZE)
    losses = train_mask_rcnn(
        detector,
        instance_train,
        THINGS,
        steps=DETECTOR_STEPS,
        batch_size=DETECTOR_BATCH,
        lr=1e-3,
        device=DEVICE,
    )
print(
    f"Mask R-CNN: {count_parameters(detector) / 1e6:.2f} M parameters, {len(losses)} steps, "
    f"loss {np.mean(losses[:5]):.2f} -> {np.mean(losses[-5:]):.2f}"
)

# %%
pipeline = PanopticPipeline(
    detector,
    trained["SegFormer"],
    thing_label_map={i + 1: c for i, c in enumerate(THINGS)},
    stuff_classes=STUFF,
    score_threshold=0.5,
    stuff_area_threshold=32,
)
print(pipeline)
test_set = ScenesDataset(length=8, image_size=PANOPTIC_SIZE, seed=3, return_instances=True)
images = torch.stack([test_set[i][0] for i in range(len(test_set))]).to(DEVICE)
truth = torch.stack([encode_panoptic(test_set[i][1], test_set[i][2]) for i in range(len(test_set))])
predicted = pipeline(images).cpu()
pq = metrics.panoptic_quality(predicted, truth, K, thing_classes=THINGS)
print(
    f"on {len(test_set)} new scenes: PQ {pq['pq']:.3f} (things {pq['pq_things']:.3f}, "
    f"stuff {pq['pq_stuff']:.3f}), SQ {pq['sq']:.3f}, RQ {pq['rq']:.3f}"
)
for c in range(K):
    s = pq["per_class"][c]
    print(f"  {CLASSES[c]:<10} PQ {s['pq']:.3f}  TP {s['tp']:2d}  FP {s['fp']:2d}  FN {s['fn']:2d}")

# %%
fig, axes = plt.subplots(3, 3, figsize=(7.5, 7.5))
for row, i in enumerate(range(3)):
    axes[row, 0].imshow(images[i].cpu().permute(1, 2, 0))
    axes[row, 1].imshow(viz.colorize_panoptic(truth[i]))
    axes[row, 2].imshow(viz.colorize_panoptic(predicted[i]))
for ax, title in zip(axes[0], ("image", "true panoptic map", "pipeline")):
    ax.set_title(title, fontsize=10)
for ax in axes.flat:
    ax.set_axis_off()
fig.legend(handles=LEGEND, loc="lower center", ncol=4, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.06, 1, 1))

# %% [markdown]
# Void pixels (cream) are thing pixels that no kept detection covered and stuff fragments below
# the area threshold; where the semantic model called a missed object's pixels background, they
# simply become background. After well under a minute of CPU training the detector finds the
# larger cars, people and trees and misses many of the small, thin people; PQ counts every one of
# those misses.
#
# ### Full mode: COCO-pretrained Mask R-CNN
#
# With a GPU (full mode) the same pipeline runs on real photographs: torchvision's Mask R-CNN
# with COCO weights for the things (80 classes; its labels are COCO category ids) and
# torchvision's DeepLabV3 for the background. Its weights, `COCO_WITH_VOC_LABELS_V1`, were
# trained on COCO images labelled with the 20 Pascal VOC classes plus background (21 outputs),
# not on Pascal VOC itself. torchvision has no pretrained COCO stuff model, so here
# "background" is the only stuff class; the other VOC classes are things, left to the
# detector. The two images are COCO val2017 photographs.

# %%
if not FAST:
    from pathlib import Path

    from torch.hub import download_url_to_file
    from torchvision.io import ImageReadMode, read_image
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, deeplabv3_resnet50

    from course_lib.utils import data_dir

    folder = Path(data_dir()) / "coco_samples"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for name in ("000000039769.jpg", "000000397133.jpg"):
        path = folder / name
        if not path.exists():  # download_url_to_file writes a temporary file, then moves it
            download_url_to_file(f"http://images.cocodataset.org/val2017/{name}", str(path))
        photo = read_image(str(path), ImageReadMode.RGB).float() / 255
        photos.append(F.interpolate(photo[None], size=(480, 640), mode="bilinear")[0])
    coco_weights = MaskRCNN_ResNet50_FPN_Weights.DEFAULT
    coco_detector = build_mask_rcnn(
        91, backbone="resnet50", weights=pretrained(coco_weights), image_size=480
    ).to(DEVICE)
    voc_weights = pretrained(DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1)  # VOC labels
    voc_model = (
        deeplabv3_resnet50(weights=voc_weights, num_classes=21, weights_backbone=None)
        .to(DEVICE)
        .eval()
    )
    mean = torch.tensor([0.485, 0.456, 0.406], device=DEVICE)[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device=DEVICE)[:, None, None]
    coco_pipeline = PanopticPipeline(
        coco_detector,
        voc_model,
        thing_label_map={i: i for i in range(1, 91)},
        stuff_classes=(0,),
        semantic_transform=lambda x: (x - mean) / std,
        score_threshold=0.6,
        stuff_area_threshold=1024,
    )
    photo_batch = torch.stack(photos).to(DEVICE)
    coco_panoptic = coco_pipeline(photo_batch).cpu()
    names = coco_weights.meta["categories"]
    fig, axes = plt.subplots(len(photos), 2, figsize=(9, 3.6 * len(photos)))
    for i in range(len(photos)):
        axes[i, 0].imshow(photos[i].permute(1, 2, 0))
        axes[i, 1].imshow(viz.colorize_panoptic(coco_panoptic[i]))
        found = sorted({names[int(c)] for c in (coco_panoptic[i] // 1000).unique() if 0 < c < 91})
        axes[i, 1].set_title(", ".join(found), fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
else:
    print("fast mode: the COCO example runs in full mode (GPU, downloads weights and two photos)")

# %% [markdown]
# ## What we measured, and where to go next
#
# - PQ and mIoU disagree in instructive ways: merging two cars costs nothing in mIoU and a false
#   negative in PQ; a 27-pixel person missed moves mIoU by a hair and PQ by a whole segment; a
#   stuff region below IoU 0.5 makes PQ drop off a cliff.
# - Our speed table (section 3) put numbers on the trade-off; in this run (CPU timings are rough,
#   their ratios travel better):

# %%
light = ("Fast-SCNN", "SegFormer")
heavy = ("FCN-8s", "DeepLabV3", "DeepLabV3+")
fewer = [results[h]["params"] / results[m]["params"] for h in heavy for m in light]
ranked = sorted(results, key=lambda label: results[label]["miou"])
print(
    f"{' and '.join(light)}: {min(fewer):.0f}-{max(fewer):.0f}x fewer parameters than the "
    f"ResNet-18 models, at {results[light[0]]['cpu'] / base['cpu']:.1f}x and "
    f"{results[light[1]]['cpu'] / base['cpu']:.1f}x U-Net's CPU speed"
)
print(
    f"after the short training: best mIoU {ranked[-1]} ({results[ranked[-1]]['miou']:.3f}), "
    f"lowest {ranked[0]} ({results[ranked[0]]['miou']:.3f})"
)
print(
    f"panoptic pipeline: PQ {pq['pq']:.3f} on {len(test_set)} new scenes "
    f"(stuff {pq['pq_stuff']:.3f}, things {pq['pq_things']:.3f})"
)

# %% [markdown]
# - A panoptic map can be assembled from two standard networks with a few lines of rules.
#
# Beyond this course: BiSeNet and its successors (more real-time designs), larger SegFormer and
# Swin-based backbones, and *unified* models such as Panoptic-DeepLab, MaskFormer and
# Mask2Former, which predict a set of masks with classes and so handle semantic, instance and
# panoptic segmentation with one architecture and no hand-written merge.
#
# **Exercise 08** (`exercises/ex08_panoptic.py`) asks you to write `merge_panoptic`, the matching
# of segments and PQ yourself. Check it with `python -m course_grader ex08`, or from this
# notebook:

# %%
from course_grader import check

check("ex08")
