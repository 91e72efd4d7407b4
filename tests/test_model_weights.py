"""course_lib.models.weights: copying weights between two implementations, randomising batch norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.models import copy_weights_in_order, randomize_batchnorm


class Named(nn.Module):
    """The layers of `nn.Sequential(conv, bn, relu)` under other names."""

    def __init__(self):
        super().__init__()
        self.convolution = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.norm(self.convolution(x)))


def test_copied_weights_give_the_same_output_whatever_the_names():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    randomize_batchnorm(source, 1)
    target = Named()
    copy_weights_in_order(source, target)
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=0, atol=0)
    assert torch.equal(target.norm.running_var, source[1].running_var)


def test_a_different_layout_is_refused_with_the_tensor_names():
    with pytest.raises(ValueError, match="source has 7 weight tensors .* target 2"):
        copy_weights_in_order(Named(), nn.Conv2d(3, 4, 3))
    swapped = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(
        ValueError,
        match=r"target 0.weight has shape \(4, 3, 1, 1\), source "
        r"convolution.weight \(4, 3, 3, 3\)",
    ):
        copy_weights_in_order(Named(), swapped)


def test_randomize_batchnorm_is_seeded_and_touches_only_batch_norms():
    a, b = Named(), Named()
    b.load_state_dict(a.state_dict())
    conv = a.convolution.weight.clone()
    randomize_batchnorm(a, 3)
    randomize_batchnorm(b, torch.Generator().manual_seed(3))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert torch.equal(a.convolution.weight, conv)
    assert not torch.equal(a.norm.running_var, torch.ones(4))
    assert (a.norm.running_var >= 0.5).all() and (a.norm.running_var <= 1.5).all()
    assert a.norm.weight.requires_grad  # parameters stay parameters
