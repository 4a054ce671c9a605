"""SegmentationModel: a MobileNet backbone (features through ``forward_taps``) with an LR-ASPP or R-ASPP head.

LR-ASPP (Figure 10, section 6.4), on the last feature map ``f`` (output stride 16 by default) and the stride-8 tap
``l``::

    x = ReLU(BN(conv1x1_F(f)))                       # F filters
    s = gate(conv1x1_F(pool(f)))                     # + bias, no BN; upsampled to f's size for kernel pooling
    y = conv1x1_K(upsample(x * s, size of l)) + conv1x1_K(l)      # both with bias
    out = upsample(y, input size)

The order follows the figure and DeepLab's code (``decoder_output_is_logits``): the product is upsampled *before*
its 1x1 conv to the K classes. Both are linear and bilinear weights sum to one, so the result equals converting
first; the cost does not (the conv runs at stride 8): Table 7's rows 7 and 8 differ by exactly this count.

R-ASPP (MobileNetV2 paper, section 6.3 "Reduced ASPP"; DeepLab's ASPP with no atrous branch, as the V3 paper's
section 6.4 describes it: "only two branches consisting of a 1x1 convolution and a global-average pooling")::

    b = ReLU(BN(conv1x1_F(f)));  p = upsample(ReLU(BN(conv1x1_F(pool(f)))), size of f)
    y = conv1x1_K(dropout(ReLU(BN(conv1x1_F(concat(p, b))))));  out = upsample(y, input size)

with DeepLab's branch order (pooling first), its concat projection and its dropout (keep 0.9). No skip.

Upsampling is bilinear with ``align_corners=False`` (torchvision's; DeepLab's TF code aligns corners). BN settings
are the backbone's. With global pooling the R-ASPP pooling branch normalises a 1x1 map: training needs batches of
two or more (as torchvision's DeepLab heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct, InvertedResidual, make_activation
from ..model import MobileNetV3, init_weights
from ..spec import ArchSpec
from .backbone import LowTap
from .spec import SegSpec


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImagePool(nn.Module):
    """Global average pooling, or Figure 10's large-kernel average pooling (no padding) of a SegSpec."""

    def __init__(self, spec: SegSpec) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(spec.pool_kernel, spec.pool_stride) if spec.pooling == "kernel" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is None:
            return x.mean((2, 3), keepdim=True)
        return self.pool(x)


class LRASPPHead(nn.Module):
    """Lite R-ASPP (module docstring). ``low_channels`` 0: no skip."""

    def __init__(self, spec: SegSpec, high_channels: int, low_channels: int, norm: dict) -> None:
        super().__init__()
        f, k = spec.filters, spec.num_classes
        self.conv = ConvNormAct(high_channels, f, 1, act="relu", **norm)
        self.pool = ImagePool(spec)
        self.gate_conv = nn.Conv2d(high_channels, f, 1, bias=True)
        self.gate = make_activation(spec.gate)
        self.classify_high = nn.Conv2d(f, k, 1, bias=True)
        self.classify_low = nn.Conv2d(low_channels, k, 1, bias=True) if low_channels else None

    def forward(self, high: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(high)
        s = self.gate(self.gate_conv(self.pool(high)))
        if self.pool.pool is not None:
            s = upsample(s, x.shape[-2:])
        x = x * s
        if self.classify_low is None:
            return self.classify_high(x)
        return self.classify_high(upsample(x, low.shape[-2:])) + self.classify_low(low)


class RASPPHead(nn.Module):
    """MobileNetV2's reduced ASPP (module docstring)."""

    def __init__(self, spec: SegSpec, high_channels: int, norm: dict, dropout: float = 0.1) -> None:
        super().__init__()
        f = spec.filters
        self.branch = ConvNormAct(high_channels, f, 1, act="relu", **norm)
        self.pool = ImagePool(spec)
        self.pool_conv = ConvNormAct(high_channels, f, 1, act="relu", **norm)
        self.project = ConvNormAct(2 * f, f, 1, act="relu", **norm)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Conv2d(f, spec.num_classes, 1, bias=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        b = self.branch(high)
        p = upsample(self.pool_conv(self.pool(high)), b.shape[-2:])
        return self.classify(self.dropout(self.project(torch.cat([p, b], dim=1))))


def run_with_depthwise(block: InvertedResidual, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's output and its depthwise output (after BN and activation, before SE): DeepLab's
    ``depthwise_output`` end point, which ``MobileNetV3.forward_taps`` does not offer. Same steps as
    ``InvertedResidual.forward_with_expansion``; the tests check the two agree."""
    shortcut = x
    if block.expand is not None:
        x = block.expand(x)
    depthwise = block.dw(x)
    x = block.se(depthwise) if block.se is not None else depthwise
    x = block.project(x)
    if block.use_residual:
        x = x + shortcut
    return x, depthwise


class SegmentationModel(nn.Module):
    """Backbone features (classifier head dropped) + head; ``forward`` returns ``(N, num_classes, H, W)`` logits
    at the input's size."""

    def __init__(self, spec: SegSpec) -> None:
        super().__init__()
        self.spec = spec
        backbone_spec = spec.backbone_spec()
        self.backbone = MobileNetV3(backbone_spec)
        # The classifier is not part of a segmentation network: no parameters, never run.
        self.backbone.dropout = nn.Identity()
        self.backbone.classifier = nn.Identity()
        self.low_tap: LowTap | None = spec.low_tap_info()
        norm = dict(bn_eps=backbone_spec.bn_eps, bn_momentum=backbone_spec.bn_momentum)
        high = backbone_spec.features_channels
        if spec.head == "lraspp":
            self.head = LRASPPHead(spec, high, self.low_tap.channels if self.low_tap else 0, norm)
        else:
            self.head = RASPPHead(spec, high, norm)
        init_weights(self.head)

    @property
    def backbone_spec(self) -> ArchSpec:
        return self.backbone.spec

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def depthwise_readers(self) -> list[tuple[nn.Module, nn.Module, str]]:
        """``(block, module, attribute)`` for each convolution outside the backbone that reads a block's depthwise
        output (the skip of a "depthwise" low tap, DeepLab's end point: ``head.classify_low``). Whatever widens
        that block's expansion (int8's channel padding, :mod:`mobilenetv3.deploy.quantize.surgery`) must widen
        this convolution's input too."""
        tap, reader = self.low_tap, getattr(self.head, "classify_low", None)
        if tap is None or tap.kind != "depthwise" or reader is None:
            return []
        return [(self.backbone.features[tap.block], self.head, "classify_low")]

    def forward_backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The final feature map and the low-level tap (None without one)."""
        tap = self.low_tap
        if tap is None:
            return self.backbone.forward_features(x), None
        if tap.kind == "output":
            name = f"block{tap.block}"
            out = self.backbone.forward_taps(x, [name, "features"])
            return out["features"], out[name]
        low = None
        for i, layer in enumerate(self.backbone.features):
            if i == tap.block:
                x, low = run_with_depthwise(layer, x)
            else:
                x = layer(x)
        return x, low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.spec.pooling == "kernel":
            self.spec.pooled_size(int(size[0]), int(size[1]))  # a clear error when the kernel does not fit
        high, low = self.forward_backbone(x)
        return upsample(self.head(high, low), size)

