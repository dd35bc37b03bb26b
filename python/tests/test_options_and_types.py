"""The dataset options of ``sz.open`` (listing documents), points with an instance
key, and X read back in the element type it is stored in; each through spatialzarr
and spatialdata 0.8."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import spatialdata
from anndata import AnnData

import spatialzarr as sz


def _attributes(path) -> dict:
    return json.loads(path.read_text())["attributes"]


def _labels_list(root):
    return _attributes(root / "labels" / "zarr.json").get("ome", {}).get("labels")


def test_labels_list_policies_and_refusals(dataset_path):
    labels = np.ones((4, 4), np.uint32)
    bounded = sz.open(dataset_path, labels_list=1)
    bounded.add_labels("a", labels)
    assert _labels_list(dataset_path) == ["a"]
    bounded.add_labels("b", labels)
    assert _labels_list(dataset_path) is None, "above the bound the list is removed"
    always = sz.open(dataset_path, labels_list="always")
    always.add_labels("c", labels)
    assert _labels_list(dataset_path) == ["a", "b", "c"]
    # A pickled handle keeps the policy (as a worker process would get it).
    never = pickle.loads(pickle.dumps(sz.open(dataset_path, labels_list="never")))
    never.add_labels("d", labels)
    assert _labels_list(dataset_path) is None
    assert sorted(spatialdata.read_zarr(dataset_path).labels) == ["a", "b", "c", "d"]
    for bad in ("sometimes", -1, True, 2.5):
        with pytest.raises(sz.InvalidInputError, match="labels_list"):
            sz.open(dataset_path, labels_list=bad)


def _spatialdata_dataset(path) -> None:
    """A dataset written by spatialdata itself: its root carries consolidated metadata."""
    from spatialdata.models import Labels2DModel

    labels = Labels2DModel.parse(np.ones((8, 8), np.uint16), dims=("y", "x"))
    spatialdata.SpatialData(labels={"first": labels}).write(path)


def _consolidated_nodes(root) -> set[str] | None:
    block = json.loads((root / "zarr.json").read_text()).get("consolidated_metadata")
    return None if block is None else set(block["metadata"])


def test_consolidated_policies_keep_and_drop(tmp_path):
    kept, dropped = tmp_path / "kept.zarr", tmp_path / "dropped.zarr"
    for path in (kept, dropped):
        _spatialdata_dataset(path)
        assert "labels/first" in _consolidated_nodes(path)
    sz.open(kept, consolidated="keep").add_labels("second", np.zeros((4, 4), np.uint8))
    assert {"labels/first", "labels/second"} <= _consolidated_nodes(kept)
    sz.open(dropped, consolidated="keep-unbounded").add_labels("second", np.zeros((4, 4), np.uint8))
    assert "labels/second" in _consolidated_nodes(dropped)
    pickle.loads(pickle.dumps(sz.open(dropped, consolidated="drop"))).add_labels("third", np.zeros((4, 4), np.uint8))
    assert _consolidated_nodes(dropped) is None
    for path, names in ((kept, {"first", "second"}), (dropped, {"first", "second", "third"})):
        assert set(spatialdata.read_zarr(path).labels) == names
    with pytest.raises(sz.InvalidInputError, match="keep, keep-unbounded or drop"):
        sz.open(kept, consolidated="current")
    with pytest.raises(sz.InvalidInputError, match="contradicts"):
        sz.open(kept, consolidated="keep", drop_consolidated_metadata=True)


def _transcripts(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "x": rng.random(n) * 10,
            "y": rng.random(n) * 10,
            "gene": pd.Categorical(rng.choice(["Actb", "Gapdh"], n)),
            "cell_id": rng.integers(0, 4, n),
        }
    )


def test_points_instance_key_round_trips_through_spatialdata(dataset_path, tmp_path):
    from spatialdata.models import PointsModel

    ds = sz.open(dataset_path)
    frame = _transcripts()
    # From spatialdata's PointsModel: both keys taken from the element's attrs.
    parsed = PointsModel.parse(frame, feature_key="gene", instance_key="cell_id")
    ds.add_points("parsed", parsed)
    # Given as arguments.
    ds.add_points("given", frame, feature_key="gene", instance_key="cell_id")
    for name in ("parsed", "given"):
        info = ds.info(name)
        assert (info["feature_key"], info["instance_key"]) == ("gene", "cell_id")
        assert ds.read_points(name).column("cell_id").to_pylist() == frame["cell_id"].tolist()
    r = ds.append_points("given", frame.iloc[:3], key="more")
    assert (r.start, r.stop) == (12, 15)
    with pytest.raises(sz.InvalidInputError, match="cell_id"):
        ds.append_points("given", frame.drop(columns="cell_id"))
    with pytest.raises(sz.InvalidInputError, match="instance key column 'nucleus'|instance key column \"nucleus\""):
        ds.add_points("bad", frame, instance_key="nucleus")
    assert "bad" not in ds

    sdata = spatialdata.read_zarr(dataset_path)
    for name, n in (("parsed", 12), ("given", 15)):
        element = sdata.points[name]
        assert element.attrs["spatialdata_attrs"] == {"feature_key": "gene", "instance_key": "cell_id"}
        got = element.compute()
        assert len(got) == n and list(got["cell_id"][:12]) == frame["cell_id"].tolist()
    # spatialdata writes the element it read; spatialzarr reads its keys back.
    again = tmp_path / "again.zarr"
    spatialdata.SpatialData(points={"copy": sdata.points["parsed"]}).write(again)
    info = sz.open(again, create=False).info("copy")
    assert (info["feature_key"], info["instance_key"]) == ("gene", "cell_id")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_x_keeps_the_stored_dtype(dataset_path, dtype):
    ds = sz.open(dataset_path)
    obs = pd.DataFrame({"region": pd.Categorical(["r"] * 6), "instance_id": np.arange(6)})
    dense = (np.arange(18).reshape(6, 3) / 7).astype(dtype)
    ds.append_rows("dense", obs, X=dense)
    back = ds.read_X("dense")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, dense)
    sparse = scipy.sparse.random(6, 5, density=0.4, format="csr", random_state=1, dtype=dtype)
    ds.append_rows("sparse", obs, X=sparse)
    back = ds.read_X("sparse")
    assert scipy.sparse.issparse(back) and back.dtype == np.dtype(dtype)
    assert back.shape == (6, 5) and (back != sparse).nnz == 0
    table = spatialdata.read_zarr(dataset_path).tables["dense"]
    assert table.X.dtype == np.dtype(dtype)


def test_read_x_of_integer_tables_written_by_spatialdata(tmp_path):
    from spatialdata.models import TableModel

    path = tmp_path / "ints.zarr"
    obs = pd.DataFrame({"region": pd.Categorical(["r"] * 4), "instance_id": np.arange(4)})
    counts = np.array([[0, 3], [2**40, 1], [7, 0], [5, 5]], dtype=np.int64)
    tables = {
        "dense": TableModel.parse(AnnData(X=counts, obs=obs), region="r", region_key="region", instance_key="instance_id"),
        "sparse": TableModel.parse(
            AnnData(X=scipy.sparse.csr_matrix(counts.astype(np.int32) % 100), obs=obs.copy()),
            region="r",
            region_key="region",
            instance_key="instance_id",
        ),
    }
    spatialdata.SpatialData(tables=tables).write(path)
    ds = sz.open(path, create=False)
    dense = ds.read_X("dense")
    assert dense.dtype == np.int64 and np.array_equal(dense, counts)
    sparse = ds.read_X("sparse")
    assert sparse.dtype == np.int32 and np.array_equal(sparse.toarray(), counts.astype(np.int32) % 100)
