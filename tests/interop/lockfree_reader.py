"""Read a dataset over and over WITHOUT any lock while writers commit, and validate
every read. Used by tests/lockfree_readers.rs.

Usage: lockfree_reader.py PATH SECONDS MODE TABLE
MODE `spatialdata`: `spatialdata.read_zarr(PATH)` and then every element it lists.
MODE `zarr`: `zarr.open_group(PATH/tables/TABLE)` and its arrays, as zarr-python
users read a table.

The writers' rows follow `expected_area` and `expected_x` below (the test writes them
so); labels pixels follow `expected_label`, images `expected_pixel`. Prints one JSON
object: {"reads": N, "failures": [{"start", "end", "error"}...]} where start and end
are the wall-clock seconds (time.time()) of the failed read.
"""
import json
import re
import sys
import time
import traceback
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import spatialdata as sd  # noqa: E402
import zarr  # noqa: E402

LABEL_RE = re.compile(r"^lab_(\d+)_(\d+)$")
IMAGE_RE = re.compile(r"^img_(\d+)_(\d+)$")


def expected_area(writer, batch, row):
    return writer * 1_000_000 + batch * 1_000 + row + 0.5


def expected_x(writer, batch, row, col):
    return expected_area(writer, batch, row) * 10 + col


def label_pixels(writer, index, version, shape):
    """Labels `lab_W_I` at version V (0 for the first write, +1 per overwrite)."""
    y, x = np.indices(shape)
    return (writer * 1_000_000 + index * 1_000 + version * 10 + (y + x) % 10).astype(np.uint32)


def image_pixels(writer, index, shape):
    c, y, x = np.indices(shape)
    return ((writer * 31 + index * 7 + y + x + c) % 251).astype(np.uint8)


class Inconsistent(Exception):
    pass


def check_rows(n, writer, batch, row, area, x):
    """The rows are what some writer wrote: a committed prefix, never garbage."""
    if not (len(writer) == len(batch) == len(row) == len(area) == n):
        raise Inconsistent(
            f"obs columns of different lengths: n={n} writer={len(writer)} "
            f"batch={len(batch)} row={len(row)} area={len(area)}"
        )
    if x.shape[0] != n:
        raise Inconsistent(f"X has {x.shape[0]} rows, obs {n}")
    want = expected_area(np.asarray(writer, dtype=np.float64), np.asarray(batch, dtype=np.float64),
                         np.asarray(row, dtype=np.float64))
    if not np.array_equal(np.asarray(area, dtype=np.float64), want):
        bad = int(np.argmax(np.asarray(area, dtype=np.float64) != want))
        raise Inconsistent(f"area of row {bad} is {area[bad]}, written {want[bad]}")
    cols = np.arange(x.shape[1])
    want_x = want[:, None] * 10 + cols[None, :]
    if not np.array_equal(np.asarray(x, dtype=np.float64), want_x):
        bad = int(np.argwhere(np.asarray(x, dtype=np.float64) != want_x)[0][0])
        raise Inconsistent(f"X row {bad} is not what was written")


def check_regions(present, declared, where):
    missing = sorted(set(present) - set(declared))
    if missing:
        raise Inconsistent(f"{where}: regions {missing} in obs but not in the region list {sorted(declared)}")


def check_raster(kind, name, data):
    if kind == "labels":
        m = LABEL_RE.match(name)
        if not m:
            return
        writer, index = int(m.group(1)), int(m.group(2))
        version = int((int(data[0, 0]) // 10) % 100)
        want = label_pixels(writer, index, version, data.shape)
    else:
        m = IMAGE_RE.match(name)
        if not m:
            return
        want = image_pixels(int(m.group(1)), int(m.group(2)), data.shape)
    if not np.array_equal(data, want):
        raise Inconsistent(f"{kind}/{name}: pixels differ from what was written")


def read_spatialdata(path, table_name):
    sdata = sd.read_zarr(path)
    for kind in ("labels", "images"):
        for name, element in getattr(sdata, kind).items():
            data = element
            if hasattr(data, "keys") and not hasattr(data, "values"):
                data = data["scale0"]
            if hasattr(element, "children"):  # a multiscale DataTree
                data = element["scale0"].ds[list(element["scale0"].ds.data_vars)[0]]
            check_raster(kind, name, np.asarray(data.values))
    for name, table in sdata.tables.items():
        n = table.n_obs
        obs = table.obs
        check_rows(n, obs["writer"].to_numpy(), obs["batch"].to_numpy(), obs["row"].to_numpy(),
                   obs["area"].to_numpy(), np.asarray(table.X))
        attrs = table.uns["spatialdata_attrs"]
        declared = attrs["region"]
        declared = [declared] if isinstance(declared, str) else list(declared)
        check_regions(obs[attrs["region_key"]].astype(str).unique(), declared, f"table {name}")
    if table_name not in sdata.tables:
        raise Inconsistent(f"table {table_name} not listed")


def read_zarr_group(path, table_name):
    g = zarr.open_group(f"{path}/tables/{table_name}", mode="r")
    index = g["obs/_index"][:]
    n = len(index)
    cols = {c: g[f"obs/{c}"][:] for c in ("writer", "batch", "row", "area")}
    x = g["X"][:]
    check_rows(n, cols["writer"], cols["batch"], cols["row"], cols["area"], x)
    codes = g["obs/region/codes"][:]
    categories = g["obs/region/categories"][:]
    if len(codes) != n:
        raise Inconsistent(f"obs/region/codes has {len(codes)} rows, obs {n}")
    if len(codes) and codes.max() >= len(categories):
        raise Inconsistent(f"region code {codes.max()} beyond {len(categories)} categories")
    present = [str(categories[c]) for c in np.unique(codes) if c >= 0]
    declared = g["uns/spatialdata_attrs/region"][...]
    declared = [str(declared)] if np.ndim(declared) == 0 else [str(r) for r in declared]
    check_regions(present, declared, "uns/spatialdata_attrs/region")
    check_regions(present, list(g.attrs.get("region", [])) if not isinstance(g.attrs.get("region"), str)
                  else [g.attrs["region"]], "the table's region attribute")


def main():
    path, seconds, mode, table = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    read = read_spatialdata if mode == "spatialdata" else read_zarr_group
    deadline = time.time() + seconds
    reads = 0
    failures = []
    while time.time() < deadline:
        start = time.time()
        try:
            read(path, table)
        except Exception as error:  # every failure is reported, none hidden
            text = f"{type(error).__name__}: {error}"
            if not isinstance(error, Inconsistent):
                text += " | " + traceback.format_exc().strip().splitlines()[-1]
            failures.append({"start": start, "end": time.time(), "error": text[:2000]})
        reads += 1
    print(json.dumps({"reads": reads, "failures": failures}))


if __name__ == "__main__":
    main()
