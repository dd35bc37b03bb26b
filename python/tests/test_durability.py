"""The durability level and the folder-sync mode: chosen by ``sz.open(durability=...,
folder_sync=...)`` or by the environment variables SPATIALZARR_DURABILITY and
SPATIALZARR_FOLDER_SYNC (the argument wins), kept by pickled handles, and refused
clearly when they name no level or mode."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import spatialzarr as sz


def test_durability_argument_environment_and_refusals(dataset_path, monkeypatch):
    monkeypatch.delenv("SPATIALZARR_DURABILITY", raising=False)
    assert sz.open(dataset_path).durability == "full"
    ds = sz.open(dataset_path, durability="process")
    assert ds.durability == "process"
    labels = np.arange(64, dtype=np.uint32).reshape(8, 8)
    ds.add_labels("tile", labels)
    # Another handle (any level) reads the commit made without fsync.
    assert np.array_equal(sz.open(dataset_path).read_raster("tile"), labels)
    assert pickle.loads(pickle.dumps(ds)).durability == "process"

    monkeypatch.setenv("SPATIALZARR_DURABILITY", "process")
    assert sz.open(dataset_path).durability == "process"
    assert sz.open(dataset_path, durability="full").durability == "full"

    monkeypatch.setenv("SPATIALZARR_DURABILITY", "fast")
    with pytest.raises(sz.InvalidInputError, match="SPATIALZARR_DURABILITY=fast"):
        sz.open(dataset_path)
    # The explicit argument wins over a bad environment too.
    assert sz.open(dataset_path, durability="full").durability == "full"
    monkeypatch.delenv("SPATIALZARR_DURABILITY")
    with pytest.raises(sz.InvalidInputError, match="'sometimes'|\"sometimes\""):
        sz.open(dataset_path, durability="sometimes")
    assert sz.open(dataset_path).list()["labels"] == ["tile"]


def test_folder_sync_argument_environment_and_refusals(dataset_path, monkeypatch):
    monkeypatch.delenv("SPATIALZARR_FOLDER_SYNC", raising=False)
    assert sz.open(dataset_path).folder_sync in ("ordered", "strict")
    strict = sz.open(dataset_path, folder_sync="strict")
    assert strict.folder_sync == "strict"
    ordered = sz.open(dataset_path, folder_sync="ordered")
    assert ordered.folder_sync == "ordered"
    labels = np.arange(64, dtype=np.uint32).reshape(8, 8)
    ordered.add_labels("tile", labels)
    assert np.array_equal(strict.read_raster("tile"), labels)
    assert pickle.loads(pickle.dumps(strict)).folder_sync == "strict"

    monkeypatch.setenv("SPATIALZARR_FOLDER_SYNC", "strict")
    assert sz.open(dataset_path).folder_sync == "strict"
    assert sz.open(dataset_path, folder_sync="ordered").folder_sync == "ordered"
    monkeypatch.setenv("SPATIALZARR_FOLDER_SYNC", "lazy")
    with pytest.raises(sz.InvalidInputError, match="SPATIALZARR_FOLDER_SYNC=lazy"):
        sz.open(dataset_path)
    monkeypatch.delenv("SPATIALZARR_FOLDER_SYNC")
    with pytest.raises(sz.InvalidInputError, match="'never'|\"never\""):
        sz.open(dataset_path, folder_sync="never")
    assert sz.open(dataset_path).list()["labels"] == ["tile"]
