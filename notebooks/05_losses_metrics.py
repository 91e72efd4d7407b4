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
# # 05 · Losses and metrics, done right
#
# A segmentation model is trained with a **loss** (differentiable, computed from logits) and judged
# with **metrics** (computed from hard predictions). Both look simple, and both are where published
# tutorials most often go subtly wrong: a sigmoid Dice applied to multiclass logits, an mIoU
# averaged over batches, classes that never occur counted as 0 (or as 1) without saying so,
# "ignore" labels leaking into the loss.
#
# This lesson
# 1. writes the Dice and focal losses in a few lines, then plots each loss as a function of
#    prediction quality and under class imbalance,
# 2. compares the gradients of cross-entropy, focal and Dice on easy and hard pixels,
# 3. trains a 3-class problem with sigmoid Dice and with softmax Dice to show what each optimises,
# 4. trains the same small U-Net with BCE, Dice and BCE + Dice and reports Dice and HD95, then
#    measures focal, Tversky and Lovász against BCE on small objects,
# 5. shows five metric pitfalls, each with numbers,
# 6. draws a confusion matrix and looks at boundary metrics.
#
# After the first section everything comes from `course_lib.losses` and `course_lib.metrics`;
# each function's docstring states its convention (absent classes, NaN, `smooth`, empty masks).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from course_lib import losses, metrics, viz
from course_lib.data import CellsDataset, ScenesDataset
from course_lib.models import UNet
from course_lib.utils import course_mode, get_device, rehearsal, seed_everything, seed_verdict

seed_everything(0)
FAST = course_mode() == "fast"
REHEARSAL = rehearsal()  # full mode's sizes on a few images (COURSE_REHEARSAL=1, tools/rehearse.py)
plt.rcParams["figure.dpi"] = 80 if FAST else 100
print("course mode:", course_mode())

# %% [markdown]
# ## 1. Each loss as a function of prediction quality
#
# ### The formulas, written out
#
# With `p` the predicted probabilities and `t` the target (0/1, or one-hot over K classes), summed
# over the pixels:
#
# - **soft Dice loss** = `1 − 2·Σ p·t / (Σ p + Σ t)`, per class; the multiclass loss averages it
#   over the classes present in the target, with `p` from a softmax over the K channels;
# - **focal loss** = mean over pixels of `−(1 − p_t)^γ · log p_t`, where `p_t` is the probability
#   of the pixel's true class (γ = 0 gives cross-entropy).
#
# In code, from logits, and checked against `course_lib.losses` on random inputs:


# %%
def dice_loss_binary(logits, target):  # logits (N, 1, H, W), target (N, H, W) of 0/1
    p, t = torch.sigmoid(logits[:, 0]), target.float()
    return 1 - 2 * (p * t).sum() / (p.sum() + t.sum())


def dice_loss_multiclass(logits, target):  # logits (N, K, H, W), target (N, H, W) int64
    p = logits.softmax(dim=1)  # (N, K, H, W), sums to 1 over K
    t = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()  # (N, K, H, W)
    dice = 2 * (p * t).sum((0, 2, 3)) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)))  # (K,)
    present = t.sum((0, 2, 3)) > 0  # classes that occur in the target
    return 1 - dice[present].mean()


def focal_loss_multiclass(logits, target, gamma=2.0):
    log_pt = logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)  # (N, H, W)
    return (-((1 - log_pt.exp()) ** gamma) * log_pt).mean()


# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
z1, y1 = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
z3, y3 = torch.randn(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8))  # class 2 absent
checks = [
    ("binary Dice", dice_loss_binary(z1, y1), losses.dice_loss(z1, y1, mode="binary")),
    ("multiclass Dice", dice_loss_multiclass(z3, y3), losses.dice_loss(z3, y3)),
    ("focal, gamma 2", focal_loss_multiclass(z3, y3), losses.focal_loss(z3, y3, gamma=2.0)),
    ("focal, gamma 0 = CE", focal_loss_multiclass(z3, y3, 0.0), F.cross_entropy(z3, y3)),
]
for name, ours, reference in checks:
    print(f"{name:<20} by hand {ours.item():.4f}   reference {reference.item():.4f}")

# %% [markdown]
# ### The losses as the prediction improves
#
# A toy binary image: 200 pixels, 20 of them foreground (10 %). The "model" predicts probability
# `q` for the right class on every pixel, so `q = 0.5` is a coin flip and `q → 1` is perfect.
# All losses take **logits**, so we pass `log(q / (1 - q))` with the sign of the right answer.

# %%
target_1d = torch.zeros(1, 1, 200, dtype=torch.long)
target_1d[..., :20] = 1


def logits_for_quality(q: float, target: torch.Tensor) -> torch.Tensor:
    """Logits (N, 1, ...) that give probability q to the correct class on every pixel."""
    margin = math.log(q / (1 - q))
    return torch.where(target.bool(), margin, -margin).float().unsqueeze(1)


LOSS_FUNCTIONS = {
    "BCE": lambda z, t: losses.binary_cross_entropy(z, t),
    "Dice": lambda z, t: losses.dice_loss(z, t, mode="binary"),
    "BCE + Dice": lambda z, t: losses.BCEDiceLoss(smooth=0.0)(z, t),
    "Focal (γ=2)": lambda z, t: losses.focal_loss(z, t, mode="binary", gamma=2.0),
    "Tversky (α=0.3, β=0.7)": lambda z, t: losses.tversky_loss(
        z, t, mode="binary", alpha=0.3, beta=0.7
    ),
    "Lovász hinge": lambda z, t: losses.lovasz_hinge(z, t),
}
qualities = np.linspace(0.02, 0.98, 49)
curves = {
    name: [fn(logits_for_quality(q, target_1d), target_1d).item() for q in qualities]
    for name, fn in LOSS_FUNCTIONS.items()
}

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in curves.items():
    ax.plot(qualities, values, label=name)
ax.set_xlabel("probability given to the right class, q")
ax.set_ylabel("loss")
ax.set_ylim(0, 2.5)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'loss':24s}" + "".join(f"q={q:<7}" for q in (0.1, 0.5, 0.9)))
for name, fn in LOSS_FUNCTIONS.items():
    values = [fn(logits_for_quality(q, target_1d), target_1d).item() for q in (0.1, 0.5, 0.9)]
    print(f"{name:24s}" + "".join(f"{v:<9.3f}" for v in values))

# %% [markdown]
# What to read from it:
# - BCE and focal are **unbounded**: a confident mistake costs a lot. Focal is far below BCE once
#   `q > 0.5`: it has stopped caring about pixels it already gets right.
# - Dice and Tversky live in `[0, 1]`: they measure soft overlap, not per-pixel confidence.
# - The Lovász hinge weighs hinge margins, so it grows past 1 for confident mistakes, and it is 0
#   as soon as every pixel is on the right side with margin 1 (`q ≥ 0.73`): it optimises the IoU
#   of the *hard* decision, not the probabilities.

# %% [markdown]
# ## 2. Class imbalance: a lazy model that predicts background everywhere
#
# The lazy model says "foreground with probability 0.1" on every pixel. How bad do the losses and
# metrics think it is, as the foreground shrinks from half the image to 1 %?

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{'foreground':>10s} {'BCE':>7s} {'Dice loss':>10s} {'pixel acc':>10s} {'fg IoU':>7s} "
    f"{'mIoU':>6s}"
)
for fraction in (0.5, 0.1, 0.01):
    target = torch.zeros(1, 1000, dtype=torch.long)
    target[:, : int(1000 * fraction)] = 1
    lazy_logits = torch.full((1, 1, 1000), math.log(0.1 / 0.9))
    cm = metrics.confusion_matrix(lazy_logits, target, num_classes=2)  # sigmoid > 0.5 -> all 0
    print(
        f"{fraction:>10.2f} {losses.binary_cross_entropy(lazy_logits, target).item():>7.3f} "
        f"{losses.dice_loss(lazy_logits, target, mode='binary').item():>10.3f} "
        f"{metrics.pixel_accuracy(cm):>10.3f} {metrics.iou_per_class(cm)[1].item():>7.3f} "
        f"{metrics.mean_iou(cm):>6.3f}"
    )

# %% [markdown]
# With 1 % foreground, BCE drops to 0.13 and pixel accuracy reaches 0.99: both call the lazy
# model good. The Dice loss *rises* to 0.98 and the foreground IoU is 0. Per-pixel losses
# average over pixels, so the majority class dominates. Binary Dice has a single class, the
# foreground, so its robustness cannot come from averaging over classes: it comes from the
# denominator `Σ p + Σ t`, which scales with the foreground mass. Missing half of a 10-pixel
# object costs as much as missing half of a 10 000-pixel one, and the easy background pixels
# enter only through their false-positive mass `Σ p`, never as a crowd of cheap right answers.
# (The multiclass Dice does the same per class and then averages, so every class counts equally.)
# That is the reason for Dice in medical imaging, and for class weights in cross-entropy:

# %%
# NBVAL_CHECK_OUTPUT
masks = torch.stack([CellsDataset(length=8, image_size=64, seed=0)[i][1] for i in range(8)])
print("nucleus pixel fraction:", f"{masks.float().mean().item():.3f}")
for method in ("inverse", "median"):
    weights = losses.class_weights(masks, num_classes=2, method=method)
    print(f"{method}-frequency weights:", [round(w, 3) for w in weights.tolist()])

# %% [markdown]
# With two classes that appear in every image the two rules agree; with many classes, some of them
# only in a few images, median-frequency balancing gives rare classes less extreme weights.

# %% [markdown]
# ## 3. Gradients on easy and hard pixels
#
# What a loss *does* during training is its gradient. For one pixel, the gradient of BCE w.r.t.
# its logit is `p - y`, so its size is `1 - q`. Focal multiplies the loss by `(1 - q)^γ`, which
# shrinks the gradient of easy pixels (`q` near 1) much more than that of hard ones.

# %%
q = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(6, 3.2))
for gamma in (0.0, 1.0, 2.0, 5.0):
    z = torch.log(q / (1 - q)).view(1, 1, -1).requires_grad_(True)  # logits of positive pixels
    losses.focal_loss(
        z, torch.ones(1, 1, 99, dtype=torch.long), mode="binary", gamma=gamma, reduction="sum"
    ).backward()
    ax.plot(q, z.grad.abs().view(-1), label="BCE" if gamma == 0 else f"focal γ={gamma:g}")
ax.set_xlabel("probability of the right class, q")
ax.set_ylabel("|d loss / d logit|")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Dice is not a sum over pixels: a pixel's gradient depends on every other pixel. Take an image of
# 1000 pixels, 100 foreground; 90 % of the pixels are easy (`q = 0.95`), 10 % hard (`q = 0.3`).
# The table gives the mean gradient size on each group, and how much larger it is on hard pixels.

# %%
# NBVAL_CHECK_OUTPUT
target = torch.zeros(1, 1000, dtype=torch.long)
target[:, :100] = 1
hard = torch.zeros(1, 1000, dtype=torch.bool)
hard[:, 90:100] = True  # 10 hard foreground pixels
hard[:, 100:190] = True  # 90 hard background pixels
q_right = torch.where(hard, 0.3, 0.95).double()
margin = torch.log(q_right / (1 - q_right))
logits = torch.where(target.bool(), margin, -margin).unsqueeze(1)  # (1, 1, 1000)

print(
    f"{'loss':12s} {'easy fg':>9s} {'hard fg':>9s} {'easy bg':>9s} {'hard bg':>9s} "
    f"{'hard/easy':>10s}"
)
for name, fn in (
    ("BCE", LOSS_FUNCTIONS["BCE"]),
    ("Focal (γ=2)", LOSS_FUNCTIONS["Focal (γ=2)"]),
    ("Dice", LOSS_FUNCTIONS["Dice"]),
):
    z = logits.clone().requires_grad_(True)
    fn(z, target).backward()
    g = z.grad.abs().view(-1)
    fg, t_hard = target.view(-1).bool(), hard.view(-1)
    groups = [g[fg & ~t_hard], g[fg & t_hard], g[~fg & ~t_hard], g[~fg & t_hard]]
    means = [x.mean().item() for x in groups]
    ratio = g[t_hard].mean().item() / g[~t_hard].mean().item()
    print(f"{name:12s} " + " ".join(f"{m * 1e3:9.3f}" for m in means) + f" {ratio:10.1f}")
print("(gradients x 1000)")

# %% [markdown]
# BCE gives a hard pixel 14 times the gradient of an easy one; focal almost 2000 times: easy
# pixels practically drop out of training. Dice behaves differently again: hard pixels get about
# four times more than easy ones, and every *foreground* pixel gets more than a background pixel
# of the same difficulty, although foreground pixels are 10 times fewer. The foreground class gets
# attention in proportion to the overlap it loses, not to its number of pixels.

# %% [markdown]
# ## 4. Sigmoid Dice on multiclass logits
#
# A pitfall copied from binary code: applying `torch.sigmoid` to the K logits of a multiclass
# model and computing Dice against the one-hot target. That is the **multilabel** Dice
# (`mode="multilabel"`): K independent yes/no questions, "is this pixel class c?", each with its own
# sigmoid. Nothing ties the K answers together, so a pixel may say yes to two classes or to none.
# The **softmax** Dice (`mode="multiclass"`) turns the K logits into one distribution per pixel:
# raising one class lowers the others, which is what mutually exclusive classes need.
#
# A 3-class problem with a rare class: 4000 pixels, each with two features drawn around a class
# centre (75 % background, 20 % class 1, 5 % class 2, overlapping), a 1×1 convolution (a linear
# classifier per pixel), 300 Adam steps with each loss, three seeds, scored on 4000 other pixels.

# %%
if FAST:
    torch.set_num_threads(1)  # tiny models and images: one thread is as fast, and steadier


def three_class_pixels(n, seed):
    """Features (1, 2, n, 1) around a class centre, labels (1, n, 1) drawn 75 / 20 / 5 %."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(torch.tensor([0.75, 0.2, 0.05]), n, replacement=True, generator=g)
    centres = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.75, 1.3]])
    features = centres[labels] + 0.6 * torch.randn(n, 2, generator=g)  # (n, 2)
    return features.T.reshape(1, 2, n, 1), labels.view(1, n, 1)


toy_train, toy_val = three_class_pixels(4000, seed=0), three_class_pixels(4000, seed=1)
DICE_VARIANTS = {
    "softmax Dice": lambda z, t: losses.dice_loss(z, t, mode="multiclass"),
    "sigmoid Dice": lambda z, t: losses.dice_loss(
        z, F.one_hot(t, 3).movedim(-1, 1), mode="multilabel"
    ),
}
toy_results = {}
for name, loss_fn in DICE_VARIANTS.items():
    runs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        classifier = torch.nn.Conv2d(2, 3, kernel_size=1)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05)
        for _ in range(300):
            loss = loss_fn(classifier(toy_train[0]), toy_train[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            z = classifier(toy_val[0])  # (1, 3, 4000, 1)
        probs = z.softmax(dim=1) if name == "softmax Dice" else torch.sigmoid(z)
        claims = (probs > 0.5).sum(dim=1)  # classes a pixel says yes to
        cm = metrics.confusion_matrix(z.argmax(dim=1), toy_val[1], num_classes=3)
        runs.append(
            {
                "iou": metrics.iou_per_class(cm).numpy(),
                "miou": metrics.mean_iou(cm),
                "none": (claims == 0).float().mean().item(),
                "several": (claims >= 2).float().mean().item(),
                "sum_low": probs.sum(1).min().item(),
                "sum_high": probs.sum(1).max().item(),
            }
        )
    toy_results[name] = runs

# %%
print(
    f"{'loss':<14}{'mIoU (argmax)':>15}{'IoU class 2 (5 %)':>19}{'no class > 0.5':>16}"
    f"{'2+ classes > 0.5':>18}{'sum of probabilities':>22}"
)
for name, runs in toy_results.items():
    miou = np.array([r["miou"] for r in runs])
    rare = np.array([r["iou"][2] for r in runs])
    print(
        f"{name:<14}{miou.mean():>9.3f} ± {miou.std():.3f}{rare.mean():>13.3f} ± {rare.std():.3f}"
        f"{np.mean([r['none'] for r in runs]):>16.3f}{np.mean([r['several'] for r in runs]):>18.3f}"
        f"{min(r['sum_low'] for r in runs):>14.2f} to {max(r['sum_high'] for r in runs):.2f}"
    )

# %% [markdown]
# Read the columns from the right. The softmax model's probabilities sum to 1 on every pixel; the
# sigmoid model's do not, and some pixels say yes to two classes (or to none): its outputs are not
# a distribution, and "the class with the largest logit" compares answers to three separate
# questions. The argmax scores show what that costs when classes overlap, most on the rare class.
# Use `mode="multiclass"` (softmax) when every pixel has exactly one class, and the sigmoid
# (`mode="binary"` or `"multilabel"`) only for one foreground channel or for classes that may
# overlap.

# %% [markdown]
# ## 5. Experiment: Dice vs BCE vs BCE + Dice on nuclei (polyps in full mode)
#
# The same small U-Net, trained with three losses on the microscopy-like `CellsDataset` (binary:
# background / nucleus), several seeds each. Full mode runs the same experiment on real medical
# images: Kvasir-SEG (1000 colonoscopy photographs with polyp masks, about 45 MB, downloaded once;
# resized to 256×256 here, 880 for training and 120 for validation) with a wider U-Net on the GPU. We report the **per-image Dice** (mean over
# validation images) and the **HD95** (95th-percentile Hausdorff distance in pixels, mean over
# the images where neither mask is empty): Dice measures overlap, HD95 how far the outlines
# stray. The training loop is written out here; notebook 07 wraps it in `course_lib.engine`.

# %%
IMAGE_SIZE, STEPS, SEEDS = (48, 40, (0, 1, 2)) if FAST else (256, 600, (0, 1, 2))
NUM_TRAIN, NUM_VAL = (64, 16) if FAST else (880, 120)
if REHEARSAL:
    STEPS, SEEDS = 2, (0, 1)
DEVICE = get_device()
if FAST:
    train_set = CellsDataset(length=NUM_TRAIN, image_size=IMAGE_SIZE, seed=0)
    val_set = CellsDataset(length=NUM_VAL, image_size=IMAGE_SIZE, seed=1)
    CLASS_NAMES = CellsDataset.CLASSES
else:
    from course_lib.data import medical_dataset
    from course_lib.transforms import denormalize, val_transforms

    kvasir = medical_dataset(
        "kvasir-seg", download=True, transform=val_transforms((IMAGE_SIZE, IMAGE_SIZE))
    )  # 0/255 -> 0/1
    order = torch.randperm(len(kvasir), generator=torch.Generator().manual_seed(0)).tolist()
    cut = round(len(kvasir) * NUM_TRAIN / (NUM_TRAIN + NUM_VAL))  # 880 / 120 of 1000
    train_set, val_set = Subset(kvasir, order[:cut]), Subset(kvasir, order[cut:])
    CLASS_NAMES = ("background", "polyp")
train_x = torch.stack([train_set[i][0] for i in range(len(train_set))])  # (N, C, H, W)
train_y = torch.stack([train_set[i][1] for i in range(len(train_set))])  # (N, H, W)
val_x = torch.stack([val_set[i][0] for i in range(len(val_set))])
val_y = torch.stack([val_set[i][1] for i in range(len(val_set))])
shown_x = val_x if FAST else denormalize(val_x)  # what a person sees: colours in [0, 1]
print("train", tuple(train_x.shape), "validation", tuple(val_x.shape))
viz.show_grid(shown_x[:3], val_y[:3], class_names=CLASS_NAMES, max_rows=3, cell_size=1.8)
plt.show()

# %%
EXPERIMENT_LOSSES = {
    "BCE": lambda z, t: losses.binary_cross_entropy(z, t),
    "Dice": losses.DiceLoss(mode="binary", smooth=1.0),
    "BCE + Dice": losses.BCEDiceLoss(bce_weight=1.0, dice_weight=1.0, smooth=1.0),
}


def train_unet(loss_fn, seed: int, images: torch.Tensor, targets: torch.Tensor, steps: int) -> UNet:
    """Adam, batch 8, `steps` steps on random training images; returns the model in eval mode.

    The seed fixes both the initial weights and the order of the batches: two losses trained
    with the same seed start from the same network and see the same images.
    """
    seed_everything(seed)
    model = UNet(
        in_channels=images.shape[1],
        num_classes=1,
        base_channels=8 if FAST else 16,
        depth=2 if FAST else 4,
    ).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(images), (8,), generator=generator)
        logits = model(images[batch].to(DEVICE))  # (8, 1, H, W)
        loss = loss_fn(logits, targets[batch].to(DEVICE))  # against targets (8, H, W)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def evaluate_binary(model: UNet, threshold: float = 0.5) -> dict:
    with torch.no_grad():
        probs = torch.cat(
            [
                torch.sigmoid(model(val_x[i : i + 16].to(DEVICE)))[:, 0].cpu()
                for i in range(0, len(val_x), 16)
            ]
        )  # (N, H, W)
    pred = probs > threshold
    hd95 = np.array([metrics.hausdorff_distance(p, t, percentile=95) for p, t in zip(pred, val_y)])
    finite = hd95[np.isfinite(hd95)]
    return {
        "dice": metrics.dice_per_image(pred, val_y).mean().item(),
        "hd95": float(finite.mean()) if finite.size else math.inf,
        "empty": int((~np.isfinite(hd95)).sum()),
        "probs": probs,
    }


results = {
    name: [evaluate_binary(train_unet(fn, seed, train_x, train_y, STEPS)) for seed in SEEDS]
    for name, fn in EXPERIMENT_LOSSES.items()
}

# %%
print(f"{'loss':12s} {'Dice (mean ± sd)':>18s} {'HD95 px (mean ± sd)':>21s}   Dice per seed")
for name, runs in results.items():
    dice = np.array([r["dice"] for r in runs])
    hd95 = np.array([r["hd95"] for r in runs])
    print(
        f"{name:12s} {dice.mean():>10.3f} ± {dice.std():.3f} {hd95.mean():>13.2f} ± "
        f"{hd95.std():.2f}   " + " ".join(f"{d:.3f}" for d in dice)
    )
empty = {name: sum(r["empty"] for r in runs) for name, runs in results.items()}
print("images where one mask was empty (HD = inf):", empty)

# %%
fig, axes = plt.subplots(2, 5, figsize=(8.5, 3.6))
for row, index in enumerate((0, 1)):
    pictures = [shown_x[index].permute(1, 2, 0).squeeze(-1), val_y[index]] + [
        runs[0]["probs"][index] > 0.5 for runs in results.values()
    ]
    titles = ["image", "target"] + [f"{name} (seed 0)" for name in results]
    for ax, picture, title in zip(axes[row], pictures, titles):
        ax.imshow(picture, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the table with its spread: with a few dozen training steps the difference between seeds is
# of the same size as the difference between losses, which is the usual state of such
# comparisons (run it in full mode for longer schedules and more seeds). The combined loss is the
# common default because it needs no tuning: BCE gives every pixel a well-scaled gradient from the
# first step, Dice keeps the small foreground from being averaged away. Images where the
# prediction (or the target) is empty are counted apart: their Hausdorff distance is infinite, and
# a single infinite value would make every mean infinite.

# %% [markdown]
# ### Small objects: focal, Tversky and Lovász against BCE
#
# Sections 2 and 3 gave the *reasons* to expect an overlap loss to help a small foreground (its
# denominator scales with the foreground mass, so a missed small object is not averaged away) and
# focal loss to spend its gradient on hard pixels. Whether that makes a model learn small objects
# better is a question for an experiment. The task: find the **people** in the street scenes of
# `ScenesDataset`, person against everything else. People cover a few percent of the pixels, and
# each one only a few dozen pixels (printed below). BCE, focal, Tversky and the Lovász hinge of
# section 1 each train the same U-Net with the loop above, from the same initial weights and on
# the same batches (one seed fixes both), over several seeds (Dice, which is Tversky with
# α = β = 0.5, was measured above on the larger nuclei). Each is scored on held-out scenes with
# two numbers that see small objects:
# - **person IoU**: one confusion matrix over all validation images;
# - **object recall**: the share of people of whom at least half the pixels are predicted person.

# %%
SMALL_SIZE, SMALL_STEPS, SMALL_SEEDS = (40, 50, (0, 1, 2)) if FAST else (64, 400, (0, 1, 2, 3, 4))
SMALL_TRAIN, SMALL_VAL = (64, 32) if FAST else (512, 128)
if REHEARSAL:
    SMALL_STEPS, SMALL_SEEDS, SMALL_TRAIN, SMALL_VAL = 2, (0, 1), 16, 16
PERSON = ScenesDataset.CLASSES.index("person")


def people(length: int, seed: int):
    """Scenes as a binary task: images (N, 3, H, W), person masks (N, H, W) of 0/1 and the
    instance ids of the people (N, H, W), 0 on every other pixel."""
    scenes = ScenesDataset(length=length, image_size=SMALL_SIZE, seed=seed, return_instances=True)
    images, masks, instances = (torch.stack(t) for t in zip(*(scenes[i] for i in range(length))))
    is_person = masks == PERSON
    return images, is_person.long(), torch.where(is_person, instances, 0)


people_x, people_y, _ = people(SMALL_TRAIN, seed=0)
people_val_x, people_val_y, people_val_ids = people(SMALL_VAL, seed=1)
sizes = torch.cat([torch.bincount(ids.flatten())[1:] for ids in people_val_ids])
sizes = sizes[sizes > 0]  # pixels of each person in the validation images
print(
    f"{SMALL_SIZE}x{SMALL_SIZE} scenes: person pixels {people_y.float().mean().item():.1%} "
    f"(training), {people_val_y.float().mean().item():.1%} (validation)"
)
print(
    f"{len(sizes)} people in {SMALL_VAL} validation images, {sizes.min().item()} to "
    f"{sizes.max().item()} pixels each, median {sizes.median().item()}"
)


# %%
SMALL_OBJECT_LOSSES = {
    name: LOSS_FUNCTIONS[name]
    for name in ("BCE", "Focal (γ=2)", "Tversky (α=0.3, β=0.7)", "Lovász hinge")
}


def small_object_scores(model: UNet) -> dict:
    """Person IoU, object recall and the share of pixels predicted person, on the validation set."""
    with torch.no_grad():
        found = torch.cat(
            [
                model(people_val_x[i : i + 16].to(DEVICE))[:, 0].cpu() > 0  # sigmoid > 0.5
                for i in range(0, len(people_val_x), 16)
            ]
        )  # (N, H, W) bool
    cm = metrics.confusion_matrix(found.long(), people_val_y, num_classes=2)
    hits = [
        found[n][ids == k].float().mean().item() >= 0.5
        for n, ids in enumerate(people_val_ids)
        for k in ids.unique()[1:].tolist()  # one person at a time, 0 left out
    ]
    return {
        "iou": metrics.iou_per_class(cm)[1].item(),
        "recall": float(np.mean(hits)),
        "predicted": found.float().mean().item(),
    }


small_results = {
    name: [
        small_object_scores(train_unet(fn, seed, people_x, people_y, SMALL_STEPS))
        for seed in SMALL_SEEDS
    ]
    for name, fn in SMALL_OBJECT_LOSSES.items()
}

# %%
print(
    f"{SMALL_STEPS} steps, seeds {list(SMALL_SEEDS)}; mean ± standard deviation over the seeds; "
    f"{people_val_y.float().mean().item():.1%} of the pixels are people"
)
print(f"{'loss':24s} {'person IoU':>15s} {'object recall':>15s} {'predicted':>10s}   IoU per seed")
for name, runs in small_results.items():
    iou, recall = (np.array([r[key] for r in runs]) for key in ("iou", "recall"))
    predicted = np.mean([r["predicted"] for r in runs])
    print(
        f"{name:24s} {iou.mean():>7.3f} ± {iou.std():.3f} {recall.mean():>7.3f} ± "
        f"{recall.std():.3f} {predicted:>10.1%}   " + " ".join(f"{v:.3f}" for v in iou)
    )

print("\nEach loss against BCE, seed by seed (same initial weights, same batches):")
for key, label in (("iou", "person IoU"), ("recall", "object recall")):
    baseline = np.array([r[key] for r in small_results["BCE"]])
    for name, runs in small_results.items():
        if name == "BCE":
            continue
        difference = np.array([r[key] for r in runs]) - baseline
        verdict = seed_verdict(difference)
        print(
            f"  {label:13s} {name:24s} {difference.mean():+.3f}  (per seed "
            + " ".join(f"{d:+.3f}" for d in difference)
            + f")  {verdict}"
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
names = list(small_results)
for ax, (key, label) in zip(axes, (("iou", "person IoU"), ("recall", "object recall"))):
    values = np.array([[r[key] for r in small_results[name]] for name in names])  # (losses, seeds)
    ax.bar(range(len(names)), values.mean(1), yerr=values.std(1), capsize=3, color="lightsteelblue")
    for i, row in enumerate(values):
        ax.plot([i] * len(row), row, "k.", markersize=4)  # one dot per seed
    ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], fontsize=8)
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the stored fast-mode run shows (three seeds, a short run; the verdict lines above are
# computed from it):
# - **BCE** predicts far fewer person pixels than there are: the per-pixel average pulls it towards
#   the lazy all-background answer of section 2, and it misses most people.
# - **Tversky** with β > α (a missed person pixel costs more than a false alarm) is ahead of BCE on
#   every seed, in person IoU and in object recall. It pays with false alarms: it predicts more
#   person pixels than there are.
# - The **Lovász hinge** predicts the most person pixels of all; its difference from BCE changes
#   sign with the seed, in IoU and in recall: within seed spread.
# - **Focal** loss did not help here: it predicts even fewer person pixels than BCE, and its
#   difference from BCE is within seed spread (on one seed both found nothing). Spending the
#   gradient on hard pixels is not the same as weighting a rare class; for that, focal loss takes
#   a class weight (`alpha`), which this run leaves out.
#
# Three seeds that agree are weak evidence: were Tversky and BCE equally good, all three seeds
# would favour Tversky by chance one time in eight. Full mode runs five seeds and longer.

# %% [markdown]
# ## 6. Metric pitfalls, with numbers
#
# ### 6.1 Averaging mIoU over batches
# Two batches. In the first, the foreground (10 pixels) is found perfectly; in the second, a
# single foreground pixel is missed. Averaging the per-batch mIoU weighs the 1-pixel miss like the
# 10-pixel success. The correct way sums the confusion matrices and computes the metric once.

# %%
# NBVAL_CHECK_OUTPUT
target_a = torch.zeros(1, 100, dtype=torch.long)
target_a[:, :10] = 1
pred_a = target_a.clone()
target_b = torch.zeros(1, 100, dtype=torch.long)
target_b[:, 0] = 1
pred_b = torch.zeros_like(target_b)

batches = ((pred_a, target_a), (pred_b, target_b))
per_batch = [metrics.mean_iou(metrics.confusion_matrix(p, t, 2)) for p, t in batches]
accumulated = metrics.ConfusionMatrix(num_classes=2)
accumulated.update(pred_a, target_a).update(pred_b, target_b)
print("per-batch mIoU:", [round(v, 3) for v in per_batch], f"-> mean {np.mean(per_batch):.3f}")
print("accumulated confusion matrix -> mIoU", f"{metrics.mean_iou(accumulated.compute()):.3f}")
print(accumulated.compute().tolist())

# %% [markdown]
# ### 6.2 Classes that are absent
# Three classes, but this image only shows classes 0 and 1, and the prediction is perfect.
# Class 2 has IoU 0/0. Our convention: **NaN, left out of the mean**. Counting it as 0 punishes the
# model for a class the data never showed; counting it as 1 rewards it. A class that is absent from
# the target but *predicted* is different: those are false positives, and its IoU is 0.

# %%
# NBVAL_CHECK_OUTPUT
target = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
perfect = target.clone()
iou = metrics.iou_per_class(metrics.confusion_matrix(perfect, target, 3))
print("IoU per class:", [round(v, 3) for v in iou.tolist()])
print(
    f"mIoU, NaN left out: {metrics.mean_iou(metrics.confusion_matrix(perfect, target, 3)):.3f}   "
    f"absent as 0: {torch.nan_to_num(iou, nan=0.0).mean().item():.3f}   "
    f"absent as 1: {torch.nan_to_num(iou, nan=1.0).mean().item():.3f}"
)
false_alarm = torch.tensor([[0, 0, 2, 1, 1, 1, 1, 1]])
cm = metrics.confusion_matrix(false_alarm, target, 3)
print(
    "one pixel wrongly predicted as class 2 -> IoU per class:",
    [round(v, 3) for v in metrics.iou_per_class(cm).tolist()],
    f"mIoU {metrics.mean_iou(cm):.3f}",
)

# %% [markdown]
# ### 6.3 `ignore_index`
# Annotators often leave a thin "void" band (label 255) around objects, where the true boundary is
# uncertain. Those pixels must be left out of both the loss and the metric. Forgetting it is
# caught early: the label 255 does not fit two classes.

# %%
# NBVAL_CHECK_OUTPUT
from scipy import ndimage

void_y = val_y.clone()
for mask in void_y:
    inside = mask.numpy().astype(bool)
    band = ndimage.binary_dilation(inside) & ~inside  # the pixels just outside each nucleus
    mask[torch.from_numpy(band)] = 255
print(f"void pixels: {(void_y == 255).float().mean().item():.3f} of the image")
try:
    metrics.confusion_matrix(torch.zeros_like(void_y), void_y, num_classes=2)
except ValueError as error:
    print("ValueError:", error)

# %%
combined_probs = results["BCE + Dice"][0]["probs"]
pred = (combined_probs > 0.5).long()
with_void_as_background = metrics.confusion_matrix(pred, torch.where(void_y == 255, 0, void_y), 2)
ignoring_void = metrics.confusion_matrix(pred, void_y, 2, ignore_index=255)
for name, cm in (
    ("void counted as background", with_void_as_background),
    ("void ignored", ignoring_void),
):
    print(f"nucleus IoU, {name:26s} {metrics.iou_per_class(cm)[1]:.3f}")
logits = torch.logit(combined_probs.clamp(1e-6, 1 - 1e-6)).unsqueeze(1)
bce = losses.binary_cross_entropy(logits, void_y, ignore_index=255)
print(f"BCE on the same predictions, void ignored: {bce.item():.3f}")

# %% [markdown]
# Most of the model's errors sit on the object outlines, so leaving the uncertain band out changes
# the score noticeably: report which convention was used.
#
# ### 6.4 The threshold of a binary mask
# A binary model outputs probabilities; the mask depends on the threshold, and 0.5 is only a
# default. The threshold is a choice made by looking at data, so it must be chosen on one set of
# images and reported on another; otherwise the report includes the luck of the choice. We split
# the validation images in two halves: the first chooses, the second reports.

# %%
thresholds = np.round(np.arange(0.1, 0.91, 0.1), 2)
half = len(val_y) // 2
choose, report = slice(0, half), slice(half, None)
dice_choose = [
    metrics.dice_per_image(combined_probs[choose] > t, val_y[choose]).mean().item()
    for t in thresholds
]
dice_report = [
    metrics.dice_per_image(combined_probs[report] > t, val_y[report]).mean().item()
    for t in thresholds
]
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.plot(thresholds, dice_choose, marker="o", label=f"images 0-{half - 1}: choose")
ax.plot(thresholds, dice_report, marker="s", label=f"images {half}-{len(val_y) - 1}: report")
ax.set_xlabel("threshold on sigmoid(logits)")
ax.set_ylabel("mean per-image Dice")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
best = int(np.argmax(dice_choose))
at_half = int(np.flatnonzero(thresholds == 0.5)[0])
print(
    f"threshold chosen on the first half: {thresholds[best]} "
    f"(Dice there {dice_choose[at_half]:.3f} at 0.5 -> {dice_choose[best]:.3f})"
)
print(
    f"reported on the second half: Dice {dice_report[at_half]:.3f} at 0.5 -> "
    f"{dice_report[best]:.3f} at {thresholds[best]}"
)
print(
    f"gain seen where it was chosen {dice_choose[best] - dice_choose[at_half]:+.3f}, "
    f"on unseen images {dice_report[best] - dice_report[at_half]:+.3f}"
)

# %% [markdown]
# Compare the two gains: only the second is a measurement. The first is the best of nine tries on
# the images that made the choice, biased upwards on average, the more so the more settings are
# tuned and the fewer images choose them. In a real project the split is a validation set
# (choose) and a test set (report), and the test set is looked at once.

# %% [markdown]
# ### 6.5 Pixel accuracy on imbalanced data
# The lazy "no nucleus anywhere" predictor on the validation images:

# %%
# NBVAL_CHECK_OUTPUT
cm = metrics.confusion_matrix(torch.zeros_like(val_y), val_y, num_classes=2)
print(
    f"pixel accuracy {metrics.pixel_accuracy(cm):.3f}   "
    f"mean class accuracy {metrics.mean_class_accuracy(cm):.3f}   "
    f"nucleus IoU {metrics.iou_per_class(cm)[1].item():.3f}   mIoU {metrics.mean_iou(cm):.3f}"
)

# %% [markdown]
# A model that finds nothing scores 0.82 pixel accuracy. Report per-class IoU (or Dice) and
# the mIoU; pixel accuracy alone says little when one class dominates.
#
# ## 7. The confusion matrix as a picture
#
# A deliberately simple classifier on the street scenes: each pixel gets the class whose mean
# colour (measured on training images) is closest. The row-normalised confusion matrix shows
# *which* classes it confuses, which no single number can.

# %%
scenes_train = ScenesDataset(length=8, image_size=96, seed=0)
scenes_val = ScenesDataset(length=8, image_size=96, seed=1)
num_classes = ScenesDataset.num_classes
colour_sum = torch.zeros(num_classes, 3, dtype=torch.float64)
colour_count = torch.zeros(num_classes, dtype=torch.float64)
for image, mask in (scenes_train[i] for i in range(len(scenes_train))):
    pixels, labels = image.reshape(3, -1).T.double(), mask.reshape(-1)  # (P, 3), (P,)
    colour_sum.index_add_(0, labels, pixels)
    colour_count += torch.bincount(labels, minlength=num_classes)
mean_colour = colour_sum / colour_count[:, None]  # (K, 3)

scene_cm = metrics.ConfusionMatrix(num_classes)
for image, mask in (scenes_val[i] for i in range(len(scenes_val))):
    distance = torch.cdist(image.reshape(3, -1).T.double(), mean_colour)  # (P, K)
    scene_cm.update(distance.argmin(dim=1).view_as(mask), mask)
cm = scene_cm.compute()
iou = metrics.iou_per_class(cm).tolist()
print("IoU per class:", {name: round(v, 3) for name, v in zip(ScenesDataset.CLASSES, iou)})
print(f"mIoU {metrics.mean_iou(cm):.3f}   pixel accuracy {metrics.pixel_accuracy(cm):.3f}")

# %%
rows = cm.double() / cm.sum(dim=1, keepdim=True).clamp(min=1)  # recall per row
fig, ax = plt.subplots(figsize=(4.8, 4.2))
ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
for t in range(num_classes):
    for p in range(num_classes):
        ax.text(
            p,
            t,
            f"{rows[t, p]:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if rows[t, p] > 0.5 else "black",
        )
ax.set_xticks(range(num_classes), ScenesDataset.CLASSES, rotation=45, ha="right")
ax.set_yticks(range(num_classes), ScenesDataset.CLASSES)
ax.set_xlabel("predicted class")
ax.set_ylabel("target class (rows sum to 1)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Boundary metrics
#
# On a large object, an outline that is off by two pixels barely moves the IoU. Boundary metrics
# look only near the contours: Boundary IoU (the IoU of the bands of width `d` inside each
# outline; by default `d` is 2 % of the image diagonal, 3 pixels here), the boundary F-score
# (contour pixels matched within a tolerance) and the Hausdorff distances (how far the outlines
# are apart, in pixels).

# %%
# NBVAL_CHECK_OUTPUT
square = torch.zeros(96, 96, dtype=torch.bool)
square[16:80, 16:80] = True
print(
    f"{'shift':>5s} {'IoU':>6s} {'Boundary IoU':>13s} {'Boundary F (tol 1)':>19s} {'HD95':>6s} "
    f"{'ASSD':>6s}"
)
for shift in (0, 1, 2, 4):
    moved = torch.roll(square, shifts=shift, dims=1)  # the square moved `shift` pixels to the right
    print(
        f"{shift:>5d} {metrics.iou_per_image(moved[None], square[None]).item():>6.3f} "
        f"{metrics.boundary_iou(moved, square):>13.3f} "
        f"{metrics.boundary_f1(moved, square, tolerance=1):>19.3f} "
        f"{metrics.hausdorff_distance(moved, square, percentile=95):>6.2f} "
        f"{metrics.average_surface_distance(moved, square):>6.2f}"
    )

# %% [markdown]
# ## Summary
#
# - Losses take logits. Binary losses use a sigmoid on one channel, multiclass losses a softmax
#   over K channels with an integer target; `ignore_index` removes pixels from both prediction
#   and target. `course_lib.losses` checks shapes and labels and says what is wrong.
# - Per-pixel losses (BCE, CE, focal) average over pixels and follow the majority class; overlap
#   losses (Dice, Tversky, Lovász) divide each class's overlap by that class's own mass (the
#   multiclass versions then average over classes). Measured on small objects (section 5, fast mode:
#   three seeds, a short run): Tversky with β > α found more of the people than BCE on every seed, with
#   more false alarms; the Lovász hinge and focal loss stayed within the seed spread of BCE.
#   Combining a per-pixel and an overlap loss is the common default.
# - Exclusive classes need the softmax Dice; a sigmoid on K logits answers K separate questions.
# - Choose a threshold (or any setting) on one set of images and report on another.
# - Evaluate with one confusion matrix accumulated over the whole data set (and summed over
#   processes with `ConfusionMatrix.all_reduce` under `torch.distributed`), never with an average
#   of per-batch scores.
# - Say how absent classes count: here NaN and left out of every mean; a predicted but absent class
#   scores 0.
# - Pixel accuracy hides small classes; HD95 and boundary metrics see outline errors that the IoU
#   of a large object does not.
#
# **Exercise 05** asks you to write a multiclass soft Dice loss, a focal loss, the confusion matrix
# with `ignore_index` and the mIoU with the NaN policy. Check it with `python -m course_grader
# ex05`, or from this notebook:

# %%
from course_grader import check

check("ex05")
