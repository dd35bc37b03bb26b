"""Every input kind written through spatialzarr and read back exactly, through
spatialzarr and through spatialdata 0.8."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse
import spatialdata
from anndata import AnnData

import spatialzarr as sz

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_images_of_every_dtype(dataset_path, dtype):
    ds = sz.open(dataset_path)
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        data = rng.integers(info.min, info.max, size=(2, 33, 20), dtype=dtype, endpoint=True)
    else:
        data = rng.normal(size=(2, 33, 20)).astype(dtype)
    ds.add_image("img", data, channel_names=["dapi", "cd45"], scale_factors=[2])
    back = ds.read_raster("img")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, data)
    sdata = spatialdata.read_zarr(dataset_path)
    img = sdata.images["img"]["scale0"]["image"]
    assert np.array_equal(img.values, data)
    assert list(img.coords["c"].values) == ["dapi", "cd45"]
    if info is not None:
        ds.add_labels("lab", data[0])
        assert np.array_equal(ds.read_raster("lab"), data[0])
        assert np.array_equal(spatialdata.read_zarr(dataset_path).labels["lab"].values, data[0])


def test_xarray_dataarray_keeps_dims_and_transformations(dataset_path):
    from spatialdata.models import Image2DModel, Labels2DModel
    from spatialdata.transformations import Affine, Scale, Translation, get_transformation

    ds = sz.open(dataset_path)
    pixels = np.arange(2 * 16 * 12, dtype=np.uint16).reshape(2, 16, 12)
    image = Image2DModel.parse(
        pixels,
        dims=("c", "y", "x"),
        transformations={"global": Scale([2.0, 3.0], axes=("y", "x")), "aligned": Translation([5.0, 7.0], axes=("y", "x"))},
    )
    ds.add_image("img", image)
    labels = Labels2DModel.parse(
        (pixels[0] % 7).astype(np.int32),
        dims=("y", "x"),
        transformations={"global": Affine(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [0.0, 0.0, 1.0]]), input_axes=("x", "y"), output_axes=("x", "y"))},
    )
    ds.add_labels("lab", labels)
    info = ds.info("img")
    assert info["dims"] == ["c", "y", "x"]
    assert info["transformations"]["global"] == {"type": "scale", "scale": [2.0, 3.0]}
    sdata = spatialdata.read_zarr(dataset_path)
    got = get_transformation(sdata.images["img"], get_all=True)
    assert set(got) == {"global", "aligned"}
    assert np.allclose(got["global"].to_affine_matrix(("y", "x"), ("y", "x")), np.diag([2.0, 3.0, 1.0]))
    assert np.allclose(got["aligned"].to_affine_matrix(("y", "x"), ("y", "x"))[:2, 2], [5.0, 7.0])
    want = labels.attrs["transform"]["global"].to_affine_matrix(("y", "x"), ("y", "x"))
    lab = get_transformation(sdata.labels["lab"], get_all=True)["global"]
    assert np.allclose(lab.to_affine_matrix(("y", "x"), ("y", "x")), want)
    assert np.array_equal(sdata.labels["lab"].values, labels.values)


def _levels(tree) -> list[np.ndarray]:
    return [tree[f"scale{k}"]["image"].values for k in range(len(tree.children))]


def test_spatialdata_multiscale_datatree_levels_are_written_as_given(dataset_path):
    from spatialdata.models import Image2DModel, Labels2DModel

    ds = sz.open(dataset_path)
    pixels = (np.arange(65 * 47).reshape(65, 47) % 50).astype(np.uint32)
    labels = Labels2DModel.parse(pixels, dims=("y", "x"), scale_factors=[2, 2])
    # Factors other than 2, odd sizes, several channels, an image's mean pyramid.
    image = Image2DModel.parse(
        np.random.default_rng(4).integers(0, 60000, size=(3, 67, 45), dtype=np.uint16),
        dims=("c", "y", "x"),
        scale_factors=[3, 2],
        chunks=(1, 16, 16),
        c_coords=["dapi", "cd3", "cd8"],
    )
    ds.add_labels("tree", labels)
    ds.add_image("img", image)
    sdata = spatialdata.read_zarr(dataset_path)
    for name, tree, group in (("tree", labels, sdata.labels), ("img", image, sdata.images)):
        given = _levels(tree)
        assert ds.info(name)["levels"] == len(given) == 3
        for k, want in enumerate(given):
            got = ds.read_raster(name, k)
            assert got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want), (name, k)
            assert np.array_equal(group[name][f"scale{k}"]["image"].values, want), (name, k)
    assert list(sdata.images["img"]["scale0"]["image"].coords["c"].values) == ["dapi", "cd3", "cd8"]
    with pytest.raises(sz.InvalidInputError, match="carries its own levels"):
        ds.add_labels("again", labels, scale_factors=[2])
    assert "again" not in ds


class _ArrowStream:
    """Exports Arrow data only through the PyCapsule stream protocol."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def _obs(region: str, n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": pd.Categorical([region] * n),
            "instance_id": np.arange(offset, offset + n),
            "area": np.linspace(1.0, 2.0, n),
            "kind": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
            "count": pd.array([1, None] * (n // 2) + [3] * (n % 2), dtype="Int64"),
            "label": ["x", None] * (n // 2) + ["z"] * (n % 2),
            "ok": [True, False] * (n // 2) + [True] * (n % 2),
        }
    )


def test_tables_from_pandas_pyarrow_and_arrow_streams(dataset_path):
    ds = sz.open(dataset_path)
    rng = np.random.default_rng(2)
    X1 = rng.normal(size=(6, 4))
    r1 = ds.append_rows("cells", _obs("r1", 6), X=X1, var_names=list("abcd"), key="one")
    assert (r1.start, r1.stop, r1.applied) == (0, 6, True)
    X2 = rng.normal(size=(5, 4))
    r2 = ds.append_rows("cells", pa.Table.from_pandas(_obs("r2", 5, 6), preserve_index=False), X=X2)
    X3 = rng.normal(size=(4, 4))
    r3 = ds.append_rows("cells", _ArrowStream(pa.Table.from_pandas(_obs("r3", 4, 11), preserve_index=False)), X=X3)
    assert (r2.start, r3.start, r3.stop) == (6, 11, 15)
    again = ds.append_rows("cells", _obs("r1", 6), X=X1, key="one")
    assert (again.start, again.stop, again.applied) == (0, 6, False)

    obs = ds.read_obs("cells")
    assert isinstance(obs, pa.Table) and obs.num_rows == 15
    expected = pd.concat([_obs("r1", 6), _obs("r2", 5, 6), _obs("r3", 4, 11)], ignore_index=True)
    got = obs.to_pandas()
    assert list(got["region"].astype(str)) == list(expected["region"].astype(str))
    assert list(got["instance_id"]) == list(expected["instance_id"])
    assert list(got["kind"].astype(str)) == list(expected["kind"].astype(str))
    assert obs.column("count").to_pylist() == list(expected["count"].astype(object).where(expected["count"].notna(), None))
    labels = [None if pd.isna(v) else v for v in expected["label"]]
    assert obs.column("label").to_pylist() == labels
    assert obs.column("ok").to_pylist() == list(expected["ok"])
    assert np.array_equal(ds.read_X("cells"), np.vstack([X1, X2, X3]))

    table = spatialdata.read_zarr(dataset_path).tables["cells"]
    assert table.n_obs == 15 and list(table.var_names) == list("abcd")
    assert np.allclose(table.X, np.vstack([X1, X2, X3]))
    assert set(table.obs["region"]) == {"r1", "r2", "r3"}
    assert table.obs["count"].isna().sum() == int(expected["count"].isna().sum())
    assert [None if pd.isna(v) else v for v in table.obs["label"]] == labels


def test_anndata_with_sparse_x(dataset_path):
    from spatialdata.models import TableModel

    ds = sz.open(dataset_path)
    X = scipy.sparse.random(20, 7, density=0.3, format="csr", random_state=3, dtype=np.float32)
    obs = pd.DataFrame({"region": pd.Categorical(["tile"] * 20), "cell": np.arange(20)})
    adata = TableModel.parse(AnnData(X=X, obs=obs), region="tile", region_key="region", instance_key="cell")
    r = ds.append_anndata("sparse", adata, key="tile")
    assert (r.start, r.stop, r.applied) == (0, 20, True)
    back = ds.read_X("sparse")
    assert scipy.sparse.issparse(back) and (back != X).nnz == 0
    assert ds.info("sparse")["instance_key"] == "cell"
    table = spatialdata.read_zarr(dataset_path).tables["sparse"]
    assert (scipy.sparse.csr_matrix(table.X) != X).nnz == 0
    assert table.uns["spatialdata_attrs"]["instance_key"] == "cell"


def test_points_and_shapes(dataset_path):
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, Point, Polygon

    ds = sz.open(dataset_path)
    spots = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0], "gene": pd.Categorical(["a", "b", "a"])})
    ds.add_points("spots", spots, feature_key="gene")
    more = pd.DataFrame({"x": [7.0], "y": [8.0], "gene": pd.Categorical(["c"])})
    r = ds.append_points("spots", more, key="more")
    assert (r.start, r.stop, r.applied) == (3, 4, True)
    assert ds.append_points("spots", more, key="more").applied is False
    points = ds.read_points("spots")
    assert points.column("x").to_pylist() == [1.0, 2.0, 3.0, 7.0]

    square = Polygon([(0, 0), (0, 1), (1, 1), (1, 0)], holes=[[(0.2, 0.2), (0.2, 0.4), (0.4, 0.4), (0.2, 0.2)]])
    two = MultiPolygon([Polygon([(2, 2), (2, 3), (3, 3)]), Polygon([(5, 5), (5, 6), (6, 6)])])
    polys = gpd.GeoDataFrame({"score": [0.5, 0.7]}, geometry=[square, two])
    ds.add_shapes("cells", polys)
    circles = gpd.GeoDataFrame({"radius": [1.0, 2.5]}, geometry=[Point(1, 2), Point(3, 4)])
    ds.add_shapes("nuclei", circles)
    assert ds.info("cells")["n"] == 2 and ds.info("nuclei")["geometry"] == "circle"

    sdata = spatialdata.read_zarr(dataset_path)
    got = sdata.points["spots"].compute()
    assert list(got["x"]) == [1.0, 2.0, 3.0, 7.0] and list(got["gene"].astype(str)) == ["a", "b", "a", "c"]
    shapes = sdata.shapes["cells"]
    assert shapes.geometry.iloc[0].equals(square) and shapes.geometry.iloc[1].equals(two)
    assert list(shapes["score"]) == [0.5, 0.7]
    nuclei = sdata.shapes["nuclei"]
    assert list(nuclei["radius"]) == [1.0, 2.5] and nuclei.geometry.iloc[1].equals(Point(3, 4))


def test_set_transformations_remove_list_contains_check(dataset_path):
    from spatialdata.transformations import Scale, get_transformation

    ds = sz.open(dataset_path)
    assert ds.generation == 0
    ds.add_labels("lab", np.ones((8, 8), np.uint8))
    g = ds.set_transformations("lab", {"microns": Scale([0.5, 0.5], axes=("y", "x"))})
    assert g == ds.generation == 2
    t = get_transformation(spatialdata.read_zarr(dataset_path).labels["lab"], get_all=True)
    assert set(t) == {"microns"}
    assert "lab" in ds and "LAB" in ds and "other" not in ds
    report = ds.check(deep=True)
    assert report and report.problems == [] and report.elements_checked == 1
    ds.remove("lab")
    assert ds.list() == {"images": [], "labels": [], "points": [], "shapes": [], "tables": []}
    assert ds.recover()["finished_commit"] is None
