"""Read a dataset with spatialdata 0.8 and print one JSON summary of it to stdout.

Usage: read_dataset.py PATH [--zarr-arrays]
Exit 1 (traceback on stderr) if spatialdata (or zarr-python, with --zarr-arrays) fails.
"""
import contextlib
import hashlib
import json
import math
import sys
import traceback

import numpy as np
import pandas as pd


def jsonable(v):
    """A scalar as plain JSON: numpy scalars unwrapped, NaN/None/NA as null."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def floats(a):
    return [float(x) for x in np.asarray(a).ravel()]


def transformation(t):
    from spatialdata import transformations as tr

    if isinstance(t, tr.Identity):
        return {"type": "identity"}
    if isinstance(t, tr.Scale):
        return {"type": "scale", "scale": floats(t.scale), "axes": list(t.axes)}
    if isinstance(t, tr.Translation):
        return {"type": "translation", "translation": floats(t.translation), "axes": list(t.axes)}
    if isinstance(t, tr.Affine):
        return {"type": "affine", "matrix": [floats(row) for row in t.matrix],
                "input_axes": list(t.input_axes), "output_axes": list(t.output_axes)}
    if isinstance(t, tr.Sequence):
        return {"type": "sequence", "transformations": [transformation(x) for x in t.transformations]}
    if isinstance(t, tr.MapAxis):
        return {"type": "map_axis", "map_axis": dict(t.map_axis)}
    raise TypeError(f"unknown transformation {t!r}")


def transformations(elem):
    from spatialdata.transformations import get_transformation

    return {cs: transformation(t) for cs, t in sorted(get_transformation(elem, get_all=True).items())}


def raster(name, elem, is_image):
    from xarray import DataTree

    if isinstance(elem, DataTree):
        levels = len(elem.children)
        (full,) = elem["scale0"].ds.data_vars.values()
    else:
        levels, full = 1, elem
    px = np.ascontiguousarray(full.values)
    if np.issubdtype(px.dtype, np.integer):
        acc = np.uint64 if np.issubdtype(px.dtype, np.unsignedinteger) else np.int64
        total = int(px.sum(dtype=acc))
    elif px.dtype == np.bool_:
        total = int(px.sum())
    else:
        total = float(px.sum(dtype=np.float64))
    return {
        "name": name,
        "dims": list(full.dims),
        "shape": list(px.shape),
        "dtype": str(px.dtype),
        "levels": levels,
        "sum": total,
        "sha256": hashlib.sha256(px.tobytes()).hexdigest(),
        "channels": [jsonable(c) for c in full.coords["c"].values] if is_image and "c" in full.coords else None,
        "transformations": transformations(elem),
    }


def points(name, elem):
    df = elem.compute()
    return {"name": name, "n": len(df), "columns": [str(c) for c in df.columns],
            "sum_x": float(df["x"].sum()), "sum_y": float(df["y"].sum()),
            "spatialdata_attrs": {str(k): jsonable(v) for k, v in elem.attrs.get("spatialdata_attrs", {}).items()},
            "transformations": transformations(elem)}


def shapes(name, elem):
    return {"name": name, "n": len(elem), "columns": [str(c) for c in elem.columns],
            "geometry_types": sorted(set(elem.geometry.geom_type.dropna())),
            "transformations": transformations(elem)}


def table(name, t):
    import scipy.sparse as sp
    from spatialdata.models import TableModel

    TableModel().validate(t)
    attrs = t.uns["spatialdata_attrs"]
    region = attrs["region"]
    region = [region] if isinstance(region, str) else list(region)
    rk = attrs["region_key"]
    x = t.X
    x_sum = None if x is None else float(x.sum() if sp.issparse(x) else np.asarray(x, dtype=np.float64).sum())
    return {
        "name": name,
        "n_obs": int(t.n_obs),
        "n_vars": int(t.n_vars),
        "obs_names": [str(i) for i in t.obs_names],
        "obs_columns": [str(c) for c in t.obs.columns],
        "obs_dtypes": {str(c): str(d) for c, d in t.obs.dtypes.items()},
        "region": sorted(str(r) for r in region),
        "region_key": rk,
        "instance_key": attrs["instance_key"],
        "regions_present": sorted({str(v) for v in t.obs[rk].dropna()}),
        "obs": {str(c): [jsonable(v) for v in t.obs[c].astype(object)] for c in t.obs.columns},
        "X_sum": x_sum,
        "X_shape": list(x.shape) if x is not None else [int(t.n_obs), int(t.n_vars)],
        "var_names": [str(v) for v in t.var_names],
    }


def zarr_arrays(path):
    """Every array of the real tree (consolidated metadata ignored), each read fully; and the
    nodes whose consolidated copy (what spatialdata reads when present) is missing or differs."""
    import zarr

    def walk(**kw):
        root = zarr.open_group(path, mode="r", **kw)
        return {"": root, **dict(root.members(max_depth=None))}

    def describe(node):
        return type(node).__name__, node.attrs.asdict(), getattr(node, "shape", None)

    on_disk, consolidated = walk(use_consolidated=False), walk()
    # The store's hidden folder, a zero-size array node (spec/format.md, section 5):
    # not data, and invisible where the consolidated metadata lacks it.
    on_disk.pop(".spatialzarr", None)
    arrays = {}
    for key, node in sorted(on_disk.items()):
        if isinstance(node, zarr.Array):
            node[...]  # read every chunk
            arrays[key] = {"shape": list(node.shape), "dtype": str(node.dtype)}
    stale = [k for k, n in sorted(on_disk.items()) if k not in consolidated or describe(consolidated[k]) != describe(n)]
    return arrays, stale


def summarize(path, with_zarr):
    import spatialdata as sd
    from spatialdata.models import get_model

    sdata = sd.read_zarr(path)
    for _, _, elem in sdata.gen_spatial_elements():
        get_model(elem)  # validates
    result = {
        "images": [raster(n, e, True) for n, e in sorted(sdata.images.items())],
        "labels": [raster(n, e, False) for n, e in sorted(sdata.labels.items())],
        "points": [points(n, e) for n, e in sorted(sdata.points.items())],
        "shapes": [shapes(n, e) for n, e in sorted(sdata.shapes.items())],
        "tables": [table(n, t) for n, t in sorted(sdata.tables.items())],
    }
    if with_zarr:
        result["zarr_arrays"], result["zarr_consolidated_stale"] = zarr_arrays(path)
    return result


def main():
    args = sys.argv[1:]
    with_zarr = "--zarr-arrays" in args
    paths = [a for a in args if a != "--zarr-arrays"]
    if len(paths) != 1:
        sys.exit(__doc__)
    try:
        # Libraries sometimes print; keep stdout for the JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            result = summarize(paths[0], with_zarr)
        text = json.dumps(result, allow_nan=False)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    print(text)


if __name__ == "__main__":
    main()
