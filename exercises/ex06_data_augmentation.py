"""Exercise 06: data for segmentation.

Three small functions every segmentation pipeline needs:
1. `resize_and_flip`: a joint image/mask transform. The image is interpolated bilinearly, the
   mask with nearest neighbour, so the mask only ever holds labels that were in the input.
2. `one_hot`: labels `(H, W)` -> one channel per class `(K, H, W)`, the form Dice losses use.
3. `class_weights`: per-class loss weights from pixel frequencies, inverse frequency or
   median-frequency balancing (Eigen & Fergus, 2015), for datasets where one class dominates.

Check your work with `python -m course_grader ex06`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_and_flip(
    image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], hflip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image and its mask to `size` and, when `hflip` is True, mirror both left-right.

    image: (C, H, W) float; mask: (H, W) int64 labels; size: (H_out, W_out).
    - the image is resized bilinearly (`align_corners=False`, no antialiasing), as
      `torch.nn.functional.interpolate(..., mode="bilinear")` does;
    - the mask is resized with nearest neighbour: output pixel (i, j) takes the input label at row
      floor(i * H / H_out) and column floor(j * W / W_out), as `mode="nearest"` does, so no label is
      ever invented;
    - both are flipped along the width when `hflip` is True, so they stay aligned.
    Returns (image (C, H_out, W_out) float32, mask (H_out, W_out) int64).
    Raises ValueError when image is not (C, H, W), mask is not (H, W) with the image's H and W,
    or size is not two positive ints.
    """
    # HINT: check the shapes first. F.interpolate wants a batch: image[None] -> (1, C, H, W) with
    # HINT: mode="bilinear", align_corners=False; mask[None, None].float() with mode="nearest",
    # HINT: then [0, 0].long(). torch.flip(x, dims=[-1]) mirrors the last axis.
    raise NotImplementedError


def one_hot(mask: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """One channel per class: (H, W) -> (K, H, W), or (N, H, W) -> (N, K, H, W), float32.

    Channel k is 1.0 where mask == k and 0.0 elsewhere; a pixel equal to `ignore_index` is 0.0 in
    every channel. Raises ValueError when a label is outside [0, num_classes) and not ignore_index.
    """
    # HINT: replace ignored pixels by 0 before torch.nn.functional.one_hot, then zero them again;
    # HINT: one_hot puts the class axis last, so move it with movedim(-1, -3).
    raise NotImplementedError


def class_weights(
    masks: torch.Tensor, num_classes: int, method: str = "inverse", ignore_index: int = 255
) -> torch.Tensor:
    """Per-class loss weights (num_classes,) float32 from a stack of masks (N, H, W).

    Pixels equal to `ignore_index` are not counted. Let c_k be the number of pixels of class k and
    T the number of counted pixels.
    - method="inverse":  w_k = T / (num_classes * c_k)   (1.0 for every class when balanced)
    - method="median":   f_k = c_k / P_k, where P_k counts the pixels of the images in which class k
                         appears; w_k = median of f over the classes that appear / f_k
                         (median-frequency balancing, Eigen & Fergus, 2015). With an even number
                         of classes the median is the mean of the two middle values.
    A class that never appears gets weight 0.0 in both methods.
    Raises ValueError for an unknown method, or a label outside [0, num_classes) and not
    ignore_index.
    """
    # HINT: torch.bincount(masks[valid], minlength=num_classes) counts pixels per class; for
    # HINT: "median", loop over the images and add an image's pixel count to P_k for every
    # HINT: class that appears in it.
    raise NotImplementedError
