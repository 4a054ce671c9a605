"""Object detection on MobileNet backbones (section 6.3): SSDLite, its spec, anchors, losses, NMS and costs.

- :mod:`.backbone`: the C4 / C5 taps and the "Y" reduction (channels between C4 and C5 halved).
- :mod:`.anchors`: :class:`AnchorSpec`, TF's and torchvision's anchor styles, :func:`make_anchors`.
- :mod:`.boxes`: box forms, IoU, :class:`BoxCoder` (weights 10, 10, 5, 5).
- :mod:`.matching`: anchors to ground truth (IoU >= 0.5, each box's best anchor forced).
- :mod:`.loss`: targets, softmax cross-entropy with hard negative mining + smooth L1, sigmoid focal loss.
- :mod:`.nms`: batched greedy NMS in plain torch, exported as ONNX ``NonMaxSuppression``.
- :mod:`.spec`: :class:`DetSpec`, JSON round trip, validation.
- :mod:`.postprocess`: head outputs -> fixed-size detections (scores, decoding, top-k, NMS).
- :mod:`.model`: :class:`DetectionModel` (backbone taps, extra layers, depthwise-separable heads).
- :mod:`.zoo`: DetSpecs from zoo backbones, the registry :data:`DET_MODELS`.
- :mod:`.builders`: :func:`build_detection` and one builder per registered network.
- :mod:`.cost`: exact parameters and multiply-adds (:func:`det_cost`).
- :mod:`.paper`: Table 6 as specs, the printed figures and ours beside them.
"""

from .anchors import ANCHOR_STYLES, AnchorSpec, make_anchors
from .backbone import DetTaps, find_taps, reduce_tail
from .boxes import BOX_WEIGHTS, BoxCoder, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from .builders import (
    build_detection,
    ssdlite_mnasnet_a1,
    ssdlite_mobilenet_v2,
    ssdlite_mobilenet_v3_large,
    ssdlite_mobilenet_v3_large_y,
    ssdlite_mobilenet_v3_small,
    ssdlite_mobilenet_v3_small_y,
)
from .cost import det_cost
from .loss import CLASSIFICATIONS, LossOptions, build_targets, detection_loss, hard_negatives
from .matching import BACKGROUND, IGNORED, match_anchors
from .model import DetectionModel, RawOutputs
from .nms import nms_keep
from .postprocess import postprocess
from .spec import DetSpec, DetSpecError
from .zoo import DET_MODELS, det_spec, get_det_spec, list_det_models

__all__ = [
    "RawOutputs",
    "ANCHOR_STYLES", "AnchorSpec", "BACKGROUND", "BOX_WEIGHTS", "BoxCoder", "CLASSIFICATIONS", "DET_MODELS",
    "DetSpec", "DetSpecError", "DetTaps", "DetectionModel", "IGNORED", "LossOptions", "box_iou", "build_detection",
    "build_targets", "cxcywh_to_xyxy", "det_cost", "det_spec", "detection_loss", "find_taps", "get_det_spec",
    "hard_negatives", "list_det_models", "make_anchors", "match_anchors", "nms_keep", "postprocess", "reduce_tail",
    "ssdlite_mnasnet_a1", "ssdlite_mobilenet_v2", "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_large_y",
    "ssdlite_mobilenet_v3_small", "ssdlite_mobilenet_v3_small_y", "xyxy_to_cxcywh",
]
