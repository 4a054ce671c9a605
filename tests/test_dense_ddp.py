"""Segmentation and detection under several processes: the metrics' own collective steps (the confusion matrix
summed by an all-reduce, the ground truth and detections gathered before COCO scoring) in two real gloo processes
on hand-made shares with known figures, and whole runs under torchrun whose recorded validation figures are the
ones one process computes on the saved checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mobilenetv3.tasks.det_metrics import CocoAccumulator
from mobilenetv3.tasks.seg_metrics import ConfusionMatrix
from mobilenetv3.train import evaluate_run, read_metrics
from seg_helpers import make_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "segmentation": (["--model", "lraspp_mobilenet_v3_small", "--resolution", "32",
                      "--data", "scenes:size=32x64,train=16,val=9,items=2-4"], "miou"),
    "detection": (["--model", "ssdlite_mobilenet_v3_small", "--data", "scenes:size=64x64,train=16,val=9,items=1-3"],
                  "map"),
}


BOXES = torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 20.0, 180.0, 90.0]])
# one class; image 1: its box found; image 2: one of its two boxes found. Together 3 boxes, 2 found with
# precision 1: 67 of COCO's 101 recall points (0 .. 0.66); image 1 alone would score 1.0, image 2 alone 51/101
SHARES = {0: (1, BOXES[:1], BOXES[:1]), 1: (2, BOXES, BOXES[1:])}
MASKS = {0: (torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 2]])),  # (truth, predicted) per rank
         1: (torch.tensor([[1, 1, 0]]), torch.tensor([[1, 0, 0]]))}


def collective_share(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        image, truth, found = SHARES[rank]
        acc = CocoAccumulator(2)
        acc.add_truth(image, (200, 200), truth, torch.ones(len(truth), dtype=torch.int64))
        acc.add_detections(image, found, torch.full((len(found),), 0.9), torch.ones(len(found), dtype=torch.int64))
        acc.gather()
        matrix = ConfusionMatrix(3)
        matrix.update(MASKS[rank][1], MASKS[rank][0])
        matrix.reduce(dist.all_reduce)
        torch.save({"map": acc.evaluate()["map"], "matrix": matrix.matrix}, f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_metrics_reduce_across_two_real_processes(tmp_path):
    pytest.importorskip("pycocotools")
    mp.spawn(collective_share, args=(str(tmp_path / "init"), str(tmp_path / "rank")), nprocs=2, join=True)
    whole = ConfusionMatrix(3)
    for truth, predicted in MASKS.values():
        whole.update(predicted.flatten(), truth.flatten())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["map"] == pytest.approx(67 / 101)  # every process scores the whole split
        assert torch.equal(got["matrix"], whole.matrix) and int(got["matrix"].sum()) == 7


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


@pytest.mark.parametrize("task", list(CASES))
def test_two_processes_record_what_one_process_computes_on_the_checkpoint(tmp_path, fmnist, task):
    """9 validation images: shares of 5 and 4. Evaluated one image per batch, since a detection batch's loss is
    normalised by the batch's matched anchors (the val loss depends on how the images are batched). The tiny
    detector scores 0 mAP here; the loss (summed over both shares) and the test above carry the check."""
    if task == "detection":
        pytest.importorskip("pycocotools")
    options, metric = CASES[task]
    out = tmp_path / "run"
    args = ["train", "--task", task, *options, "--width-mult", "0.35", "--data-dir", fmnist, "--epochs", "2",
            "--batch-size", "8", "--eval-batch-size", "1", "--lr", "0.1", "--ema-decay", "0.5", "--threads", "1",
            "--quiet", "--no-tensorboard", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "mobilenetv3", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["derived"]["world_size"] == 2
    last = read_metrics(out)[-1]
    evaluated = evaluate_run(out, device="cpu")  # one process, the whole split, the saved EMA weights
    assert evaluated["count"] == 9
    assert evaluated[metric] == pytest.approx(last[f"ema_val_{metric}"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(last["ema_val_loss"], rel=1e-5)
    raw = evaluate_run(out, device="cpu", weights="model")
    assert raw[metric] == pytest.approx(last[f"val_{metric}"], abs=1e-6)
    assert raw["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
