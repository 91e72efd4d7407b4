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
# # 03 · U-Net
#
# FCN recovers detail by *adding* a few finer score maps at the end. U-Net (Ronneberger, Fischer and
# Brox, 2015) makes the decoder as deep as the encoder and, at every resolution, *concatenates* the
# encoder's feature map to the decoder's: the skip connections carry "where" past the bottleneck,
# which carries "what". Written for cell microscopy with a few dozen training images, it became the
# default network of medical image segmentation.
#
# This lesson writes the two building blocks out, follows the shapes through the network, counts
# its parameters, trains it with and
# without skips on the course's microscopy-like cells, and compares the paper's "valid" padding
# with "same" padding and transposed with bilinear upsampling.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from course_lib import metrics, viz
from course_lib.data import CellsDataset
from course_lib.models import UNet
from course_lib.models.unet import center_crop
from course_lib.utils import count_parameters, course_mode, get_device, rehearsal, seed_everything

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
# ## 1. Shapes through the network
#
# The paper's network has depth 4: four times "two 3×3 convolutions, then 2×2 max pooling" on the
# way down (64, 128, 256, 512 channels), two convolutions with 1024 channels at the bottom, and four
# times "2×2 up-convolution, concatenate the encoder map, two 3×3 convolutions" on the way up. Its
# convolutions have no padding ("valid"), so each one trims 2 pixels.
#
# The picture below is drawn from a `UNet` of the paper's widths (`course_lib.schematics`: one
# forward pass on the `meta` device, so the shapes are the code's own). With "same" padding, as
# here, every level keeps its size, and each skip (orange) joins maps of equal size.

# %%
from course_lib.schematics import draw_architecture

with torch.device("meta"):  # built without memory or random draws: only the shapes are needed
    paper_unet = UNet(in_channels=1, num_classes=2, base_channels=64, depth=4)
fig = draw_architecture(paper_unet, image_size=256)

# %% [markdown]
# ### The two building blocks, written out
#
# Everything in U-Net is made of two pieces. `DoubleConv` is two rounds of "3×3 convolution, batch
# norm, ReLU" (the paper has no batch norm; nearly every later U-Net adds it). One decoder step
# upsamples the coarser map, crops the encoder map of the same level to that size (with valid
# padding the encoder map is larger), concatenates the two along the channels and applies a
# `DoubleConv`.


# %%
def double_conv(in_channels, out_channels, padding=1):
    """Two (3×3 convolution, batch norm, ReLU); padding=0 is the paper's "valid" convolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def decoder_step(x, skip, upsample, decode):
    """One decoder level: upsample x, centre-crop the skip to its size, concatenate, DoubleConv."""
    x = upsample(x)  # (N, C, 2h, 2w): size doubled, channels halved
    top, left = (skip.shape[-2] - x.shape[-2]) // 2, (skip.shape[-1] - x.shape[-1]) // 2
    skip = skip[..., top : top + x.shape[-2], left : left + x.shape[-1]]  # (N, C, 2h, 2w)
    x = torch.cat([skip, x], dim=1)  # (N, 2C, 2h, 2w): the encoder's "where" next to the "what"
    return decode(x)  # (N, C, 2h - 4, 2w - 4) with valid padding


# %% [markdown]
# Checked against `course_lib`: our `double_conv` with the weights of the library's first encoder
# level gives the same numbers, and the library's U-Net run level by level with our
# `decoder_step` gives the same logits as its own `forward`.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
reference = UNet(in_channels=1, num_classes=2, base_channels=8, depth=2, padding="valid").eval()
ours = double_conv(1, 8, padding=0).eval()
with torch.no_grad():
    for mine, theirs in zip(ours.state_dict().values(), reference.encoder[0].state_dict().values()):
        mine.copy_(theirs)
    image = torch.rand(1, 1, 92, 92)
    print(
        f"double_conv vs DoubleConv: largest difference "
        f"{(ours(image) - reference.encoder[0](image)).abs().max():.1e}"
    )
    x, skips = image, []
    for encode in reference.encoder:
        skips.append(encode(x))  # (N, C_l, H_l, W_l)
        x = reference.pool(skips[-1])
    x = reference.bottleneck(x)
    for upsample, decode, skip in zip(reference.upsamplers, reference.decoder, reversed(skips)):
        x = decoder_step(x, skip, upsample, decode)
    by_steps, by_forward = reference.head(x), reference(image)
print(
    f"logits {tuple(by_steps.shape)} by decoder_step, {tuple(by_forward.shape)} by forward, "
    f"same: {torch.allclose(by_steps, by_forward, atol=1e-6)}"
)

# %% [markdown]
# The library's `UNet` stacks these pieces; the walk below performs the steps of `UNet.forward` one by one and records each shape. It runs
# on PyTorch's `meta` device, which computes shapes without allocating or computing anything, so
# even the 31-million-parameter network costs nothing here.


# %%
def shape_walk(model, x):
    """The steps of UNet.forward, recording (stage, shape) after each one."""
    rows = [("input", tuple(x.shape))]
    skips = []
    for level, encode in enumerate(model.encoder):
        x = encode(x)
        skips.append(x)
        rows.append((f"encoder {level}: DoubleConv", tuple(x.shape)))
        x = model.pool(x)
        rows.append((f"encoder {level}: max pool", tuple(x.shape)))
    x = model.bottleneck(x)
    rows.append(("bottleneck: DoubleConv", tuple(x.shape)))
    for level, (upsample, decode, skip) in enumerate(
        zip(model.upsamplers, model.decoder, reversed(skips))
    ):
        x = upsample(x)
        rows.append((f"decoder {level}: up-conv", tuple(x.shape)))
        cropped = center_crop(skip, x.shape[-2:])
        rows.append(
            (f"decoder {level}: skip {tuple(skip.shape[-2:])} cropped", tuple(cropped.shape))
        )
        x = torch.cat([cropped, x], dim=1)
        rows.append((f"decoder {level}: concatenated", tuple(x.shape)))
        x = decode(x)
        rows.append((f"decoder {level}: DoubleConv", tuple(x.shape)))
    x = model.head(x)
    rows.append(("head: 1×1 conv", tuple(x.shape)))
    return rows


# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    paper = UNet(
        in_channels=1, num_classes=2, base_channels=64, depth=4, padding="valid", batch_norm=False
    )
    walk = shape_walk(paper, torch.empty(1, 1, 572, 572))
for stage, shape in walk:
    print(f"{stage:<42}{str(shape):>22}")

# %% [markdown]
# 572 pixels in, 388 out: the paper's Figure 1. The encoder map of 568×568 is centre-cropped to
# 392×392 before it meets the decoder, because the decoder side has lost more border pixels. The
# output covers only the centre of the input; the paper tiles a large image with overlapping
# 572×572 inputs so that every output pixel has full context ("overlap-tile"), mirroring the image
# at its borders.
#
# ## 2. Parameters of each configuration

# %%
# NBVAL_CHECK_OUTPUT
configurations = {
    "paper (valid, no BN, transposed)": dict(
        in_channels=1, num_classes=2, base_channels=64, depth=4, padding="valid", batch_norm=False
    ),
    "same padding + batch norm": dict(in_channels=1, num_classes=2, base_channels=64, depth=4),
    "same + BN, bilinear upsampling": dict(
        in_channels=1, num_classes=2, base_channels=64, depth=4, upsampling="bilinear"
    ),
    "lesson model (base 8, depth 3)": dict(in_channels=1, num_classes=2, base_channels=8, depth=3),
}
for name, kwargs in configurations.items():
    print(f"{name:<36}{count_parameters(UNet(**kwargs)):>14,}")

# %% [markdown]
# The paper configuration has 31,030,658 parameters (often quoted as 31.03 M). Batch norm, added by
# almost every modern U-Net, costs little: two numbers per channel, minus the now useless conv
# biases. Bilinear upsampling followed by a 1×1 convolution needs a quarter of the up-convolution's
# weights; the difference shows in section 5.
#
# ## 3. What do the skip connections do?
#
# The experiment: two lesson-sized U-Nets, identical except that one concatenates the encoder maps
# and the other decodes from the bottleneck alone (`skip_connections=False`). Same data, same
# initialisation seed, same number of steps. The data are `CellsDataset` images: grey, noisy,
# blurred nuclei of varied sizes that touch each other, like fluorescence microscopy.

# %%
SIZE = 64 if FAST else 256
STEPS = 150 if FAST else 2000
BATCH = 8
NUM_TRAIN, NUM_VAL = (64, 16) if FAST else (1000, 200)
if REHEARSAL:
    STEPS, NUM_TRAIN, NUM_VAL = 2, 16, 8
train_set = CellsDataset(length=NUM_TRAIN, image_size=SIZE, seed=0)
val_set = CellsDataset(length=NUM_VAL, image_size=SIZE, seed=1)
fig = viz.show_grid(
    torch.stack([val_set[i][0] for i in range(3)]),
    torch.stack([val_set[i][1] for i in range(3)]),
    class_names=CellsDataset.CLASSES,
    max_rows=3,
)


# %%
def train(model, steps, lr=3e-3):
    """A plain training loop: AdamW, cross-entropy, `steps` mini-batches."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loader = DataLoader(
        train_set,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    step = 0
    while step < steps:
        for images, masks in loader:
            loss = F.cross_entropy(model(images.to(device)), masks.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return loss.item()


@torch.no_grad()
def evaluate(model):
    """Foreground Dice and IoU over the set, boundary F-score and boundary IoU per image."""
    model.eval()
    confusion = metrics.ConfusionMatrix(2)
    boundary_f, boundary_iou, predictions = [], [], []
    for images, masks in DataLoader(val_set, batch_size=8):
        pred = model(images.to(device)).argmax(1).cpu()  # (N, H, W)
        confusion.update(pred, masks)
        boundary_f += [metrics.boundary_f1(p, t, tolerance=1.0) for p, t in zip(pred, masks)]
        boundary_iou += [metrics.boundary_iou(p, t, width=2) for p, t in zip(pred, masks)]
        predictions.append(pred)
    cm = confusion.compute()
    return {
        "dice": float(metrics.dice_per_class(cm)[1]),
        "iou": float(metrics.iou_per_class(cm)[1]),
        "boundary_f1": float(np.mean(boundary_f)),
        "boundary_iou": float(np.mean(boundary_iou)),
        "pred": torch.cat(predictions),
    }


# %%
results = {}
for skips in (True, False):
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=2, base_channels=8, depth=3, skip_connections=skips)
    loss = train(model, STEPS)
    results[skips] = evaluate(model)
    r = results[skips]
    print(
        f"{'with' if skips else 'without':>7} skips: loss {loss:.3f}, Dice {r['dice']:.3f}, IoU {r['iou']:.3f}, "
        f"boundary F {r['boundary_f1']:.3f}, boundary IoU {r['boundary_iou']:.3f}"
    )

# %%
rows = 3
fig, axes = plt.subplots(rows, 5, figsize=(10, 2.1 * rows))
for row in range(rows):
    image, mask = val_set[row]
    with_skips, without = results[True]["pred"][row], results[False]["pred"][row]
    pictures = [
        image[0],
        mask,
        with_skips,
        without,
        (without != mask).float() - (with_skips != mask).float(),
    ]
    titles = ["image", "ground truth", "with skips", "without skips", "red: wrong only without"]
    for col, (picture, title) in enumerate(zip(pictures, titles)):
        ax = axes[row, col]
        ax.imshow(
            picture,
            cmap="gray" if col < 4 else "bwr",
            vmin=-1 if col == 4 else None,
            vmax=1 if col == 4 else None,
            interpolation="nearest",
        )
        ax.set_axis_off()
        if row == 0:
            ax.set_title(title, fontsize=9)
fig.tight_layout()

# %% [markdown]
# Without skips every detail must squeeze through the 8×8 bottleneck (for a 64×64 image) and be
# re-invented by the decoder: nuclei come out as rounded blobs, thin gaps between touching nuclei
# close, small nuclei vanish. The region scores drop somewhat; the boundary scores drop more, and
# the error map (right: red where only the network without skips is wrong, blue where only the one
# with skips is) shows where: along the outlines. With skips the decoder sees the
# full-resolution encoder features next to the upsampled context and only has to decide which
# edges matter.
#
# **Why U-Net dominates medical imaging.** Medical datasets are small (tens to hundreds of annotated
# images: annotation needs experts), the objects have no canonical size or position, and what
# matters clinically is often the exact boundary (a tumour margin, a vessel wall). U-Net answers all
# three: it trains from few images with heavy augmentation, it is fully convolutional, and the
# skips deliver pixel-precise boundaries. Its descendants (3-D U-Net, Attention U-Net, U-Net++,
# nnU-Net) keep the same skeleton.
#
# ## 4. "Valid" versus "same" padding
#
# The paper's valid convolutions never see invented (zero) pixels, at the price of outputs smaller
# than the inputs and of input sizes that must fit the poolings. `UNet.output_size` says which
# sizes work and what comes out; other sizes are refused with the nearest sizes that work.

# %%
# NBVAL_CHECK_OUTPUT
valid = UNet(
    in_channels=1, num_classes=2, base_channels=4, depth=4, padding="valid", batch_norm=False
)
for size in (572, 570, 188, 124):
    out = valid.output_size(size)
    print(f"input {size}: " + (f"output {out}" if out else "does not fit"))
try:
    valid(torch.zeros(1, 1, 570, 572))
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# With `padding="same"` every convolution pads by one pixel, all maps keep their size, and the
# skip maps need no crop. `course_lib`'s U-Net then accepts any size: it pads the input to a
# multiple of `2**depth` and crops the logits back.

# %%
# NBVAL_CHECK_OUTPUT
same = UNet(in_channels=1, num_classes=2, base_channels=4, depth=4).eval()
with torch.no_grad():
    for size in [(64, 64), (65, 97), (7, 13)]:
        print(f"input {size}: logits {tuple(same(torch.zeros(1, 1, *size)).shape)}")

# %% [markdown]
# ## 5. Transposed versus bilinear upsampling
#
# A 2×2 up-convolution with stride 2 stamps one 2×2 kernel per input pixel, without overlap: a flat
# input comes out as a repeating 2×2 pattern until training smooths it. Bilinear interpolation
# followed by a 1×1 convolution is smooth from the start and has fewer parameters, but its
# upsampling cannot be learned.

# %%
torch.manual_seed(0)
transpose_model = UNet(1, 2, base_channels=8, depth=3, upsampling="transpose")
bilinear_model = UNet(1, 2, base_channels=8, depth=3, upsampling="bilinear")
flat = torch.ones(1, 16, 8, 8)  # a flat map with the channels of the finest decoder level
with torch.no_grad():
    by_transpose = transpose_model.upsamplers[-1](flat)[0, 0]
    by_bilinear = bilinear_model.upsamplers[-1](flat)[0, 0]

# %%
# NBVAL_CHECK_OUTPUT
for name, model in (("transpose", transpose_model), ("bilinear", bilinear_model)):
    up = sum(count_parameters(u) for u in model.upsamplers)
    print(f"{name:<10} upsampling parameters {up:>6,}   whole model {count_parameters(model):>8,}")
print(
    f"flat input -> transposed output takes {len(torch.unique(by_transpose))} distinct values, "
    f"bilinear {len(torch.unique(by_bilinear))}"
)

# %%
# one colour scale for both panels: a constant picture drawn on its own scale would show no value
low = min(by_transpose.min(), by_bilinear.min()).item()
high = max(by_transpose.max(), by_bilinear.max()).item()
fig, axes = plt.subplots(1, 2, figsize=(5.6, 2.6))
for ax, picture, title in zip(axes, (by_transpose, by_bilinear), ("2×2 up-conv", "bilinear + 1×1")):
    shown = ax.imshow(picture, cmap="magma", vmin=low, vmax=high)
    ax.set_title(f"{title}: flat input", fontsize=9)
    ax.set_axis_off()
fig.colorbar(shown, ax=axes, shrink=0.8)

# %% [markdown]
# Both work well in practice once trained; bilinear upsampling is the common choice when memory is
# tight or checkerboard patterns appear in the outputs.
#
# ## Summary
#
# - U-Net = an encoder, a decoder of the same depth, and a skip at every level that concatenates
#   encoder features to the decoder's; the skip is a local variable in `forward`, nothing hidden.
# - The paper's valid padding shrinks 572 to 388 and needs centre crops and overlap-tiling; same
#   padding keeps sizes and accepts any input.
# - Removing the skips costs most at boundaries: exactly what medical segmentation cares about.
# - Transposed up-convolutions learn their upsampling; bilinear + 1×1 is cheaper and smooth.
#
# **Exercise 03** (`exercises/ex03_unet.py`): write `DoubleConv`, `center_crop` and the U-Net
# forward pass; the grader copies `course_lib`'s weights into your network and compares outputs.
# Check it with `python -m course_grader ex03`, or from this notebook:

# %%
from course_grader import check

check("ex03")
