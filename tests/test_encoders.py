"""course_lib.models.encoders.ResNetEncoder against torchvision's own ResNet forward (same weights,
every backbone and output stride), the input-channel adapter, the state-dict keys, bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from course_lib.models import DeepLabV3, DeepLabV3Plus
from course_lib.models.encoders import BACKBONES, OUTPUT_STRIDES, ResNetEncoder, adapt_first_conv
from course_lib.models.fcn import FCN
from course_lib.models.weights import randomize_batchnorm

STAGES = ("layer1", "layer2", "layer3", "layer4")  # torchvision's names of c2 .. c5


def torchvision_keys(key: str) -> str:
    """Our state-dict key as torchvision's ResNet names it: stem.0 is conv1, stem.1 is bn1."""
    return key.replace("stem.0.", "conv1.", 1).replace("stem.1.", "bn1.", 1)


def torchvision_features(net: nn.Module) -> nn.Module:
    """A module returning the outputs of layer1 .. layer4 through torchvision's own ResNet graph
    (it shares `net`'s layers: weights loaded into `net` later are used)."""
    return create_feature_extractor(net.eval(), {stage: stage for stage in STAGES})


def load_into_torchvision(ours: ResNetEncoder, net: nn.Module) -> None:
    state = {torchvision_keys(key): value for key, value in ours.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


@pytest.mark.parametrize("name", BACKBONES)
def test_features_match_torchvision_at_every_output_stride(name):
    """Same weights, same image: at output stride 32 our maps are torchvision's; at 16 and 8 the
    dilated maps, sampled every (32 / output_stride) pixels, are the plain network's maps (a
    dilated stage computes the strided one's outputs and the ones in between)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 67, 45)  # odd sizes: every map's size is rounded up
    plain = getattr(torchvision.models, name)(weights=None)
    features = torchvision_features(plain)
    for output_stride in OUTPUT_STRIDES:
        torch.manual_seed(1)
        ours = ResNetEncoder(name, output_stride=output_stride)
        randomize_batchnorm(ours, generator=output_stride)
        load_into_torchvision(ours, plain)
        with torch.no_grad():
            expected, got = list(features.eval()(x).values()), ours.eval()(x)
        assert ours.strides == (4, 8, min(16, output_stride), output_stride)
        assert ours.channels == tuple(e.shape[1] for e in expected)
        size_at = {stride: e.shape[-2:] for stride, e in zip((4, 8, 16, 32), expected)}
        for index, (mine, theirs, stride) in enumerate(zip(got, expected, (4, 8, 16, 32))):
            assert mine.shape[-2:] == size_at[ours.strides[index]]  # the plain map at that stride
            step = stride // ours.strides[index]  # 1 where the stage keeps its stride
            torch.testing.assert_close(
                mine[..., ::step, ::step],
                theirs,
                rtol=1e-3,
                atol=1e-4 * theirs.abs().max().item(),  # summation order differs with dilation
                msg=lambda m, i=index, s=output_stride: f"{name} c{i + 2} at os {s}: {m}",
            )


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_bottleneck_dilation_matches_torchvision_replace_stride_with_dilation(name, output_stride):
    """Bottleneck networks: the whole dilated map equals torchvision's dilated network's."""
    dilate = [False, output_stride == 8, True]
    torch.manual_seed(0)
    ours = ResNetEncoder(name, output_stride=output_stride)
    randomize_batchnorm(ours)
    theirs = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=dilate)
    load_into_torchvision(ours, theirs)
    x = torch.randn(1, 3, 41, 53)
    with torch.no_grad():
        got, reference = ours.eval()(x), torchvision_features(theirs)(x).values()
    for mine, expected in zip(got, reference):
        torch.testing.assert_close(
            mine, expected, rtol=1e-3, atol=1e-4 * expected.abs().max().item()
        )


def test_basic_block_dilations_follow_torchvision_rule():
    """resnet18/34 are dilated by hand with torchvision's Bottleneck rule: a dilated stage's first
    3x3 conv keeps the previous dilation, every later one doubles it."""

    def dilations(encoder: ResNetEncoder) -> list[list[int]]:
        return [
            [conv.dilation[0] for block in stage for conv in (block.conv1, block.conv2)]
            for stage in (encoder.layer2, encoder.layer3, encoder.layer4)
        ]

    assert dilations(ResNetEncoder("resnet18", output_stride=8)) == [
        [1, 1, 1, 1],
        [1, 2, 2, 2],
        [2, 4, 4, 4],
    ]
    assert dilations(ResNetEncoder("resnet18", output_stride=16))[2] == [1, 2, 2, 2]
    assert all(d == 1 for stage in dilations(ResNetEncoder("resnet34")) for d in stage)


def test_adapter_filters_are_the_rgb_mean_scaled_by_3_over_in_channels():
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0, -3.0, 0.0, 6.0]).view(2, 3, 1, 1))
    grey = adapt_first_conv(conv, 1).weight.flatten()  # mean (2, 1) times 3
    four = adapt_first_conv(conv, 4).weight.view(2, 4)  # mean times 3 / 4, in every channel
    torch.testing.assert_close(grey, torch.tensor([6.0, 3.0]))
    torch.testing.assert_close(four, torch.tensor([[1.5] * 4, [0.75] * 4]))


@pytest.mark.parametrize("in_channels", [1, 4])
def test_adapted_encoder_gives_a_grey_image_the_rgb_networks_features(in_channels):
    """One initialisation with or without pretrained weights: built after the same seed, the
    encoder for `in_channels` inputs answers a grey image as the RGB encoder does."""
    torch.manual_seed(2)
    rgb = ResNetEncoder("resnet18", in_channels=3)
    torch.manual_seed(2)
    other = ResNetEncoder("resnet18", in_channels=in_channels)
    randomize_batchnorm(rgb)
    randomize_batchnorm(other)
    grey = torch.rand(2, 1, 40, 36)
    with torch.no_grad():
        expected = rgb.eval()(grey.expand(-1, 3, -1, -1))
        got = other.eval()(grey.expand(-1, in_channels, -1, -1))
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_pretrained_weights_are_requested_and_adapted(monkeypatch):
    real_resnet18 = torchvision.models.resnet18
    requested = []

    def offline_resnet18(weights=None, **kwargs):  # stands for the download: seeded weights
        requested.append(weights)
        torch.manual_seed(3)
        return real_resnet18(weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "resnet18", offline_resnet18)
    rgb = ResNetEncoder("resnet18", in_channels=3, weights="DEFAULT")
    grey = ResNetEncoder("resnet18", in_channels=1, weights="DEFAULT", output_stride=16)
    assert requested == ["DEFAULT", "DEFAULT"]
    expected = rgb.stem[0].weight.mean(dim=1, keepdim=True) * 3
    torch.testing.assert_close(grey.stem[0].weight, expected)
    torch.testing.assert_close(grey.layer4[0].conv1.weight, rgb.layer4[0].conv1.weight)


def test_fcn_and_deeplab_share_the_encoder_and_its_keys():
    """Built after the same seed, FCN and DeepLab hold the same encoder weights (dilation adds no
    parameter), under the keys both models' checkpoints have always used."""
    encoders = []
    for build in (
        lambda: FCN(num_classes=3, variant="8s", backbone="resnet18", in_channels=1).encoder,
        lambda: DeepLabV3(num_classes=3, backbone="resnet18", in_channels=1).backbone,
        lambda: DeepLabV3Plus(num_classes=3, backbone="resnet18", in_channels=1).backbone,
    ):
        torch.manual_seed(4)
        encoders.append(build().state_dict())
    first = encoders[0]
    assert list(first)[:2] == ["stem.0.weight", "stem.1.weight"]
    assert {key.split(".")[0] for key in first} == {"stem", *STAGES}
    for other in encoders[1:]:
        assert list(other) == list(first)
        for key in first:
            torch.testing.assert_close(other[key], first[key], msg=key)


def test_encoder_children_are_stem_and_four_stages():
    """The schematics and a reader walk stem, layer1 .. layer4, in that order and nothing else."""
    names = [name for name, _ in ResNetEncoder("resnet18").named_children()]
    assert names == ["stem", *STAGES]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(name="resnet152"), ValueError, "backbone must be one of .* got 'resnet152'"),
        (dict(output_stride=4), ValueError, r"output_stride must be one of \(8, 16, 32\), got 4"),
        (dict(output_stride=16.0), ValueError, "output_stride must be one of .* got 16.0"),
        (dict(in_channels=0), ValueError, "in_channels must be a positive int, got 0"),
        (dict(in_channels=2.5), TypeError, "in_channels must be a positive int, got float"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ResNetEncoder(**kwargs)


def test_forward_rejects_wrong_channels_and_dtype():
    encoder = ResNetEncoder("resnet18", in_channels=1)
    with pytest.raises(ValueError, match="x has 3 channels but the model was built with"):
        encoder(torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match="floating point"):
        encoder(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        encoder(torch.zeros(1, 32, 32))
