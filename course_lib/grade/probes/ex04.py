"""Probes for exercise 04: the learner's `ASPP` run side by side with `course_lib.models.ASPP`."""

from __future__ import annotations

import torch
from torch import nn

from course_lib.models.deeplab import ASPP as ReferenceASPP

__all__ = ["aspp_outputs"]


def _randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


def aspp_outputs(module, in_channels: int, out_channels: int, atrous_rates: list[int], height: int,
                 width: int, seed: int = 0, batch: int = 2) -> dict:
    """Build the learner's ASPP and the course's, give them the same weights (tensor by tensor, in
    registration order) and BN statistics, and run both in eval mode on one random batch of
    `batch` images (two by default). Returns {"got": learner output, "expected": reference
    output}, each (batch, out_channels, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reference = ReferenceASPP(in_channels, out_channels, tuple(atrous_rates))
    _randomize_batchnorm(reference, generator)
    learner = module.ASPP(in_channels, out_channels, tuple(atrous_rates))
    source, target = list(reference.state_dict().values()), learner.state_dict()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source, target.values())):
        raise ValueError("the layers of ASPP.__init__ were changed; keep the given layers and write forward")
    learner.load_state_dict(dict(zip(target.keys(), source)))
    x = torch.randn(batch, in_channels, height, width, generator=generator)  # (batch, C_in, H, W)
    with torch.no_grad():
        return {"got": learner.eval()(x), "expected": reference.eval()(x)}
