"""What the model-taking commands (`latency`, `export`) share: where the model comes from."""

from __future__ import annotations

import argparse

from ..zoo import REGISTRY


def add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME|RUN_DIR",
                   help=f"zoo model ({', '.join(REGISTRY)}) or a training run directory")
    p.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a zoo name")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for a zoo model")
    p.add_argument("--checkpoint", default="last", help="RUN_DIR: last (default), best, or a checkpoint file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="RUN_DIR: EMA (default) or raw")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the spec's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def load_model(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0,
               checkpoint: str = "last", weights: str = "ema", resolution: int | None = None):
    """A model and whether it has trained weights (:func:`mobilenetv3.train.evaluate.load_model_or_run`)."""
    from ..train.evaluate import load_model_or_run

    return load_model_or_run(name, spec_file, width_mult, checkpoint, weights, resolution)
