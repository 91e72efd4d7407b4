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
# # 01 · Kinds of segmentation
#
# A picture of a street: two cars on the road and a person beside them. A computer-vision model
# can answer five different questions about it, each more detailed than the one before:
#
# | task | question | answer per image |
# |---|---|---|
# | classification | *what* is in the picture? | one score per class |
# | detection | what, and *where* (roughly)? | one box and class per object |
# | semantic segmentation | which class does *every pixel* belong to? | a class map |
# | instance segmentation | which *object* does every object pixel belong to? | one mask per object |
# | panoptic segmentation | class *and* object for every pixel | one map with both |
#
# This lesson draws all five on the same scene, writes down the tensor each one produces,
# turns a semantic mask into objects with connected components (and shows where that breaks),
# packs class and object into one panoptic id, and ends with a first look at why the two scores
# of the field, mIoU and PQ, can disagree.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import masks_to_boxes

from course_lib import metrics, viz
from course_lib.data import CellsDataset, ScenesDataset, classic_scene
from course_lib.instances import (
    decode_panoptic,
    encode_panoptic,
    instances_from_semantic,
    semantic_from_instances,
)
from course_lib.utils import course_mode, rehearsal, seed_everything

seed_everything(0)
FAST = course_mode() == "fast"
REHEARSAL = rehearsal()  # full mode's sizes on a few images (COURSE_REHEARSAL=1, tools/rehearse.py)
plt.rcParams["figure.dpi"] = 80 if FAST else 100
SIZE = 160 if FAST else 320
CLASSES = ScenesDataset.CLASSES
PALETTE = viz.class_palette(CLASSES)  # colours that match the classes: sky blue, road grey, ...
print("course mode:", course_mode())
print("classes:", dict(enumerate(CLASSES)))


def show_row(pictures, titles, size=2.8):
    """A row of pictures with titles and no axes."""
    fig, axes = plt.subplots(1, len(pictures), figsize=(size * len(pictures), size))
    for ax, picture, title in zip(np.atleast_1d(axes), pictures, titles):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    return fig, axes


# %% [markdown]
# ## 1. The scene
#
# The course draws its own street scenes (`course_lib.data.ScenesDataset`): no download, any
# size, and the same picture on every machine. Besides the image, each scene comes with its
# ground truth: a **semantic mask** (a class per pixel) and an **instance map** (an object id
# per pixel, 0 where there is no object). `classic_scene` draws the textbook example.

# %%
image, mask, instances = classic_scene(SIZE)
print("image    ", tuple(image.shape), image.dtype)
print("mask     ", tuple(mask.shape), mask.dtype, "classes present:", mask.unique().tolist())
print("instances", tuple(instances.shape), instances.dtype, "objects:", int(instances.max()))
fig, _ = show_row([image.permute(1, 2, 0)], ["a street scene"])

# %% [markdown]
# The classes split into two kinds. **Things** are countable objects: cars, people, trees.
# **Stuff** is amorphous and uncountable: sky, road, the grass of the background. Asking
# "how many skies?" makes no sense, which is why stuff never gets instance ids.

# %%
print("things:", [CLASSES[c] for c in ScenesDataset.thing_classes])
print("stuff: ", [CLASSES[c] for c in ScenesDataset.stuff_classes])

# %% [markdown]
# ## 2. Classification: what is in the picture?
#
# A classifier answers with one score per class, a tensor `(N, K)` for a batch of N images and
# K classes. With several objects per image the natural target is *multi-label*: a 1 for every
# class present. It says there are cars, but not how many or where.

# %%
# NBVAL_CHECK_OUTPUT
present = torch.zeros(len(CLASSES))
present[mask.unique()] = 1.0  # (K,) multi-hot target of this image
print("classification target (K,):", present.tolist())
print("in words:", [CLASSES[k] for k in range(len(CLASSES)) if present[k]])

# %%
fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8), gridspec_kw={"width_ratios": [1, 1.2]})
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("the image", fontsize=10)
axes[0].set_axis_off()
axes[1].barh(range(len(CLASSES)), present.tolist(), color=PALETTE[: len(CLASSES)] / 255)
axes[1].set_yticks(range(len(CLASSES)), CLASSES)
axes[1].invert_yaxis()
axes[1].set_xlim(0, 1.1)
axes[1].set_title("classification: one number per class", fontsize=10)
fig.tight_layout()

# %% [markdown]
# ## 3. Detection: what and roughly where
#
# A detector answers with one box per object: `boxes (M, 4)` as (x1, y1, x2, y2), `labels (M,)`
# and `scores (M,)`. We read the true boxes off the instance map with
# `torchvision.ops.masks_to_boxes`. Boxes count the objects, but a box is a coarse shape:
# the two car boxes overlap, and each holds road pixels too.

# %%
# NBVAL_CHECK_OUTPUT
object_ids = torch.arange(1, int(instances.max()) + 1)
object_masks = instances[None] == object_ids[:, None, None]  # (M, H, W) bool, one mask per object
boxes = masks_to_boxes(object_masks)  # (M, 4)
labels = torch.stack([mask[m][0] for m in object_masks])  # (M,) the class of each object
print("boxes", tuple(boxes.shape), " labels", tuple(labels.shape))
for box, label in zip(boxes.tolist(), labels.tolist()):
    print(
        f"{CLASSES[label]:>7}: x {box[0]:5.0f} .. {box[2]:5.0f}   y {box[1]:5.0f} .. {box[3]:5.0f}"
    )

# %%
fig, axes = show_row([image.permute(1, 2, 0)], ["detection: one box per object"])
for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
    axes.add_patch(
        Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, edgecolor=PALETTE[label] / 255)
    )
    axes.text(
        x1,
        y1 - 2,
        CLASSES[label],
        color="white",
        fontsize=8,
        bbox={"facecolor": PALETTE[label] / 255, "pad": 1, "lw": 0},
    )

# %% [markdown]
# ## 4. Semantic segmentation: a class for every pixel
#
# A semantic segmentation model outputs **logits** `(N, K, H, W)`: K scores for every pixel.
# The prediction is their arg-max over the class axis, a mask `(N, H, W)` of class ids, the same
# form as the ground truth. Every pixel is labelled, stuff and things alike, but the two cars
# are now one "car" region: semantic segmentation does not separate objects of one class.

# %%
# NBVAL_CHECK_OUTPUT
perfect_logits = torch.nn.functional.one_hot(mask, len(CLASSES)).permute(2, 0, 1)[None].float()
prediction = perfect_logits.argmax(dim=1)  # (N, K, H, W) -> (N, H, W)
print("logits", tuple(perfect_logits.shape), "-> mask", tuple(prediction.shape))
print("pixels per class:", {CLASSES[c]: int((mask == c).sum()) for c in range(len(CLASSES))})

# %%
fig, axes = show_row(
    [viz.colorize(mask, PALETTE), viz.overlay(image, mask, alpha=0.6, palette=PALETTE)],
    ["semantic mask", "overlaid on the image"],
)
fig.legend(
    handles=viz.legend_handles(CLASSES, palette=PALETTE),
    loc="center right",
    fontsize=8,
    frameon=False,
)
fig.subplots_adjust(right=0.8)

# %% [markdown]
# ## 5. Instance segmentation: one mask per object
#
# An instance segmentation model (Mask R-CNN is the classic) answers like a detector with a mask
# instead of a box: `masks (M, H, W)`, `labels (M,)`, `scores (M,)`. Only things get instances;
# the sky and the road are not objects. Stored as one map, the instance ids are `(H, W)`: 0 for
# "no object", then 1 … M. The colours below are per object, not per class.

# %%
# NBVAL_CHECK_OUTPUT
print("masks", tuple(object_masks.shape), " labels", tuple(labels.shape))
print("pixels per object:", {k: int(m.sum()) for k, m in zip(object_ids.tolist(), object_masks)})
print("object classes:", {k: CLASSES[c] for k, c in zip(object_ids.tolist(), labels.tolist())})

# %%
fig, _ = show_row(
    [viz.colorize_instances(instances), object_masks[1], object_masks[2]],
    ["instance map", "mask of object 2", "mask of object 3"],
)

# %% [markdown]
# The instance map and a class table (the class of each object id) are all it takes to
# recover the semantic mask of the things: a table look-up per pixel. Entry 0 of the table is
# the class of the pixels that belong to no object.

# %%
# NBVAL_CHECK_OUTPUT
class_table = [0] + labels.tolist()  # class_table[k] = class of object k
things_only = semantic_from_instances(instances, class_table)
is_thing = instances > 0
print("class table:", class_table)
print(
    "agrees with the semantic mask on every thing pixel:",
    bool((things_only[is_thing] == mask[is_thing]).all()),
)

# %% [markdown]
# ## 6. Panoptic segmentation: class and object for every pixel
#
# Panoptic segmentation (Kirillov et al., 2019) unifies the two: every pixel gets a class, and
# every thing pixel also gets an object id. The usual storage is **one integer per pixel**:
#
# `panoptic = class_id * label_divisor + instance_id`, with `label_divisor = 1000`.
#
# So 3002 reads "class 3 (car), object 2", and a stuff pixel of the road is 2000 (object 0).
# The divisor must exceed the number of objects per image, or two ids would collide.

# %%
# NBVAL_CHECK_OUTPUT
panoptic = encode_panoptic(mask, instances, label_divisor=1000)  # (H, W) int64
print("panoptic", tuple(panoptic.shape), panoptic.dtype)
print("segment ids:", panoptic.unique().tolist())
back_mask, back_instances = decode_panoptic(panoptic, label_divisor=1000)
print(
    "decodes back exactly:", bool((back_mask == mask).all() and (back_instances == instances).all())
)

# %%
fig, _ = show_row(
    [
        viz.colorize(mask, PALETTE),
        viz.colorize_instances(instances),
        viz.colorize_panoptic(panoptic, palette=PALETTE),
    ],
    ["semantic", "instance", "panoptic"],
)

# %% [markdown]
# ### The output tensors, side by side
#
# For a batch of N images with K classes, M objects and size H × W:

# %%
# NBVAL_CHECK_OUTPUT
N, K, H, W, M = 1, len(CLASSES), SIZE, SIZE, int(instances.max())
rows = [
    ("classification", f"scores ({N}, {K})"),
    ("detection", f"boxes ({M}, 4), labels ({M},), scores ({M},)   per image"),
    ("semantic", f"logits ({N}, {K}, {H}, {W}) -> mask ({N}, {H}, {W})"),
    ("instance", f"masks ({M}, {H}, {W}), labels ({M},), scores ({M},)   per image"),
    ("panoptic", f"ids ({N}, {H}, {W}) = class * 1000 + instance"),
]
for task, shape in rows:
    print(f"{task:>15}: {shape}")

# %% [markdown]
# ## 7. From a semantic mask to objects: connected components
#
# Can we get the instances for free from a semantic mask? The obvious idea: every **connected
# region** of one thing class is one object. A flood fill finds the regions: start at an
# unlabelled pixel, give it a new id, and spread the id to its neighbours of the same class, and
# theirs, until the region is exhausted. *Neighbours* can mean the 4 pixels that share an edge or
# the 8 that share an edge or a corner: a diagonal line is one region with 8-connectivity and
# many with 4-connectivity.

# %%
# NBVAL_CHECK_OUTPUT
diagonal = torch.eye(5, dtype=torch.int64) * 3  # a thin diagonal "car"
for connectivity in (4, 8):
    regions = instances_from_semantic(diagonal, classes=[3], connectivity=connectivity)
    print(f"{connectivity}-connectivity: {int(regions.max())} region(s)")

# %% [markdown]
# On our scene the idea half works. The tree and the person come back as objects, but **the two
# cars touch**, so they form one connected region and come back as one object.

# %%
# NBVAL_CHECK_OUTPUT
components = instances_from_semantic(mask, classes=ScenesDataset.thing_classes)
for class_id in ScenesDataset.thing_classes:
    true_count = instances[mask == class_id].unique().numel()
    found = components[mask == class_id].unique().numel()
    print(f"{CLASSES[class_id]:>7}: {true_count} object(s), {found} connected region(s)")

# %%
fig, _ = show_row(
    [viz.colorize_instances(instances), viz.colorize_instances(components)],
    ["true objects", "connected components"],
)

# %% [markdown]
# The opposite failure exists too: when a nearer object hides the middle of a farther one, the
# visible part falls into two pieces and connected components count two objects. Over a set of
# random scenes we count both mistakes.

# %%
# NBVAL_CHECK_OUTPUT
scenes = ScenesDataset(
    length=48 if FAST or REHEARSAL else 400,
    image_size=96 if FAST else 256,
    seed=1,
    return_instances=True,
)
merged = split = exact = 0
for i in range(len(scenes)):
    _, scene_mask, scene_instances = scenes[i]
    found = instances_from_semantic(scene_mask, classes=ScenesDataset.thing_classes)
    true_count, found_count = int(scene_instances.max()), int(found.max())
    exact += true_count == found_count
    merged += found_count < true_count
    split += found_count > true_count
print(
    f"{len(scenes)} scenes: object count right in {exact}, too few (merged) in {merged}, "
    f"too many (split) in {split}"
)

# %% [markdown]
# In microscopy the problem is the rule rather than the exception: nuclei crowd together and
# touch. `CellsDataset` draws fluorescence-like nuclei with their instance map.

# %%
# NBVAL_CHECK_OUTPUT
cells = CellsDataset(length=4, image_size=128 if FAST else 256, seed=0, return_instances=True)
cell_image, cell_mask, cell_instances = cells[0]
cell_components = instances_from_semantic(cell_mask, classes=[1])
print(f"foreground: {cell_mask.float().mean().item():.1%} of the pixels")
print(f"nuclei: {int(cell_instances.max())}, connected regions: {int(cell_components.max())}")

# %%
fig, _ = show_row(
    [
        cell_image[0],
        viz.colorize_instances(cell_instances, boundaries=True),
        viz.colorize_instances(cell_components, boundaries=True),
    ],
    ["nuclei", "true nuclei", "connected components"],
)
fig.axes[0].images[0].set_cmap("gray")

# %% [markdown]
# This is why instance segmentation needs models of its own: Mask R-CNN predicts one mask per
# detected object, and U-Net-based nucleus segmenters also predict the *border* between touching
# cells (or a distance map) so that a post-processing step can cut the blobs apart.

# %% [markdown]
# ## 8. mIoU and PQ measure different things
#
# The standard score of semantic segmentation is the **mean intersection over union**:
# per class, IoU = |prediction ∩ truth| / |prediction ∪ truth| over all pixels, averaged over the
# classes. It never asks which object a pixel belongs to.
#
# The score of panoptic segmentation is **panoptic quality**. Per class, predicted and true
# segments are matched when their IoU exceeds 0.5; matched pairs are true positives (TP),
# unmatched predictions false positives (FP), unmatched truths false negatives (FN), and
#
# PQ = (sum of IoU over matches) / (TP + FP/2 + FN/2) = SQ × RQ,
#
# with the segmentation quality SQ (mean IoU of the matches) and the recognition quality RQ
# (an F1 score of the matching). We score three imperfect predictions of the classic scene with
# `course_lib.metrics`.


# %%
def scores(pred_mask, pred_instances):
    """mIoU of the semantic part and PQ / SQ / RQ of the panoptic map of a prediction."""
    cm = metrics.confusion_matrix(pred_mask, mask, num_classes=len(CLASSES))
    pq = metrics.panoptic_quality(
        encode_panoptic(pred_mask, pred_instances), panoptic, num_classes=len(CLASSES)
    )
    return metrics.mean_iou(cm), pq


# A: every pixel has the right class, objects from connected components (the cars merge).
pred_a = (mask, components)


# B: the right objects, but every outline three pixels off (a blurry model).
def shifted(x, step=3):
    """`x` moved `step` pixels down and right; the first rows and columns keep their values."""
    out = x.clone()
    out[step:, step:] = x[:-step, :-step]
    return out


pred_b = (shifted(mask), shifted(instances))
# C: perfect, plus three specks of "person" in the sky (a jittery model).
mask_c, instances_c = mask.clone(), instances.clone()
for j, (y, x) in enumerate([(0.2, 0.25), (0.12, 0.6), (0.25, 0.88)]):
    y, x = int(y * SIZE), int(x * SIZE)
    mask_c[y : y + 3, x : x + 3] = ScenesDataset.CLASSES.index("person")
    instances_c[y : y + 3, x : x + 3] = int(instances.max()) + 1 + j
pred_c = (mask_c, instances_c)

# %%
fig, _ = show_row(
    [viz.colorize_panoptic(encode_panoptic(*p), palette=PALETTE) for p in (pred_a, pred_b, pred_c)],
    ["A: cars merged", "B: outlines 3 px off", "C: three false specks"],
)

# %%
# NBVAL_CHECK_OUTPUT
car, person = CLASSES.index("car"), CLASSES.index("person")
print(f"{'prediction':<22}{'mIoU':>6}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'PQ car':>8}{'PQ person':>10}")
for name, pred in (
    ("A: cars merged", pred_a),
    ("B: outlines 3 px off", pred_b),
    ("C: three false specks", pred_c),
):
    miou, pq = scores(*pred)
    print(
        f"{name:<22}{miou:>6.3f}{pq['pq']:>7.3f}{pq['sq']:>7.3f}{pq['rq']:>7.3f}"
        f"{pq['per_class'][car]['pq']:>8.3f}{pq['per_class'][person]['pq']:>10.3f}"
    )

# %% [markdown]
# Read the table row by row:
#
# - **A** is perfect for mIoU (1.000): every pixel has the right class. PQ sees one car segment
#   where there are two: one car is matched, the other is a false negative, and PQ of the car
#   class falls to well under a half.
# - **B** has every object right (RQ = 1.000), but the outlines are off, and both scores drop:
#   mIoU through the pixels, PQ through the IoU of the matches (SQ).
# - **C** barely moves mIoU (a few dozen pixels out of tens of thousands), but each speck is a
#   false positive "person": RQ and PQ of the person class drop sharply.
#
# mIoU weighs pixels, so big regions dominate and counting mistakes are invisible; PQ weighs
# objects, so a tiny false object costs as much as a big one. Which one matters depends on the
# application: counting cells or pedestrians calls for PQ, measuring areas for IoU.
# The same holds on the nuclei: a perfect mask with connected-component instances.

# %%
# NBVAL_CHECK_OUTPUT
cell_cm = metrics.confusion_matrix(cell_mask, cell_mask, num_classes=2)
cell_pq = metrics.panoptic_quality(
    encode_panoptic(cell_mask, cell_components),
    encode_panoptic(cell_mask, cell_instances),
    num_classes=2,
)
nuclei = cell_pq["per_class"][1]
print(
    f"nuclei: mIoU {metrics.mean_iou(cell_cm):.3f}   PQ {nuclei['pq']:.3f}   "
    f"SQ {nuclei['sq']:.3f}   RQ {nuclei['rq']:.3f}   TP {nuclei['tp']}  FP {nuclei['fp']}  FN {nuclei['fn']}"
)

# %% [markdown]
# ## Summary
#
# - Classification gives `(N, K)` scores, detection boxes `(M, 4)`, semantic segmentation
#   logits `(N, K, H, W)` and masks `(N, H, W)`, instance segmentation masks `(M, H, W)`, and
#   panoptic segmentation one map `(N, H, W)` of `class * 1000 + instance` ids.
# - Things are countable and get instance ids; stuff is not and keeps instance id 0.
# - Connected components turn a semantic mask into objects only while objects do not touch
#   (and are not cut in two by an occluder).
# - mIoU scores pixels, PQ scores objects: a prediction can be perfect for one and poor for the
#   other.
#
# ## Exercise 01
#
# Open `exercises/ex01_segmentation_types.py` and write `semantic_from_instances`, your own
# flood-fill `connected_components`, `instances_from_semantic`, and the panoptic
# `encode_panoptic` / `decode_panoptic`. Check your work with
#
#     python -m course_grader ex01
#
# which runs the graded tests and prints your points per test. The same check from this notebook:

# %%
from course_grader import check

check("ex01")
