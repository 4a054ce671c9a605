"""Starting a run from trained weights (``init``): fine-tuning, a second stage at another resolution, or the float
weights that quantisation-aware training starts from.

``init`` is a run directory (its last checkpoint's EMA weights, or its model weights when it kept no EMA) or a
safetensors weights file (a checkpoint, or a plain state dict). With a run directory, what the new run leaves
unset of the model (``--model``/``--spec``) and of the data (data, data_dir, val_split, holdout, channels,
resolution) is taken from it; a weights file with a spec in its metadata gives the model. The architecture must
match the new run's (resolution, dropout and BN momentum may differ): a clear error names the first difference.

Segmentation and detection runs take ``init`` as a pretrained *backbone* (the paper's dense models start from
ImageNet classifiers), :func:`load_backbone_init`: the trunk of a classification run (``features.*``), loaded
module by module into the dense model's backbone as long as the shapes agree, so a stride or dilation change (output
stride 16) loads and the stage that RF2 halves, with everything after it, keeps its random initialisation; the
stem is adapted between 1 and 3 input channels (a grey-image classifier into a colour backbone: the weights
split over the three channels, so a grey image gives the same output). The head is always trained from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
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
    """``config`` with the data options it leaves unset taken from the ``init`` run directory's config (a
    classification run's own; a dense run's ``init`` is only a backbone and gives no data)."""
    if config.init is None or not Path(config.init).is_dir() or config.task not in (None, "classification"):
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


def init_state(init: str | os.PathLike) -> tuple[Path, str, dict[str, torch.Tensor], dict[str, str]]:
    """(weights file, ``"ema"`` or ``"model"``, that state dict, the file's metadata) of ``init``: its EMA
    weights when it has them."""
    weights, _ = init_weights_file(init)
    groups, metadata = read_weights(weights)
    which = "ema" if "ema" in groups else "model"
    if which not in groups:
        raise CheckpointError(f"--init: {weights} holds no model weights")
    return weights, which, groups[which], metadata


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor | None:
    """A stem convolution's weight for ``in_channels`` inputs: 1 -> 3 split evenly (a grey image, repeated, gives
    the same output), 3 -> 1 summed (the same for a colour image's mean); None when neither applies."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if have == 1 and in_channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    if have == 3 and in_channels == 1:
        return weight.sum(1, keepdim=True)
    return None


def load_backbone_init(backbone: nn.Module, init: str | os.PathLike) -> dict[str, Any]:
    """Load a classification run's trunk (module docstring) into ``backbone`` (a ``MobileNetV3`` whose classifier
    a dense model dropped); ``CheckpointError`` when not even the stem and the first block fit. Returns what was
    loaded: ``modules`` loaded of ``total``, the first ``skipped`` module and why, ``stem`` adapted or not."""
    weights, which, state, _ = init_state(init)
    source = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    target = backbone.state_dict()
    total = len(backbone.features)
    loaded: dict[str, torch.Tensor] = {}
    skipped, stem_adapted = None, False
    for i in range(total):
        prefix = f"features.{i}."
        names = [k for k in target if k.startswith(prefix)]
        module: dict[str, torch.Tensor] = {}
        for name in names:
            value = source.get(name)
            if value is not None and i == 0 and value.dim() == 4 and value.shape != target[name].shape:
                adapted = adapt_stem(value, target[name].shape[1])
                stem_adapted = adapted is not None
                value = adapted
            if value is None or value.shape != target[name].shape:
                have = "missing" if source.get(name) is None else tuple(source[name].shape)
                skipped = f"features.{i} ({name}: {have} in --init, {tuple(target[name].shape)} here)"
                break
            module[name] = value
        if skipped is not None:
            break
        loaded.update(module)
    if not any(k.startswith("features.1.") for k in loaded):
        raise CheckpointError(f"--init {init}: its network does not fit this backbone ({backbone.spec.name}): "
                              f"first difference at {skipped}; start from a classifier of the same backbone "
                              f"and width")
    backbone.load_state_dict({**target, **loaded})
    done = 1 + max(int(k.split(".")[1]) for k in loaded)
    return {"file": str(weights), "weights": which, "modules": done, "total": total, "skipped": skipped,
            "stem_adapted": stem_adapted}


def load_init(model: nn.Module, init: str | os.PathLike, spec: ArchSpec) -> dict[str, Any]:
    """Load ``init``'s weights (EMA first) into ``model``, whose spec is ``spec``; ``CheckpointError`` naming the
    difference when the architectures do not match."""
    source = init_spec(init)
    if source is not None:
        diffs = spec_differences(source, spec)
        if diffs:
            raise CheckpointError(f"--init {init}: its architecture ({source.name}) differs from this run's "
                                    f"({spec.name}): {'; '.join(diffs[:3])}")
    weights, which, state, metadata = init_state(init)
    try:
        check_state_dict(state, model, f"--init {weights}")
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the architecture of --init must be this run's)") from None
    model.load_state_dict(state)
    return {"file": str(weights), "weights": which, "global_step": metadata.get("global_step")}


def apply_init(model: nn.Module, init: str | os.PathLike, spec: Any, task: str) -> str:
    """Load ``init`` into a new run's ``model``: the whole network for classification (:func:`load_init`), the
    backbone for a dense task (:func:`load_backbone_init`); returns the line the run logs."""
    if task == "classification":
        source = load_init(model, init, spec)
        return f"starting from the {source['weights']} weights of {source['file']}"
    source = load_backbone_init(model.backbone, init)
    rest = f"; from {source['skipped']} on, random" if source["skipped"] else ""
    stem = " (stem adapted to this run's channels)" if source["stem_adapted"] else ""
    return (f"backbone from the {source['weights']} weights of {source['file']}: modules 0-{source['modules'] - 1} "
            f"of {source['total']}{stem}{rest}")
