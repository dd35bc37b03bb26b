"""What zarr-python, reading without any lock, sees of one table in each of many
dataset folders (the crash states of tests/crash.rs).

Usage: table_views.py TABLE LIST_FILE, LIST_FILE holding one dataset folder a line.
Prints one JSON object: by folder, either {"error": text}, or by node path (relative to
the table) {"shape": [...], "values": [...]} for every array zarr.open_group reaches.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import zarr  # noqa: E402


def view(folder, table):
    group = zarr.open_group(f"{folder}/tables/{table}", mode="r")
    nodes = {}
    for key, node in group.members(max_depth=None):
        if isinstance(node, zarr.Array):
            values = np.asarray(node[...]).reshape(-1).tolist()
            nodes[key] = {"shape": list(node.shape), "values": [v if isinstance(v, (int, float, bool)) else str(v) for v in values]}
    return nodes


def main():
    table, listing = sys.argv[1], sys.argv[2]
    out = {}
    for folder in open(listing).read().split("\n"):
        if not folder:
            continue
        try:
            out[folder] = view(folder, table)
        except Exception as error:  # reported to the test, which fails on it
            out[folder] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
