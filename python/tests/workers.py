"""Functions run in worker processes and threads (importable by spawn and forkserver)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import spatialzarr as sz

INSTANCE_KEY = "instance_id"
REGION_KEY = "region"


def table_rows(region: str, n_obs: int, n_vars: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(rng.normal(size=(n_obs, 3)), columns=["a", "b", "c"])
    obs[INSTANCE_KEY] = np.arange(n_obs)
    obs[REGION_KEY] = pd.Categorical([region] * n_obs)
    return obs, rng.normal(size=(n_obs, n_vars))


def append_table(path: str, process_num: int, n_obs: int = 100, n_vars: int = 10) -> tuple[int, int]:
    """The seed's process_that_updates_table, done through spatialzarr in-process."""
    ds = sz.open(path, create=False)
    obs, X = table_rows(f"region{process_num}", n_obs, n_vars, process_num)
    r = ds.append_rows("table", obs, X=X, key=f"region{process_num}")
    return r.start, r.stop


def add_image(path: str, process_num: int, width: int = 10) -> int:
    """The seed's process_that_adds_image, done through spatialzarr in-process."""
    ds = sz.open(path, create=False)
    image = np.full(shape=(1, width, width), fill_value=process_num)
    return ds.add_image(f"image{process_num}", image, dims=("c", "y", "x"))


def add_with_handle(ds: sz.Dataset, i: int) -> int:
    """Uses a pickled (or shared) handle."""
    ds.add_labels(f"labels{i}", np.full((16, 16), i, dtype=np.uint16))
    ds.append_rows("cells", pd.DataFrame({"region": pd.Categorical([f"labels{i}"]), "instance_id": [i]}), key=f"k{i}")
    return i


def spatialdata_writer(path: str, i: int) -> str:
    """spatialdata's own write_element, guarded by the dataset lock."""
    import spatialdata
    from spatialdata.models import Labels2DModel

    labels = Labels2DModel.parse(np.full((12, 12), i, dtype=np.uint8), dims=("y", "x"))
    with sz.locked(path):
        sdata = spatialdata.read_zarr(path)
        sdata.labels[f"sd_labels{i}"] = labels
        sdata.write_element(f"sd_labels{i}")
    return f"sd_labels{i}"


def spatialzarr_writer(path: str, i: int) -> str:
    sz.open(path, create=False).add_labels(f"sz_labels{i}", np.full((12, 12), i, dtype=np.uint8))
    return f"sz_labels{i}"
