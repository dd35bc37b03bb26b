"""Turns what users pass (numpy, xarray, spatialdata elements, dask arrays, pandas,
Arrow data, AnnData, GeoDataFrames, spatialdata transformations) into the plain values
the native module takes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ._errors import InvalidInputError


def is_dask_array(data: Any) -> bool:
    """Whether ``data`` is a dask array (without importing dask)."""
    return hasattr(data, "__dask_graph__") and hasattr(data, "chunks") and hasattr(data, "dtype")


@dataclass
class RasterInput:
    """A raster as the native module takes it."""

    data: Any  # a numpy array or a dask array: level 0
    dims: list[str] | None
    transformations: str | None
    scale_levels: int
    channel_names: list[str] | None
    levels: list[Any] | None = None  # every level (numpy or dask), level 0 first, when given


def _multiscale_levels(tree: Any) -> list[Any]:
    """The levels of a spatialdata multiscale DataTree (``scale0``, ``scale1``, ...), as
    DataArrays, level 0 first."""
    names = sorted(tree.children, key=lambda n: int(n[5:]) if n[5:].isdigit() else -1)
    if not names or names != [f"scale{i}" for i in range(len(names))]:
        raise InvalidInputError(
            f"invalid input: a multiscale DataTree needs levels scale0, scale1, ...; got {list(tree.children)}"
        )
    levels = []
    for n in names:
        node = tree[n]
        variables = list(node.data_vars) if hasattr(node, "data_vars") else []
        if len(variables) != 1:
            raise InvalidInputError(
                f"invalid input: level {n} of the DataTree holds {len(variables)} arrays, expected one"
            )
        levels.append(node[variables[0]])
    return levels


def _scale_levels(scale_factors: Sequence[Any] | None) -> int:
    if scale_factors is None:
        return 0
    for f in scale_factors:
        values = set(f.values()) if isinstance(f, Mapping) else {f}
        if values != {2}:
            raise InvalidInputError(
                f"invalid input: scale factor {f!r} is not supported: every pyramid level halves y and x (factor 2)"
            )
    return len(scale_factors)


def raster_input(
    data: Any,
    dims: Sequence[str] | None,
    scale_factors: Sequence[Any] | None,
    transformations: Mapping[str, Any] | None,
    channel_names: Sequence[str] | None = None,
) -> RasterInput:
    """Normalises an image or labels input. A multiscale DataTree's levels are kept,
    to be written as given (``scale_factors`` then has nothing to say)."""
    levels = _scale_levels(scale_factors)
    found_transformations = None
    given_levels = None
    if hasattr(data, "children") and hasattr(data, "subtree"):  # an xarray DataTree
        if scale_factors is not None:
            raise InvalidInputError(
                "invalid input: a multiscale DataTree carries its own levels, which are written as given;"
                " give scale_factors only with a single-scale array"
            )
        tree_levels = _multiscale_levels(data)
        data = tree_levels[0]
        if len(tree_levels) > 1:
            given_levels = [level.data for level in tree_levels]
    if hasattr(data, "dims") and hasattr(data, "attrs") and hasattr(data, "data"):  # DataArray
        if dims is None:
            dims = [str(d) for d in data.dims]
        found_transformations = data.attrs.get("transform")
        if channel_names is None and "c" in data.dims and "c" in data.coords:
            values = [str(v) for v in data.coords["c"].values]
            # spatialdata names channels 0, 1, ... when none are given: not names.
            if values != [str(i) for i in range(len(values))]:
                channel_names = values
        data = data.data
    if not is_dask_array(data):
        data = np.asarray(data)
    dims = list(dims) if dims is not None else None
    chosen = transformations if transformations is not None else found_transformations
    spatial_dims = _spatial_dims(dims, data.ndim)
    return RasterInput(
        data=data,
        dims=dims,
        transformations=transformations_json(chosen, spatial_dims) if chosen else None,
        scale_levels=0 if given_levels is not None else levels,
        channel_names=list(channel_names) if channel_names is not None else None,
        levels=given_levels,
    )


def _spatial_dims(dims: Sequence[str] | None, ndim: int) -> list[str]:
    if dims is not None:
        return [d for d in dims if d != "c"]
    return ["z", "y", "x"][3 - min(ndim, 3) :] if ndim != 3 else ["y", "x"]


def transformations_json(transformations: Mapping[str, Any], spatial_dims: Sequence[str]) -> str:
    """The NGFF list of transformations the native module takes, from a mapping of
    coordinate system to a spatialdata transformation (or an NGFF dict)."""
    if not isinstance(transformations, Mapping):
        raise InvalidInputError(
            "invalid input: transformations are a dict of coordinate system name to transformation"
        )
    axes = tuple(spatial_dims)
    n = len(axes)
    out = []
    for system, t in transformations.items():
        if isinstance(t, Mapping):
            entry = dict(t)
        else:
            try:
                matrix = np.asarray(t.to_affine_matrix(input_axes=axes, output_axes=axes), dtype=float)
            except Exception as e:  # not a spatialdata transformation
                raise InvalidInputError(
                    f"invalid input: the transformation to {system!r} is not a spatialdata transformation: {e}"
                ) from None
            linear, shift = matrix[:n, :n], matrix[:n, n]
            diagonal = np.allclose(linear, np.diag(np.diag(linear)))
            if np.allclose(linear, np.eye(n)) and not shift.any():
                entry = {"type": "identity"}
            elif diagonal and not shift.any():
                entry = {"type": "scale", "scale": np.diag(linear).tolist()}
            elif np.allclose(linear, np.eye(n)):
                entry = {"type": "translation", "translation": shift.tolist()}
            else:
                space = [{"name": a, "type": "space", "unit": "unit"} for a in axes]
                entry = {
                    "type": "affine",
                    "affine": matrix[:n].tolist(),  # NGFF leaves out the last row
                    "input": {"name": "".join(axes), "axes": space},
                    "output": {"axes": space},
                }
        output = dict(entry.get("output") or {})
        output["name"] = str(system)
        entry["output"] = output
        out.append(entry)
    return json.dumps(out)


def _normalise_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return pa.dictionary(t.index_type, _normalise_type(t.value_type), t.ordered)
    return t


def _pandas_arrays(frame: Any) -> tuple[list[Any], list[str]]:
    """The columns of a pandas DataFrame as Arrow arrays, column by column: the same
    types as ``pa.Table.from_pandas`` without building its pandas metadata, which costs
    about three times the conversion itself for a frame of a thousand rows."""
    names = [str(c) for c in frame.columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"invalid input: the column names {repeated} appear more than once")
    return [pa.array(column, from_pandas=True) for _, column in frame.items()], names


def record_batch(data: Any, what: str = "rows") -> pa.RecordBatch:
    """One Arrow record batch from a pandas DataFrame, a pyarrow Table or RecordBatch,
    or anything exporting ``__arrow_c_stream__`` / ``__arrow_c_array__``."""
    try:
        if isinstance(data, pa.RecordBatch):
            table = pa.Table.from_batches([data])
        elif isinstance(data, pa.Table):
            table = data
        elif type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
            arrays, names = _pandas_arrays(data)
            if not arrays:
                table = pa.table({})
            elif all(isinstance(a, pa.Array) and _normalise_type(a.type) == a.type for a in arrays):
                # One chunk per column, nothing to cast: the batch as it is.
                return pa.RecordBatch.from_arrays(arrays, names=names)
            else:
                table = pa.Table.from_arrays(arrays, names=names)
        elif hasattr(data, "__arrow_c_stream__"):
            table = pa.table(data)
        elif hasattr(data, "__arrow_c_array__"):
            table = pa.Table.from_batches([pa.record_batch(data)])
        elif hasattr(data, "compute") and hasattr(data, "columns"):  # a dask DataFrame
            table = pa.Table.from_pandas(data.compute(), preserve_index=False)
        else:
            raise InvalidInputError(
                f"invalid input: {what} must be a pandas DataFrame, a pyarrow Table or anything with"
                f" __arrow_c_stream__, not {type(data).__name__}"
            )
    except (pa.ArrowException, TypeError, ValueError) as e:
        if isinstance(e, InvalidInputError):
            raise
        raise InvalidInputError(f"invalid input: {what} cannot be converted to Arrow: {e}") from None
    schema = pa.schema([f.with_type(_normalise_type(f.type)) for f in table.schema])
    if schema != table.schema:
        table = table.cast(schema)
    table = table.combine_chunks()
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return batches[0]


@dataclass
class XInput:
    """X rows as the native module takes them."""

    dense: np.ndarray | None = None
    csr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    dtype: str = "float64"
    n_vars: int = 0


def x_input(X: Any) -> XInput:
    """Dense numpy (2-D) or scipy sparse (any format, stored as CSR) X rows."""
    if X is None:
        return XInput()
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):  # scipy sparse
        X = X.tocsr()
        dtype = _x_dtype(X.dtype)
        return XInput(
            csr=(
                np.ascontiguousarray(X.indptr, dtype=np.int64),
                np.ascontiguousarray(X.indices, dtype=np.int64),
                np.ascontiguousarray(X.data, dtype=np.float64),
            ),
            dtype=dtype,
            n_vars=int(X.shape[1]),
        )
    if is_dask_array(X):
        X = X.compute()
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidInputError(f"invalid input: X must be 2-D, got shape {X.shape}")
    dtype = _x_dtype(X.dtype)
    return XInput(dense=np.ascontiguousarray(X, dtype=np.float64), dtype=dtype, n_vars=int(X.shape[1]))


def _x_dtype(dtype: np.dtype) -> str:
    if dtype == np.float32:
        return "float32"
    if dtype == np.float64:
        return "float64"
    raise InvalidInputError(f"invalid input: X must be float32 or float64, got {dtype}")


def shapes_input(shapes: Any) -> tuple[str, dict[str, Any]]:
    """A GeoDataFrame as circles (Point geometries with a ``radius`` column) or
    (multi)polygons, with its other columns."""
    if not hasattr(shapes, "geometry"):
        raise InvalidInputError(
            f"invalid input: shapes must be a GeoDataFrame, not {type(shapes).__name__}"
        )
    import shapely

    geometry = shapes.geometry
    kinds = set(geometry.geom_type)
    others = [c for c in shapes.columns if c != geometry.name]
    if kinds <= {"Point"} and len(shapes):
        if "radius" not in shapes.columns:
            raise InvalidInputError("invalid input: circles (Point geometries) need a 'radius' column")
        coords = shapely.get_coordinates(geometry.values)
        rest = [c for c in others if c != "radius"]
        return "circles", {
            "x": coords[:, 0].astype(float).tolist(),
            "y": coords[:, 1].astype(float).tolist(),
            "radius": np.asarray(shapes["radius"], dtype=float).tolist(),
            "columns": record_batch(shapes[rest], "shape columns") if rest else None,
        }
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InvalidInputError(
            f"invalid input: shapes must be all Points (circles) or all Polygons/MultiPolygons, got {sorted(kinds)}"
        )

    def rings(polygon: Any) -> list[list[list[float]]]:
        return [np.asarray(polygon.exterior.coords)[:, :2].tolist()] + [
            np.asarray(r.coords)[:, :2].tolist() for r in polygon.interiors
        ]

    listed = []
    for g in geometry.values:
        if g.geom_type == "Polygon":
            listed.append(("Polygon", [rings(g)]))
        else:
            listed.append(("MultiPolygon", [rings(p) for p in g.geoms]))
    return "polygons", {
        "shapes": listed,
        "columns": record_batch(shapes[others], "shape columns") if others else None,
    }
