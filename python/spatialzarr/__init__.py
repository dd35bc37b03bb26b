"""spatialzarr: concurrency-safe SpatialData datasets on Zarr.

Many threads, processes and cluster nodes add elements to ONE dataset and append rows
to its tables at the same time without losing anything; the dataset stays readable by
spatialdata throughout (guard spatialdata's own calls with :func:`locked`).

>>> import spatialzarr as sz
>>> ds = sz.open("cells.zarr")                       # doctest: +SKIP
>>> ds.add_labels("tile7_labels", labels)            # doctest: +SKIP
>>> ds.append_rows("cells", obs_df, key="tile7")     # doctest: +SKIP
"""

from ._dataset import AppendResult, CheckReport, Dataset, locked, open
from ._errors import (
    CommitPendingError,
    CorruptDatasetError,
    DatasetExistsError,
    ElementExistsError,
    ElementNotFoundError,
    InvalidInputError,
    KeyReusedError,
    LockError,
    LockTimeoutError,
    LockUpgradeError,
    NotADatasetError,
    SpatialZarrError,
    StorageError,
    UnsupportedFormatError,
    WrongElementTypeError,
)
from ._spatialzarr import __version__

__all__ = [
    "AppendResult",
    "CheckReport",
    "Dataset",
    "locked",
    "open",
    "CommitPendingError",
    "CorruptDatasetError",
    "DatasetExistsError",
    "ElementExistsError",
    "ElementNotFoundError",
    "InvalidInputError",
    "KeyReusedError",
    "LockError",
    "LockTimeoutError",
    "LockUpgradeError",
    "NotADatasetError",
    "SpatialZarrError",
    "StorageError",
    "UnsupportedFormatError",
    "WrongElementTypeError",
    "__version__",
]
