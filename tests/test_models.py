"""One shared smoke test for every model registered in `course_lib.models.MODELS`.

Each model gets a tiny configuration in `SMOKE_CONFIGS` (keyword arguments besides `in_channels`
and `num_classes`); a model registered without an entry makes
`test_every_model_has_a_smoke_config` fail.
"""

import pytest
import torch

from course_lib import models

SMOKE_CONFIGS: dict[str, dict] = {
    "unet": {"base_channels": 4, "depth": 3},
    "fcn": {"backbone": "resnet18", "variant": "8s"},
    "deeplabv3": {"backbone": "resnet18", "output_stride": 16, "aspp_channels": 16},
    "deeplabv3plus": {
        "backbone": "resnet18",
        "output_stride": 16,
        "aspp_channels": 16,
        "low_level_channels": 8,
    },
    "fastscnn": {
        "downsample_channels": (8, 12, 16),
        "block_channels": (16, 24, 32),
        "num_blocks": (1, 1, 1),
        "expansion": 2,
        "fusion_channels": 16,
    },
    "segformer": {
        "embed_dims": (8, 16, 16, 32),
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 2, 4),
        "decoder_channels": 16,
    },
}

IN_CHANNELS = 2  # not 3, so models that adapt an RGB stem are exercised too
NUM_CLASSES = 3
ODD_SIZES = [(33, 33), (37, 50), (45, 39)]


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build_model(
        name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, **SMOKE_CONFIGS[name]
    )


def test_every_model_has_a_smoke_config():
    missing = sorted(set(models.MODELS) - set(SMOKE_CONFIGS))
    assert not missing, f"add a tiny configuration to SMOKE_CONFIGS in {__file__} for: {missing}"


SMOKE_NAMES = sorted(set(models.MODELS) & set(SMOKE_CONFIGS))


@pytest.mark.parametrize("name", SMOKE_NAMES)
def test_eval_batch_one_any_odd_size(name):
    model = _build(name).eval()
    with torch.no_grad():
        for height, width in ODD_SIZES:
            out = model(torch.rand(1, IN_CHANNELS, height, width))
            assert out.shape == (1, NUM_CLASSES, height, width), f"{name} at {height}x{width}"
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all(), f"{name} gave non-finite logits at {height}x{width}"


@pytest.mark.parametrize("name", SMOKE_NAMES)
def test_train_batch_two_backward_reaches_every_parameter_and_the_input(name):
    model = _build(name).train()
    x = torch.rand(2, IN_CHANNELS, 35, 41, requires_grad=True)
    out = model(x)
    assert out.shape == (2, NUM_CLASSES, 35, 41)
    target = torch.randint(0, NUM_CLASSES, (2, 35, 41))
    torch.nn.functional.cross_entropy(out, target).backward()
    # gradient at the input means it flowed back through the first layer
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name}.{parameter_name} received no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{name}.{parameter_name} non-finite grad"


@pytest.mark.parametrize("name", SMOKE_NAMES)
def test_channels_last_gives_the_same_logits(name):
    model = _build(name).eval()
    x = torch.rand(2, IN_CHANNELS, 34, 37)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_build_model_errors_list_the_valid_names():
    with pytest.raises(ValueError, match="valid names: .*unet"):
        models.build_model("segnet")
    with pytest.raises(TypeError, match="name must be a string"):
        models.build_model(3)


def test_build_model_passes_keyword_arguments():
    model = models.build_model("UNet", in_channels=1, num_classes=5, base_channels=4, depth=2)
    assert isinstance(model, models.UNet)
    assert model.head.out_channels == 5
