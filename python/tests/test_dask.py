"""Dask: arrays written block by block within bounded memory, and a distributed
cluster whose worker is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import spatialdata

import spatialzarr as sz
from conftest import LONG

sys.path.insert(0, str(Path(__file__).parent))
import segmentation  # noqa: E402

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np, dask, dask.array as da
    import spatialzarr as sz

    size, path = int(sys.argv[1]), sys.argv[2]

    def block(block_info=None):
        info = block_info[None]
        (y0, y1), (x0, x1) = info["array-location"]
        shape = (y1 - y0, x1 - x0)
        value = np.uint32(info["chunk-location"][0] * 1000 + info["chunk-location"][1])
        return np.full(shape, value, dtype=np.uint32) + (np.arange(shape[1], dtype=np.uint32) % 7)

    def labels(n):
        return da.map_blocks(block, dtype=np.uint32, chunks=((1024,) * (n // 1024), (1024,) * (n // 1024)))

    def status(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

    ds = sz.open(path)
    ds.add_labels("warmup", labels(2048), scale_factors=[2])    # every code path once
    # The high-water mark is the process's since it started (the imports and the
    # warmup touched more than they keep): reset it to the resident size now, so that
    # the peak read after the add is the add's own.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        print(json.dumps({"no_reset": str(e)}))
        sys.exit(0)
    baseline = status("VmRSS")
    ds.add_labels("big", labels(size), scale_factors=[2])
    peak = status("VmHWM")
    corner = ds.read_raster("warmup")[:2, :9].tolist()
    print(json.dumps({"baseline": baseline, "peak": peak, "corner": corner}))
    """
)


# The 16384 x 16384 form of the issue (1 GiB) runs with the long forms; the 8192 x
# 8192 form (256 MiB, the same bound of a quarter of its size) runs every time, in a
# few seconds. The peak is the add's own: the process's high-water mark is reset
# after the warmup. The lifetime mark read before counted what the imports and the
# warmup had touched and given back (22 MiB more than the add's own peak at 8192), the
# likely source of the 256 MiB outliers seen with it.
@pytest.mark.parametrize(
    "size",
    [8192, pytest.param(16384, marks=pytest.mark.skipif(not LONG, reason="the 1 GiB form: SPATIALZARR_PY_LONG=1"))],
)
def test_a_dask_array_is_written_block_by_block_in_bounded_memory(tmp_path, size):
    nbytes = size * size * 4  # uint32
    path = tmp_path / "big.zarr"
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(size), str(path)], capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "no_reset" in result:
        pytest.skip(f"the high-water mark cannot be reset here: {result['no_reset']}")
    growth = result["peak"] - result["baseline"]
    print(
        f"adding a {nbytes >> 20} MiB dask array: resident {result['baseline'] >> 20} MiB before,"
        f" high-water mark {result['peak'] >> 20} MiB after: growth {growth >> 20} MiB"
    )
    assert growth < nbytes // 4, f"the add grew the process by {growth >> 20} MiB"
    ds = sz.open(path, create=False)
    info = ds.info("big")
    assert info["shape"] == [size, size] and info["levels"] == 2 and info["dtype"] == "uint32"
    assert result["corner"][0][:3] == [0, 1, 2]
    # Spot checks of level 0 and level 1 through spatialdata (lazily, chunk by chunk).
    big = spatialdata.read_zarr(path).labels["big"]
    s0 = big["scale0"]["image"].data
    assert int(s0[5000, 7000].compute()) == (5000 // 1024) * 1000 + 7000 // 1024 + (7000 % 1024) % 7
    s1 = big["scale1"]["image"].data
    assert s1.shape == (size // 2, size // 2)
    assert int(s1[2500, 3500].compute()) == int(s0[5000, 7000].compute())


def test_a_dask_array_round_trips(dataset_path):
    import dask.array as da

    data = np.random.default_rng(5).integers(0, 2**16, size=(3, 700, 900), dtype=np.uint16)
    ds = sz.open(dataset_path)
    ds.add_image("img", da.from_array(data, chunks=(1, 300, 250)), chunks=(1, 256, 256), scale_factors=[2])
    assert np.array_equal(ds.read_raster("img"), data)
    sdata = spatialdata.read_zarr(dataset_path)
    assert np.array_equal(sdata.images["img"]["scale0"]["image"].values, data)


def test_a_distributed_cluster_with_a_worker_killed_mid_run(tmp_path):
    from distributed import Client, LocalCluster, wait

    n_images = 64 if LONG else 16
    path = tmp_path / "cluster.zarr"
    sz.open(path)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=2, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            futures = {
                i: client.submit(segmentation.segment_and_commit, str(path), i, 0.3, pure=False, retries=0)
                for i in range(n_images)
            }
            # Kill one worker process (SIGKILL, no goodbye) once some tasks are done.
            deadline = time.time() + 120
            while sum(f.done() for f in futures.values()) < 3:
                assert time.time() < deadline
                time.sleep(0.05)
            pids = list(client.run(os.getpid).values())
            os.kill(pids[0], signal.SIGKILL)
            wait(list(futures.values()), timeout=300)
            failed = [i for i, f in futures.items() if f.status != "finished"]
            for i in failed:  # resubmit what the killed worker took down
                futures[i] = client.submit(segmentation.segment_and_commit, str(path), i, 0.0, pure=False)
            results = client.gather(list(futures.values()))
    repeated = sum(1 for _, applied, _ in results if not applied)
    print(f"worker {pids[0]} killed; {len(failed)} tasks resubmitted; {repeated} runs found their key committed")
    assert sorted(name for name, _, _ in results) == [f"image_{i:03d}" for i in range(n_images)]
    expected_rows = {f"image_{i:03d}_labels": len(segmentation.segment(segmentation.synthetic_image(i))[1]) for i in range(n_images)}
    ds = sz.open(path, create=False)
    assert sorted(ds.list()["labels"]) == sorted(expected_rows)
    obs = ds.read_obs("cells").to_pandas()
    counts = obs.groupby("region", observed=True).size().to_dict()
    assert counts == {k: v for k, v in expected_rows.items() if v}
    assert not obs.duplicated(["region", "instance_id"]).any()
    assert bool(ds.check())
    sdata = spatialdata.read_zarr(path)
    assert sorted(sdata.labels.keys()) == sorted(expected_rows)
    assert sdata.tables["cells"].n_obs == sum(expected_rows.values())
