"""DeepLabV3 / V3+ and ASPP: parity with torchvision (parameter counts and outputs with copied
weights), output-stride feature sizes, odd input sizes, batch size 1 in training, input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

from course_lib import models
from course_lib.models.deeplab import ASPP, DeepLabV3, DeepLabV3Plus
from course_lib.models.weights import copy_weights_in_order, randomize_batchnorm


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "in_channels, out_channels, rates", [(2048, 256, (12, 24, 36)), (64, 32, (1, 2, 3, 4))]
)
def test_aspp_parameter_count_matches_torchvision(in_channels, out_channels, rates):
    ours = ASPP(in_channels, out_channels, rates)
    theirs = TorchvisionASPP(in_channels, list(rates), out_channels)
    assert count(ours) == count(theirs)


def test_aspp_output_matches_torchvision_with_copied_weights():
    torch.manual_seed(0)
    theirs = TorchvisionASPP(16, [1, 2, 3], 8)
    ours = ASPP(16, 8, (1, 2, 3))
    randomize_batchnorm(theirs)
    copy_weights_in_order(theirs, ours)
    x = torch.randn(2, 16, 9, 11)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_deeplabv3_parameter_count_matches_torchvision_resnet50():
    theirs = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=21)
    ours = DeepLabV3(num_classes=21, backbone="resnet50", output_stride=8)
    assert count(ours) == count(theirs) == 39_638_869


def test_deeplabv3_output_matches_torchvision_with_copied_weights():
    torch.manual_seed(0)
    theirs = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=5)
    ours = DeepLabV3(num_classes=5, backbone="resnet50", output_stride=8)
    randomize_batchnorm(theirs)
    copy_weights_in_order(theirs, ours)
    x = torch.randn(1, 3, 41, 47)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x)["out"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "backbone, low_channels, high_channels", [("resnet18", 64, 512), ("resnet50", 256, 2048)]
)
@pytest.mark.parametrize("output_stride, size", [(8, 65), (16, 33)])
def test_513_input_gives_output_stride_features(
    backbone, low_channels, high_channels, output_stride, size
):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = DeepLabV3(num_classes=3, backbone=backbone, output_stride=output_stride).eval()
        low, *_, high = model.backbone(torch.empty(1, 3, 513, 513))
        logits = model(torch.empty(1, 3, 513, 513))
    assert tuple(low.shape) == (1, low_channels, 129, 129)
    assert tuple(high.shape) == (1, high_channels, size, size)
    assert tuple(logits.shape) == (1, 3, 513, 513)


@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_atrous_rates_scale_with_output_stride(output_stride, rates):
    model = DeepLabV3Plus(num_classes=3, backbone="resnet18", output_stride=output_stride)
    assert model.aspp.atrous_rates == rates
    assert [branch[0].dilation[0] for branch in model.aspp.atrous] == list(rates)


def test_basic_block_backbone_follows_torchvision_dilation_rule():
    """resnet18 is made atrous by hand; its 3x3 dilations must follow the rule torchvision applies
    to resnet50: a dilated stage's first block keeps the previous dilation, later blocks double it."""

    def dilations(layer, attribute):
        return [getattr(block, attribute).dilation[0] for block in layer]

    ours = DeepLabV3(num_classes=3, backbone="resnet18", output_stride=8).backbone
    reference = DeepLabV3(num_classes=3, backbone="resnet50", output_stride=8).backbone
    assert dilations(ours.layer3, "conv1")[:1] + dilations(ours.layer3, "conv2")[1:] == [1, 2]
    assert dilations(reference.layer3, "conv2")[:2] == [1, 2]
    assert dilations(ours.layer4, "conv1")[:1] == dilations(reference.layer4, "conv2")[:1] == [2]
    assert dilations(ours.layer4, "conv2")[1:] == [4]  # resnet18 has two blocks in layer4
    assert dilations(reference.layer4, "conv2")[1:] == [4, 4]


@pytest.mark.parametrize("cls", [DeepLabV3, DeepLabV3Plus])
@pytest.mark.parametrize("size", [(37, 51), (64, 64), (33, 17)])
def test_logits_have_input_size_for_odd_sizes(cls, size):
    model = cls(num_classes=4, in_channels=1, backbone="resnet18", output_stride=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert tuple(out.shape) == (2, 4, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [DeepLabV3, DeepLabV3Plus])
def test_batch_size_one_trains(cls):
    model = cls(num_classes=3, backbone="resnet18", output_stride=16).train()
    out = model(torch.randn(1, 3, 48, 40))
    out.mean().backward()
    assert model.backbone.stem[0].weight.grad is not None


def test_image_pooling_branch_uses_running_statistics_for_a_single_value():
    torch.manual_seed(0)
    aspp = ASPP(8, 4, (1, 2))
    randomize_batchnorm(aspp)
    x = torch.randn(1, 8, 5, 6)
    bn = aspp.pooling.bn
    mean_before = bn.running_mean.clone()
    train_out = aspp.pooling.train()(x)
    eval_out = aspp.pooling.eval()(x)
    torch.testing.assert_close(train_out, eval_out)
    torch.testing.assert_close(bn.running_mean, mean_before)  # nothing learnt from one value
    aspp.pooling.train()(torch.randn(2, 8, 5, 6))
    assert not torch.equal(bn.running_mean, mean_before)  # two images: ordinary batch statistics
    with pytest.raises(ValueError, match="more than 1 value"):
        TorchvisionASPP(8, [1, 2], 4).train()(x)  # the failure this branch avoids


def test_registered_in_models():
    assert models.MODELS["deeplabv3"] is DeepLabV3
    assert models.MODELS["deeplabv3plus"] is DeepLabV3Plus
    assert isinstance(
        models.build_model("deeplabv3plus", num_classes=2, backbone="resnet18"), DeepLabV3Plus
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backbone="vgg16"), "backbone must be one of"),
        (dict(output_stride=32), r"output_stride must be one of \(8, 16\), got 32"),
        (dict(num_classes=0), "num_classes must be a positive int"),
        (dict(in_channels=0), "in_channels must be a positive int"),
    ],
)
def test_constructor_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepLabV3(**{"num_classes": 3, "backbone": "resnet18", **kwargs})


def test_non_int_sizes_are_type_errors():
    with pytest.raises(TypeError, match="in_channels must be a positive int, got float 2.5"):
        DeepLabV3(num_classes=3, backbone="resnet18", in_channels=2.5)


def test_forward_checks_channels_and_dtype():
    model = DeepLabV3(num_classes=3, backbone="resnet18")
    with pytest.raises(
        ValueError, match="x has 1 channels but the model was built with in_channels=3"
    ):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="x must be a floating point tensor, got dtype torch.uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_aspp_checks_rates():
    with pytest.raises(ValueError, match="atrous_rates"):
        ASPP(8, 4, (0, 2))
