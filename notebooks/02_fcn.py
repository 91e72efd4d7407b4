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
# # 02 · Fully Convolutional Networks
#
# In 2015 Long, Shelhamer and Darrell turned image *classifiers* into *segmenters* with two ideas:
#
# 1. a fully connected layer is a convolution in disguise, so a classifier can slide over an image
#    of any size and produce a coarse map of class scores;
# 2. that coarse map is upsampled back to the image with transposed convolutions (learned for the
#    2× steps, fixed bilinear for the final one), and finer encoder maps are added on the way
#    ("skips") to recover detail: FCN-32s, FCN-16s, FCN-8s.
#
# This lesson builds both ideas from scratch, checks them with numbers, trains the three FCN
# variants on the course's synthetic street scenes, and measures what the skips buy at object
# boundaries. It ends with a shape bug that many FCN-8s tutorials contain, why
# `course_lib.models.FCN` does not have it, and an FCN-8s on a ResNet-18 written out in a dozen lines.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import metrics, viz
from course_lib.data import ScenesDataset
from course_lib.models import FCN, bilinear_kernel
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
if FAST:
    torch.set_num_threads(
        1
    )  # tiny models: one thread avoids synchronisation costs and is reproducible
plt.rcParams["figure.dpi"] = 80 if FAST else 100
device = get_device()
print("course mode:", course_mode())

# %% [markdown]
# ## 1. A fully connected layer is a convolution
#
# A classifier ends with feature maps of a fixed size, say `(C, h, w) = (8, 4, 4)`, flattens them
# and applies a linear layer with `C·h·w = 128` inputs. Each output is a weighted sum over the whole
# `(8, 4, 4)` block: exactly what a convolution with an `(8, 4, 4)` kernel computes at one position.
# Reshaping the weight matrix `(5, 128)` into `(5, 8, 4, 4)` gives that convolution.

# %%
torch.manual_seed(0)
fc = nn.Linear(8 * 4 * 4, 5)  # a classifier head: 5 classes
conv = nn.Conv2d(8, 5, kernel_size=4)
with torch.no_grad():
    conv.weight.copy_(fc.weight.view(5, 8, 4, 4))  # (out, C * h * w) -> (out, C, h, w)
    conv.bias.copy_(fc.bias)

features = torch.randn(2, 8, 4, 4)
with torch.no_grad():
    by_fc = fc(features.flatten(1))  # (2, 5)
    by_conv = conv(features)  # (2, 5, 1, 1)

# %%
# NBVAL_CHECK_OUTPUT
print("linear output:", tuple(by_fc.shape), " conv output:", tuple(by_conv.shape))
print("same numbers:", torch.allclose(by_fc, by_conv.flatten(1), atol=1e-6))

# %% [markdown]
# The linear layer only accepts `4×4` maps. The convolution accepts any size: on a larger map it
# *slides*, and every output position is the classifier applied to one `4×4` window. A bigger image
# therefore yields a map of class scores instead of a single vector: a (coarse) segmentation.

# %%
# NBVAL_CHECK_OUTPUT
larger = torch.randn(1, 8, 10, 13)
with torch.no_grad():
    score_map = conv(larger)  # (1, 5, 7, 10)
    window = fc(larger[:, :, 3:7, 5:9].flatten(1))  # the classifier on one window
print("score map:", tuple(score_map.shape))
print(
    "position (3, 5) equals the classifier on that window:",
    torch.allclose(score_map[0, :, 3, 5], window[0], atol=1e-6),
)

# %% [markdown]
# In VGG16, the network FCN starts from, `fc6` sees `512×7×7` pool5 features: it becomes a `7×7`
# convolution with 4096 filters, and `fc7` a `1×1` convolution. `course_lib.models.FCN` loads
# torchvision's VGG16 weights that way when `backbone_weights` is given. The network then has a
# stride of 32: one score per 32×32 block of pixels.

# %% [markdown]
# ## 2. Transposed convolution: learnable upsampling
#
# A transposed convolution runs a convolution "backwards": each *input* pixel stamps a copy of the
# kernel, scaled by its value, onto the output; the stamps sit `stride` pixels apart and overlapping
# stamps add up. The output length along one axis is
#
# $$ \text{out} = (\text{in} - 1)\cdot\text{stride} - 2\cdot\text{padding} + \text{kernel} + \text{output\_padding}. $$
#
# Let us check the formula against PyTorch on a few settings, including the ones FCN uses.


# %%
def transposed_output_size(size, kernel, stride, padding=0, output_padding=0):
    return (size - 1) * stride - 2 * padding + kernel + output_padding


# %%
# NBVAL_CHECK_OUTPUT
settings = [(4, 4, 2, 1, 0), (3, 64, 32, 0, 0), (5, 16, 8, 4, 0), (5, 3, 2, 1, 1), (7, 15, 8, 7, 0)]
print(
    f"{'in':>3} {'kernel':>6} {'stride':>6} {'pad':>3} {'out_pad':>7} | {'formula':>7} {'PyTorch':>7}"
)
for size, kernel, stride, padding, output_padding in settings:
    layer = nn.ConvTranspose2d(1, 1, kernel, stride, padding, output_padding)
    measured = layer(torch.zeros(1, 1, size, size)).shape[-1]
    formula = transposed_output_size(size, kernel, stride, padding, output_padding)
    print(
        f"{size:>3} {kernel:>6} {stride:>6} {padding:>3} {output_padding:>7} | {formula:>7} {measured:>7}"
    )

# %% [markdown]
# ### Bilinear initialisation
#
# FCN initialises its upsampling layers so that they start as *bilinear interpolation*, then lets
# training adjust them. The kernel is a "tent": along each axis the weights fall off linearly from
# the centre (`bilinear_kernel` in `course_lib.models`). With stride `s`, kernel `2s` and padding
# `s/2`, every output pixel receives exactly the two (per axis) nearest input pixels with the
# interpolation weights.

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
for ax, kernel in zip(axes[:2], (4, 16)):
    ax.imshow(bilinear_kernel(1, 1, kernel)[0, 0], cmap="viridis")
    ax.set_title(f"bilinear kernel {kernel}×{kernel} (stride {kernel // 2})", fontsize=9)
    ax.set_axis_off()
axes[2].plot(bilinear_kernel(1, 1, 16)[0, 0, 7].numpy(), "o-")
axes[2].set_title("one row of the 16×16 kernel", fontsize=9)
fig.tight_layout()

# %% [markdown]
# Is it really bilinear interpolation? Compare an 8× transposed convolution with that kernel against
# `F.interpolate(mode="bilinear", align_corners=False)` on a small image.

# %%
torch.manual_seed(1)
small = torch.rand(1, 1, 8, 8)
up8 = nn.ConvTranspose2d(1, 1, kernel_size=16, stride=8, padding=4, bias=False)
with torch.no_grad():
    up8.weight.copy_(bilinear_kernel(1, 1, 16))
    by_transposed = up8(small)  # (1, 1, 64, 64)
by_interpolate = F.interpolate(small, scale_factor=8, mode="bilinear", align_corners=False)
difference = (by_transposed - by_interpolate).abs()[0, 0]

# %%
# NBVAL_CHECK_OUTPUT
print("output size:", tuple(by_transposed.shape[-2:]))
print(f"largest difference inside (8-pixel border excluded): {difference[8:-8, 8:-8].max():.1e}")
print(f"largest difference on the border: {difference.max():.2f}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
pictures = [small[0, 0], by_transposed.detach()[0, 0], by_interpolate[0, 0], difference.detach()]
titles = ["input 8×8", "transposed conv 8×", "F.interpolate 8×", "|difference|"]
for ax, picture, title in zip(axes, pictures, titles):
    ax.imshow(picture, cmap="gray" if title != "|difference|" else "magma")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# Inside the image the two agree to rounding error. On the border the transposed convolution sees
# zeros beyond the image where interpolation repeats the edge pixel, so the border fades out.
# Repeating the edge row and column once before upsampling removes the fade; `models.FCN` does that
# for its ResNet and small encoders (section 4). (The paper's crops, also in section 4, have another
# purpose: they undo its 100-pixel input padding and align the maps.)
#
# ### Checkerboard artefacts
#
# When the kernel size is not a multiple of the stride, the stamps overlap unevenly: some output
# pixels receive more stamps than their neighbours. Counting the stamps per pixel shows it
# directly: apply a transposed convolution with all-ones weights to an all-ones image. We count for
# stride 2 and stride 8, with kernel `2s` (a multiple of the stride) and `2s − 1` (the kernel that
# puts input pixel `y` exactly on output pixel `s·y`, used in section 4).

# %%
flat = torch.ones(1, 1, 16, 16)


def stamps_per_pixel(kernel, stride, padding):
    """Output of an all-ones transposed convolution on an all-ones image: stamps per pixel."""
    layer = nn.ConvTranspose2d(1, 1, kernel, stride, padding, bias=False)
    nn.init.ones_(layer.weight)
    with torch.no_grad():
        return layer(flat)[0, 0]


coverage = {
    (k, st): stamps_per_pixel(k, st, pad)
    for k, st, pad in [(4, 2, 1), (3, 2, 1), (16, 8, 4), (15, 8, 7)]
}

# %%
# NBVAL_CHECK_OUTPUT
for (kernel, stride), counts in coverage.items():
    inner = counts[kernel:-kernel, kernel:-kernel]  # away from the border
    print(
        f"kernel {kernel:>2}, stride {stride}: stamps per interior pixel between "
        f"{inner.min():.0f} and {inner.max():.0f}"
    )

# %% [markdown]
# Kernel `2s − 1` overlaps unevenly: interior pixels get 1, 2 or 4 stamps. Yet the bilinear
# initialisation of such a kernel turns a flat input into a flat output: the tent's taps that land
# on any one output pixel always sum to 1. The uneven overlap is still there, only hidden by the
# weights. A *random* initialisation shows it, and so can training, which is free to move the
# weights away from the tent. Even overlap is not enough either: with kernel `2s` every pixel gets
# the same number of stamps, but of *different* taps, so a random kernel 4 also draws a grid with
# period 2. What makes a flat input come out flat whatever the weights is **resize, then
# convolve** (nearest or bilinear upsampling followed by an ordinary convolution, Odena et al.), or
# keeping the upsampling fixed at bilinear, as FCN does for its final upsampling (section 3).
# The spread (largest minus smallest interior value, relative to the mean) measures the pattern:

# %%
torch.manual_seed(2)
flat_in = torch.ones(1, 1, 16, 16)
upsamplers = {
    "random, kernel 3 (2s − 1)": nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, bias=False),
    "random, kernel 4 (2s)": nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False),
    "bilinear, kernel 3": nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, bias=False),
    "resize, then random 3×3 conv": nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(1, 1, 3, padding=1, bias=False)
    ),
}
with torch.no_grad():
    upsamplers["bilinear, kernel 3"].weight.copy_(bilinear_kernel(1, 1, 3))
    flat_out = {name: layer(flat_in)[0, 0, 4:-4, 4:-4] for name, layer in upsamplers.items()}

# %%
# NBVAL_CHECK_OUTPUT
for name, picture in flat_out.items():
    spread = (picture.max() - picture.min()) / picture.mean().abs()
    print(f"{name:<30} flat input -> relative spread {spread:.2f}")

# %%
# one colour scale for all panels: a flat picture drawn on its own scale would show no value
low = min(picture.min() for picture in flat_out.values()).item()
high = max(picture.max() for picture in flat_out.values()).item()
fig, axes = plt.subplots(1, 4, figsize=(11, 2.8))
for ax, (name, picture) in zip(axes, flat_out.items()):
    shown = ax.imshow(picture, cmap="magma", vmin=low, vmax=high)
    ax.set_title(name, fontsize=8)
    ax.set_axis_off()
fig.suptitle("a flat image upsampled 2× (interior)", fontsize=9)
fig.colorbar(shown, ax=axes, shrink=0.8)

# %% [markdown]
# ## 3. FCN-32s, FCN-16s and FCN-8s
#
# The encoder produces maps at 1/8 (pool3), 1/16 (pool4) and 1/32 (the top) of the image. A `1×1`
# convolution turns each into class scores.
#
# - **FCN-32s** upsamples the 1/32 scores 32× in one step.
# - **FCN-16s** upsamples them 2×, adds the pool4 scores, then upsamples 16×.
# - **FCN-8s** does one more step with pool3, then upsamples 8×.
#
# As in the paper, the 2× upsamplings are learned (initialised to bilinear) and the final one is
# fixed bilinear interpolation. The skip score layers start at zero, so FCN-16s and FCN-8s begin
# exactly as FCN-32s and learn to use the finer maps. `course_lib.models.FCN` implements the
# paper's VGG16 network and ResNet encoders; for this lesson we use its `"small"` encoder (five
# stages of two 3×3 convolutions) so that training takes seconds on a CPU.


# %%
# NBVAL_CHECK_OUTPUT
def upsampling_parameters(model):
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith("upscore"))


print(f"{'model (21 classes)':<40}{'parameters':>12}{'in upsamplers':>15}")
rows = [
    ("small", "32s", False),
    ("small", "16s", False),
    ("small", "8s", False),
    ("small", "32s", True),
    ("resnet18", "8s", False),
    ("vgg16", "8s", False),
]
for backbone, variant, learned in rows:
    model = FCN(num_classes=21, variant=variant, backbone=backbone, learn_final_upsampling=learned)
    name = f"FCN-{variant} {backbone}" + (", final upsampler learned" if learned else "")
    print(f"{name:<40}{count_parameters(model):>12,}{upsampling_parameters(model):>15,}")
del model

# %% [markdown]
# Here is FCN-8s on a ResNet-18 encoder, drawn from the model itself (`course_lib.schematics`
# runs one forward pass of a copy on the `meta` device, shapes without data, and draws each
# block's output): box height grows with the spatial size, box width with the channels. The
# orange arrows are the two skips, from the stride-8 and stride-16 stages, each scored by a 1×1
# convolution and added before the next 2× upsampling.

# %%
from course_lib.schematics import draw_architecture

with torch.device("meta"):  # built without memory or random draws: only the shapes are needed
    fcn8s_resnet = FCN(num_classes=6, variant="8s", backbone="resnet18")
fig = draw_architecture(fcn8s_resnet, image_size=256)

# %% [markdown]
# With the final upsampling fixed, the three variants differ by little: FCN-16s and FCN-8s add a
# 1×1 score layer and a 2× upsampler (21 × 21 filters of 3×3) per skip. A *learned* final
# upsampler is another matter: a transposed convolution from K to K channels with kernel `2f − 1`
# has K·K·(2f − 1)² weights, for FCN-32s 21 · 21 · 63 · 63, more than the whole small encoder, and
# all but the K diagonal filters start at zero. That is the row with the learned final upsampler.
# The VGG16 FCN-8s has 134 million parameters, the figure of Table 1 of the paper; most of them sit
# in `fc6` (a 7×7×512 → 4096 convolution, 103 million). The ResNet-18 version has 11 million.
#
# Now the experiment: the same encoder initialisation, the same data, the same number of steps for
# the three variants. We score them with mIoU (a region metric) and with the boundary F-score
# (`metrics.boundary_f1`: the fraction of contour pixels that lie within 2 pixels of the other
# mask's contour), averaged over the classes present. One training run is one draw: another seed
# (another initialisation and batch order) gives other numbers. So every variant is trained with
# three seeds, and a difference between variants counts only if it is larger than the differences
# between seeds.

# %%
SIZE = 64 if FAST else 192
STEPS = 60 if FAST else 1500
BATCH = 8 if FAST else 16
NUM_TRAIN, NUM_VAL = (96, 16) if FAST else (2000, 200)
VARIANTS = ("32s", "16s", "8s")
SEEDS = (0, 1, 2)  # initialisation and batch order of each run
if REHEARSAL:
    STEPS, BATCH, NUM_TRAIN, NUM_VAL = 2, 4, 16, 8
# Rendered once and kept as tensors: nine runs read the same scenes many times over.
scenes = ScenesDataset(length=NUM_TRAIN, image_size=SIZE, seed=0)
train_set = TensorDataset(*map(torch.stack, zip(*(scenes[i] for i in range(NUM_TRAIN)))))
scenes = ScenesDataset(length=NUM_VAL, image_size=SIZE, seed=1)
val_set = TensorDataset(*map(torch.stack, zip(*(scenes[i] for i in range(NUM_VAL)))))
NUM_CLASSES = ScenesDataset.num_classes
print(
    f"{len(train_set)} training and {len(val_set)} validation scenes of {SIZE}×{SIZE}, "
    f"{NUM_CLASSES} classes: {', '.join(ScenesDataset.CLASSES)}"
)


# %%
def train(model, steps, seed, lr=3e-3):
    """A plain training loop: AdamW, cross-entropy, `steps` mini-batches in the order of `seed`."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loader = DataLoader(
        train_set,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    step = 0
    while step < steps:
        for images, masks in loader:
            logits = model(images.to(device))  # (N, K, H, W)
            loss = F.cross_entropy(logits, masks.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return loss.item()


def mean_boundary_f1(pred, target):
    """Boundary F-score averaged over the classes present in prediction or target."""
    classes = torch.unique(torch.cat([pred.flatten(), target.flatten()]))
    return float(np.mean([metrics.boundary_f1(pred == c, target == c) for c in classes.tolist()]))


@torch.no_grad()
def evaluate(model):
    """mIoU over the validation set, boundary F-score averaged over images, predictions."""
    model.eval()
    confusion = metrics.ConfusionMatrix(NUM_CLASSES)
    scores, predictions = [], []
    for images, masks in DataLoader(val_set, batch_size=8):
        pred = model(images.to(device)).argmax(1).cpu()  # (N, H, W)
        confusion.update(pred, masks)
        scores += [mean_boundary_f1(p, t) for p, t in zip(pred, masks)]
        predictions.append(pred)
    return metrics.mean_iou(confusion.compute()), float(np.mean(scores)), torch.cat(predictions)


# %%
runs = {}  # (variant, seed) -> scores and predictions of one run
for seed in SEEDS:
    for variant in VARIANTS:
        torch.manual_seed(seed)  # within a seed, every variant starts from the same encoder
        model = FCN(num_classes=NUM_CLASSES, variant=variant, backbone="small")
        train(model, STEPS, seed)
        miou, boundary, predictions = evaluate(model)
        runs[variant, seed] = {"miou": miou, "boundary_f1": boundary, "pred": predictions}

# %% [markdown]
# Each row is one variant, each column one seed; the last column is the mean over the seeds and
# their standard deviation (n = 3: a rough measure of the spread, not a precise one).


# %%
def seed_table(metric):
    print(f"{metric:12s}" + "".join(f"  seed {s}" for s in SEEDS) + "   mean ± sd")
    for v in VARIANTS:
        values = np.array([runs[v, s][metric] for s in SEEDS])
        cells = "".join(f"  {x:6.3f}" for x in values)
        print(f"FCN-{v:8s}{cells}   {values.mean():.3f} ± {values.std(ddof=1):.3f}")


def gains(metric, variant):
    """`variant` minus FCN-32s, seed by seed (the same initialisation and batches in each pair)."""
    return np.array([runs[variant, s][metric] - runs["32s", s][metric] for s in SEEDS])


for metric in ("miou", "boundary_f1"):
    seed_table(metric)
    for variant in ("16s", "8s"):
        gain = gains(metric, variant)
        print(
            f"FCN-{variant} - FCN-32s per seed: {', '.join(f'{g:+.3f}' for g in gain)} "
            f"(mean {gain.mean():+.3f})"
        )
    spread = max(np.ptp([runs[v, s][metric] for s in SEEDS]) for v in VARIANTS)
    print(f"widest range over the seeds of one variant: {spread:.3f}\n")

# %%
fig, axes = plt.subplots(1, 2, figsize=(7, 2.6))
for ax, (metric, title) in zip(axes, [("miou", "val mIoU"), ("boundary_f1", "boundary F-score")]):
    for s in SEEDS:
        ax.plot(
            VARIANTS, [runs[v, s][metric] for v in VARIANTS], "o-", alpha=0.6, label=f"seed {s}"
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("FCN variant")
axes[0].legend(fontsize=8)
fig.tight_layout()

# %%
val_images = torch.stack([val_set[i][0] for i in range(3)])
val_masks = torch.stack([val_set[i][1] for i in range(3)])
columns = [("image", None), ("ground truth", val_masks)]
columns += [(f"FCN-{v}", runs[v, SEEDS[0]]["pred"][:3]) for v in VARIANTS]  # first seed
palette = viz.class_palette(ScenesDataset.CLASSES)
fig, axes = plt.subplots(3, len(columns), figsize=(2.0 * len(columns), 6.4))
for row in range(3):
    for col, (title, maps) in enumerate(columns):
        ax = axes[row, col]
        picture = (
            val_images[row].permute(1, 2, 0) if maps is None else viz.colorize(maps[row], palette)
        )
        ax.imshow(picture, interpolation="nearest")
        ax.set_axis_off()
        if row == 0:
            ax.set_title(title, fontsize=9)
fig.legend(
    handles=viz.legend_handles(ScenesDataset.CLASSES, palette=palette),
    loc="lower center",
    ncol=len(ScenesDataset.CLASSES),
    fontsize=8,
    frameon=False,
)
fig.tight_layout(rect=(0, 0.05, 1, 1))

# %% [markdown]
# FCN-32s can only paint blobs: its scores live on a grid of 32×32-pixel cells, and upsampling
# cannot invent detail that is not there. Each skip adds scores computed from a finer map. What the
# three seeds of fast mode show (the tables above):
#
# - FCN-8s is ahead of FCN-32s in every seed and on both metrics, by far more than any variant's
#   score moves from one seed to another. Its lead is larger on the boundary F-score, which looks
#   only at the outlines, than on mIoU, which the interiors of large regions dominate (even a
#   coarse prediction gets those right).
# - FCN-16s is ahead of FCN-32s in every seed too, but by about as much as the seeds differ among
#   themselves: three short runs show a small gain, not its size.
#
# Full mode trains longer on larger scenes; its numbers will differ, and the same tables say which
# differences stand out from the seeds.
#
# ## 4. The classic FCN-8s shape bug
#
# Many tutorial implementations of FCN-8s look like this: floor-mode pooling, then
# `upsample(score) + skip_score` with transposed convolutions that exactly double the size. It works
# on 224×224 or 512×512 images, whose sides divide by 32, and fails on most other sizes; a few
# others pass without a word, which is worse.


# %%
class TutorialFCN8s(nn.Module):
    """The widely copied pattern: sizes only agree when H and W are multiples of 32."""

    def __init__(self, num_classes=3, width=8):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 if i == 0 else width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            )
            for i in range(5)
        )
        self.score5, self.score4, self.score3 = (nn.Conv2d(width, num_classes, 1) for _ in range(3))
        self.up2a = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1)
        self.up2b = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1)
        self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4)

    def forward(self, x):
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        pool3, pool4, pool5 = maps[2], maps[3], maps[4]
        score = self.up2a(self.score5(pool5)) + self.score4(pool4)  # sizes must agree here
        score = self.up2b(score) + self.score3(pool3)  # ... and here
        return self.up8(score)  # ... and 8 * (H / 8) == H only if 8 divides H


# %%
tutorial = TutorialFCN8s()
for height, width in [(224, 224), (375, 500)]:
    try:
        out = tutorial(torch.rand(1, 3, height, width))
        print(f"{height}×{width}: output {tuple(out.shape[-2:])}")
    except RuntimeError as error:
        print(f"{height}×{width}: RuntimeError: {str(error).splitlines()[0]}")

# %% [markdown]
# A Pascal VOC photo of 375×500 pixels breaks it. PyTorch compares the sizes of the two summands
# from the last dimension backwards, so the error names dimension 3, the **width**. Follow the
# width through the five poolings (each halves and rounds down), and the height too:

# %%
# NBVAL_CHECK_OUTPUT
for axis, side in (("height", 375), ("width", 500)):
    sides = [side]
    for _ in range(5):
        sides.append(sides[-1] // 2)  # MaxPool2d(2) rounds down
    print(
        f"{axis:>6}: {' -> '.join(map(str, sides))};  pool5 upsampled 2x: {2 * sides[5]}, "
        f"pool4: {sides[4]}"
    )

# %% [markdown]
# The width's pool5 has 15 columns; doubled, 30, against pool4's 31: the error's "30" and "31". The
# height fails in the same way (11 doubled is 22, against 23); PyTorch reports only the first
# dimension it checks. Which sizes pass? Try every height from 224 to 255 (width 224):

# %%
# NBVAL_CHECK_OUTPUT
exact, short, broken = [], [], []
with torch.no_grad():
    for height in range(224, 256):
        try:
            out_height = tutorial(torch.rand(1, 3, height, 224)).shape[-2]
            (exact if out_height == height else short).append(height)
        except RuntimeError:
            broken.append(height)
print("output as tall as the image:", exact)
print(f"runs, but the output is {out_height} rows for heights", short)
print(f"RuntimeError for {len(broken)} heights: {broken[0]} ... {broken[-1]}")

# %% [markdown]
# Heights 32k + 1 to 32k + 7 run silently: every pooled size is the same as for 32k, and the
# output has 8·⌊H/8⌋ = 32k rows, a few short of the image, with every map misaligned by a fraction
# of a cell. All other heights between two multiples of 32 fail.
#
# `course_lib.models.FCN` is exact for every size, in one of two ways:
#
# - **VGG16, as in the paper**: the first convolution pads the image by 100 pixels, pooling rounds
#   up, and every fused map is *cropped* at fixed offsets (5 for pool4, 9 for pool3, 31 for the
#   final 8s output). Every layer maps coordinates by the same affine rule whatever the image size,
#   so the offsets are constants (`tests/test_fcn.py` derives them from the layer geometry).
# - **ResNet and small encoders**: a pixel `y` of a stride-`s` map sits over image pixel `s·y`. A
#   transposed convolution with kernel `2f-1`, stride `f` and padding `f-1` puts input pixel `y` on
#   output pixel `f·y` and interpolates in between. The last row and column are repeated once
#   before upsampling (with zeros there, the pixels past the last centre would fade, to 7/8 … 1/8 for
#   `f = 8`), and the result is cut to the size of the finer map.

# %%
# NBVAL_CHECK_OUTPUT
for backbone, sizes in [
    ("small", [(375, 500), (97, 131), (33, 35)]),
    ("resnet18", [(97, 131), (33, 35)]),
]:
    ours = FCN(num_classes=3, variant="8s", backbone=backbone).eval()
    with torch.no_grad():
        shapes = [tuple(ours(torch.rand(1, 3, h, w)).shape[-2:]) for h, w in sizes]
    print(f"FCN-8s {backbone}: {shapes}")

# %% [markdown]
# No border is attenuated either: a classifier that answers the same score everywhere (weights zero,
# bias 1) must give exactly that score on every output pixel, corners included.

# %%
# NBVAL_CHECK_OUTPUT
constant_fcn = FCN(num_classes=1, variant="8s", backbone="small").eval()
with torch.no_grad():
    nn.init.zeros_(constant_fcn.score_fr.weight)
    nn.init.ones_(constant_fcn.score_fr.bias)
    constant_out = constant_fcn(torch.rand(1, 3, 97, 131))[0, 0]
print(f"constant score 1 -> output between {constant_out.min():.3f} and {constant_out.max():.3f}")

# %% [markdown]
# ## 5. FCN-8s on a ResNet-18, written out
#
# Everything above fits in a dozen lines on torchvision's ResNet-18: its stages up to `layer2`
# give the 1/8 map, `layer3` the 1/16 and `layer4` the 1/32 map; three 1×1 convolutions score them;
# each coarser score map is upsampled to the size of the next finer one and added; the sum is
# upsampled to the image. Here `F.interpolate` does the upsampling, so every size lines up by
# construction.


# %%
def resize(scores, size):
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


class HandFCN8s(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)
        self.to_c3 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2)  # 1/8
        self.to_c4, self.to_c5 = r.layer3, r.layer4  # 1/16, 1/32
        self.scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in (128, 256, 512))

    def forward(self, x):
        c3 = self.to_c3(x)  # (N, 128, H/8, W/8), sizes rounded up
        c4 = self.to_c4(c3)  # (N, 256, H/16, W/16)
        c5 = self.to_c5(c4)  # (N, 512, H/32, W/32)
        s3, s4, s5 = (score(c) for score, c in zip(self.scores, (c3, c4, c5)))  # (N, K, ., .)
        fused = resize(s5, s4.shape[-2:]) + s4  # FCN-16s: (N, K, H/16, W/16)
        fused = resize(fused, s3.shape[-2:]) + s3  # FCN-8s: (N, K, H/8, W/8)
        return resize(fused, x.shape[-2:]), (c3, c4, c5)  # (N, K, H, W) and the encoder maps


# %% [markdown]
# Built after the same seed, the hand-written encoder and the library's hold the same weights, so
# their maps must agree in shape *and* in value; the outputs must agree in shape.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
hand = HandFCN8s(num_classes=21).eval()
torch.manual_seed(0)
library = FCN(num_classes=21, variant="8s", backbone="resnet18").eval()
with torch.no_grad():
    for h, w in [(375, 500), (97, 131), (33, 35)]:
        image = torch.rand(1, 3, h, w)
        hand_out, hand_maps = hand(image)
        library_maps = library.encoder(image)[1:]  # c3, c4, c5 (c2, at 1/4, is not fused)
        same_maps = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(hand_maps, library_maps))
        print(
            f"{h}×{w}: maps {[tuple(m.shape[-2:]) for m in hand_maps]} same values: {same_maps}; "
            f"output {tuple(hand_out.shape[-2:])} vs {tuple(library(image).shape[-2:])}"
        )

# %% [markdown]
# The library differs in its upsampling only: transposed convolutions on the grid of section 4
# (pixel `y` of a stride-`s` map at image pixel `s·y`, where the strided convolutions sampled it),
# learned for the 2× steps and fixed bilinear for the last. `F.interpolate` with
# `align_corners=False` places coarse pixel `y` at `s·y + (s − 1)/2` instead, a few pixels off that
# grid. The sizes agree either way; the positions only on the library's grid. Exercise 02 asks for
# this head as a function, `fcn8s_head`, and grades it on ResNet-18's maps.
#
# With `backbone_weights="DEFAULT"` the library's encoder starts from torchvision's ImageNet weights
# (a download, so full mode only: fast mode never touches the network). Here is the FCN-8s for the
# 21 Pascal VOC classes:

# %%
# NBVAL_CHECK_OUTPUT
voc_fcn = FCN(
    num_classes=21,
    variant="8s",
    backbone="resnet18",
    backbone_weights=None if FAST else pretrained("DEFAULT"),
).eval()
with torch.no_grad():
    voc_logits = voc_fcn(torch.rand(1, 3, 375, 500))
print("logits:", tuple(voc_logits.shape), " parameters:", f"{count_parameters(voc_fcn):,}")

# %% [markdown]
# In full mode the pretrained FCN-8s is fine-tuned on Pascal VOC 2012 (downloaded once, about 2 GB,
# into `COURSE_DATA_DIR`) with `course_lib.engine.fit`; the outline band of the VOC masks (label 255)
# is ignored by the loss and the metrics. Fast mode skips this cell.

# %%
if FAST:
    print("full mode only: fine-tuning FCN-8s ResNet-18 on Pascal VOC 2012")
else:
    from course_lib import engine, transforms
    from course_lib.data import PascalVOCSegmentation

    VOC_SIZE, VOC_BATCH, VOC_EPOCHS = 320, 16, 10
    if REHEARSAL:
        VOC_BATCH, VOC_EPOCHS = 2, 1
    voc_train = PascalVOCSegmentation(
        image_set="train", download=True, transform=transforms.train_transforms(VOC_SIZE, seed=0)
    )
    voc_val = PascalVOCSegmentation(
        image_set="val", transform=transforms.val_transforms((VOC_SIZE, VOC_SIZE))
    )
    voc_history = engine.fit(
        voc_fcn,
        DataLoader(voc_train, batch_size=VOC_BATCH, shuffle=True, num_workers=2, drop_last=True),
        DataLoader(voc_val, batch_size=VOC_BATCH, num_workers=2),
        epochs=VOC_EPOCHS,
        num_classes=21,
        loss_fn=nn.CrossEntropyLoss(ignore_index=255),
        device=device,
        options=engine.FitOptions(lr=1e-3, ignore_index=255, seed=0),
    )
    print(
        f"Pascal VOC val mIoU after {len(voc_history['miou'])} epochs: {voc_history['miou'][-1]:.3f}"
    )
    viz.plot_history(voc_history)

# %% [markdown]
# ## Summary
#
# - A fully connected layer is a convolution whose kernel covers its whole input; as a convolution
#   it slides over larger images and gives a map of scores.
# - A transposed convolution of stride `s` upsamples; initialised with a bilinear kernel it *is*
#   bilinear interpolation, and training can improve it. Kernels that are not a multiple of the
#   stride overlap unevenly; a random or trained kernel can draw checkerboards even when the overlap
#   is even. Resize-then-convolve, or a fixed bilinear kernel (FCN's final upsampling), cannot.
# - Skips from pool4 and pool3 add finer scores; boundaries improve most.
# - Fused maps must be aligned exactly; crops at fixed offsets (the paper) or upsampling onto the
#   strided grid (ours for ResNets) make that hold for every image size.
#
# **Exercise 02** (`exercises/ex02_fcn.py`): the transposed-convolution size formula, the bilinear
# kernel, a linear layer rewritten as a convolution, one skip-fusion step, and the FCN-8s head of
# section 5 on a ResNet-18's maps. Check it with
# `python -m course_grader ex02`, or from this notebook:

# %%
from course_grader import check

check("ex02")
