"""The thread's alternate signal stack, kept across OpenVINO compiles (Linux; elsewhere a no-op)."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator


class StackT(ctypes.Structure):
    """Linux's ``stack_t``: the alternate stack a thread's signal handlers run on (``sigaltstack(2)``)."""

    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


def _current_signal_stack() -> StackT | None:
    if not sys.platform.startswith("linux"):
        return None
    current = StackT()
    return current if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current)) == 0 else None


def signal_stack() -> tuple[int, int, int] | None:
    """This thread's alternate signal stack as ``(address, flags, size)`` (flags 2: none), or ``None`` off Linux."""
    current = _current_signal_stack()
    return None if current is None else (current.sp or 0, current.flags, current.size)


@contextlib.contextmanager
def keeping_signal_stack() -> Iterator[None]:
    """Give this thread back its own alternate signal stack after the block.

    OpenVINO's CPU plugin (seen in 2026.4) installs an alternate signal stack on the thread that compiles a
    model and frees it with the objects that own it. Two compiled models released in the order they were made
    leave the thread's alternate stack pointing at freed memory, and Python runs its signal handlers (SIGINT,
    SIGTERM, a SIGCHLD handler such as PyTorch's DataLoader installs) on that stack: the next signal is then a
    segmentation fault that no handler can report, or a write into memory in use. OpenVINO installs no signal
    handler of its own, so it does not need the stack. Linux only; elsewhere the block runs as it is."""
    before = _current_signal_stack()
    try:
        yield
    finally:
        if before is not None:
            ctypes.CDLL(None).sigaltstack(ctypes.byref(before), None)
