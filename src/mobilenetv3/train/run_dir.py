"""A run directory: checking and clearing it, the files that describe the run (``config.json``, ``spec.json``),
the metrics log (``metrics.jsonl``, mirrored to TensorBoard) and reading that log back.

Layout: ``config.json`` (the resolved options, the data and derived settings), ``spec.json`` (the architecture
trained), ``metrics.jsonl`` (one JSON record a line: ``"kind"`` ``epoch``, ``step``, ``int8`` or ``diverged``),
the checkpoints (:mod:`.checkpoint`) and ``tensorboard/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spec import ArchSpec
from .checkpoint import (
    BEST,
    POINTER,
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    holds_checkpoint,
    read_pointer,
    remove_stale_temporaries,
)
from .config import TrainConfig, merge_resume_config, resolve
from .init_weights import with_init_defaults

RUN_FILES = ("config.json", "spec.json", "metrics.jsonl", POINTER, BEST)
# Metrics that measure the machine, not the run: a resumed run's differ from an uninterrupted one's.
TIMING_KEYS = ("images_per_s", "epoch_time_s", "eval_time_s", "wall_time_s")


def _existing_run_files(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return sorted({p.name for p in out.iterdir() if p.name in RUN_FILES or p.name.startswith("ckpt-")})


def read_metrics_file(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` file, up to a line cut short by a kill."""
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
    return [r for r in read_metrics_file(Path(run_dir) / "metrics.jsonl") if kind is None or r.get("kind") == kind]


def append_metrics(out: Path, record: dict[str, Any], tensorboard=None) -> None:
    """Append ``record`` to ``out/metrics.jsonl``, synced to disk (a kill right after loses nothing), and its
    numbers to TensorBoard as ``<kind>/<key>`` at the record's step."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if tensorboard is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])
        tensorboard.flush()


def open_tensorboard(out: Path, config: TrainConfig, global_step: int, log: Callable[[str], None]):
    """A SummaryWriter on ``out/tensorboard`` (None when turned off, or not installed and not asked for)."""
    if config.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if config.tensorboard:
            log("tensorboard is not installed (pip install tensorboard); not logging to it")
        return None
    # On resume, events logged after the checkpoint are purged, as metrics.jsonl's lines are: they come again.
    purge = global_step + 1 if config.resume else None
    return SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge)


def record_run(out: Path, config: TrainConfig, data_info: dict[str, Any], derived: dict[str, Any],
               spec: ArchSpec) -> None:
    """Write ``config.json`` (again on resume: the options that may change there) and, for a new run,
    ``spec.json``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"format": 1, "train": config.to_dict(), "data": data_info,
                                            "derived": derived})
    if not config.resume:
        atomic_write_text(out / "spec.json", spec.to_json() + "\n")


class RunDirectory:
    """The trainer's checks of its run directory before anything is written (a mixin of
    :class:`~.loop.Trainer`: reads ``self.given``, sets ``self.out``)."""

    given: TrainConfig
    out: Path

    def _prepare_run_dir(self) -> TrainConfig:
        given = self.given
        out = Path(given.out) if given.out else None
        if out is None:
            raise ValueError("an output directory (--out) is required")
        if given.resume and given.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if given.resume:
            pointer = read_pointer(out) if out.is_dir() else None
            if pointer is None:
                raise CheckpointError(f"--resume: no checkpoint to resume from in {out} "
                                      f"({POINTER} not found); start the run without --resume")
            cfg_path = out / "config.json"
            try:
                saved = json.loads(cfg_path.read_text())["train"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"--resume: cannot read the run's config {cfg_path}: {e}") from None
            config = resolve(merge_resume_config(saved, given))
        else:
            config = resolve(with_init_defaults(given))
            existing = _existing_run_files(out)
            # A directory whose run stopped before its first checkpoint (a corrupt image with --on-corrupt fail,
            # a typo noticed at once) holds nothing to protect: the same command reuses it.
            if holds_checkpoint(out) and not given.overwrite:
                raise ValueError(f"{out} already holds a training run ({', '.join(existing[:4])}); pass --resume to "
                                 f"continue it or --overwrite to start afresh")
        self.out = out
        return config

    def _clear_old_run(self) -> None:
        for name in _existing_run_files(self.out):
            (self.out / name).unlink(missing_ok=True)
        remove_stale_temporaries(self.out)
