"""The segmentation task: its loss and evaluation on hand-made logits, and tiny training runs through the shared
loop (the loss falls, a resumed run ends where an uninterrupted one does, `mnv3 train` and `mnv3 eval`)."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mobilenetv3.cli import main
from mobilenetv3.segmentation import SegSpec
from mobilenetv3.tasks import get_task
from mobilenetv3.tasks.segmentation import SegmentationTask
from mobilenetv3.train import TrainConfig, evaluate_run, read_metrics, resolve, train
from mobilenetv3.train.run_dir import TIMING_KEYS
from seg_helpers import make_fashion_mnist

SCENES = "scenes:size=32x64,train=32,val=8,items=2-4"


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


def tiny_run(out, fmnist, **options):
    settings = dict(out=str(out), task="segmentation", model="lraspp_mobilenet_v3_small", width_mult=0.35,
                    data=SCENES, data_dir=fmnist, epochs=3, batch_size=8, resolution=32, lr=0.05, quiet=True,
                    tensorboard=False, eval_batch_size=8, ema_decay=0.9)
    settings.update(options)
    return train(**settings)


class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_loss_and_evaluation_on_hand_made_logits():
    task = SegmentationTask(3, classes=["bg", "a", "b"])
    # predictions at half the masks' size: each logit pixel covers 2x2 mask pixels after resizing
    predicted = torch.tensor([[0, 1], [2, 2]])
    logits = 10.0 * nn.functional.one_hot(predicted, 3).permute(2, 0, 1)[None].float()
    mask = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 0, 0], [2, 2, 0, 0]]])
    result = task.evaluate(Fixed(logits), [(torch.zeros(1, 3, 4, 4), mask)])
    # rows true, columns predicted: bg: 4 right, 4 predicted b; a: 3 right; b: 4 right
    assert result["confusion"] == [[4, 0, 4], [0, 3, 0], [0, 0, 4]]
    assert result["per_class"] == pytest.approx({"bg": 50.0, "a": 100.0, "b": 50.0})
    assert result["miou"] == pytest.approx(200 / 3) and result["pixel_acc"] == pytest.approx(100 * 11 / 15)
    assert result["count"] == 1 and result["pixels"] == 15
    loss = task.loss(logits, mask)
    assert float(loss) == pytest.approx(result["loss"], rel=1e-5) and float(loss) > 1  # the ignored pixel is left out
    stats = task.step_stats(logits, mask)
    assert (int(stats["correct"]), int(stats["pixels"])) == (11, 15)


def test_a_tiny_run_learns_and_records_a_segmentation_run(tmp_path, fmnist):
    out = tmp_path / "run"
    result = tiny_run(out, fmnist, log_every_steps=1, epochs=4)
    steps = [r["train_loss"] for r in read_metrics(out, "step")]
    assert len(steps) == 16 and sum(steps[-4:]) < 0.5 * sum(steps[:4])  # the loss falls
    last = result["last_epoch"]
    assert {"val_miou", "val_pixel_acc", "ema_val_miou", "train_pixel_acc", "best_miou"} <= set(last)
    assert result["best_miou"] == max(r["ema_val_miou"] for r in read_metrics(out))
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["task"] == "segmentation" and config["train"]["recipe"] == "scenes"
    assert config["data"]["classes"][0] == "background" and len(config["data"]["classes"]) == 11
    spec = SegSpec.load(out / "spec.json")
    assert spec.num_classes == 11 and spec.backbone.in_channels == 3 and spec.head == "lraspp"
    evaluated = evaluate_run(out, device="cpu")
    assert evaluated["miou"] == pytest.approx(last["ema_val_miou"]) and evaluated["count"] == 8
    assert list(evaluated["per_class"]) == config["data"]["classes"]


def test_a_run_stopped_mid_epoch_and_resumed_ends_where_an_uninterrupted_one_does(tmp_path, fmnist):
    whole, part = tmp_path / "whole", tmp_path / "part"
    tiny_run(whole, fmnist)

    def stop_after_epoch_1(message):  # SIGTERM as the first epoch ends: the run stops after one more step
        if message.startswith("epoch 1/"):
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = tiny_run(part, fmnist, quiet=False, log=stop_after_epoch_1)
    assert stopped["interrupted"] and stopped["global_step"] == 5
    resumed = tiny_run(part, fmnist, resume=True)
    assert not resumed["interrupted"] and resumed["global_step"] == 12

    def strip(records):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]

    assert strip(read_metrics(part)) == strip(read_metrics(whole))

    def weights(run):
        pointer = json.loads((Path(run) / "checkpoint.json").read_text())
        return load_file(Path(run) / pointer["weights"])

    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mnv3_train_and_eval_for_segmentation(tmp_path, fmnist, capsys):
    out = tmp_path / "cli"
    code = main(["train", "--task", "segmentation", "--model", "lraspp_mobilenet_v3_small", "--width-mult", "0.35",
                 "--data", SCENES, "--data-dir", fmnist, "--epochs", "1", "--batch-size", "8", "--resolution", "32",
                 "--out", str(out), "--quiet", "--no-tensorboard"])
    assert code == 0
    code = main(["eval", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "mIoU" in printed and "pixel accuracy" in printed
    assert "background" in printed and "Ankle boot" in printed and "IoU" in printed


def test_data_model_and_task_must_agree(tmp_path, fmnist):
    with pytest.raises(ValueError, match="--data scenes is segmentation data: give --task segmentation"):
        resolve(TrainConfig(out="x", model="mobilenet_v3_small", data="scenes"))
    with pytest.raises(ValueError, match="the segmentation task needs segmentation data"):
        resolve(TrainConfig(out="x", model="m", task="segmentation", data="fashion-mnist"))
    assert resolve(TrainConfig(out="x", model="m", task="segmentation")).data == "scenes"
    with pytest.raises(KeyError, match="unknown segmentation model 'mobilenet_v3_small'"):
        tiny_run(tmp_path / "a", fmnist, model="mobilenet_v3_small", width_mult=1.0)
    with pytest.raises(ValueError, match="not available for segmentation"):
        tiny_run(tmp_path / "b", fmnist, qat=True)
    assert get_task("segmentation") is SegmentationTask
