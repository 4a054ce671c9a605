"""Retraining a searched network with its seed's recipe: the last stage of NetAdapt and of the search pipeline.

The paper retrains the adapted network (section 4.2: NetAdapt's proposals are only fine-tuned briefly). Here the
seed run's recorded training options (``config.json``) are reused as they are, with the searched spec in place of
the seed's model: ``scratch`` trains from a fresh initialisation, as the paper; ``finetune`` starts from the
adapted weights (``--init``), a cheaper option. The retrain is an ordinary training run directory, so it resumes
like any other (``resume=True`` continues one that was killed).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig
from ..train.evaluate import read_run_config
from ..train.loop import train

RETRAIN_MODES = ("scratch", "finetune", "none")
# Options of the seed's run that describe that run, not the recipe: the new run sets them itself.
_RUN_FIELDS = ("out", "model", "spec", "width_mult", "init", "resume", "overwrite", "quiet", "tensorboard")


def retrain_config(seed_run: str | os.PathLike, spec_file: str | os.PathLike, out: str | os.PathLike, mode: str,
                   *, weights: str | os.PathLike | None = None, **changes: Any) -> TrainConfig:
    """The training options of the retrain: the seed run's, with ``spec_file`` as the model and ``out`` as the run
    directory; ``finetune`` starts from ``weights``. ``changes`` override any option (epochs, threads, ...)."""
    if mode not in RETRAIN_MODES[:2]:
        raise ValueError(f"retrain mode must be one of {', '.join(RETRAIN_MODES[:2])}, got {mode!r}")
    if mode == "finetune" and weights is None:
        raise ValueError("a fine-tune retrain needs the adapted weights")
    saved = dict(read_run_config(seed_run)["train"])
    for name in _RUN_FIELDS:
        saved.pop(name, None)
    config = TrainConfig.from_dict({**saved, "out": str(out), "spec": str(spec_file),
                                    "init": str(weights) if mode == "finetune" else None})
    return dataclasses.replace(config, **changes)


def retrain(seed_run: str | os.PathLike, spec_file: str | os.PathLike, out: str | os.PathLike, mode: str = "scratch",
            *, weights: str | os.PathLike | None = None, resume: bool | None = None, **changes: Any
            ) -> dict[str, Any]:
    """Run the retrain (:func:`retrain_config`) and return the training summary. ``resume`` defaults to continuing
    ``out`` when it holds a checkpoint."""
    if resume is None:
        resume = (Path(out) / "checkpoint.json").is_file()
    config = retrain_config(seed_run, spec_file, out, mode, weights=weights, resume=resume, **changes)
    return train(config)


__all__ = ["RETRAIN_MODES", "retrain", "retrain_config"]
