"""A synthetic segmentation task: what a cellpose/stardist worker does, in miniature."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import spatialzarr as sz


def synthetic_image(index: int, size: int = 128) -> np.ndarray:
    """Bright disks on a noisy background, different for every index."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[0:size, 0:size]
    image = rng.normal(10, 2, size=(size, size))
    for _ in range(int(rng.integers(3, 9))):
        cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(3, 8)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += 100
    return image.astype(np.uint16)


def segment(image: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Threshold and connected components; one row per cell."""
    from scipy import ndimage

    labels, n = ndimage.label(image > 50)
    ids = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, ids) if n else np.array([])
    obs = pd.DataFrame({"instance_id": ids.astype(np.int64), "area": np.asarray(areas, dtype=np.float64)})
    return labels.astype(np.uint32), obs


def segment_and_commit(path: str, index: int, delay: float = 0.0) -> tuple[str, bool, int]:
    """Segments image ``index`` and commits its labels and rows in ONE transaction
    keyed by the image name: a retried task adds nothing twice."""
    name = f"image_{index:03d}"
    labels, obs = segment(synthetic_image(index))
    obs.insert(0, "region", pd.Categorical([f"{name}_labels"] * len(obs)))
    time.sleep(delay)
    ds = sz.open(path, create=False)
    with ds.transaction() as txn:
        r = txn.append_rows("cells", obs, key=name)
        if r.applied:
            txn.add_labels(f"{name}_labels", labels)
    return name, r.applied, len(obs)
