"""A run's data: the training and validation sets named by its options (or given in memory), the ``data``
section recorded in ``config.json``, and DataLoaders that leave the global RNG alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..tasks import get_task
from .config import TrainConfig


def data_name(data: str) -> str:
    """``data`` as recorded: a folder as an absolute path (also after ``cityscapes:``), so that ``mnv3 eval
    RUN_DIR`` works from any directory."""
    kind, sep, rest = data.partition(":")
    if sep and kind.lower() in ("cityscapes", "coco") and rest:
        return f"{kind}:{Path(rest).resolve()}"
    return str(Path(data).resolve()) if Path(data).is_dir() else data


def load_datasets(c: TrainConfig, train_set: Dataset | None = None, val_set: Dataset | None = None
                  ) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """The training and validation sets of a run and its data record (name, split, preprocessing, classes,
    sizes); ``train_set``/``val_set`` replace the data named in ``c``, which the run's task loads otherwise."""
    if train_set is not None:
        if val_set is None:
            raise ValueError("a custom train_set needs a val_set too")
        if c.holdout:
            raise ValueError("holdout applies to data loaded by name or folder, not to a custom train_set "
                             "(split it yourself and pass val_set)")
        val_split = c.val_split
    else:
        from ..data import HOLDOUT

        val_split = HOLDOUT if c.holdout else c.val_split
        train_set, val_set = get_task(c.task).load_data(c.to_dict(), val_split)
    classes = list(train_set.classes)
    info = {
        # An absolute folder path, so that `mnv3 eval RUN_DIR` works from any directory.
        "name": data_name(c.data), "data_dir": c.data_dir,
        "val_split": val_split, "holdout": c.holdout, "resolution": c.resolution,
        "channels": int(train_set.channels), "mean": list(train_set.mean),
        "std": list(train_set.std), "classes": classes, "crop_fraction": c.crop_fraction,
        "train_size": len(train_set), "val_size": len(val_set),
    }
    if hasattr(train_set, "category_ids"):  # detection data from a COCO file: label -> category id
        info["category_ids"] = list(train_set.category_ids)
    for name, ds in (("train_transform", train_set), ("eval_transform", val_set)):
        transform = getattr(ds, "transform", None)
        if transform is not None and hasattr(transform, "config"):
            info[name] = transform.config()
    if c.limit_train is not None:
        train_set = Subset(train_set, range(min(c.limit_train, len(train_set))))
    if c.limit_val is not None:
        val_set = Subset(val_set, range(min(c.limit_val, len(val_set))))
    info["train_used"], info["val_used"] = len(train_set), len(val_set)
    return train_set, val_set, info


def make_loader(dataset: Dataset, collate: Callable[[list[Any]], Any], device: torch.device, workers: int,
                batch_sampler=None, sampler=None, batch_size: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` batched by ``batch_sampler`` (or ``sampler`` and ``batch_size``)."""
    if batch_sampler is not None:
        sizes = dict(batch_sampler=batch_sampler)
    else:
        sizes = dict(sampler=sampler, batch_size=batch_size)
    # The private generator: creating a loader (mid-epoch on resume) draws nothing from the global RNG.
    return DataLoader(dataset, **sizes, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
