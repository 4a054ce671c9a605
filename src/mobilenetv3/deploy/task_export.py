"""Segmentation and detection models to ONNX, checked: what ``mnv3 export`` writes for those runs.

- Segmentation (:func:`export_segmentation`): the logits at the input's size, ``(N, K, H, W)``, at any height and
  width the spec takes (:meth:`~mobilenetv3.segmentation.SegSpec.pooled_size`: Figure 10's pooling kernel must
  fit the feature map; global pooling takes any size). Checked as :func:`.onnx_export.export_onnx` checks a
  classifier, on seeded random inputs: at the export size and, when the resolution is dynamic, at other sizes
  (default 32 and 1 pixels more than the export size). A dynamic-resolution file with kernel pooling takes
  inputs from the spec's ``min_input()`` up, recorded in its metadata (:data:`MIN_INPUT_KEY`); a smaller one is
  not refused by the graph: ONNX Runtime 1.32 dies of a floating-point exception (SIGFPE) on it.
- Detection (:func:`export_detection`): the eval forward as it runs, decoding, per-class top-k, NMS (ONNX
  ``NonMaxSuppression``, :mod:`mobilenetv3.detection.nms`) and the best ``max_detections``, as the four outputs
  :data:`DETECTION_OUTPUTS` (:mod:`mobilenetv3.detection.postprocess`). The anchors and the box scale are
  constants of the traced size, so the resolution is fixed (the batch may be dynamic); the NMS operator comes
  from a TorchScript symbolic, so the exporter is the TorchScript one. Checked by :func:`verify_detections` on
  images (:func:`check_images`: the run's evaluation images, resized to the export size when they differ):
  per image the same number of detections, each eager detection paired with an ONNX one of the same label, box
  within ``box_atol`` pixels and score within ``atol``, or else a *tie*, counted and shown apart: the two NMS
  kept different ones of two overlapping candidates whose scores agree within ``atol``, the ONNX one being one
  of eager's own candidates (:func:`match_detections`).

:func:`export_task_onnx` is the one call for a run: the size the run evaluates at unless given, and the run's
images for a detector's checks. :func:`export_task_int8` writes a segmentation run's int8 file the way a
classifier's is written (:func:`~.int8_export.export_int8`: ONNX Runtime's QDQ quantisation of the BN-folded
export), at that size, calibrated on the run's training images as its evaluation prepares them; a detector's
int8 file is not offered (its graph ends in decoding, top-k and NMS).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..detection.postprocess import candidates
from ..extras import require
from ..inputs import check_input_shape
from ..tasks import get_task
from .int8_export import export_int8
from .onnx_export import (
    MIN_OPSET,
    ExportMismatchError,
    ExportReport,
    checking_session,
    export_onnx,
    size_pair,
    to_layout,
)
from .quantize.options import DEFAULT_TOOLCHAIN

TASKS = ("segmentation", "detection")
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
NMS_OP = "NonMaxSuppression"
BOX_ATOL = 1e-3  # pixels
CHECK_IMAGES = 8
MIN_INPUT_KEY = "mobilenetv3.min_input_size"  # metadata_props entry: "HxW", the smallest input a file takes


class TaskExportError(ValueError):
    """A segmentation or detection export that cannot be written as asked; the message says why and what can."""


def export_shape(model: nn.Module, size: int | Sequence[int], batch: int) -> tuple[int, int, int, int]:
    """``(batch, C, H, W)`` for a segmentation or detection model, checked against its backbone (channels, the
    stem kernel as the smallest side)."""
    h, w = size_pair(size)
    spec = model.backbone_spec
    shape = (int(batch), spec.in_channels, h, w)
    check_input_shape(spec, shape)
    return shape


def check_images(task: str, data_info: Mapping[str, Any], size: int | Sequence[int], count: int = CHECK_IMAGES,
                 split: str | None = None) -> tuple[list[torch.Tensor], str]:
    """The first ``count`` images of a run's evaluation data (its validation split by default), prepared as the
    run evaluates them and resized bilinearly to ``size`` where they differ, and a line saying what they are.
    No images, and the line says why, when the data cannot be read here."""
    from ..data import DataError

    split = split or data_info.get("val_split", "val")
    h, w = size_pair(size)
    if count < 1:
        return [], "no images asked for"
    try:
        dataset = get_task(task).eval_data(data_info, split)
        samples = [dataset[i] for i in range(min(count, len(dataset)))]
    except (DataError, OSError, ValueError) as e:  # the data moved, or lives on another machine
        return [], f"the run's data could not be read: {str(e).splitlines()[0]}"
    images = [s[0] for s in samples if s is not None]
    if not images:
        return [], f"the run's {split} split gave no images"
    resized = any(tuple(im.shape[-2:]) != (h, w) for im in images)
    images = [im if tuple(im.shape[-2:]) == (h, w)
              else F.interpolate(im[None], size=(h, w), mode="bilinear", align_corners=False)[0] for im in images]
    return images, (f"{len(images)} {split} image(s) of {data_info['name']}"
                    + (f", resized to {h}x{w}" if resized else ""))


def export_segmentation(model: nn.Module, path: str | os.PathLike, size: int | Sequence[int], *,
                        check_sizes: Sequence[int | Sequence[int]] | None = None, batch: int = 1,
                        dynamic_batch: bool = False, dynamic_resolution: bool = False, opset: int = MIN_OPSET,
                        fold: bool = True, exporter: str = "torchscript", atol: float = 1e-4,
                        input_layout: str = "nchw") -> ExportReport:
    """A :class:`~mobilenetv3.segmentation.SegmentationModel` to ONNX at ``size`` (a side or (height, width)),
    checked within ``atol`` at that size and, with ``dynamic_resolution``, at ``check_sizes`` (module doc).

    :class:`~mobilenetv3.segmentation.spec.SegSpecError` when the pooling kernel does not fit one of the sizes;
    :class:`TaskExportError` for ``check_sizes`` without ``dynamic_resolution`` (a fixed file takes one size);
    :class:`~.onnx_export.ExportMismatchError` when a check fails."""
    h, w = size_pair(size)
    extra = [size_pair(s) for s in check_sizes or ()]
    other = [s for s in extra if s != (h, w)]
    if other and not dynamic_resolution:
        raise TaskExportError(f"a file exported without a dynamic resolution takes only its export size {h}x{w}; "
                              f"checking it at {', '.join(f'{a}x{b}' for a, b in other)} needs a dynamic "
                              f"resolution (or export one file per size)")
    for sh, sw in [(h, w), *extra]:
        model.spec.pooled_size(sh, sw)  # a clear SegSpecError when the kernel does not fit
    shape = export_shape(model, (h, w), batch)
    report = export_onnx(model, path, input_shape=shape, dynamic_batch=dynamic_batch,
                         dynamic_resolution=dynamic_resolution, opset=opset, fold=fold, exporter=exporter,
                         atol=atol, check_resolutions=extra or None, input_layout=input_layout)
    if dynamic_resolution and model.spec.pooling == "kernel":
        onnx = require("onnx", purpose="ONNX export")
        proto = onnx.load(report.path)
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, MIN_INPUT_KEY: "{}x{}".format(*model.spec.min_input())})
        onnx.save(proto, report.path)
    return report


def detection_batches(images: Sequence[torch.Tensor], shape: Sequence[int], dynamic_batch: bool, seed: int = 0
                      ) -> list[torch.Tensor]:
    """``images`` in batches of the export batch (the last one filled up from the first images), plus one batch of
    another size when the batch is dynamic; seeded random batches of those sizes when there are no images."""
    n = shape[0]
    other = [2 if n != 2 else 3] if dynamic_batch else []
    if not images:
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(b, *shape[1:], generator=g) for b in [n, *other]]
    sizes = [n] * -(-len(images) // n) + other
    out, i = [], 0
    for b in sizes:
        out.append(torch.stack([images[(i + j) % len(images)] for j in range(b)]))
        i += b
    return out


def match_detections(eager: Sequence[torch.Tensor], onnx: Sequence[torch.Tensor], atol: float, box_atol: float,
                     candidates: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Pair one image's eager detections (boxes, scores, labels; best first) with its ONNX ones.

    Each eager detection takes an unpaired ONNX one of the same label, the nearest in box and score, if within
    ``box_atol`` and ``atol``: pairing, not position, decides, since detections whose scores tie may come out in
    either order. With ``candidates`` (eager's boxes ``(A, 4)`` and foreground scores ``(A, C)`` of every anchor,
    :func:`~mobilenetv3.detection.postprocess.candidates`), a left-over ONNX detection is a *tie* with a left-over
    eager one of the same label and score (within ``atol``) when its own box and score are those of one of eager's
    candidates: NMS kept the other of two overlapping boxes whose scores agree within ``atol`` (in practice to
    float precision, where the two runtimes' last bits decide). Ties are counted apart, never as paired."""
    (eager_boxes, eager_scores, eager_labels), (boxes, scores, labels) = eager, onnx
    used = torch.zeros(len(labels), dtype=torch.bool)
    left = []  # eager detections without a partner
    box_diffs, score_diffs, same_order = [0.0], [0.0], True
    for i in range(len(eager_labels)):
        box = (boxes.float() - eager_boxes[i].float()).abs().amax(1)
        score = (scores.float() - eager_scores[i].float()).abs()
        cost = torch.maximum(box / box_atol, score / atol)
        cost[(labels != eager_labels[i]) | used] = float("inf")
        if not len(cost) or float(cost.min()) > 1.0:
            left.append(i)
            continue
        j = int(cost.argmin())
        used[j] = True
        same_order &= j == i
        box_diffs.append(float(box[j]))
        score_diffs.append(float(score[j]))
    paired, ties = int(used.sum()), 0
    if candidates is not None:
        anchor_boxes, anchor_scores = (t.float() for t in candidates)
        for j in (~used).nonzero().flatten().tolist():
            label, score = int(labels[j]), float(scores[j])
            near = (anchor_boxes - boxes[j].float()).abs().amax(1) <= box_atol
            if not ((anchor_scores[:, label - 1] - score).abs()[near] <= atol).any():
                continue
            partner = next((i for i in left if int(eager_labels[i]) == label
                            and abs(float(eager_scores[i]) - score) <= atol), None)
            if partner is not None:
                left.remove(partner)
                used[j] = True
                ties += 1
    return {"paired": paired, "ties": ties, "unpaired": len(left) + int((~used).sum()), "same_order": same_order,
            "max_box_diff": max(box_diffs), "max_score_diff": max(score_diffs)}


def verify_detections(path: str | os.PathLike, model: nn.Module, batches: Sequence[torch.Tensor], *,
                      atol: float = 1e-4, box_atol: float = BOX_ATOL, input_layout: str = "nchw",
                      threads: int | None = None) -> list[dict[str, Any]]:
    """Run a detector's ONNX file and the eager model (eval mode) on each batch (NCHW; fed in ``input_layout``) and
    compare their detections image by image (:func:`match_detections`, with eager's candidates); one record per
    batch: detections (eager's), paired, ties, unpaired, whether the order was the same, the largest box and
    score differences of the paired ones."""
    results = []
    with checking_session(path, model, threads) as (session, name):
        for x in batches:
            with torch.no_grad():
                eager = [t.cpu() for t in model(x)]
                cls_logits, box_regression, anchors = model.forward_raw(x)
                anchor_scores, anchor_boxes = candidates(cls_logits, box_regression, anchors, model.spec,
                                                         tuple(x.shape[-2:]))
            got = [torch.from_numpy(a) for a in session.run(None, {name: to_layout(x, input_layout).numpy()})]
            record = {"input_shape": list(x.shape), "detections": int(eager[3].sum()), "onnx_detections":
                      int(got[3].sum()), "counts_equal": bool(torch.equal(eager[3], got[3])), "paired": 0,
                      "ties": 0, "unpaired": 0, "same_order": True, "max_box_diff": 0.0, "max_score_diff": 0.0}
            for i in range(x.shape[0]):
                ne, no = int(eager[3][i]), int(got[3][i])
                pairs = match_detections([t[i, :ne] for t in eager[:3]], [t[i, :no] for t in got[:3]], atol,
                                         box_atol, (anchor_boxes[i].cpu(), anchor_scores[i].cpu()))
                for key in ("paired", "ties", "unpaired"):
                    record[key] += pairs[key]
                record["same_order"] &= pairs["same_order"]
                for key in ("max_box_diff", "max_score_diff"):
                    record[key] = max(record[key], pairs[key])
            results.append(record)
    return results


def export_detection(model: nn.Module, path: str | os.PathLike, size: int | Sequence[int], *,
                     images: Sequence[torch.Tensor] = (), images_label: str | None = None, batch: int = 1,
                     dynamic_batch: bool = False, dynamic_resolution: bool = False, opset: int = MIN_OPSET,
                     fold: bool = True, exporter: str = "torchscript", atol: float = 1e-4, box_atol: float = BOX_ATOL,
                     input_layout: str = "nchw") -> ExportReport:
    """A :class:`~mobilenetv3.detection.DetectionModel` with its post-processing and NMS to ONNX at ``size``,
    checked on ``images`` (C x H x W at ``size``, described by ``images_label``; seeded random inputs when there
    are none) by :func:`verify_detections` (module doc).

    :class:`TaskExportError` for a dynamic resolution, another exporter than TorchScript, or a graph without
    ``NonMaxSuppression``; :class:`~.onnx_export.ExportMismatchError` when a check fails."""
    if dynamic_resolution:
        raise TaskExportError("a detector exports at a fixed resolution: its anchors and box scale are constants "
                              "of the export size (export one file per size; the batch may be dynamic)")
    if exporter != "torchscript":
        raise TaskExportError(f"a detector's NMS exports as ONNX {NMS_OP} through the TorchScript exporter only "
                              f"(detection.nms gives that exporter a symbolic; the {exporter} exporter would trace "
                              f"the eager loop instead): use the TorchScript exporter, the default")
    onnx = require("onnx", purpose="ONNX export")
    shape = export_shape(model, size, batch)
    report = export_onnx(model, path, input_shape=shape, dynamic_batch=dynamic_batch, opset=opset, fold=fold,
                         exporter=exporter, verify=False, atol=atol, input_layout=input_layout,
                         output_names=DETECTION_OUTPUTS)
    if NMS_OP not in report.ops:
        raise TaskExportError(f"the exported graph holds no {NMS_OP}: the NMS did not export as the ONNX operator "
                              f"({report.path})")
    onnx.checker.check_model(report.path)
    label = images_label if images else "seeded random inputs" + (f" ({images_label})" if images_label else "")
    report = dataclasses.replace(report, check_inputs=label, checks=[])
    report.checks.extend(verify_detections(report.path, model, detection_batches(images, shape, dynamic_batch),
                                           atol=atol, box_atol=box_atol, input_layout=input_layout))
    for check in report.checks:
        check.update(atol=atol, box_atol=box_atol)
    bad = [c for c in report.checks if c["unpaired"] or not c["counts_equal"]]
    if bad:
        raise ExportMismatchError(
            f"ONNX Runtime's detections differ from PyTorch's at input shape(s) "
            f"{', '.join(str(c['input_shape']) for c in bad)}: {sum(c['unpaired'] for c in bad)} detection(s) "
            f"without a partner of the same label within {box_atol:g} px (box) and {atol:g} (score), and not a tie "
            f"between two of eager's candidates", report)
    return report


def export_task_onnx(model: nn.Module, task: str, data_info: Mapping[str, Any] | None, path: str | os.PathLike, *,
                     size: int | Sequence[int] | None = None, check_sizes: Sequence[int | Sequence[int]] | None = None,
                     images: int = CHECK_IMAGES, **options: Any) -> ExportReport:
    """A segmentation or detection run's model (``task``, its recorded ``data_info``) to ONNX at ``size``
    (default: the size the run evaluates at, :meth:`~mobilenetv3.tasks.base.Task.eval_input_size`).
    ``check_sizes``: a segmentation file's further check sizes (dynamic resolution); ``images``: how many of the
    run's evaluation images a detector is checked on. ``options``: those of :func:`export_segmentation` /
    :func:`export_detection` (batch, dynamic_batch, dynamic_resolution, opset, fold, exporter, atol, input_layout).
    ``data_info`` None: a network without a run (random weights), by default at the task's default size
    (:meth:`~mobilenetv3.tasks.base.Task.default_input_size`), a detector checked on seeded random inputs.
    """
    if task not in TASKS:
        raise TaskExportError(f"export_task_onnx exports {' and '.join(TASKS)} models, not {task!r}")
    if size is not None:
        size = size_pair(size)
    elif data_info is None:
        size = get_task(task).default_input_size(model.spec)
    else:
        size = get_task(task).eval_input_size(data_info)
    if task == "segmentation":
        return export_segmentation(model, path, size, check_sizes=check_sizes, **options)
    if check_sizes:
        raise TaskExportError("a detector exports at one fixed size: check sizes apply to segmentation")
    found, label = (check_images(task, data_info, size, images) if data_info is not None
                    else ([], "random weights, no run"))
    return export_detection(model, path, size, images=found, images_label=label, **options)


def export_task_int8(model: nn.Module, task: str, data_info: Mapping[str, Any], path: str | os.PathLike,
                     calibration_source: str | None = None, *, size: int | Sequence[int] | None = None,
                     toolchain: str = DEFAULT_TOOLCHAIN, **options: Any) -> dict[str, Any]:
    """A segmentation run's model (``task``, its recorded ``data_info``) to an int8 QDQ ONNX file at ``size``
    (default: the size the run evaluates at), calibrated on ``calibration_source`` (default: the run's own
    training images, prepared as its evaluation prepares them; another segmentation data name; ``noise`` for
    timing only) and checked against the float model pixel by pixel; returns :func:`~.int8_export.export_int8`'s
    report. ``options``: its ``samples``, ``target``, ``batch``, ``dynamic_batch``, ``input_layout``.

    :class:`TaskExportError` for a detector and for the PT2E toolchain (not checked on segmentation models);
    :class:`~mobilenetv3.segmentation.spec.SegSpecError` when the pooling kernel does not fit ``size``."""
    if task != "segmentation":
        raise TaskExportError(f"int8 export of {task} runs is not supported yet: export float ONNX (without int8)")
    if toolchain != DEFAULT_TOOLCHAIN:
        raise TaskExportError(f"a segmentation run's int8 file is made by ONNX Runtime's quantiser (toolchain "
                              f"{DEFAULT_TOOLCHAIN}); the {toolchain} toolchain is not checked on segmentation models")
    h, w = size_pair(size) if size is not None else get_task(task).eval_input_size(data_info)
    model.spec.pooled_size(h, w)  # a clear SegSpecError when the kernel does not fit
    return export_int8(model, path, calibration_source or data_info["name"], run_data=dict(data_info),
                       toolchain=toolchain, resolution=(h, w), task=task, **options)
