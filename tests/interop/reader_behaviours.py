"""Probes of the reader behaviours the publication order relies on
(spec/commit-protocol.md §10), run by tests/reader_behaviours.rs.

Usage: reader_behaviours.py CASE PATH [ARGS...]; prints one JSON object.
  b1 PATH              elements spatialdata lists, by kind
  b4 PATH TABLE NODE   the attributes zarr-python gives NODE through the table group
  b5 PATH TABLE CLI... an Array handle opened before an append (run as CLI...) and one
                       opened after: their shapes and the old handle's values
  b10 PATH TABLE       the number of rows spatialdata reads for TABLE
  b2 PATH              the shapes spatialdata gives each labels element's levels
  b3 PATH              the metadata documents spatialdata fetches, in order
  b7 PATH              whether zarr-python opens the root group, and its error
  b8 PATH              what spatialdata and zarr-python list in the labels group
  b9 PATH TABLE NODE   print `opened` once an Array handle of NODE is open, wait
                       for a line on stdin, then read through that handle
"""
import json
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore")

import spatialdata as sd  # noqa: E402
import zarr  # noqa: E402


def b1(path):
    sdata = sd.read_zarr(path)
    return {kind: sorted(getattr(sdata, kind).keys()) for kind in ("images", "labels", "tables")}


def b4(path, table, node):
    group = zarr.open_group(f"{path}/tables/{table}", mode="r")
    return {"attributes": dict(group[node].attrs), "shape": list(group[node].shape)}


def b5(path, table, *command):
    array = zarr.open_group(f"{path}/tables/{table}", mode="r")["obs/area"]
    before = list(array.shape)
    subprocess.run(command, check=True, capture_output=True)
    values = [float(v) for v in array[:]]
    after = list(zarr.open_group(f"{path}/tables/{table}", mode="r")["obs/area"].shape)
    return {"old_handle_shape": list(array.shape), "before": before, "values": values, "new_handle_shape": after}


def b10(path, table):
    return {"n_obs": int(sd.read_zarr(path).tables[table].n_obs)}


def b2(path):
    sdata = sd.read_zarr(path)
    shapes = {}
    for name, element in sdata.labels.items():
        if hasattr(element, "children") and element.children:
            shapes[name] = [list(element[level]["image"].shape) for level in element.children]
        else:
            shapes[name] = [list(element.shape)]
    return {"labels": shapes}


def b3(path):
    from zarr.storage import LocalStore

    fetched = []
    original = LocalStore.get

    async def get(self, key, *args, **kwargs):
        if key.endswith("zarr.json"):
            fetched.append(f"{self.root}/{key}")
        return await original(self, key, *args, **kwargs)

    LocalStore.get = get
    try:
        sd.read_zarr(path)
    finally:
        LocalStore.get = original
    root = str(__import__("pathlib").Path(path).resolve())
    relative = []
    for full in fetched:
        full = str(__import__("pathlib").Path(full).resolve())
        relative.append(full[len(root) + 1:] if full.startswith(root + "/") else full)
    return {"fetched": relative}


def b7(path):
    try:
        zarr.open_group(path, mode="r")
    except Exception as exc:  # noqa: BLE001 - the probe reports whatever it is
        return {"opened": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"opened": True, "error": None}


def b8(path):
    listed = sorted(sd.read_zarr(path).labels.keys())
    members = sorted(name for name, _ in zarr.open_group(f"{path}/labels", mode="r").members())
    return {"spatialdata": listed, "zarr": members}


def b9(path, table, node):
    array = zarr.open_group(f"{path}/tables/{table}", mode="r")[node]
    before = str(array.dtype)
    print("opened", flush=True)
    sys.stdin.readline()  # the caller commits, then writes a line
    after = str(zarr.open_group(f"{path}/tables/{table}", mode="r")[node].dtype)
    try:
        array[:]
        error = None
    except Exception as exc:  # noqa: BLE001 - the probe reports whatever it is
        error = f"{type(exc).__name__}: {exc}"
    return {"dtype_before": before, "dtype_after": after, "error": error}


def main():
    case, args = sys.argv[1], sys.argv[2:]
    cases = {"b1": b1, "b2": b2, "b3": b3, "b4": b4, "b5": b5, "b7": b7, "b8": b8, "b9": b9, "b10": b10}
    print(json.dumps(cases[case](*args)))


if __name__ == "__main__":
    main()
