"""The search journal: one JSON line per finished evaluation, so a killed search resumes where it stopped.

Line 1 is the header (``{"type": "header", ...}``: the seed, the space, the settings a result depends on); every
later line is one record as the caller passed it. A rerun opens the same file, checks that the header describes
the same search (:class:`JournalError` names the first key that differs, so results of another seed or space are
never mixed in), and skips the jobs already recorded.

Each append is a single ``os.write`` of the whole line followed by an fsync, so after a kill the file holds every
record appended before it, plus at most one torn line at the end. Opening drops that line with a warning and
truncates the file back to the last complete record. A write that fails (a full disk) is undone the same way
before the error is raised, so the journal never ends in half a line that the next append would glue onto.
The directory entry of a new journal is made durable with :func:`~mobilenetv3.train.commit.fsync_dir`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..train.commit import fsync_dir

_MISSING = object()


class JournalError(ValueError):
    """The journal cannot be used: unreadable, corrupt in the middle, from another search, or not writable. The
    message names the file, and the line or header field."""


def _normalised(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings), for comparing with the file."""
    return json.loads(json.dumps(value, sort_keys=True))


def _parse(line: bytes) -> dict | None:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Journal:
    """An append-only JSON-lines file with a header; ``records`` are the lines after it, in order.

    ``identity``: the header keys that must match an existing file's (default: every key of ``header``); the other
    keys may change between runs (say, the number of workers) and the file keeps its own values in ``header``.
    """

    def __init__(self, path: str | os.PathLike, header: dict, *, identity: Sequence[str] | None = None):
        self.path = Path(path)
        if "type" in header:
            raise ValueError(f"the journal header may not use the key 'type' (it marks the header line): {header}")
        keys = list(header) if identity is None else list(identity)
        unknown = [k for k in keys if k not in header]
        if unknown:
            raise ValueError(f"identity keys {unknown} are not in the journal header (keys: {sorted(header)})")
        self.records: list[dict] = []
        wanted = _normalised(header)
        lines = self._read()
        if not lines:
            self._write_line({"type": "header", **header}, creating=not self.path.exists())
            self.header: dict = wanted
            return
        first = lines[0]
        if first.get("type") != "header":
            raise JournalError(f"{self.path}: line 1 is not a journal header (no \"type\": \"header\"); is this "
                               "file a search journal?")
        self.header = {k: v for k, v in first.items() if k != "type"}
        for key in keys:
            found = self.header.get(key, _MISSING)
            if found != wanted[key]:
                shown = "no such field" if found is _MISSING else f"{key}={found!r}"
                raise JournalError(f"{self.path}: a journal from another seed/space: its header has {shown}, this "
                                   f"run has {key}={wanted[key]!r}; use a new --out or delete {self.path} to start "
                                   "over")
        self.records = lines[1:]

    def _read(self) -> list[dict]:
        """The file's complete lines, parsed; a torn last line is dropped (with a warning) and cut off the file."""
        if not self.path.exists():
            return []
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot read the journal: {exc}") from exc
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline, else an unterminated (torn) line
        parsed: list[dict] = []
        good_end = 0
        for number, line in enumerate(lines, 1):
            record = _parse(line)
            if record is None:
                if number < len(lines) or tail:
                    raise JournalError(f"{self.path}: line {number} is not a JSON object and is not the last line: "
                                       "the journal is corrupt (edited by hand?); fix or delete that line")
                self._drop_torn(number, good_end, len(parsed))
                return parsed
            parsed.append(record)
            good_end += len(line) + 1
        if tail:
            self._drop_torn(len(lines) + 1, good_end, len(parsed))
        return parsed

    def _drop_torn(self, number: int, good_end: int, complete: int) -> None:
        warnings.warn(f"{self.path}: line {number} is incomplete (a write cut short by a kill?); dropped it and "
                      f"truncated the file to its {complete} complete line(s)", stacklevel=4)
        try:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot truncate the torn line {number}: {exc}") from exc

    def append(self, record: dict) -> None:
        """Write ``record`` as one line (keys sorted) and fsync it; it also joins ``records`` (as read back)."""
        if not isinstance(record, dict):
            raise TypeError(f"a journal record is a dict, got {type(record).__name__}: {record!r}")
        self.records.append(self._write_line(record))

    def _write_line(self, record: dict, creating: bool = False) -> dict:
        line = json.dumps(record, sort_keys=True)  # fails here, before the file is touched, if not serialisable
        data = (line + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal for writing: {exc}") from exc
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError as exc:
                raise self._undo(fd, size, exc) from exc
        finally:
            os.close(fd)
        if creating:
            fsync_dir(self.path.parent)
        return json.loads(line)

    def _undo(self, fd: int, size: int, exc: OSError) -> JournalError:
        """Cut a failed write back to the file's previous length; the error to raise."""
        kept = f"the journal keeps its {len(self.records)} records"
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            kept += " (its last line may be torn; the next open drops it)"
        return JournalError(f"{self.path}: could not write a record ({exc.strerror or exc}; disk full?); {kept}; "
                            "free space and rerun with --resume")


__all__ = ["Journal", "JournalError"]
