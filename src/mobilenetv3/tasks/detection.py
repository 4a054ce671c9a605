"""Object detection: SSDLite networks (:mod:`mobilenetv3.detection`), SSD's matching and loss, COCO metrics.

The architecture is a :class:`~mobilenetv3.detection.DetSpec`: ``--model`` names a registered network
(``ssdlite_mobilenet_v3_small``, ...; ``--width-mult`` scales its backbone and extra layers), ``--spec`` a DetSpec
file; the task fits its class slots (background included) and input channels to the data. ``resolution`` is
the DetSpec's (and, for COCO folders, the side of the square training crop and evaluation input; scenes are
trained and evaluated at their canvas size); ``dropout`` and ``bn_momentum`` are the backbone's.

Batches are ``(images (B, C, H, W), targets)``, ``targets`` a list of per-image dicts (``boxes`` xyxy pixels,
``labels`` 1..N, ``iscrowd``, ``area``, ``image_id``, ``orig_size``, ``size``): box counts vary. The loss is
:func:`~mobilenetv3.detection.detection_loss` on :func:`~mobilenetv3.detection.build_targets` with the anchors of
the batch's input size; crowd boxes are never matched, and anchors overlapping one by IoU >= the positive
threshold are ignored rather than taught as background.

Evaluation returns ``count`` (images), ``loss`` (mean per image), ``map`` (mAP@[.5:.95], the primary metric),
``ap50``, ``ap75``, ``ap_small``, ``ap_medium``, ``ap_large`` (percentages, 0-100; ``None`` where COCO has no
ground truth of that size) by pycocotools' ``COCOeval`` in original image pixels, and ``coco_results`` (the
detections as a COCO result list, written by ``mnv3 eval --results FILE``). Under DDP the loss is summed and the
ground truth and detections gathered over processes, so every process scores the whole split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..cost import Cost
from ..data.det_loader import load_detection_dataset, parse_det_name
from ..data.det_transforms import to_original
from ..data.scenes import canvas_size
from ..detection import (
    BoxCoder,
    DetectionModel,
    DetSpec,
    LossOptions,
    box_iou,
    build_targets,
    cxcywh_to_xyxy,
    det_cost,
    detection_loss,
    get_det_spec,
    make_anchors,
    postprocess,
)
from .base import Reduce, Task, autocast_context, to_device
from .det_metrics import METRICS, CocoAccumulator


def collate_detection(samples: list[Any]) -> Any:
    """``(images (B, C, H, W), [target, ...])`` from ``(image, target)`` samples; ``None`` if all were skipped."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    return torch.stack([image for image, _ in kept]), [target for _, target in kept]


class DetectionTask(Task):
    """Boxes and classes per image; the model is a :class:`~mobilenetv3.detection.DetectionModel`."""

    name = "detection"
    primary_metric = "map"
    eval_metrics = ("loss", "map", "ap50", "ap75")
    step_keys = ("cls_loss", "box_loss", "positives")

    def __init__(self, num_classes: int, *, in_channels: int | None = None, classes: list[str] | None = None,
                 category_ids: list[int] | None = None, options: LossOptions | None = None) -> None:
        self.num_classes = num_classes  # background included
        self.in_channels = in_channels
        self.classes = classes
        self.category_ids = category_ids
        self.options = options or LossOptions()
        self.spec: DetSpec | None = None
        self.last_parts: dict[str, torch.Tensor] = {}
        self.anchor_cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def for_run(cls, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> DetectionTask:
        if options.get("qat"):
            raise ValueError("quantisation-aware training (--qat) is not available for detection yet")
        if options.get("label_smoothing"):
            raise ValueError("label smoothing is not used by the detection task; leave --label-smoothing out")
        classes = list(data_info["classes"])
        return cls(len(classes), in_channels=int(data_info["channels"]), classes=classes,
                   category_ids=data_info.get("category_ids"))

    # -- the architecture and the data
    @classmethod
    def named_spec(cls, name: str, width_mult: float) -> DetSpec:
        return get_det_spec(name, width_mult)

    @classmethod
    def load_spec(cls, path: Any) -> DetSpec:
        return DetSpec.load(path)

    @classmethod
    def spec_model(cls, spec: DetSpec) -> nn.Module:
        return DetectionModel(spec)

    @classmethod
    def spec_cost(cls, spec: DetSpec, size: tuple[int, int]) -> Cost:
        return det_cost(spec, size)

    @classmethod
    def spec_resolution(cls, spec: DetSpec) -> int:
        return spec.resolution

    @classmethod
    def eval_resize(cls, data_info: Mapping[str, Any]) -> int | None:
        """The side the run's evaluation resizes every image to: the recorded resolution (320 for runs that
        recorded none) for COCO data; ``None`` for the scenes, evaluated as drawn."""
        kind, _ = parse_det_name(data_info["name"])
        return None if kind == "scenes" else int(data_info.get("resolution") or 320)

    @classmethod
    def eval_input_size(cls, data_info: Mapping[str, Any]) -> tuple[int, int]:
        """A scenes run's canvas; for COCO the resize side, square (see :meth:`eval_resize`)."""
        side = cls.eval_resize(data_info)
        return canvas_size(parse_det_name(data_info["name"])[1]) if side is None else (side, side)

    @classmethod
    def with_run_options(cls, spec: DetSpec, changes: Mapping[str, Any]) -> DetSpec:
        changes = dict(changes)
        top = {"resolution": changes.pop("resolution")} if "resolution" in changes else {}
        backbone = spec.backbone.replace(**changes) if changes else spec.backbone
        return spec.replace(backbone=backbone, **top) if changes or top else spec

    @classmethod
    def load_data(cls, options: Mapping[str, Any], val_split: str) -> tuple[Any, Any]:
        o = options
        if o.get("holdout"):
            raise ValueError("--holdout applies to classification data; the scenes have their own val split, a "
                             "COCO folder its instances_val.json")
        common = dict(channels=o["channels"], data_dir=o["data_dir"], size=o["resolution"])
        train_set = load_detection_dataset(o["data"], "train", train=True, scale=o["crop_scale"], hflip=o["hflip"],
                                           **common)
        val_set = load_detection_dataset(o["data"], val_split, train=False, mean=train_set.mean, std=train_set.std,
                                         **common)
        return train_set, val_set

    @classmethod
    def eval_data(cls, data_info: Mapping[str, Any], split: str, *, data: str | None = None,
                  data_dir: str | None = None) -> Any:
        d = data_info
        return load_detection_dataset(data or d["name"], split, train=False, channels=d["channels"],
                                      mean=tuple(d["mean"]), std=tuple(d["std"]), size=d.get("resolution"),
                                      data_dir=data_dir if data_dir is not None else d.get("data_dir"))

    # -- the model
    def adapt_spec(self, spec: DetSpec) -> DetSpec:
        if not isinstance(spec, DetSpec):
            raise ValueError(f"the detection task trains detection networks (--model ssdlite_..., or a DetSpec "
                             f"file); {getattr(spec, 'name', spec)!r} is not one")
        backbone = spec.backbone
        if self.in_channels is not None:
            backbone = backbone.replace(in_channels=self.in_channels)
        return spec.replace(num_classes=self.num_classes, backbone=backbone)

    def check_spec(self, spec: DetSpec) -> None:
        if (spec.backbone.in_channels, spec.num_classes) != (self.in_channels, self.num_classes):
            raise ValueError(f"the data has {self.in_channels} channel(s) and {self.num_classes} classes (with the "
                             f"background); the run's spec {spec.backbone.in_channels} and {spec.num_classes}")

    def build_model(self, spec: DetSpec) -> nn.Module:
        self.spec = spec
        return DetectionModel(spec)

    def collate(self, samples: list[Any]) -> Any:
        return collate_detection(samples)

    def targets_to(self, targets: Any, device: torch.device) -> Any:
        return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

    def split_targets(self, targets: Any, chunks: int) -> tuple[Any, ...]:
        size = -(-len(targets) // chunks)  # as Tensor.chunk cuts
        return tuple(targets[i:i + size] for i in range(0, len(targets), size))

    # -- training
    def anchors(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """cxcywh anchors (fractions of the input) for inputs of ``size`` (height, width)."""
        if self.spec is None:
            raise RuntimeError("the detection task's loss needs the spec: build the model through the task first")
        key = (self.spec.anchors, tuple(size), str(device))
        if key not in self.anchor_cache:  # one input size per run, usually: made once
            self.anchor_cache = {key: make_anchors(self.spec.anchors, self.spec.feature_sizes(*size)).to(device)}
        return self.anchor_cache[key]

    def targets_for(self, targets: list[dict[str, Any]], anchors: torch.Tensor, size: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor labels (0 background, -1 ignored) and regression targets; crowd boxes ignored (module
        docstring)."""
        h, w = size
        scale = torch.tensor([w, h, w, h], dtype=anchors.dtype, device=anchors.device)
        crowd = [t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.bool, device=anchors.device))
                 for t in targets]
        boxes = [t["boxes"].to(anchors.dtype)[~c] / scale for t, c in zip(targets, crowd, strict=True)]
        labels = [t["labels"][~c] for t, c in zip(targets, crowd, strict=True)]
        anchor_labels, box_targets = build_targets(boxes, labels, anchors, BoxCoder(self.spec.box_weights),
                                                   self.options)
        corners = cxcywh_to_xyxy(anchors)
        for i, (t, c) in enumerate(zip(targets, crowd, strict=True)):
            if c.any():
                on_crowd = box_iou(t["boxes"][c].to(anchors.dtype) / scale, corners).amax(0)
                on_crowd = on_crowd >= self.options.positive_threshold
                anchor_labels[i] = torch.where(on_crowd & (anchor_labels[i] == 0), -1, anchor_labels[i])
        return anchor_labels, box_targets

    def loss_parts(self, cls_logits: torch.Tensor, box_regression: torch.Tensor, targets: list[dict[str, Any]]
                   ) -> dict[str, torch.Tensor]:
        size = tuple(int(v) for v in targets[0]["size"])
        anchors = self.anchors(size, cls_logits.device)
        if anchors.shape[0] != cls_logits.shape[1]:
            raise ValueError(f"the spec gives {anchors.shape[0]} anchors for {size} inputs, the model "
                             f"{cls_logits.shape[1]} outputs")
        labels, box_targets = self.targets_for(targets, anchors, size)
        return detection_loss(cls_logits.float(), box_regression.float(), labels, box_targets,
                              self.spec.classification, self.options)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        parts = self.loss_parts(*outputs, targets)
        self.last_parts = {k: v.detach() for k, v in parts.items()}
        return parts["loss"]

    def step_stats(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        parts, n = self.last_parts, len(targets)
        return {"cls_loss": parts["classification"] * n, "box_loss": parts["box"] * n,
                "positives": parts["num_positive"].to(torch.float32)}

    def train_metrics(self, totals: Mapping[str, float], count: int) -> dict[str, float]:
        return {"train_cls_loss": totals["cls_loss"] / count, "train_box_loss": totals["box_loss"] / count,
                "train_positives": totals["positives"] / count}

    def describe(self, record: Mapping[str, Any]) -> str:
        ema = f", EMA mAP {record['ema_val_map']:.2f}" if "ema_val_map" in record else ""
        return (f"class {record['train_cls_loss']:.3f} box {record['train_box_loss']:.3f}, val mAP "
                f"{record['val_map']:.2f} AP50 {record['val_ap50']:.2f}{ema}")

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device | str = "cpu",
                 channels_last: bool = False, amp: bool = False, reduce: Reduce | None = None) -> dict[str, Any]:
        """COCO metrics (module docstring) and the mean loss of ``model`` over ``loader``'s batches."""
        device = torch.device(device)
        was_training = model.training
        model.eval()
        if self.spec is None:
            self.spec = model.spec
        coco = CocoAccumulator(self.num_classes, self.category_ids)
        loss_sum, count = 0.0, 0
        try:
            for batch in loader:
                if batch is None:
                    continue
                x, targets = batch
                x, targets = to_device(x, device, channels_last), self.targets_to(targets, device)
                with autocast_context(device, amp):
                    cls_logits, box_regression, anchors = model.forward_raw(x)
                loss_sum += float(self.loss_parts(cls_logits, box_regression, targets)["loss"]) * len(targets)
                count += len(targets)
                size = (int(x.shape[-2]), int(x.shape[-1]))
                boxes, scores, labels, num = postprocess(cls_logits.float(), box_regression.float(),
                                                         anchors.float(), model.spec, size)
                for i, t in enumerate(targets):
                    image_id, orig = int(t["image_id"]), t["orig_size"]
                    area = t.get("area")
                    if area is not None:  # back to original pixels, as the boxes
                        area = area * (float(orig[0] * orig[1]) / (size[0] * size[1]))
                    coco.add_truth(image_id, tuple(orig.tolist()), to_original(t["boxes"], size, orig),
                                   t["labels"], area, t.get("iscrowd"))
                    n = int(num[i])
                    coco.add_detections(image_id, to_original(boxes[i, :n], size, orig), scores[i, :n],
                                        labels[i, :n])
        finally:
            model.train(was_training)
        sums = torch.tensor([loss_sum, count], dtype=torch.float64, device=device)
        if reduce is not None:
            reduce(sums)
            coco.gather()
        loss_sum, count = float(sums[0]), int(sums[1])
        metrics = coco.evaluate()
        # mAP, AP50 and AP75 are nan, not None, for a split without boxes: the loop compares the primary metric
        metrics.update({k: float("nan") for k in ("map", "ap50", "ap75") if metrics[k] is None})
        return {"count": count, "loss": loss_sum / count if count else float("nan"),
                **{k: (None if v is None else 100.0 * v) for k, v in metrics.items()},
                "boxes": len(coco.annotations), "detections": len(coco.results), "coco_results": coco.results}


__all__ = ["DetectionTask", "METRICS", "collate_detection"]
