"""Every exception type, raised by real bad input, leaves the dataset exactly as it
was, and survives pickling with its message."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import spatialzarr as sz
from conftest import tree_snapshot


@pytest.fixture
def filled(dataset_path):
    ds = sz.open(dataset_path)
    ds.add_labels("cells_labels", np.arange(16, dtype=np.uint16).reshape(4, 4))
    ds.append_rows("cells", pd.DataFrame({"region": pd.Categorical(["cells_labels"]), "instance_id": [1]}), key="a")
    return ds


def _bad_inputs(ds, path):
    ones = np.ones((4, 4), np.uint8)
    return [
        (sz.ElementExistsError, FileExistsError, lambda: ds.add_labels("cells_labels", ones)),
        (sz.ElementExistsError, FileExistsError, lambda: ds.add_image("CELLS_LABELS", ones)),
        (sz.ElementNotFoundError, KeyError, lambda: ds.remove("nothing")),
        (sz.ElementNotFoundError, KeyError, lambda: ds.read_raster("nothing")),
        (sz.InvalidInputError, ValueError, lambda: ds.add_labels("floats", ones.astype(np.float32))),
        (sz.InvalidInputError, ValueError, lambda: ds.add_labels("bools", ones.astype(bool))),
        (sz.InvalidInputError, ValueError, lambda: ds.add_labels("4d", np.ones((2, 2, 2, 2), np.uint8))),
        (sz.InvalidInputError, ValueError, lambda: ds.add_labels("bad/name", ones)),
        (sz.InvalidInputError, ValueError, lambda: ds.add_image("img", ones, dims=("x", "c"))),
        (sz.InvalidInputError, ValueError, lambda: ds.add_image("img", np.ones((3, 4, 4)), channel_names=["a"])),
        (sz.InvalidInputError, ValueError, lambda: ds.add_labels("l", ones, scale_factors=[3])),
        (sz.InvalidInputError, ValueError, lambda: ds.append_rows("cells", pd.DataFrame({"region": ["x"]}))),
        (sz.InvalidInputError, ValueError, lambda: ds.append_rows("t2", [1, 2, 3])),
        (sz.InvalidInputError, ValueError, lambda: ds.append_rows("t3", pd.DataFrame({"a": [1]}), X=np.ones((1, 2), np.int64))),
        (sz.InvalidInputError, ValueError, lambda: ds.add_points("p", pd.DataFrame({"x": [1.0]}))),
        (
            sz.InvalidInputError,
            ValueError,
            lambda: ds.add_points("p", pd.DataFrame({"x": [1.0], "y": [2.0]}), instance_key="cell_id"),
        ),
        (sz.WrongElementTypeError, TypeError, lambda: ds.read_obs("cells_labels")),
        # The key "a" committed instance 1: other rows under it are refused.
        (
            sz.KeyReusedError,
            ValueError,
            lambda: ds.append_rows("cells", pd.DataFrame({"region": pd.Categorical(["cells_labels"]), "instance_id": [2]}), key="a"),
        ),
        (sz.NotADatasetError, FileNotFoundError, lambda: sz.open(path / "missing", create=False)),
    ]


def test_every_error_leaves_the_dataset_unchanged_and_pickles(filled, dataset_path):
    before = tree_snapshot(dataset_path)
    generation = filled.generation
    for cls, standard, call in _bad_inputs(filled, dataset_path):
        with pytest.raises(cls) as caught:
            call()
        error = caught.value
        assert isinstance(error, standard) and isinstance(error, sz.SpatialZarrError)
        assert error.message and str(error) == error.message
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and str(copy) == str(error)
        assert tree_snapshot(dataset_path) == before, f"{cls.__name__} from {error} changed the dataset"
    assert filled.generation == generation


def test_lock_timeout_and_corrupt_dataset(filled, dataset_path, tmp_path):
    import multiprocessing

    ready, release = multiprocessing.Event(), multiprocessing.Event()

    def hold():
        with sz.locked(dataset_path):
            ready.set()
            release.wait(30)

    holder = multiprocessing.get_context("fork").Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        before = tree_snapshot(dataset_path)
        with pytest.raises(sz.LockTimeoutError) as caught:
            sz.open(dataset_path, lock_timeout=0.2).add_labels("late", np.ones((2, 2), np.uint8))
        assert isinstance(caught.value, TimeoutError)
        assert type(pickle.loads(pickle.dumps(caught.value))) is sz.LockTimeoutError
        assert tree_snapshot(dataset_path) == before
    finally:
        release.set()
        holder.join()

    broken = dataset_path / "labels" / "cells_labels" / "zarr.json"
    broken.write_text("{ not json")
    before = tree_snapshot(dataset_path)
    with pytest.raises(sz.CorruptDatasetError) as caught:
        filled.info("cells_labels")
    assert "cells_labels" in str(caught.value)
    assert type(pickle.loads(pickle.dumps(caught.value))) is sz.CorruptDatasetError
    assert tree_snapshot(dataset_path) == before


def test_a_failed_transaction_commits_nothing(filled, dataset_path):
    obs_before = filled.read_obs("cells")
    generation = filled.generation
    with pytest.raises(sz.ElementExistsError):
        with filled.transaction() as txn:
            txn.add_labels("new_labels", np.ones((4, 4), np.uint8))
            txn.append_rows("cells", pd.DataFrame({"region": pd.Categorical(["new_labels"]), "instance_id": [2]}), key="b")
            txn.add_labels("cells_labels", np.ones((4, 4), np.uint8))
    # The append's chunks past the committed rows may have been written (the
    # committed rows keep their values); nothing of it is visible.
    assert "new_labels" not in filled and filled.generation == generation
    assert filled.read_obs("cells").equals(obs_before)
    assert filled.append_rows("cells", pd.DataFrame({"region": pd.Categorical(["x"]), "instance_id": [3]}), key="b").applied
