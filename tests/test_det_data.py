"""Detection data: scene boxes from visible pixels, the COCO folder (written from scenes and hand-made), its
checks, and the joint image/box transforms."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv3.data import (
    CocoDetection,
    DataError,
    DetEvalTransform,
    DetTrainTransform,
    load_detection_dataset,
    scenes_coco,
    write_scenes_coco,
)
from mobilenetv3.data.scenes import visible_boxes
from seg_helpers import make_fashion_mnist

torch.set_num_threads(1)
SCENES = "scenes:size=48x64,train=6,val=4,items=2-5"
STATS = dict(mean=(0.5,), std=(0.25,), channels=3)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


def test_visible_boxes_follow_what_is_left_after_overlaps():
    from mobilenetv3.data.scenes import Placement

    owner = torch.full((10, 10), -1)
    owner[1:5, 1:7] = 0  # item 0: 24 of its 36 pixels, less the 2 item 1 covers
    owner[4:9, 5:9] = 1  # item 1 painted later, covering part of item 0
    owner[0, 0] = 2  # item 2: 1 of 20 pixels left: dropped
    p = [Placement(k + 1, 0, 0, 0, 4, 4, (1.0, 1.0, 1.0), False) for k in range(3)]
    boxes, labels, area = visible_boxes(owner, p, [36, 20, 20], 0.25)
    assert boxes.tolist() == [[1.0, 1.0, 7.0, 5.0], [5.0, 4.0, 9.0, 9.0]]
    assert labels.tolist() == [1, 2] and area.tolist() == [22.0, 20.0]


def test_scene_boxes_enclose_exactly_their_labelled_pixels(fmnist):
    ds = load_detection_dataset(SCENES, "train", train=False, data_dir=fmnist, **STATS)
    for i in range(3):
        image, mask, _ = ds.scene(i)
        _, target = ds.objects(i)
        assert len(target["boxes"]) >= 1
        for (x1, y1, x2, y2), label in zip(target["boxes"].long().tolist(), target["labels"].tolist(), strict=True):
            inside = mask[y1:y2, x1:x2] == label
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        x, t = ds[i]
        assert x.shape == (3, 48, 64) and torch.equal(t["boxes"], target["boxes"]) and int(t["image_id"]) == i
        assert t["size"].tolist() == [48, 64] and not t["iscrowd"].any()
    assert ds.classes[0] == "background" and len(ds.classes) == 11


def test_scenes_written_as_coco_read_back_the_same(tmp_path, fmnist):
    ds = load_detection_dataset(SCENES, "val", train=False, data_dir=fmnist, **STATS)
    path = write_scenes_coco(ds, tmp_path / "coco")
    assert path == tmp_path / "coco" / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    assert data == scenes_coco(ds) and len(data["images"]) == 4 and data["categories"][0]["id"] == 1
    coco = load_detection_dataset(f"coco:{tmp_path / 'coco'}", "val", train=False, size=(48, 64), **STATS)
    assert coco.classes == ds.classes and coco.category_ids == list(range(11))
    for i in range(4):
        (x, t), (xs, ts) = coco[i], ds[i]
        assert torch.allclose(t["boxes"], ts["boxes"]) and torch.equal(t["labels"], ts["labels"])
        assert torch.allclose(x, xs, atol=0.01 / 0.25)  # 8-bit PNG rounding


def make_coco(root: Path, annotations, images=None, categories=None, files=("a.png", "b.png")):
    (root / "train").mkdir(parents=True, exist_ok=True)
    for name in files:
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "train" / name)
    images = images or [{"id": 5, "file_name": "a.png", "height": 20, "width": 30},
                        {"id": 9, "file_name": "b.png", "height": 20, "width": 30}]
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}]
    (root / "annotations").mkdir(exist_ok=True)
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def ann(i, image_id, bbox, cat=3, crowd=0):
    return {"id": i, "image_id": image_id, "bbox": bbox, "category_id": cat, "iscrowd": crowd}


def test_coco_folder_labels_crowds_empty_images_and_box_cleaning(tmp_path):
    root = make_coco(tmp_path, [ann(1, 5, [2, 3, 4, 5], cat=3), ann(2, 5, [20, 10, 20, 20], cat=1),
                                ann(3, 5, [1, 1, 0, 4]), ann(4, 5, [0, 0, 5, 5], crowd=1)])
    with pytest.warns(UserWarning, match="1 box.* clipped, 1 of zero area dropped"):
        ds = CocoDetection(root, "train", transform=DetEvalTransform(**STATS))
    assert ds.classes == ["background", "dog", "cat"] and ds.category_ids == [0, 1, 3]
    assert ds.box_report == {"ok": 2, "clipped": 1, "empty": 1}
    _, t = ds[0]
    assert t["boxes"].tolist() == [[2, 3, 6, 8], [20, 10, 30, 20], [0, 0, 5, 5]]
    assert t["labels"].tolist() == [2, 1, 2] and t["iscrowd"].tolist() == [False, False, True]
    _, empty = ds[1]  # an image without boxes is kept
    assert empty["boxes"].shape == (0, 4) and int(empty["image_id"]) == 9


def test_coco_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="category id 7"):
        CocoDetection(make_coco(tmp_path / "a", [ann(1, 5, [1, 1, 2, 2], cat=7)]), "train",
                      transform=DetEvalTransform(**STATS))
    with pytest.raises(DataError, match="image id 6, which the file does not list"):
        CocoDetection(make_coco(tmp_path / "b", [ann(1, 6, [1, 1, 2, 2])]), "train",
                      transform=DetEvalTransform(**STATS))
    with pytest.raises(DataError, match="1 image.* missing .*b.png"):
        CocoDetection(make_coco(tmp_path / "c", [], files=("a.png",)), "train", transform=DetEvalTransform(**STATS))
    with pytest.raises(DataError, match="no COCO annotation file"):
        CocoDetection(tmp_path / "nowhere", "train", transform=DetEvalTransform(**STATS))
    with pytest.raises(DataError, match="expected scenes"):
        load_detection_dataset("cityscapes:x", "train", train=True)


def target(boxes, labels):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {"boxes": boxes, "labels": torch.tensor(labels), "area": area,
            "iscrowd": torch.zeros(len(labels), dtype=torch.bool)}


def test_train_transform_keeps_boxes_on_their_pixels():
    # a white rectangle on black: after any scale, crop and flip the box must still frame the white pixels
    img = torch.zeros(3, 40, 60)
    img[:, 10:30, 20:44] = 1.0
    t = target([[20, 10, 44, 30]], [4])
    transform = DetTrainTransform(crop=(32, 32), scale=(0.6, 1.4), hflip=0.5, min_kept=0.0, mean=(0.0,),
                                  std=(1.0,), channels=3)
    generator = torch.Generator().manual_seed(0)
    seen_flip = 0
    for _ in range(20):
        x, out = transform(img, t, generator=generator)
        assert x.shape == (3, 32, 32) and out["size"].tolist() == [32, 32]
        if len(out["boxes"]) == 0:
            continue
        x1, y1, x2, y2 = out["boxes"][0].tolist()
        white = x[0] > 0.5
        ys, xs = torch.nonzero(white, as_tuple=True)
        assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
        assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
        assert out["area"][0] == pytest.approx((x2 - x1) * (y2 - y1), rel=0.01)
        seen_flip += x1 > 32 - x2
    assert seen_flip  # some flipped crops have the box on the right


def test_crop_drops_boxes_mostly_cut_off_and_eval_resize_maps_back():
    transform = DetTrainTransform(crop=(10, 10), scale=(1.0, 1.0), hflip=0.0, min_kept=0.5, **STATS)
    kept = transform.crop_boxes(target([[0, 0, 4, 4], [8, 8, 14, 14], [12, 12, 16, 16]], [1, 2, 3]), 0, 0)
    assert kept["boxes"].tolist() == [[0, 0, 4, 4]] and kept["labels"].tolist() == [1]  # 4/36 kept; outside
    from mobilenetv3.data.det_transforms import to_original

    evaluate = DetEvalTransform(size=(20, 20), **STATS)
    x, out = evaluate(torch.zeros(3, 40, 80), dict(target([[8, 4, 40, 20]], [1]), orig_size=torch.tensor([40, 80])))
    assert x.shape == (3, 20, 20) and out["boxes"].tolist() == [[2, 2, 10, 10]]
    assert to_original(out["boxes"], out["size"], out["orig_size"]).tolist() == [[8, 4, 40, 20]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DetEvalTransform(**STATS)
