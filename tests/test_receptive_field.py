"""Receptive fields: the formula against known values and against the support of a measured
gradient; the effective receptive field image."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from course_lib.receptive_field import (
    effective_kernel_size,
    effective_receptive_field,
    gradient_support,
    model_layers,
    receptive_field,
    receptive_field_growth,
)


@pytest.mark.parametrize(
    "layers, expected",
    [
        ([], 1),
        ([(3, 1, 1)] * 3, 7),  # three 3x3 convs see as far as one 7x7 (VGG, Sec. 2.3)
        ([(3, 1, 1), (3, 1, 2), (3, 1, 4)], 15),  # dilations 1, 2, 4: 1 + 2 + 4 + 8
        ([(2, 2, 1)] * 4, 16),  # four 2x2 poolings: a 16x16 tile
        ([(7, 2, 1), (3, 2, 1), (3, 1, 1)], 19),  # ResNet stem then one 3x3: 7 + 2*2 + 2*4
    ],
)
def test_formula_on_hand_computed_stacks(layers, expected):
    assert receptive_field(layers) == expected


def test_growth_is_linear_for_plain_and_exponential_for_doubling_dilation():
    assert receptive_field_growth([(3, 1, 1)] * 5) == [3, 5, 7, 9, 11]
    assert receptive_field_growth([(3, 1, 2**i) for i in range(5)]) == [3, 7, 15, 31, 63]


def test_known_values_of_vgg16_and_resnet50():
    assert receptive_field(model_layers(torchvision.models.vgg16().features)) == 212  # pool5
    assert receptive_field(model_layers(torchvision.models.resnet50())) == 427


def test_effective_kernel_size():
    assert [effective_kernel_size(3, d) for d in (1, 2, 6, 12)] == [3, 5, 13, 25]
    with pytest.raises(ValueError, match="dilation must be a positive int"):
        effective_kernel_size(3, 0)


def _stack(layers):
    convs = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in layers]
    for conv in convs:
        nn.init.constant_(conv.weight, 1.0)  # positive weights: no cancellation in the gradient
    return nn.Sequential(*convs)


@pytest.mark.parametrize(
    "layers",
    [
        [(3, 1, 1)] * 4,
        [(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)],
        [(5, 2, 1), (3, 1, 3), (3, 2, 1), (3, 1, 2)],
        [(2, 2, 1), (3, 1, 1), (2, 2, 1), (3, 1, 2)],
    ],
)
def test_formula_equals_support_of_measured_gradient(layers):
    model = _stack(layers)
    assert model_layers(model) == layers
    rf = receptive_field(layers)
    erf = effective_receptive_field(model, (1, rf + 40, rf + 40), num_samples=1)
    assert gradient_support(erf) == (rf, rf)


def test_effective_receptive_field_is_normalised_and_model_mode_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)
    )
    model.train()
    erf = effective_receptive_field(model, (3, 15, 15), num_samples=3)
    assert erf.shape == (15, 15) and erf.max() == 1.0 and erf.min() >= 0
    assert model.training
    assert gradient_support(erf) == (5, 5)


def test_model_layers_skips_parallel_shortcuts():
    resnet = torchvision.models.resnet18()
    layers = model_layers(resnet)
    assert len(layers) == 1 + 1 + 16  # stem conv, max pool, 16 convs of the basic blocks
    assert len(model_layers(resnet, skip=())) == 18 + 3  # with the three 1x1 shortcut projections


def test_input_checks():
    with pytest.raises(ValueError, match=r"layers\[1\] must be \(kernel, stride, dilation\)"):
        receptive_field([(3, 1, 1), (3, 1)])
    with pytest.raises(ValueError, match=r"layers\[0\] stride must be a positive int"):
        receptive_field([(3, 0, 1)])
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        model_layers("resnet")
    with pytest.raises(ValueError, match="input_shape must be"):
        effective_receptive_field(nn.Conv2d(1, 1, 3), (8, 8))
    with pytest.raises(ValueError, match="erf must be an"):
        gradient_support(torch.zeros(3))
