"""The durability level: chosen by ``sz.open(durability=...)`` or by the environment
variable SPATIALZARR_DURABILITY (the argument wins), kept by pickled handles, and
refused clearly when it names no level."""

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
