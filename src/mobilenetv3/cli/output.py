"""What the commands print: tables for people, JSON for programs, and the one-line user error."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain text table; ``align`` is one character per column, 'l' or 'r' (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for j, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_resolution(resolution: int | None) -> None:
    if resolution is not None and resolution < 1:
        raise CLIError(f"--resolution must be a positive integer, got {resolution}")
