"""Type stubs of the native module (the thin layer over the Rust core)."""

from os import PathLike

import numpy as np
import pyarrow as pa

__version__: str

class Dataset:
    def __init__(
        self,
        path: str | PathLike[str],
        create: bool,
        lock_timeout: float | None = None,
        allow_node_local_locks: bool = False,
        drop_consolidated_metadata: bool = False,
        durability: str | None = None,
        consolidated: str | None = None,
        labels_list: int | str | None = None,
        folder_sync: str | None = None,
    ) -> None: ...
    @property
    def durability(self) -> str: ...
    @property
    def folder_sync(self) -> str: ...
    @property
    def path(self) -> str: ...
    def generation(self) -> int: ...
    def list(self) -> dict[str, list[str]]: ...
    def info_json(self, name: str) -> str: ...
    def add_raster(
        self,
        kind: str,
        name: str,
        data: np.ndarray,
        dims: list[str] | None = None,
        channel_names: list[str] | None = None,
        scale_levels: int = 0,
        chunks: list[int] | None = None,
        transformations: str | None = None,
        overwrite: bool = False,
    ) -> int: ...
    def stage_raster_blocks(
        self,
        kind: str,
        name: str,
        shape: list[int],
        dtype: str,
        dims: list[str] | None = None,
        channel_names: list[str] | None = None,
        scale_levels: int = 0,
        chunks: list[int] | None = None,
        transformations: str | None = None,
        overwrite: bool = False,
        level_shapes: list[list[int]] | None = None,
    ) -> RasterWriter: ...
    def read_raster(self, name: str, level: int = 0) -> np.ndarray: ...
    def set_transformations(self, name: str, transformations: str) -> int: ...
    def remove(self, name: str) -> int: ...
    def check(self, deep: bool = False) -> tuple[int, int, list[str]]: ...
    def recover(self) -> str: ...
    def append_rows(
        self,
        table: str,
        obs: pa.RecordBatch,
        x_dense: np.ndarray | None = None,
        x_csr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        x_dtype: str = "float64",
        var_names: list[str] = ...,
        key: str | None = None,
        region_key: str = "region",
        instance_key: str = "instance_id",
    ) -> tuple[int, int, bool]: ...
    def read_obs(self, table: str) -> pa.RecordBatch: ...
    def read_x(
        self, table: str
    ) -> tuple[str, pa.Array, int, int] | tuple[str, np.ndarray, np.ndarray, pa.Array, int] | None: ...
    def add_points(
        self,
        name: str,
        batch: pa.RecordBatch,
        feature_key: str | None = None,
        instance_key: str | None = None,
        transformations: str | None = None,
        overwrite: bool = False,
    ) -> int: ...
    def append_points(self, name: str, batch: pa.RecordBatch, key: str | None = None) -> tuple[int, int, bool]: ...
    def read_points(self, name: str) -> pa.RecordBatch: ...
    def add_circles(
        self,
        name: str,
        x: list[float],
        y: list[float],
        radius: list[float],
        columns: pa.RecordBatch | None = None,
        transformations: str | None = None,
        overwrite: bool = False,
    ) -> int: ...
    def add_polygons(
        self,
        name: str,
        shapes: list[tuple[str, list[list[list[list[float]]]]]],
        columns: pa.RecordBatch | None = None,
        transformations: str | None = None,
        overwrite: bool = False,
    ) -> int: ...
    def lock(self, shared: bool = False, timeout: float | None = None) -> LockGuard: ...
    def begin(self) -> Transaction: ...

class LockGuard:
    def release(self) -> None: ...
    @property
    def held(self) -> bool: ...
    @property
    def shared(self) -> bool: ...

class Transaction:
    def commit(self) -> int: ...
    def discard(self) -> None: ...
    @property
    def open(self) -> bool: ...

class RasterWriter:
    @property
    def chunk_shape(self) -> list[int]: ...
    @property
    def writable_levels(self) -> int: ...
    def level_chunk_shape(self, level: int) -> list[int]: ...
    def write_block(self, offset: list[int], block: np.ndarray, level: int = 0) -> None: ...
    def commit(self, overwrite: bool = False) -> int: ...
    def discard(self) -> None: ...

def lock_path(
    path: str | PathLike[str],
    shared: bool = False,
    timeout: float | None = None,
    allow_node_local_locks: bool = False,
) -> LockGuard: ...

