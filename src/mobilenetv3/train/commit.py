"""Files committed through a pointer: atomic writes, SHA-256 records, verified reads, rotation.

Generic: any set of files plus a pointer JSON in one directory can use it (a training run's checkpoints,
:mod:`.checkpoint`; a search journal; a segmentation or detection run). A pointer is a JSON object: its newest
entry's fields at the top level (``files``: the entry's file names, plus the caller's own fields, ordered by an
integer field, ``global_step`` by default), ``previous``: the older kept entries, newest first, ``sha256``: file
name -> digest of every kept file (and of the ``track`` files), ``format`` and ``checksum`` (the SHA-256 of the
rest, so that one flipped byte in the pointer is found as surely as one in a file it names).

Writing (:func:`commit`): the new files under new names, each atomically (temporary file, fsync, rename), then the
pointer, atomically, then deletion of the files of entries beyond ``keep`` and of leftovers of interrupted commits.
A kill at any moment leaves a pointer naming complete, recorded files.

Reading (:func:`read_verified`): the bytes of a file, checked against the digest its directory's pointer records,
before anything parses them; a difference is a :class:`CheckpointError` naming the file (and the older kept file
of the same kind, when there is one). A file the pointer does not record (a directory written before digests were
recorded, a file outside any such directory) is read without a check and without a warning: those were written
atomically too, and a warning on every read of an old run would say nothing the user can act on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

POINTER = "checkpoint.json"
POINTER_FORMAT = 2  # 1 (no "format" key): a training run's single checkpoint, no digests
KEEP = 2  # the newest entry and the one before it: a damaged newest one costs one interval of work
ORDER = "global_step"
_POINTER_KEYS = ("format", "previous", "sha256", "replacing", "checksum")  # the rest: its newest entry


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, damaged or does not fit the model; the message names the file."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


# -- atomic writes --------------------------------------------------------------------------------
def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder, fsync it, then rename it
    over ``path``: readers see the old file or the new one, never a part of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the usual permissions
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporary files a killed writer left behind."""
    for p in Path(directory).glob(".*.tmp"):
        p.unlink(missing_ok=True)


# -- integrity: hashes, the pointer, verified reads, rotation (generic) -----------------------------------------
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pointer_checksum(pointer: dict[str, Any]) -> str:
    """The SHA-256 of a pointer's contents (its ``checksum`` left out), independent of whitespace and key order."""
    body = {k: v for k, v in pointer.items() if k != "checksum"}
    return sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def write_pointer(directory: str | os.PathLike, pointer: dict[str, Any], name: str = POINTER) -> None:
    """Replace ``directory/name`` atomically with ``pointer`` and its checksum."""
    atomic_write_json(Path(directory) / name, {**pointer, "checksum": pointer_checksum(pointer)})


def load_pointer(directory: str | os.PathLike, name: str = POINTER) -> dict[str, Any] | None:
    """The pointer ``directory/name`` with its checksum verified, or None when there is none."""
    path = Path(directory) / name
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    if not isinstance(pointer, dict):
        raise CheckpointError(f"{path} is corrupt: not a JSON object")
    # A pointer of format 2 or later always has a checksum; one without either is of format 1 (no hashes).
    if "checksum" in pointer or "format" in pointer:
        if pointer.get("checksum") != pointer_checksum(pointer):
            raise CheckpointError(f"{path} is corrupt: its checksum does not match its contents")
        if not isinstance(pointer.get("sha256"), dict) or not isinstance(pointer.get("previous"), list):
            raise CheckpointError(f"{path} is corrupt: it must hold 'sha256' and 'previous'")
    return pointer


def pointer_entries(pointer: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoints a pointer keeps, newest first."""
    newest = {k: v for k, v in pointer.items() if k not in _POINTER_KEYS}
    return [newest, *pointer.get("previous", [])]


def entry_files(entry: dict[str, Any]) -> list[str]:
    """The file names of one pointer entry (a format-1 run pointer names its two files 'weights' and 'state')."""
    if "files" in entry:
        return list(entry["files"])
    return [entry[k] for k in ("weights", "state") if isinstance(entry.get(k), str)]


def _older_file(pointer: dict[str, Any], name: str) -> str | None:
    """The file of the next older kept entry that plays ``name``'s part (the same suffix), if any."""
    entries = pointer_entries(pointer)
    suffix = name.partition(".")[2]
    for i, entry in enumerate(entries[:-1]):
        if name in entry_files(entry):
            return next((n for n in entry_files(entries[i + 1]) if n.partition(".")[2] == suffix), None)
    return None


def read_verified(path: str | os.PathLike, pointer_name: str = POINTER) -> bytes:
    """The bytes of ``path``, checked against the SHA-256 its directory's pointer records for it (when it records
    one); :class:`CheckpointError` naming the file when it is missing or differs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    pointer = load_pointer(path.parent, pointer_name)
    data = path.read_bytes()
    expected = None if pointer is None else pointer.get("sha256", {}).get(path.name)
    # a file of fixed name that the newest commit replaces may still hold its previous (recorded) content
    previous = None if pointer is None else pointer.get("replacing", {}).get(path.name)
    if expected is not None and sha256_hex(data) not in (expected, previous):
        older = _older_file(pointer, path.name)
        hint = f"; the checkpoint before it is kept as {path.parent / older}" if older else ""
        raise CheckpointError(f"{path} is truncated or corrupt: its SHA-256 differs from the one {pointer_name} "
                              f"recorded when it was written{hint}")
    return data


def commit(directory: str | os.PathLike, files: dict[str, bytes], entry: dict[str, Any], *, keep: int = KEEP,
           track: Iterable[str] = (), replace: dict[str, bytes] | None = None,
           owned: Callable[[str], bool] | None = None, order: str = ORDER,
           pointer_name: str = POINTER) -> dict[str, Any]:
    """Add a checkpoint (``files``: name -> bytes; ``entry``: its JSON fields, with an integer ``order`` field) to
    ``directory`` and keep the newest ``keep``; returns the new pointer.

    ``track``: files of fixed name outside the entries (a run's ``best.safetensors``) whose digests the pointer
    carries from commit to commit; ``replace``: new contents for some of them, written by this commit.

    Order of work, so that a kill anywhere leaves a loadable directory: the files (each atomically), then the
    pointer (atomically: entries, SHA-256 of every kept file and of the tracked files), then the replaced files
    (atomically; until they are, the pointer also accepts their previous digest, under ``replacing``), then
    deletion of what no entry names any more: older entries beyond ``keep`` and files for which ``owned(name)`` is
    true (leftovers of a commit killed before its pointer). Kept entries at or beyond the new one's ``order`` are
    dropped: they are a future being redone (a resume from an older checkpoint).

    A tracked file's digest is never taken afresh from a file that no longer matches its record: a file damaged
    on disk stays refused rather than being recorded as good by the next commit."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    old = load_pointer(directory, pointer_name)
    old_entries = pointer_entries(old) if old is not None else []
    old_hashes = old.get("sha256", {}) if old is not None else {}
    hashes = {}
    for name, data in files.items():
        atomic_write_bytes(directory / name, data)
        hashes[name] = sha256_hex(data)
    new = {**entry, "files": sorted(files)}
    kept = [e for e in old_entries if e.get(order, -1) < new[order]][:keep - 1]
    for e in kept:
        hashes.update({n: old_hashes[n] for n in entry_files(e) if n in old_hashes and n not in files})
    old_replacing = old.get("replacing", {}) if old is not None else {}
    replace = replace or {}
    for name in {*track, *replace}:
        recorded = old_hashes.get(name)
        if not (directory / name).is_file():
            continue
        on_disk = sha256_hex((directory / name).read_bytes())
        if recorded is None or on_disk in (recorded, old_replacing.get(name)):
            hashes[name] = on_disk  # unrecorded (a run from before digests) or as recorded
        else:
            hashes[name] = recorded  # damaged since it was written: it stays refused
    replacing = {}
    for name, data in replace.items():
        if name in hashes:
            replacing[name] = hashes[name]
        hashes[name] = sha256_hex(data)
    pointer = {"format": POINTER_FORMAT, **new, "previous": kept, "sha256": hashes}
    if replacing:
        pointer["replacing"] = replacing
    write_pointer(directory, pointer, pointer_name)
    for name, data in replace.items():
        atomic_write_bytes(directory / name, data)
    referenced = {n for e in (new, *kept) for n in entry_files(e)}
    stale = {n for e in old_entries for n in entry_files(e)}
    if owned is not None:
        stale.update(p.name for p in directory.iterdir() if owned(p.name))
    for name in sorted(stale - referenced):
        (directory / name).unlink(missing_ok=True)
    return pointer
