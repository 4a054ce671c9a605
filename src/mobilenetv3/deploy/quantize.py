"""int8 post-training quantisation, calibrated on real images: ONNX Runtime (the default) or PyTorch PT2E.

Two toolchains were built and timed on the same machine (224x224, batch 1, one thread;
``benchmarks/int8_quantize.py toolchains`` measures them again):

``onnxruntime`` (default)
    The BN-folded float ONNX export is quantised by ``onnxruntime.quantization.quantize_static`` into QDQ form:
    uint8 activations (asymmetric), int8 weights (symmetric, per output channel), ``reduce_range`` off (for CPUs
    with VNNI, whose u8 x s8 dot products do not saturate; turn it on for older AVX2-only CPUs). ONNX Runtime
    fuses every ``DQ -> op -> Q`` group into an integer kernel (``QLinearConv``, ``QLinearAdd``, ``QLinearMul``,
    ``QLinearGlobalAveragePool``, ``QGemm``) and runs them channels-last. S8S8 (int8 activations) and U8U8 were
    both slower here (0.5-0.6x of U8S8).
``pt2e``
    ``torch.export`` -> ``prepare_pt2e(X86InductorQuantizer)`` -> calibration -> ``convert_pt2e`` (from
    ``torchao``: PyTorch 2.13 no longer ships ``torch.ao.quantization.quantize_pt2e``), run by ``torch.compile``
    with Inductor's freezing, which lowers the quantised convolutions to oneDNN's ``qconv_pointwise``. At batch 1
    oneDNN spends ~50 us per convolution whatever its size: measured 6.6 ms (Large) and 4.0 ms (Small) against
    ONNX Runtime int8's 3.3 and 1.4 ms, slower even than ONNX Runtime float (5.3 and 1.9 ms; Inductor's C++
    wrapper on). It stays selectable (:func:`quantize_pt2e`, :func:`save_pt2e`, :func:`load_pt2e`,
    ``mnv3 export --int8 --int8-toolchain pt2e``); its save/load round trip is exact.

A plain ``quantize_static`` call makes MobileNetV3 *slower* than ONNX Runtime float on this CPU (0.93x Large,
0.77x Small; the default set-up below gives 1.57x and 1.36x). ONNX Runtime's
per-node profile (:func:`profile_onnx`) shows why, and the changes below, each exact in float, address it
(:class:`Int8Options`; ``benchmarks/int8_quantize.py ablation`` times each one):

``pad_depthwise`` (default 16)
    MLAS runs an int8 depthwise convolution with its fast symmetric-weight kernel only when the channel count is
    a multiple of 16; 72, 88, 120, 184 and 200 channels fall back to a generic kernel 3-4x slower than float.
    Those blocks' expansions are padded with zero filters to the next multiple of 16: the padded channels stay
    zero through activation, depthwise conv, SE and product, and the projection gives them zero weight.
``int8_hardswish`` (default on)
    ONNX Runtime has no integer hard-swish: each one runs as ``DQ -> HardSigmoid -> Mul -> Q``, four float passes
    over the activation, where float ONNX Runtime fuses hard-swish into the convolution. It is rewritten in the
    integer domain: ``hswish(x) = x * clip(x / 6 + 1/2, 0, 1)``, and when the scale ``s`` of ``x`` is ``3 / k``
    for an integer ``k`` the gate is the *same* uint8 tensor clipped to ``[z - k, z + k]`` read with scale
    ``s / 6`` and zero point ``z - k``. So the convolution's output scale is snapped to ``3 / k`` (at most one
    step coarser, the range widened to include -3 where needed) and hard-swish becomes a uint8 ``Clip`` and a
    ``QLinearMul``.
``se_pool`` (default ``global_average_pool``)
    The SE's ``ReduceMean`` over height and width becomes ``GlobalAveragePool``, which ONNX Runtime runs as
    ``QLinearGlobalAveragePool`` on the uint8 tensor instead of dequantising the whole activation for it.
``keep_float`` (default the stem and block 1)
    The stem's 1- or 3-channel convolution runs im2col in int8, 2x slower than float (padding its input to 4
    channels for the symmetric kernel, ``pad_stem``, did not help), and block 1's 16-channel depthwise conv at
    112x112 is 2-4x slower in int8: both stay float, with hard-swish fused, and the model is quantised after them.

What remains slower than float is structural: x86 has no int8 dot product for depthwise convolutions (VNNI
needs a reduction over 4 channels), and ONNX Runtime fuses no activation into an integer convolution; the 1x1
convolutions, most of the multiply-adds, run ~2.3x faster than float.

The OpenVINO target (``INT8_TARGETS["openvino"]``, ``mnv3 export --int8 --int8-target openvino``, the
``openvino-int8`` latency runtime) quantises the same way but shapes the graph for OpenVINO's CPU plugin, which
fuses a convolution, its activation and the quantisation of its output into one int8 kernel only when no
``Q -> DQ`` pair sits between the convolution and the activation: ``fuse_conv_act`` removes those pairs
(:func:`unquantize_conv_activations`; one rounding fewer, so at least as accurate) and hard-swish stays an op
(the integer rewrite above would hide it from the fusion). On ONNX Runtime's file OpenVINO ran every hard-swish
as a separate int8 -> float -> int8 pass; ``benchmarks/int8_quantize.py ablation --runtime openvino`` times the
set-ups. ONNX Runtime runs the OpenVINO file correctly but leaves those convolutions in float.

Calibration: :func:`calibration_data` draws images from ``load_dataset`` (Fashion-MNIST, or an image folder in
the ImageNet layout, or any folder of image files) with the evaluation transform, as the model sees them.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..extras import require
from ..inputs import input_shape_for
from ..runtime.onnxruntime import profile_onnx  # noqa: F401  (re-exported: mnv3 export --profile)
from .fold import fold_bn
from .onnx_export import (
    INPUT_LAYOUTS,
    INPUT_NAME,
    _drop_unused_constants,
    export_onnx,
    record_input_layout,
)

TOOLCHAINS = ("onnxruntime", "pt2e")
DEFAULT_TOOLCHAIN = "onnxruntime"
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
SE_POOLS = ("global_average_pool", "reduce_mean")
DEFAULT_CALIBRATION_SAMPLES = 256


class CalibrationError(ValueError):
    """Calibration data that cannot be used: no images, wrong shape; the message says what was found."""


@dataclass(frozen=True)
class Int8Options:
    """How a model is quantised for ONNX Runtime; the defaults are the measured-fastest set-up (module doc)."""

    activation_type: str = "uint8"        # uint8 (U8S8) or int8 (S8S8) activations; weights are always int8
    per_channel: bool = True              # per-output-channel weight scales
    reduce_range: bool = False            # 7-bit weights: only for CPUs without VNNI (u8 x s8 saturation)
    calibrate_method: str = "minmax"      # minmax, percentile, entropy
    pad_depthwise: int = 16               # pad depthwise channel counts to a multiple of this (0: off)
    pad_stem: bool = False                # pad the input to 4 channels for an int8 stem (measured: no gain)
    int8_hardswish: bool = True           # hard-swish as uint8 Clip + QLinearMul instead of float
    se_pool: str = "global_average_pool"  # SE squeeze as GlobalAveragePool (quantised) or ReduceMean (float)
    keep_float: tuple[str, ...] = ("stem", "block1")  # parts left in float (FLOAT_PARTS) or node-name substrings
    fuse_conv_act: bool = False           # no Q/DQ between a conv and its activation (OpenVINO fuses them)

    def __post_init__(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise ValueError(f"activation_type must be one of {ACTIVATION_TYPES}, got {self.activation_type!r}")
        if self.calibrate_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibrate_method must be one of {CALIBRATION_METHODS}, got {self.calibrate_method!r}")
        if self.se_pool not in SE_POOLS:
            raise ValueError(f"se_pool must be one of {SE_POOLS}, got {self.se_pool!r}")
        if self.pad_depthwise < 0:
            raise ValueError(f"pad_depthwise must be >= 0, got {self.pad_depthwise}")
        if self.fuse_conv_act and self.int8_hardswish:
            raise ValueError("fuse_conv_act and int8_hardswish exclude each other: the integer hard-swish needs "
                             "its input quantised, fuse_conv_act leaves it float inside the convolution")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d


# The set-up a plain ``quantize_static`` call gives (for comparisons): no graph changes, everything quantised.
PLAIN = Int8Options(pad_depthwise=0, pad_stem=False, int8_hardswish=False, se_pool="reduce_mean", keep_float=())
# The measured-fastest set-up for each runtime that runs the QDQ file (module doc): ONNX Runtime fuses
# ``DQ -> Conv -> Q`` into QLinearConv and needs the integer hard-swish; OpenVINO fuses a convolution, its
# activation and the quantisation of the result into one int8 kernel when no Q/DQ pair sits between them.
INT8_TARGETS: dict[str, Int8Options] = {
    "onnxruntime": Int8Options(),
    "openvino": Int8Options(int8_hardswish=False, fuse_conv_act=True),
}
# Names for ``keep_float``: the stem, ``block<i>`` (1-based, as in the paper's tables), every SE, the head.
FLOAT_PARTS = ("stem", "block<i>", "se", "head")


# -- calibration data ---------------------------------------------------------------------------------------
def _flat_images(root: Path) -> list[Path]:
    from ..data import IMAGE_EXTENSIONS

    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def calibration_data(data: str | os.PathLike, *, resolution: int, channels: int | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     samples: int = DEFAULT_CALIBRATION_SAMPLES, split: str = "train", seed: int = 0,
                     data_dir: str | os.PathLike | None = None, crop_fraction: float | None = None,
                     batch: int = 1) -> list[np.ndarray]:
    """``samples`` images (seeded random choice) as float32 arrays ``batch x C x resolution x resolution``
    (consecutive images stacked; a last short batch is dropped when there are enough images for one), prepared
    with the evaluation transform, for calibration.

    ``data``: ``"fashion-mnist"``, an image folder in the ImageNet layout (``ROOT/train/<class>/...``; ``split``
    picks the split), or any folder holding image files (searched recursively; then ``channels`` defaults to 3
    and ``mean``/``std`` to ImageNet's). :class:`CalibrationError` when there are no images.
    """
    from ..data import DataError, load_dataset, load_image
    from ..data.transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise CalibrationError(f"the number of calibration samples must be a positive integer, got {samples!r}")
    options: dict[str, Any] = {"mean": tuple(mean) if mean else None, "std": tuple(std) if std else None,
                               "crop_fraction": crop_fraction}
    path = Path(data)
    flat = None
    try:
        dataset = load_dataset(data, split, resolution=resolution, train=False, data_dir=data_dir,
                               channels=channels, **options)
    except DataError as e:
        if not path.is_dir() or (path / split).is_dir():
            raise CalibrationError(f"no calibration images: {e}") from None
        flat = _flat_images(path)  # not the ImageNet layout: any folder of images will do
        if not flat:
            from ..data import IMAGE_EXTENSIONS

            raise CalibrationError(f"no calibration images in {path} (looked recursively for files ending in "
                                   f"{', '.join(IMAGE_EXTENSIONS)})") from None
    count = len(flat) if flat is not None else len(dataset)
    if count == 0:
        raise CalibrationError(f"no calibration images in {data} ({split} split)")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=g)[: min(samples, count)].tolist()
    if flat is not None:
        channels = channels or 3
        if mean is None or std is None:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD)
        images = [load_image(flat[i], resolution, channels, tuple(mean), tuple(std), crop_fraction) for i in order]
    else:
        images = []
        for i in order:
            item = dataset[i]
            if item is not None:
                images.append(item[0])
    if not images:
        raise CalibrationError(f"no readable calibration images in {data}")
    if len(images) < batch:
        raise CalibrationError(f"{len(images)} calibration image(s) in {data}, fewer than one batch of {batch}")
    return [torch.stack(images[i:i + batch]).float().numpy() for i in range(0, len(images) - batch + 1, batch)]


def random_calibration_data(shape: Sequence[int], samples: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal inputs: enough for timing (kernels do not depend on values), not for accuracy."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).numpy() for _ in range(samples)]


def _check_calibration(batches: Sequence[np.ndarray], shape: Sequence[int], dynamic_batch: bool) -> None:
    if len(batches) == 0:
        raise CalibrationError("no calibration images were given")
    for i, b in enumerate(batches):
        b_shape = tuple(np.shape(b))
        ok = len(b_shape) == 4 and b_shape[1:] == tuple(shape[1:]) and (dynamic_batch or b_shape[0] == shape[0])
        if not ok:
            raise CalibrationError(f"calibration batch {i} has shape {list(b_shape)}; the model takes "
                                   f"{['N' if dynamic_batch else shape[0], *shape[1:]]}")


def _reader(batches: Sequence[np.ndarray], input_name: str, layout: str = "nchw"):
    """ONNX Runtime's calibration reader over NCHW ``batches``, fed in the file's input ``layout``."""
    from .onnx_export import to_layout

    ort_quant = require("onnxruntime.quantization", purpose="int8 quantisation")

    class Reader(ort_quant.CalibrationDataReader):
        """Feeds the calibration images one batch at a time."""

        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: to_layout(np.asarray(b, dtype=np.float32), layout)}

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


# -- exact model changes before export ----------------------------------------------------------------------
def _grow_conv(conv: nn.Conv2d, out_channels: int | None = None, in_channels: int | None = None) -> nn.Conv2d:
    """A copy of ``conv`` with zero filters added for extra output channels and/or zero weights for extra input
    channels (a depthwise conv grows its groups with its channels)."""
    import copy

    out_c = out_channels or conv.out_channels
    in_c = in_channels or conv.in_channels
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    groups = out_c if depthwise else conv.groups
    if not depthwise and groups != 1:
        raise ValueError("only plain and depthwise convolutions can be padded")
    w = conv.weight.detach()
    new_w = w.new_zeros(out_c, 1 if depthwise else in_c, *w.shape[2:])
    new_w[: w.shape[0], : w.shape[1]] = w
    grown = copy.deepcopy(conv)
    grown.in_channels, grown.out_channels, grown.groups = in_c, out_c, groups
    grown.weight = nn.Parameter(new_w)
    if conv.bias is not None:
        b = conv.bias.detach()
        grown.bias = nn.Parameter(torch.cat([b, b.new_zeros(out_c - b.shape[0])]))
    return grown


def pad_depthwise_channels(model: nn.Module, multiple: int = 16) -> int:
    """Pad, in place, each inverted-residual block's expansion to a multiple of ``multiple`` channels with zero
    filters (expansion conv outputs, depthwise conv, SE reduce inputs and expand outputs, projection inputs).

    Exact on a BN-folded model: the added channels are zero after the expansion (zero filter, zero bias, and
    every activation used maps 0 to 0), stay zero through the depthwise conv and the SE product, and the
    projection gives them zero weight. Returns the number of blocks padded; blocks without an expansion conv
    are left alone (their depthwise input is the previous block's output).
    """
    from ..layers import InvertedResidual

    padded = 0
    for block in model.modules():
        if not isinstance(block, InvertedResidual) or block.expand is None:
            continue
        channels = block.dw.conv.out_channels
        target = math.ceil(channels / multiple) * multiple
        if target == channels:
            continue
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules()):
            raise ValueError("pad_depthwise_channels needs a BatchNorm-folded model (fold_bn)")
        block.expand.conv = _grow_conv(block.expand.conv, out_channels=target)
        block.dw.conv = _grow_conv(block.dw.conv, out_channels=target, in_channels=target)
        if block.se is not None:
            block.se.reduce = _grow_conv(block.se.reduce, in_channels=target)
            block.se.expand = _grow_conv(block.se.expand, out_channels=target)
        block.project.conv = _grow_conv(block.project.conv, in_channels=target)
        padded += 1
    return padded


class PaddedInput(nn.Module):
    """``model`` behind a zero-padding of the input's channels to ``channels`` (its first conv padded to match)."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.extra = channels - _first_conv(model).in_channels
        if self.extra < 0:
            raise ValueError(f"the model already takes more than {channels} channels")
        stem_parent, name, conv = _first_conv_slot(model)
        setattr(stem_parent, name, _grow_conv(conv, in_channels=channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.pad(x, (0, 0, 0, 0, 0, self.extra)))


def _first_conv_slot(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The first Conv2d in registration order (depth first: the stem's, not a later direct child's), its parent
    and its attribute name."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_path, _, name = path.rpartition(".")
            return model.get_submodule(parent_path), name, module
    raise ValueError("the model has no Conv2d")


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return _first_conv_slot(model)[2]


def int8_ready(model: nn.Module, options: Int8Options = Int8Options()) -> nn.Module:
    """The float model that gets quantised: a BN-folded copy with the exact padding ``options`` ask for."""
    prepared = fold_bn(model)
    if options.pad_depthwise:
        pad_depthwise_channels(prepared, options.pad_depthwise)
    if options.pad_stem and _first_conv(prepared).in_channels % 4:
        in_c = _first_conv(prepared).in_channels
        prepared = PaddedInput(prepared, in_c + (-in_c) % 4).eval()
    return prepared


# -- ONNX graph passes ----------------------------------------------------------------------------------------
def _initializers(graph) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def materialize_shared_initializers(proto) -> int:
    """Replace ``Identity`` nodes that copy an initializer (the TorchScript exporter's de-duplication of equal
    weights) with a real initializer, so the quantiser sees every bias as a constant. Returns how many."""
    from onnx import numpy_helper

    inits = _initializers(proto.graph)
    keep, done = [], 0
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]])
            proto.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            done += 1
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return done


def reduce_mean_to_global_pool(proto) -> int:
    """``ReduceMean`` over axes (2, 3) with ``keepdims=1`` of a 4-D tensor -> ``GlobalAveragePool`` (same
    result), which ONNX Runtime quantises. Returns how many were replaced."""
    from onnx import helper, numpy_helper

    inits = _initializers(proto.graph)
    done = 0
    for i, node in enumerate(proto.graph.node):
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if attrs.get("keepdims", 1) != 1 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            continue
        if any(int(a) < 0 for a in axes) and not all(int(a) in (-1, -2) for a in axes):
            continue
        proto.graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                      name=node.name))
        done += 1
    return done


def _scalar(inits: dict[str, Any], name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def hardswish_qparams(scale: float, zero_point: int, qmin: int = 0, qmax: int = 255) -> tuple[int, float, int]:
    """The quantisation of a hard-swish input that :func:`int8_hardswish` uses instead of ``(scale, zero_point)``:
    ``(k, 3 / k, zero point)``, the range widened to include -3 and the scale snapped (at most one step coarser)
    to ``3 / k``. Quantisation-aware training (:mod:`.qat`) fake-quantises with the same numbers."""
    rmin, rmax = min(scale * (qmin - zero_point), -3.0), max(scale * (qmax - zero_point), 0.0)
    k = max(1, math.floor(3.0 / ((rmax - rmin) / (qmax - qmin))))
    s_new = 3.0 / k
    return k, s_new, int(min(qmax, max(qmin, qmin + round(-rmin / s_new))))


def int8_hardswish(proto) -> int:
    """Rewrite ``DQ -> HardSwish -> Q`` as ``Mul(DQ(q), DQ'(Clip(q)))`` with the input's scale snapped to
    ``3 / k`` (module doc), which ONNX Runtime runs as a uint8 ``Clip`` and a ``QLinearMul``.

    The conv output's quantisation parameters change (scale ``s -> 3 / floor(3 / s)``, range widened to include
    -3 if it did not): the Q node that produces the tensor and every DQ that reads it get the new ones.
    Returns the number of hard-swishes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    new_nodes: list[Any] = []
    done = 0
    for node in graph.node:
        if node.op_type != "HardSwish":
            new_nodes.append(node)
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        outs = consumers.get(node.output[0], [])
        if (q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or len(dq.input) < 3
                or len(outs) != 1 or outs[0].op_type != "QuantizeLinear"
                or not all(n in inits for n in (*q.input[1:3], *dq.input[1:3]))):
            new_nodes.append(node)
            continue
        s = float(_scalar(inits, q.input[1]))
        zp = _scalar(inits, q.input[2])
        if zp.size != 1 or _scalar(inits, q.input[1]).size != 1:
            new_nodes.append(node)
            continue
        info = np.iinfo(zp.dtype)
        qmin, qmax = int(info.min), int(info.max)
        k, s_new, z_new = hardswish_qparams(s, int(zp), qmin, qmax)
        base = q.output[0]
        scale_name, zp_name = f"{base}_hs_scale", f"{base}_hs_zero_point"
        gate_scale, gate_zp = f"{base}_hs_gate_scale", f"{base}_hs_gate_zero_point"
        lo_name, hi_name = f"{base}_hs_lo", f"{base}_hs_hi"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(s_new, np.float32), scale_name),
            numpy_helper.from_array(np.array(z_new, zp.dtype), zp_name),
            numpy_helper.from_array(np.array(s_new / 6.0, np.float32), gate_scale),
            numpy_helper.from_array(np.array(z_new - k, zp.dtype), gate_zp),
            numpy_helper.from_array(np.array(z_new - k, zp.dtype), lo_name),
            numpy_helper.from_array(np.array(min(qmax, z_new + k), zp.dtype), hi_name),
        ])
        q.input[1], q.input[2] = scale_name, zp_name
        for reader in consumers.get(base, []):
            if reader.op_type == "DequantizeLinear":
                reader.input[1], reader.input[2] = scale_name, zp_name
        stem = node.name or base
        clipped, gate = f"{base}_hs_clipped", f"{base}_hs_gate"
        new_nodes += [
            helper.make_node("Clip", [base, lo_name, hi_name], [clipped], name=f"{stem}/gate_clip"),
            helper.make_node("DequantizeLinear", [clipped, gate_scale, gate_zp], [gate], name=f"{stem}/gate_dq"),
            helper.make_node("Mul", [dq.output[0], gate], list(node.output), name=f"{stem}/mul"),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done


FUSED_ACTIVATIONS = ("HardSwish", "HardSigmoid", "Relu")


def unquantize_conv_activations(proto, activations: Sequence[str] = FUSED_ACTIVATIONS) -> int:
    """Remove the ``QuantizeLinear -> DequantizeLinear`` pair between a ``Conv`` and the activation(s) that alone
    read its output, so the graph reads ``DQ -> Conv -> activation -> Q``: the pattern OpenVINO runs as one int8
    convolution with the activation and the output quantisation as post-ops (with the pair in between it runs
    a separate int8 -> float -> int8 pass over the tensor for each activation). The result is at least as
    accurate (one rounding fewer). ONNX Runtime only fuses ``DQ -> Conv -> Q`` and would run these convolutions
    in float, so its target keeps the pair. Returns how many pairs were removed."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()
    removed = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in outputs or q.output[0] in outputs:
            continue
        conv = producer.get(q.input[0])
        dqs = consumers.get(q.output[0], [])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(q.input[0], [])) != 1 or not dqs:
            continue
        if any(d.op_type != "DequantizeLinear" or d.output[0] in outputs for d in dqs):
            continue
        readers = [r for d in dqs for r in consumers.get(d.output[0], [])]
        if not readers or any(r.op_type not in activations for r in readers):
            continue
        for d in dqs:
            for r in consumers.get(d.output[0], []):
                for k, name in enumerate(r.input):
                    if name == d.output[0]:
                        r.input[k] = q.input[0]
            dropped.add(id(d))
        dropped.add(id(q))
        removed += 1
    orphans = {name for n in graph.node if id(n) in dropped for name in n.input[1:]}  # their scales, zero points
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_constants(proto, orphans)
    return removed


def _part_needles(part: str) -> tuple[str, ...]:
    import re

    m = re.fullmatch(r"block(\d+)", part)
    if m:
        return (f"/features/features.{int(m.group(1))}/",)
    fixed = {"stem": ("/features/features.0/", "/Pad"), "se": ("/se/",),
             "head": ("/conv_head/", "/classifier/", "/head_act/", "/pool/")}
    return fixed.get(part, (part,))


def _float_nodes(proto, keep_float: Sequence[str]) -> list[str]:
    """Names of the float graph's nodes matched by ``keep_float`` (:data:`FLOAT_PARTS` or name substrings)."""
    needles = [n for k in keep_float for n in _part_needles(k)]
    return [node.name for node in proto.graph.node if any(s in node.name for s in needles)]


# -- quantisation ---------------------------------------------------------------------------------------------
@dataclass
class QuantizeReport:
    """What :func:`quantize_onnx` wrote and how it checks against the float model."""

    path: str
    float_path: str | None
    toolchain: str
    options: dict[str, Any]
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    calibration_samples: int
    graph_changes: dict[str, int]
    ops: dict[str, int]
    checks: dict[str, Any] = field(default_factory=dict)
    input_layout: str = "nchw"  # input_shape is NCHW; the file takes it in this layout

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def quantize_onnx(model: nn.Module, path: str | os.PathLike, calibration: Sequence[np.ndarray], *,
                  resolution: int | None = None, batch: int = 1, input_shape: Sequence[int] | None = None,
                  dynamic_batch: bool = False, options: Int8Options | None = None,
                  float_path: str | os.PathLike | None = None, verify: bool = True,
                  tensor_overrides: Callable[[Any], dict[str, list[dict[str, Any]]]] | None = None,
                  input_layout: str = "nchw") -> QuantizeReport:
    """Quantise ``model`` to an int8 QDQ ONNX file at ``path``, calibrated on ``calibration`` (arrays shaped like
    the model input, e.g. from :func:`calibration_data`).

    ``tensor_overrides`` maps the float graph (an ``onnx.ModelProto``) to ONNX Runtime's ``TensorQuantOverrides``
    (tensor name -> ``[{"scale": ..., "zero_point": ...}]``): those tensors take the given quantisation instead of
    the calibrated one (quantisation-aware training passes its learned ranges this way, :mod:`.qat`).

    The float graph is the BN-folded export of :func:`int8_ready` (checked against ``model`` to 1e-4); it is
    also written to ``float_path`` when given. With ``verify`` the int8 file is run on the calibration images and
    compared with the float model: ``checks`` holds the argmax agreement and the logits' error relative to
    their range (no threshold: how much error is acceptable is the caller's call).

    ``input_layout="nhwc"``: the file takes N x H x W x C images (as :func:`export_onnx`'s option; the stem's
    input transpose stays float); ``calibration`` and ``input_shape`` stay NCHW.
    """
    onnx = require("onnx", purpose="int8 quantisation")
    ort_quant = require("onnxruntime.quantization", purpose="int8 quantisation")
    options = options or Int8Options()
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"unknown input layout {input_layout!r} (choose from {', '.join(INPUT_LAYOUTS)})")
    shape = input_shape_for(model, input_shape, resolution, batch)
    calibration = list(calibration)
    _check_calibration(calibration, shape, dynamic_batch)
    was_training = model.training
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        prepared = int8_ready(model, options)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "float.onnx"
            export_onnx(prepared, raw, input_shape=shape, dynamic_batch=dynamic_batch, fold=False, verify=False,
                        ort_nchwc=False,  # the float-graph rewrites measured 13-17% slower once quantised
                        input_layout=input_layout)
            proto = onnx.load(str(raw))
            changes = {"shared_initializers": materialize_shared_initializers(proto),
                       "se_global_pool": reduce_mean_to_global_pool(proto) if options.se_pool == SE_POOLS[0]
                       else 0}
            float_file = Path(float_path) if float_path is not None else Path(tmp) / "float_prepared.onnx"
            float_file.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(proto, str(float_file))
            if verify:
                from .onnx_export import verify_onnx

                worst = max(c["max_abs_diff"] for c in verify_onnx(float_file, model, [shape],
                                                                   input_layout=input_layout))
                if worst > 1e-3:
                    raise RuntimeError(f"the padded float graph differs from the model by {worst:.3g}")
            qtype = ort_quant.QuantType
            act = qtype.QUInt8 if options.activation_type == "uint8" else qtype.QInt8
            method = {"minmax": ort_quant.CalibrationMethod.MinMax,
                      "percentile": ort_quant.CalibrationMethod.Percentile,
                      "entropy": ort_quant.CalibrationMethod.Entropy}[options.calibrate_method]
            extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
            if tensor_overrides is not None:
                extra["TensorQuantOverrides"] = tensor_overrides(proto)
                changes["tensor_overrides"] = len(extra["TensorQuantOverrides"])
            import logging

            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # the quantiser's "consider pre-processing" notes
            try:
                ort_quant.quantize_static(
                    str(float_file), str(path), _reader(calibration, INPUT_NAME, input_layout),
                    quant_format=ort_quant.QuantFormat.QDQ, per_channel=options.per_channel,
                    reduce_range=options.reduce_range, activation_type=act, weight_type=qtype.QInt8,
                    calibrate_method=method, extra_options=extra,
                    nodes_to_exclude=_float_nodes(proto, options.keep_float)
                    + [n.name for n in proto.graph.node if n.op_type == "Transpose" and INPUT_NAME in n.input])
            finally:
                logging.getLogger().setLevel(level)
        q_proto = onnx.load(str(path))
        if options.int8_hardswish:
            changes["int8_hardswish"] = int8_hardswish(q_proto)
        if options.fuse_conv_act:
            changes["conv_act_qdq_removed"] = unquantize_conv_activations(q_proto)
        q_proto.producer_name = "mobilenetv3 int8 (onnxruntime.quantization)"
        record_input_layout(q_proto, input_layout)
        onnx.checker.check_model(q_proto)
        onnx.save(q_proto, str(path))
        ops = dict(sorted(Counter(n.op_type for n in q_proto.graph.node).items()))
        report = QuantizeReport(str(path), str(float_path) if float_path is not None else None, "onnxruntime",
                                options.to_dict(), shape, dynamic_batch, len(calibration), changes, ops,
                                input_layout=input_layout)
        if verify:
            report.checks = compare_onnx_with_model(path, model, calibration[: min(len(calibration), 32)])
        return report
    finally:
        model.train(was_training)


def onnx_logits(path_or_session: Any, batches: Iterable[np.ndarray], threads: int | None = None) -> np.ndarray:
    """The model file's outputs for each NCHW batch (fed in the layout the file records; a session: as they are),
    concatenated."""
    from ..runtime.onnxruntime import ort_session
    from .onnx_export import input_layout_of, to_layout

    is_session = hasattr(path_or_session, "run")
    layout = "nchw" if is_session else input_layout_of(path_or_session)
    session = path_or_session if is_session else ort_session(path_or_session, threads or torch.get_num_threads())
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: to_layout(np.asarray(b, np.float32), layout)})[0]
                           for b in batches])


def compare_onnx_with_model(path: str | os.PathLike, model: nn.Module, batches: Sequence[np.ndarray]
                            ) -> dict[str, Any]:
    """Argmax agreement and logit error of an (int8) ONNX file against the float ``model`` on ``batches``."""
    got = onnx_logits(path, batches)
    with torch.no_grad():
        want = torch.cat([model.eval()(torch.from_numpy(b)) for b in batches]).numpy()
    return compare_outputs(got, want)


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Argmax agreement (fraction) and absolute logit error of ``got`` against ``want`` (rows are images); the
    relative error is taken against the range of ``want``."""
    spread = float(want.max() - want.min()) or 1.0
    diff = np.abs(got - want)
    return {"images": int(want.shape[0]), "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "relative_max_diff": float(diff.max()) / spread}


# -- evaluation -------------------------------------------------------------------------------------------------
EVAL_RUNTIMES = ("onnxruntime", "openvino")


def _onnx_runner(path: str | os.PathLike, runtime: str, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                                int | None]:
    """A function running the file on one batch in ``runtime``, and the file's fixed batch size (or None)."""
    if runtime == "onnxruntime":
        from ..runtime.onnxruntime import ort_session

        session = ort_session(path, threads)
        inp = session.get_inputs()[0]
        return (lambda x: session.run(None, {inp.name: x})[0]), (inp.shape[0] if isinstance(inp.shape[0], int)
                                                                  else None)
    if runtime == "openvino":
        from ..runtime.openvino import openvino_compile, openvino_forward

        compiled = openvino_compile(path, threads)
        dim = compiled.input(0).get_partial_shape()[0]
        return openvino_forward(compiled), (None if dim.is_dynamic else dim.get_length())
    raise ValueError(f"runtime must be one of {', '.join(EVAL_RUNTIMES)}, got {runtime!r}")


def evaluate_onnx(path: str | os.PathLike, dataset: Any, *, limit: int | None = None, batch_size: int = 64,
                  threads: int | None = None, progress: Callable[[int], None] | None = None,
                  runtime: str = "onnxruntime") -> dict[str, Any]:
    """Top-1 (%) of an ONNX classifier on a dataset of ``(image, label)`` items, run by ``runtime``
    (``onnxruntime`` or ``openvino``, f32 inference precision); a fixed batch-1 file is fed one image at a time,
    a dynamic-batch file ``batch_size`` at a time, in the input layout the file records (NCHW or NHWC). Also
    returns the predictions."""
    from .onnx_export import input_layout_of, to_layout

    forward, fixed = _onnx_runner(path, runtime, threads or torch.get_num_threads())
    layout = input_layout_of(path)
    step = fixed or batch_size
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels = [], []
    for start in range(0, n, step):
        items = [dataset[i] for i in range(start, min(n, start + step))]
        items = [it for it in items if it is not None]
        if not items:
            continue
        x = torch.stack([it[0] for it in items]).numpy()
        if fixed and x.shape[0] < fixed:  # pad a last short batch for a fixed-batch file
            x = np.concatenate([x, np.zeros((fixed - x.shape[0], *x.shape[1:]), x.dtype)])
        out = forward(to_layout(x, layout))[: len(items)]
        preds.append(out.argmax(1))
        labels.append(np.array([it[1] for it in items]))
        if progress is not None:
            progress(min(n, start + step))
    pred, label = np.concatenate(preds), np.concatenate(labels)
    return {"count": int(label.size), "top1": 100.0 * float((pred == label).mean()), "predictions": pred,
            "labels": label}


def evaluate_torch(model: nn.Module, dataset: Any, *, limit: int | None = None, batch_size: int = 256
                   ) -> dict[str, Any]:
    """Top-1 (%) and predictions of a float (or PT2E) model on a dataset, as :func:`evaluate_onnx` gives them."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels = [], []
    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            items = [it for it in (dataset[i] for i in range(start, min(n, start + batch_size))) if it is not None]
            x = torch.stack([it[0] for it in items])
            preds.append(model(x).argmax(1).numpy())
            labels.append(np.array([it[1] for it in items]))
    pred, label = np.concatenate(preds), np.concatenate(labels)
    return {"count": int(label.size), "top1": 100.0 * float((pred == label).mean()), "predictions": pred,
            "labels": label}


# -- profiles -----------------------------------------------------------------------------------------------
# -- PT2E (torchao) -----------------------------------------------------------------------------------------
def _pt2e_modules() -> tuple[Any, Any, Any]:
    import logging

    # torchao logs notes about optional GPU kernels (triton, CUTLASS) it cannot load on a CPU-only machine
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        try:  # PyTorch < 2.10 kept PT2E in torch.ao
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torch.ao.quantization.quantizer import x86_inductor_quantizer as xiq
        except ImportError:
            from ..extras import MissingExtraError

            raise MissingExtraError("torchao is not installed (needed for PT2E int8 quantisation); install it "
                                    "with: pip install 'mobilenetv3[pt2e]'") from None
    finally:
        logging.disable(previous)
    return prepare_pt2e, convert_pt2e, xiq


def quantize_pt2e(model: nn.Module, calibration: Sequence[np.ndarray | torch.Tensor]) -> torch.fx.GraphModule:
    """PT2E static int8 quantisation with the X86InductorQuantizer (per-channel weights), calibrated on
    ``calibration``; returns the converted graph module (run it under :func:`compile_pt2e` for speed)."""
    prepare_pt2e, convert_pt2e, xiq = _pt2e_modules()
    calibration = [torch.as_tensor(b) for b in calibration]
    if not calibration:
        raise CalibrationError("no calibration images were given")
    example = calibration[0]
    model = fold_bn(model).eval()
    exported = torch.export.export(model, (example,))
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for b in calibration:
            prepared(b)
    return convert_pt2e(prepared)


def save_pt2e(module: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor) -> None:
    """Save a converted PT2E module as a ``torch.export`` program (``.pt2``) that :func:`load_pt2e` reads back."""
    _pt2e_modules()
    program = torch.export.export(module, (example,))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))


def load_pt2e(path: str | os.PathLike) -> torch.nn.Module:
    """The module of a program saved by :func:`save_pt2e`."""
    _pt2e_modules()  # registers torchao's quantise/dequantise ops that the program refers to
    return torch.export.load(str(path)).module()


def compile_pt2e(module: torch.nn.Module, example: torch.Tensor, cpp_wrapper: bool = False
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of a PT2E module, compiled now on ``example`` with Inductor's freezing on (it lowers the
    quantised convolutions to oneDNN's ``qconv_pointwise`` with prepacked weights) and, with ``cpp_wrapper``,
    its C++ wrapper. Inductor's settings are patched for this compilation only."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(module)
    with inductor_config.patch(freezing=True, cpp_wrapper=cpp_wrapper), torch.no_grad():
        compiled(example)
    return compiled


def replace_options(options: Int8Options | None = None, **changes: Any) -> Int8Options:
    """``options`` (default: the defaults) with ``changes``."""
    return replace(options or Int8Options(), **changes)


__all__ = [
    "ACTIVATION_TYPES", "CALIBRATION_METHODS", "DEFAULT_CALIBRATION_SAMPLES", "DEFAULT_TOOLCHAIN", "EVAL_RUNTIMES",
    "FLOAT_PARTS", "FUSED_ACTIVATIONS", "INT8_TARGETS", "PLAIN",
    "SE_POOLS", "TOOLCHAINS", "CalibrationError", "Int8Options", "PaddedInput", "QuantizeReport",
    "calibration_data", "compare_onnx_with_model", "compare_outputs", "compile_pt2e", "evaluate_onnx", "evaluate_torch",
    "hardswish_qparams", "int8_hardswish", "int8_ready", "load_pt2e", "materialize_shared_initializers", "onnx_logits",
    "pad_depthwise_channels", "profile_onnx", "quantize_onnx", "quantize_pt2e", "random_calibration_data",
    "reduce_mean_to_global_pool", "replace_options", "save_pt2e", "unquantize_conv_activations",
]
