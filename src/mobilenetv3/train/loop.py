"""The training loop: one process or many (torchrun), checkpointed often enough to resume exactly after a kill.

Exact resume: a run killed at any point and resumed with ``resume=True`` ends with the same weights and the same
metrics (timings aside) as a run never interrupted, bit for bit on CPU. What makes it so:

* the sample order of each epoch and each sample's augmentation are fixed by ``(seed, epoch, index)``
  (:mod:`.sampler`), so the resumed run skips the batches already trained on and sees the same crops;
* the checkpoint holds everything that changes during training: weights, EMA, optimizer state, the step, the
  position in the epoch, the running sums of the epoch's metrics, and the RNG states of torch, NumPy and Python
  (dropout draws from torch's);
* DataLoaders get a private generator, so creating one mid-epoch draws nothing from the global RNG;
* metrics lines written after the checkpoint being resumed from are dropped from ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .. import zoo
from ..model import MobileNetV3
from ..spec import ArchSpec
from . import checkpoint as C
from . import distributed as D
from . import qat as Q
from .config import RESUMABLE_CHANGES, RUNTIME_FIELDS, TrainConfig, resolve
from .ema import ModelEMA
from .evaluate import autocast_context, evaluate, resolve_device, to_device
from .rmsprop import RMSpropTF
from .sampler import EpochBatchSampler, SeededSamples, ShardedRange, mix_seed
from .schedule import LRSchedule

RUN_FILES = ("config.json", "spec.json", "metrics.jsonl", C.POINTER, C.BEST)
TIMING_KEYS = ("images_per_s", "epoch_time_s", "eval_time_s", "wall_time_s")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and which checkpoint was kept."""


# -- pieces ----------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float, exempt: str) -> list[dict[str, Any]]:
    """Parameter groups for L2 weight decay; ``exempt``: "none", "norm" (BatchNorm weights and biases) or
    "norm_bias" (those and every bias)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (exempt in ("norm", "norm_bias") and id(p) in norm_params) or (
            exempt == "norm_bias" and name.endswith(".bias"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, c.weight_decay, c.wd_exempt)
    if c.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=c.lr, alpha=c.rmsprop_decay, eps=c.rmsprop_eps, momentum=c.momentum)
    # SGD's weight_decay is the same L2 term added to the gradient.
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0)


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


def model_spec(base: ArchSpec, c: TrainConfig, in_channels: int, num_classes: int) -> ArchSpec:
    """The spec trained: the zoo's or the file's, with the data's channels and classes, and the run's resolution
    dropout and BN momentum."""
    changes: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}
    if c.resolution is not None:
        changes["resolution"] = c.resolution
    if c.dropout is not None:
        changes["dropout"] = c.dropout
    if c.bn_momentum is not None:
        changes["bn_momentum"] = c.bn_momentum
    return base.replace(**changes)


def _existing_run_files(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return sorted({p.name for p in out.iterdir() if p.name in RUN_FILES or p.name.startswith("ckpt-")})


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill: it and anything after it are dropped
    return records


def read_metrics(run_dir: str | os.PathLike, kind: str | None = "epoch") -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (only those of ``kind``; ``None`` for all)."""
    return [r for r in _read_metrics(Path(run_dir) / "metrics.jsonl") if kind is None or r.get("kind") == kind]


def merge_resume_config(saved: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The recorded config of a run with what may change on resume taken from ``given``; other differences are
    errors (a run resumed with another model, data or recipe would not be the run it claims to be)."""
    merged = dict(saved)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(given, f.name)
        if f.name in RUNTIME_FIELDS:
            merged[f.name] = value
            continue
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if f.name in RESUMABLE_CHANGES:
            merged[f.name] = value
        elif value != saved.get(f.name):
            raise ValueError(f"--resume: {f.name} is {saved.get(f.name)!r} in this run, got {value!r}; a resumed run "
                             f"keeps its settings (only {', '.join(RESUMABLE_CHANGES)} may change)")
    return TrainConfig.from_dict(merged)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and returns."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _Progress:
    """A tqdm bar on a terminal (rank 0, not quiet), nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None

    def start(self, total: int, initial: int, desc: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def update(self, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- the trainer ---------------------------------------------------------------------------------------------
class Trainer:
    """One training run; :func:`train` is the public entry point."""

    def __init__(self, config: TrainConfig, train_set: Dataset | None = None, val_set: Dataset | None = None,
                 log=None) -> None:
        self.given = config
        self.train_set_override = train_set
        self.val_set_override = val_set
        self._log = log

    # -- small helpers
    def log(self, message: str) -> None:
        if not self.dist.is_main or self.c.quiet:
            return
        if self._log is not None:
            self._log(message)
            return
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def _write_metrics(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.tb.flush()

    # -- setup
    def _prepare_run_dir(self) -> TrainConfig:
        given = self.given
        out = Path(given.out) if given.out else None
        if out is None:
            raise ValueError("an output directory (--out) is required")
        if given.resume and given.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if given.resume:
            pointer = C.read_pointer(out) if out.is_dir() else None
            if pointer is None:
                raise C.CheckpointError(f"--resume: no checkpoint to resume from in {out} "
                                        f"({C.POINTER} not found); start the run without --resume")
            cfg_path = out / "config.json"
            try:
                saved = json.loads(cfg_path.read_text())["train"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise C.CheckpointError(f"--resume: cannot read the run's config {cfg_path}: {e}") from None
            config = resolve(merge_resume_config(saved, given))
        else:
            config = resolve(Q.with_init_defaults(given))
            existing = _existing_run_files(out)
            # A directory whose run stopped before its first checkpoint (a corrupt image with --on-corrupt fail,
            # a typo noticed at once) holds nothing to protect: the same command reuses it.
            if C.holds_checkpoint(out) and not given.overwrite:
                raise ValueError(f"{out} already holds a training run ({', '.join(existing[:4])}); pass --resume to "
                                 f"continue it or --overwrite to start afresh")
        self.out = out
        return config

    def _clear_old_run(self) -> None:
        for name in _existing_run_files(self.out):
            (self.out / name).unlink(missing_ok=True)
        C.remove_stale_temporaries(self.out)

    def _datasets(self) -> tuple[Dataset, Dataset, dict[str, Any]]:
        c = self.c
        if self.train_set_override is not None:
            train_set, val_set = self.train_set_override, self.val_set_override
            if val_set is None:
                raise ValueError("a custom train_set needs a val_set too")
            if c.holdout:
                raise ValueError("holdout applies to data loaded by name or folder, not to a custom train_set "
                                 "(split it yourself and pass val_set)")
            val_split = c.val_split
        else:
            from ..data import HOLDOUT, load_dataset

            val_split = HOLDOUT if c.holdout else c.val_split
            common = dict(resolution=c.resolution, data_dir=c.data_dir, channels=c.channels, on_corrupt=c.on_corrupt,
                          holdout=c.holdout)
            train_set = load_dataset(c.data, "train", train=True, scale=c.crop_scale, hflip=c.hflip,
                                     color_jitter=c.color_jitter, random_erase=c.random_erase, **common)
            val_set = load_dataset(c.data, val_split, train=False, crop_fraction=c.crop_fraction,
                                   mean=train_set.mean, std=train_set.std, **common)
        classes = list(train_set.classes)
        info = {
            # An absolute folder path, so that `mnv3 eval RUN_DIR` works from any directory.
            "name": str(Path(c.data).resolve()) if Path(c.data).is_dir() else c.data, "data_dir": c.data_dir,
            "val_split": val_split, "holdout": c.holdout, "resolution": c.resolution,
            "channels": int(train_set.channels), "mean": list(train_set.mean),
            "std": list(train_set.std), "classes": classes, "crop_fraction": c.crop_fraction,
            "train_size": len(train_set), "val_size": len(val_set),
        }
        for name, ds in (("train_transform", train_set), ("eval_transform", val_set)):
            transform = getattr(ds, "transform", None)
            if transform is not None and hasattr(transform, "config"):
                info[name] = transform.config()
        if c.limit_train is not None:
            train_set = Subset(train_set, range(min(c.limit_train, len(train_set))))
        if c.limit_val is not None:
            val_set = Subset(val_set, range(min(c.limit_val, len(val_set))))
        info["train_used"], info["val_used"] = len(train_set), len(val_set)
        return train_set, val_set, info

    def _loader(self, dataset: Dataset, batch_sampler=None, sampler=None, batch_size: int | None = None) -> DataLoader:
        from ..data import collate

        workers = self.c.workers
        if batch_sampler is not None:
            sizes = dict(batch_sampler=batch_sampler)
        else:
            sizes = dict(sampler=sampler, batch_size=batch_size)
        # The private generator: creating a loader (mid-epoch on resume) draws nothing from the global RNG.
        return DataLoader(dataset, **sizes, num_workers=workers, collate_fn=collate,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(0))

    # -- checkpoint
    def _state(self) -> dict[str, Any]:
        """This rank's part of the training state."""
        return {"rng": rng_state(), "sums": dict(self.sums), "window": dict(self.window)}

    def _save_checkpoint(self, epoch: int, batch: int) -> None:
        """All ranks call this (it gathers per-rank states); rank 0 writes."""
        if not self._params_finite():
            raise TrainingDiverged(f"non-finite weights at epoch {epoch + 1}, step {self.global_step}; checkpoint "
                                   f"not written, the last good one ({self._last_ckpt_name()}) is kept")
        rank_states = D.gather_objects(self._state(), self.dist)
        if self.ema is not None and self.dist.enabled:
            self._sync_buffers(self.ema.module)
        info = {"epoch": epoch, "batch": batch, "global_step": self.global_step, "time": time.time()}
        if self.dist.is_main:
            weights = C.weights_bytes(self.raw_model.state_dict(), self.ema.state_dict() if self.ema else None,
                                      self.spec, self._qat_groups(), epoch=epoch, batch=batch,
                                      global_step=self.global_step)
            state = {
                "format": C.STATE_FORMAT, "epoch": epoch, "batch": batch, "global_step": self.global_step,
                "world_size": self.dist.world_size, "optimizer": self.optimizer.state_dict(),
                # The schedule is a function of global_step and the sampler of (seed, epoch, batch); recorded so
                # that the file says everything the run's position depends on.
                "schedule": self.schedule.to_dict(),
                "sampler": {"seed": self.c.seed, "epoch": epoch, "next_batch": batch,
                            "batch_size": self.c.batch_size},
                "ranks": rank_states, "best": self.best, "best_epoch": self.best_epoch,
                "elapsed": self._elapsed(), "epoch_elapsed": self._epoch_elapsed(),
            }
            C.save_checkpoint(self.out, weights, state, info, keep=self.c.keep)
        self.last_ckpt = info
        D.barrier(self.dist)

    def _last_ckpt_name(self) -> str:
        if not self.last_ckpt:
            return "none written yet"
        step = self.last_ckpt["global_step"]
        return f"{self.out / C.checkpoint_name(step)}, step {step}"

    def _params_finite(self) -> bool:
        ok = all(bool(torch.isfinite(p).all()) for p in self.raw_model.parameters())
        return not D.any_flag(not ok, self.dist, self.device)

    def _sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers everywhere (DDP broadcasts them only at the next training forward)."""
        for b in module.buffers():
            torch.distributed.broadcast(b, 0)

    def _load_checkpoint(self) -> tuple[int, int]:
        # The newest checkpoint whose files verify; newer damaged ones are passed over, with a warning naming them
        # and the steps that will be trained again.
        restored = C.restore_last_good(self.out)
        if self.dist.is_main:
            for message in restored.warnings():  # on stderr even when quiet: the run redoes work
                if self._log is not None:
                    self._log(message)
                else:
                    print(message, file=sys.stderr)
        pointer, groups, state = restored.entry, restored.groups, restored.state
        weights_path, state_path = restored.weights_path, restored.state_path
        if "model" not in groups:
            raise C.CheckpointError(f"{weights_path} holds no model weights")
        C.check_state_dict(groups["model"], self.raw_model, str(weights_path))
        self.raw_model.load_state_dict(groups["model"])
        if self.ema is not None:
            ema_state = groups.get("ema")
            if ema_state is None:
                raise C.CheckpointError(f"{weights_path} holds no EMA weights but this run keeps an EMA")
            C.check_state_dict(ema_state, self.ema.module, f"{weights_path} (EMA)")
            self.ema.load_state_dict(ema_state)
        for group, qat in ((Q.QAT_GROUP, self.qat), (Q.EMA_QAT_GROUP, self.ema_qat)):
            if qat is None:
                continue
            if group not in groups:
                raise C.CheckpointError(f"{weights_path} holds no quantisation-aware training state ({group})")
            try:
                qat.load_state_dict(groups[group])
            except ValueError as e:
                raise C.CheckpointError(f"{weights_path}: {e}") from None
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
            raise C.CheckpointError(f"{state_path}: optimizer state does not fit the model: {e}") from None
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
            kept = [r for r in _read_metrics(path) if r.get("step", 0) <= self.global_step]
            C.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        return int(state["epoch"]), int(state["batch"])

    # -- quantisation-aware training
    def _qat_groups(self) -> dict[str, dict[str, torch.Tensor]] | None:
        if self.qat is None:
            return None
        groups = {Q.QAT_GROUP: self.qat.state_dict()}
        if self.ema_qat is not None:
            groups[Q.EMA_QAT_GROUP] = self.ema_qat.state_dict()
        return groups

    def _switch_qat(self, epoch: int) -> None:
        """Fake quantisation on from the QAT start epoch; once the observers have seen data it stays on (a
        resumed run given more epochs does not go back to float)."""
        if self.qat is None:
            return
        started = any(int(fq.updates) > 0 for fq in self.qat.observers.values())
        on = started or epoch >= Q.qat_start_epoch(self.c)
        for qat in (self.qat, self.ema_qat):
            if qat is not None:
                qat.set_enabled(on)

    def _after_step_qat(self, ema_decay: float | None) -> None:
        if self.qat is None or not self.qat.enabled:
            return
        if self.dist.enabled:  # one set of ranges: the processes' averaged
            flat = self.qat.flat_ranges()
            D.all_reduce_tensor(flat, self.dist)
            self.qat.load_flat_ranges(flat / self.dist.world_size)
        if self.ema_qat is not None and ema_decay is not None:
            self.ema_qat.ema_update(self.qat, ema_decay)

    def _convert_int8(self, val_set: Dataset, data_info: dict[str, Any]) -> dict[str, Any]:
        """The end of a QAT run: model-int8.onnx from the EMA weights (the model's without EMA) and the learned
        ranges, evaluated, reloaded and evaluated again (done once; a resumed finished run reuses the record)."""
        done = [r for r in read_metrics(self.out, "int8") if r.get("step") == self.global_step]
        if done and (self.out / Q.INT8_FILE).is_file():
            return done[-1]
        model, qat = (self.ema.module, self.ema_qat) if self.ema is not None else (self.raw_model, self.qat)
        qat.set_enabled(True)
        calibration = Q.run_calibration(None if self.train_set_override is not None else data_info, val_set)
        record = Q.convert_run(model, qat, self.out, data_info, val_set, calibration,
                               threads=torch.get_num_threads(), log=self.log)
        record = {"kind": "int8", "epoch": self.c.epochs, "step": self.global_step, **record}
        self._write_metrics(record)
        return record

    # -- timing
    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.session_start)

    def _epoch_elapsed(self) -> float:
        return self.epoch_elapsed_before + (time.perf_counter() - self.epoch_session_start)

    # -- the run
    def run(self) -> dict[str, Any]:
        device = resolve_device(self.given.device)
        self.dist = D.setup(device)
        try:
            if device.type == "cuda" and self.dist.enabled:
                device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(device)
            self.device = device
            return self._run()
        finally:
            D.teardown(self.dist)

    def _run(self) -> dict[str, Any]:
        c = self.c = self._prepare_run_dir()
        D.barrier(self.dist)  # every rank has checked the folder before rank 0 changes it
        if c.threads is not None:
            torch.set_num_threads(c.threads)
        if c.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(c.seed)
        # The architecture first, so that a bad model name fails before any data is read. A resumed run uses the
        # spec recorded in its directory (the original spec file may have changed or gone).
        if c.qat:
            Q.check_deploy_extra()  # the int8 conversion at the end needs it: fail now, not after training
        if c.resume:
            base = ArchSpec.load(self.out / "spec.json")
        elif c.spec is None and c.model is None:  # --init gives the architecture
            base = Q.init_spec(c.init)
            if base is None:
                raise ValueError(f"--init {c.init} records no architecture: give --model or --spec")
        else:
            base = ArchSpec.load(c.spec) if c.spec is not None else zoo.get_spec(c.model, c.width_mult)
        if c.resolution is None:  # the recipe leaves it to the spec (224 for the zoo's ImageNet models)
            c = self.c = dataclasses.replace(c, resolution=base.resolution)

        train_set, val_set, data_info = self._datasets()
        if c.resume:
            spec = base
            if (spec.in_channels, spec.num_classes) != (data_info["channels"], len(data_info["classes"])):
                raise ValueError(f"--resume: the data has {data_info['channels']} channel(s) and "
                                 f"{len(data_info['classes'])} classes; the run's spec {spec.in_channels} and "
                                 f"{spec.num_classes}")
        else:
            spec = model_spec(base, c, data_info["channels"], len(data_info["classes"]))
        self.spec = spec
        seed_everything(c.seed)  # the same initial weights on every rank and in every run with this seed
        self.raw_model = MobileNetV3(spec).to(self.device)
        if c.init is not None and not c.resume:
            source = Q.load_init(self.raw_model, c.init, spec)
            self.log(f"starting from the {source['weights']} weights of {source['file']}")
        self.channels_last = bool(c.channels_last)
        if self.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        self.amp = c.amp == "bf16" or (c.amp == "auto" and self.device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
        self.ema = ModelEMA(self.raw_model, c.ema_decay) if c.ema_decay > 0 else None
        self.optimizer = make_optimizer(self.raw_model, c)
        self.qat = self.ema_qat = None
        if c.qat:  # attached now (observers in every checkpoint), switched on for the last qat_epochs epochs
            from ..deploy.qat import prepare_qat

            self.qat = prepare_qat(self.raw_model)
            self.ema_qat = prepare_qat(self.ema.module) if self.ema is not None else None
            self._switch_qat(0)
        world = self.dist.world_size
        if c.batch_size % (world * c.accum_steps):
            raise ValueError(f"batch size {c.batch_size} must be divisible by processes x accum_steps "
                             f"({world} x {c.accum_steps})")
        steps_per_epoch = len(train_set) // c.batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"the training set ({len(train_set)} images) is smaller than one batch ({c.batch_size})")
        total_steps = steps_per_epoch * c.epochs
        self.schedule = LRSchedule(c.lr, steps_per_epoch, total_steps, c.schedule, c.warmup_epochs, c.decay_rate,
                                   c.decay_epochs, c.min_lr)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)

        # State that a checkpoint carries.
        self.global_step, self.best, self.best_epoch = 0, None, None
        self.sums = {"loss": 0.0, "correct": 0, "count": 0}
        self.window = {"loss": 0.0, "correct": 0, "count": 0}
        self.elapsed_before = self.epoch_elapsed_before = 0.0
        self.last_ckpt: dict[str, Any] | None = None
        start_epoch, start_batch = 0, 0
        if c.resume:
            start_epoch, start_batch = self._load_checkpoint()
        else:
            seed_everything(mix_seed(c.seed, self.dist.rank, 1))  # per-rank dropout stream
        self.session_start = time.perf_counter()

        derived = {
            "world_size": world, "per_process_batch": c.batch_size // world, "micro_batch":
                c.batch_size // world // c.accum_steps, "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps, "warmup_steps": self.schedule.warmup_steps, "device": str(self.device),
            "amp": self.amp, "channels_last": self.channels_last, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in self.raw_model.parameters()), "torch": torch.__version__,
        }
        self.tb = None
        if self.dist.is_main:
            if not c.resume:
                self._clear_old_run()
            self.out.mkdir(parents=True, exist_ok=True)
            C.atomic_write_json(self.out / "config.json", {"format": 1, "train": c.to_dict(), "data": data_info,
                                                          "derived": derived})
            if not c.resume:
                C.atomic_write_text(self.out / "spec.json", spec.to_json() + "\n")
            self.tb = self._tensorboard()
        D.barrier(self.dist)

        self.model: nn.Module = self.raw_model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.raw_model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if c.compile:
            # Training steps only (evaluation runs the eager modules); built on the first steps, once per session.
            self.model = torch.compile(self.model)
        val_loader = self._loader(SeededSamples(val_set), sampler=ShardedRange(len(val_set), self.dist.rank, world),
                                  batch_size=c.eval_batch_size)
        seeded_train = SeededSamples(train_set)
        num_classes = len(data_info["classes"])
        self.log(f"training {spec.name} ({derived['params']:,} params) on {c.data} at {c.resolution}px: "
                 f"{c.epochs} epochs x {steps_per_epoch} steps of {c.batch_size} images, peak lr {c.lr:g}, "
                 f"{world} process(es), {derived['threads']} thread(s), device {self.device} -> {self.out}")

        progress = _Progress(self.dist.is_main and not c.quiet)
        interrupted = False
        if start_epoch >= c.epochs:
            self.log(f"{self.out} has already trained {start_epoch} of {c.epochs} epochs; nothing to do "
                     f"(give --epochs to train longer)")
        with _StopFlag() as stop:
            for epoch in range(start_epoch, c.epochs):
                first = start_batch if epoch == start_epoch else 0
                if first == 0:
                    self.sums = {"loss": 0.0, "correct": 0, "count": 0}
                    self.epoch_elapsed_before = 0.0
                self.epoch_session_start = time.perf_counter()
                self._switch_qat(epoch)
                sampler = EpochBatchSampler(len(train_set), c.batch_size, seed=c.seed, epoch=epoch, start=first,
                                            rank=self.dist.rank, world_size=world)
                loader = self._loader(seeded_train, batch_sampler=sampler)
                self.model.train()
                progress.start(steps_per_epoch, first, f"epoch {epoch + 1}/{c.epochs}")
                images_this_session, t0 = 0, time.perf_counter()
                lr = self.schedule(self.global_step)
                stopped_mid_epoch = False
                for batch_index, batch in enumerate(loader, start=first):
                    if batch is None:
                        continue
                    lr = self.schedule(self.global_step)
                    n, loss_sum, correct = self._step(batch, lr, epoch, batch_index)
                    images_this_session += n * world
                    for acc in (self.sums, self.window):
                        acc["loss"] += loss_sum
                        acc["correct"] += correct
                        acc["count"] += n
                    rate = images_this_session / max(1e-9, time.perf_counter() - t0)
                    progress.update(loss=f"{loss_sum / max(n, 1):.3f}", acc=f"{100.0 * correct / max(n, 1):.1f}",
                                    img_s=f"{rate:.0f}")
                    if c.log_every_steps and self.global_step % c.log_every_steps == 0:
                        self._log_window(epoch, lr, rate)
                    end_of_epoch = batch_index + 1 == steps_per_epoch
                    if D.any_flag(stop.raised, self.dist, self.device):
                        interrupted = True
                        if not end_of_epoch:  # at the end of the epoch, finish it (evaluate, checkpoint) first
                            self._save_checkpoint(epoch, batch_index + 1)
                            stopped_mid_epoch = True
                            break
                    elif not end_of_epoch and c.checkpoint_every_steps and (
                            self.global_step % c.checkpoint_every_steps == 0):
                        self._save_checkpoint(epoch, batch_index + 1)
                progress.close()
                if not stopped_mid_epoch:
                    self._end_epoch(epoch, lr, self._epoch_elapsed(), val_loader, num_classes, images_this_session,
                                    time.perf_counter() - t0)
                    self._save_checkpoint(epoch + 1, 0)
                if interrupted:
                    self.log(f"interrupted at epoch {epoch + 1}, step {self.global_step}; checkpoint saved "
                             f"({self._last_ckpt_name()}); continue with --resume")
                    break
        int8 = None
        finished = bool(self.last_ckpt) and self.last_ckpt["epoch"] >= c.epochs and self.last_ckpt["batch"] == 0
        if self.qat is not None and finished and not interrupted:
            if self.dist.is_main:
                int8 = self._convert_int8(val_set, data_info)
            D.barrier(self.dist)
        if self.tb is not None:
            self.tb.close()
        epochs = read_metrics(self.out) if self.dist.is_main else []
        summary = {
            "run_dir": str(self.out), "rank": self.dist.rank, "interrupted": interrupted, "epochs": c.epochs,
            "global_step": self.global_step, "last_epoch": epochs[-1] if epochs else None, "best_top1": self.best,
            "best_epoch": self.best_epoch, "wall_time_s": self._elapsed(),
        }
        if int8 is not None:
            summary["int8"] = {k: v for k, v in int8.items() if k not in ("kind", "checks", "graph_changes")}
        return summary

    def _step(self, batch, lr: float, epoch: int, batch_index: int) -> tuple[int, float, int]:
        c = self.c
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = batch
        x, y = to_device(x, self.device, self.channels_last), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        xs, ys = x.chunk(c.accum_steps), y.chunk(c.accum_steps)
        losses, corrects = [], []
        for i, (xc, yc) in enumerate(zip(xs, ys, strict=True)):
            sync = nullcontext()
            if self.dist.enabled and i < len(xs) - 1:
                sync = self.model.no_sync()
            with sync:
                with autocast_context(self.device, self.amp):
                    logits = self.model(xc)
                    loss = self.criterion(logits.float(), yc)
                (loss * (len(yc) / len(y))).backward()
            losses.append(loss.detach() * len(yc))
            corrects.append((logits.detach().argmax(dim=1) == yc).sum())
        loss_sum = torch.stack(losses).sum()
        bad = not bool(torch.isfinite(loss_sum))
        if D.any_flag(bad, self.dist, self.device):
            self._write_metrics({"kind": "diverged", "epoch": epoch + 1, "step": self.global_step + 1,
                                 "batch": batch_index + 1, "loss": float(loss_sum) / len(y), "lr": lr})
            raise TrainingDiverged(
                f"non-finite loss ({float(loss_sum) / len(y)}) at epoch {epoch + 1}, step {self.global_step + 1} "
                f"(batch {batch_index + 1} of the epoch); training stopped. The last good checkpoint "
                f"({self._last_ckpt_name()}) is kept: lower the learning rate (--lr) or clip gradients "
                f"(--grad-clip), then continue with --resume")
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip)
        self.optimizer.step()
        decay = self.ema.update(self.raw_model, self.global_step) if self.ema is not None else None
        self._after_step_qat(decay)
        self.global_step += 1
        return len(y), float(loss_sum), int(torch.stack(corrects).sum())

    def _log_window(self, epoch: int, lr: float, rate: float) -> None:
        totals = D.all_reduce_sum([self.window["loss"], self.window["correct"], self.window["count"]], self.dist,
                                  self.device)
        count = max(totals[2], 1)
        self._write_metrics({"kind": "step", "epoch": epoch + 1, "step": self.global_step, "lr": lr,
                             "train_loss": totals[0] / count, "train_acc": 100.0 * totals[1] / count,
                             "images_per_s": rate})
        self.window = {"loss": 0.0, "correct": 0, "count": 0}

    def _end_epoch(self, epoch: int, lr: float, train_time: float, val_loader, num_classes: int,
                   images_this_session: int, session_time: float) -> dict[str, Any]:
        c = self.c
        totals = D.all_reduce_sum([self.sums["loss"], self.sums["correct"], self.sums["count"]], self.dist,
                                  self.device)
        count = max(totals[2], 1)
        t_eval = time.perf_counter()
        if self.dist.enabled:
            self._sync_buffers(self.raw_model)
        kwargs = dict(device=self.device, channels_last=self.channels_last, amp=self.amp, dist=self.dist)
        val = evaluate(self.raw_model, val_loader, num_classes, **kwargs)
        record: dict[str, Any] = {
            "kind": "epoch", "epoch": epoch + 1, "step": self.global_step, "lr": lr,
            "train_loss": totals[0] / count, "train_acc": 100.0 * totals[1] / count,
            "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
        }
        if self.qat is not None:
            record["qat"] = self.qat.enabled  # the figures are the fake-quantised model's
        score = val["top1"]
        if self.ema is not None:
            if self.dist.enabled:
                self._sync_buffers(self.ema.module)
            ema = evaluate(self.ema.module, val_loader, num_classes, **kwargs)
            record.update(ema_val_loss=ema["loss"], ema_val_top1=ema["top1"], ema_val_top5=ema["top5"])
            score = ema["top1"]
        eval_time = time.perf_counter() - t_eval
        record.update(images_per_s=images_this_session / max(session_time, 1e-9), epoch_time_s=train_time,
                      eval_time_s=eval_time, wall_time_s=self._elapsed())
        if self.best is None or score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            if self.dist.is_main:
                C.atomic_write_bytes(self.out / C.BEST, C.weights_bytes(
                    self.raw_model.state_dict(), self.ema.state_dict() if self.ema else None, self.spec,
                    self._qat_groups(), epoch=epoch + 1, global_step=self.global_step, top1=score))
        record.update(best_top1=self.best, best_epoch=self.best_epoch)
        self._write_metrics(record)
        ema_part = f", EMA top-1 {record['ema_val_top1']:.2f}%" if self.ema is not None else ""
        self.log(f"epoch {epoch + 1}/{c.epochs}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.2f}%,"
                 f" val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%{ema_part}; lr {lr:.3g}, "
                 f"{record['images_per_s']:.0f} img/s, epoch {train_time:.0f}s + eval {eval_time:.0f}s")
        return record

    def _tensorboard(self):
        if self.c.tensorboard is False:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if self.c.tensorboard:
                self.log("tensorboard is not installed (pip install tensorboard); not logging to it")
            return None
        # On resume, events logged after the checkpoint are purged, as metrics.jsonl's lines are: they come again.
        purge = self.global_step + 1 if self.c.resume else None
        return SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=purge)


def train(config: TrainConfig | None = None, *, train_set: Dataset | None = None, val_set: Dataset | None = None,
          log=None, **options: Any) -> dict[str, Any]:
    """Train a model; returns a summary (last epoch's metrics, best top-1, wall time, whether interrupted).

    Give a :class:`TrainConfig` or its fields as keyword arguments (``train(out="runs/x", model="mobilenet_v3_small",
    data="fashion-mnist")``). ``train_set``/``val_set`` replace the data named in the config (datasets of
    ``(image, label)`` with ``classes``, ``channels``, ``mean`` and ``std`` attributes). ``log`` receives the
    progress messages (default: stderr, unless ``quiet``).

    Raises ``ValueError`` for bad options, :class:`~.checkpoint.CheckpointError` for unusable checkpoints and
    :class:`TrainingDiverged` when the loss stops being finite.
    """
    if config is None:
        config = TrainConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    return Trainer(config, train_set, val_set, log).run()

