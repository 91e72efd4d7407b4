"""Tests for course_lib.models.segformer: shapes, gradients, attention against brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.models.segformer import EfficientSelfAttention, MixFFN, SegFormer

TINY = dict(
    embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), decoder_channels=16
)


def brute_force_attention(
    module: EfficientSelfAttention, x: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Efficient self-attention written out with loops, from the module's weights only."""
    n, length, dim = x.shape
    heads = module.num_heads
    head_dim = dim // heads
    r = module.sr_ratio
    q = x @ module.q.weight.T + module.q.bias  # (N, L, C)
    if r > 1:
        rh, rw = math.ceil(h / r), math.ceil(w / r)
        reduced = torch.zeros(n, rh * rw, dim, dtype=x.dtype)
        for i in range(rh):
            for j in range(rw):
                cell = module.sr.bias.clone().expand(n, dim).clone()
                for a in range(r):
                    for b in range(r):
                        row, col = i * r + a, j * r + b
                        if row < h and col < w:  # outside the map: zero padding adds nothing
                            cell = cell + x[:, row * w + col] @ module.sr.weight[:, :, a, b].T
                reduced[:, i * rw + j] = cell
        mean = reduced.mean(-1, keepdim=True)
        var = ((reduced - mean) ** 2).mean(-1, keepdim=True)
        normalised = (reduced - mean) / torch.sqrt(var + module.norm.eps)
        source = normalised * module.norm.weight + module.norm.bias
    else:
        source = x
    kv = source @ module.kv.weight.T + module.kv.bias  # (N, L', 2C)
    k, v = kv[..., :dim], kv[..., dim:]
    out = torch.zeros(n, length, dim, dtype=x.dtype)
    for head in range(heads):
        s = slice(head * head_dim, (head + 1) * head_dim)
        for t in range(length):
            scores = (k[:, :, s] * q[:, t : t + 1, s]).sum(-1) / math.sqrt(head_dim)  # (N, L')
            weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
            weights = weights / weights.sum(-1, keepdim=True)
            out[:, t, s] = (weights[:, :, None] * v[:, :, s]).sum(1)
    return out @ module.proj.weight.T + module.proj.bias


@pytest.mark.parametrize("sr_ratio, h, w", [(1, 3, 4), (2, 4, 6), (2, 5, 3), (4, 3, 7)])
def test_efficient_attention_matches_brute_force(sr_ratio, h, w):
    torch.manual_seed(0)
    module = EfficientSelfAttention(dim=8, num_heads=2, sr_ratio=sr_ratio).double()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)  # non-trivial LayerNorm and biases
    x = torch.randn(2, h * w, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x, h, w), brute_force_attention(module, x, h, w))


def test_spatial_reduction_shrinks_keys_by_r_squared():
    module = EfficientSelfAttention(dim=8, num_heads=1, sr_ratio=4)
    grid = torch.randn(1, 8, 16, 12)
    assert module.sr(grid).flatten(2).shape[-1] == (16 * 12) // 4**2


def test_mix_ffn_matches_explicit_depthwise_conv():
    torch.manual_seed(0)
    module = MixFFN(dim=4, hidden_dim=6).double()
    h, w = 3, 5
    x = torch.randn(2, h * w, 4, dtype=torch.float64)
    hidden = (x @ module.fc1.weight.T + module.fc1.bias).transpose(1, 2).reshape(2, 6, h, w)
    padded = F.pad(hidden, (1, 1, 1, 1))
    conv = torch.zeros_like(hidden)
    for a in range(3):
        for b in range(3):
            tap = module.dwconv.weight[:, 0, a, b][None, :, None, None]
            conv += padded[:, :, a : a + h, b : b + w] * tap
    conv += module.dwconv.bias[None, :, None, None]
    expected = F.gelu(conv.flatten(2).transpose(1, 2)) @ module.fc2.weight.T + module.fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(module(x, h, w), expected)


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (9, 7), (1, 1)])
def test_logits_at_input_size_for_any_size(size):
    torch.manual_seed(0)
    model = SegFormer(num_classes=4, **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 4, *size)
    assert torch.isfinite(out).all()


def test_stage_resolutions_are_quarter_then_halves():
    model = SegFormer(num_classes=2, **TINY).eval()
    x = torch.rand(1, 3, 45, 30)
    sizes = []
    with torch.no_grad():
        for stage in model.stages:
            x = stage(x)
            sizes.append(tuple(x.shape[-2:]))
    h, w = math.ceil(45 / 4), math.ceil(30 / 4)
    expected = [(h, w)]
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        expected.append((h, w))
    assert sizes == expected


def test_gradients_reach_every_parameter_with_one_input_channel():
    torch.manual_seed(0)
    model = SegFormer(num_classes=2, in_channels=1, **TINY).train()
    x = torch.rand(2, 1, 33, 29)
    F.cross_entropy(model(x), torch.randint(0, 2, (2, 33, 29))).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_train_mode_with_a_single_decoder_pixel_raises_a_clear_error():
    model = SegFormer(num_classes=2, **TINY).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        model(torch.rand(1, 3, 4, 4))
    assert model(torch.rand(1, 3, 9, 9)).shape == (1, 2, 9, 9)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="num_heads"):
        SegFormer(num_classes=2, embed_dims=(8, 16, 16, 30), num_heads=(1, 2, 2, 4))
    with pytest.raises(ValueError, match="depths"):
        SegFormer(num_classes=2, depths=(1, 1, 1))
    with pytest.raises(ValueError, match="in_channels=3"):
        SegFormer(num_classes=2, **TINY)(torch.rand(1, 4, 16, 16))


def test_mit_b0_configuration_matches_the_papers_parameter_counts():
    # Xie et al. (2021) report MiT-B0 with a 3.4 M encoder and a 0.4 M decoder (150 classes).
    model = SegFormer(
        num_classes=150,
        embed_dims=(32, 64, 160, 256),
        num_heads=(1, 2, 5, 8),
        depths=(2, 2, 2, 2),
        decoder_channels=256,
    )
    encoder = sum(p.numel() for p in model.stages.parameters())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert abs(encoder - 3.4e6) / 3.4e6 < 0.05, encoder
    assert abs(decoder - 0.4e6) / 0.4e6 < 0.1, decoder


def test_decoder_parameter_count_by_hand():
    dims, d, k = (16, 32, 64, 128), 64, 5
    projections = sum(c * d + d for c in dims)
    fuse = 4 * d * d + 2 * d
    classifier = d * k + k
    model = SegFormer(num_classes=k)
    assert sum(p.numel() for p in model.decoder.parameters()) == projections + fuse + classifier
