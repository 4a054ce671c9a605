"""Prediction for segmentation and detection runs: one image file in, a mask or a list of boxes out, in the image's
own pixels, with the run's evaluation preprocessing; and the pictures `mnv3 predict` writes of them.

- Segmentation (:func:`predict_segmentation`): the whole image at its own size, normalised with the run's
  statistics (:class:`~mobilenetv3.data.SegEvalTransform`, as the run's evaluation), logits resized bilinearly to
  the image and the argmax taken per pixel. :func:`colour_mask` paints the class ids with :data:`PALETTE` (class 0,
  the background, black); :func:`blend` lays that mask over the image.
- Detection (:func:`predict_detection`): the image resized to the run's evaluation input
  (:class:`~mobilenetv3.data.DetEvalTransform`: the recorded resolution for COCO data, the image as it is for the
  scenes, which are evaluated at their canvas size), the model's post-processed detections kept from
  ``score_threshold`` up and their boxes mapped back to the image (xyxy pixels). :func:`draw_detections` draws them.

Images are decoded as for classification (:func:`~mobilenetv3.data.decode_image`: EXIF orientation applied, alpha
dropped, converted to the run's 1 or 3 channels); a missing, empty or corrupt file is a
:class:`~mobilenetv3.data.DataError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import DataError, DetEvalTransform, SegEvalTransform, decode_image
from ..data.det_transforms import to_original
from ..tasks.detection import DetectionTask
from ..tasks.segmentation import resize_logits
from .evaluate import load_run, read_run_config, resolve_device

__all__ = ["PALETTE", "blend", "colour_mask", "draw_detections", "predict_detection", "predict_segmentation",
           "read_rgb", "run_task"]


def make_palette() -> np.ndarray:
    """256 distinct colours (Pascal VOC's bit-interleaved palette): class 0 black, 1 dark red, 2 dark green, ..."""
    palette = np.zeros((256, 3), np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


PALETTE = make_palette()


def run_task(run_dir: str | os.PathLike) -> str:
    """The task a run directory was trained for (classification for runs recorded before tasks existed)."""
    return read_run_config(run_dir)["train"].get("task") or "classification"


def check_run(run_dir: str | os.PathLike, task: str) -> None:
    """A clear error, before any model is built, for a run of another task or with channels no image has."""
    config = read_run_config(run_dir)
    found = config["train"].get("task") or "classification"
    if found != task:
        raise ValueError(f"{run_dir} is a {found} run, not a {task} run")
    check_channels(config["data"], run_dir)


def check_channels(data_info: Mapping[str, Any], run_dir: Any) -> int:
    channels = int(data_info.get("channels", 3))
    if channels not in (1, 3):
        raise ValueError(f"{run_dir} records {channels} input channels; images can be read as 1 (grey) or 3 (RGB)")
    return channels


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``H x W x 3`` ``uint8`` RGB (what the pictures are drawn on)."""
    return decode_image(path, 3).permute(1, 2, 0).numpy()


def load_for_run(path: str | os.PathLike, data_info: Mapping[str, Any], run_dir: Any) -> torch.Tensor:
    channels = check_channels(data_info, run_dir)
    image = decode_image(path, channels)
    if min(image.shape[-2:]) < 1:
        raise DataError(f"image {path} has no pixels ({image.shape[-1]}x{image.shape[-2]})")
    return image


@torch.no_grad()
def predict_segmentation(run_dir: str | os.PathLike, image: str | os.PathLike, *, weights: str = "ema",
                         checkpoint: str = "last", device: str | None = "auto") -> dict[str, Any]:
    """The class map of one image by a segmentation run: ``{"image", "size": [height, width], "classes",
    "mask"`` (``H x W`` int64 class ids at the image's size)``, "shares"`` (class name -> fraction of the
    pixels, all classes)``}``."""
    check_run(run_dir, "segmentation")
    dev = resolve_device(device)
    model, config = load_run(run_dir, checkpoint, weights, dev)
    d = config["data"]
    img = load_for_run(image, d, run_dir)
    transform = SegEvalTransform(mean=tuple(d["mean"]), std=tuple(d["std"]), channels=check_channels(d, run_dir))
    x = transform.finish(transform.prepare(img), torch.zeros(img.shape[-2:], dtype=torch.int64))[0]
    size = tuple(int(v) for v in img.shape[-2:])
    logits = resize_logits(model(x[None].to(dev)).float(), size)
    mask = logits.argmax(dim=1)[0].cpu()
    classes = list(d["classes"])
    counts = torch.bincount(mask.flatten(), minlength=len(classes)).tolist()
    total = size[0] * size[1]
    return {"image": str(image), "size": list(size), "classes": classes, "mask": mask,
            "shares": {name: counts[i] / total for i, name in enumerate(classes)}}


def colour_mask(mask: torch.Tensor | np.ndarray) -> Image.Image:
    """An RGB picture of a class-id map, each id painted with its :data:`PALETTE` colour (ids above 255 wrap)."""
    ids = np.asarray(mask, dtype=np.int64) % len(PALETTE)
    return Image.fromarray(PALETTE[ids], "RGB")


def blend(rgb: np.ndarray, mask: torch.Tensor | np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with its colour mask laid over it (``alpha`` the mask's weight); background pixels (class 0)
    keep the image as it is."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ids = np.asarray(mask, dtype=np.int64)
    if rgb.shape[:2] != ids.shape:
        raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} and mask {ids.shape[1]}x{ids.shape[0]} differ in size")
    colours = PALETTE[ids % len(PALETTE)].astype(np.float32)
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    out = np.where((ids != 0)[..., None], mixed, rgb.astype(np.float32))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


@torch.no_grad()
def predict_detection(run_dir: str | os.PathLike, image: str | os.PathLike, *, weights: str = "ema",
                      checkpoint: str = "last", device: str | None = "auto", score_threshold: float = 0.3
                      ) -> dict[str, Any]:
    """The detections of one image by a detection run, best first: ``{"image", "size": [height, width],
    "input_size", "detections": [{"label", "category_id"`` (where the run records COCO ids)``, "score", "box"``
    (xyxy in image pixels)``}, ...]}``."""
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"the score threshold is a probability in [0, 1], got {score_threshold}")
    check_run(run_dir, "detection")
    dev = resolve_device(device)
    model, config = load_run(run_dir, checkpoint, weights, dev)
    d = config["data"]
    img = load_for_run(image, d, run_dir)
    orig = tuple(int(v) for v in img.shape[-2:])
    transform = DetEvalTransform(mean=tuple(d["mean"]), std=tuple(d["std"]), channels=check_channels(d, run_dir),
                                 size=DetectionTask.eval_resize(d))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    x, target = transform(img, empty)
    size = tuple(int(v) for v in target["size"])
    boxes, scores, labels, num = model(x[None].to(dev))
    n = int(num[0])
    boxes = to_original(boxes[0, :n].float().cpu(), size, orig)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig[0])
    classes, category_ids = list(d["classes"]), d.get("category_ids")
    found = []
    for box, score, label in zip(boxes.tolist(), scores[0, :n].tolist(), labels[0, :n].tolist(), strict=True):
        if score < score_threshold:
            continue
        item = {"label": classes[label] if label < len(classes) else str(label)}
        if category_ids:
            item["category_id"] = int(category_ids[label])
        item.update(score=float(score), box=[round(v, 2) for v in box])
        found.append(item)
    found.sort(key=lambda r: -r["score"])
    return {"image": str(image), "size": list(orig), "input_size": list(size), "detections": found}


def draw_detections(rgb: np.ndarray, detections: list[Mapping[str, Any]], classes: list[str] | None = None
                    ) -> Image.Image:
    """The image with each detection's box and "label score" drawn in its class's :data:`PALETTE` colour."""
    picture = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(picture)
    index = {name: i for i, name in enumerate(classes or [])}
    for det in detections:
        colour = tuple(int(v) for v in PALETTE[index.get(det["label"], 1) % len(PALETTE)])
        colour = colour if any(colour) else (255, 0, 0)
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=2)
        text = f"{det['label']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle([x1, ty, x1 + (right - left) + 2, ty + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 1, ty), text, fill=(255, 255, 255))
    return picture
