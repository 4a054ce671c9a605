"""`mnv3 predict` for segmentation and detection runs: tiny runs on tiny scenes (one epoch), a mask and an overlay
at the image's size in the palette's colours matching the model's argmax, detections inside the image, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv3.cli import main
from mobilenetv3.data import SegEvalTransform, decode_image
from mobilenetv3.train import load_run, train
from mobilenetv3.train.predict_dense import PALETTE, blend, colour_mask, predict_detection, predict_segmentation
from seg_helpers import make_fashion_mnist

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, fmnist):
    out = tmp_path_factory.mktemp("seg") / "run"
    train(out=str(out), task="segmentation", model="lraspp_mobilenet_v3_small", width_mult=0.35,
          data="scenes:size=32x32,train=8,val=4,items=2-3", data_dir=fmnist, epochs=1, batch_size=8, resolution=32,
          lr=0.05, quiet=True, tensorboard=False, eval_batch_size=4, threads=1)
    return out


@pytest.fixture(scope="module")
def det_run(tmp_path_factory, fmnist):
    pytest.importorskip("pycocotools")
    out = tmp_path_factory.mktemp("det") / "run"
    train(out=str(out), task="detection", model="ssdlite_mobilenet_v3_small", width_mult=0.35,
          data="scenes:size=64x64,train=8,val=4,items=1-3", data_dir=fmnist, epochs=1, batch_size=8, lr=0.1,
          quiet=True, tensorboard=False, eval_batch_size=4, threads=1)
    return out


@pytest.fixture()
def picture(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(path)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_palette_and_blend():
    assert tuple(PALETTE[0]) == (0, 0, 0) and len({tuple(c) for c in PALETTE}) == 256
    mask = np.array([[0, 1], [2, 0]])
    assert np.array_equal(np.asarray(colour_mask(mask)), PALETTE[mask])
    rgb = np.full((2, 2, 3), 200, np.uint8)
    out = np.asarray(blend(rgb, mask))
    assert (out[0, 0] == 200).all() and (out[0, 1] != 200).any()  # background keeps the image


def test_segmentation_mask_overlay_and_json(seg_run, picture, tmp_path, capsys):
    mask_file, overlay_file = tmp_path / "mask.png", tmp_path / "overlay.png"
    code, out, err = run(capsys, "predict", str(seg_run), str(picture), "--out", str(mask_file), "--overlay",
                         str(overlay_file), "--device", "cpu", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["size"] == [30, 45] and sum(data["shares"].values()) == pytest.approx(1.0)
    mask_img, overlay_img = Image.open(mask_file), Image.open(overlay_file)
    assert mask_img.size == overlay_img.size == (45, 30) and mask_img.mode == "RGB"
    colours = np.asarray(mask_img)
    # the model's argmax with the run's evaluation preprocessing, painted with the palette
    model, config = load_run(seg_run, device="cpu")
    d = config["data"]
    t = SegEvalTransform(mean=tuple(d["mean"]), std=tuple(d["std"]), channels=d["channels"])
    x = t.finish(t.prepare(decode_image(picture, d["channels"])), torch.zeros(30, 45, dtype=torch.int64))[0]
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(model(x[None]), size=(30, 45), mode="bilinear",
                                                 align_corners=False)
    expected = logits.argmax(1)[0].numpy()
    assert np.array_equal(colours, PALETTE[expected])
    assert np.array_equal(predict_segmentation(seg_run, picture, device="cpu")["mask"].numpy(), expected)
    shares = np.bincount(expected.ravel(), minlength=len(d["classes"])) / expected.size
    assert [data["shares"][c] for c in d["classes"]] == pytest.approx(shares.tolist())
    code, out, err = run(capsys, "predict", str(seg_run), str(picture), "--device", "cpu")
    assert code == 0 and "class" in out and "%" in out


def test_detection_boxes_and_json(det_run, picture, tmp_path, capsys):
    boxes_file = tmp_path / "boxes.png"
    code, out, err = run(capsys, "predict", str(det_run), str(picture), "--out", str(boxes_file),
                         "--score-threshold", "0", "--device", "cpu", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert Image.open(boxes_file).size == (45, 30)
    assert data["size"] == [30, 45] and data["detections"]
    classes = json.loads((det_run / "config.json").read_text())["data"]["classes"]
    for det in data["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 45 and 0 <= y1 <= y2 <= 30 and 0 <= det["score"] <= 1
        assert det["label"] in classes[1:] and "category_id" not in det  # the scenes record no COCO ids
    scores = [d["score"] for d in data["detections"]]
    assert scores == sorted(scores, reverse=True)
    high = predict_detection(det_run, picture, device="cpu", score_threshold=0.99)["detections"]
    assert all(d["score"] >= 0.99 for d in high)
    code, out, err = run(capsys, "predict", str(det_run), str(picture), "--device", "cpu")
    assert code == 0, err


def test_bad_input_errors(seg_run, det_run, picture, tmp_path, capsys):
    corrupt, empty = tmp_path / "corrupt.png", tmp_path / "empty.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty.write_bytes(b"")
    for run_dir in (seg_run, det_run):
        for path, words in ((tmp_path / "missing.png", "not found"), (corrupt, "cannot read"), (empty, "empty")):
            code, _, err = run(capsys, "predict", str(run_dir), str(path), "--device", "cpu")
            assert code == 2 and words in err and str(path) in err
    code, _, err = run(capsys, "predict", str(det_run), str(picture), "--overlay", str(tmp_path / "o.png"))
    assert code == 2 and "--overlay" in err
    code, _, err = run(capsys, "predict", str(seg_run), str(picture), str(picture), "--out", str(tmp_path / "m.png"))
    assert code == 2 and "one image" in err
    code, _, err = run(capsys, "predict", str(det_run), str(picture), "--score-threshold", "2")
    assert code == 2 and "threshold" in err
    bad = tmp_path / "bad_run"
    shutil.copytree(seg_run, bad)
    config = json.loads((bad / "config.json").read_text())
    config["data"]["channels"] = 4
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="4 input channels"):
        predict_segmentation(bad, picture, device="cpu")
    with pytest.raises(ValueError, match="segmentation run, not a detection run"):
        predict_detection(seg_run, picture, device="cpu")


def test_a_grey_image_is_read_with_the_runs_channels(seg_run, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 24), 128, np.uint8), "L").save(grey)
    assert predict_segmentation(seg_run, grey, device="cpu")["mask"].shape == (20, 24)


def test_a_run_recording_coco_ids_gives_category_ids(det_run, picture, tmp_path):
    coco = tmp_path / "coco_run"
    shutil.copytree(det_run, coco)
    config = json.loads((coco / "config.json").read_text())
    ids = [0, *range(101, 101 + len(config["data"]["classes"]) - 1)]
    config["data"]["category_ids"] = ids
    (coco / "config.json").write_text(json.dumps(config))
    found = predict_detection(coco, picture, device="cpu", score_threshold=0)["detections"]
    assert found and all(ids[config["data"]["classes"].index(d["label"])] == d["category_id"] for d in found)
