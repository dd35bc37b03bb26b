"""Dask arrays written block by block: never computed whole."""

from __future__ import annotations

from typing import Any

import numpy as np


class _BlockTarget:
    """What ``dask.array.store`` writes into: each computed block goes straight to the
    staged element's level-0 chunks (the GIL is released while it is encoded)."""

    def __init__(self, writer: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._writer = writer
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        offset = [s.start or 0 for s in key]
        self._writer.write_block(offset, np.ascontiguousarray(value))


def add_dask_raster(native: Any, kind: str, name: str, raster: Any, chunks: list[int] | None, overwrite: bool) -> int:
    """Stages the element, writes its blocks as dask computes them (rechunked to the
    element's chunk grid, on dask's threaded scheduler), then builds the pyramid and
    commits. Memory stays within a few blocks per thread."""
    import dask.array as da

    array = raster.data
    writer = native.stage_raster_blocks(
        kind,
        name,
        [int(n) for n in array.shape],
        np.dtype(array.dtype).str,
        dims=raster.dims,
        channel_names=raster.channel_names,
        scale_levels=raster.scale_levels,
        chunks=chunks,
        transformations=raster.transformations,
        overwrite=overwrite,
    )
    try:
        array = array.rechunk(tuple(int(c) for c in writer.chunk_shape))
        target = _BlockTarget(writer, tuple(array.shape), array.dtype)
        da.store(array, target, lock=False, scheduler="threads")
        return writer.commit(overwrite)
    except BaseException:
        writer.discard()
        raise
