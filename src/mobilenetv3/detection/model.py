"""DetectionModel: SSDLite on a MobileNet backbone (section 6.3).

::

    C4, C5 = backbone.forward_taps(x, ["C4", "C5"])       # strides 16 and 32 (:mod:`.backbone`)
    levels = [C4, C5]; for each extra width d: levels.append(extra_d(levels[-1]))     # strides 64 .. 512
    extra_d = 1x1 (d/2) -> depthwise 3x3 stride 2 -> 1x1 (d)          # each conv + BN + ReLU6
    per level: class head = depthwise 3x3 + BN + ReLU6 -> 1x1 (anchors x class slots, bias)
               box head   = depthwise 3x3 + BN + ReLU6 -> 1x1 (anchors x 4, bias)

as the TF object-detection API's ``ssd_mobilenet_v3_*`` feature extractors (``use_depthwise``,
``layer_depth [-1, -1, 512, 256, 256, 128]``) with a ``ConvolutionalBoxPredictor`` (``use_depthwise``,
``kernel_size 3``, no layers before the predictor) and torchvision's ``ssdlite320_mobilenet_v3_large``.

``forward``: in training mode (or with ``raw=True``), the head outputs ``(cls_logits (B, A, slots),
box_regression (B, A, 4))`` for the loss; in eval mode the post-processed detections (:mod:`.postprocess`:
``boxes, scores, labels, num_detections``, fixed size), so that an ONNX export carries the whole pipeline.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import ConvNormAct
from ..model import MobileNetV3, init_weights
from ..spec import ArchSpec
from .anchors import make_anchors
from .postprocess import postprocess
from .spec import DetSpec

FOCAL_PRIOR = 0.01  # sigmoid heads start at this foreground probability (Lin et al.; TF's bias init -4.6)


def extra_layer(c_in: int, width: int, act: str, norm: dict) -> nn.Sequential:
    """SSDLite's extra feature layer: 1x1 to ``width / 2``, depthwise 3x3 stride 2, 1x1 to ``width``."""
    mid = width // 2
    return nn.Sequential(ConvNormAct(c_in, mid, 1, act=act, **norm),
                         ConvNormAct(mid, mid, 3, 2, groups=mid, act=act, **norm),
                         ConvNormAct(mid, width, 1, act=act, **norm))


class PredictionHead(nn.Module):
    """One depthwise-separable predictor per level; outputs concatenated as ``(B, A, per_anchor)``."""

    def __init__(self, channels: list[int], anchors: list[int], per_anchor: int, kernel: int, act: str,
                 norm: dict) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.levels = nn.ModuleList(
            nn.Sequential(ConvNormAct(c, c, kernel, groups=c, act=act, **norm), nn.Conv2d(c, a * per_anchor, 1))
            for c, a in zip(channels, anchors, strict=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for x, level in zip(features, self.levels, strict=True):
            y = level(x)  # (B, a * per_anchor, H, W) -> (B, H * W * a, per_anchor): row, column, anchor
            out.append(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, self.per_anchor))
        return torch.cat(out, 1)


class DetectionModel(nn.Module):
    """SSDLite built from a :class:`~.spec.DetSpec` (module docstring)."""

    def __init__(self, spec: DetSpec) -> None:
        super().__init__()
        self.spec = spec
        backbone_spec = spec.backbone_spec()
        self.backbone = MobileNetV3(backbone_spec)
        # The classifier is not part of a detector: no parameters, never run.
        self.backbone.dropout = nn.Identity()
        self.backbone.classifier = nn.Identity()
        norm = dict(bn_eps=backbone_spec.bn_eps, bn_momentum=backbone_spec.bn_momentum, padding=backbone_spec.padding)
        channels = spec.level_channels()
        self.extras = nn.ModuleList(extra_layer(c, w, spec.extra_act, norm)
                                    for c, w in zip(channels[1:-1], spec.extra_widths, strict=True))
        per_level = spec.anchors.anchors_per_level(spec.num_levels)
        self.cls_head = PredictionHead(channels, per_level, spec.class_slots, spec.head_kernel, spec.head_act, norm)
        self.box_head = PredictionHead(channels, per_level, 4, spec.head_kernel, spec.head_act, norm)
        for part in (self.extras, self.cls_head, self.box_head):
            init_weights(part)
        for head in (self.cls_head, self.box_head):
            for level in head.levels:
                nn.init.normal_(level[-1].weight, 0.0, 0.01)
        if spec.classification == "sigmoid":
            for level in self.cls_head.levels:
                nn.init.constant_(level[-1].bias, -math.log((1 - FOCAL_PRIOR) / FOCAL_PRIOR))
        self._anchor_cache: dict[tuple, torch.Tensor] = {}

    @property
    def backbone_spec(self) -> ArchSpec:
        return self.backbone.spec

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The prediction levels: C4, C5 and the extra layers' outputs."""
        taps = self.backbone.forward_taps(x, ["C4", "C5"])
        levels = [taps["C4"], taps["C5"]]
        for extra in self.extras:
            levels.append(extra(levels[-1]))
        return levels

    def anchors_for(self, feature_sizes: list[tuple[int, int]], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """cxcywh anchors (fractions of the image) for these level sizes, cached."""
        key = (tuple(feature_sizes), dtype, str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = make_anchors(self.spec.anchors, list(feature_sizes), dtype).to(device)
        return self._anchor_cache[key]

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(cls_logits, box_regression, anchors)`` for a batch ``x``."""
        levels = self.forward_features(x)
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in levels]
        anchors = self.anchors_for(sizes, x.dtype, x.device)
        return self.cls_head(levels), self.box_head(levels), anchors

    def forward(self, x: torch.Tensor, raw: bool = False):
        cls_logits, box_regression, anchors = self.forward_raw(x)
        if self.training or raw:
            return cls_logits, box_regression
        return postprocess(cls_logits, box_regression, anchors, self.spec, (int(x.shape[-2]), int(x.shape[-1])))


class RawOutputs(nn.Module):
    """A detector up to its head outputs (class logits and box regressions; no decoding, no NMS): what Table 6's
    latency compares across backbones, the post-processing being the same for all. ``spec`` and
    ``backbone_spec`` are the detector's (its name and input)."""

    def __init__(self, model: DetectionModel) -> None:
        super().__init__()
        self.model = model
        self.spec = model.spec

    @property
    def backbone_spec(self) -> ArchSpec:
        return self.model.backbone_spec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x, raw=True)
