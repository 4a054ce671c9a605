"""The network built from an :class:`ArchSpec`: one module class for MobileNetV3, V2 and MnasNet alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import zoo
from .layers import ConvNormAct, InvertedResidual, SqueezeExcite, make_activation
from .spec import ArchSpec, with_output_stride


@dataclass(frozen=True)
class Tap:
    """A named intermediate output: where it is, its channels and its output stride."""

    name: str
    channels: int
    stride: int
    index: int  # position in ``features``
    expansion: bool = False


class MobileNetV3(nn.Module):
    """A classification network built from a spec.

    ``features`` is an ``nn.Sequential``: the stem, one :class:`InvertedResidual` per block, the last 1x1 conv
    (and Small's optional SE on it). ``forward_head`` pools, applies the head conv (no norm, with bias), dropout
    and the classifier.
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        norm = dict(bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum, padding=spec.padding)
        layers: list[nn.Module] = [ConvNormAct(spec.in_channels, spec.stem_channels, spec.stem_kernel,
                                               spec.stem_stride, act=spec.stem_act, **norm)]
        for i, (b, in_ch) in enumerate(zip(spec.blocks, spec.block_inputs(), strict=True)):
            layers.append(InvertedResidual(in_ch, b.exp, b.out, b.kernel, b.stride, b.dilation, b.act,
                                           spec.se_channels(i), spec.se_inner_act, spec.se_gate, **norm))
        prev = spec.blocks[-1].out
        if spec.last_channels:
            layers.append(ConvNormAct(prev, spec.last_channels, 1, act=spec.last_act, **norm))
            if spec.last_se:
                layers.append(SqueezeExcite(spec.last_channels, spec.last_se_channels(), spec.se_inner_act,
                                            spec.se_gate))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if spec.head_channels:
            self.conv_head = nn.Conv2d(spec.features_channels, spec.head_channels, 1, bias=True)
            self.head_act = make_activation(spec.head_act)
        else:
            self.conv_head = nn.Identity()
            self.head_act = nn.Identity()
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.classifier_in, spec.num_classes)
        self._taps = _tap_table(spec)
        init_weights(self)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_act(self.conv_head(self.pool(x)))
        x = torch.flatten(x, 1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """Replace the classifier (freshly initialised) for ``num_classes``; the spec is updated to match."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.classifier = nn.Linear(self.spec.classifier_in, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        changes = {"num_classes": num_classes}
        if dropout is not None:
            self.dropout.p = dropout
            changes["dropout"] = dropout
        self.spec = self.spec.replace(**changes)

    # -- feature taps ------------------------------------------------------------------------------
    def tap_info(self) -> list[Tap]:
        """Every tap this model can hand out, in forward order."""
        return list(self._taps.values())

    def forward_taps(self, x: torch.Tensor, names: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Run the feature extractor and return the named intermediate outputs.

        Names: ``stem``, ``block{i}`` (1-based, as in the paper's tables), ``block{i}.expansion``,
        ``stride{s}`` (the last block output at output stride ``s``), ``C4`` (the expansion output of the last
        stride-2 block, SSDLite's C4), ``C5`` / ``features`` (the layer before pooling).
        """
        wanted = {}
        for n in names:
            if n not in self._taps:
                raise KeyError(f"unknown tap {n!r}; this model has: {', '.join(self._taps)}")
            wanted[n] = self._taps[n]
        last = max(t.index for t in wanted.values()) if wanted else -1
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features[: last + 1]):
            expanded = None
            if isinstance(layer, InvertedResidual) and any(t.expansion and t.index == i for t in wanted.values()):
                x, expanded = layer.forward_with_expansion(x)
            else:
                x = layer(x)
            for n, t in wanted.items():
                if t.index == i:
                    out[n] = expanded if t.expansion else x
        return {n: out[n] for n in names}


def _tap_table(spec: ArchSpec) -> dict[str, Tap]:
    taps: dict[str, Tap] = {}
    stride = spec.stem_stride
    taps["stem"] = Tap("stem", spec.stem_channels, stride, 0)
    by_stride: dict[int, Tap] = {stride: taps["stem"]}
    last_down = None
    for i, b in enumerate(spec.blocks, start=1):
        taps[f"block{i}.expansion"] = Tap(f"block{i}.expansion", b.exp, stride, i, expansion=True)
        if b.stride > 1:
            last_down = i
        stride *= b.stride
        taps[f"block{i}"] = Tap(f"block{i}", b.out, stride, i)
        by_stride[stride] = taps[f"block{i}"]
    for s, t in sorted(by_stride.items()):
        taps[f"stride{s}"] = Tap(f"stride{s}", t.channels, t.stride, t.index)
    if last_down is not None:
        c4 = taps[f"block{last_down}.expansion"]
        taps["C4"] = Tap("C4", c4.channels, c4.stride, c4.index, expansion=True)
    last_index = len(spec.blocks) + (1 if spec.last_channels else 0) + (1 if spec.last_se else 0)
    for n in ("C5", "features"):
        taps[n] = Tap(n, spec.features_channels, stride, last_index)
    return taps


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit BN, small-normal classifier: the usual MobileNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build(spec: ArchSpec | str, **overrides) -> MobileNetV3:
    """Build a network from a spec, a registered model name, or a path to a spec JSON file."""
    if isinstance(spec, str):
        spec = ArchSpec.load(spec) if spec.endswith(".json") else zoo.get_spec(spec)
    if overrides:
        spec = spec.replace(**overrides)
    return MobileNetV3(spec)


def _from_zoo(spec_builder, width_mult: float, num_classes: int, output_stride: int | None,
              kwargs: dict) -> MobileNetV3:
    spec = spec_builder(width_mult, num_classes=num_classes, **kwargs)
    if output_stride is not None:
        spec = with_output_stride(spec, output_stride)
    return MobileNetV3(spec)


def mobilenet_v3_large(width_mult: float = 1.0, num_classes: int = 1000, output_stride: int | None = None,
                       **kwargs) -> MobileNetV3:
    """MobileNetV3-Large (Table 1). ``minimal=True`` for the minimalistic model; ``output_stride`` (8 or 16)
    dilates the later stages the TF way; other keyword arguments set spec fields (``dropout``, ``padding``...)."""
    return _from_zoo(zoo.mobilenet_v3_large, width_mult, num_classes, output_stride, kwargs)


def mobilenet_v3_small(width_mult: float = 1.0, num_classes: int = 1000, output_stride: int | None = None,
                       **kwargs) -> MobileNetV3:
    """MobileNetV3-Small (Table 2); ``paper_head=True`` for the printed 1280 head, ``minimal=True``,
    ``last_se=True`` and ``output_stride`` as for Large."""
    return _from_zoo(zoo.mobilenet_v3_small, width_mult, num_classes, output_stride, kwargs)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, output_stride: int | None = None,
                 **kwargs) -> MobileNetV3:
    """MobileNetV2 from the same builder."""
    return _from_zoo(zoo.mobilenet_v2, width_mult, num_classes, output_stride, kwargs)


def mnasnet_a1(width_mult: float = 1.0, num_classes: int = 1000, output_stride: int | None = None,
               **kwargs) -> MobileNetV3:
    """MnasNet-A1 from the same builder."""
    return _from_zoo(zoo.mnasnet_a1, width_mult, num_classes, output_stride, kwargs)
