"""Probes of the reader behaviours the publication order relies on
(spec/commit-protocol.md §10), run by tests/reader_behaviours.rs.

Usage: reader_behaviours.py CASE PATH [ARGS...]; prints one JSON object.
  b1 PATH              elements spatialdata lists, by kind
  b4 PATH TABLE NODE   the attributes zarr-python gives NODE through the table group
  b5 PATH TABLE CLI... an Array handle opened before an append (run as CLI...) and one
                       opened after: their shapes and the old handle's values
  b10 PATH TABLE       the number of rows spatialdata reads for TABLE
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


def main():
    case, args = sys.argv[1], sys.argv[2:]
    print(json.dumps({"b1": b1, "b4": b4, "b5": b5, "b10": b10}[case](*args)))


if __name__ == "__main__":
    main()
