"""The architecture a run trains: where its spec comes from (the run directory on resume, ``--init``, the zoo or a
spec file) and the run's options applied to it. The task fits the input and head to the data in between
(:meth:`mobilenetv3.tasks.Task.adapt_spec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tasks import get_task
from .config import TrainConfig
from .init_weights import init_spec


def base_spec(c: TrainConfig, run_dir: Path) -> Any:
    """The architecture, before any data is read (a bad model name fails first), read by the run's task (a zoo
    name or an ArchSpec file for classification, a SegSpec for segmentation, a DetSpec for detection). A resumed
    run uses the spec recorded in its directory (the original spec file may have changed or gone)."""
    task = get_task(c.task)
    if c.resume:
        return task.load_spec(run_dir / "spec.json")
    if c.spec is None and c.model is None and c.task != "classification":
        raise ValueError(f"--init gives a {c.task} run its backbone's weights only: give --model or --spec")
    if c.spec is None and c.model is None:  # --init gives the architecture
        base = init_spec(c.init)
        if base is None:
            raise ValueError(f"--init {c.init} records no architecture: give --model or --spec")
        return base
    return task.load_spec(c.spec) if c.spec is not None else task.named_spec(c.model, c.width_mult)


def model_spec(base: Any, c: TrainConfig, in_channels: int | None = None,
               num_classes: int | None = None) -> Any:
    """The spec trained: the zoo's or the file's (with the task's input and head), with the run's resolution,
    dropout and BN momentum; ``in_channels``/``num_classes`` set those too."""
    changes: dict[str, Any] = {}
    if in_channels is not None:
        changes["in_channels"] = in_channels
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if c.resolution is not None:
        changes["resolution"] = c.resolution
    if c.dropout is not None:
        changes["dropout"] = c.dropout
    if c.bn_momentum is not None:
        changes["bn_momentum"] = c.bn_momentum
    return get_task(c.task).with_run_options(base, changes)
