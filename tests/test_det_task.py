"""The detection task: collation, targets with crowds, tiny training runs through the shared loop (the loss
falls, EMA and checkpoints as for every task), `mnv3 train` / `mnv3 eval` printing COCO metrics."""

import json

import pytest
import torch

from mobilenetv3.cli import main
from mobilenetv3.detection import DetSpec, get_det_spec
from mobilenetv3.tasks import get_task
from mobilenetv3.tasks.detection import DetectionTask, collate_detection
from mobilenetv3.train import TrainConfig, evaluate_run, read_metrics, resolve, train
from seg_helpers import make_fashion_mnist

pytest.importorskip("pycocotools")
torch.set_num_threads(1)
SCENES = "scenes:size=64x64,train=32,val=8,items=1-3"


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


def tiny_run(out, fmnist, **options):
    settings = dict(out=str(out), task="detection", model="ssdlite_mobilenet_v3_small", width_mult=0.35,
                    data=SCENES, data_dir=fmnist, epochs=3, batch_size=8, lr=0.1, quiet=True, tensorboard=False,
                    eval_batch_size=8, ema_decay=0.9, threads=1)
    settings.update(options)
    return train(**settings)


def sample(boxes, labels, crowd=None, size=64):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    crowd = torch.zeros(len(labels), dtype=torch.bool) if crowd is None else torch.tensor(crowd)
    return torch.zeros(3, size, size), {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64),
                                        "iscrowd": crowd, "size": torch.tensor([size, size])}


def test_collation_keeps_variable_box_counts_and_crowds_are_ignored_not_background():
    x, targets = collate_detection([sample([[0, 0, 32, 32], [8, 8, 40, 60]], [1, 2]), None, sample([], [])])
    assert x.shape == (2, 3, 64, 64) and [len(t["boxes"]) for t in targets] == [2, 0]
    assert collate_detection([None]) is None
    task = DetectionTask(3, in_channels=3)
    spec = task.adapt_spec(get_det_spec("ssdlite_mobilenet_v3_small", 0.35))
    task.build_model(spec)
    assert spec.num_classes == 3 and task.split_targets(targets, 2) == ([targets[0]], [targets[1]])
    anchors = task.anchors((64, 64), torch.device("cpu"))
    assert anchors.shape[0] == spec.num_anchors(64, 64)
    box = [[0, 0, 64, 64]]
    plain, _ = task.targets_for([sample(box, [1])[1]], anchors, (64, 64))
    crowd, _ = task.targets_for([sample(box, [1], [True])[1]], anchors, (64, 64))
    assert (plain == 1).sum() >= 1 and not (crowd > 0).any()
    assert torch.equal(crowd == -1, plain == 1)  # the anchors a box would take are ignored on a crowd


def test_a_tiny_run_learns_and_eval_prints_coco_metrics(tmp_path, fmnist, capsys):
    out = tmp_path / "run"
    result = tiny_run(out, fmnist, log_every_steps=1, epochs=4)
    steps = [r["train_loss"] for r in read_metrics(out, "step")]
    assert len(steps) == 16 and sum(steps[-4:]) < 0.8 * sum(steps[:4])  # the loss falls (about 30%)
    last = result["last_epoch"]
    assert {"val_map", "val_ap50", "val_ap75", "ema_val_map", "train_cls_loss", "train_box_loss"} <= set(last)
    assert result["best_map"] == max(r["ema_val_map"] for r in read_metrics(out))
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["task"] == "detection" and config["train"]["recipe"] == "det-scenes"
    assert config["data"]["classes"][0] == "background" and len(config["data"]["classes"]) == 11
    spec = DetSpec.load(out / "spec.json")
    assert spec.num_classes == 11 and spec.backbone.in_channels == 3
    evaluated = evaluate_run(out, device="cpu")
    assert evaluated["map"] == pytest.approx(last["ema_val_map"]) and evaluated["count"] == 8
    assert evaluated["boxes"] > 0 and len(evaluated["coco_results"]) == evaluated["detections"]
    results = tmp_path / "results.json"
    assert main(["eval", str(out), "--device", "cpu", "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "mAP@[.5:.95]" in printed and "AP50" in printed and "AP75" in printed and "AP medium" in printed
    written = json.loads(results.read_text())
    assert len(written) == evaluated["detections"] and {"image_id", "category_id", "bbox", "score"} == set(written[0])


def test_mnv3_train_for_detection_resumes(tmp_path, fmnist):
    out = tmp_path / "cli"
    args = ["train", "--task", "detection", "--model", "ssdlite_mobilenet_v3_small", "--width-mult", "0.35",
            "--data", SCENES, "--data-dir", fmnist, "--batch-size", "16", "--out", str(out), "--quiet",
            "--no-tensorboard", "--limit-train", "16", "--threads", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]


def test_data_model_and_task_must_agree(tmp_path, fmnist):
    with pytest.raises(ValueError, match="the detection task needs detection data"):
        resolve(TrainConfig(out="x", model="m", task="detection", data="fashion-mnist"))
    with pytest.raises(ValueError, match="is detection data: give --task detection"):
        resolve(TrainConfig(out="x", model="m", data="coco:/somewhere"))
    config = resolve(TrainConfig(out="x", model="m", task="detection"))
    assert config.data == "scenes" and config.recipe == "det-scenes"
    assert resolve(TrainConfig(out="x", model="m", task="detection", data="coco:/x")).recipe == "det-coco"
    with pytest.raises(KeyError, match="unknown detection model .mobilenet_v3_small."):
        tiny_run(tmp_path / "a", fmnist, model="mobilenet_v3_small", width_mult=1.0)
    with pytest.raises(ValueError, match="not available for detection"):
        tiny_run(tmp_path / "b", fmnist, qat=True)
    assert get_task("detection") is DetectionTask


def test_a_run_on_a_coco_folder_records_its_category_ids(tmp_path, fmnist):
    from mobilenetv3.data import load_detection_dataset, write_scenes_coco

    root = tmp_path / "coco"
    for split, n in (("train", 8), ("val", 4)):
        scenes = load_detection_dataset(f"scenes:size=64x64,{split}={n},items=1-3", split, train=False,
                                        data_dir=fmnist)
        write_scenes_coco(scenes, root)
    out = tmp_path / "run"
    tiny_run(out, fmnist, data=f"coco:{root}", epochs=1, resolution=64)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["recipe"] == "det-coco" and config["data"]["name"] == f"coco:{root.resolve()}"
    assert config["data"]["category_ids"] == list(range(11))
    evaluated = evaluate_run(out, device="cpu")
    assert evaluated["count"] == 4 and evaluated["boxes"] > 0 and evaluated["map"] is not None
