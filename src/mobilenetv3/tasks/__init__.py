"""Training tasks: classification, segmentation and detection, one module and one registry line each.
See :class:`~mobilenetv3.tasks.base.Task`."""

from __future__ import annotations

import importlib

from .base import Task, autocast_context, to_device

# name -> "module:Class", imported when asked for, so that a task's dependencies load only when it is used.
TASKS: dict[str, str] = {
    "classification": "mobilenetv3.tasks.classification:ClassificationTask",
    "segmentation": "mobilenetv3.tasks.segmentation:SegmentationTask",
    "detection": "mobilenetv3.tasks.detection:DetectionTask",
}
DEFAULT_TASK = "classification"


def get_task(name: str | None) -> type[Task]:
    """The task class registered as ``name`` (``None``: the default, classification); ``ValueError`` naming the
    known tasks otherwise."""
    name = name or DEFAULT_TASK
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    module_name, _, class_name = TASKS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "autocast_context", "get_task", "to_device"]
