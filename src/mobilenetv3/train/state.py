"""What a checkpoint carries besides the weights, and the trainer's glue to write and restore it: the RNG states,
the seeding, the per-process running sums, the optimizer and the run's position, for an exact resume.

A resumed run restores every RNG (torch, CUDA, NumPy, Python) of every process, so dropout draws continue where
they stopped; resumed with another number of processes, each process reseeds from ``(seed, rank, step)`` instead.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..spec import ArchSpec
from .checkpoint import (
    STATE_FORMAT,
    CheckpointError,
    atomic_write_text,
    check_state_dict,
    checkpoint_name,
    restore_last_good,
    save_checkpoint,
    weights_bytes,
)
from .config import TrainConfig
from .distributed import DistInfo, any_flag, barrier, gather_objects
from .ema import ModelEMA
from .qat_phase import EMA_QAT_GROUP, QAT_GROUP
from .run_dir import read_metrics_file
from .sampler import mix_seed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and which checkpoint was kept."""


def rng_state() -> dict[str, Any]:
    """torch / CUDA / NumPy / Python RNG states as tensors and plain containers (``weights_only``-loadable)."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [py_version, list(py_internal), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


def best_bytes(model: nn.Module, ema: ModelEMA | None, spec: ArchSpec,
               extra: dict[str, dict[str, torch.Tensor]] | None, **info: Any) -> bytes:
    """The contents of ``best.safetensors``: the weights of the best epoch so far, ``info`` (epoch, step, the
    score under the task's primary metric) in its metadata. The next checkpoint commits it with its digest."""
    return weights_bytes(model.state_dict(), ema.state_dict() if ema else None, spec, extra, **info)


class TrainerState:
    """Checkpoint writing and restoring for :class:`~.loop.Trainer` (a mixin: it reads and sets the trainer's
    model, EMA, QAT observers, optimizer, schedule, step, running sums, best score and timings)."""

    c: TrainConfig
    out: Path
    dist: DistInfo
    device: torch.device
    raw_model: nn.Module
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    last_ckpt: dict[str, Any] | None
    pending_best: bytes | None  # best.safetensors's new contents, committed with the next checkpoint
    _log: Callable[[str], None] | None

    def _state(self) -> dict[str, Any]:
        """This rank's part of the training state."""
        return {"rng": rng_state(), "sums": dict(self.sums), "window": dict(self.window)}

    def _save_checkpoint(self, epoch: int, batch: int) -> None:
        """All ranks call this (it gathers per-rank states); rank 0 writes."""
        if not self._params_finite():
            raise TrainingDiverged(f"non-finite weights at epoch {epoch + 1}, step {self.global_step}; checkpoint "
                                   f"not written, the last good one ({self._last_ckpt_name()}) is kept")
        rank_states = gather_objects(self._state(), self.dist)
        if self.ema is not None and self.dist.enabled:
            self._sync_buffers(self.ema.module)
        info = {"epoch": epoch, "batch": batch, "global_step": self.global_step, "time": time.time()}
        if self.dist.is_main:
            weights = weights_bytes(self.raw_model.state_dict(), self.ema.state_dict() if self.ema else None,
                                    self.spec, self._qat_groups(), epoch=epoch, batch=batch,
                                    global_step=self.global_step)
            state = {
                "format": STATE_FORMAT, "epoch": epoch, "batch": batch, "global_step": self.global_step,
                "world_size": self.dist.world_size, "optimizer": self.optimizer.state_dict(),
                # The schedule is a function of global_step and the sampler of (seed, epoch, batch); recorded so
                # that the file says everything the run's position depends on.
                "schedule": self.schedule.to_dict(),
                "sampler": {"seed": self.c.seed, "epoch": epoch, "next_batch": batch,
                            "batch_size": self.c.batch_size},
                "ranks": rank_states, "best": self.best, "best_epoch": self.best_epoch,
                "elapsed": self._elapsed(), "epoch_elapsed": self._epoch_elapsed(),
            }
            save_checkpoint(self.out, weights, state, info, keep=self.c.keep, best=self.pending_best)
            self.pending_best = None
        self.last_ckpt = info
        barrier(self.dist)

    def _last_ckpt_name(self) -> str:
        if not self.last_ckpt:
            return "none written yet"
        step = self.last_ckpt["global_step"]
        return f"{self.out / checkpoint_name(step)}, step {step}"

    def _params_finite(self) -> bool:
        ok = all(bool(torch.isfinite(p).all()) for p in self.raw_model.parameters())
        return not any_flag(not ok, self.dist, self.device)

    def _sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers everywhere (DDP broadcasts them only at the next training forward)."""
        for b in module.buffers():
            torch.distributed.broadcast(b, 0)

    def _load_checkpoint(self) -> tuple[int, int]:
        # The newest checkpoint whose files verify; newer damaged ones are passed over, with a warning naming them
        # and the steps that will be trained again.
        restored = restore_last_good(self.out)
        if self.dist.is_main:
            for message in restored.warnings():  # on stderr even when quiet: the run redoes work
                if self._log is not None:
                    self._log(message)
                else:
                    print(message, file=sys.stderr)
        pointer, groups, state = restored.entry, restored.groups, restored.state
        weights_path, state_path = restored.weights_path, restored.state_path
        if "model" not in groups:
            raise CheckpointError(f"{weights_path} holds no model weights")
        check_state_dict(groups["model"], self.raw_model, str(weights_path))
        self.raw_model.load_state_dict(groups["model"])
        if self.ema is not None:
            ema_state = groups.get("ema")
            if ema_state is None:
                raise CheckpointError(f"{weights_path} holds no EMA weights but this run keeps an EMA")
            check_state_dict(ema_state, self.ema.module, f"{weights_path} (EMA)")
            self.ema.load_state_dict(ema_state)
        for group, qat in ((QAT_GROUP, self.qat), (EMA_QAT_GROUP, self.ema_qat)):
            if qat is None:
                continue
            if group not in groups:
                raise CheckpointError(f"{weights_path} holds no quantisation-aware training state ({group})")
            try:
                qat.load_state_dict(groups[group])
            except ValueError as e:
                raise CheckpointError(f"{weights_path}: {e}") from None
        ranks = state["ranks"]
        if len(ranks) != self.dist.world_size:
            # The batches are the same for any number of processes; only the per-process random streams
            # (dropout) and running sums cannot be carried over one to one.
            self.log(f"note: resuming a {len(ranks)}-process run with {self.dist.world_size} process(es): same "
                     f"batches, but dropout draws differ from an uninterrupted run")
            total = {k: sum(r["sums"][k] for r in ranks) for k in ranks[0]["sums"]}
            window = {k: sum(r["window"][k] for r in ranks) for k in ranks[0]["window"]}
            zero = {k: type(v)(0) for k, v in total.items()}
            mine = {"rng": None, "sums": total if self.dist.is_main else zero,
                    "window": window if self.dist.is_main else zero}
        else:
            mine = ranks[self.dist.rank]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{state_path}: optimizer state does not fit the model: {e}") from None
        if mine["rng"] is not None:
            set_rng_state(mine["rng"])
        else:
            seed_everything(mix_seed(self.c.seed, self.dist.rank, int(state["global_step"])))
        self.sums = dict(mine["sums"])
        self.window = dict(mine["window"])
        self.global_step = int(state["global_step"])
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.elapsed_before = float(state["elapsed"])
        self.epoch_elapsed_before = float(state["epoch_elapsed"])
        self.last_ckpt = dict(pointer)
        if self.dist.is_main:  # drop what was logged after this checkpoint: it will be logged again
            path = self.out / "metrics.jsonl"
            kept = [r for r in read_metrics_file(path) if r.get("step", 0) <= self.global_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        return int(state["epoch"]), int(state["batch"])
