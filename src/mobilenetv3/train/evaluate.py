"""Evaluation and prediction: of a model on a loader, and of a run directory with nothing else given.

A run is evaluated, and its model built, by its task (``config.json``'s ``train.task``, classification for runs
recorded before tasks existed); segmentation reports mIoU (:mod:`mobilenetv3.tasks.segmentation`), detection COCO
mAP (:mod:`mobilenetv3.tasks.detection`). An exported ONNX file of a classification or segmentation run (float or
int8) is evaluated the same way: the task's evaluation fed by the file
(:class:`~mobilenetv3.deploy.evaluate.FileModel`) instead of the PyTorch model.
Classification: accuracies are percentages (0-100); ``per_class`` maps each class name to its recall (the
percentage of its images classified correctly); ``confusion[true][predicted]`` counts images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..tasks import autocast_context, get_task, to_device
from ..tasks.classification import ClassificationTask
from . import distributed
from .checkpoint import CheckpointError, checkpoint_paths, load_weights
from .config import WEIGHTS

# autocast_context and to_device live with the tasks (every task runs its model on batches the same way); named
# here too, where they were first.
__all__ = ["FILE_TASKS", "autocast_context", "evaluate", "evaluate_run", "is_run_dir", "load_network", "load_run",
           "predict",
           "read_run_config", "resolve_device", "run_eval_dataset", "to_device"]


def evaluate(model: nn.Module, loader: Any, num_classes: int, *, device: torch.device | str = "cpu",
             channels_last: bool = False, amp: bool = False, dist: distributed.DistInfo | None = None
             ) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%), mean cross-entropy, per-class accuracy and the confusion matrix of a classifier
    (:meth:`~mobilenetv3.tasks.classification.ClassificationTask.evaluate`).

    ``loader`` yields ``(images, labels)`` (``None`` batches, from skipped images, are ignored). Under
    DistributedDataParallel each process evaluates its shard and the counts are summed over processes.
    """
    dist = dist or distributed.DistInfo()
    return ClassificationTask(num_classes).evaluate(model, loader, device=device, channels_last=channels_last,
                                                    amp=amp, reduce=lambda t: distributed.all_reduce_tensor(t, dist))


# -- run directories ----------------------------------------------------------------------------------------
def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run directory."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a training run: {path.name} not found")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or "data" not in config or "train" not in config:
        raise CheckpointError(f"{path} is not a training-run config (no 'train'/'data' sections)")
    return config


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def load_run(run_dir: str | os.PathLike, checkpoint: str = "last", weights: str = "ema",
             device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run (eval mode) and its config: ``spec.json`` + the ``last``/``best`` checkpoint,
    built by the run's task (a :class:`MobileNetV3` for classification)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    config = read_run_config(run_dir)
    spec_path = Path(run_dir) / "spec.json"
    if not spec_path.is_file():
        raise CheckpointError(f"{run_dir} has no spec.json")
    task = get_task(config["train"].get("task"))
    model = task.run_model(spec_path, config["data"], config["train"])
    load_weights(model, checkpoint_paths(run_dir, checkpoint), weights)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval(), config


def run_eval_dataset(data_info: dict[str, Any], split: str | None = None, *, data: str | None = None,
                     data_dir: str | None = None, task: str | None = None) -> Any:
    """A run's evaluation data from its recorded ``config["data"]``: the run's preprocessing (resolution,
    channels, statistics, crop) on ``split`` (default: the run's validation split, ``"holdout"`` for a run with
    held-out training images), of the run's data or ``data``; loaded by ``task`` (default classification)."""
    return get_task(task).eval_data(data_info, split or data_info.get("val_split", "val"), data=data,
                                    data_dir=data_dir)


FILE_TASKS = ("classification", "segmentation")  # the tasks whose exported files `evaluate_run(file=...)` scores


def evaluate_run(run_dir: str | os.PathLike, *, data: str | None = None, data_dir: str | None = None,
                 split: str | None = None, weights: str = "ema", checkpoint: str = "last",
                 batch_size: int | None = None, device: str | None = "auto", workers: int = 0,
                 limit: int | None = None, file: str | os.PathLike | None = None,
                 runtime: str = "onnxruntime") -> dict[str, Any]:
    """Evaluate a run's checkpoint on its validation data (or ``data``), with the run's own preprocessing.

    ``split``: default the run's validation split (``"holdout"`` for a run with held-out training images, whose
    test split is then ``"test"``/``"val"``). ``batch_size``: default the run's evaluation batch (256 for runs
    that recorded none; segmentation recipes record smaller ones for their larger images).

    ``file``: evaluate this ONNX file (float or int8, exported from the run) instead of the checkpoint, run by
    ``runtime`` (``onnxruntime`` or ``openvino``, on the CPU), on the same data with the same metrics
    (:data:`FILE_TASKS`: a detector's file ends in post-processed detections and is refused). A file with a fixed
    size gets images of its size: a classification run's data is prepared at the file's resolution, a
    segmentation run's images (whole scenes or frames) must have it (:class:`~mobilenetv3.inputs.InputError`
    naming both sizes)."""
    if file is None:
        dev = resolve_device(device)
        model, config = load_run(run_dir, checkpoint, weights, dev)
    else:
        from ..deploy.evaluate import FileModel

        config = read_run_config(run_dir)
        kind = config["train"].get("task") or "classification"
        if kind not in FILE_TASKS:
            raise ValueError(f"{run_dir} is a {kind} run: evaluating an exported file scores "
                             f"{' and '.join(FILE_TASKS)} files (a detector's file ends in post-processed "
                             f"detections); evaluate the run's checkpoint instead")
        dev, model = torch.device("cpu"), FileModel(file, runtime)
        _, _, h, w = model.input_shape
        if kind == "classification" and h is not None and h == w and h != config["data"]["resolution"]:
            config = {**config, "data": {**config["data"], "resolution": h}}  # images of the file's size
    d = config["data"]
    split = split or d.get("val_split", "val")
    dataset = run_eval_dataset(d, split, data=data, data_dir=data_dir, task=config["train"].get("task"))
    classes = list(d["classes"])
    if list(dataset.classes) != classes:
        raise ValueError(f"the data's classes ({len(dataset.classes)}: {', '.join(dataset.classes[:5])}...) differ "
                         f"from the run's ({len(classes)}: {', '.join(classes[:5])}...)")
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    task = get_task(config["train"].get("task")).for_run(d, config["train"])
    batch_size = batch_size or config["train"].get("eval_batch_size") or 256
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=task.collate)
    channels_last = file is None and bool(config.get("derived", {}).get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = task.evaluate(model, loader, device=dev, channels_last=channels_last)
    source = ({"checkpoint": checkpoint, "weights": weights} if file is None else
              {"file": str(file), "runtime": runtime, "file_input_shape": list(model.input_shape)})
    return {"run_dir": str(run_dir), **source, "data": data or d["name"], "split": split, "classes": classes,
            **result}


@torch.no_grad()
def predict(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], *, weights: str = "ema",
            checkpoint: str = "last", top_k: int = 5, device: str | None = "auto",
            batch_size: int = 64) -> list[dict[str, Any]]:
    """Top-``k`` classes with probabilities for each image file, preprocessed as the run's evaluation data."""
    from ..data import load_image

    if top_k < 1:
        raise ValueError(f"top-k must be >= 1, got {top_k}")
    if not images:
        raise ValueError("no images given")
    task = read_run_config(run_dir)["train"].get("task") or "classification"
    if task != "classification":
        raise ValueError(f"{run_dir} is a {task} run; this is classification's prediction (segmentation and "
                         f"detection: mobilenetv3.train.predict_dense, or `mnv3 predict`)")
    dev = resolve_device(device)
    model, config = load_run(run_dir, checkpoint, weights, dev)
    d = config["data"]
    classes = list(d["classes"])
    k = min(top_k, len(classes))
    results = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        x = torch.stack([load_image(p, d["resolution"], d["channels"], tuple(d["mean"]), tuple(d["std"]),
                                    d.get("crop_fraction")) for p in chunk]).to(dev)
        probs = torch.softmax(model(x).float(), dim=1)
        values, indices = probs.topk(k, dim=1)
        for path, v, i in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            results.append({"image": str(path), "top": [{"label": classes[j], "index": j, "probability": p}
                                                        for p, j in zip(v, i, strict=True)]})
    return results


def is_run_dir(name: str | None) -> bool:
    """Whether a model source names a run directory (a path, or an existing folder) rather than a registered
    network or a spec file."""
    return name is not None and not name.endswith(".json") and ("/" in name or Path(name).is_dir())


def load_network(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0,
                 checkpoint: str = "last", weights: str = "ema", size: int | tuple[int, int] | None = None
                 ) -> tuple[nn.Module, str, bool]:
    """``(model, task, trained)``: from a run directory ``name`` (its spec.json and checkpoint; its recorded
    task), or a registered name / spec file of any task (:func:`mobilenetv3.tasks.lookup.resolve_network`) with
    random weights whose BatchNorm statistics are calibrated on noise, so that activations and outputs have a
    realistic scale (export checks then compare numbers that mean something). ``size``: the input the model will
    see (a side or (height, width); default the task's), where a segmentation or detection network is
    calibrated; a classifier is calibrated at its resolution, at most 224.

    Raises ``ValueError`` for a bad combination of arguments, ``FileNotFoundError`` for a missing run directory
    or spec file, ``KeyError`` for an unknown name."""
    from ..deploy import calibrate_bn_on_noise
    from ..tasks.lookup import resolve_network

    if spec_file is None and is_run_dir(name):
        if width_mult != 1.0:
            raise ValueError("--width-mult applies to zoo models, not to a run directory")
        if not Path(name).is_dir():
            raise FileNotFoundError(f"run directory not found: {name}")
        model, config = load_run(name, checkpoint=checkpoint, weights=weights, device="cpu")
        return model, config["train"].get("task") or "classification", True
    task, spec = resolve_network(name, spec_file, width_mult)
    task_class = get_task(task)
    model = task_class.spec_model(spec)
    if task == "classification":
        side = size if isinstance(size, int) else max(size) if size is not None else spec.resolution
        calibrate_bn_on_noise(model, min(side, 224), batches=2, batch_size=4)
    else:
        h, w = task_class.default_input_size(spec) if size is None else (size, size) if isinstance(size, int) else size
        calibrate_bn_on_noise(model, (h, w), batches=2, batch_size=2)  # 2: a detector's 1x1 maps need two
    return model, task, False
