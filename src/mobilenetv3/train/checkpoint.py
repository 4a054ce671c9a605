"""Checkpoints: safetensors weights, a training-state file, and atomic writes so that a kill never leaves a torn one.

A run directory holds::

    config.json              the resolved training configuration (and the data's classes, mean, std)
    spec.json                the architecture, with in_channels / num_classes / resolution of the data
    metrics.jsonl            one JSON object per line: epochs ("kind": "epoch") and optional step records
    checkpoint.json          which files make up the last checkpoint (the commit record, replaced atomically)
    ckpt-<step>.safetensors  model weights ("model.<name>") and their EMA ("ema.<name>"), spec in the metadata
    ckpt-<step>.state.pt     optimizer, RNG states, position in the epoch (``torch.load(weights_only=True)``)
    best.safetensors         the weights of the best epoch so far (one file, replaced atomically)

The last checkpoint is two files; they are written under new names, made durable, and only then does
``checkpoint.json`` (rewritten atomically) point at them, after which the previous pair is deleted. A kill at any
moment leaves ``checkpoint.json`` naming a complete pair.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from ..spec import ArchSpec, SpecError

CHECKPOINT_FORMAT = "mobilenetv3-checkpoint/1"
STATE_FORMAT = 1
POINTER = "checkpoint.json"
BEST = "best.safetensors"
WEIGHT_KINDS = ("ema", "model")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model; the message names the file."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


# -- atomic writes --------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder, fsync it, then rename it
    over ``path``: readers see the old file or the new one, never a part of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the usual permissions
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporary files a killed writer left behind."""
    for p in Path(directory).glob(".*.tmp"):
        p.unlink(missing_ok=True)


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


def read_weights(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """``({"model": state, "ema": state}, metadata)`` from a checkpoint file (``ema`` absent if it has none).

    A plain safetensors state dict (no ``model.``/``ema.`` prefixes) is read as model weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
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
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training-state file, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training-state file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed global...: all mean "not a usable state file"
        raise CheckpointError(f"{path} is not a readable training-state file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training-state file of this version (format {STATE_FORMAT})")
    return state


# -- the last checkpoint ----------------------------------------------------------------------------------
def read_pointer(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The contents of ``checkpoint.json``, or None when the run has no checkpoint."""
    path = Path(run_dir) / POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("weights"), str) or not isinstance(
            pointer.get("state"), str):
        raise CheckpointError(f"{path} is corrupt: it must name the 'weights' and 'state' files")
    return pointer


def checkpoint_name(global_step: int) -> str:
    """The weights file name of the checkpoint taken after ``global_step`` steps."""
    return f"ckpt-{int(global_step):09d}.safetensors"


def save_checkpoint(run_dir: str | os.PathLike, weights: bytes, state: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write a new last checkpoint (weights + training state) and switch ``checkpoint.json`` to it atomically."""
    run_dir = Path(run_dir)
    weights_name = checkpoint_name(info["global_step"])
    state_name = weights_name.replace(".safetensors", ".state.pt")
    old = read_pointer(run_dir)
    atomic_write_bytes(run_dir / weights_name, weights)
    atomic_write_bytes(run_dir / state_name, state_bytes(state))
    atomic_write_json(run_dir / POINTER, {"weights": weights_name, "state": state_name, **info})
    keep = {weights_name, state_name, POINTER}
    if old is not None:
        for name in (old["weights"], old["state"]):
            if name not in keep:
                (run_dir / name).unlink(missing_ok=True)
    # Files of a checkpoint interrupted before its pointer was written.
    for p in run_dir.glob("ckpt-*"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
    return run_dir / weights_name


def checkpoint_paths(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """The weights file of the ``last`` or ``best`` checkpoint of a run (or ``which`` as a path)."""
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
