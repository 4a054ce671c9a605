"""One candidate of a search, evaluated in a worker: build it, take weights over, train briefly, score, save.

:func:`evaluate_candidate` is the function a search hands to its evaluator (:mod:`.evaluator`): a top-level
function of one JSON-able job, so a process pool or a Ray cluster can run it, and seeded, so its result does not
depend on where it ran. NetAdapt's proposals start from the previous step's weights (``source``; the surviving
channels are kept, :mod:`.transfer`); NAS samples start from scratch (no ``source``).

Weights travel as safetensors files whose metadata holds the spec; a job names the file with its SHA-256, and a
file that does not match is refused before anything is loaded from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..model import MobileNetV3, build
from ..spec import ArchSpec
from ..train.checkpoint import CheckpointError
from ..train.commit import atomic_write_bytes
from .proxy import ProxyTask, holdout_accuracy, recalibrate_bn, train_steps
from .transfer import transfer_weights


def spec_hash(spec: ArchSpec) -> str:
    """A short stable name for a spec: SHA-256 of its canonical JSON (sorted keys, no spaces), 16 hex digits."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_model(model: nn.Module, path: str | os.PathLike) -> str:
    """Write ``model``'s state dict and spec to ``path`` atomically; returns the file's SHA-256."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    data = save_safetensors(state, metadata={"spec": model.spec.to_json(indent=None)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_model(path: str | os.PathLike, sha256: str | None = None) -> MobileNetV3:
    """The model saved by :func:`save_model` at ``path`` (eval mode), refused when its SHA-256 differs from
    ``sha256`` (a file changed or damaged since it was recorded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path} does not match the SHA-256 its journal recorded: it was changed or damaged")
    try:
        state = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")  # safetensors: 8-byte length, then the JSON header
        spec = ArchSpec.from_json(json.loads(data[8:8 + header_len])["__metadata__"]["spec"])
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged file
        raise CheckpointError(f"{path} is not a weights file this tool wrote ({type(e).__name__}: {e})") from None
    model = build(spec)
    model.load_state_dict(state)
    return model.eval()


def evaluate_candidate(job: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one candidate. ``job``: ``spec`` (a spec dict), ``task`` (a :class:`~.proxy.ProxyTask` dict),
    ``steps``, ``seed``, optionally ``source`` (``{"weights": path, "sha256": hex}``: start from those weights,
    keeping the surviving channels) and ``out`` (where to save the trained weights). BatchNorm's statistics are
    re-estimated before scoring when the task asks (``bn_batches``). Returns ``accuracy`` (holdout
    top-1, %), ``seconds``, and ``weights``/``sha256`` when saved."""
    started = time.perf_counter()
    spec = ArchSpec.from_dict(job["spec"])
    task = ProxyTask.from_dict(job["task"])
    source = job.get("source")
    if source is not None:
        model = transfer_weights(load_model(source["weights"], source.get("sha256")), spec, seed=job["seed"])
    else:
        torch.manual_seed(job["seed"])
        model = build(spec)
    train_steps(model, task, int(job["steps"]), seed=int(job["seed"]))
    recalibrate_bn(model, task, task.bn_batches, seed=int(job["seed"]))
    result: dict[str, Any] = {"accuracy": holdout_accuracy(model, task)}
    if job.get("out"):
        result["weights"] = str(job["out"])
        result["sha256"] = save_model(model, job["out"])
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


__all__ = ["evaluate_candidate", "load_model", "save_model", "spec_hash"]
