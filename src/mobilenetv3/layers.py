"""Building blocks: activations, conv-norm-activation, squeeze-and-excite and the inverted residual."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6, the paper's piecewise-linear sigmoid (eq. in section 5.2)."""
    return F.hardsigmoid(x)


def hard_swish(x: torch.Tensor) -> torch.Tensor:
    """x * relu6(x + 3) / 6 (section 5.2)."""
    return F.hardswish(x)


def hard_swish_naive(x: torch.Tensor) -> torch.Tensor:
    """h-swish as four separate ops, ``x * relu6(x + 3) / 6``: the unfused implementation (Table 5's "no-opt")."""
    return x * F.relu6(x + 3.0) / 6.0


class NaiveHardswish(nn.Module):
    """h-swish computed op by op (add, clamp, multiply, divide), each reading and writing the whole tensor.

    Same values as :class:`torch.nn.Hardswish` (to float rounding), but four kernels and graph nodes instead of
    one (ONNX: ``Add -> Clip -> Mul -> Div`` instead of ``HardSwish``): the "naive" h-swish of the paper's
    Table 5, whose latency cost the fused operator removes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_swish_naive(x)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; fused PyTorch kernels where they exist (``hswish_naive``: on purpose not)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "hswish_naive":
        return NaiveHardswish()
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "identity":
        return nn.Identity()
    if name == "hard_sigmoid":
        return nn.Hardsigmoid(inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}")


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: pad (total // 2, total - total // 2), computed per input size.

    For stride 2 on even inputs TF pads one more pixel at the bottom/right than at the top/left, which a
    symmetric PyTorch padding cannot express; weights trained in TF need this to reproduce exactly.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def _pad(self, size: int, dim: int) -> tuple[int, int]:
        k, s, d = self.kernel_size[dim], self.stride[dim], self.dilation[dim]
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2], 0)
        left, right = self._pad(x.shape[-1], 1)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def make_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
              bias: bool = False, padding: str = "symmetric") -> nn.Conv2d:
    if padding == "same" and kernel > 1:
        return SameConv2d(in_ch, out_ch, kernel, stride=stride, dilation=dilation, groups=groups, bias=bias)
    pad = (kernel - 1) // 2 * dilation
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=pad, dilation=dilation, groups=groups,
                     bias=bias)


class ConvNormAct(nn.Sequential):
    """conv -> BatchNorm -> activation, with the children named ``conv``, ``bn`` and ``act``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                 act: str = "relu", bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 padding: str = "symmetric") -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, stride, dilation, groups, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(act)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: global pool -> 1x1 reduce (+bias) -> inner act -> 1x1 expand (+bias) -> gate -> scale.

    No normalisation inside, as in the paper and every reference implementation.
    """

    def __init__(self, channels: int, squeeze: int, inner_act: str = "relu", gate: str = "hard_sigmoid") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = make_activation(inner_act)
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """The MobileNetV2/V3 bottleneck: [1x1 expand] -> depthwise -> [SE] -> 1x1 project, residual when shapes allow.

    ``expand`` is left out when the expansion width equals the input width.
    """

    def __init__(self, in_ch: int, exp: int, out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 act: str = "relu", se_channels: int = 0, se_inner_act: str = "relu",
                 se_gate: str = "hard_sigmoid", bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 padding: str = "symmetric") -> None:
        super().__init__()
        norm = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        self.expand = ConvNormAct(in_ch, exp, 1, act=act, **norm) if exp != in_ch else None
        self.dw = ConvNormAct(exp, exp, kernel, stride, dilation, groups=exp, act=act, **norm)
        self.se = SqueezeExcite(exp, se_channels, se_inner_act, se_gate) if se_channels else None
        self.project = ConvNormAct(exp, out, 1, act="identity", **norm)
        self.use_residual = stride == 1 and in_ch == out

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its expansion output (the input itself when there is no expansion)."""
        shortcut = x
        if self.expand is not None:
            x = self.expand(x)
        expanded = x
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        x = self.project(x)
        if self.use_residual:
            x = x + shortcut
        return x, expanded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_expansion(x)[0]
