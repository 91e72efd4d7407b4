"""Tests for course_lib.models.fcn: paper alignment, sizes, parameter counts, weight loading."""

import pytest
import torch
import torchvision
from torch import nn

from course_lib.models.blocks import bilinear_kernel
from course_lib.models.fcn import (
    FCN,
    PAPER_OFFSETS,
    BilinearUpsampling,
    VGG16Encoder,
    crop,
    fuse_skip,
)
from course_lib.utils import count_parameters


def _pair(value):
    return value[0] if isinstance(value, tuple) else value


def _walk(layers, a=1.0, b=0.0):
    """Compose the affine maps `image coordinate = a * y + b` of pixel y through conv/pool."""
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
            # output pixel y looks at input pixels centred on s * y - p + (k - 1) / 2
            a, b = a * s, a * (-p + (k - 1) / 2) + b
    return a, b


def _through_transposed(layer, a, b):
    # output pixel o of a transposed conv sits at input position (o + p - (k - 1) / 2) / s
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    return a / s, a * (p - (k - 1) / 2) / s + b


def test_paper_crop_offsets_follow_from_the_layer_geometry():
    model = FCN(num_classes=2, variant="8s", backbone="vgg16")
    enc = model.encoder
    pool3 = _walk(enc.to_pool3)
    pool4 = _walk(enc.to_pool4, *pool3)
    fc7 = _walk([*enc.to_pool5, *enc.fc6, *enc.fc7], *pool4)
    up2 = _through_transposed(model.upscore2, *fc7)
    assert up2[0] == pool4[0]
    assert (up2[1] - pool4[1]) / pool4[0] == PAPER_OFFSETS["pool4"]
    up4 = _through_transposed(model.upscore_pool4, *up2)
    assert (up4[1] - pool3[1]) / pool3[0] == PAPER_OFFSETS["pool3"]
    final = _through_transposed(model.upscore_final, *up4)
    assert final[0] == 1 and -final[1] == PAPER_OFFSETS["8s"]
    # 32s and 16s: the final upsampling starts from fc7 and from the fused pool4 map
    up32 = _through_transposed(nn.ConvTranspose2d(1, 1, 64, 32), *fc7)
    assert up32[0] == 1 and -up32[1] == PAPER_OFFSETS["32s"]
    up16 = _through_transposed(nn.ConvTranspose2d(1, 1, 32, 16), *up2)
    assert up16[0] == 1 and -up16[1] == PAPER_OFFSETS["16s"]


@pytest.mark.parametrize("factor", [2, 8])
@pytest.mark.parametrize("learned", [False, True])
def test_resnet_upsampler_maps_strided_centres_exactly(factor, learned):
    # coarse pixel y sits at image coordinate factor * y; fill the map with that coordinate (a ramp
    # along H): upsampled pixel o must then hold o up to the last coarse pixel centre, and the last
    # centre's value beyond it (the border is repeated, as F.interpolate does, not faded)
    model = FCN(num_classes=1, variant="8s", backbone="resnet18", learn_final_upsampling=learned)
    up = model.upscore_pool4 if factor == 2 else model.upscore_final
    coarse = (factor * torch.arange(6.0)).view(1, 1, 6, 1).repeat(1, 1, 1, 5)  # (1, 1, 6, 5)
    last_centre = factor * 5
    for fine_height in (last_centre + 1, factor * 6):  # the two extreme sizes a finer map can have
        with torch.no_grad():
            out = model._upsample(up, coarse, (fine_height, factor * 5))
        assert out.shape[-2:] == (fine_height, factor * 5)
        expected = torch.arange(fine_height, dtype=torch.float32).clamp(max=last_centre)
        torch.testing.assert_close(out[0, 0, :, 0], expected)


@pytest.mark.parametrize("backbone", ["resnet18", "small"])
@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_constant_scores_give_constant_logits_up_to_every_border(backbone, variant):
    # the classifier answers a constant per class: every output pixel, borders included, must hold
    # it (before the border was repeated, the bottom/right rows faded to 7/8 ... 1/8 of it)
    torch.manual_seed(0)
    model = FCN(num_classes=3, variant=variant, backbone=backbone).eval()
    constant = torch.tensor([1.0, -2.0, 3.0])
    with torch.no_grad():
        nn.init.zeros_(model.score_fr.weight)
        model.score_fr.bias.copy_(constant)
        for size in [(33, 61), (64, 45), (1, 5), (97, 131)]:
            out = model(torch.rand(1, 3, *size))  # (1, 3, H, W)
            torch.testing.assert_close(out, constant.view(1, 3, 1, 1).expand_as(out))


def test_final_upsampling_is_fixed_bilinear_by_default():
    fixed = FCN(num_classes=21, variant="32s", backbone="resnet18")
    learned = FCN(num_classes=21, variant="32s", backbone="resnet18", learn_final_upsampling=True)
    assert not any(name.startswith("upscore_final") for name, _ in fixed.named_parameters())
    assert "upscore_final.filter" not in fixed.state_dict()
    # the learned 32x layer: 21 x 21 filters of 63 x 63, the 1.75 M weights a fixed one saves
    extra = count_parameters(learned) - count_parameters(fixed)
    assert extra == learned.upscore_final.weight.numel() == 21 * 21 * 63 * 63 == 1_750_329
    # fixed and learned-at-initialisation upsampling give the same logits
    learned.load_state_dict(fixed.state_dict(), strict=False)
    x = torch.rand(1, 3, 70, 45)
    with torch.no_grad():
        torch.testing.assert_close(fixed.eval()(x), learned.eval()(x), rtol=1e-5, atol=1e-5)


def test_bilinear_upsampling_equals_the_transposed_convolution_it_replaces():
    up = BilinearUpsampling(factor=4, kernel_size=8, padding=2)
    reference = nn.ConvTranspose2d(3, 3, 8, stride=4, padding=2, bias=False)
    with torch.no_grad():
        reference.weight.copy_(bilinear_kernel(3, 3, 8))
        x = torch.randn(2, 3, 5, 7)
        torch.testing.assert_close(up(x), reference(x))


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_vgg16_any_size_including_odd_and_tiny(variant):
    model = FCN(num_classes=3, variant=variant, backbone="vgg16").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 33, 47) if variant == "8s" else torch.rand(1, 3, 1, 5))
    assert out.shape[:2] == (1, 3) and out.shape[-2:] in ((33, 47), (1, 5))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_resnet18_variants_return_input_size(variant):
    model = FCN(num_classes=4, variant=variant, backbone="resnet18", in_channels=1).eval()
    with torch.no_grad():
        for size in [(33, 61), (64, 45)]:
            assert model(torch.rand(1, 1, *size)).shape == (1, 4, *size)


@pytest.mark.parametrize(
    "backbone, channels",
    [
        ("resnet34", (128, 256, 512)),
        ("resnet50", (512, 1024, 2048)),
        ("resnet101", (512, 1024, 2048)),
    ],
)
def test_deeper_resnet_encoders(backbone, channels):
    model = FCN(num_classes=2, variant="8s", backbone=backbone).eval()
    assert model.encoder.channels[-3:] == channels and model.encoder.output_stride == 32
    assert model.score_pool3.in_channels == channels[0]
    assert model.score_pool4.in_channels == channels[1]
    if backbone == "resnet50":
        with torch.no_grad():
            assert model(torch.rand(1, 3, 33, 35)).shape == (1, 2, 33, 35)


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_small_encoder_variants_return_input_size(variant):
    model = FCN(num_classes=3, variant=variant, backbone="small", in_channels=1).eval()
    assert model.encoder.channels == (64, 96, 128)
    with torch.no_grad():
        for size in [(1, 1), (31, 65), (96, 96)]:
            assert model(torch.rand(2, 1, *size)).shape == (2, 3, *size)
    with pytest.raises(ValueError, match="no pretrained weights"):
        FCN(num_classes=3, backbone="small", backbone_weights="DEFAULT")


def test_skip_score_layers_start_at_zero_so_8s_starts_as_32s():
    torch.manual_seed(0)
    fcn8 = FCN(num_classes=3, variant="8s", backbone="resnet18").eval()
    fcn32 = FCN(num_classes=3, variant="32s", backbone="resnet18").eval()
    fcn32.encoder.load_state_dict(fcn8.encoder.state_dict())
    fcn32.score_fr.load_state_dict(fcn8.score_fr.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        # 2x then 2x then 8x bilinear equals one 32x bilinear upsampling, up to every border
        torch.testing.assert_close(fcn8(x), fcn32(x), rtol=1e-4, atol=1e-5)


def test_vgg16_fcn8s_parameter_count_against_torchvision():
    ours = count_parameters(FCN(num_classes=21, variant="8s", backbone="vgg16"))
    vgg = count_parameters(torchvision.models.vgg16(weights=None))
    fc8 = 4096 * 1000 + 1000  # the ImageNet classifier FCN drops
    scores = (4096 + 1) * 21 + (512 + 1) * 21 + (256 + 1) * 21  # score_fr, score_pool4, score_pool3
    upsampling = 21 * 21 * (4 * 4 + 4 * 4)  # upscore2, upscore_pool4 (no bias); upscore8 is fixed
    assert ours == vgg - fc8 + scores + upsampling == 134_376_863
    assert round(ours / 1e6) == 134  # Table 1 of the paper: 134M parameters


def test_fully_connected_layers_load_as_convolutions(monkeypatch):
    real_vgg16 = torchvision.models.vgg16
    requested, built = [], []

    def offline_vgg16(weights=None):  # random weights instead of a download
        requested.append(weights)
        built.append(real_vgg16(weights=None))
        return built[-1]

    monkeypatch.setattr(torchvision.models, "vgg16", offline_vgg16)
    encoder = VGG16Encoder(in_channels=3, weights="DEFAULT")
    assert requested == ["DEFAULT"]
    vgg = built[0]
    torch.manual_seed(0)
    pool5 = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        fc6 = vgg.classifier[0](pool5.flatten(1))  # (2, 4096)
        conv6 = encoder.fc6[0](pool5)  # (2, 4096, 1, 1)
        torch.testing.assert_close(conv6.flatten(1), fc6, rtol=1e-4, atol=1e-4)
        image = torch.rand(1, 3, 16, 16)
        first = vgg.features[0]
        expected = nn.functional.conv2d(image, first.weight, first.bias, padding=100)
        torch.testing.assert_close(encoder.to_pool3[0](image), expected)


def test_grey_input_adaptation_of_pretrained_stem(monkeypatch):
    real_resnet18 = torchvision.models.resnet18

    def offline_resnet18(weights=None, **kwargs):
        torch.manual_seed(3)
        return real_resnet18(weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "resnet18", offline_resnet18)
    rgb = FCN(2, "8s", "resnet18", in_channels=3, backbone_weights="DEFAULT").encoder
    grey = FCN(2, "8s", "resnet18", in_channels=1, backbone_weights="DEFAULT").encoder
    image = torch.rand(1, 1, 20, 20)
    with torch.no_grad():  # a grey image gives the same response whether fed as 1 or 3 channels
        torch.testing.assert_close(
            grey.stem[0](image), rgb.stem[0](image.expand(1, 3, 20, 20)), rtol=1e-4, atol=1e-5
        )


def test_fuse_skip_and_crop():
    up = torch.ones(1, 2, 3, 4)
    skip = torch.arange(2 * 6 * 7.0).view(1, 2, 6, 7)
    torch.testing.assert_close(fuse_skip(up, skip, offset=2), 1 + skip[..., 2:5, 2:6])
    with pytest.raises(ValueError, match="cannot crop"):
        crop(skip, (3, 4), offset=4)
    with pytest.raises(ValueError, match="number of classes"):
        fuse_skip(up, torch.zeros(1, 3, 6, 7))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "4s"}, "variant must be one of"),
        ({"backbone": "vgg19"}, "backbone must be one of"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FCN(**kwargs)


def test_forward_rejects_wrong_channels():
    with pytest.raises(ValueError, match="in_channels=3"):
        FCN(num_classes=2, backbone="resnet18")(torch.rand(1, 1, 32, 32))
