"""The one error type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be found or read; the message names the file or folder and what is wrong with it.

    It takes a single message argument so that a DataLoader worker can re-raise it in the main process with its
    type intact (``ExceptionWrapper`` rebuilds exceptions as ``type(message)``).
    """


class CorruptImageWarning(UserWarning):
    """An image that could not be decoded and was skipped (``on_corrupt="skip"``); the message names its path."""
