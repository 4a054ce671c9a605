"""The training loop: one process or many (torchrun), checkpointed often enough to resume exactly after a kill.

What is trained is a :class:`~mobilenetv3.tasks.Task` (``TrainConfig.task``): it gives the model, the batches,
the loss and the metrics; everything else (epochs, steps, gradient accumulation, AMP, EMA, DDP, QAT,
checkpoints) is the same for every task.

Exact resume: a run killed at any point and resumed with ``resume=True`` ends with the same weights and the same
metrics (timings aside) as a run never interrupted, bit for bit on CPU. What makes it so:

* the sample order of each epoch and each sample's augmentation are fixed by ``(seed, epoch, index)``
  (:mod:`.sampler`), so the resumed run skips the batches already trained on and sees the same crops;
* the checkpoint holds everything that changes during training: weights, EMA, optimizer state, the step, the
  position in the epoch, the running sums of the epoch's metrics, and the RNG states of torch, NumPy and Python
  (dropout draws from torch's) (:mod:`.state`);
* DataLoaders get a private generator, so creating one mid-epoch draws nothing from the global RNG;
* metrics lines written after the checkpoint being resumed from are dropped from ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..tasks import Task, autocast_context, get_task, to_device
from . import distributed
from .config import TrainConfig
from .datasets import load_datasets, make_loader
from .ema import ModelEMA
from .evaluate import resolve_device
from .init_weights import apply_init
from .optim import make_optimizer, param_groups
from .progress import Progress, StopFlag
from .qat_phase import (
    INT8_FILE,
    after_qat_step,
    check_deploy_extra,
    convert_run,
    qat_groups,
    run_calibration,
    switch_qat,
)
from .run_dir import TIMING_KEYS, RunDirectory, append_metrics, open_tensorboard, read_metrics, record_run
from .run_spec import base_spec, model_spec
from .sampler import EpochBatchSampler, SeededSamples, ShardedRange, mix_seed
from .schedule import LRSchedule
from .state import TrainerState, TrainingDiverged, best_bytes, seed_everything

# Names this module has always offered (tests and users import them from here).
__all__ = ["TIMING_KEYS", "Trainer", "TrainingDiverged", "model_spec", "param_groups", "read_metrics", "train"]


class Trainer(RunDirectory, TrainerState):
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
        if self.dist.is_main:
            append_metrics(self.out, record, self.tb)

    def _loader(self, dataset: Dataset, **sizes: Any):
        return make_loader(dataset, self.task.collate, self.device, self.c.workers, **sizes)

    def _fresh_sums(self) -> dict[str, float]:
        return {"loss": 0.0, **{key: 0 for key in self.task.step_keys}, "count": 0}

    def _totals(self, sums: dict[str, float]) -> dict[str, float]:
        """``sums`` added over the processes."""
        keys = ("loss", *self.task.step_keys, "count")
        return dict(zip(keys, distributed.all_reduce_sum([sums[k] for k in keys], self.dist, self.device),
                        strict=True))

    def _qat_groups(self) -> dict[str, dict[str, torch.Tensor]] | None:
        return qat_groups(self.qat, self.ema_qat)

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.session_start)

    def _epoch_elapsed(self) -> float:
        return self.epoch_elapsed_before + (time.perf_counter() - self.epoch_session_start)

    # -- the run
    def run(self) -> dict[str, Any]:
        device = resolve_device(self.given.device)
        self.dist = distributed.setup(device)
        try:
            if device.type == "cuda" and self.dist.enabled:
                device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(device)
            self.device = device
            return self._run()
        finally:
            distributed.teardown(self.dist)

    def _setup(self) -> tuple[Dataset, Dataset, dict[str, Any], int]:
        """Everything before the first step: options, data, task, model, EMA, optimizer, QAT, schedule, the state
        restored on resume, the run files. Returns the datasets, the data record and the steps per epoch."""
        c = self.c = self._prepare_run_dir()
        distributed.barrier(self.dist)  # every rank has checked the folder before rank 0 changes it
        if c.threads is not None:
            torch.set_num_threads(c.threads)
        if c.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(c.seed)
        if c.qat:
            check_deploy_extra()  # the int8 conversion at the end needs it: fail now, not after training
        base = base_spec(c, self.out)
        if c.resolution is None:  # the recipe leaves it to the spec (224 for the zoo's ImageNet models)
            c = self.c = dataclasses.replace(c, resolution=get_task(c.task).spec_resolution(base))

        train_set, val_set, data_info = load_datasets(c, self.train_set_override, self.val_set_override)
        self.task: Task = get_task(c.task).for_run(data_info, c.to_dict())
        if c.resume:
            spec = base
            try:
                self.task.check_spec(spec)
            except ValueError as e:
                raise ValueError(f"--resume: {e}") from None
        else:
            spec = model_spec(self.task.adapt_spec(base), c)
        self.spec = spec
        seed_everything(c.seed)  # the same initial weights on every rank and in every run with this seed
        self.raw_model = self.task.build_model(spec).to(self.device)
        if c.init is not None and not c.resume:
            self.log(apply_init(self.raw_model, c.init, spec, c.task))
        self.channels_last = bool(c.channels_last)
        if self.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        self.amp = c.amp == "bf16" or (c.amp == "auto" and self.device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
        self.ema = ModelEMA(self.raw_model, c.ema_decay) if c.ema_decay > 0 else None
        self.optimizer = make_optimizer(self.raw_model, c)
        self.qat = self.ema_qat = None
        if c.qat:  # attached now (observers in every checkpoint), switched on for the last qat_epochs epochs
            from ..deploy.fake_quant import prepare_qat

            self.qat = prepare_qat(self.raw_model)
            self.ema_qat = prepare_qat(self.ema.module) if self.ema is not None else None
            switch_qat(self.qat, self.ema_qat, 0, c)
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

        # State that a checkpoint carries.
        self.global_step, self.best, self.best_epoch = 0, None, None
        self.sums, self.window = self._fresh_sums(), self._fresh_sums()
        self.elapsed_before = self.epoch_elapsed_before = 0.0
        self.last_ckpt: dict[str, Any] | None = None
        self.pending_best: bytes | None = None
        self.start = (0, 0)
        if c.resume:
            self.start = self._load_checkpoint()
        else:
            seed_everything(mix_seed(c.seed, self.dist.rank, 1))  # per-rank dropout stream
        self.session_start = time.perf_counter()

        self.derived = {
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
            record_run(self.out, c, data_info, self.derived, spec)
            self.tb = open_tensorboard(self.out, c, self.global_step, self.log)
        distributed.barrier(self.dist)

        self.model: nn.Module = self.raw_model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.raw_model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if c.compile:
            # Training steps only (evaluation runs the eager modules); built on the first steps, once per session.
            self.model = torch.compile(self.model)
        return train_set, val_set, data_info, steps_per_epoch

    def _run(self) -> dict[str, Any]:
        train_set, val_set, data_info, steps_per_epoch = self._setup()
        c, world, (start_epoch, start_batch) = self.c, self.dist.world_size, self.start
        val_loader = self._loader(SeededSamples(val_set), sampler=ShardedRange(len(val_set), self.dist.rank, world),
                                  batch_size=c.eval_batch_size)
        seeded_train = SeededSamples(train_set)
        self.log(f"training {self.spec.name} ({self.derived['params']:,} params) on {c.data} at {c.resolution}px: "
                 f"{c.epochs} epochs x {steps_per_epoch} steps of {c.batch_size} images, peak lr {c.lr:g}, "
                 f"{world} process(es), {self.derived['threads']} thread(s), device {self.device} -> {self.out}")

        progress = Progress(self.dist.is_main and not c.quiet)
        interrupted = False
        if start_epoch >= c.epochs:
            self.log(f"{self.out} has already trained {start_epoch} of {c.epochs} epochs; nothing to do "
                     f"(give --epochs to train longer)")
        with StopFlag() as stop:
            for epoch in range(start_epoch, c.epochs):
                first = start_batch if epoch == start_epoch else 0
                if first == 0:
                    self.sums = self._fresh_sums()
                    self.epoch_elapsed_before = 0.0
                self.epoch_session_start = time.perf_counter()
                switch_qat(self.qat, self.ema_qat, epoch, c)
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
                    n, loss_sum, stats = self._step(batch, lr, epoch, batch_index)
                    images_this_session += n * world
                    for acc in (self.sums, self.window):
                        acc["loss"] += loss_sum
                        for key in self.task.step_keys:
                            acc[key] += stats[key]
                        acc["count"] += n
                    rate = images_this_session / max(1e-9, time.perf_counter() - t0)
                    shown = {k.removeprefix("train_"): f"{v:.1f}"
                             for k, v in self.task.train_metrics(stats, max(n, 1)).items()}
                    progress.update(loss=f"{loss_sum / max(n, 1):.3f}", **shown, img_s=f"{rate:.0f}")
                    if c.log_every_steps and self.global_step % c.log_every_steps == 0:
                        self._log_window(epoch, lr, rate)
                    end_of_epoch = batch_index + 1 == steps_per_epoch
                    if distributed.any_flag(stop.raised, self.dist, self.device):
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
                    self._end_epoch(epoch, lr, self._epoch_elapsed(), val_loader, images_this_session,
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
            distributed.barrier(self.dist)
        if self.tb is not None:
            self.tb.close()
        epochs = read_metrics(self.out) if self.dist.is_main else []
        summary = {
            "run_dir": str(self.out), "rank": self.dist.rank, "interrupted": interrupted, "epochs": c.epochs,
            "global_step": self.global_step, "last_epoch": epochs[-1] if epochs else None,
            f"best_{self.task.primary_metric}": self.best, "best_epoch": self.best_epoch,
            "wall_time_s": self._elapsed(),
        }
        if int8 is not None:
            summary["int8"] = {k: v for k, v in int8.items() if k not in ("kind", "checks", "graph_changes")}
        return summary

    def _step(self, batch, lr: float, epoch: int, batch_index: int) -> tuple[int, float, dict[str, float]]:
        """One optimizer step over ``batch`` (in ``accum_steps`` micro-batches); returns the number of samples,
        the summed loss and the task's summed step statistics."""
        task = self.task
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = batch
        x, y = to_device(x, self.device, self.channels_last), task.targets_to(y, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        xs, ys = x.chunk(self.c.accum_steps), task.split_targets(y, self.c.accum_steps)
        losses, stats = [], []
        for i, (xc, yc) in enumerate(zip(xs, ys, strict=True)):
            sync = nullcontext()
            if self.dist.enabled and i < len(xs) - 1:
                sync = self.model.no_sync()
            with sync:
                with autocast_context(self.device, self.amp):
                    outputs = self.model(xc)
                    loss = task.loss(outputs, yc)
                (loss * (len(yc) / len(y))).backward()
            losses.append(loss.detach() * len(yc))
            stats.append(task.step_stats(outputs, yc))
        loss_sum = torch.stack(losses).sum()
        bad = not bool(torch.isfinite(loss_sum))
        if distributed.any_flag(bad, self.dist, self.device):
            self._write_metrics({"kind": "diverged", "epoch": epoch + 1, "step": self.global_step + 1,
                                 "batch": batch_index + 1, "loss": float(loss_sum) / len(y), "lr": lr})
            raise TrainingDiverged(
                f"non-finite loss ({float(loss_sum) / len(y)}) at epoch {epoch + 1}, step {self.global_step + 1} "
                f"(batch {batch_index + 1} of the epoch); training stopped. The last good checkpoint "
                f"({self._last_ckpt_name()}) is kept: lower the learning rate (--lr) or clip gradients "
                f"(--grad-clip), then continue with --resume")
        if self.c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.c.grad_clip)
        self.optimizer.step()
        decay = self.ema.update(self.raw_model, self.global_step) if self.ema is not None else None
        after_qat_step(self.qat, self.ema_qat, decay, self.dist)
        self.global_step += 1
        return len(y), float(loss_sum), {k: torch.stack([s[k] for s in stats]).sum().item() for k in task.step_keys}

    def _log_window(self, epoch: int, lr: float, rate: float) -> None:
        totals = self._totals(self.window)
        count = max(totals["count"], 1)
        self._write_metrics({"kind": "step", "epoch": epoch + 1, "step": self.global_step, "lr": lr,
                             "train_loss": totals["loss"] / count, **self.task.train_metrics(totals, count),
                             "images_per_s": rate})
        self.window = self._fresh_sums()

    def _end_epoch(self, epoch: int, lr: float, train_time: float, val_loader, images_this_session: int,
                   session_time: float) -> dict[str, Any]:
        task, primary = self.task, self.task.primary_metric
        totals = self._totals(self.sums)
        count = max(totals["count"], 1)
        t_eval = time.perf_counter()
        if self.dist.enabled:
            self._sync_buffers(self.raw_model)
        kwargs = dict(device=self.device, channels_last=self.channels_last, amp=self.amp,
                      reduce=lambda t: distributed.all_reduce_tensor(t, self.dist))
        val = task.evaluate(self.raw_model, val_loader, **kwargs)
        record: dict[str, Any] = {
            "kind": "epoch", "epoch": epoch + 1, "step": self.global_step, "lr": lr,
            "train_loss": totals["loss"] / count, **task.train_metrics(totals, count),
            **{f"val_{key}": val[key] for key in task.eval_metrics},
        }
        if self.qat is not None:
            record["qat"] = self.qat.enabled  # the figures are the fake-quantised model's
        score = val[primary]
        if self.ema is not None:
            if self.dist.enabled:
                self._sync_buffers(self.ema.module)
            ema = task.evaluate(self.ema.module, val_loader, **kwargs)
            record.update({f"ema_val_{key}": ema[key] for key in task.eval_metrics})
            score = ema[primary]
        eval_time = time.perf_counter() - t_eval
        record.update(images_per_s=images_this_session / max(session_time, 1e-9), epoch_time_s=train_time,
                      eval_time_s=eval_time, wall_time_s=self._elapsed())
        if self.best is None or score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            if self.dist.is_main:
                self.pending_best = best_bytes(self.raw_model, self.ema, self.spec, self._qat_groups(),
                                               epoch=epoch + 1, global_step=self.global_step, **{primary: score})
        record.update({f"best_{primary}": self.best, "best_epoch": self.best_epoch})
        self._write_metrics(record)
        self.log(f"epoch {epoch + 1}/{self.c.epochs}: train loss {record['train_loss']:.4f} {task.describe(record)}; "
                 f"lr {lr:.3g}, {record['images_per_s']:.0f} img/s, epoch {train_time:.0f}s + eval {eval_time:.0f}s")
        return record

    def _convert_int8(self, val_set: Dataset, data_info: dict[str, Any]) -> dict[str, Any]:
        """The end of a QAT run: model-int8.onnx from the EMA weights (the model's without EMA) and the learned
        ranges, evaluated, reloaded and evaluated again (done once; a resumed finished run reuses the record)."""
        done = [r for r in read_metrics(self.out, "int8") if r.get("step") == self.global_step]
        if done and (self.out / INT8_FILE).is_file():
            return done[-1]
        model, qat = (self.ema.module, self.ema_qat) if self.ema is not None else (self.raw_model, self.qat)
        qat.set_enabled(True)
        calibration = run_calibration(None if self.train_set_override is not None else data_info, val_set)
        record = convert_run(model, qat, self.out, data_info, val_set, calibration,
                             threads=torch.get_num_threads(), log=self.log)
        record = {"kind": "int8", "epoch": self.c.epochs, "step": self.global_step, **record}
        self._write_metrics(record)
        return record


def train(config: TrainConfig | None = None, *, train_set: Dataset | None = None, val_set: Dataset | None = None,
          log=None, **options: Any) -> dict[str, Any]:
    """Train a model; returns a summary (last epoch's metrics, best score under the task's primary metric, e.g.
    ``best_top1``, wall time, whether interrupted).

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
