"""Any network by name or spec file, whatever its task: what the model-taking commands (`mnv3 profile`, `mnv3
latency`, `mnv3 export`) resolve a ``NAME`` or ``--spec FILE.json`` with.

A name is looked up in every task's registry (the classifier zoo first; the names do not overlap), a spec file is
read as each task's spec kind in turn (an ArchSpec, a SegSpec, a DetSpec: unknown fields are errors, so exactly
one kind reads a given file). Either gives ``(task, spec)``; the task class then builds, costs and sizes it
(:meth:`~.base.Task.spec_model`, :meth:`~.base.Task.spec_cost`, :meth:`~.base.Task.default_input_size`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..spec import SpecError
from . import TASKS, get_task


class UnknownNetworkError(KeyError):
    """A name no task registers: the message lists close matches and every known name by task."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def known_names() -> dict[str, list[str]]:
    """Every registered network name, by task."""
    from ..detection import list_det_models
    from ..segmentation import list_seg_models
    from ..zoo import REGISTRY

    return {"classification": list(REGISTRY), "segmentation": list_seg_models(), "detection": list_det_models()}


def named_network(name: str, width_mult: float = 1.0) -> tuple[str, Any]:
    """``(task, spec)`` of the network registered as ``name`` at ``width_mult`` in any task's registry;
    :class:`UnknownNetworkError` naming close matches and the known names otherwise."""
    for task in TASKS:
        try:
            return task, get_task(task).named_spec(name, width_mult)
        except KeyError:
            continue
    names = known_names()
    close = difflib.get_close_matches(name, [n for group in names.values() for n in group], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listed = "; ".join(f"{task}: {', '.join(group)}" for task, group in names.items())
    raise UnknownNetworkError(f"unknown model {name!r}.{hint} Known models - {listed}")


def spec_file_network(path: str | Path) -> tuple[str, Any]:
    """``(task, spec)`` of a spec file of any task; ``FileNotFoundError`` for a missing file, a
    :class:`~mobilenetv3.spec.SpecError` saying what each spec kind found wrong otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"spec file not found: {p}")
    problems = []
    for task in TASKS:
        try:
            return task, get_task(task).load_spec(p)
        except SpecError as e:
            problems.append(f"as a {task} spec: {e}")
    raise SpecError(f"{p} is not a spec file of any task ({'; '.join(problems)})")


def resolve_network(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0
                    ) -> tuple[str, Any]:
    """``(task, spec)`` from a registered name (with its width multiplier) or a spec file: exactly one of the
    two (``ValueError`` otherwise). A ``name`` ending in ``.json`` is read as a spec file given where a name goes."""
    if name is not None and spec_file is None and name.endswith(".json"):
        name, spec_file = None, name
    if (name is None) == (spec_file is None):
        raise ValueError("give a model NAME or --spec FILE.json (exactly one)")
    if spec_file is not None:
        if width_mult != 1.0:
            raise ValueError("--width-mult applies to zoo models; a spec file already holds its widths")
        return spec_file_network(spec_file)
    return named_network(name, width_mult)


__all__ = ["UnknownNetworkError", "known_names", "named_network", "resolve_network", "spec_file_network"]
