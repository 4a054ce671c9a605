"""The composed scenes as detection data: on the fly (:class:`SceneDetection`) or written out as a COCO folder
(:func:`write_scenes_coco`), both from :meth:`~.scenes.FashionScenes.objects` (one generator for segmentation and
detection).

Categories: the ten Fashion-MNIST classes with COCO ids 1..10, so labels and category ids coincide. Image ids are
the scene indices. Scene boxes are never crowds; ``area`` is the garment's visible pixel count (COCO's segment
area, which sorts objects into small / medium / large).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .fashion_mnist import CLASSES
from .scenes import FashionScenes


class SceneDetection(FashionScenes):
    """One split of the scenes with boxes; items are ``transform(image, target)`` (:mod:`.det_transforms`), the
    target as :class:`~.coco.CocoDetection`'s."""

    def scene_target(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.objects(index)
        target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.bool)
        target["image_id"] = torch.tensor(index)
        target["orig_size"] = torch.tensor(image.shape[-2:])
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.transform(*self.scene_target(index))


def coco_categories() -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "garment"} for i, name in enumerate(CLASSES)]


def annotation(ann_id: int, image_id: int, box: list[float], label: int, area: float, crowd: bool = False
               ) -> dict[str, Any]:
    x1, y1, x2, y2 = box
    return {"id": ann_id, "image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": area, "iscrowd": int(crowd)}


def scenes_coco(scenes: FashionScenes, indices: Any = None) -> dict[str, Any]:
    """The COCO instances dict of ``scenes`` (scene ``i`` is image id ``i``, file ``{i:06d}.png``)."""
    images, annotations = [], []
    h, w = scenes.config.size
    for i in range(len(scenes)) if indices is None else indices:
        _, target = scenes.objects(i)
        images.append({"id": i, "file_name": f"{i:06d}.png", "height": h, "width": w})
        for box, label, area in zip(target["boxes"].tolist(), target["labels"].tolist(), target["area"].tolist(),
                                    strict=True):
            annotations.append(annotation(len(annotations) + 1, i, box, label, area))
    return {"images": images, "annotations": annotations, "categories": coco_categories()}


def write_scenes_coco(scenes: FashionScenes, root: str | os.PathLike) -> Path:
    """``scenes`` as a COCO folder: ``root/<split>/{i:06d}.png`` and ``root/annotations/instances_<split>.json``;
    returns the annotation file."""
    from PIL import Image

    root = Path(root)
    folder = root / scenes.split
    folder.mkdir(parents=True, exist_ok=True)
    data = scenes_coco(scenes)
    for im in data["images"]:
        image, _ = scenes.objects(im["id"])
        pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / im["file_name"])
    path = root / "annotations" / f"instances_{scenes.split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
