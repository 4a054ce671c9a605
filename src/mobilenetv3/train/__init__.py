"""Training and evaluation: the loop, RMSProp in TensorFlow's form, weight EMA, schedules, checkpoints, DDP.

``train(out=..., model=..., data=...)`` runs a training (one process, or many under torchrun) into a run
directory; ``evaluate_run(run_dir)`` and ``predict(run_dir, images)`` need nothing but that directory.
"""

from .checkpoint import CheckpointError, load_weights, read_state, read_weights
from .config import RECIPES, TrainConfig, resolve
from .ema import ModelEMA, ema_decay_at
from .evaluate import evaluate, evaluate_run, load_run, predict
from .loop import TrainingDiverged, read_metrics, train
from .rmsprop import RMSpropTF
from .sampler import EpochBatchSampler, SeededSamples
from .schedule import LRSchedule, scaled_lr

__all__ = [
    "RECIPES", "CheckpointError", "EpochBatchSampler", "LRSchedule", "ModelEMA", "RMSpropTF", "SeededSamples",
    "TrainConfig", "TrainingDiverged", "ema_decay_at", "evaluate", "evaluate_run", "load_run", "load_weights",
    "predict", "read_metrics", "read_state", "read_weights", "resolve", "scaled_lr", "train",
]
