"""The course map: one table that notebook 00 shows and the README's map is generated from."""

from __future__ import annotations

from dataclasses import dataclass

from course_lib import REPOSITORY_URL

__all__ = ["Lesson", "LESSONS", "colab_url", "course_map_markdown"]


@dataclass(frozen=True)
class Lesson:
    notebook: str  # file stem in notebooks/
    title: str
    teaches: str
    modules: str  # the course_lib modules it builds on
    exercise: str | None  # file stem in exercises/, or None


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "00_setup",
        "Set-up",
        "environment check, device, fast and full mode, how exercises are graded",
        "`utils`",
        None,
    ),
    Lesson(
        "01_segmentation_types",
        "Segmentation types",
        "classification, detection, semantic, instance and panoptic segmentation; output shapes; "
        "connected components; PQ vs mIoU",
        "`data.synthetic`, `viz`, `instances`",
        "ex01_segmentation_types",
    ),
    Lesson(
        "02_fcn",
        "Fully convolutional networks",
        "FC layer as a convolution, transposed convolution (size formula, bilinear init, "
        "checkerboard), FCN-32s/16s/8s skip fusion, ResNet backbone",
        "`models.fcn`",
        "ex02_fcn",
    ),
    Lesson(
        "03_unet",
        "U-Net",
        "encoder, decoder, skip concatenation; shapes through the net; skip ablation; "
        "why it wins in medical imaging",
        "`models.unet`",
        "ex03_unet",
    ),
    Lesson(
        "04_dilated_aspp_deeplab",
        "Dilated convolution, ASPP and DeepLab",
        "dilation, receptive field, gridding, ASPP, output stride 8 vs 16, DeepLabV3/V3+, "
        "CRF refinement",
        "`models.deeplab`, `crf`, `receptive_field`",
        "ex04_deeplab",
    ),
    Lesson(
        "05_losses_metrics",
        "Losses and metrics",
        "CE, Dice, BCE+Dice, Focal, Tversky, Lovász; confusion matrix, IoU/mIoU, Dice, "
        "boundary metrics; pitfalls",
        "`losses`, `metrics`",
        "ex05_losses_metrics",
    ),
    Lesson(
        "06_data_augmentation",
        "Data and augmentation",
        "dataset classes, joint image/mask transforms with albumentations, real datasets",
        "`data`, `transforms`",
        "ex06_data_augmentation",
    ),
    Lesson(
        "07_training",
        "Training end to end",
        "train/evaluate/fit, AMP, schedules, checkpoints, inference (sliding window, TTA), "
        "Dice vs BCE vs combined",
        "`engine`, `inference`",
        "ex07_training",
    ),
    Lesson(
        "08_beyond",
        "Beyond the classics",
        "panoptic pipeline (Mask R-CNN + semantic), PQ vs mIoU, a real-time model, "
        "a SegFormer-style transformer, speed/accuracy of every model",
        "`panoptic`, `models`",
        "ex08_panoptic",
    ),
)


def colab_url(notebook: str) -> str:
    """Open-in-Colab address of `notebooks/<notebook>.ipynb` on the main branch."""
    path = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}.ipynb"


def course_map_markdown(colab_links: bool = True) -> str:
    """The course map as a Markdown table (the README embeds exactly this text)."""
    header = "| # | notebook | teaches | course_lib | exercise |"
    if colab_links:
        header += " Colab |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for lesson in LESSONS:
        number = lesson.notebook[:2]
        exercise = f"`{lesson.exercise}`" if lesson.exercise else ""
        row = (
            f"| {number} | [{lesson.title}](notebooks/{lesson.notebook}.ipynb) | {lesson.teaches} "
            f"| {lesson.modules} | {exercise} |"
        )
        if colab_links:
            badge = "https://colab.research.google.com/assets/colab-badge.svg"
            row += f" [![Open in Colab]({badge})]({colab_url(lesson.notebook)}) |"
        rows.append(row)
    return "\n".join(rows)
