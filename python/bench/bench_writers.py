"""Throughput of concurrent writers through the Python package: 8 processes x 8
add_labels of 1024 x 1024 uint32, and 8 processes x 20 append_rows of 1,000 rows.

    python bench_writers.py [--processes 8]

Prints one JSON object with the wall time of each scenario. (Comparing it with the
same work through the Rust library needs a Rust driver of the same shape; the
release-build figures belong next to those of `spatialzarr bench`.)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import spatialzarr as sz


def add_labels(path: str, worker: int, count: int) -> None:
    ds = sz.open(path, create=False)
    labels = np.random.default_rng(worker).integers(0, 5000, size=(1024, 1024), dtype=np.uint32)
    for i in range(count):
        ds.add_labels(f"w{worker}_l{i}", labels)


def append_rows(path: str, worker: int, count: int) -> None:
    ds = sz.open(path, create=False)
    rows = pd.DataFrame({
        "region": pd.Categorical([f"w{worker}"] * 1000),
        "instance_id": np.arange(1000),
        "area": np.random.default_rng(worker).random(1000),
    })
    for i in range(count):
        ds.append_rows("cells", rows, key=f"w{worker}_{i}")


def timed(fn, processes: int, count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.zarr")
        sz.open(path)
        start = time.perf_counter()
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(fn, [path] * processes, range(processes), [count] * processes))
        return time.perf_counter() - start


if __name__ == "__main__":
    processes = int(sys.argv[sys.argv.index("--processes") + 1]) if "--processes" in sys.argv else 8
    print(json.dumps({
        "processes": processes,
        "add_labels_8x1024x1024_u32_s": round(timed(add_labels, processes, 8), 3),
        "append_rows_20x1000_s": round(timed(append_rows, processes, 20), 3),
    }))
