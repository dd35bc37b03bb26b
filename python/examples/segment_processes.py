"""Parallel segmentation with ProcessPoolExecutor: every worker commits its image's
labels and rows in ONE transaction keyed by the image name, so a retried or repeated
run adds nothing twice.

    python segment_processes.py cells.zarr 16
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from scipy import ndimage

import spatialzarr as sz


def segment_and_commit(path: str, index: int) -> tuple[str, bool]:
    rng = np.random.default_rng(index)
    image = ndimage.gaussian_filter(rng.random((512, 512)), 4)      # stands in for a real tile
    labels, n = ndimage.label(image > image.mean() + image.std())
    ids = np.arange(1, n + 1)
    name = f"tile_{index:03d}"
    rows = pd.DataFrame({
        "region": pd.Categorical([f"{name}_labels"] * n),
        "instance_id": ids,
        "area": ndimage.sum_labels(np.ones_like(labels), labels, ids),
    })
    ds = sz.open(path, create=False)
    with ds.transaction() as txn:
        r = txn.append_rows("cells", rows, key=name)
        if r.applied:                                   # a retry finds its key committed
            txn.add_labels(f"{name}_labels", labels.astype(np.uint32))
    return name, r.applied


if __name__ == "__main__":
    path, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16
    sz.open(path)
    with ProcessPoolExecutor(max_workers=4) as pool:
        for name, applied in pool.map(segment_and_commit, [path] * count, range(count)):
            print(name, "committed" if applied else "already there")
    print(sz.open(path).info("cells")["n_obs"], "cells")
