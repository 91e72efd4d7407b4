"""Probes for exercise 07: tiny seeded models and loaders handed to the learner's loops.

A case is made in the test's process from its seed (`case_data`): the model's weights, the images
and the targets, as plain data. The test runs the course's `engine` on `build_case(...)` (the same
case, rebuilt from that data) as the reference; the worker rebuilds the case from the data it is
sent, runs the learner's loop on it and returns only what the loop produced.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "TinyNet",
    "build_case",
    "case_data",
    "case_from_data",
    "train_one_epoch_run",
    "train_one_epoch_weighted_run",
    "evaluate_run",
    "evaluate_fixed_logits",
    "FixedLogits",
]


class TinyNet(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> Dropout -> conv 1x1: train/eval mode changes its output."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout2d(0.3)
        self.conv2 = nn.Conv2d(6, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(torch.relu(self.bn(self.conv1(x)))))  # (N, K, H, W)


def case_data(
    seed: int, num_images: int, batch_size: int, num_classes: int = 3, size: int = 8
) -> dict:
    """Plain data of a seeded case: {"weights": TinyNet's state_dict, "images" (N, 1, size, size),
    "targets" (N, size, size), "batch_size", "num_classes"}. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyNet(num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.rand(num_images, 1, size, size, generator=generator)
    # Labels follow the brightness, so the task is learnable and every class appears.
    targets = (images[:, 0] * num_classes).long().clamp(max=num_classes - 1)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    return {
        "weights": weights,
        "images": images,
        "targets": targets,
        "batch_size": batch_size,
        "num_classes": num_classes,
    }


def case_from_data(data: dict) -> tuple[nn.Module, DataLoader, torch.optim.Optimizer]:
    """(model, loader, optimizer) of a case: SGD with momentum, no shuffling."""
    model = TinyNet(num_classes=int(data["num_classes"]))
    model.load_state_dict(data["weights"])
    dataset = TensorDataset(data["images"], data["targets"])
    loader = DataLoader(dataset, batch_size=int(data["batch_size"]), shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, loader, optimizer


def build_case(
    seed: int, num_images: int, batch_size: int, num_classes: int = 3, size: int = 8
) -> tuple[nn.Module, DataLoader, torch.optim.Optimizer]:
    """(model, loader, optimizer) of the case `case_data(seed, ...)` describes."""
    return case_from_data(case_data(seed, num_images, batch_size, num_classes, size))


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().double() for t in model.state_dict().values()])


def train_one_epoch_run(module: ModuleType, data: dict, rng_seed: int) -> dict:
    """Run the learner's `train_one_epoch` once on the case `data` (see `case_data`), the model in
    eval mode beforehand; the RNG is seeded with `rng_seed` for dropout.

    Returns {"loss": float, "weights": all state_dict values flattened (float64), "training": bool}.
    """
    model, loader, optimizer = case_from_data(data)
    model.eval()  # the learner must switch to training mode
    torch.manual_seed(rng_seed)
    loss = module.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, "cpu")
    return {"loss": float(loss), "weights": _weights(model), "training": model.training}


def train_one_epoch_weighted_run(
    module: ModuleType, data: dict, rng_seed: int, class_weight: list[float], label_smoothing: float
) -> dict:
    """`train_one_epoch_run` with `loss_fn = nn.CrossEntropyLoss(weight=class_weight,
    label_smoothing=label_smoothing)` instead of the plain cross-entropy.

    Returns {"loss": float, "weights", "training", "loss_is_float": whether the returned value is
    a Python float, "loss_type": the name of its type}.
    """
    model, loader, optimizer = case_from_data(data)
    model.eval()
    loss_fn = nn.CrossEntropyLoss(
        weight=torch.tensor(class_weight, dtype=torch.float32), label_smoothing=label_smoothing
    )
    torch.manual_seed(rng_seed)
    loss = module.train_one_epoch(model, loader, loss_fn, optimizer, "cpu")
    return {
        "loss": float(loss),
        "weights": _weights(model),
        "training": model.training,
        "loss_is_float": isinstance(loss, float),
        "loss_type": type(loss).__name__,
    }


def evaluate_run(module: ModuleType, data: dict) -> dict:
    """Run the learner's `evaluate` twice on the case `data` (untrained, in train mode).

    Returns the first result (tensors and floats) plus "repeat_miou" of the second call and
    "weights_unchanged" (evaluation must not train).
    """
    model, loader, _ = case_from_data(data)
    model.train()
    before = _weights(model)
    num_classes = int(data["num_classes"])
    first = module.evaluate(model, loader, num_classes, "cpu")
    second = module.evaluate(model, loader, num_classes, "cpu")
    return {
        "confusion_matrix": first["confusion_matrix"],
        "iou_per_class": first["iou_per_class"],
        "miou": float(first["miou"]),
        "repeat_miou": float(second["miou"]),
        "weights_unchanged": bool(torch.equal(before, _weights(model))),
    }


class FixedLogits(nn.Module):
    """Returns the stored logits of image i for the images tagged i (first pixel value = i)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()] + 0 * self.anchor  # (N, K, H, W)


def evaluate_fixed_logits(
    module: ModuleType, logits: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> dict:
    """The learner's `evaluate` on a model that outputs the given logits (N, K, H, W) for targets
    (N, H, W), batched by `batch_size`. Returns its dict with "miou" as a float."""
    n, k, height, width = logits.shape
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, height, width)
    loader = DataLoader(TensorDataset(images.contiguous(), targets), batch_size=batch_size)
    result = module.evaluate(FixedLogits(logits), loader, k, "cpu")
    return {
        "confusion_matrix": result["confusion_matrix"],
        "iou_per_class": result["iou_per_class"],
        "miou": float(result["miou"]),
    }
