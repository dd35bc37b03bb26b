"""Rasters written block by block: dask arrays (never computed whole) and the given
levels of a multiscale DataTree (written as they are, none rebuilt)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import is_dask_array


class _BlockTarget:
    """What ``dask.array.store`` writes into: each computed block goes straight to the
    staged element's chunks of one level (the GIL is released while it is encoded)."""

    def __init__(self, writer: Any, level: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._writer = writer
        self._level = level
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        offset = [s.start or 0 for s in key]
        self._writer.write_block(offset, np.ascontiguousarray(value), level=self._level)


def _write_level(writer: Any, level: int, data: Any) -> None:
    """Writes one whole level: a dask array block by block, rechunked to the level's
    chunk grid on dask's threaded scheduler; a numpy array as one block."""
    if is_dask_array(data):
        import dask.array as da

        array = data.rechunk(tuple(int(c) for c in writer.level_chunk_shape(level)))
        da.store(array, _BlockTarget(writer, level, tuple(array.shape), array.dtype), lock=False, scheduler="threads")
    else:
        array = np.ascontiguousarray(data)
        writer.write_block([0] * array.ndim, array, level=level)


def _shape(data: Any) -> list[int]:
    return [int(n) for n in data.shape]


def add_in_blocks(native: Any, kind: str, name: str, raster: Any, chunks: list[int] | None, overwrite: bool) -> int:
    """Stages the element and writes it level by level, block by block: level 0 only
    (its pyramid then built from what was written) or, when ``raster.levels`` holds
    the levels of a multiscale input, every level as given. Then commits. Memory
    stays within a few blocks per thread."""
    levels = raster.levels if raster.levels is not None else [raster.data]
    base = levels[0]
    writer = native.stage_raster_blocks(
        kind,
        name,
        _shape(base),
        np.dtype(base.dtype).str,
        dims=raster.dims,
        channel_names=raster.channel_names,
        scale_levels=raster.scale_levels,
        chunks=chunks,
        transformations=raster.transformations,
        overwrite=overwrite,
        level_shapes=[_shape(level) for level in levels] if raster.levels is not None else None,
    )
    try:
        for level, data in enumerate(levels):
            _write_level(writer, level, data)
        return writer.commit(overwrite)
    except BaseException:
        writer.discard()
        raise
