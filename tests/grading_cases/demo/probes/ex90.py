"""Trusted probe of the demo exercise: builds the learner's Doubler and returns plain tensors."""

import torch


def doubler_output_and_grad(module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of `module.Doubler()` on `x`, and the gradient of its sum with respect to the scale."""
    model = module.Doubler()
    out = model(x)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    if len(grads) != 1 or grads[0] is None:
        raise AssertionError(f"Doubler should have exactly one trainable parameter; found {len(grads)}")
    return out.detach(), grads[0].detach()
