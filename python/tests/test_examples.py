"""The examples of python/examples run as the README gives them (small counts), twice:
the second run finds every key committed and adds nothing; spatialdata reads the
result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import spatialdata

import spatialzarr as sz
from conftest import LONG

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# The dask example starts a LocalCluster twice (most of a minute here); the cluster
# test of test_dask.py runs the same pattern every time, so it runs with the long forms.
@pytest.mark.parametrize(
    "script",
    [
        "segment_processes.py",
        pytest.param("segment_dask.py", marks=pytest.mark.skipif(not LONG, reason="SPATIALZARR_PY_LONG=1")),
    ],
)
def test_example_runs_and_a_second_run_adds_nothing(script, tmp_path):
    path = tmp_path / "cells.zarr"
    runs = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(EXAMPLES / script), str(path), "4"], capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr
        runs.append(run.stdout.splitlines())
    first, second = runs
    assert sorted(line for line in first if line.endswith("committed")) == [
        f"tile_{i:03d} committed" for i in range(4)
    ]
    assert sorted(line for line in second if line.startswith("tile_")) == [
        f"tile_{i:03d} already there" for i in range(4)
    ]
    ds = sz.open(path, create=False)
    n_obs = ds.info("cells")["n_obs"]
    assert first[-1] == second[-1] == f"{n_obs} cells" and n_obs > 0
    sdata = spatialdata.read_zarr(path)
    assert sorted(sdata.labels) == [f"tile_{i:03d}_labels" for i in range(4)]
    assert sdata.tables["cells"].n_obs == n_obs
    assert bool(ds.check())
