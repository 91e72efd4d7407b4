"""A small SegFormer (Xie et al., 2021, arXiv:2105.15203): hierarchical transformer, MLP decoder.

(N, in_channels, H, W) float -> logits (N, num_classes, H, W), for any H, W (odd sizes too).

Encoder (the "Mix Transformer", paper Sec. 3.1), four stages at 1/4, 1/8, 1/16 and 1/32 resolution:
- overlapping patch embedding: a strided conv whose kernel is larger than its stride
  (7x7 stride 4, then 3x3 stride 2), so neighbouring patches share pixels;
- efficient self-attention: keys and values come from a map shrunk R x R times by a conv with
  kernel = stride = R (the "spatial reduction"), so attention costs (HW)^2 / R^2 instead of (HW)^2;
- Mix-FFN: a depthwise 3x3 conv inside the MLP tells the tokens where they are, in place of a
  positional encoding.
Decoder (Sec. 3.2): each stage is projected to the same width by a linear layer (a 1x1 conv),
upsampled to 1/4, concatenated, fused by another linear layer and classified.

Tokens are written (N, L, C) with L = h * w; feature maps (N, C, h, w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check_images, check_positive_int

__all__ = [
    "OverlapPatchEmbed",
    "EfficientSelfAttention",
    "MixFFN",
    "TransformerBlock",
    "MixTransformerStage",
    "AllMLPDecoder",
    "SegFormer",
]


class OverlapPatchEmbed(nn.Module):
    """Strided conv with kernel > stride, then LayerNorm.

    (N, C_in, H, W) -> tokens (N, h*w, C) and the token grid size (h, w).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (N, C, h, w)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w  # (N, h*w, C)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a map reduced R x R times.

    The reduction is a conv with kernel = stride = R; a map whose sides are not multiples of R is
    padded with zeros at the bottom and right first, so every size works (reduced side ceil(h / R)).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, length, dim = x.shape  # (N, L, C), L = h * w
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q(x).view(n, length, heads, head_dim).transpose(1, 2)  # (N, nh, L, hd)
        if self.sr_ratio > 1:
            r = self.sr_ratio
            grid = x.transpose(1, 2).reshape(n, dim, h, w)  # (N, C, h, w)
            grid = F.pad(grid, (0, (-w) % r, 0, (-h) % r))  # sides become multiples of R
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))  # (N, L / R^2, C)
        kv = self.kv(x).view(n, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # (2, N, nh, L', hd)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (N, nh, L, hd)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))  # (N, L, C)


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> Linear; the conv leaks position into the tokens."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)  # (N, L, C_hidden)
        n, length, hidden = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(n, hidden, h, w))  # (N, C_hidden, h, w)
        return self.fc2(F.gelu(x.flatten(2).transpose(1, 2)))  # (N, L, C)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)  # (N, L, C)


class MixTransformerStage(nn.Module):
    """Patch embedding, `depth` transformer blocks, LayerNorm; returns a map (N, C, h, w)."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: int,
        patch_size: int,
        stride: int,
    ):
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, dim, patch_size, stride)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, sr_ratio, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, h, w = self.embed(x)  # (N, h*w, C)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (N, C, h, w)


class AllMLPDecoder(nn.Module):
    """Project every stage to `channels`, upsample to the 1/4 map, concatenate, fuse, classify."""

    def __init__(
        self, in_channels: tuple[int, ...], channels: int, num_classes: int, dropout: float
    ):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels * len(in_channels), channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]  # the 1/4 resolution map
        upsampled = [
            F.interpolate(project(f), size=size, mode="bilinear", align_corners=False)
            for project, f in zip(self.project, features)
        ]  # each (N, channels, H/4, W/4)
        fused = self.fuse(torch.cat(upsampled, dim=1))  # (N, channels, H/4, W/4)
        return self.classifier(self.dropout(fused))  # (N, K, H/4, W/4)


class SegFormer(nn.Module):
    """SegFormer with a four-stage Mix Transformer encoder.

    The defaults are a tiny model (about 0.8 M parameters) that trains in seconds on a CPU. The
    paper's smallest model, MiT-B0, is `embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8),
    depths=(2, 2, 2, 2), decoder_channels=256` (3.7 M parameters with 150 classes).

    Args:
        num_classes: number of output classes K.
        in_channels: channels of the input image.
        embed_dims: token width of each stage.
        depths: transformer blocks per stage.
        num_heads: attention heads per stage (must divide the stage width).
        sr_ratios: spatial reduction R of the keys and values per stage.
        mlp_ratio: hidden width of the Mix-FFN as a multiple of the stage width.
        decoder_channels: width of the all-MLP decoder.
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        embed_dims: tuple[int, int, int, int] = (16, 32, 64, 128),
        depths: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_heads: tuple[int, int, int, int] = (1, 2, 4, 8),
        sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1),
        mlp_ratio: int = 4,
        decoder_channels: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("mlp_ratio", mlp_ratio),
            ("decoder_channels", decoder_channels),
        ):
            check_positive_int(name, value)
        for name, value in (
            ("embed_dims", embed_dims),
            ("depths", depths),
            ("num_heads", num_heads),
            ("sr_ratios", sr_ratios),
        ):
            if len(value) != 4 or any(not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(
                    f"{name} must be four positive ints (one per stage), got {value!r}"
                )
        for dim, heads in zip(embed_dims, num_heads):
            if dim % heads != 0:
                raise ValueError(
                    f"embed_dims {embed_dims} must be divisible by "
                    f"num_heads {num_heads}, stage by stage"
                )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels

        stage_inputs = (in_channels, *embed_dims[:-1])
        patch = ((7, 4), (3, 2), (3, 2), (3, 2))  # (kernel, stride): overlapping patches
        self.stages = nn.ModuleList(
            MixTransformerStage(c_in, dim, depth, heads, sr, mlp_ratio, kernel, stride)
            for c_in, dim, depth, heads, sr, (kernel, stride) in zip(
                stage_inputs, embed_dims, depths, num_heads, sr_ratios, patch
            )
        )
        self.decoder = AllMLPDecoder(embed_dims, decoder_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels)
        features = []
        out = x
        for stage in self.stages:
            out = stage(out)  # (N, C_i, H / 2^(i+2), W / 2^(i+2))
            features.append(out)
        n, _, h4, w4 = features[0].shape
        if self.training and n * h4 * w4 < 2:
            raise ValueError(
                f"in train mode SegFormer needs more than one value per channel at 1/4 resolution "
                f"for the decoder's BatchNorm; got batch {n} of {tuple(x.shape[-2:])} images: "
                f"use a batch of at least 2, larger images, or model.eval()"
            )
        logits = self.decoder(features)  # (N, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
