"""The exceptions of spatialzarr.

Every one derives from :class:`SpatialZarrError` and, where one fits, from the standard
exception a caller would catch (``KeyError`` for a missing element, ``FileExistsError``
for a taken name, ``ValueError`` for bad input, ``TimeoutError`` for a lock not granted
in time). Each carries the library's message, and pickles, so it crosses process
boundaries in executors and dask unchanged.
"""

from __future__ import annotations

__all__ = [
    "SpatialZarrError",
    "ElementExistsError",
    "ElementNotFoundError",
    "InvalidInputError",
    "WrongElementTypeError",
    "KeyReusedError",
    "LockError",
    "LockTimeoutError",
    "LockUpgradeError",
    "CorruptDatasetError",
    "NotADatasetError",
    "DatasetExistsError",
    "UnsupportedFormatError",
    "CommitPendingError",
    "StorageError",
]


class SpatialZarrError(Exception):
    """Base class of every error raised by spatialzarr."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        """The library's message: what was wrong and what to do."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # the message is all the state there is
        return (type(self), (self.message,))


class ElementExistsError(SpatialZarrError, FileExistsError):
    """An element of that name exists (names are unique case-insensitively)."""


class ElementNotFoundError(SpatialZarrError, KeyError):
    """The dataset has no element of that name."""


class InvalidInputError(SpatialZarrError, ValueError):
    """The input is unusable: wrong dtype, shape, columns or name."""


class WrongElementTypeError(InvalidInputError, TypeError):
    """The element exists but is of another type than the operation needs."""


class KeyReusedError(InvalidInputError):
    """An idempotency key already committed other rows: a retry must bring the same
    rows, and two batches need two keys. The message names the key and the rows it
    committed."""


class LockError(SpatialZarrError):
    """The dataset lock could not be taken."""


class LockTimeoutError(LockError, TimeoutError):
    """The dataset lock was not granted before the timeout."""


class LockUpgradeError(LockError, RuntimeError):
    """A thread holding the read lock asked for the write lock (that would deadlock)."""


class CorruptDatasetError(SpatialZarrError):
    """Metadata or data on disk is malformed."""


class NotADatasetError(SpatialZarrError, FileNotFoundError):
    """No SpatialData dataset at that path."""


class DatasetExistsError(SpatialZarrError, FileExistsError):
    """A dataset already exists where a new one was to be created."""


class UnsupportedFormatError(SpatialZarrError):
    """The dataset's format is newer than, or other than, what this version writes."""


class CommitPendingError(SpatialZarrError):
    """A decided commit could not be finished here; the next writer finishes it."""


class StorageError(SpatialZarrError, OSError):
    """A file operation failed."""
