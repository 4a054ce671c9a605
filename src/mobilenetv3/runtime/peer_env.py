"""Where the peer environment is: the python that runs torchvision and timm next to ours.

torchvision and timm need a newer torch than the core's, so they run under another environment's python
(``make peer-setup`` builds ``.peer-venv``) in a worker process; this module only finds that python.
"""

from __future__ import annotations

import os
from pathlib import Path

PEER_SETUP_HINT = ("build it with `make peer-setup` (a .peer-venv with torch 2.15, torchvision, timm and ONNX "
                   "Runtime) or pass --peer-python / set $MNV3_PEER_PYTHON")


class PeerUnavailableError(RuntimeError):
    """No usable peer environment (torchvision and timm); the message says how to make one."""


def repo_root() -> Path | None:
    """The checkout this package runs from (``src/mobilenetv3/runtime/peer_env.py`` in it), or None if
    installed."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def find_peer_python(given: str | None = None) -> str | None:
    """The peer environment's python: ``given``, else ``$MNV3_PEER_PYTHON``, else the checkout's
    ``.peer-venv/bin/python`` (``make peer-setup``); ``None`` if neither exists.
    A ``given`` path that does not exist is an error, not a fallback."""
    if given is not None:
        if not Path(given).is_file():
            raise FileNotFoundError(f"peer python not found: {given}; {PEER_SETUP_HINT}")
        return given
    root = repo_root()
    candidates = [os.environ.get("MNV3_PEER_PYTHON"), str(root / ".peer-venv/bin/python") if root else None]
    return next((c for c in candidates if c and Path(c).is_file()), None)
