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
# # 00 · Set-up
#
# Welcome to **Semantic Segmentation with PyTorch**. This first notebook checks that your
# environment works, shows which device the course will use, explains the two course modes,
# and walks you through doing and checking an exercise.
#
# Run the cells from top to bottom (`Shift+Enter`). The first cell only does something on
# Google Colab, where it installs the course package; on your own machine it is a no-op.

# %% [markdown]
# ## 1. Your environment
#
# `course_lib` is the course's companion package: every notebook imports its models, losses,
# metrics and plotting helpers from it. `environment_report()` collects the versions that matter.

# %%
from course_lib import utils

for key, value in utils.environment_report().items():
    if key not in ("platform", "data dir"):
        print(f"{key:>16}: {value}")

# %% [markdown]
# ## 2. Device: CPU, CUDA or Apple MPS
#
# `get_device()` picks a CUDA GPU when there is one (Colab: *Runtime → Change runtime type → GPU*),
# then Apple's MPS, then the CPU. Every model and tensor in the course is moved with `.to(device)`,
# so the same code runs everywhere.

# %%
import torch

device = utils.get_device()
x = torch.randn(2, 3, 64, 64, device=device)
print("device type:", device.type)
print("a batch of images lives on:", x.device.type, "with shape", tuple(x.shape))

# %% [markdown]
# ## 3. Fast mode and full mode
#
# | mode | when | data | training |
# |---|---|---|---|
# | `fast` | no GPU (a laptop CPU, CI) | synthetic scenes and cells, generated in milliseconds, no download | seconds per run, small images and widths |
# | `full` | a CUDA GPU is present (Colab) | real datasets (Oxford-IIIT Pet, Pascal VOC, medical folders) | pretrained encoders, longer schedules |
#
# The mode is chosen automatically; set the environment variable `COURSE_MODE=fast` or
# `COURSE_MODE=full` to override it. Real datasets are cached in `COURSE_DATA_DIR`
# (default `~/.cache/course_lib`).

# %%
# NBVAL_CHECK_OUTPUT
import os

os.environ["COURSE_MODE"] = "fast"
print("course mode with COURSE_MODE=fast:", utils.course_mode())
os.environ["COURSE_MODE"] = "full"
print("course mode with COURSE_MODE=full:", utils.course_mode())
os.environ["COURSE_MODE"] = "fast"

# %% [markdown]
# Results are reproducible: `seed_everything` seeds Python, NumPy and PyTorch, so the same
# cell prints the same numbers on every run.

# %%
# NBVAL_CHECK_OUTPUT
utils.seed_everything(0)
first = torch.rand(3)
utils.seed_everything(0)
second = torch.rand(3)
print("same numbers after re-seeding:", torch.equal(first, second))

# %% [markdown]
# ## 4. The course map

# %%
from IPython.display import Markdown

from course_lib.course import course_map_markdown

Markdown(course_map_markdown(colab_links=False))

# %% [markdown]
# ## 5. A first look at the data
#
# Fast mode uses two synthetic datasets that need no download: street-like *scenes* with several
# object classes, and microscopy-like *cells*. Each sample is an image and a mask that gives every
# pixel a class.

# %%
import matplotlib.pyplot as plt

from course_lib.data import CellsDataset, ScenesDataset
from course_lib.viz import class_palette, colorize, legend_handles

scene_image, scene_mask = ScenesDataset(length=4, image_size=128, seed=0)[0]
cell_image, cell_mask = CellsDataset(length=4, image_size=128, seed=0)[0]
scene_palette = class_palette(ScenesDataset.CLASSES)  # sky blue, road grey, tree green, ...
cell_palette = class_palette(CellsDataset.CLASSES)

fig, axes = plt.subplots(1, 4, figsize=(10, 3.4), dpi=80)
axes[0].imshow(scene_image.permute(1, 2, 0))
axes[0].set_title("scene image")
axes[1].imshow(colorize(scene_mask, scene_palette), interpolation="nearest")
axes[1].set_title("scene mask")
axes[2].imshow(cell_image[0], cmap="gray")
axes[2].set_title("cell image")
axes[3].imshow(colorize(cell_mask, cell_palette), interpolation="nearest")
axes[3].set_title("cell mask")
for ax, names, palette in (
    (axes[1], ScenesDataset.CLASSES, scene_palette),
    (axes[3], CellsDataset.CLASSES, cell_palette),
):
    ax.legend(
        handles=legend_handles(names, palette=palette),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        fontsize=7,
        frameon=False,
    )
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(
    "scene image",
    tuple(scene_image.shape),
    scene_image.dtype,
    "| mask",
    tuple(scene_mask.shape),
    scene_mask.dtype,
)
print(
    "cell image ",
    tuple(cell_image.shape),
    cell_image.dtype,
    "| mask",
    tuple(cell_mask.shape),
    cell_mask.dtype,
)
print("scene classes:", ", ".join(ScenesDataset.CLASSES))

# %% [markdown]
# ## 6. How exercises work
#
# Each lesson from 01 on has an exercise file in `exercises/`, for example
# `exercises/ex01_segmentation_types.py`. It holds functions whose docstrings say what to compute
# and whose bodies contain a hint and `raise NotImplementedError`. Replace that line with your code.
#
# Check your work at any time, from a terminal in the course folder:
#
# ```bash
# python -m course_grader ex01
# ```
#
# or from a notebook cell, as below. The grader runs the graded tests in a separate process (a
# mistake in your file can never crash this notebook) and prints one row per test: the points you
# earned, the points possible, and the first line of what went wrong. The instructor also runs
# hidden tests, so make your functions right, not only the visible cases.
#
# Untouched, every exercise scores zero:

# %%
from course_grader import check

check("ex01")  # prints the table, then the one-line summary it returns

# %% [markdown]
# The reference answers live in `solutions/`; an instructor can check that they earn full marks
# with `python -m course_grader ex01 --target solutions`.
#
# Next: **01 · Segmentation types**.
