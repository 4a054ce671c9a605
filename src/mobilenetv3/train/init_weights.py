"""Starting a run from trained weights (``init``): fine-tuning, a second stage at another resolution, or the float
weights that quantisation-aware training starts from.

``init`` is a run directory (its last checkpoint's EMA weights, or its model weights when it kept no EMA) or a
safetensors weights file (a checkpoint, or a plain state dict). With a run directory, what the new run leaves
unset of the model (``--model``/``--spec``) and of the data (data, data_dir, val_split, holdout, channels,
resolution) is taken from it; a weights file with a spec in its metadata gives the model. The architecture must
match the new run's (resolution, dropout and BN momentum may differ): a clear error names the first difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..spec import ArchSpec
from .checkpoint import CheckpointError, check_state_dict, checkpoint_paths, read_weights, spec_from_weights
from .config import TrainConfig

INHERITED_DATA_FIELDS = ("data", "data_dir", "val_split", "holdout", "channels", "resolution")
# Spec fields that weights do not depend on: they may differ between --init and the new run.
FREE_SPEC_FIELDS = ("name", "resolution", "dropout", "bn_momentum", "notes", "extra")


def init_weights_file(init: str | os.PathLike) -> tuple[Path, Path | None]:
    """The weights file behind ``init`` and the run directory it belongs to (None for a bare file)."""
    path = Path(init)
    if path.is_dir():
        try:
            return checkpoint_paths(path, "last"), path
        except CheckpointError as e:
            raise CheckpointError(f"--init: {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"--init: no run directory or weights file at {path}")
    return path, None


def init_spec(init: str | os.PathLike) -> ArchSpec | None:
    """The architecture of ``init``: its run's ``spec.json``, or the spec in a weights file's metadata."""
    weights, run_dir = init_weights_file(init)
    if run_dir is not None and (run_dir / "spec.json").is_file():
        return ArchSpec.load(run_dir / "spec.json")
    return spec_from_weights(weights)


def with_init_defaults(config: TrainConfig) -> TrainConfig:
    """``config`` with the data options it leaves unset taken from the ``init`` run directory's config."""
    if config.init is None or not Path(config.init).is_dir():
        return config
    path = Path(config.init) / "config.json"
    try:
        saved = json.loads(path.read_text())["train"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"--init: cannot read the run's config {path}: {e}") from None
    changes = {name: saved[name] for name in INHERITED_DATA_FIELDS
               if getattr(config, name) is None and saved.get(name) is not None}
    return dataclasses.replace(config, **changes)


def spec_differences(a: ArchSpec, b: ArchSpec) -> list[str]:
    """The architecture fields in which ``a`` and ``b`` differ (weights-free fields ignored)."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for key in da:
        if key in FREE_SPEC_FIELDS or da[key] == db.get(key):
            continue
        if key == "blocks" and len(da[key]) == len(db[key]):
            first = next(i for i, (x, y) in enumerate(zip(da[key], db[key], strict=True)) if x != y)
            out.append(f"block {first + 1}: {da[key][first]} vs {db[key][first]}")
        elif key == "blocks":
            out.append(f"{len(da[key])} blocks vs {len(db[key])}")
        else:
            out.append(f"{key}: {da[key]!r} vs {db[key]!r}")
    return out


def load_init(model: nn.Module, init: str | os.PathLike, spec: ArchSpec) -> dict[str, Any]:
    """Load ``init``'s weights (EMA first) into ``model``, whose spec is ``spec``; ``CheckpointError`` naming the
    difference when the architectures do not match."""
    weights, _ = init_weights_file(init)
    source = init_spec(init)
    if source is not None:
        diffs = spec_differences(source, spec)
        if diffs:
            raise CheckpointError(f"--init {init}: its architecture ({source.name}) differs from this run's "
                                    f"({spec.name}): {'; '.join(diffs[:3])}")
    groups, metadata = read_weights(weights)
    which = "ema" if "ema" in groups else "model"
    if which not in groups:
        raise CheckpointError(f"--init: {weights} holds no model weights")
    try:
        check_state_dict(groups[which], model, f"--init {weights}")
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the architecture of --init must be this run's)") from None
    model.load_state_dict(groups[which])
    return {"file": str(weights), "weights": which, "global_step": metadata.get("global_step")}
