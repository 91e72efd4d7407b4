"""Exercise 07: the training loop, an evaluation over a whole data set, the poly schedule.

Three functions from notebook 07:
1. `poly_lr`: DeepLab's polynomial learning-rate decay for one optimiser step.
2. `train_one_epoch`: one pass over a loader, one optimiser step per batch, the mean loss per image.
3. `evaluate`: one confusion matrix accumulated over every batch, and the IoU computed once from it
   (not an average of per-batch scores).

Shapes: images (N, C, H, W) float, targets (N, H, W) int64 in [0, K), logits (N, K, H, W).
Check your work with `python -m course_grader ex07`.
"""

from __future__ import annotations

import torch


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """Learning rate at optimiser step `step` (0-based) of `total_steps`:

        base_lr * (1 - step / total_steps) ** power

    and 0.0 from `step == total_steps` on (never negative, never a complex number).
    """
    # BEGIN SOLUTION
    # HINT: clamp the fraction left, 1 - step / total_steps, at 0 before raising it to `power`.
    remaining = max(0.0, 1.0 - step / total_steps)
    return base_lr * remaining**power
    # END SOLUTION


def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu") -> float:
    """Train `model` for one pass over `loader`; return the mean loss per image as a float.

    For every `(images, targets)` batch: move both to `device`, compute `loss_fn(model(images),
    targets)` (a mean over the batch), then zero the gradients, backpropagate and take an optimiser
    step. Put the model in training mode first. The returned value weighs each batch's loss by its
    number of images, so a short last batch counts for what it holds:
        sum over batches of loss_b * n_b  /  sum over batches of n_b
    """
    # BEGIN SOLUTION
    # HINT: model.train(); inside the loop: optimizer.zero_grad(), loss.backward(), optimizer.step().
    # HINT: keep a running sum of loss.item() * images.shape[0] and a running count of images.
    model.train()
    loss_sum, count = 0.0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * images.shape[0]
        count += images.shape[0]
    return loss_sum / count
    # END SOLUTION


def evaluate(model, loader, num_classes: int, device="cpu") -> dict:
    """Data-set metrics of `model` on `loader`, computed from one accumulated confusion matrix.

    Put the model in evaluation mode and switch gradients off. Predicted labels are the argmax of
    the logits over the class dimension. Accumulate `cm[t, p]` = number of pixels of target class t
    predicted as p over ALL batches, then compute once:
        iou_c = cm[c, c] / (row sum c + column sum c - cm[c, c]),  NaN when that union is 0
        miou  = mean of iou_c over the classes whose IoU is not NaN
    Return {"confusion_matrix": (K, K) int64 tensor, "iou_per_class": (K,) float64 tensor,
            "miou": float}.
    """
    # BEGIN SOLUTION
    # HINT: encode each pixel as target * num_classes + prediction and count with torch.bincount(
    # HINT: ..., minlength=num_classes ** 2), reshaped to (K, K); add these counts batch after batch.
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for images, targets in loader:
            predictions = model(images.to(device)).argmax(dim=1).cpu()  # (N, H, W)
            index = targets.reshape(-1) * num_classes + predictions.reshape(-1)
            cm += torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)
    counts = cm.double()
    intersection = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.nan)
    present = iou[~torch.isnan(iou)]
    miou = float(present.mean()) if present.numel() else float("nan")
    return {"confusion_matrix": cm, "iou_per_class": iou, "miou": miou}
    # END SOLUTION
