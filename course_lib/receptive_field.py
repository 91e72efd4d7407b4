"""Receptive fields: theoretical (from layer geometry) and effective (measured by gradients).

Theoretical receptive field of a stack of layers, each given as (kernel, stride, dilation)
(Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019):

    k_eff = dilation * (kernel - 1) + 1          effective kernel size of a dilated layer
    r_l   = r_{l-1} + (k_eff_l - 1) * j_{l-1}    receptive field after layer l (r_0 = 1)
    j_l   = j_{l-1} * stride_l                   distance in input pixels between neighbouring outputs (j_0 = 1)

Effective receptive field (Luo et al., "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016): the magnitude of the gradient of one centre output
pixel with respect to the input, (H, W) float; usually a Gaussian-like blob much smaller than the
theoretical square.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "effective_kernel_size",
    "receptive_field",
    "receptive_field_growth",
    "model_layers",
    "effective_receptive_field",
    "gradient_support",
]

Layer = tuple[int, int, int]  # (kernel, stride, dilation)


def effective_kernel_size(kernel: int, dilation: int = 1) -> int:
    """Extent in input pixels of a kernel with `dilation - 1` zeros inserted between its taps."""
    _check_int("kernel", kernel)
    _check_int("dilation", dilation)
    return dilation * (kernel - 1) + 1


def receptive_field_growth(layers: Iterable[Sequence[int]]) -> list[int]:
    """Receptive field after each layer of `layers`, a sequence of (kernel, stride, dilation)."""
    sizes, size, jump = [], 1, 1
    for index, layer in enumerate(layers):
        kernel, stride, dilation = _check_layer(index, layer)
        size += (effective_kernel_size(kernel, dilation) - 1) * jump
        jump *= stride
        sizes.append(size)
    return sizes


def receptive_field(layers: Iterable[Sequence[int]]) -> int:
    """Receptive field (pixels, one side) of the last layer of a stack of (kernel, stride, dilation)."""
    sizes = receptive_field_growth(layers)
    return sizes[-1] if sizes else 1


def model_layers(model: nn.Module, skip: Sequence[str] = ("downsample",)) -> list[Layer]:
    """(kernel, stride, dilation) of the Conv2d / MaxPool2d / AvgPool2d layers of `model`, height axis.

    Layers are taken in registration order, which is the data path of a plain stack (VGG, a
    U-Net encoder). In residual networks a shortcut projection runs parallel to the main path; the
    submodules whose name contains an entry of `skip` (torchvision ResNets call them `downsample`)
    are left out, so `receptive_field(model_layers(resnet))` is the field along the longest path.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = []
    for name, module in model.named_modules():
        if any(part in skip for part in name.split(".")):
            continue
        if isinstance(module, nn.Conv2d):
            layers.append((module.kernel_size[0], module.stride[0], module.dilation[0]))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = _first(module.kernel_size), _first(module.stride)
            dilation = _first(getattr(module, "dilation", 1))
            layers.append((kernel, stride, dilation))
    return layers


def effective_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    num_samples: int = 4,
    seed: int = 0,
    output_index: Sequence[int] | None = None,
) -> torch.Tensor:
    """Mean |d output[centre] / d input| over `num_samples` random inputs, as an (H, W) image in [0, 1].

    `input_shape` is (C, H, W). The output pixel is the centre of the model's output map unless
    `output_index` = (row, col) names another one; the gradient of the sum over output channels at
    that pixel is taken, summed over input channels, averaged over samples and divided by its
    maximum. The model is run in eval mode (BN uses running statistics) and restored afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if len(input_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) positive ints, got {tuple(input_shape)!r}")
    _check_int("num_samples", num_samples)
    was_training = model.training
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(input_shape[1:], dtype=torch.float64)
    try:
        for _ in range(num_samples):
            x = torch.randn((1, *input_shape), generator=generator).to(device).requires_grad_(True)
            out = model(x)  # (1, K, H_out, W_out)
            if out.ndim != 4:
                raise ValueError(f"model output must be (N, K, H, W), got shape {tuple(out.shape)}")
            row, col = (
                output_index if output_index is not None else (out.shape[2] // 2, out.shape[3] // 2)
            )
            out[0, :, row, col].sum().backward()
            total += x.grad[0].abs().sum(dim=0).double().cpu()  # (H, W)
    finally:
        model.train(was_training)
    peak = total.max()
    return (total / peak if peak > 0 else total).float()


def gradient_support(erf: torch.Tensor, threshold: float = 0.0) -> tuple[int, int]:
    """(height, width) of the bounding box of the pixels of `erf` (H, W) above `threshold`."""
    if not isinstance(erf, torch.Tensor) or erf.ndim != 2:
        raise ValueError(
            f"erf must be an (H, W) tensor, got {getattr(erf, 'shape', type(erf).__name__)}"
        )
    rows = torch.nonzero((erf > threshold).any(dim=1)).flatten()
    cols = torch.nonzero((erf > threshold).any(dim=0)).flatten()
    if rows.numel() == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _check_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_layer(index: int, layer) -> Layer:
    if not isinstance(layer, (tuple, list)) or len(layer) != 3:
        raise ValueError(f"layers[{index}] must be (kernel, stride, dilation), got {layer!r}")
    for name, value in zip(("kernel", "stride", "dilation"), layer):
        _check_int(f"layers[{index}] {name}", value)
    return tuple(layer)
