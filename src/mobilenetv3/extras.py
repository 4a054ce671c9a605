"""Optional dependencies: import one, or fail with a message naming the extra that installs it."""

from __future__ import annotations

from typing import Any


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, extra: str | None = "deploy", purpose: str = "") -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install (``extra=None``: the
    package itself)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        what = f" (needed for {purpose})" if purpose else ""
        how = f"pip install 'mobilenetv3[{extra}]'" if extra else f"pip install {module}"
        raise MissingExtraError(f"{module} is not installed{what}; install it with: {how}") from None

