"""COCO detection metrics through the standard evaluator (pycocotools' ``COCOeval``, the ``coco`` extra).

:class:`CocoAccumulator` gathers, batch by batch, the ground truth (as a COCO instances dict: images, boxes as
``[x, y, w, h]``, areas, crowd flags) and the detections (as COCO result entries: ``image_id``, ``category_id``,
``bbox``, ``score``), both in original image pixels; :func:`coco_evaluate` runs ``COCOeval`` (bbox, 100
detections per image) and returns mAP@[.5:.95] (``map``), AP50, AP75 and AP small / medium / large as fractions
in [0, 1], ``None`` where COCO has nothing to measure (no ground truth in that size range: its -1). With no
detections at all every AP with ground truth is 0. Under DDP :meth:`CocoAccumulator.gather` collects every
process's share first. :func:`write_results` writes a COCO result file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..extras import require

METRICS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")  # COCOeval.stats[0:6]
AREA_RANGES = {"ap_small": (0, 32**2), "ap_medium": (32**2, 96**2), "ap_large": (96**2, 1e10)}  # COCOeval's


class CocoAccumulator:
    """Ground truth and detections of one evaluation, COCO-shaped (module docstring)."""

    def __init__(self, num_classes: int, category_ids: list[int] | None = None) -> None:
        self.category_ids = category_ids or list(range(num_classes))  # label -> category id
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def add_truth(self, image_id: int, size: tuple[int, int], boxes: torch.Tensor, labels: torch.Tensor,
                  area: torch.Tensor | None = None, iscrowd: torch.Tensor | None = None) -> None:
        """One image's ground truth: xyxy ``boxes`` (pixels), ``labels`` (1..N), COCO areas, crowd flags."""
        self.images.append({"id": int(image_id), "height": int(size[0]), "width": int(size[1])})
        boxes = boxes.detach().cpu().double()
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if area is None else area.cpu().double()
        crowd = torch.zeros(len(boxes), dtype=torch.bool) if iscrowd is None else iscrowd.cpu()
        for box, label, a, c in zip(boxes.tolist(), labels.tolist(), areas.tolist(), crowd.tolist(), strict=True):
            x1, y1, x2, y2 = box
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": int(image_id),
                                     "category_id": self.category_ids[int(label)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                     "area": float(a), "iscrowd": int(c)})

    def add_detections(self, image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """One image's detections: xyxy ``boxes`` (pixels), ``scores``, ``labels`` (1..N)."""
        for box, score, label in zip(boxes.detach().cpu().double().tolist(), scores.detach().cpu().tolist(),
                                     labels.detach().cpu().tolist(), strict=True):
            x1, y1, x2, y2 = box
            self.results.append({"image_id": int(image_id), "category_id": self.category_ids[int(label)],
                                 "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                                 "score": round(float(score), 5)})

    def merge(self, parts: list[tuple[list, list, list]]) -> None:
        """Replace this accumulator's contents by the union of ``parts`` (each an accumulator's ``(images,
        annotations, results)``, e.g. one per process), annotation ids renumbered."""
        self.images, self.annotations, self.results = [], [], []
        for images, boxes, results in parts:
            self.images += images
            self.annotations += [dict(a, id=len(self.annotations) + i + 1) for i, a in enumerate(boxes)]
            self.results += results

    def gather(self) -> None:
        """Under ``torch.distributed`` (initialised, several processes) collect every process's images and
        detections here, so that each process evaluates the whole split and gets the same figures."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.images, self.annotations, self.results))
        self.merge(parts)

    def ground_truth(self, class_names: list[str] | None = None) -> dict[str, Any]:
        ids = self.category_ids[1:]
        names = class_names[1:] if class_names else [str(i) for i in ids]
        return {"images": self.images, "annotations": self.annotations,
                "categories": [{"id": i, "name": n} for i, n in zip(ids, names, strict=True)]}

    def evaluate(self) -> dict[str, float | None]:
        return coco_evaluate(self.ground_truth(), self.results)


def coco_evaluate(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float | None]:
    """:data:`METRICS` of ``results`` against ``ground_truth`` by pycocotools' ``COCOeval`` (module docstring)."""
    coco = require("pycocotools.coco", "coco", "COCO detection metrics")
    cocoeval = require("pycocotools.cocoeval", "coco", "COCO detection metrics")
    if not results:  # COCO's loadRes refuses an empty list: every AP with ground truth in its range is 0
        areas = [float(a["area"]) for a in ground_truth["annotations"] if not a.get("iscrowd")]
        ranges = [(0, 1e10)] * 3 + [AREA_RANGES[k] for k in METRICS[3:]]
        return {k: (0.0 if any(lo <= a <= hi for a in areas) else None)
                for k, (lo, hi) in zip(METRICS, ranges, strict=True)}
    gt = {"info": {}, "licenses": [], **ground_truth}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        truth = coco.COCO()
        truth.dataset = gt
        truth.createIndex()
        detections = truth.loadRes([dict(r) for r in results])
        evaluator = cocoeval.COCOeval(truth, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: (None if v < 0 else float(v)) for k, v in zip(METRICS, evaluator.stats[:6], strict=True)}


def write_results(results: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """A COCO result file (a JSON list of ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path
