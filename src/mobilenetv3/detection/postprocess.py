"""From head outputs to detections: scores, decoded boxes, per-class top-k, NMS, the best ``max_detections``.

Steps (all batched tensor operations, so that an ONNX trace of the model includes them):

1. class scores: softmax over every slot, background dropped (``"softmax"``), or the sigmoid of each foreground
   slot (``"sigmoid"``): ``(B, A, C)`` for the ``C = num_classes - 1`` foreground classes;
2. boxes: the regressions decoded against the anchors (:class:`~.boxes.BoxCoder`), clipped to the image;
3. per image and class the ``pre_nms_top_k`` best anchors (TF's NMS reads every anchor; the top-k bounds the
   work, as torchvision's ``topk_candidates``);
4. greedy NMS per image and class (:func:`~.nms.nms_keep`): score ``> score_threshold``, IoU ``> iou_threshold``
   suppresses, at most ``max_per_class`` kept;
5. the ``max_detections`` best kept detections over all classes, best first.

Output, fixed in size so that it exports: ``boxes (B, D, 4)`` xyxy in input pixels, ``scores (B, D)``,
``labels (B, D)`` int64 (1 .. num_classes - 1), ``num_detections (B,)`` int64; entries past ``num_detections`` are
zeros (label 0, the background). ``D = min(max_detections, C x K)``.
"""

from __future__ import annotations

import torch

from .boxes import BoxCoder
from .nms import nms_keep
from .spec import DetSpec


def class_scores(cls_logits: torch.Tensor, classification: str) -> torch.Tensor:
    """Foreground class probabilities ``(B, A, num_classes - 1)``."""
    if classification == "softmax":
        return cls_logits.softmax(-1)[..., 1:]
    return cls_logits.sigmoid()


def candidates(cls_logits: torch.Tensor, box_regression: torch.Tensor, anchors: torch.Tensor, spec: DetSpec,
               image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`postprocess` chooses from: every anchor's foreground scores ``(B, A, C)`` and its decoded box,
    clipped, in input pixels ``(B, A, 4)`` (steps 1 and 2, the same operations)."""
    boxes = BoxCoder(spec.box_weights).decode(box_regression, anchors).clamp(0.0, 1.0)
    h, w = image_size
    return class_scores(cls_logits, spec.classification), boxes * boxes.new_tensor([w, h, w, h])


def postprocess(cls_logits: torch.Tensor, box_regression: torch.Tensor, anchors: torch.Tensor, spec: DetSpec,
                image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(boxes, scores, labels, num_detections)`` (module docstring) from head outputs ``(B, A, slots)`` and
    ``(B, A, 4)``, cxcywh ``anchors`` ``(A, 4)`` as fractions of an image of ``image_size`` (height, width)."""
    batch, num_anchors = box_regression.shape[:2]
    scores = class_scores(cls_logits, spec.classification).transpose(1, 2)  # (B, C, A)
    classes = scores.shape[1]
    boxes = BoxCoder(spec.box_weights).decode(box_regression, anchors).clamp(0.0, 1.0)  # (B, A, 4)
    k = min(spec.pre_nms_top_k, num_anchors)
    top_scores, top_index = scores.topk(k, dim=2)  # (B, C, K), sorted
    candidates = boxes[:, None].expand(batch, classes, num_anchors, 4)
    candidates = candidates.gather(2, top_index[..., None].expand(batch, classes, k, 4))  # (B, C, K, 4)
    keep = nms_keep(candidates.reshape(batch * classes, k, 4), top_scores.reshape(batch * classes, k),
                    spec.iou_threshold, spec.score_threshold, spec.max_per_class).reshape(batch, classes, k)
    kept = torch.where(keep, top_scores, torch.full_like(top_scores, -1.0)).reshape(batch, classes * k)
    d = min(spec.max_detections, classes * k)
    best, where = kept.topk(d, dim=1)  # (B, D)
    valid = best >= 0
    out_boxes = candidates.reshape(batch, classes * k, 4).gather(1, where[..., None].expand(batch, d, 4))
    h, w = image_size
    scale = torch.tensor([w, h, w, h], dtype=out_boxes.dtype, device=out_boxes.device)
    out_boxes = torch.where(valid[..., None], out_boxes * scale, torch.zeros_like(out_boxes))
    out_scores = torch.where(valid, best, torch.zeros_like(best))
    labels = torch.where(valid, torch.div(where, k, rounding_mode="floor") + 1, torch.zeros_like(where))
    return out_boxes, out_scores, labels, valid.sum(1)
