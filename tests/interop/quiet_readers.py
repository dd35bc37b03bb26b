"""Open a dataset the ways Zarr readers do, with every UserWarning (ZarrUserWarning
included) turned into an error, and print one JSON summary of what they saw.
Ignored: the warnings any spatialdata dataset raises (the parquet files of points and
shapes, zarr's notice about consolidated metadata).

Usage: quiet_readers.py PATH [--write]
Reads PATH with zarr.open_group (members, also a full traversal as napari plugins do)
and spatialdata.read_zarr. With --write, also writes a copy of the first labels
element back with spatialdata (write_element, write_consolidated_metadata), runs
zarr.consolidate_metadata, and reads again. Exit 1 (traceback on stderr) on the
first warning or failure.
"""
import json
import sys
import warnings

warnings.filterwarnings("error", category=UserWarning)
# spatialdata's own layout: the parquet files of points and shapes elements hold no
# Zarr metadata (spatialdata silences this warning where it traverses the hierarchy).
warnings.filterwarnings(
    "ignore", message=r"Object at \S+\.parquet is not recognized", category=UserWarning
)

import spatialdata as sd  # noqa: E402
import zarr  # noqa: E402


def members(path):
    """Every node a full traversal reaches: path -> "group" / "array SHAPE"."""
    root = zarr.open_group(path, mode="r")
    seen = {}
    for key, node in root.members(max_depth=None):
        seen[key] = "group" if isinstance(node, zarr.Group) else f"array {list(node.shape)}"
    list(root.group_keys())
    list(root.array_keys())
    return seen


def consolidated(path):
    root = json.load(open(f"{path}/zarr.json"))
    block = root.get("consolidated_metadata") or {}
    return sorted(block.get("metadata", {}))


def elements(sdata):
    return sorted(f"{kind}/{name}" for kind, name, _ in sdata.gen_elements())


def main():
    path = sys.argv[1]
    out = {"members": members(path), "elements": elements(sd.read_zarr(path))}
    if "--write" in sys.argv[2:]:
        sdata = sd.read_zarr(path)
        first = sorted(sdata.labels)[0]
        sdata.labels[f"{first}_copy"] = sdata.labels[first]
        sdata.write_element(f"{first}_copy")
        sdata.write_consolidated_metadata()
        with warnings.catch_warnings():
            # zarr's notice about the format of consolidated metadata, whatever the
            # hierarchy holds; every other warning stays an error.
            warnings.filterwarnings(
                "ignore", message="Consolidated metadata is currently not part", category=UserWarning
            )
            zarr.consolidate_metadata(path)
        out["consolidated"] = consolidated(path)
        out["members_after_write"] = members(path)
        out["elements_after_write"] = elements(sd.read_zarr(path))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
