"""Evaluation and prediction: of a model on a loader, and of a run directory with nothing else given.

Accuracies are percentages (0-100); ``per_class`` maps each class name to its recall (the percentage of its images
classified correctly); ``confusion[true][predicted]`` counts images.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..model import MobileNetV3
from ..spec import ArchSpec
from . import distributed as D
from .checkpoint import CheckpointError, checkpoint_paths, load_weights
from .config import WEIGHTS


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, num_classes: int, *, device: torch.device | str = "cpu",
             channels_last: bool = False, amp: bool = False, dist: D.DistInfo | None = None) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%), mean cross-entropy, per-class accuracy and the confusion matrix of ``model``.

    ``loader`` yields ``(images, labels)`` (``None`` batches, from skipped images, are ignored). Under
    DistributedDataParallel each process evaluates its shard and the counts are summed over processes.
    """
    device = torch.device(device)
    dist = dist or D.DistInfo()
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, top-5 hits
    k = min(5, num_classes)
    try:
        for batch in loader:
            if batch is None:
                continue
            x, y = batch
            x, y = to_device(x, device, channels_last), y.to(device)
            with autocast_context(device, amp):
                logits = model(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
            confusion += torch.bincount(y * num_classes + logits.argmax(dim=1), minlength=num_classes ** 2)
    finally:
        model.train(was_training)
    D.all_reduce_tensor(confusion, dist)
    D.all_reduce_tensor(sums, dist)
    confusion = confusion.view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    correct = int(confusion.diag().sum())
    per_class_total = confusion.sum(dim=1)
    per_class = [100.0 * int(confusion[i, i]) / int(per_class_total[i]) if int(per_class_total[i]) else None
                 for i in range(num_classes)]
    return {
        "count": count,
        "loss": float(sums[0]) / count if count else float("nan"),
        "top1": 100.0 * correct / count if count else float("nan"),
        "top5": 100.0 * float(sums[1]) / count if count else float("nan"),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


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
             device: str | torch.device | None = "cpu") -> tuple[MobileNetV3, dict[str, Any]]:
    """The trained model of a run (eval mode) and its config: ``spec.json`` + the ``last``/``best`` checkpoint."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    config = read_run_config(run_dir)
    spec_path = Path(run_dir) / "spec.json"
    if not spec_path.is_file():
        raise CheckpointError(f"{run_dir} has no spec.json")
    model = MobileNetV3(ArchSpec.load(spec_path))
    load_weights(model, checkpoint_paths(run_dir, checkpoint), weights)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval(), config


def run_eval_dataset(data_info: dict[str, Any], split: str | None = None, *, data: str | None = None,
                     data_dir: str | None = None) -> Any:
    """A run's evaluation data from its recorded ``config["data"]``: the run's preprocessing (resolution,
    channels, statistics, crop) on ``split`` (default: the run's validation split, ``"holdout"`` for a run with
    held-out training images), of the run's data or ``data``."""
    from ..data import load_dataset

    d = data_info
    return load_dataset(data or d["name"], split or d.get("val_split", "val"), resolution=d["resolution"],
                        train=False, data_dir=data_dir if data_dir is not None else d.get("data_dir"),
                        channels=d["channels"], mean=tuple(d["mean"]), std=tuple(d["std"]),
                        crop_fraction=d.get("crop_fraction"), holdout=d.get("holdout") or 0)


def evaluate_run(run_dir: str | os.PathLike, *, data: str | None = None, data_dir: str | None = None,
                 split: str | None = None, weights: str = "ema", checkpoint: str = "last", batch_size: int = 256,
                 device: str | None = "auto", workers: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint on its validation data (or ``data``), with the run's own preprocessing.

    ``split``: default the run's validation split (``"holdout"`` for a run with held-out training images, whose
    test split is then ``"test"``/``"val"``)."""
    from ..data import collate

    dev = resolve_device(device)
    model, config = load_run(run_dir, checkpoint, weights, dev)
    d = config["data"]
    split = split or d.get("val_split", "val")
    dataset = run_eval_dataset(d, split, data=data, data_dir=data_dir)
    classes = list(d["classes"])
    if list(dataset.classes) != classes:
        raise ValueError(f"the data's classes ({len(dataset.classes)}: {', '.join(dataset.classes[:5])}...) differ "
                         f"from the run's ({len(classes)}: {', '.join(classes[:5])}...)")
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    channels_last = bool(config.get("derived", {}).get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, len(classes), device=dev, channels_last=channels_last)
    result["per_class"] = dict(zip(classes, result["per_class"], strict=True))
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "weights": weights, "data": data or d["name"],
            "split": split, "classes": classes, **result}


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
