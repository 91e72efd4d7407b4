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
# # 06 · Data and augmentation
#
# A segmentation model learns from pairs: an image and a mask that gives every pixel a class.
# This lesson builds the path from files on disk to the batches a model trains on:
#
# 1. a `Dataset` class, written here line by line, then `course_lib.data.SegmentationFolder`,
#    which also checks your folder and reads the usual mask formats;
# 2. **joint** transforms: every geometric change is applied to the image *and* the mask with the
#    same random parameters, the mask with nearest-neighbour interpolation;
# 3. two classic bugs, measured: a mask resized bilinearly, and image and mask transformed apart;
# 4. the course pipelines (`course_lib.transforms`), batches, a train/validation split,
#    augmentation on and off measured with few training images, and the class balance of a
#    dataset;
# 5. the real datasets used in full mode.
#
# The contract throughout: image `(C, H, W)` float32, mask `(H, W)` int64, batches
# `(N, C, H, W)` and `(N, H, W)`, and the label 255 (`ignore_index`) for pixels that no loss or
# metric should count.

# %%
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from course_lib.data import CellsDataset, ScenesDataset
from course_lib.utils import course_mode, get_device, rehearsal, seed_everything, seed_verdict
from course_lib.viz import PALETTE, class_palette, colorize, overlay, show_grid

seed_everything(0)
plt.rcParams["figure.dpi"] = 80
FAST = course_mode() == "fast"
REHEARSAL = rehearsal()  # full mode's sizes on a few images (COURSE_REHEARSAL=1, tools/rehearse.py)
SIZE = 128
SCENE_COLORS = class_palette(ScenesDataset.CLASSES)  # sky blue, road grey, tree green, ...
print("course mode:", course_mode())

# %% [markdown]
# ## 1. A folder of images and masks
#
# Real datasets arrive as files. To have one without a download, we write 12 synthetic street
# scenes into a temporary folder in the most common layout: `images/NAME.png` next to
# `masks/NAME.png`. The masks are *palette* PNGs, the format of Pascal VOC: each pixel stores a
# class id (0 … 5 here) and the file carries a colour table only so that image viewers show
# colours.

# %%
workdir = Path(tempfile.mkdtemp(prefix="course06-"))
scenes = ScenesDataset(length=12, image_size=SIZE, seed=0)
(workdir / "scenes" / "images").mkdir(parents=True)
(workdir / "scenes" / "masks").mkdir(parents=True)
for i in range(len(scenes)):
    image, mask = scenes[i]
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
    Image.fromarray(rgb).save(workdir / "scenes" / "images" / f"scene_{i:02d}.png")
    pil_mask = Image.fromarray(mask.numpy().astype(np.uint8), mode="L").convert("P")
    pil_mask.putpalette(PALETTE.flatten().tolist())
    pil_mask.save(workdir / "scenes" / "masks" / f"scene_{i:02d}.png")

# %%
# NBVAL_CHECK_OUTPUT
print("classes:", ScenesDataset.CLASSES)
print("images:", sorted(p.name for p in (workdir / "scenes" / "images").iterdir())[:4], "...")
print("masks: ", sorted(p.name for p in (workdir / "scenes" / "masks").iterdir())[:4], "...")
print("mask file mode:", Image.open(workdir / "scenes" / "masks" / "scene_00.png").mode)

# %% [markdown]
# ### A dataset class of our own
#
# A PyTorch `Dataset` needs two methods: `__len__` and `__getitem__(i)`. Ours pairs the files by
# name, reads the image as floats in [0, 1] and the mask as integer class ids, and hands both to
# an optional `transform` *in one call*, so that the transform can move them together.

# %%
from torch.utils.data import Dataset


class PairedFolder(Dataset):
    """images/NAME.png and masks/NAME.png -> (image (3, H, W) float32, mask (H, W) int64)."""

    def __init__(self, image_dir, mask_dir, transform=None):
        self.images = sorted(Path(image_dir).glob("*.png"))
        self.masks = [Path(mask_dir) / path.name for path in self.images]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        rgb = Image.open(self.images[index]).convert("RGB")
        image = np.asarray(rgb, dtype=np.float32) / 255  # (H, W, 3) in [0, 1]
        mask = np.asarray(Image.open(self.masks[index]), dtype=np.int64)  # palette index = class id
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            return out["image"], out["mask"]
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask)


# %%
# NBVAL_CHECK_OUTPUT
ours = PairedFolder(workdir / "scenes" / "images", workdir / "scenes" / "masks")
image, mask = ours[3]
print("samples:", len(ours))
print("image:", tuple(image.shape), image.dtype, f"range [{image.min():.2f}, {image.max():.2f}]")
print("mask: ", tuple(mask.shape), mask.dtype, "labels", mask.unique().tolist())
print("mask identical to the generated one:", torch.equal(mask, scenes[3][1]))

# %% [markdown]
# Twenty lines, and they work, for *this* folder. Real folders are less tidy: JPEG photos next to
# PNG masks, a mask that is missing or was saved at another size, colour masks, masks of 0 and 255
# (the usual medical format), a file cut short by an interrupted copy. Our class would pair the
# wrong files or crash in the middle of an epoch with a message about tensors, not about the file.
#
# ## 2. `SegmentationFolder`: the same idea, plus checks
#
# `course_lib.data.SegmentationFolder` pairs by file stem (any image extension, PNG masks), reads
# index, palette, colour (with a `color_to_class` table) and 0/255 binary masks, and checks every
# pair when it is built. It returns the same `(image, mask)` pairs as our class.

# %%
# NBVAL_CHECK_OUTPUT
from course_lib.data import SegmentationFolder

folder = SegmentationFolder(workdir / "scenes" / "images", workdir / "scenes" / "masks")
print(
    "pairs:",
    len(folder),
    "| mask format:",
    folder.mask_format,
    "| num_classes:",
    folder.num_classes,
)
print("same sample as our class:", all(torch.equal(a, b) for a, b in zip(folder[3], ours[3])))

# %% [markdown]
# Now we damage a copy of the folder the way real folders get damaged and ask for the list of
# problems (`strict=False`) instead of an error at the first one (`strict=True`, the default).

# %%
# NBVAL_CHECK_OUTPUT
broken = workdir / "broken"
shutil.copytree(workdir / "scenes", broken)
(broken / "masks" / "scene_01.png").unlink()  # an image without its mask
label_nine = np.full((SIZE, SIZE), 9, np.uint8)  # a class that does not exist
Image.fromarray(label_nine).save(broken / "masks" / "scene_02.png")
Image.fromarray(np.zeros((64, 64), np.uint8)).save(broken / "masks" / "scene_03.png")  # wrong size
data = (broken / "images" / "scene_04.png").read_bytes()
(broken / "images" / "scene_04.png").write_bytes(data[: len(data) // 3])  # a truncated file

checked = SegmentationFolder(broken / "images", broken / "masks", num_classes=6, strict=False)
print("usable pairs:", len(checked))
for problem in checked.problems:
    print("-", problem.replace(str(broken) + "/", "").split(" (")[0])

# %% [markdown]
# Medical masks are usually stored as 0 (background) and 255 (lesion, polyp, nucleus).
# `SegmentationFolder` recognises them and returns labels 0 and 1, with no code from you.

# %%
# NBVAL_CHECK_OUTPUT
cells = CellsDataset(length=6, image_size=SIZE, seed=0)
for sub in ("images", "masks"):
    (workdir / "cells" / sub).mkdir(parents=True)
for i in range(len(cells)):
    image, mask = cells[i]
    gray = (image[0].numpy() * 255).round().astype(np.uint8)  # (H, W)
    Image.fromarray(gray).save(workdir / "cells" / "images" / f"c{i}.png")
    zero_255 = (mask.numpy() * 255).astype(np.uint8)  # nucleus stored as 255
    Image.fromarray(zero_255).save(workdir / "cells" / "masks" / f"c{i}.png")

cell_folder = SegmentationFolder(
    workdir / "cells" / "images", workdir / "cells" / "masks", image_mode="L"
)
image, mask = cell_folder[0]
stored = np.asarray(Image.open(workdir / "cells" / "masks" / "c0.png"))
print("stored values:", np.unique(stored).tolist())
print(
    "mask format:",
    cell_folder.mask_format,
    "| labels returned:",
    mask.unique().tolist(),
    "| image:",
    tuple(image.shape),
)

# %% [markdown]
# ## 3. Why a mask is never resized bilinearly
#
# Bilinear interpolation averages neighbouring values. For an image that is what we want; for a
# mask the values are *names*: averaging "sky" (1) and "car" (3) gives 2, "road", a class that was
# not there. Let us shrink a scene mask to 77 × 77 both ways and count.

# %%
import torch.nn.functional as F

scene_image, scene_mask = scenes[5]
as_float = scene_mask[None, None].float()  # (1, 1, H, W): interpolate wants a batch and channels
nearest = F.interpolate(as_float, size=(77, 77), mode="nearest")[0, 0].long()
bilinear = F.interpolate(as_float, size=(77, 77), mode="bilinear", align_corners=False)
bilinear = bilinear[0, 0].round().long()  # rounded back to integer "labels"

# %%
# NBVAL_CHECK_OUTPUT
changed = nearest != bilinear
print(f"pixels labelled differently: {changed.float().mean().item():.1%}")
# a label is invented when it is none of the 2x2 source labels around the output pixel
ys = ((torch.arange(77) + 0.5) * SIZE / 77 - 0.5).clamp(0, SIZE - 1)
y0 = ys.floor().long()
y1 = (y0 + 1).clamp(max=SIZE - 1)
corners = torch.stack([scene_mask[a][:, b] for a in (y0, y1) for b in (y0, y1)])  # (4, 77, 77)
invented = (corners != bilinear).all(0)
print(f"pixels whose label none of the 4 source pixels has: {int(invented.sum())}")
print("labels of the invented pixels:", sorted(set(bilinear[invented].tolist())))

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
axes[0].imshow(colorize(nearest, SCENE_COLORS), interpolation="nearest")
axes[0].set_title("nearest: labels kept")
axes[1].imshow(colorize(bilinear, SCENE_COLORS), interpolation="nearest")
axes[1].set_title("bilinear: labels invented")
axes[2].imshow(invented, cmap="Reds", interpolation="nearest")
axes[2].set_title(f"invented ({int(invented.sum())} px)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The ignore label makes it worse. Next to the 255 band that Pascal VOC draws along object outlines,
# bilinear averaging produces values such as 42 or 129: neither a class nor 255. Cross-entropy with
# 6 classes then stops with an index error.

# %%
# NBVAL_CHECK_OUTPUT
outlined = scene_mask.clone()
outlined[:, 60:62] = 255  # a two-pixel ignore band, like the outlines of VOC masks
blended = (
    F.interpolate(
        outlined[None, None].float(), size=(77, 77), mode="bilinear", align_corners=False
    )[0, 0]
    .round()
    .long()
)
bad = blended[(blended >= 6) & (blended != 255)]
print("labels >= num_classes that are not 255:", sorted(set(bad.tolist()))[:6], "...")
try:
    F.cross_entropy(torch.zeros(1, 6, 77, 77), blended[None], ignore_index=255)
except (IndexError, RuntimeError) as error:
    print("cross_entropy:", type(error).__name__)

# %% [markdown]
# ## 4. Transform image and mask together
#
# The second classic bug: random transforms called separately on the image and on the mask. Each
# call draws its own angle, so the mask no longer lies on the objects. Here with torchvision's
# `RandomRotation`: bilinear for the image, nearest and fill 255 for the mask, all correct except
# that the two calls are independent.

# %%
from torchvision.transforms import InterpolationMode, RandomRotation

rotate_image = RandomRotation(25, interpolation=InterpolationMode.BILINEAR)
rotate_mask = RandomRotation(25, interpolation=InterpolationMode.NEAREST, fill=255)
torch.manual_seed(1)
image_alone = rotate_image(scene_image)  # one random angle ...
mask_alone = rotate_mask(scene_mask[None])[0]  # ... and another one

import albumentations as A
import cv2

joint = A.Compose(
    [
        A.Rotate(
            limit=25,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=255,
            p=1.0,
        )
    ],
    seed=1,
)
out = joint(image=scene_image.permute(1, 2, 0).numpy(), mask=scene_mask.numpy())
joint_image = torch.from_numpy(out["image"]).permute(2, 0, 1)  # (3, H, W)
joint_mask = torch.from_numpy(out["mask"])  # (H, W)

# %% [markdown]
# How wrong is the separate version? Re-seeding and drawing again gives the two angles that were
# used; the mask rotated by the *image's* angle is the truth to compare with.

# %%
# NBVAL_CHECK_OUTPUT
from torchvision.transforms.functional import rotate as rotate_by

torch.manual_seed(1)
image_angle = RandomRotation.get_params([-25.0, 25.0])
mask_angle = RandomRotation.get_params([-25.0, 25.0])
print(f"image rotated by {image_angle:.1f} degrees, mask by {mask_angle:.1f} degrees")
true_mask = rotate_by(
    scene_mask[None], image_angle, interpolation=InterpolationMode.NEAREST, fill=255
)[0]
valid = (true_mask != 255) & (mask_alone != 255)
wrong = (true_mask != mask_alone)[valid].float().mean().item()
print(f"separate calls: {wrong:.1%} of the pixels carry another object's label")

# %%
fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
axes[0].imshow(
    overlay(
        image_alone, torch.where(mask_alone == 255, 0, mask_alone), alpha=0.6, palette=SCENE_COLORS
    )
)
axes[0].set_title("separate calls")
axes[1].imshow(
    overlay(
        joint_image, torch.where(joint_mask == 255, 0, joint_mask), alpha=0.6, palette=SCENE_COLORS
    )
)
axes[1].set_title("one joint call")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# With albumentations, one call `transform(image=..., mask=...)` draws the random parameters once
# and applies them to both. Geometric transforms take `interpolation` for the image and
# `mask_interpolation` for the mask (nearest by default); pixels brought in from outside the image
# are filled with `fill` in the image and `fill_mask` in the mask: we use 255 so that losses and
# metrics skip them. Colour transforms (brightness, contrast, hue) touch the image only.
#
# ### Old calls that tutorials still show
#
# albumentations 2 renamed or removed three things that many tutorials and older code still use:
#
# | old | current |
# |---|---|
# | `ShiftScaleRotate(shift_limit=a, scale_limit=b, rotate_limit=c)` | `Affine(translate_percent=(-a, a), scale=(1 - b, 1 + b), rotate=(-c, c))` |
# | `value=`, `mask_value=` (border fill) | `fill=`, `fill_mask=` |
# | `always_apply=True` | `p=1.0` |
#
# The old calls do not fail. Depending on the version they warn, or their arguments are ignored
# with a warning, and the pipeline runs with the defaults. We build each old call and its
# replacement, print the warnings, and measure what the transform did to the mask.

# %%
import warnings


def build(make):
    """Construct a transform, collecting the warnings its constructor raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transform = make()
    return transform, sorted({str(w.message) for w in caught})


def over_calls(transform, measure, calls):
    """Mean of measure(output mask) over `calls` calls of a seeded pipeline on the scene."""
    pipeline = A.Compose([transform], seed=0)
    image, mask = scene_image.permute(1, 2, 0).numpy(), scene_mask.numpy()
    return np.mean([measure(pipeline(image=image, mask=mask)["mask"]) for _ in range(calls)])


def ignored(mask):
    return (mask == 255).mean()  # share of the mask marked "ignore"


def flipped(mask):
    return np.array_equal(mask, scene_mask.numpy()[:, ::-1])


corner = dict(border_mode=cv2.BORDER_CONSTANT, p=1.0)
pairs = [
    (
        "ShiftScaleRotate(...)",
        lambda: A.ShiftScaleRotate(
            shift_limit=0.1, scale_limit=0.2, rotate_limit=30, fill_mask=255, **corner
        ),
        "Affine(...)",
        lambda: A.Affine(
            translate_percent=(-0.1, 0.1),
            scale=(0.8, 1.2),
            rotate=(-30, 30),
            fill_mask=255,
            **corner,
        ),
        ignored,
        "mask pixels marked 255",
        100,
    ),
    (
        "Rotate(value=0, mask_value=255)",
        lambda: A.Rotate(limit=30, value=0, mask_value=255, **corner),
        "Rotate(fill=0, fill_mask=255)",
        lambda: A.Rotate(limit=30, fill=0, fill_mask=255, **corner),
        ignored,
        "mask pixels marked 255",
        100,
    ),
    (
        "HorizontalFlip(always_apply=True)",
        lambda: A.HorizontalFlip(always_apply=True),
        "HorizontalFlip(p=1.0)",
        lambda: A.HorizontalFlip(p=1.0),
        flipped,
        "calls that flipped",
        1000,
    ),
]
print("albumentations", A.__version__)
for old_name, old, new_name, new, measure, what, calls in pairs:
    for name, make in ((old_name, old), (new_name, new)):
        transform, caught = build(make)
        print(f"{name:<34} {what} ({calls} calls): {over_calls(transform, measure, calls):.2f}")
        for message in caught:
            print(f"{'':<5}warning: {message}")

# %% [markdown]
# `ShiftScaleRotate` still works and only asks to be replaced by `Affine`. The other two are
# silent failures: with `value`/`mask_value` ignored, the rotated corners get the default fill 0,
# which in the mask is a real class (background), so the loss trains on pixels that were never in
# the image. With `always_apply` ignored, an "always" flip happens only with the default
# probability `p=0.5`. Read the warnings of a new pipeline once: they are the only sign.
#
# ## 5. The course pipelines
#
# `course_lib.transforms.train_transforms(size)` chains: resize the shorter side and crop a
# random `size` window; a random affine map (zoom, rotation, shift); flips; optionally elastic or
# grid distortion; colour jitter; normalisation with ImageNet statistics; conversion to tensors
# with the course dtypes. `val_transforms` only resizes (optionally), normalises and converts.

# %%
from course_lib.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    train_transforms,
    val_transforms,
)

train_tf = train_transforms(SIZE, distortion=0.3, seed=0)
print([type(step).__name__ for step in train_tf.pipeline.transforms])

# %% [markdown]
# Four draws of the same scene. Black image corners come from outside the picture; the mask marks
# them 255 (drawn in pale beige), which the loss ignores.

# %%
augmented_scenes = ScenesDataset(length=12, image_size=SIZE, seed=0, transform=train_tf)
draws = [augmented_scenes[5] for _ in range(4)]
shown = torch.stack([denormalize(img, IMAGENET_MEAN, IMAGENET_STD) for img, _ in draws])
fig = show_grid(
    shown, torch.stack([m for _, m in draws]), class_names=ScenesDataset.CLASSES, cell_size=1.9
)
plt.show()

# %% [markdown]
# The check the tests of `course_lib.transforms` make, here on 40 augmented samples: every mask
# holds only valid labels or 255, and the dtypes are the course's.

# %%
# NBVAL_CHECK_OUTPUT
labels_seen = set()
for i in range(40):
    img, m = augmented_scenes[i % 12]
    labels_seen |= set(m.unique().tolist())
print("image:", tuple(img.shape), img.dtype, "| mask:", tuple(m.shape), m.dtype)
print("labels seen:", sorted(labels_seen))
print("all valid:", labels_seen <= set(range(ScenesDataset.num_classes)) | {255})

# %% [markdown]
# ### Why the pipeline converts the mask at the end
#
# The course's masks are int64, the dtype `cross_entropy` wants for class indices. albumentations
# hands back a different integer dtype for the mask, and the first loss call fails. Here is the
# failure once, with a bare albumentations pipeline, and the same mask through `val_transforms`,
# which converts its output with `.long()`:

# %%
import torch.nn.functional as F

bare = A.Compose([A.HorizontalFlip(p=1.0)])
bare_mask = torch.from_numpy(
    bare(image=scene_image.permute(1, 2, 0).numpy(), mask=scene_mask.numpy())["mask"]
)
print("mask in:", scene_mask.dtype, "| out of albumentations:", bare_mask.dtype)
logits = torch.zeros(1, ScenesDataset.num_classes, *bare_mask.shape)
try:
    F.cross_entropy(logits, bare_mask[None])
except RuntimeError as error:
    print("cross_entropy:", str(error).splitlines()[0])
course_mask = val_transforms()(image=scene_image.permute(1, 2, 0).numpy(), mask=scene_mask.numpy())[
    "mask"
]
print(
    "out of val_transforms:",
    course_mask.dtype,
    f"| cross_entropy {F.cross_entropy(logits, course_mask[None]).item():.3f}",
)

# %% [markdown]
# ### Grayscale images and dataset statistics
#
# ImageNet's mean and standard deviation describe colour photographs. For grayscale microscopy we
# measure our own with `dataset_stats` and build a one-channel pipeline; elastic and grid
# distortions imitate how soft tissue deforms, so we turn them on.

# %%
# NBVAL_CHECK_OUTPUT
from course_lib.transforms import dataset_stats

cell_mean, cell_std = dataset_stats(CellsDataset(length=32, image_size=SIZE, seed=0))
print("cells: mean", cell_mean, "std", cell_std)
cell_tf = train_transforms(SIZE, mean=cell_mean, std=cell_std, distortion=1.0, vflip=0.5, seed=0)
augmented_cells = CellsDataset(length=8, image_size=SIZE, seed=0, transform=cell_tf)
img, m = augmented_cells[0]
print("image:", tuple(img.shape), f"mean {img.mean():.2f} (about 0 after normalising)")
print("labels:", m.unique().tolist())

# %%
draws = [augmented_cells[2] for _ in range(3)]
shown = torch.stack([denormalize(img, cell_mean, cell_std).expand(3, -1, -1) for img, _ in draws])
fig = show_grid(
    shown, torch.stack([m for _, m in draws]), class_names=CellsDataset.CLASSES, cell_size=1.9
)
plt.show()

# %% [markdown]
# ## 6. From samples to batches, and a validation split
#
# A `DataLoader` stacks samples into batches. The validation part must not be augmented, but a
# `Subset` shares its parent's transform, so `train_val_split` takes a second dataset with the
# same samples and the validation transform.

# %%
# NBVAL_CHECK_OUTPUT
from torch.utils.data import DataLoader

from course_lib.data import train_val_split

train_set, val_set = train_val_split(
    ScenesDataset(length=40, image_size=SIZE, seed=0, transform=train_transforms(SIZE, seed=0)),
    val_fraction=0.2,
    seed=0,
    val_dataset=ScenesDataset(length=40, image_size=SIZE, seed=0, transform=val_transforms()),
)
print("train / val samples:", len(train_set), "/", len(val_set))
print("val indices:", val_set.indices)
images, masks = next(
    iter(
        DataLoader(
            train_set, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
    )
)
print("batch:", tuple(images.shape), images.dtype, "|", tuple(masks.shape), masks.dtype)

# %% [markdown]
# How fast must the loader be? `benchmarks/bench_dataloading.py` measures it against a training
# step of the small U-Net: on a 2-core CPU the augmented loader delivers images more than ten times
# faster than the model consumes them, and `num_workers=2` speeds it up further. On a GPU the model
# is much faster, which is when `num_workers` starts to matter.
#
# One trap with workers: each worker process starts as a copy of the main one, random generator
# included, so two workers can draw exactly the same "random" augmentations. The course pipelines
# re-seed themselves in each worker from the seed PyTorch gives that worker; if you write your own
# random transforms, do the same in a `worker_init_fn`.
#
# ### Augmentation on and off, with few training images
#
# Augmentation is meant to matter most when images are few: instead of the same eight pictures
# at every step, the model sees a new variant of each. Whether it helps within a given training
# budget is measured, not assumed: the same small U-Net, from the same initial weights and on the
# same sequence of drawn images (one seed fixes both), trained on 8 scenes once with
# `train_transforms` and once with `val_transforms` (normalisation only), over several seeds. It
# is scored by the mIoU on held-out scenes, and on the 8 training scenes themselves, which shows
# how much of them the model has memorised.

# %%
from course_lib import metrics
from course_lib.models import UNet

AUG_SIZE, AUG_STEPS, AUG_SEEDS = (40, 100, (0, 1, 2)) if FAST else (64, 600, (0, 1, 2, 3, 4))
FEW, HELD_OUT = 8, 32  # training scenes, validation scenes
if REHEARSAL:
    AUG_STEPS, AUG_SEEDS = 2, (0, 1)
if FAST:
    torch.set_num_threads(1)  # tiny model and images: one thread is as fast, and steadier
DEVICE = get_device()
to_tensors = val_transforms()  # normalisation only


def as_arrays(dataset):
    """(image (H, W, 3) float32, mask (H, W) int64) numpy pairs, the input of a transform."""
    return [(image.permute(1, 2, 0).numpy(), mask.numpy()) for image, mask in dataset]


def stacked(pairs, transform):
    """Pass each pair through `transform`; images (N, 3, H, W), masks (N, H, W)."""
    outs = [transform(image=image, mask=mask) for image, mask in pairs]
    return torch.stack([o["image"] for o in outs]), torch.stack([o["mask"] for o in outs])


few_pairs = as_arrays(ScenesDataset(length=FEW, image_size=AUG_SIZE, seed=0))
few_x, few_y = stacked(few_pairs, to_tensors)
held_x, held_y = stacked(
    as_arrays(ScenesDataset(length=HELD_OUT, image_size=AUG_SIZE, seed=1)), to_tensors
)


def train_on_few(transform, seed: int) -> UNet:
    """Adam, AUG_STEPS steps of 8 scenes drawn from the FEW, each passed through `transform`."""
    seed_everything(seed)
    model = UNet(in_channels=3, num_classes=ScenesDataset.num_classes, base_channels=8, depth=2)
    model = model.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(AUG_STEPS):
        drawn = torch.randint(0, FEW, (8,), generator=order).tolist()
        images, masks = stacked([few_pairs[i] for i in drawn], transform)  # masks: 255 = outside
        loss = F.cross_entropy(model(images.to(DEVICE)), masks.to(DEVICE), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def miou(model: UNet, images: torch.Tensor, masks: torch.Tensor) -> float:
    with torch.no_grad():
        pred = model(images.to(DEVICE)).argmax(dim=1).cpu()  # (N, H, W)
    return metrics.mean_iou(metrics.confusion_matrix(pred, masks, ScenesDataset.num_classes))


augmentation_runs = {}
for name, make in (
    ("none (val_transforms)", lambda seed: to_tensors),
    ("train_transforms", lambda seed: train_transforms(AUG_SIZE, seed=seed)),
):
    models = [train_on_few(make(seed), seed) for seed in AUG_SEEDS]
    augmentation_runs[name] = {
        "held-out": np.array([miou(m, held_x, held_y) for m in models]),
        "training": np.array([miou(m, few_x, few_y) for m in models]),
    }

# %%
print(
    f"{FEW} training scenes of {AUG_SIZE}x{AUG_SIZE}, {AUG_STEPS} steps of 8, seeds "
    f"{list(AUG_SEEDS)}; mIoU, mean ± standard deviation over the seeds"
)
print(f"{'augmentation':24s} {'held-out mIoU':>15s} {'training mIoU':>15s}   held-out per seed")
for name, scores in augmentation_runs.items():
    held, train = scores["held-out"], scores["training"]
    print(
        f"{name:24s} {held.mean():>7.3f} ± {held.std():.3f} {train.mean():>7.3f} ± "
        f"{train.std():.3f}   " + " ".join(f"{v:.3f}" for v in held)
    )
for split in ("held-out", "training"):
    difference = (
        augmentation_runs["train_transforms"][split]
        - augmentation_runs["none (val_transforms)"][split]
    )
    print(
        f"with minus without, {split} mIoU: {difference.mean():+.3f} (per seed "
        + " ".join(f"{d:+.3f}" for d in difference)
        + f")  {seed_verdict(difference)}"
    )

# %% [markdown]
# What the stored fast-mode run shows (three seeds, a short run; the lines above are computed from
# it): with augmentation the held-out mIoU is **not** higher; the difference changes sign with the
# seed, within seed spread. What augmentation did change, on every seed, is the score on the 8
# training scenes: lower, closer to the held-out score. The model memorised less of its few
# images, and within this budget that did not turn into a better score on new ones. Whether a
# longer run does is what full mode measures (more steps, five seeds); a claim that augmentation
# "always helps" is one to check on your own data, with seeds, as here.

# %% [markdown]
# ## 7. Class balance
#
# Background pixels outnumber small objects by far. A loss that counts every pixel the same then
# learns mostly background. Counting pixels per class is the first step towards class weights.

# %%
# NBVAL_CHECK_OUTPUT
count_set = ScenesDataset(length=32, image_size=SIZE, seed=0)
counts = torch.zeros(ScenesDataset.num_classes, dtype=torch.long)
for i in range(len(count_set)):
    counts += torch.bincount(count_set[i][1].flatten(), minlength=ScenesDataset.num_classes)
frequency = counts / counts.sum()
for name, f in zip(ScenesDataset.CLASSES, frequency):
    print(f"{name:>10}: {f.item():6.1%}")
print(f"most / least frequent: {frequency.max() / frequency.min():.1f} x")

# %% [markdown]
# Exercise 06 turns these counts into weights: the inverse frequency and the median-frequency
# balancing of Eigen & Fergus (2015). It also asks for a joint resize-and-flip that keeps labels
# valid and for the one-hot encoding Dice losses use.
#
# ## 8. Real datasets (full mode)
#
# In full mode the course trains on real data, cached in `COURSE_DATA_DIR`
# (default `~/.cache/course_lib`):
#
# | dataset | classes | masks | course_lib |
# |---|---|---|---|
# | Oxford-IIIT Pet | background, pet, boundary band | trimaps 1/2/3 | `OxfordPetSegmentation(boundary="class" or "ignore")` |
# | Pascal VOC 2012 | 21 | palette PNG, 255 = outline | `PascalVOCSegmentation(image_set="train")` |
# | Kvasir-SEG, ISIC 2018 | 2 | 0/255 (Kvasir ships JPEG, thresholded once) | `medical_dataset("kvasir-seg")` |
#
# Nothing is downloaded unless you pass `download=True`. Without the files, each class stops at
# once and says what to download and where to put it:

# %%
# NBVAL_CHECK_OUTPUT
from course_lib.data import OxfordPetSegmentation, PascalVOCSegmentation, medical_dataset

for build in (
    lambda: OxfordPetSegmentation(root=workdir / "empty"),
    lambda: PascalVOCSegmentation(root=workdir / "empty"),
    lambda: medical_dataset("kvasir-seg", root=workdir / "empty"),
):
    try:
        build()
    except FileNotFoundError as error:
        print(str(error).split(":")[0])

# %% [markdown]
# In full mode (a GPU on Colab) this cell downloads Oxford-IIIT Pet (about 800 MB) and shows
# augmented samples; notebook 07 trains on it.

# %%
if not FAST:
    pets = OxfordPetSegmentation(
        download=True, split="trainval", transform=train_transforms(256, seed=0)
    )
    print("Oxford-IIIT Pet:", len(pets), "images,", pets.num_classes, "classes:", pets.CLASSES)
    draws = [pets[i] for i in range(4)]
    show_grid(
        torch.stack([denormalize(img) for img, _ in draws]),
        torch.stack([m for _, m in draws]),
        class_names=pets.CLASSES,
        cell_size=2.2,
    )
    plt.show()
else:
    print("fast mode: real datasets skipped")

# %%
shutil.rmtree(workdir)

# %% [markdown]
# ## Summary
#
# - A dataset returns `(image, mask)`; a transform must receive both in one call.
# - Masks are resized with nearest neighbour and padded with `ignore_index`; bilinear interpolation
#   invents labels and can create values that crash the loss.
# - `SegmentationFolder` checks your folder when it is built and names each broken file.
# - `train_transforms` / `val_transforms` give tensors with the course dtypes; a validation split
#   keeps its own, non-random transform.
# - Measured with 8 training scenes and a short run (fast mode, three seeds): augmentation lowered
#   the fit to the training scenes on every seed, and the held-out mIoU stayed within the seed
#   spread. Check what augmentation buys on your data with several seeds.
#
# **Exercise 06**: open `exercises/ex06_data_augmentation.py`, then check your work with
#
#     python -m course_grader ex06
#
# or from this notebook:

# %%
from course_grader import check

check("ex06")
