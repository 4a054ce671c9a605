"""What the model-taking commands (`profile`, `latency`, `export`) share: where the model comes from and the size
of its input."""

from __future__ import annotations

import argparse

from .output import CLIError

SOURCE_HELP = ("a registered network of any task (classifiers: mnv3 models; segmentation: lraspp_* and raspp_* "
               "on mobilenet_v3_large, mobilenet_v3_small, mobilenet_v2; detection: ssdlite_* on those, "
               "_y variants and mnasnet_a1), a spec file of any task, or a training run directory")


def add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME|RUN_DIR", help=SOURCE_HELP)
    p.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a name (ArchSpec, SegSpec, DetSpec)")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for a zoo model")
    p.add_argument("--checkpoint", default="last", help="RUN_DIR: last (default), best, or a checkpoint file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="RUN_DIR: EMA (default) or raw")
    p.add_argument("--resolution", type=int, default=None, help="input size, square (default: the spec's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_input_size(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help=help_text)


def given_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--input-size H W`` or ``--resolution R`` (square), checked; None when neither is given."""
    size = getattr(args, "input_size", None)
    if size is not None and args.resolution is not None:
        raise CLIError("give the input size once: --input-size H W or --resolution R")
    if size is not None and min(size) < 1:
        raise CLIError(f"--input-size must be positive integers, got {size[0]} {size[1]}")
    if size is not None:
        return int(size[0]), int(size[1])
    return None if args.resolution is None else (args.resolution, args.resolution)


def load_model(args: argparse.Namespace):
    """``(model, task, trained)`` for the command's model source
    (:func:`mobilenetv3.train.evaluate.load_network`), calibrated at the given input size."""
    from ..train.evaluate import load_network

    return load_network(args.name, args.spec, args.width_mult, args.checkpoint, args.weights, given_size(args))


def run_input_size(run_dir: str, task: str) -> tuple[int, int]:
    """The size a segmentation or detection run evaluates at (a scenes run's canvas, Cityscapes' frame, a COCO
    run's resolution)."""
    from ..tasks import get_task
    from ..train.evaluate import read_run_config

    return get_task(task).eval_input_size(read_run_config(run_dir)["data"])
