"""Where an exported file goes: its directory is created if missing, and one that cannot be created or written
gives :class:`OutputPathError` naming the path (not a bare ``[Errno 2]`` from deep inside an exporter)."""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(OSError):
    """An export's output file cannot be written where it was asked for; the message names the path and why."""


def writable_output(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` once its directory exists (created with its parents if missing) and
    is writable; :class:`OutputPathError` naming ``path`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a directory (give a file name)")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputPathError(f"cannot write {path}: {existing} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or str(e)
        raise OutputPathError(f"cannot write {path}: its directory {parent} does not exist and cannot be "
                              f"created ({reason})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: its directory {parent} is not writable")
    return path
