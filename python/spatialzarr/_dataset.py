"""The pythonic layer over the native module: datasets, transactions, locks."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from . import _inputs
from . import _spatialzarr as _native

PathLike = str | os.PathLike


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows ``start:stop`` hold it; ``applied`` is False when its
    idempotency key was already committed (then nothing was appended and the range is
    the first append's)."""

    start: int
    stop: int
    applied: bool


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`Dataset.check` found: truthy when the dataset is consistent."""

    generation: int
    elements_checked: int
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Options:
    lock_timeout: float | None = None
    allow_node_local_locks: bool = False
    drop_consolidated_metadata: bool = False
    durability: str | None = None
    consolidated: str | None = None
    labels_list: int | str | None = None
    folder_sync: str | None = None


def _reopen(path: str, options: _Options) -> "Dataset":
    return Dataset(path, create=False, **options.__dict__)


class Dataset:
    """A handle on one dataset. Every call reads the committed state from disk, so a
    handle never holds a stale view; handles are cheap, thread-safe, and pickle by
    path and options (a child process opens its own, never acting through its
    parent's lock)."""

    def __init__(
        self,
        path: PathLike,
        *,
        create: bool = True,
        lock_timeout: float | None = None,
        allow_node_local_locks: bool = False,
        drop_consolidated_metadata: bool = False,
        durability: str | None = None,
        consolidated: str | None = None,
        labels_list: int | str | None = None,
        folder_sync: str | None = None,
    ) -> None:
        self._options = _Options(
            lock_timeout,
            allow_node_local_locks,
            drop_consolidated_metadata,
            durability,
            consolidated,
            labels_list,
            folder_sync,
        )
        self._native = _native.Dataset(
            os.fspath(path),
            create,
            lock_timeout=lock_timeout,
            allow_node_local_locks=allow_node_local_locks,
            drop_consolidated_metadata=drop_consolidated_metadata,
            durability=durability,
            consolidated=consolidated,
            labels_list=labels_list,
            folder_sync=folder_sync,
        )

    def __reduce__(self):
        return (_reopen, (os.fspath(self.path), self._options))

    def __repr__(self) -> str:
        return f"spatialzarr.Dataset({os.fspath(self.path)!r})"

    @property
    def durability(self) -> str:
        """What this handle's commits survive once acknowledged: ``"full"`` (fsynced:
        a power loss too) or ``"process"`` (no fsync: the crash or kill -9 of any
        process, but a power loss or a kernel crash may lose the commits of the last
        seconds and leave torn or empty files; run ``spatialzarr check`` after one)."""
        return self._native.durability

    @property
    def folder_sync(self) -> str:
        """How this handle's ``"full"`` commits make folder changes durable:
        ``"ordered"`` (left to the filesystem, which keeps their order: local ext3,
        ext4 and xfs under ``folder_sync="auto"``) or ``"strict"`` (every changed
        folder fsynced: network and FUSE filesystems, btrfs)."""
        return self._native.folder_sync

    @property
    def path(self) -> os.PathLike:
        """The dataset's root folder."""
        import pathlib

        return pathlib.Path(self._native.path)

    @property
    def generation(self) -> int:
        """The commit generation (0 before the first commit)."""
        return self._native.generation()

    # --- reading -------------------------------------------------------------

    def list(self) -> dict[str, list[str]]:
        """The committed elements by kind: images, labels, points, shapes, tables."""
        return dict(self._native.list())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return any(n.lower() == lowered for names in self.list().values() for n in names)

    def info(self, name: str) -> dict[str, Any]:
        """A description of one element (kind, shape, dtype, rows, columns, ...)."""
        return json.loads(self._native.info_json(name))

    def read_raster(self, name: str, level: int = 0) -> np.ndarray:
        """Pyramid level ``level`` (0: full resolution) of an image or labels element."""
        return self._native.read_raster(name, level)

    def read_obs(self, table: str) -> pa.Table:
        """The obs columns of a table (categoricals as dictionaries, missing values as nulls)."""
        return pa.Table.from_batches([self._native.read_obs(table)])

    def read_X(self, table: str):
        """X of a table in the element type it is stored in: a 2-D numpy array, a
        ``scipy.sparse.csr_matrix``, or None."""
        x = self._native.read_x(table)
        if x is None:
            return None
        if x[0] == "csr":
            import scipy.sparse

            _, indptr, indices, data, n_vars = x
            data = data.to_numpy(zero_copy_only=False)
            return scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_vars))
        _, values, n_obs, n_vars = x
        return values.to_numpy(zero_copy_only=False).reshape(n_obs, n_vars)

    def read_points(self, name: str) -> pa.Table:
        """Every point of a points element, all parts in order."""
        return pa.Table.from_batches([self._native.read_points(name)])

    def check(self, deep: bool = False) -> CheckReport:
        """Checks that every element is readable and consistent (``deep``: decode every pixel)."""
        generation, checked, problems = self._native.check(deep)
        return CheckReport(generation, checked, list(problems))

    def recover(self) -> dict[str, Any]:
        """Finishes an interrupted commit and removes what dead writers left."""
        return json.loads(self._native.recover())

    # --- rasters ---------------------------------------------------------------

    def add_image(
        self,
        name: str,
        data: Any,
        *,
        dims: Sequence[str] | None = None,
        channel_names: Sequence[str] | None = None,
        scale_factors: Sequence[Any] | None = None,
        chunks: Sequence[int] | None = None,
        transformations: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> int:
        """Adds an image (numpy, xarray DataArray, spatialdata DataTree or dask array);
        returns the generation. Written without the lock, committed under it."""
        return self._add_raster("images", name, data, dims, channel_names, scale_factors, chunks, transformations, overwrite)

    def add_labels(
        self,
        name: str,
        data: Any,
        *,
        dims: Sequence[str] | None = None,
        scale_factors: Sequence[Any] | None = None,
        chunks: Sequence[int] | None = None,
        transformations: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> int:
        """Adds a labels element (integer pixels); returns the generation."""
        return self._add_raster("labels", name, data, dims, None, scale_factors, chunks, transformations, overwrite)

    def _add_raster(self, kind, name, data, dims, channel_names, scale_factors, chunks, transformations, overwrite) -> int:
        raster = _inputs.raster_input(data, dims, scale_factors, transformations, channel_names)
        chunks = list(chunks) if chunks is not None else None
        if raster.levels is not None or _inputs.is_dask_array(raster.data):
            from ._dask import add_in_blocks

            return add_in_blocks(self._native, kind, name, raster, chunks, overwrite)
        return self._native.add_raster(
            kind,
            name,
            raster.data,
            dims=raster.dims,
            channel_names=raster.channel_names,
            scale_levels=raster.scale_levels,
            chunks=chunks,
            transformations=raster.transformations,
            overwrite=overwrite,
        )

    # --- tables ----------------------------------------------------------------

    def append_rows(
        self,
        table: str,
        obs: Any,
        *,
        X: Any = None,
        key: str | None = None,
        region_key: str = "region",
        instance_key: str = "instance_id",
        var_names: Sequence[str] | None = None,
    ) -> AppendResult:
        """Appends rows to a table, creating it on the first append. ``obs``: a pandas
        DataFrame, a pyarrow Table or anything with ``__arrow_c_stream__``; ``X``: dense
        numpy or scipy sparse. With ``key``, the append happens exactly once."""
        batch = _inputs.record_batch(obs, "obs")
        x = _inputs.x_input(X)
        if var_names is None:
            var_names = [str(i) for i in range(x.n_vars)]
        start, stop, applied = self._native.append_rows(
            table,
            batch,
            x_dense=x.dense,
            x_csr=x.csr,
            x_dtype=x.dtype,
            var_names=[str(v) for v in var_names],
            key=key,
            region_key=region_key,
            instance_key=instance_key,
        )
        return AppendResult(start, stop, applied)

    def append_anndata(self, table: str, adata: Any, *, key: str | None = None) -> AppendResult:
        """Appends the obs, X and var names of an AnnData (its region and instance keys
        from ``uns["spatialdata_attrs"]`` when spatialdata parsed it)."""
        attrs = adata.uns.get("spatialdata_attrs", {}) if hasattr(adata, "uns") else {}
        return self.append_rows(
            table,
            adata.obs,
            X=adata.X,
            key=key,
            region_key=attrs.get("region_key", "region"),
            instance_key=attrs.get("instance_key", "instance_id"),
            var_names=list(adata.var_names),
        )

    # --- points and shapes -------------------------------------------------------

    def add_points(
        self,
        name: str,
        df: Any,
        *,
        feature_key: str | None = None,
        instance_key: str | None = None,
        transformations: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> int:
        """Adds a points element from columns ``x``, ``y`` (and ``z``) and any others
        (a pandas or dask DataFrame, spatialdata's PointsModel output, Arrow data).
        ``feature_key`` names a column stored as a categorical (e.g. the gene),
        ``instance_key`` the column saying which instance (cell) each point belongs
        to; both are recorded as spatialdata records them, and taken from the
        element's ``spatialdata_attrs`` when not given."""
        attrs = getattr(df, "attrs", None)
        attrs = attrs if isinstance(attrs, Mapping) else {}
        recorded = attrs.get("spatialdata_attrs") or {}
        if feature_key is None:
            feature_key = recorded.get("feature_key")
        if instance_key is None:
            instance_key = recorded.get("instance_key")
        batch = _inputs.record_batch(df, "points")
        chosen = transformations if transformations is not None else attrs.get("transform")
        axes = [a for a in ("x", "y", "z") if a in batch.schema.names]
        t = _inputs.transformations_json(chosen, axes) if chosen else None
        return self._native.add_points(
            name, batch, feature_key=feature_key, instance_key=instance_key, transformations=t, overwrite=overwrite
        )

    def append_points(self, name: str, df: Any, *, key: str | None = None) -> AppendResult:
        """Appends points as one new part, exactly once per ``key``."""
        start, stop, applied = self._native.append_points(name, _inputs.record_batch(df, "points"), key=key)
        return AppendResult(start, stop, applied)

    def add_shapes(
        self,
        name: str,
        shapes: Any,
        *,
        transformations: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> int:
        """Adds shapes from a GeoDataFrame: Polygons/MultiPolygons, or Points with a
        ``radius`` column (circles)."""
        kind, args = _inputs.shapes_input(shapes)
        found = shapes.attrs.get("transform") if hasattr(shapes, "attrs") else None
        chosen = transformations if transformations is not None else found
        t = _inputs.transformations_json(chosen, ["x", "y"]) if chosen else None
        if kind == "circles":
            return self._native.add_circles(name, transformations=t, overwrite=overwrite, **args)
        return self._native.add_polygons(name, transformations=t, overwrite=overwrite, **args)

    # --- changes -----------------------------------------------------------------

    def set_transformations(self, name: str, transformations: Mapping[str, Any]) -> int:
        """Replaces the coordinate transformations of an element; returns the generation."""
        info = self.info(name)
        if info["kind"] in ("images", "labels"):
            axes = [d for d in info["dims"] if d != "c"]
        elif info["kind"] == "points":
            axes = list(info["axes"])
        else:
            axes = ["x", "y"]
        return self._native.set_transformations(name, _inputs.transformations_json(transformations, axes))

    def remove(self, name: str) -> int:
        """Removes an element; returns the generation."""
        return self._native.remove(name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Dataset"]:
        """All-or-nothing: the changes made inside (through the yielded handle, or any
        handle on this dataset, on this thread) commit together on a clean exit, and
        are discarded on an exception. Holds the write lock throughout."""
        txn = self._native.begin()
        try:
            yield self
        except BaseException:
            txn.discard()
            raise
        txn.commit()

    @contextlib.contextmanager
    def lock(self, shared: bool = False, timeout: float | None = None) -> Iterator["Dataset"]:
        """The dataset's readers-writer lock (shared: read). Library calls of this
        thread inside join it; asking for the write lock while holding the read lock
        raises LockUpgradeError at once."""
        guard = self._native.lock(shared=shared, timeout=timeout)
        try:
            yield self
        finally:
            guard.release()


def open(  # noqa: A001 - the name users expect
    path: PathLike,
    create: bool = True,
    *,
    lock_timeout: float | None = None,
    allow_node_local_locks: bool = False,
    drop_consolidated_metadata: bool = False,
    durability: str | None = None,
    consolidated: str | None = None,
    labels_list: int | str | None = None,
    folder_sync: str | None = None,
) -> Dataset:
    """Opens the dataset at ``path`` (``create``: make an empty one if nothing is there).

    ``durability`` is what an acknowledged commit survives: ``"full"`` (the default:
    every file a commit depends on is fsynced, so it survives a power loss) or
    ``"process"`` (no fsync: it survives the crash or kill -9 of any process at any
    instant, but a power loss or a kernel crash may lose the commits of the last
    seconds and leave the dataset inconsistent, with torn or empty files). ``None``
    takes the environment variable ``SPATIALZARR_DURABILITY``, else ``"full"``.

    ``consolidated`` is what commits do with zarr-python's consolidated metadata in
    the root ``zarr.json``, when the dataset has it: ``"keep"`` it current while that
    document stays at most 1 MiB, then drop it (the default); ``"keep-unbounded"`` at
    any size; ``"drop"`` it at the next commit (readers then list the folders).
    ``drop_consolidated_metadata=True`` is the older spelling of ``"drop"``.

    ``labels_list`` is when commits that change the labels write the NGFF
    ``ome.labels`` list of ``labels/zarr.json``: a number N (while there are at most
    N labels; above, the list is removed, never left stale; default 10000),
    ``"always"`` or ``"never"``. No reader of the SpatialData layout needs it.

    ``folder_sync`` is whether ``"full"`` commits fsync the folders they change:
    ``"auto"`` (the default: not on a local xfs, or ext3/ext4 with a journal, whose
    journal makes those changes durable in order, one fsync round fewer per commit;
    yes everywhere else, an ext4 made without a journal included), ``"strict"`` (always) or ``"ordered"`` (never: only for a
    filesystem that keeps that order). ``None`` takes the environment variable
    ``SPATIALZARR_FOLDER_SYNC``, else ``"auto"``.

    A value these options do not accept raises InvalidInputError."""
    return Dataset(
        path,
        create=create,
        lock_timeout=lock_timeout,
        allow_node_local_locks=allow_node_local_locks,
        drop_consolidated_metadata=drop_consolidated_metadata,
        durability=durability,
        consolidated=consolidated,
        labels_list=labels_list,
        folder_sync=folder_sync,
    )


@contextlib.contextmanager
def locked(
    path: PathLike,
    shared: bool = False,
    timeout: float | None = None,
    *,
    allow_node_local_locks: bool = False,
) -> Iterator[os.PathLike]:
    """The lock of the dataset at ``path``, to guard calls of other libraries
    (spatialdata's ``write_element``, ``read_zarr``): the same lock spatialzarr's own
    calls and ``spatialzarr lock`` in a shell take."""
    import pathlib

    guard = _native.lock_path(os.fspath(path), shared=shared, timeout=timeout, allow_node_local_locks=allow_node_local_locks)
    try:
        yield pathlib.Path(path)
    finally:
        guard.release()
