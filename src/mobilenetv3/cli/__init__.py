"""`mnv3`: a thin command line over the library. Each command parses its arguments, calls one public function
and prints a table (or JSON with ``--json``). Exit codes: 0 done, 1 an export whose check failed, 2 a user error
(one line on stderr), 3 a training run that diverged, 130 interrupted.

One module per command group, each with ``register(subparsers)``; :data:`COMMANDS` lists them in the order
``mnv3 --help`` shows them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..spec import SpecError
from . import bench, export, latency, latency_table, models, search, train
from .output import CLIError

COMMANDS = (models, train, latency, export, bench, latency_table, search)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnv3", description="MobileNetV3 models, costs and tools.")
    parser.add_argument("--version", action="version", version=f"mnv3 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, SpecError, FileNotFoundError, ValueError) as e:
        print(f"mnv3 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"mnv3 {args.command}: error: {e.args[0]}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


__all__ = ["COMMANDS", "CLIError", "build_parser", "main"]
