"""The task seam: the registry, classification as a task, and the training loop asking its task for the loss and
metrics (a run recorded before tasks existed still reads and resumes as classification)."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import mobilenetv3.tasks as tasks
from mobilenetv3 import ArchSpec, BlockSpec
from mobilenetv3.tasks import TASKS, Task, get_task
from mobilenetv3.tasks.classification import ClassificationTask
from mobilenetv3.train import TrainConfig, evaluate, read_metrics, resolve, train
from mobilenetv3.train.config import merge_resume_config


def tiny_spec() -> ArchSpec:
    return ArchSpec(name="tiny", blocks=(BlockSpec(3, 16, 16, se=True, stride=2),
                                         BlockSpec(3, 32, 24, act="hswish", stride=2)),
                    stem_channels=8, last_channels=32, head_channels=48, in_channels=3, resolution=16)


class Blobs(Dataset):
    """Three classes of 16x16 grey images, one brightness each, with noise."""

    classes = ["dark", "mid", "light"]
    channels = 1
    mean = (0.5,)
    std = (0.25,)

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(3)
        self.labels = torch.arange(n) % 3
        self.images = (0.2 + 0.3 * self.labels.float())[:, None, None, None] + 0.05 * torch.randn(
            n, 1, 16, 16, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def small_run(out, **options):
    settings = dict(out=str(out), model="mobilenet_v3_small", width_mult=0.35, epochs=1, batch_size=16,
                    resolution=16, lr=0.01, quiet=True, eval_batch_size=64, tensorboard=False)
    settings.update(options)
    return train(train_set=Blobs(48), val_set=Blobs(24), **settings)


class FixedLogits(nn.Module):
    """A "model" whose output for batch item i is row i of the logits given (in loader order)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return out


# -- the registry -----------------------------------------------------------------------------------------------
def test_registry_names_classification_and_rejects_unknown_tasks():
    assert get_task("classification") is ClassificationTask
    assert get_task(None) is ClassificationTask  # the default, also for runs recorded before tasks existed
    assert issubclass(ClassificationTask, Task) and ClassificationTask.name == "classification"
    with pytest.raises(ValueError,
                       match=r"unknown task 'tracking' \(choose from classification, segmentation, detection\)"):
        get_task("tracking")
    with pytest.raises(ValueError, match="unknown task"):
        resolve(TrainConfig(out="x", model="m", task="tracking"))
    assert resolve(TrainConfig(out="x", model="m")).task == "classification"
    assert resolve(TrainConfig(out="x", model="m", task=None)).task == "classification"


# -- classification ---------------------------------------------------------------------------------------------
def test_classification_loss_and_step_stats_are_the_loops_of_before():
    task = ClassificationTask.for_run({"classes": ["a", "b", "c", "d"], "channels": 3}, {"label_smoothing": 0.1})
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    # bit for bit what nn.CrossEntropyLoss(label_smoothing=...) on float logits gave
    assert torch.equal(task.loss(logits, labels), nn.CrossEntropyLoss(label_smoothing=0.1)(logits.float(), labels))
    assert not torch.equal(task.loss(logits, labels), ClassificationTask(4).loss(logits, labels))
    correct = int((logits.argmax(1) == labels).sum())
    assert task.step_stats(logits, labels) == {"correct": correct}
    assert task.train_metrics({"loss": 1.0, "correct": 3, "count": 4}, 4) == {"train_acc": 75.0}


def test_classification_spec_head_and_resume_check():
    task = ClassificationTask.for_run({"classes": ["a", "b"], "channels": 1}, {})
    spec = task.adapt_spec(tiny_spec())
    assert (spec.in_channels, spec.num_classes) == (1, 2)
    task.check_spec(spec)
    with pytest.raises(ValueError, match=r"the data has 1 channel\(s\) and 2 classes; the run's spec 3 and 1000"):
        task.check_spec(tiny_spec())
    model = task.build_model(spec)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)


def test_classification_evaluation_counts():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 5.0, 1.0], [5.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 2])  # the third is predicted 0: wrong
    batches = [(torch.zeros(2, 1, 4, 4), labels[:2]), None, (torch.zeros(2, 1, 4, 4), labels[2:])]
    named = ClassificationTask(3, classes=["a", "b", "c"]).evaluate(FixedLogits(logits), batches)
    assert named["count"] == 4 and named["top1"] == 75.0 and named["top5"] == 100.0  # k = 3 of 3 classes
    assert named["per_class"] == {"a": 100.0, "b": 50.0, "c": 100.0}
    assert named["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert named["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    # train.evaluate is the same evaluation, per-class figures as a list (no class names given)
    plain = evaluate(FixedLogits(logits), batches, 3)
    assert plain["per_class"] == [100.0, 50.0, 100.0]
    assert {k: v for k, v in plain.items() if k != "per_class"} == {
        k: v for k, v in named.items() if k != "per_class"}
    reduced = []
    ClassificationTask(3).evaluate(FixedLogits(logits), batches, reduce=reduced.append)
    assert [t.shape for t in reduced] == [(9,), (2,)]  # the confusion counts and the loss/top-5 sums


# -- the loop asks its task -------------------------------------------------------------------------------------
class CountingTask(ClassificationTask):
    """Classification ranked by top-5, with its own step statistic and a loss that counts its calls."""

    name = "counting"
    primary_metric = "top5"
    eval_metrics = ("loss", "top5")
    step_keys = ("correct", "seen")
    loss_calls = 0

    def loss(self, outputs, targets):
        CountingTask.loss_calls += 1
        return super().loss(outputs, targets)

    def step_stats(self, outputs, targets):
        return {**super().step_stats(outputs, targets), "seen": torch.tensor(len(targets))}

    def train_metrics(self, totals, count):
        return {**super().train_metrics(totals, count), "train_seen": totals["seen"]}

    def describe(self, record):
        return f"top-5 {record['val_top5']:.2f}%"


def test_the_loop_takes_loss_metrics_and_best_score_from_its_task(tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "counting", "test_tasks:CountingTask")
    CountingTask.loss_calls = 0
    result = small_run(tmp_path / "run", task="counting", accum_steps=2, log_every_steps=1)
    assert CountingTask.loss_calls == 3 * 2  # 3 steps of 2 micro-batches
    epoch = read_metrics(tmp_path / "run")[-1]
    assert {"val_loss", "val_top5", "ema_val_top5", "best_top5", "train_seen"} <= set(epoch)
    assert "val_top1" not in epoch and "best_top1" not in epoch
    assert epoch["train_seen"] == 48 and [r["train_seen"] for r in read_metrics(tmp_path / "run", "step")] == [16] * 3
    assert result["best_top5"] == epoch["ema_val_top5"] and "best_top1" not in result
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["task"] == "counting"


def test_a_run_recorded_before_tasks_resumes_as_classification(tmp_path):
    out = tmp_path / "run"
    first = small_run(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    assert config["train"]["task"] == "classification" and "best_top1" in first
    del config["train"]["task"]  # as main wrote it before the task seam
    config_path.write_text(json.dumps(config))
    resumed = small_run(out, resume=True, epochs=2)
    assert resumed["last_epoch"]["epoch"] == 2 and resumed["best_top1"] is not None
    assert json.loads(config_path.read_text())["train"]["task"] == "classification"
    with pytest.raises(ValueError, match="--resume: task is 'classification' in this run, got 'counting'"):
        merge_resume_config(config["train"], TrainConfig(out=str(out), resume=True, task="counting"))


def test_cli_task_option(capsys):
    from mobilenetv3.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--task", "tracking", "--out", "x"])
    assert "invalid choice: 'tracking'" in capsys.readouterr().err
    assert tuple(TASKS) == ("classification", "segmentation", "detection")


def test_named_data_is_loaded_and_evaluated_by_the_task(tmp_path, make_colour_folder):
    """Classification's data by name goes through ClassificationTask.load_data / eval_data (the seam the
    segmentation task plugs into); a run directory is rebuilt and scored by its recorded task."""
    from mobilenetv3.train import evaluate_run
    from mobilenetv3.train.evaluate import load_run, run_eval_dataset

    folder = make_colour_folder({"red": (200, 30, 30), "blue": (30, 30, 200)}, train=8, val=4, noise=10)
    out = tmp_path / "run"
    train(out=str(out), model="mobilenet_v3_small", width_mult=0.35, data=folder, epochs=1, batch_size=8,
          resolution=16, lr=0.01, quiet=True, eval_batch_size=8, tensorboard=False)
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["classes"] == ["blue", "red"] and config["data"]["train_size"] == 16
    dataset = run_eval_dataset(config["data"], task="classification")
    assert len(dataset) == 8 and dataset[0][0].shape == (3, 16, 16)
    model, _ = load_run(out)
    assert type(model).__name__ == "MobileNetV3"
    assert evaluate_run(out, device="cpu")["count"] == 8
