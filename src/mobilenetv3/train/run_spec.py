"""The architecture a run trains: where its spec comes from (the run directory on resume, ``--init``, the zoo or a
spec file) and the run's options applied to it. The task fits the input and head to the data in between
(:meth:`mobilenetv3.tasks.Task.adapt_spec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import zoo
from ..spec import ArchSpec
from .config import TrainConfig
from .init_weights import init_spec


def base_spec(c: TrainConfig, run_dir: Path) -> ArchSpec:
    """The architecture, before any data is read (a bad model name fails first). A resumed run uses the spec
    recorded in its directory (the original spec file may have changed or gone)."""
    if c.resume:
        return ArchSpec.load(run_dir / "spec.json")
    if c.spec is None and c.model is None:  # --init gives the architecture
        base = init_spec(c.init)
        if base is None:
            raise ValueError(f"--init {c.init} records no architecture: give --model or --spec")
        return base
    return ArchSpec.load(c.spec) if c.spec is not None else zoo.get_spec(c.model, c.width_mult)


def model_spec(base: ArchSpec, c: TrainConfig, in_channels: int | None = None,
               num_classes: int | None = None) -> ArchSpec:
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
    return base.replace(**changes)
