"""Architecture schematics drawn from the model itself: FCN, U-Net, DeepLabV3 (ASPP) and DeepLabV3+.

A hand-drawn diagram can disagree with the code; these cannot. `architecture_graph` runs one
forward pass of a copy of the model on the `meta` device (shapes without data: a ResNet-50 costs
no compute) with a hook on each block, and lays the blocks out with the shapes they really
produce; `draw_architecture` draws that graph with matplotlib. Box height grows with the spatial
size, box width with the number of channels, so a glance shows where resolution is lost and where
it comes back.

    fig = draw_architecture(models.FCN(num_classes=21, variant="8s", backbone="resnet18"))
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Block", "Edge", "architecture_graph", "draw_architecture"]


@dataclass(frozen=True)
class Block:
    """One box of a schematic: the output `shape` (C, H, W) of a block, placed at (col, row)."""

    key: str
    label: str
    shape: tuple[int, int, int]
    col: float
    row: float


@dataclass(frozen=True)
class Edge:
    """An arrow from block `source` to block `target`; kind "main", "skip" or "branch"."""

    source: str
    target: str
    kind: str = "main"
    label: str = ""


def _trace(model: nn.Module, image_size: int, in_channels: int, named: dict[str, nn.Module]):
    """(outputs by key, inputs by key, output shape) of one forward pass on the meta device.

    Outputs and inputs are the tensors themselves (meta tensors: shapes, no data), so a block's
    input can be matched to the block that produced it by identity.
    """
    index = {id(module): key for key, module in named.items()}
    meta = copy.deepcopy(model).to("meta").eval()
    outputs, inputs, hooks = {}, {}, []
    for original, module in zip(model.modules(), meta.modules()):
        key = index.get(id(original))
        if key is None:
            continue

        def hook(_module, args, output, key=key):
            inputs[key] = args[0] if args else None
            outputs[key] = output

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = meta(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    finally:
        for handle in hooks:
            handle.remove()
    return outputs, inputs, tuple(logits.shape[1:])


def _shape(tensor) -> tuple[int, int, int]:
    return tuple(int(v) for v in tensor.shape[1:])  # (C, H, W) of a (1, C, H, W) output


def _producer(tensor, outputs: dict, candidates: list[str]) -> str:
    """The key among `candidates` whose output is `tensor` (the block feeding a skip)."""
    for key in candidates:
        if outputs.get(key) is tensor:
            return key
    raise ValueError("could not tell which encoder block feeds a skip connection")


def _fcn(model, image_size, in_channels):
    from course_lib.models.fcn import FCN

    assert isinstance(model, FCN)
    encoder = list(model.encoder.named_children())  # stem .. layer4, or VGG's to_pool3 .. fc7
    named = {f"enc.{name}": module for name, module in encoder}
    for name in (
        "score_fr",
        "upscore2",
        "score_pool4",
        "upscore_pool4",
        "score_pool3",
        "upscore_final",
    ):
        if isinstance(getattr(model, name, None), nn.Module):
            named[name] = getattr(model, name)
    outputs, inputs, out_shape = _trace(model, image_size, in_channels, named)
    blocks, edges, col = (
        [Block("input", "image", (in_channels, image_size, image_size), 0, 0)],
        [],
        0,
    )
    previous = "input"
    enc_keys = [f"enc.{name}" for name, _ in encoder if f"enc.{name}" in outputs]
    for key in enc_keys + [
        k for k in ("score_fr", "upscore2", "upscore_pool4", "upscore_final") if k in outputs
    ]:
        col += 1
        blocks.append(Block(key, key.removeprefix("enc."), _shape(outputs[key]), col, 0))
        edges.append(Edge(previous, key))
        previous = key
    cols = {b.key: b.col for b in blocks}
    # score_pool4 fuses into what upscore_pool4 reads; score_pool3 into what upscore_final reads.
    for row, (score, fused_into) in (
        (-1.5, ("score_pool4", "upscore_pool4")),
        (-2.9, ("score_pool3", "upscore_final")),
    ):
        if score not in outputs:
            continue
        source = _producer(inputs[score], outputs, enc_keys)
        target = fused_into if fused_into in outputs else "output"
        blocks.append(Block(score, score, _shape(outputs[score]), cols[source] + 0.5, row))
        edges.append(Edge(source, score, "skip"))
        edges.append(Edge(score, target, "skip", "+"))
    blocks.append(Block("output", "logits", out_shape, col + 1, 0))
    edges.append(Edge(previous, "output"))
    return blocks, edges


def _unet(model, image_size, in_channels):
    depth = len(model.encoder)
    named = {f"enc{i}": m for i, m in enumerate(model.encoder)}
    named |= {f"dec{i}": m for i, m in enumerate(model.decoder)}
    named |= {"bottleneck": model.bottleneck, "head": model.head}
    outputs, _, out_shape = _trace(model, image_size, in_channels, named)
    blocks = [Block("input", "image", (in_channels, image_size, image_size), 0, 0)]
    edges, previous = [], "input"
    for i in range(depth):
        blocks.append(Block(f"enc{i}", f"encoder {i + 1}", _shape(outputs[f"enc{i}"]), i + 1, -i))
        edges.append(Edge(previous, f"enc{i}", label="pool" if i else ""))
        previous = f"enc{i}"
    blocks.append(
        Block("bottleneck", "bottleneck", _shape(outputs["bottleneck"]), depth + 1, -depth)
    )
    edges.append(Edge(previous, "bottleneck", label="pool"))
    previous = "bottleneck"
    for j in range(depth):
        level = depth - 1 - j  # the encoder level this decoder step returns to
        blocks.append(
            Block(
                f"dec{j}", f"decoder {level + 1}", _shape(outputs[f"dec{j}"]), depth + 2 + j, -level
            )
        )
        edges.append(Edge(previous, f"dec{j}", label="up"))
        if model.skip_connections:
            edges.append(Edge(f"enc{level}", f"dec{j}", "skip", "concat"))
        previous = f"dec{j}"
    blocks.append(Block("head", "1×1 head", _shape(outputs["head"]), 2 * depth + 2, 0))
    edges.append(Edge(previous, "head"))
    blocks.append(Block("output", "logits", out_shape, 2 * depth + 3, 0))
    edges.append(Edge("head", "output"))
    return blocks, edges


def _deeplab(model, image_size, in_channels, plus: bool):
    stages = list(model.backbone.named_children())  # stem, layer1 .. layer4
    named = {f"bb.{name}": module for name, module in stages}
    aspp = model.aspp
    branches = [("conv1x1", "1×1 conv", aspp.conv1x1)]
    branches += [
        (f"atrous{i}", f"3×3 rate {branch[0].dilation[0]}", branch)
        for i, branch in enumerate(aspp.atrous)
    ]
    branches += [("pooling", "image pooling", aspp.pooling)]
    named |= {key: module for key, _, module in branches} | {"project": aspp.project}
    if plus:
        named |= {"low_project": model.low_project, "decoder": model.decoder}
    else:
        named["head"] = model.head
    outputs, inputs, out_shape = _trace(model, image_size, in_channels, named)
    blocks = [Block("input", "image", (in_channels, image_size, image_size), 0, 0)]
    edges, previous = [], "input"
    for col, (name, _) in enumerate(stages, start=1):
        key = f"bb.{name}"
        blocks.append(Block(key, name, _shape(outputs[key]), col, 0))
        edges.append(Edge(previous, key))
        previous = key
    col = len(stages) + 1
    middle = (len(branches) - 1) / 2
    for i, (key, label, _) in enumerate(branches):
        blocks.append(Block(key, label, _shape(outputs[key]), col, 0.9 * (middle - i)))
        edges.append(Edge(previous, key, "branch"))
        edges.append(Edge(key, "project", "branch"))
    blocks.append(Block("project", "concat + 1×1", _shape(outputs["project"]), col + 1, 0))
    if plus:
        source = _producer(inputs["low_project"], outputs, [f"bb.{name}" for name, _ in stages])
        blocks.append(
            Block(
                "low_project",
                "low-level 1×1",
                _shape(outputs["low_project"]),
                col + 1,
                -0.9 * middle - 1.3,
            )
        )
        edges.append(Edge(source, "low_project", "skip"))
        blocks.append(Block("decoder", "decoder", _shape(outputs["decoder"]), col + 2, 0))
        edges.append(Edge("project", "decoder", label="up"))
        edges.append(Edge("low_project", "decoder", "skip", "concat"))
        last = "decoder"
    else:
        blocks.append(Block("head", "head", _shape(outputs["head"]), col + 2, 0))
        edges.append(Edge("project", "head"))
        last = "head"
    blocks.append(Block("output", "logits", out_shape, col + 3, 0))
    edges.append(Edge(last, "output", label="up"))
    return blocks, edges


def architecture_graph(
    model: nn.Module, image_size: int = 256, in_channels: int | None = None
) -> tuple[list[Block], list[Edge]]:
    """The blocks (with their real output shapes) and arrows of `model`'s schematic.

    model: a course `FCN`, `UNet`, `DeepLabV3` or `DeepLabV3Plus` (left unchanged: a copy runs on
    the meta device). image_size: side of the square input the shapes are computed for.
    """
    from course_lib.models import FCN, DeepLabV3, DeepLabV3Plus, UNet

    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    if in_channels is None:
        in_channels = getattr(model, "in_channels", 3)
    if isinstance(model, FCN):
        return _fcn(model, image_size, in_channels)
    if isinstance(model, UNet):
        return _unet(model, image_size, in_channels)
    if isinstance(model, (DeepLabV3, DeepLabV3Plus)):
        return _deeplab(model, image_size, in_channels, plus=isinstance(model, DeepLabV3Plus))
    raise TypeError(
        f"draw a course FCN, UNet, DeepLabV3 or DeepLabV3Plus, got {type(model).__name__}"
    )


_EDGE_STYLE = {
    "main": dict(color="0.2", linestyle="-"),
    "branch": dict(color="tab:blue", linestyle="-"),
    "skip": dict(color="tab:orange", linestyle="--"),
}


def draw_architecture(
    model: nn.Module,
    image_size: int = 256,
    in_channels: int | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw `model`'s schematic (see `architecture_graph`); returns the figure.

    Each box is a block's output: height grows with its spatial size (relative to the input),
    width with log2 of its channels; the text under it reads "C × H × W". Orange dashed arrows are
    skip connections, blue ones parallel branches.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    blocks, edges = architecture_graph(model, image_size, in_channels)
    if ax is None:
        cols = max(b.col for b in blocks) - min(b.col for b in blocks) + 1
        rows = max(b.row for b in blocks) - min(b.row for b in blocks) + 1
        fig, ax = plt.subplots(figsize=(1.25 * cols + 0.5, 1.2 * rows + 1.2))
    else:
        fig = ax.figure
    where = {}
    for block in blocks:
        channels, height, _ = block.shape
        box_h = 0.25 + 0.6 * math.sqrt(height / image_size)
        box_w = 0.08 + 0.05 * math.log2(max(channels, 1))
        ax.add_patch(
            Rectangle(
                (block.col - box_w / 2, block.row - box_h / 2),
                box_w,
                box_h,
                facecolor="tab:gray" if block.key in ("input", "output") else "lightsteelblue",
                edgecolor="0.2",
            )
        )
        ax.text(
            block.col,
            block.row - box_h / 2 - 0.06,
            f"{block.label}\n{channels}×{height}×{block.shape[2]}",
            ha="center",
            va="top",
            fontsize=7,
        )
        where[block.key] = (block.col, block.row, box_w, box_h)
    for edge in edges:
        (x0, y0, w0, _), (x1, y1, w1, _) = where[edge.source], where[edge.target]
        style = _EDGE_STYLE[edge.kind]
        ax.add_patch(
            FancyArrowPatch(
                (x0 + w0 / 2, y0),
                (x1 - w1 / 2, y1),
                arrowstyle="-|>",
                mutation_scale=8,
                linewidth=1.0,
                connectionstyle="arc3,rad=0.0",
                **style,
            )
        )
        if edge.label:
            ax.text(
                (x0 + x1) / 2,
                (y0 + y1) / 2 + 0.08,
                edge.label,
                ha="center",
                fontsize=6,
                color=style["color"],
            )
    xs = [b.col for b in blocks]
    ys = [b.row for b in blocks]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        title or f"{type(model).__name__}: block outputs for a {image_size}² input", fontsize=9
    )
    return fig
