"""Batched greedy non-maximum suppression in plain torch, exportable to ONNX.

:func:`nms_keep` works on groups of candidates that are already sorted by score, best first (the post-processing
makes one group per image and class from a top-k). Within a group, greedy NMS keeps a candidate unless a *kept*
candidate before it overlaps it by IoU ``> iou_threshold``; candidates with score ``<= score_threshold`` are
neither kept nor suppress; at most ``max_per_group`` are kept (the first ones, as a greedy loop that stops early).

Eager (plain torch, no torchvision, no Python loop over boxes): the keep vector is the unique solution of the
triangular system ``keep_i = valid_i and not any_j<i (keep_j and IoU_ji > t)``. Iterating that equation from
``keep = valid`` fixes at least one more position per round (position i is right once all before it are), so it
reaches the solution in at most K rounds and stops as soon as a round changes nothing (usually a handful); each
round is one batched matrix operation over all groups.

Export: a loop that runs until nothing changes is data-dependent and a trace would freeze its round count, so
:func:`nms_keep` is an ``autograd.Function`` whose ONNX form is the standard ``NonMaxSuppression`` operator
(opset >= 10; ONNX Runtime, OpenVINO and TensorRT implement it natively) with the same semantics (greedy, IoU
``>``, score ``>``, ``max_output_boxes_per_class``), each group a batch entry, scattered back to the same keep mask.
This needs the TorchScript-based exporter (``dynamo=False``, the project's default); the tests compare the two.
"""

from __future__ import annotations

import torch

from .boxes import box_iou

GROUP_CHUNK = 64  # groups per batched IoU: (64, K, K) at K = 300 is 23 MB


def nms_keep_eager(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
                   max_per_group: int) -> torch.Tensor:
    """The keep mask ``(G, K)`` for boxes ``(G, K, 4)`` xyxy and scores ``(G, K)`` sorted descending per group."""
    out = []
    for start in range(0, boxes.shape[0], GROUP_CHUNK):
        b, s = boxes[start:start + GROUP_CHUNK], scores[start:start + GROUP_CHUNK]
        k = s.shape[1]
        valid = s > score_threshold
        earlier = torch.ones(k, k, dtype=torch.bool, device=b.device).triu(1)  # [j, i]: j before i
        suppresses = (box_iou(b, b) > iou_threshold) & earlier & valid[:, :, None]
        keep = valid
        for _ in range(k + 1):
            new = valid & ~(suppresses & keep[:, :, None]).any(1)
            if torch.equal(new, keep):
                break
            keep = new
        out.append(keep & (keep.cumsum(1) <= max_per_group))
    if not out:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return torch.cat(out)


class NMSKeep(torch.autograd.Function):
    """:func:`nms_keep_eager` in eager mode, ONNX ``NonMaxSuppression`` when exported (module docstring)."""

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold: float, score_threshold: float, max_per_group: int):
        return nms_keep_eager(boxes, scores, iou_threshold, score_threshold, max_per_group)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold, score_threshold, max_per_group):
        def const(values, dtype):
            return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))

        scores_3d = g.op("Unsqueeze", scores, const([1], torch.int64))  # (G, 1, K): one class per group
        # ONNX takes corners as (y1, x1, y2, x2); IoU is the same with x and y swapped, so xyxy goes in as it is
        selected = g.op("NonMaxSuppression", boxes, scores_3d, const([max_per_group], torch.int64),
                        const([iou_threshold], torch.float32), const([score_threshold], torch.float32))
        where = g.op("Gather", selected, const([0, 2], torch.int64), axis_i=1)  # (M, 2): group, candidate
        count = g.op("Gather", g.op("Shape", selected), const([0], torch.int64), axis_i=0)
        ones = g.op("ConstantOfShape", count, value_t=torch.tensor([1.0], dtype=torch.float32))
        zeros = g.op("ConstantOfShape", g.op("Shape", scores), value_t=torch.tensor([0.0], dtype=torch.float32))
        mask = g.op("ScatterND", zeros, where, ones)
        return g.op("Cast", mask, to_i=9)  # 9: BOOL


def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
             max_per_group: int) -> torch.Tensor:
    """Greedy NMS keep mask ``(G, K)`` per group of score-sorted candidates (module docstring)."""
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2]:
        raise ValueError(f"nms_keep needs boxes (G, K, 4) and scores (G, K), got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    return NMSKeep.apply(boxes, scores, float(iou_threshold), float(score_threshold), int(max_per_group))
