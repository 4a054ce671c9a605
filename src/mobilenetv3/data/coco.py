"""A COCO-format detection folder: ``ROOT/annotations/instances_<split>.json`` and the images it names.

The images are looked for in ``ROOT/<split>``, ``ROOT/images/<split>`` or ``ROOT/<split>2017`` (COCO's own
layout), the first that exists. Categories are mapped, in the order of their ids, to contiguous labels 1..N
(0 is the background), so COCO's 80 categories with ids up to 90 give labels 1..80; ``category_ids[label]`` maps
back for result files. Images without annotations are kept (they teach the background).

Checks, all :class:`~.errors.DataError` naming the file: an annotation of an unknown category id or of an image id
the file does not list, and images the file lists that are missing from the folder (the first few named). Boxes
(COCO's ``[x, y, width, height]``) are cleaned, not refused: a box reaching outside its image is clipped to it, a
box of zero area (before or after clipping) is dropped; the counts are kept in ``box_report`` and one warning says
how many. Crowd annotations (``iscrowd`` 1) are kept with their flag: the detection task ignores anchors on them
in matching and COCO's evaluator ignores detections on them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .errors import DataError
from .folder import decode_image

IMAGE_FOLDERS = ("{split}", "images/{split}", "{split}2017")


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def find_image_folder(root: Path, split: str) -> Path:
    for pattern in IMAGE_FOLDERS:
        folder = root / pattern.format(split=split)
        if folder.is_dir():
            return folder
    tried = ", ".join(str(root / p.format(split=split)) for p in IMAGE_FOLDERS)
    raise DataError(f"no image folder for split {split!r} under {root} (tried {tried})")


def read_coco(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"no COCO annotation file {path} (expected ROOT/annotations/instances_<split>.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read COCO annotations {path}: {e}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: no {key!r} list (not a COCO instances file)")
    return data


def clean_box(bbox: Any, width: int, height: int) -> tuple[list[float] | None, str]:
    """``[x, y, w, h]`` -> clipped xyxy and ``"ok"``/``"clipped"``, or ``None`` and ``"empty"``."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, "empty"
    x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)
    if x2 <= x1 or y2 <= y1:
        return None, "empty"
    return [x1, y1, x2, y2], ("ok" if (x1, y1, x2, y2) == (x, y, x + w, y + h) else "clipped")


class CocoDetection(Dataset):
    """One split of a COCO folder; items are ``transform(image, target)`` (a :mod:`.det_transforms` transform),
    the target holding ``boxes`` (xyxy pixels), ``labels`` (1..N), ``area``, ``iscrowd``, ``image_id`` and
    ``orig_size`` (height, width)."""

    def __init__(self, root: str | os.PathLike, split: str, *, transform: Any) -> None:
        self.root = Path(root)
        self.split = split
        path = annotation_file(self.root, split)
        data = read_coco(path)
        self.folder = find_image_folder(self.root, split)
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.category_ids = [0, *(int(c["id"]) for c in categories)]  # label -> COCO category id
        label_of = {cid: label for label, cid in enumerate(self.category_ids) if label}
        self.classes = ["background", *(str(c["name"]) for c in categories)]
        self.images = [dict(im) for im in data["images"]]
        missing = [im["file_name"] for im in self.images if not (self.folder / im["file_name"]).is_file()]
        if missing:
            raise DataError(f"{path} names {len(missing)} image(s) missing from {self.folder}: "
                            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        index = {int(im["id"]): i for i, im in enumerate(self.images)}
        self.objects: list[list[dict[str, Any]]] = [[] for _ in self.images]
        self.box_report = {"ok": 0, "clipped": 0, "empty": 0}
        for ann in data["annotations"]:
            if int(ann["category_id"]) not in label_of:
                raise DataError(f"{path}: annotation {ann.get('id')} has category id {ann['category_id']}, not "
                                f"among the file's categories ({', '.join(map(str, self.category_ids[1:]))})")
            if int(ann["image_id"]) not in index:
                raise DataError(f"{path}: annotation {ann.get('id')} names image id {ann['image_id']}, which the "
                                f"file does not list")
            i = index[int(ann["image_id"])]
            box, state = clean_box(ann["bbox"], int(self.images[i]["width"]), int(self.images[i]["height"]))
            self.box_report[state] += 1
            if box is not None:
                area = float(ann.get("area") or (box[2] - box[0]) * (box[3] - box[1]))
                self.objects[i].append({"box": box, "label": label_of[int(ann["category_id"])], "area": area,
                                        "iscrowd": bool(ann.get("iscrowd", 0))})
        if self.box_report["clipped"] or self.box_report["empty"]:
            warnings.warn(f"{path}: {self.box_report['clipped']} box(es) reaching outside their image clipped, "
                          f"{self.box_report['empty']} of zero area dropped", stacklevel=2)
        self.transform = transform
        self.channels = transform.channels
        self.mean, self.std = transform.mean, transform.std
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """Image ``index``'s boxes as a target dict (before any transform)."""
        objects, im = self.objects[index], self.images[index]
        return {"boxes": torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([o["label"] for o in objects], dtype=torch.int64),
                "area": torch.tensor([o["area"] for o in objects], dtype=torch.float32),
                "iscrowd": torch.tensor([o["iscrowd"] for o in objects], dtype=torch.bool),
                "image_id": torch.tensor(int(im["id"])),
                "orig_size": torch.tensor([int(im["height"]), int(im["width"])])}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = decode_image(self.folder / self.images[index]["file_name"], self.channels)
        return self.transform(image, self.target(index))
