"""The segmentation models of the course, built by name with `build_model`.

    from course_lib import models
    net = models.build_model("unet", in_channels=1, num_classes=2, base_channels=16, depth=3)

Every model takes the keyword arguments `in_channels` and `num_classes` and maps
`(N, in_channels, H, W)` float images to logits `(N, num_classes, H, W)` for any H, W.
"""

from typing import Any

from torch import nn

from course_lib.models.blocks import ConvBNReLU, DoubleConv, bilinear_kernel
from course_lib.models.deeplab import ASPP, DeepLabV3, DeepLabV3Plus
from course_lib.models.encoders import ResNetEncoder
from course_lib.models.fastscnn import FastSCNN
from course_lib.models.fcn import FCN
from course_lib.models.segformer import SegFormer
from course_lib.models.unet import UNet
from course_lib.models.weights import copy_weights_in_order, randomize_batchnorm

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "fcn": FCN,
    "deeplabv3": DeepLabV3,
    "deeplabv3plus": DeepLabV3Plus,
    "fastscnn": FastSCNN,
    "segformer": SegFormer,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` in `MODELS` with keyword arguments `kwargs`."""
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a string, one of {sorted(MODELS)}; got {type(name).__name__}"
        )
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[key](**kwargs)


__all__ = [
    "MODELS",
    "build_model",
    "copy_weights_in_order",
    "randomize_batchnorm",
    "ConvBNReLU",
    "DoubleConv",
    "bilinear_kernel",
    "UNet",
    "ResNetEncoder",
    "FCN",
    "ASPP",
    "DeepLabV3",
    "DeepLabV3Plus",
    "FastSCNN",
    "SegFormer",
]
