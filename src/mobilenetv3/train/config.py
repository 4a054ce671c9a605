"""Training configuration: every option of a run, with recipes that fill in what the caller leaves unset.

A field left ``None`` takes its value from the recipe; ``recipe="auto"`` picks ``fashion-mnist`` for the
Fashion-MNIST data, ``scenes`` and ``cityscapes`` for those segmentation data sets, ``det-scenes`` and ``det-coco``
for the detection task's data, and ``paper`` for anything else. The segmentation and detection tasks' data
defaults to ``scenes``. The resolved configuration (no ``None`` left except the truly
optional fields) is what a run records in ``config.json`` and what ``--resume`` reads back.

``paper`` (section 6.1.1 of the paper, with NOTES.md's readings): RMSProp (TF form) momentum 0.9, decay 0.9,
eps 1e-3; learning rate 0.1 at batch 4096, scaled linearly with the batch size; step decay x0.99 every 3 epochs
(the paper's "decay rate of 0.01 every 3 epochs" read as a 1% multiplicative decay; the TF reference recipes use
``decay_rate=0.97, decay_epochs=2.4``); L2 weight decay 1e-5 (BatchNorm parameters exempt, as in the TF
reference); dropout 0.2 and BatchNorm momentum 0.01 from the spec; weight EMA 0.9999; no label smoothing; 5
warm-up epochs and 350 epochs (the TPU reference's, which the paper does not state); Inception crops.

``fashion-mnist``: MobileNetV3 on Fashion-MNIST on a 2-core CPU in under 30 minutes; ``fashion-mnist-long``: the
same for 40 epochs with random erasing, for higher accuracy; see ``RECIPES``. ``scenes`` and ``det-scenes``:
segmentation and detection on the composed scenes (measured with fewer epochs and smaller scenes than their
defaults; ``docs/segmentation.md``, ``docs/detection.md``); ``cityscapes`` and ``det-coco``: starting points, not
measured (no such data on the machines this was written on).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from ..tasks import DEFAULT_TASK, TASKS
from .schedule import PAPER_BASE_BATCH, PAPER_BASE_LR, SCHEDULES

OPTIMIZERS = ("rmsprop", "sgd")
WD_EXEMPT = ("none", "norm", "norm_bias")
AMP_MODES = ("auto", "off", "bf16")
WEIGHTS = ("ema", "model")

RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(
        epochs=350, batch_size=4096, lr_base=PAPER_BASE_LR, lr_base_batch=PAPER_BASE_BATCH, schedule="step",
        warmup_epochs=5.0, decay_rate=0.99, decay_epochs=3.0, min_lr=0.0, optimizer="rmsprop", momentum=0.9,
        rmsprop_decay=0.9, rmsprop_eps=1e-3, weight_decay=1e-5, wd_exempt="norm", label_smoothing=0.0,
        ema_decay=0.9999, crop_scale=None, hflip=0.5, color_jitter=0.0, random_erase=0.0,
        crop_fraction=0.875,
    ),
    # Small images on a small CPU: SGD with momentum at lr 0.1 (batch 128) trains faster than the paper's RMSProp;
    # 80x80 inputs (28x28 upsampled, so Small's stride-32 trunk ends at 3x3) beat 64x64 at the same compute;
    # BatchNorm momentum 0.1, as the paper's 0.01 leaves the running statistics hundreds of steps behind the weights
    # in runs this short; mild crops (85-100% of the area), label smoothing 0.1, a faster EMA, no evaluation crop
    # (the garments fill the frame); weight decay 5e-4 (L2, BatchNorm exempt), as smaller decays plateaued lower.
    # 15 epochs fit a 30-minute job on 2 cores (measured: docs/training.md).
    "fashion-mnist": dict(
        epochs=15, batch_size=128, resolution=80, lr=0.1, lr_base=PAPER_BASE_LR, lr_base_batch=PAPER_BASE_BATCH,
        schedule="cosine", warmup_epochs=1.0, decay_rate=0.97, decay_epochs=2.4, min_lr=0.0, optimizer="sgd",
        momentum=0.9, rmsprop_decay=0.9, rmsprop_eps=1e-3, weight_decay=5e-4, wd_exempt="norm", bn_momentum=0.1,
        label_smoothing=0.1, ema_decay=0.999, crop_scale=(0.85, 1.0), hflip=0.5, color_jitter=0.0,
        random_erase=0.0, crop_fraction=1.0,
    ),
}
# The longer Fashion-MNIST recipe: the short one for 40 epochs, with random erasing (p 0.5, Zhong et al.'s setting
# for Fashion-MNIST) against the overfitting that longer runs bring (measured: docs/training.md).
RECIPES["fashion-mnist-long"] = {**RECIPES["fashion-mnist"], "epochs": 40, "random_erase": 0.5}

# Segmentation (the segmentation task): ``resolution`` is the side of the square training crop and ``crop_scale``
# the range of the random scale factor before cropping. Starting points, not yet measured on this machine:
# SGD with momentum and a cosine schedule, no label smoothing, weight decay 4e-5 (DeepLab's for MobileNets),
# BatchNorm momentum 0.1 for short runs. Scenes: 256x256 crops of the 256x512 canvases, scale 0.75-1.5;
# Cityscapes: DeepLab's 769 crops (768 here), scale 0.5-2.0, batch 8 at lr 0.01.
RECIPES["scenes"] = dict(
    RECIPES["fashion-mnist"], epochs=10, batch_size=16, resolution=256, lr=0.02, warmup_epochs=0.5,
    weight_decay=4e-5, label_smoothing=0.0, crop_scale=(0.75, 1.5), crop_fraction=1.0, eval_batch_size=32)
RECIPES["cityscapes"] = dict(
    RECIPES["fashion-mnist"], epochs=200, batch_size=8, resolution=768, lr=0.01, warmup_epochs=1.0,
    weight_decay=4e-5, label_smoothing=0.0, ema_decay=0.9999, crop_scale=(0.5, 2.0), crop_fraction=1.0,
    eval_batch_size=2)
SEG_RECIPES = {"scenes": "scenes", "cityscapes": "cityscapes"}  # data kind -> recipe picked by "auto"
SEG_TASK = "segmentation"
SEG_DEFAULT_DATA = "scenes"

# Detection (the detection task): guesses, not measured (docs/detection.md). Scenes: SGD with momentum and a cosine
# schedule as for segmentation, lr 0.02 at batch 16, the canvas as the input (scale 0.75-1.25 before the
# canvas-sized crop); COCO: torchvision's SSDLite reference (600 epochs, cosine, weight decay 4e-5, 320 inputs, lr
# 0.15 at batch 24 x 8 GPUs = 192) at batch 32 with the lr scaled linearly (0.025). Both without label smoothing.
RECIPES["det-scenes"] = dict(
    RECIPES["scenes"], epochs=20, batch_size=16, lr=0.02, warmup_epochs=1.0, crop_scale=(0.75, 1.25),
    eval_batch_size=16)
RECIPES["det-coco"] = dict(
    RECIPES["fashion-mnist"], epochs=600, batch_size=32, resolution=320, lr=0.025, warmup_epochs=5.0,
    weight_decay=4e-5, label_smoothing=0.0, crop_scale=(0.5, 1.5), crop_fraction=1.0, eval_batch_size=16)
DET_TASK = "detection"
DET_RECIPES = {"scenes": "det-scenes", "coco": "det-coco"}  # data kind -> recipe picked by "auto"

# Fields a resumed run may change; any other field given on resume must equal the run's recorded value.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "threads", "quiet", "checkpoint_every_steps", "log_every_steps",
                     "tensorboard", "eval_batch_size", "lr", "grad_clip", "compile", "keep")
# Fields that do not describe the run itself (not compared on resume, not part of the recipe).
RUNTIME_FIELDS = ("out", "resume", "overwrite", "quiet")
# Fields added after runs were recorded, with the value those runs had: their config.json reads as before.
RECORDED_DEFAULTS: dict[str, Any] = {"task": DEFAULT_TASK}


@dataclass
class TrainConfig:
    """Every option of a training run; ``None`` means "the recipe's value" (see the module docstring)."""

    out: str = ""
    model: str | None = None  # zoo name
    spec: str | None = None  # or a spec JSON file
    width_mult: float | None = None
    data: str | None = None  # "fashion-mnist", an image folder (ImageNet layout); "scenes[:...]", "cityscapes:PATH"
    data_dir: str | None = None
    val_split: str | None = None  # "val" (Fashion-MNIST: its test set, the only held-out split)
    holdout: int | None = None  # validate on N images held out of the training split instead of val_split
    recipe: str | None = None  # "auto", "paper", "fashion-mnist", "fashion-mnist-long"
    epochs: int | None = None
    batch_size: int | None = None  # global: images per optimizer step over all processes
    lr: float | None = None  # peak learning rate; default lr_base * batch_size / lr_base_batch
    lr_base: float | None = None
    lr_base_batch: int | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    decay_rate: float | None = None
    decay_epochs: float | None = None
    min_lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    rmsprop_decay: float | None = None
    rmsprop_eps: float | None = None
    weight_decay: float | None = None
    wd_exempt: str | None = None
    label_smoothing: float | None = None
    dropout: float | None = None  # default: the spec's
    bn_momentum: float | None = None  # PyTorch convention (1 - TF's decay); default: the spec's (0.01)
    ema_decay: float | None = None  # 0 turns the EMA off
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    accum_steps: int | None = None  # micro-batches per step (per process)
    resolution: int | None = None  # default: the recipe's, else the spec's
    channels: int | None = None  # input channels; default: the data's (Fashion-MNIST 1, folders 3)
    # area fraction of training crops (segmentation: the scale factor range); default: the data's
    crop_scale: tuple[float, float] | None = None
    hflip: float | None = None
    color_jitter: float | None = None
    random_erase: float | None = None  # probability of random erasing (Zhong et al.)
    crop_fraction: float | None = None  # evaluation centre crop
    on_corrupt: str | None = None  # "fail" or "skip" unreadable images
    amp: str | None = None  # "auto" (bf16 on CUDA, off on CPU where it measured slower), "off", "bf16"
    channels_last: bool | None = None  # default on: faster on this CPU and on GPUs
    compile: bool | None = None  # torch.compile the training forward/backward (default off: build time first)
    seed: int | None = None
    deterministic: bool | None = None  # torch.use_deterministic_algorithms (CPU training is deterministic anyway)
    device: str | None = None  # "auto", "cpu", "cuda", "cuda:1"
    workers: int | None = None  # DataLoader worker processes
    threads: int | None = None  # torch intra-op threads; default torch's (one per core; 1 per process under torchrun)
    limit_train: int | None = None  # use only the first N training images (quick runs, tests)
    limit_val: int | None = None
    eval_batch_size: int | None = None
    checkpoint_every_steps: int | None = None  # also checkpoint every K steps (mid-epoch), besides every epoch
    keep: int = 2  # checkpoints kept: the newest and the one before it, for a resume past a damaged newest one
    log_every_steps: int | None = None  # also write a metrics line every N steps
    tensorboard: bool | None = None  # default: on when torch.utils.tensorboard imports
    init: str | None = None  # start from a run's EMA weights (RUN_DIR) or a weights file (.safetensors)
    qat: bool | None = None  # quantisation-aware training (int8 as ONNX Runtime runs it), converted at the end
    qat_epochs: int | None = None  # QAT for the last N epochs; default all with init, else the last 10% (>= 1)
    task: str = DEFAULT_TASK  # what is trained: the head, loss and metrics (mobilenetv3.tasks.TASKS)
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["crop_scale"] is not None:
            data["crop_scale"] = list(data["crop_scale"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        data = dict(data)
        if data.get("crop_scale") is not None:
            data["crop_scale"] = tuple(data["crop_scale"])
        return cls(**data)


FIXED_DEFAULTS: dict[str, Any] = dict(
    width_mult=1.0, data="fashion-mnist", val_split="val", recipe="auto", accum_steps=1, on_corrupt="fail",
    amp="auto", channels_last=True, compile=False, seed=0, deterministic=False, device="auto", workers=0,
    eval_batch_size=256, holdout=0,
    dropout=None, bn_momentum=None, resolution=None, qat=False, task=DEFAULT_TASK,
)
# Without --init, QAT covers the last tenth of the epochs (at least one): float training first, then fake
# quantisation while the learning rate is small (cosine/step decay), as in the usual float-then-QAT recipe.
QAT_FRACTION = 0.1


def seg_data_kind(data: str) -> str | None:
    """The segmentation data set ``data`` names (``scenes``, ``scenes:...``, ``cityscapes:PATH``), or None for
    classification data (an existing folder named ``scenes`` or ``cityscapes`` is an image folder)."""
    kind, sep, _ = data.partition(":")
    kind = kind.strip().lower()
    if kind not in SEG_RECIPES or (not sep and os.path.isdir(data)):
        return None
    return kind


def det_data_kind(data: str) -> str | None:
    """The detection data set ``data`` names (``scenes``, ``scenes:...``, ``coco:PATH``), or None."""
    kind, sep, _ = data.partition(":")
    kind = kind.strip().lower()
    if kind not in DET_RECIPES or (not sep and os.path.isdir(data)):
        return None
    return kind


def default_data(config: TrainConfig) -> str:
    """The data a run uses when ``data`` is not given: Fashion-MNIST, or the scenes for segmentation and
    detection."""
    return SEG_DEFAULT_DATA if config.task in (SEG_TASK, DET_TASK) else FIXED_DEFAULTS["data"]


def recipe_name(config: TrainConfig) -> str:
    name = config.recipe or "auto"
    if name == "auto":
        data = config.data or default_data(config)
        if config.task == DET_TASK and det_data_kind(data) is not None:
            return DET_RECIPES[det_data_kind(data)]
        kind = seg_data_kind(data)
        if kind is not None:
            return SEG_RECIPES[kind]
        data = data.lower()
        return "fashion-mnist" if data in ("fashion-mnist", "fashion_mnist", "fashionmnist") else "paper"
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (choose from auto, {', '.join(RECIPES)})")
    return name


def resolve(config: TrainConfig) -> TrainConfig:
    """A copy with every unset option filled from the recipe and the fixed defaults, then checked."""
    recipe = recipe_name(config)
    values = config.to_dict()
    values["recipe"] = recipe
    if values["data"] is None:
        values["data"] = default_data(config)
    for name, value in {**FIXED_DEFAULTS, **RECIPES[recipe]}.items():
        if values.get(name) is None and name != "recipe":
            values[name] = value
    if values["lr"] is None:
        values["lr"] = values["lr_base"] * values["batch_size"] / values["lr_base_batch"]
    if values["qat"] and values["qat_epochs"] is None:
        epochs = values["epochs"]
        values["qat_epochs"] = epochs if values["init"] else max(1, math.ceil(QAT_FRACTION * epochs))
    resolved = TrainConfig.from_dict(values)
    validate(resolved)
    return resolved


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def validate(c: TrainConfig) -> None:
    """Raise ValueError naming the first bad option."""
    _check(bool(c.out), "an output directory (--out) is required")
    _check(c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}")
    _check(c.batch_size >= 1, f"batch size must be >= 1, got {c.batch_size}")
    _check(c.lr > 0, f"learning rate must be > 0, got {c.lr}")
    _check(c.schedule in SCHEDULES, f"unknown lr schedule {c.schedule!r} (choose from {', '.join(SCHEDULES)})")
    _check(c.optimizer in OPTIMIZERS, f"unknown optimizer {c.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    _check(c.wd_exempt in WD_EXEMPT, f"unknown wd_exempt {c.wd_exempt!r} (choose from {', '.join(WD_EXEMPT)})")
    _check(c.amp in AMP_MODES, f"unknown amp mode {c.amp!r} (choose from {', '.join(AMP_MODES)})")
    _check(c.warmup_epochs >= 0, f"warmup epochs must be >= 0, got {c.warmup_epochs}")
    _check(c.weight_decay >= 0, f"weight decay must be >= 0, got {c.weight_decay}")
    _check(0 <= c.label_smoothing < 1, f"label smoothing must be in [0, 1), got {c.label_smoothing}")
    _check(0 <= c.ema_decay < 1, f"EMA decay must be in [0, 1) (0 turns it off), got {c.ema_decay}")
    _check(c.grad_clip is None or c.grad_clip > 0, f"gradient clipping norm must be > 0, got {c.grad_clip}")
    _check(c.accum_steps >= 1, f"accum_steps must be >= 1, got {c.accum_steps}")
    _check(c.resolution is None or c.resolution >= 8, f"resolution must be >= 8, got {c.resolution}")
    _check(0 <= c.random_erase <= 1, f"random erase is a probability in [0, 1], got {c.random_erase}")
    _check(c.dropout is None or 0 <= c.dropout < 1, f"dropout must be in [0, 1), got {c.dropout}")
    _check(c.bn_momentum is None or 0 < c.bn_momentum < 1, f"BN momentum must be in (0, 1), got {c.bn_momentum}")
    _check(c.holdout >= 0, f"holdout must be >= 0 (0: validate on --val-split), got {c.holdout}")
    _check(c.workers >= 0, f"workers must be >= 0, got {c.workers}")
    _check(c.threads is None or c.threads >= 1, f"threads must be >= 1, got {c.threads}")
    _check(c.eval_batch_size >= 1, f"eval batch size must be >= 1, got {c.eval_batch_size}")
    _check(isinstance(c.keep, int) and c.keep >= 1, f"keep must be an integer >= 1, got {c.keep!r}")
    for name in ("limit_train", "limit_val", "checkpoint_every_steps", "log_every_steps"):
        value = getattr(c, name)
        _check(value is None or value >= 1, f"{name.replace('_', '-')} must be >= 1, got {value}")
    if c.init is None:
        _check((c.model is None) != (c.spec is None),
               "give a model name (--model) or a spec file (--spec), exactly one")
    else:
        _check(c.model is None or c.spec is None, "give a model name (--model) or a spec file (--spec), not both")
    _check(c.task in TASKS, f"unknown task {c.task!r} (choose from {', '.join(TASKS)})")
    det_data = det_data_kind(c.data) is not None
    _check(c.task != DET_TASK or det_data, f"the detection task needs detection data (--data scenes[:OPTIONS] or "
           f"coco:PATH), got {c.data!r}")
    _check(c.task == DET_TASK or det_data_kind(c.data) != "coco",
           f"--data {c.data} is detection data: give --task detection")
    seg_data = seg_data_kind(c.data) is not None
    _check(c.task == DET_TASK or seg_data == (c.task == SEG_TASK),
           f"--data {c.data} is segmentation data: give --task segmentation" if seg_data else
           f"the segmentation task needs segmentation data (--data scenes[:OPTIONS] or cityscapes:PATH), "
           f"got {c.data!r}")
    _check(c.qat_epochs is None or c.qat, "--qat-epochs applies to quantisation-aware training (--qat)")
    _check(not (c.qat and c.compile), "--compile is not supported with --qat (the fake-quantisation observers "
           "update state in the forward pass); leave one out")
    _check(c.qat_epochs is None or 1 <= c.qat_epochs <= c.epochs,
           f"qat-epochs must be between 1 and the number of epochs ({c.epochs}), got {c.qat_epochs}")
    _check(c.spec is None or c.width_mult == 1.0,
           "--width-mult applies to zoo models; a spec file already holds its widths")


def merge_resume_config(saved: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The recorded config of a run with what may change on resume taken from ``given``; other differences are
    errors (a run resumed with another model, data or recipe would not be the run it claims to be)."""
    saved = {**RECORDED_DEFAULTS, **saved}
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
