"""A training run's checkpoints: safetensors weights and a training-state file, hashed and kept two deep.

A run directory holds::

    config.json              the resolved training configuration (and the data's classes, mean, std)
    spec.json                the architecture, with in_channels / num_classes / resolution of the data
    metrics.jsonl            one JSON object per line: epochs ("kind": "epoch") and optional step records
    checkpoint.json          the commit record: the kept checkpoints, newest first, and a SHA-256 of each file
    ckpt-<step>.safetensors  model weights ("model.<name>") and their EMA ("ema.<name>"), spec in the metadata
    ckpt-<step>.state.pt     optimizer, RNG states, position in the epoch (``torch.load(weights_only=True)``)
    best.safetensors         the weights of the best epoch so far (one file, replaced atomically)

A checkpoint is committed through :func:`.commit.commit` (atomic writes, then the pointer, then deletion beyond
``keep``, 2 by default), which records the SHA-256 of both files and of ``best.safetensors``. Every reader of a
run's weights or state goes through :func:`read_weights` / :func:`read_state` (and so :func:`load_weights`,
:func:`checkpoint_paths` + a read, :func:`spec_from_weights`), which verify the bytes before parsing them: a damaged
file is a :class:`CheckpointError` naming it, and a swapped-in pickle is never unpickled. Resume
(:func:`restore_last_good`) takes the newest checkpoint that verifies and says which newer ones it passed over;
eval, predict, export and ``--init`` refuse a damaged file (naming it, and the older checkpoint kept). A run
written before digests were recorded loads without a check or a warning (see :mod:`.commit`).

A state file that is not what :func:`state_bytes` wrote (a pickle of other objects) is refused as "not a
checkpoint this tool wrote"; it is never loaded another way.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..spec import ArchSpec, SpecError
from .commit import (  # noqa: F401  (re-exported: the run's files are written with these)
    KEEP,
    POINTER,
    CheckpointError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    commit,
    load_pointer,
    pointer_entries,
    read_verified,
    remove_stale_temporaries,
)

CHECKPOINT_FORMAT = "mobilenetv3-checkpoint/1"
STATE_FORMAT = 1
BEST = "best.safetensors"
WEIGHT_KINDS = ("ema", "model")


# -- weights ----------------------------------------------------------------------------------------
def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous (row-major) tensors: channels-last weights are copied.
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def weights_bytes(model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None, spec: ArchSpec,
                  extra: dict[str, dict[str, torch.Tensor]] | None = None, **info: Any) -> bytes:
    """The safetensors file of a checkpoint: ``model.*`` and ``ema.*`` tensors, spec and ``info`` in metadata;
    ``extra`` adds groups of tensors under their own prefixes (a QAT run's observers: ``qat.*``, ``ema_qat.*``),
    which float loaders ignore."""
    tensors = {f"model.{k}": v for k, v in _plain(model_state).items()}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v for k, v in _plain(ema_state).items()})
    for group, state in (extra or {}).items():
        if group in WEIGHT_KINDS or "." in group:
            raise ValueError(f"bad checkpoint group name {group!r}")
        tensors.update({f"{group}.{k}": v for k, v in _plain(state).items()})
    metadata = {"format": CHECKPOINT_FORMAT, "spec": spec.to_json(indent=None),
                "has_ema": "1" if ema_state is not None else "0"}
    metadata.update({k: json.dumps(v) for k, v in info.items()})
    return st_save(tensors, metadata=metadata)


def _parse_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    return st_load(data), header.get("__metadata__") or {}


def read_weights(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """``({"model": state, "ema": state}, metadata)`` from a checkpoint file (``ema`` absent if it has none),
    verified against its run's record (:func:`read_verified`).

    A plain safetensors state dict (no ``model.``/``ema.`` prefixes) is read as model weights.
    """
    path = Path(path)
    data = read_verified(path)
    try:
        tensors, metadata = _parse_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    if metadata.get("format") == CHECKPOINT_FORMAT:
        for key, value in tensors.items():
            kind, _, name = key.partition(".")
            groups.setdefault(kind, {})[name] = value
    else:
        groups["model"] = tensors
    return groups, metadata


def spec_from_weights(path: str | os.PathLike) -> ArchSpec | None:
    """The spec stored in a checkpoint's metadata, if any."""
    _, metadata = read_weights(path)
    text = metadata.get("spec")
    if text is None:
        return None
    try:
        return ArchSpec.from_json(text)
    except SpecError as e:
        raise CheckpointError(f"{path}: the spec in its metadata is invalid: {e}") from None


def check_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source} does not match the model: key {missing[0]!r} is missing{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{source} does not match the model: unexpected key {unexpected[0]!r}{more}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source} does not match the model: key {k!r} has shape "
                                  f"{tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model")


def load_weights(model: nn.Module, path: str | os.PathLike, which: str = "ema") -> dict[str, str]:
    """Load ``which`` weights (``"ema"`` or ``"model"``) from a checkpoint file into ``model``; returns metadata.

    ``"ema"`` falls back to the model weights when the checkpoint was trained without EMA.
    """
    if which not in WEIGHT_KINDS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_KINDS)}, got {which!r}")
    groups, metadata = read_weights(path)
    state = groups.get(which) or groups.get("model")
    if state is None:
        raise CheckpointError(f"{path} holds no model weights")
    check_state_dict(state, model, str(path))
    model.load_state_dict(state)
    return metadata


# -- training state ------------------------------------------------------------------------------------
def state_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training-state file, verified (:func:`read_verified`), then loaded with ``weights_only=True`` (tensors
    and plain containers only): anything else is refused, never loaded another way."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training-state file not found: {path}")
    data = read_verified(path)
    not_ours = f"{path} is not a checkpoint this tool wrote (it holds objects other than tensors and plain " \
               f"containers); it was not loaded"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the error below says it all
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(not_ours) from None
    except Exception as e:  # a truncated zip, a bad pickle...: not a usable state file
        if "weights_only" in str(e):
            raise CheckpointError(not_ours) from None
        raise CheckpointError(f"{path} is not a readable training-state file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training-state file of this version (format {STATE_FORMAT})")
    return state


# -- a run's checkpoints -------------------------------------------------------------------------------------
def read_pointer(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The verified contents of a run's ``checkpoint.json`` (top level: the newest checkpoint's ``weights``,
    ``state``, ``epoch``, ``batch``, ``global_step``), or None when the run has no checkpoint."""
    pointer = load_pointer(run_dir)
    if pointer is None:
        return None
    for entry in pointer_entries(pointer):
        if not isinstance(entry.get("weights"), str) or not isinstance(entry.get("state"), str):
            raise CheckpointError(f"{Path(run_dir) / POINTER} is corrupt: it must name the 'weights' and 'state' "
                                  f"files")
    return pointer


def holds_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` has committed a checkpoint (a directory whose run stopped before its first one holds
    nothing to resume or to protect)."""
    return (Path(run_dir) / POINTER).is_file()


def checkpoint_name(global_step: int) -> str:
    """The weights file name of the checkpoint taken after ``global_step`` steps."""
    return f"ckpt-{int(global_step):09d}.safetensors"


def _is_checkpoint_file(name: str) -> bool:
    return name.startswith("ckpt-")


def save_checkpoint(run_dir: str | os.PathLike, weights: bytes, state: dict[str, Any], info: dict[str, Any],
                    keep: int = KEEP, best: bytes | None = None) -> Path:
    """Commit a new last checkpoint (weights + training state, ``info`` with ``global_step``) and keep ``keep``
    (:func:`commit`); ``best.safetensors`` is recorded with it, and replaced by ``best`` when given (the epoch
    just ended is the best so far). Returns the weights path."""
    weights_name = checkpoint_name(info["global_step"])
    state_name = weights_name.replace(".safetensors", ".state.pt")
    commit(run_dir, {weights_name: weights, state_name: state_bytes(state)},
           {"weights": weights_name, "state": state_name, **info}, keep=keep, track=(BEST,),
           replace=None if best is None else {BEST: best},
           owned=_is_checkpoint_file)
    return Path(run_dir) / weights_name


@dataclass
class Restored:
    """The newest checkpoint of a run that verifies: its pointer entry, files and contents, and the newer ones
    passed over (entry, reasons)."""

    entry: dict[str, Any]
    weights_path: Path
    state_path: Path
    groups: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    skipped: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """What to tell the user when newer checkpoints were passed over (nothing otherwise)."""
        if not self.skipped:
            return []
        lines = [f"warning: the checkpoint of step {e['global_step']} cannot be used: {'; '.join(reasons)}"
                 for e, reasons in self.skipped]
        newest, step = self.skipped[0][0]["global_step"], self.entry["global_step"]
        lines.append(f"warning: resuming from {self.weights_path.name} (step {step}) instead: steps {step + 1}-"
                     f"{newest} will be trained again")
        return lines


def restore_last_good(run_dir: str | os.PathLike) -> Restored:
    """Read the newest checkpoint of ``run_dir`` whose files verify and parse; :class:`CheckpointError` listing
    each file and why when none does."""
    run_dir = Path(run_dir)
    pointer = read_pointer(run_dir)
    if pointer is None:
        raise CheckpointError(f"{run_dir} has no checkpoint ({POINTER} not found)")
    skipped = []
    for entry in pointer_entries(pointer):
        weights_path, state_path = run_dir / entry["weights"], run_dir / entry["state"]
        reasons, groups, state = [], None, None
        try:
            groups, _ = read_weights(weights_path)
        except CheckpointError as e:
            reasons.append(str(e))
        try:
            state = read_state(state_path)
        except CheckpointError as e:
            reasons.append(str(e))
        if not reasons:
            return Restored(entry, weights_path, state_path, groups, state, skipped)
        skipped.append((entry, reasons))
    listing = "\n".join(f"  {reason}" for _, reasons in skipped for reason in reasons)
    raise CheckpointError(f"no checkpoint in {run_dir} can be used:\n{listing}")


def checkpoint_paths(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """The weights file of the ``last`` or ``best`` checkpoint of a run (or ``which`` as a path); the file is
    verified when it is read (:func:`read_weights`)."""
    run_dir = Path(run_dir)
    if which == "best":
        path = run_dir / BEST
        if not path.is_file():
            raise CheckpointError(f"{run_dir} has no best checkpoint ({BEST})")
        return path
    if which == "last":
        pointer = read_pointer(run_dir)
        if pointer is None:
            raise CheckpointError(f"{run_dir} has no checkpoint ({POINTER} not found)")
        return run_dir / pointer["weights"]
    path = Path(which)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return path
