"""course_lib.schematics: the shapes a schematic shows are those a real forward pass produces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib import models
from course_lib.schematics import architecture_graph, draw_architecture


def _module(model: nn.Module, key: str) -> nn.Module:
    """The submodule a block key names (the test's own reading of the keys)."""
    if key.startswith("enc."):
        return getattr(model.encoder, key[4:])
    if key.startswith("bb."):
        return getattr(model.backbone, key[3:])
    if key[:3] in ("enc", "dec") and key[3:].isdigit():
        return (model.encoder if key[:3] == "enc" else model.decoder)[int(key[3:])]
    if key.startswith("atrous"):
        return model.aspp.atrous[int(key[6:])]
    if key in ("conv1x1", "pooling", "project"):
        return getattr(model.aspp, key)
    return getattr(model, key)


def _real_shapes(model: nn.Module, keys: list[str], size: int, channels: int) -> dict:
    """Output shape (C, H, W) of each block in a real float32 forward pass on the CPU."""
    shapes, hooks = {}, []
    for key in keys:

        def hook(_m, _a, output, key=key):
            shapes[key] = tuple(output.shape[1:])

        hooks.append(_module(model, key).register_forward_hook(hook))
    with torch.no_grad():
        shapes["output"] = tuple(model.eval()(torch.rand(1, channels, size, size)).shape[1:])
    for handle in hooks:
        handle.remove()
    return shapes


CASES = {
    "fcn8s": lambda: models.FCN(num_classes=5, variant="8s", backbone="resnet18"),
    "fcn32s": lambda: models.FCN(num_classes=5, variant="32s", backbone="resnet18"),
    "unet": lambda: models.UNet(in_channels=1, num_classes=2, base_channels=8, depth=3),
    "deeplabv3": lambda: models.DeepLabV3(num_classes=4, backbone="resnet18", output_stride=8),
    "deeplabv3plus": lambda: models.DeepLabV3Plus(num_classes=4, backbone="resnet18"),
}


@pytest.mark.parametrize("name", CASES)
def test_every_block_shows_the_shape_a_real_forward_pass_gives(name):
    torch.manual_seed(0)
    model = CASES[name]()
    channels = 1 if name == "unet" else 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks, edges = architecture_graph(model, image_size=96)
    keys = [b.key for b in blocks if b.key not in ("input", "output")]
    real = _real_shapes(model, keys, 96, channels)
    assert {b.key: b.shape for b in blocks if b.key != "input"} == real
    assert next(b for b in blocks if b.key == "input").shape == (channels, 96, 96)
    assert {e.source for e in edges} | {e.target for e in edges} == {b.key for b in blocks}
    after = model.state_dict()  # the model itself was not moved or changed
    assert all(
        after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items()
    )


def test_skip_connections_come_from_the_blocks_the_code_reads():
    fcn8 = architecture_graph(CASES["fcn8s"]())[1]
    assert {(e.source, e.target) for e in fcn8 if e.kind == "skip" and e.label == ""} == {
        ("enc.layer2", "score_pool3"),
        ("enc.layer3", "score_pool4"),
    }  # strides 8 and 16
    assert not [e for e in architecture_graph(CASES["fcn32s"]())[1] if e.kind == "skip"]
    unet = architecture_graph(CASES["unet"]())[1]
    assert sorted((e.source, e.target) for e in unet if e.kind == "skip") == [
        ("enc0", "dec2"),
        ("enc1", "dec1"),
        ("enc2", "dec0"),
    ]
    no_skips = models.UNet(
        in_channels=1, num_classes=2, base_channels=8, depth=3, skip_connections=False
    )
    assert not [e for e in architecture_graph(no_skips)[1] if e.kind == "skip"]
    plus = architecture_graph(CASES["deeplabv3plus"]())[1]
    assert ("bb.layer1", "low_project") in {(e.source, e.target) for e in plus}  # stride 4


def test_aspp_rates_are_read_from_the_model():
    labels = [b.label for b in architecture_graph(CASES["deeplabv3"]())[0]]  # output stride 8
    assert [label for label in labels if "rate" in label] == [
        "3×3 rate 12",
        "3×3 rate 24",
        "3×3 rate 36",
    ]


def test_drawing_has_a_box_and_an_arrow_per_block_and_edge():
    import matplotlib

    matplotlib.use("Agg")
    model = CASES["unet"]()
    blocks, edges = architecture_graph(model, image_size=64)
    figure = draw_architecture(model, image_size=64)
    ax = figure.axes[0]
    assert len(ax.patches) == len(blocks) + len(edges)
    texts = [t.get_text() for t in ax.texts]
    assert "encoder 2\n16×32×32" in texts  # base 8: 16 channels at half of a 64² input
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_other_models_and_bad_sizes_are_refused():
    with pytest.raises(TypeError, match="got Conv2d"):
        architecture_graph(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="image_size must be an int >= 32"):
        architecture_graph(CASES["unet"](), image_size=16)
