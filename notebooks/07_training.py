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
# # 07 · Training, evaluation and inference, end to end
#
# The previous lessons built the pieces: data sets and joint transforms (06), models (02–04),
# losses and metrics (05). This lesson puts them in a loop and looks at everything around the
# loop that decides whether a run can be trusted:
#
# 1. the data, the model and the loss of a small medical-style task (nuclei in grayscale images),
# 2. one epoch of training and one evaluation written out, then `engine.fit` with a learning-rate
#    schedule, progress bars and curves,
# 3. evaluation over a whole data set: why the confusion matrix is accumulated, never averaged,
# 4. the worst predictions, looked at rather than averaged away,
# 5. inference on an image larger than the training crops (sliding window, blending, flip TTA),
# 6. checkpoints: resuming an interrupted run to the very same weights, the NaN guard,
# 7. BCE vs Dice vs BCE + Dice; in full mode, a pretrained vs a randomly initialised encoder,
# 8. your own images: the scale pitfall, and one scale from training to prediction; the command
#    line that runs the same pipeline headless, with a budget in minutes.
#
# In fast mode (a CPU) the task is the synthetic `CellsDataset` and a tiny U-Net that trains in
# seconds. In full mode (a GPU, e.g. Colab) the same cells train a DeepLabV3 with an
# ImageNet-pretrained ResNet-50 encoder on the Oxford-IIIT Pet photos (pet vs background), sized
# to take about a quarter of an hour on Colab's free T4: one main run of a few epochs over all
# 3,680 training photos, validated on 1,000 of the 3,669 test photos (spread over all 37
# breeds), two loader workers decoding the JPEGs while the GPU trains, the loss comparison
# of section 7 on a quarter of the photos for three epochs, and the main run once more with the
# encoder trained from scratch.

# %%
import itertools
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from course_lib import engine, inference, losses, metrics, models, viz
from course_lib.data import CellsDataset, train_val_split
from course_lib.schedules import LRFactor
from course_lib.utils import (
    count_parameters,
    course_mode,
    get_device,
    pretrained,
    rehearsal,
    seed_everything,
)

seed_everything(0)
FAST = course_mode() == "fast"
REHEARSAL = rehearsal()  # full mode's sizes on a few images (COURSE_REHEARSAL=1, tools/rehearse.py)
DEVICE = get_device()
if FAST:
    # The tensors of fast mode are too small to gain much from several threads, and one thread
    # keeps the run time steady on a busy shared machine (CI runners, a laptop doing other work).
    torch.set_num_threads(1)
plt.rcParams["figure.dpi"] = 80 if FAST else 100
WORKDIR = Path(
    tempfile.mkdtemp(prefix="course07_")
)  # checkpoints go here, never into the repository
print("course mode:", course_mode())

# %% [markdown]
# ## 1. Data, model, loss
#
# Fast mode renders 160 synthetic 64×64 images once (the data set is deterministic, so there is no
# reason to render it again every epoch) and holds out 32 for validation with the course's seeded
# split. About 18 % of the pixels are nuclei: an imbalanced binary task, the usual situation in
# medical segmentation.


# %%
def spread(dataset, n):
    """n items spread evenly over `dataset` (the pet splits are sorted by breed)."""
    return torch.utils.data.Subset(
        dataset, np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int).tolist()
    )


LOOP_BATCHES = 1 if REHEARSAL else 3  # batches of the written-out loop (section 2)
MEMBRANE_STEPS, CLI_TRAIN, CLI_VAL = (8, 4, 2) if REHEARSAL else (48, 16, 8)  # section 8
if FAST:
    IMAGE_SIZE, BATCH_SIZE, EPOCHS, LR = 64, 8, 6, 5e-3
    NUM_WORKERS = 0  # the cells are tensors in memory already
    EXP_IMAGES, EXP_EPOCHS = 64, 3  # the loss comparison of section 7
    cells = CellsDataset(length=160, image_size=IMAGE_SIZE, seed=0)
    images, masks = map(torch.stack, zip(*(cells[i] for i in range(len(cells)))))
    train_set, val_set = train_val_split(TensorDataset(images, masks), val_fraction=0.2, seed=0)
    exp_val_set = val_set
    CLASS_NAMES = CellsDataset.CLASSES
else:
    from course_lib.data.real import OxfordPetSegmentation
    from course_lib.transforms import train_transforms, val_transforms

    IMAGE_SIZE, BATCH_SIZE, EPOCHS, LR = 256, 16, 6, 3e-4
    NUM_WORKERS = 2  # Colab's two CPUs decode and augment the JPEGs while the GPU trains
    VAL_IMAGES = 1000  # of the 3,669 test photos
    EXP_IMAGES, EXP_EPOCHS, EXP_VAL_IMAGES = 920, 3, 500  # the loss comparison of section 7
    if REHEARSAL:
        BATCH_SIZE, EPOCHS, VAL_IMAGES, EXP_IMAGES, EXP_EPOCHS, EXP_VAL_IMAGES = 2, 1, 4, 4, 1, 4
    train_set = OxfordPetSegmentation(
        split="trainval",
        boundary="ignore",
        download=True,
        transform=train_transforms(IMAGE_SIZE, seed=0),
    )
    test_set = OxfordPetSegmentation(
        split="test", boundary="ignore", download=True, transform=val_transforms(IMAGE_SIZE)
    )
    val_set, exp_val_set = spread(test_set, VAL_IMAGES), spread(test_set, EXP_VAL_IMAGES)
    CLASS_NAMES = ("background", "pet")

# %%
# NBVAL_CHECK_OUTPUT
image, mask = val_set[0]
print(f"{len(train_set)} training and {len(val_set)} validation images")
print(
    f"image {tuple(image.shape)} {image.dtype}, mask {tuple(mask.shape)} {mask.dtype}, "
    f"labels {sorted(mask.unique().tolist())}"
)

# %%
preview = [val_set[i] for i in range(3)]
fig = viz.show_grid(
    torch.stack([p[0] for p in preview]),
    torch.stack([p[1] for p in preview]),
    class_names=CLASS_NAMES,
    cell_size=1.8,
)

# %% [markdown]
# Two classes, so the model has **one output channel** (a logit for "nucleus") and the loss is
# BCE + Dice (lesson 05): BCE gives every pixel a well-scaled gradient, Dice optimises the overlap
# directly and does not care how much background there is. The metrics treat the single logit as
# two classes (`sigmoid > 0.5`), so `num_classes=2` below.

# %%
# NBVAL_CHECK_OUTPUT
seed_everything(0)


def make_model(backbone_weights="DEFAULT"):
    """Fast mode: a tiny U-Net. Full mode: DeepLabV3 with an ImageNet-pretrained ResNet-50
    encoder, or a randomly initialised one with `backbone_weights=None` (section 7)."""
    if FAST:
        return models.UNet(in_channels=1, num_classes=1, base_channels=8, depth=3)
    return models.DeepLabV3(
        num_classes=1, backbone="resnet50", backbone_weights=pretrained(backbone_weights)
    )


model = make_model()
loss_fn = losses.BCEDiceLoss()
print(f"{type(model).__name__}: {count_parameters(model):,} parameters")

# %% [markdown]
# ## 2. The loop, written out
#
# One epoch is a handful of lines: training mode, then for every batch the forward pass, the loss,
# `zero_grad`, `backward` and an optimiser `step`. The learning rate changes **every step**:
# DeepLab's "poly" schedule multiplies the base rate by `(1 - t/T)^0.9`, often after a short
# linear warm-up. `course_lib.schedules` holds the factors; here they are over 120 steps.

# %%
steps = np.arange(120)
fig, ax = plt.subplots(figsize=(6, 2.6))
for name, warmup in (("poly", 0), ("cosine", 0), ("poly", 12)):
    factor = LRFactor(name, total_steps=120, warmup_steps=warmup)
    ax.plot(steps, [factor(int(s)) for s in steps], label=f"{name}, warm-up {warmup}")
ax.set_xlabel("optimiser step")
ax.set_ylabel("lr / base lr")
ax.legend(fontsize="small")
fig.tight_layout()

# %%
# NBVAL_CHECK_OUTPUT
factor = LRFactor("poly", total_steps=100)
print("poly factor at steps 0, 50, 99, 100:", [round(factor(s), 4) for s in (0, 50, 99, 100)])

# %% [markdown]
# Here is that loop, written out, shaped like the course's `engine.train_one_epoch(model, loader,
# loss_fn, optimizer, device)`. It returns the mean loss **per image**: a short last batch weighs
# what it holds. Run on the same three batches from the same starting weights, it must give the
# engine's loss and the engine's weights:


# %%
# NBVAL_CHECK_OUTPUT
def my_train_one_epoch(model, loader, loss_fn, optimizer, device):
    model.train()  # BatchNorm uses batch statistics, dropout drops
    loss_sum, image_count = 0.0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)  # (N, 1, H, W)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * images.shape[0]
        image_count += images.shape[0]
    return loss_sum / image_count


first_batches = list(
    itertools.islice(
        DataLoader(
            train_set,
            batch_size=BATCH_SIZE,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        ),
        LOOP_BATCHES,
    )
)


def one_epoch_with(train_one_epoch):
    seed_everything(0)
    net = make_model().to(DEVICE)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
    return train_one_epoch(net, first_batches, loss_fn, optimizer, DEVICE), net.state_dict()


(mine, my_weights), (engines, engine_weights) = map(
    one_epoch_with, (my_train_one_epoch, engine.train_one_epoch)
)
# On a GPU, the backward pass of bilinear upsampling adds in no fixed order: agree to rounding.
same_weights = all(
    torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6)
    for a, b in zip(my_weights.values(), engine_weights.values())
)
print(
    f"written out vs engine.train_one_epoch on {len(first_batches)} batches: same mean loss "
    f"{math.isclose(mine, engines, rel_tol=1e-5)}, same weights {same_weights}"
)

# %% [markdown]
# `engine.train_one_epoch` is that loop plus mixed precision on a GPU, gradient clipping, a
# learning-rate schedule stepped after every batch and a guard against NaN losses (section 6).
#
# `engine.fit` runs `train_one_epoch` and `evaluate` for a number of epochs with AdamW and the
# poly schedule by default, writes a checkpoint after every epoch and returns a history. Progress
# bars appear in a notebook or a terminal and stay out of CI logs. What to change from the
# defaults goes in `engine.FitOptions` (learning rate, schedule, mixed precision, early stopping,
# seed, ...), where to save in `engine.Checkpointing` (or a plain path).

# %%
loader_options = dict(num_workers=NUM_WORKERS, persistent_workers=NUM_WORKERS > 0)
train_loader = DataLoader(
    train_set,
    batch_size=BATCH_SIZE,
    shuffle=True,
    drop_last=True,
    generator=torch.Generator().manual_seed(0),
    **loader_options,
)
val_loader = DataLoader(val_set, batch_size=32, **loader_options)
options = engine.FitOptions(lr=LR, schedule="poly", seed=0)
saving = engine.Checkpointing(WORKDIR / "cells.pt", model_name="unet" if FAST else "deeplabv3")
history = engine.fit(
    model,
    train_loader,
    val_loader,
    loss_fn=loss_fn,
    num_classes=2,
    epochs=EPOCHS,
    device=DEVICE,
    options=options,
    checkpoint=saving,
)

# %%
fig = viz.plot_history(
    {k: history[k] for k in ("train_loss", "val_loss", "miou", "dice_foreground")}, figsize=(8, 2.8)
)

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"epochs run: {len(history['epoch'])}, foreground Dice above 0.90 at the end: "
    f"{history['dice_foreground'][-1] >= 0.90}"
)

# %% [markdown]
# ## 3. Evaluating a data set: accumulate, then divide
#
# `engine.evaluate` adds one confusion matrix over **all** validation batches and computes IoU and
# Dice once at the end. Averaging per-batch scores instead weighs a batch with three nucleus
# pixels as much as one with three thousand, and changes with the batch size. The same model,
# the same images:

# %%
results = engine.evaluate(model, val_loader, num_classes=2, device=DEVICE, loss_fn=loss_fn)
for name, iou, dice in zip(CLASS_NAMES, results["iou_per_class"], results["dice_per_class"]):
    print(f"{name:<11} IoU {iou:.3f}  Dice {dice:.3f}")
print(f"mIoU {results['miou']:.3f}, pixel accuracy {results['pixel_accuracy']:.3f}")

# %%
per_image = []
for image, mask in DataLoader(val_set, batch_size=1, num_workers=NUM_WORKERS):
    prediction = inference.predict(model, image.to(DEVICE)).cpu()  # (1, H, W)
    per_image.append(
        metrics.mean_iou(metrics.confusion_matrix(prediction, mask, 2, ignore_index=255))
    )
print(f"data-set mIoU {results['miou']:.4f} vs mean of per-image mIoUs {np.nanmean(per_image):.4f}")

# %% [markdown]
# With a good model on similar images the two numbers are close. They part ways as soon as the
# images differ in how much of each class they hold. Two 4×4 images: the first has a large
# nucleus, segmented perfectly; the second a single nucleus pixel, missed.

# %%
# NBVAL_CHECK_OUTPUT
target = torch.zeros(2, 4, 4, dtype=torch.long)
target[0, :, :3] = 1
target[1, 0, 0] = 1
prediction = target.clone()
prediction[1, 0, 0] = 0
accumulated = metrics.ConfusionMatrix(num_classes=2)
batch_scores = []
for i in range(2):  # two batches of one image
    accumulated.update(prediction[i : i + 1], target[i : i + 1])
    batch_scores.append(
        metrics.mean_iou(metrics.confusion_matrix(prediction[i : i + 1], target[i : i + 1], 2))
    )
print(
    f"per-batch mIoU {[round(s, 3) for s in batch_scores]}, averaged: {np.mean(batch_scores):.3f}"
)
print(
    f"accumulated confusion matrix {accumulated.compute().tolist()}, mIoU {metrics.mean_iou(accumulated.compute()):.3f}"
)

# %% [markdown]
# ## 4. Look at the worst cases
#
# A mean hides the failures. Sort the validation images by their own foreground Dice and look at
# the bottom of the list: touching nuclei merged, faint ones missed, noise taken for a nucleus.

# %%
dice_scores = []
for image, mask in DataLoader(val_set, batch_size=1, num_workers=NUM_WORKERS):
    prediction = inference.predict(model, image.to(DEVICE)).cpu()
    cm = metrics.confusion_matrix(prediction, mask, 2, ignore_index=255)
    dice_scores.append(float(metrics.dice_per_class(cm)[1]))
worst = np.argsort(dice_scores)[:3]
batch = [val_set[int(i)] for i in worst]
worst_images = torch.stack([b[0] for b in batch])
fig = viz.show_grid(
    worst_images,
    torch.stack([b[1] for b in batch]),
    inference.predict(model, worst_images.to(DEVICE)).cpu(),
    cell_size=1.8,
)
print("lowest foreground Dice:", [round(dice_scores[i], 2) for i in worst])

# %% [markdown]
# ## 5. Images larger than the training crops
#
# Models train on crops; real images (a whole slide, a 4K street scene) are bigger. A fully
# convolutional model can take the whole image at once when memory allows. When it does not,
# `inference.sliding_window` cuts overlapping windows of the training size, predicts each and
# blends the class probabilities. With **Gaussian** weights a pixel trusts the windows that see
# it near their centre, where the context is complete, more than those that see it at a border.
#
# Here four validation images are tiled into one image twice the training size.

# %%
tiles = [val_set[i] for i in range(4)]
big_image = torch.cat(
    [torch.cat([tiles[0][0], tiles[1][0]], 2), torch.cat([tiles[2][0], tiles[3][0]], 2)], 1
)
big_mask = torch.cat(
    [torch.cat([tiles[0][1], tiles[1][1]], 1), torch.cat([tiles[2][1], tiles[3][1]], 1)], 0
)
print("large image:", tuple(big_image.shape), "window:", IMAGE_SIZE)


def foreground_dice(prediction, target):
    return float(
        metrics.dice_per_class(metrics.confusion_matrix(prediction, target, 2, ignore_index=255))[1]
    )


outputs = {
    "whole image": inference.predict(model, big_image.to(DEVICE)).cpu(),
    "windows, constant": inference.sliding_window(
        model, big_image.to(DEVICE), IMAGE_SIZE, 0.5, blend="constant", output="labels"
    ).cpu(),
    "windows, Gaussian": inference.sliding_window(
        model, big_image.to(DEVICE), IMAGE_SIZE, 0.5, blend="gaussian", output="labels"
    ).cpu(),
    "windows, Gaussian + flip TTA": inference.sliding_window(
        model, big_image.to(DEVICE), IMAGE_SIZE, 0.5, output="labels", tta=True
    ).cpu(),
}
for name, labels in outputs.items():
    print(f"{name:<30} foreground Dice {foreground_dice(labels, big_mask):.3f}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
axes[0].imshow(viz.overlay(big_image, big_mask))
axes[0].set_title("ground truth")
axes[1].imshow(viz.overlay(big_image, outputs["windows, Gaussian"]))
axes[1].set_title("sliding window")
axes[2].imshow(inference.window_weights((IMAGE_SIZE, IMAGE_SIZE), "gaussian"), cmap="magma")
axes[2].set_title("Gaussian window weights")
errors = (outputs["windows, Gaussian"] != big_mask).numpy()
axes[3].imshow(errors, cmap="gray_r")
axes[3].set_title("errors")
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# ## 6. Checkpoints, resuming, and the NaN guard
#
# A checkpoint holds everything needed to continue: weights, optimiser moments, the scheduler's
# step, the GradScaler, the history and the states of every random generator (the shuffling of
# the next epoch, dropout). It is written to a temporary file and renamed over the old one, so a
# run killed during the write still has its previous checkpoint.
#
# To see that resuming is exact, train a small model for 4 epochs in one go; then train it again,
# interrupt it in the third epoch, and resume from the checkpoint.

# %%
SMALL_TRAIN, SMALL_VAL = (2, 2) if REHEARSAL else (32, 8)
small_train = torch.utils.data.Subset(train_set, range(SMALL_TRAIN))
small_val = torch.utils.data.Subset(val_set, range(SMALL_VAL))


class StopAfter:
    """A loss that raises after a number of calls: a run killed halfway."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, logits, target):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt("simulated interruption")
        return loss_fn(logits, target)


def small_run(loss, checkpoint=None):
    seed_everything(1)
    net = make_model()
    loader = DataLoader(small_train, batch_size=8, shuffle=True)
    run_history = engine.fit(
        net,
        loader,
        DataLoader(small_val, batch_size=8),
        epochs=4,
        loss_fn=loss,
        num_classes=2,
        device=DEVICE,
        checkpoint=checkpoint,
        options=engine.FitOptions(lr=LR, seed=1, progress=False),
    )
    return net, run_history


straight, straight_history = small_run(loss_fn)
try:
    small_run(StopAfter(2 * (4 + 1) + 2), checkpoint=WORKDIR / "run.pt")  # dies in epoch 3
except KeyboardInterrupt as error:
    print("interrupted:", error)
resumed, resumed_history = small_run(
    loss_fn, checkpoint=engine.Checkpointing(WORKDIR / "run.pt", resume=WORKDIR / "run.pt")
)

# %%
# NBVAL_CHECK_OUTPUT
pairs = list(zip(straight.state_dict().values(), resumed.state_dict().values()))
if DEVICE.type == "cuda":
    # On a GPU the backward pass of bilinear upsampling adds with atomics in no fixed order, so a
    # resumed run matches to rounding, not bit for bit (torch.use_deterministic_algorithms has no
    # deterministic version of that kernel): compare with a tolerance there.
    same_weights = all(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5) for a, b in pairs)
else:
    same_weights = all(torch.equal(a, b) for a, b in pairs)
print("resumed epochs:", resumed_history["epoch"])


def same_values(a, b):
    if DEVICE.type == "cuda":
        return np.allclose(a, b, rtol=1e-3, atol=1e-5, equal_nan=True)
    return a == b


same_history = all(same_values(straight_history[k], resumed_history[k]) for k in straight_history)
print("identical weights:", same_weights, "| identical history:", same_history)

# %% [markdown]
# When a loss turns into NaN (a learning rate far too high, a corrupt label, a division by zero
# in a custom loss) the weights would be ruined by the next step. `fit` checks every loss before
# `backward`, stops with a message that says what happened, and leaves the last good checkpoint
# on disk.


# %%
class NaNInEpoch2:
    def __init__(self):
        self.calls = 0

    def __call__(self, logits, target):
        self.calls += 1
        value = loss_fn(logits, target)
        return value * float("nan") if self.calls > 5 else value


try:
    small_run(NaNInEpoch2(), checkpoint=WORKDIR / "nan.pt")
except engine.NonFiniteLossError as error:
    print(str(error).replace(str(WORKDIR), "<tmp>"))

# %% [markdown]
# **Mixed precision.** On a GPU, `fit(amp="auto")` runs the forward pass in bfloat16 where the GPU
# supports it (same exponent range as float32, no loss scaling needed) and otherwise in float16
# with a `GradScaler`, which multiplies the loss so small gradients do not underflow and skips
# steps whose gradients overflowed. On the CPU it stays in float32.

# %%
print("autocast dtype on this device:", engine.resolve_amp("auto", DEVICE))

# %% [markdown]
# ## 7. BCE, Dice or both?
#
# The models of the sections above have done their work; the next cell frees the device for
# three new ones (on a 15 GB T4, four ResNet-50 DeepLabs at once would not leave much room).
# Then the same model and schedule trained with three losses (lesson 05 compared them as
# functions; here they train). In fast mode this is three epochs on 64 images: too short to rank
# the losses reliably, it shows the mechanics. Full mode trains three epochs on a quarter of the
# pet photos, validated on 500 test photos, where the comparison is worth reading.
#
# What does each loss push at the start, when the untrained model says p = 0.5 everywhere? The
# gradient with respect to the logits, on foreground and on background pixels, measured on a
# mask with 18 % foreground (the mean of |gradient| times the number of pixels N, so BCE's is
# |p - y| = 0.5 on every pixel):

# %%
# NBVAL_CHECK_OUTPUT
probe_target = (torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0)) < 0.18).long()
foreground = probe_target[:, None].bool()  # (1, 1, 64, 64)
pushes = {}
for name, criterion in (
    ("BCE", losses.BCEDiceLoss(bce_weight=1.0, dice_weight=0.0)),
    ("Dice", losses.BCEDiceLoss(bce_weight=0.0, dice_weight=1.0)),
):
    logits = torch.zeros(1, 1, 64, 64, requires_grad=True)  # p = 0.5 everywhere
    criterion(logits, probe_target).backward()
    grad = logits.grad * foreground.numel()  # (1, 1, 64, 64), in units of 1/N
    pushes[name] = (float(grad[foreground].abs().mean()), float(grad[~foreground].abs().mean()))
    print(
        f"{name:<5} |gradient| x N: foreground {pushes[name][0]:.2f}, background {pushes[name][1]:.2f}"
    )

# %% [markdown]
# Dice's gradient is not weak at the start: it pushes the foreground up at least as hard as BCE
# does. What differs is the background: Dice, normalised by the foreground mass, pushes the many
# background pixels down several times more gently than BCE, which treats every pixel alike.
# Things to look for below: how fast each curve rises in the first epochs, and where each ends
# when the foreground is a small part of the image.

# %%
del model, straight, resumed  # the trained DeepLabs of sections 2 to 6
if DEVICE.type == "cuda":
    torch.cuda.empty_cache()

# %%
experiment = {
    "BCE": losses.BCEDiceLoss(bce_weight=1.0, dice_weight=0.0),
    "Dice": losses.BCEDiceLoss(bce_weight=0.0, dice_weight=1.0),
    "BCE + Dice": losses.BCEDiceLoss(),
}
exp_train = spread(train_set, EXP_IMAGES)
finals = {}
for name, criterion in experiment.items():
    seed_everything(0)
    net = make_model()
    run_history = engine.fit(
        net,
        DataLoader(exp_train, batch_size=BATCH_SIZE, shuffle=True, **loader_options),
        DataLoader(exp_val_set, batch_size=32, **loader_options),
        epochs=EXP_EPOCHS,
        loss_fn=criterion,
        num_classes=2,
        device=DEVICE,
        options=engine.FitOptions(lr=LR, seed=0, progress=False),
    )
    finals[name] = run_history["dice_foreground"]
    print(
        f"{name:<11} foreground Dice per epoch: {[round(d, 3) for d in run_history['dice_foreground']]}"
    )

# %%
fig, ax = plt.subplots(figsize=(5, 2.8))
for name, curve in finals.items():
    ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
ax.set_xlabel("epoch")
ax.set_ylabel("validation Dice (foreground)")
ax.legend(fontsize="small")
fig.tight_layout()

# %% [markdown]
# ### Pretrained or from scratch?
#
# Full mode's DeepLabV3 starts from a ResNet-50 encoder trained on ImageNet's 1.3 million
# labelled photos; only the ASPP head and the classifier start from random numbers. What does
# that start buy on a few thousand pet photos? The next cell trains the same model once more with
# the encoder randomly initialised (`backbone_weights=None`), with everything else as in the main
# run of section 2: the same photos in the same order, loss, AdamW, poly schedule, learning rate,
# seed and number of epochs. It prints the two validation histories side by side, epoch by epoch;
# the figures are those of your run.
#
# Fast mode's tiny U-Net has no pretrained encoder, and a few seconds on synthetic cells could
# not show what features learnt from ImageNet bring to photos, so this comparison runs in full
# mode only. (In a rehearsal, `pretrained` hands out random weights, so both runs start from
# random numbers there.)

# %%
if FAST:
    print("pretrained vs scratch encoder: full mode only (COURSE_MODE=full, on a GPU)")
else:
    seed_everything(0)
    net = make_model(backbone_weights=None)  # replaces section 7's last model on the device
    scratch_history = engine.fit(
        net,
        DataLoader(
            train_set,
            batch_size=BATCH_SIZE,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(0),  # the main run's order of photos
            **loader_options,
        ),
        DataLoader(val_set, batch_size=32, **loader_options),
        loss_fn=loss_fn,
        num_classes=2,
        epochs=EPOCHS,
        device=DEVICE,
        options=options,  # section 2's: lr, poly schedule, seed 0
    )
    del net
    print("epoch   mIoU: pretrained  scratch   foreground Dice: pretrained  scratch")
    for epoch, miou, scratch_miou, dice, scratch_dice in zip(
        history["epoch"],
        history["miou"],
        scratch_history["miou"],
        history["dice_foreground"],
        scratch_history["dice_foreground"],
    ):
        print(
            f"{epoch:>5}   {miou:>16.3f}  {scratch_miou:>7.3f}   "
            f"{dice:>27.3f}  {scratch_dice:>7.3f}"
        )

# %%
if not FAST:
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for name, run in (("pretrained encoder", history), ("encoder from scratch", scratch_history)):
        ax.plot(run["epoch"], run["miou"], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mIoU")
    ax.legend(fontsize="small")
    fig.tight_layout()

# %% [markdown]
# Read the first row as well as the last: the first says how much of the task the pretrained
# features solve after one epoch, the last whether the same budget lets the randomly initialised
# encoder catch up. An encoder trained from scratch usually needs far more images or epochs to
# learn edges, textures and object parts that ImageNet training already provides.

# %% [markdown]
# ## 8. Your own images: one scale from training to prediction
#
# A folder of your own images is usually larger than the crops a model trains on. The pipeline
# of many tutorials resizes every image to the crop size for training and validation; then the
# trained model is run on the user's images as they are. Validation looks fine, because it
# measures the resized task, and the masks the user gets are poor: the model is applied at a
# scale it never learned.
#
# A folder of 256×256 grayscale slices with thin membranes (an electron-microscopy-like task,
# drawn by `data.write_membrane_folder`) shows it. Two tiny U-Nets train for the same steps on
# 64-pixel crops:
# - **resized**: `train_transforms(64)` shrinks each image to 64×64 before cropping, and
#   validation shrinks the same way (`val_transforms(64)`);
# - **native**: `train_transforms(64, rescale=1.0)` cuts the crops at the images' own resolution
#   (with a random zoom around 1), and validation runs on the whole image at that resolution
#   through `inference.segment`.

# %%
from course_lib.data import SegmentationFolder, write_membrane_folder
from course_lib.preprocessing import Preprocessing
from course_lib.transforms import train_transforms, val_transforms

own = write_membrane_folder(WORKDIR / "own", num_train=8, num_test=2, size=256, seed=0)
CROP, STATS = 64, dict(mean=(0.5,), std=(0.25,))


# What prediction will do: whole images, native scale, 128-pixel windows, sigmoid > 0.5.
NATIVE = Preprocessing(
    num_classes=2,
    image_mode="L",
    scale=1.0,
    crop_size=CROP,
    window=2 * CROP,
    decision="sigmoid",
    **STATS,
)


def membrane_run(train_transform, val_transform, preprocessing=None, steps=MEMBRANE_STEPS):
    seed_everything(0)
    train_folder = SegmentationFolder(
        own["train_images"], own["train_masks"], train_transform, image_mode="L"
    )
    val_folder = SegmentationFolder(
        own["test_images"], own["test_masks"], val_transform, image_mode="L"
    )
    loader = DataLoader(
        torch.utils.data.ConcatDataset([train_folder] * (steps // 2)),
        batch_size=4,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    net = models.UNet(in_channels=1, num_classes=1, base_channels=8, depth=3)
    engine.fit(
        net,
        loader,
        DataLoader(val_folder, batch_size=1),
        epochs=1,
        loss_fn=loss_fn,
        num_classes=2,
        device=DEVICE,
        options=engine.FitOptions(lr=5e-3, seed=0, progress=False),
    )
    reported = engine.evaluate(
        net, DataLoader(val_folder, batch_size=1), 2, DEVICE, preprocessing=preprocessing
    )
    return net, float(reported["dice_per_class"][1])


resized_net, resized_reported = membrane_run(
    train_transforms(CROP, seed=0, **STATS), val_transforms(CROP, **STATS)
)
native_net, native_reported = membrane_run(
    train_transforms(CROP, rescale=1.0, seed=0, **STATS),
    val_transforms(**STATS),
    preprocessing=NATIVE,
)

# %% [markdown]
# Both models are now applied as a user would: to the test images at their own 256×256
# resolution (the resized model would have to know that it must shrink them first, and nothing
# told it), with 128-pixel sliding windows.

# %%
# NBVAL_CHECK_OUTPUT
test_folder = SegmentationFolder(
    own["test_images"], own["test_masks"], val_transforms(**STATS), image_mode="L"
)
test_image, test_mask = test_folder[0]
answers = {}
for name, net, reported in (
    ("resized", resized_net, resized_reported),
    ("native", native_net, native_reported),
):
    scores = []
    for image, mask in test_folder:
        labels = inference.segment(
            net, image.to(DEVICE), window=NATIVE.window, output="labels"
        ).cpu()
        scores.append((labels, mask))
    user_dice = foreground_dice(
        torch.stack([s[0] for s in scores]), torch.stack([s[1] for s in scores])
    )
    answers[name] = scores[0][0]
    print(
        f"{name:<8} validation reports Dice {reported:.3f}; on the images as they are: {user_dice:.3f}"
    )

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
panels = [
    ("image", test_image[0]),
    ("ground truth", test_mask),
    ("resized training", answers["resized"]),
    ("native training", answers["native"]),
]
for ax, (title, picture) in zip(axes, panels):
    is_labels = title != "image"  # labels 0/1 in black/white, the image in its own range
    ax.imshow(picture, cmap="gray", vmin=0 if is_labels else None, vmax=1 if is_labels else None)
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# The resized model's validation figure describes a task nobody runs; at the images' own scale
# its membranes are several times wider than anything it saw, and its answer falls apart. The
# native model's validation figure and the user's figure are the same number, because both come
# from the same path: whole image, training scale, sliding window, answer at the image's size.
#
# When images are very large and their structures large too, shrinking them is a fine choice,
# as long as it is made **once** and applied everywhere: `train_transforms(..., rescale=0.5)` for
# training and `inference.segment(..., scale=0.5)` for validation and prediction, which resizes
# the answer back to the original size.

# %% [markdown]
# ## The same pipeline from the command line
#
# Everything above is also a headless job that writes `last.pt`, `metrics.json`, `curves.png`
# and `predictions.png` (the worst validation images) into its output folder:
#
# ```
# python -m course_lib train --model unet --dataset cells --epochs 6 --out runs/cells
# python -m course_lib train --images my/images --masks my/masks --minutes 10 --out runs/mine
# python -m course_lib evaluate --checkpoint runs/cells/last.pt
# python -m course_lib predict --checkpoint runs/cells/last.pt --input photos/ --output masks/
# torchrun --nproc_per_node=4 -m course_lib train --distributed --dataset voc --model deeplabv3 --pretrained
# ```
#
# Under `torchrun`, every process runs the same `fit` on its share of each batch
# (DistributedDataParallel); the validation confusion matrices of all processes are summed, so
# the reported metrics are exactly those of a single process, and only rank 0 writes files.
# Here is a one-epoch run on a few images:

# %%
from course_lib.cli import main as course_cli

status = course_cli(
    [
        "train",
        "--dataset",
        "cells",
        "--epochs",
        "1",
        "--num-train",
        str(CLI_TRAIN),
        "--num-val",
        str(CLI_VAL),
        "--no-progress",
        "--out",
        str(WORKDIR / "cli"),
    ]
)
print("exit status", status, "| files:", sorted(p.name for p in (WORKDIR / "cli").iterdir()))

# %% [markdown]
# On your own folder, think in minutes rather than epochs: `--minutes M` trains for M minutes of
# wall time, with the learning-rate schedule spread over that budget, validation on whole images
# after each quarter, and the checkpoint at the end. The checkpoint records the scale, the
# normalisation, the mask coding (here 0/255 -> 0/1) and the decision rule, so `predict` needs
# nothing but the checkpoint, and writes label maps at each image's own size. A few seconds on
# the membrane folder (the scores of such a short run depend on the machine's speed, so only
# the settings it reports are printed here):

# %%
import contextlib
import io

log = io.StringIO()
with contextlib.redirect_stdout(log):
    course_cli(
        [
            "train",
            "--images",
            str(own["train_images"]),
            "--masks",
            str(own["train_masks"]),
            "--minutes",
            "0.15",
            "--image-size",
            str(CROP),
            "--no-progress",
            "--threads",
            "1",
            "--out",
            str(WORKDIR / "mine"),
        ]
    )
    course_cli(
        [
            "predict",
            "--checkpoint",
            str(WORKDIR / "mine" / "last.pt"),
            "--input",
            str(own["test_images"]),
            "--output",
            str(WORKDIR / "mine_masks"),
        ]
    )
print(
    "\n".join(
        line
        for line in log.getvalue().splitlines()
        if line.startswith(("masks:", "preprocessing:"))
    )
)

# %%
# NBVAL_CHECK_OUTPUT
from PIL import Image

for path in sorted((WORKDIR / "mine_masks").glob("*_labels.png")):
    with Image.open(path) as labels_png:
        print(
            path.name, labels_png.size, "labels", sorted(np.unique(np.asarray(labels_png)).tolist())
        )

# %% [markdown]
# ## Summary
#
# - `train_one_epoch` is five lines of real work; `fit` adds the schedule (per step), mixed
#   precision, clipping, early stopping, checkpoints and the NaN guard.
# - Evaluate a data set with one accumulated confusion matrix; per-batch averages are a different,
#   batch-size-dependent number.
# - Look at the worst predictions, not only at the mean.
# - Large images: sliding windows of the training size with Gaussian blending, optionally with
#   flip TTA.
# - A checkpoint with optimiser, scheduler and RNG states makes an interrupted run resumable to
#   the same weights.
# - Train and predict at one scale: crops cut at the images' own resolution (or one recorded
#   `scale`), validation on whole images through the same path as prediction, so the validation
#   figure is the figure you get.
#
# Exercise 07 (`exercises/ex07_training.py`) asks you to write `train_one_epoch`, an
# accumulating `evaluate` and the poly schedule yourself. Check it with
# `python -m course_grader ex07`, or from this notebook:

# %%
from course_grader import check

check("ex07")
