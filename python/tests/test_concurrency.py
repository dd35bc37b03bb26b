"""Many threads and processes writing one dataset: nothing lost. Real processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pytest
import spatialdata

import spatialzarr as sz

sys.path.insert(0, str(Path(__file__).parent))
import workers  # noqa: E402
from conftest import LONG  # noqa: E402


class SequentialExecutor(Executor):
    def __init__(self, *args, **kwargs):
        pass

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


EXECUTORS = [ProcessPoolExecutor, ThreadPoolExecutor, SequentialExecutor]


@pytest.mark.parametrize("executor_cls", EXECUTORS)
def test_concurrently_write_to_table_to_backed_spatialdata(executor_cls, tmp_path, n_obs=100, n_vars=100, n_multi=10):
    """The seed's test: region0 written by spatialdata, ten more appended at once."""
    from anndata import AnnData
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    path = tmp_path / "spatialdata.zarr"
    obs, X = workers.table_rows("region0", n_obs, n_vars, 0)
    table = TableModel.parse(AnnData(X, obs=obs), region="region0", region_key="region", instance_key="instance_id")
    SpatialData(tables={"table": table}).write(path)
    with executor_cls(max_workers=min(8, n_multi)) as executor:
        futures = [executor.submit(workers.append_table, str(path), n, n_obs, n_vars) for n in range(1, n_multi + 1)]
        ranges = sorted(f.result() for f in as_completed(futures, timeout=120))
    assert ranges == [(n_obs * k, n_obs * (k + 1)) for k in range(1, n_multi + 1)]
    actual = spatialdata.read_zarr(path)
    assert set(actual.tables["table"].obs["region"].unique()) == {f"region{n}" for n in range(0, n_multi + 1)}
    assert actual.tables["table"].n_obs == n_obs * (1 + n_multi)


@pytest.mark.parametrize("executor_cls", EXECUTORS)
def test_concurrently_add_element_to_backed_spatialdata(executor_cls, tmp_path, width=10, n_multi=10):
    """The seed's test: ten images added at once to a dataset spatialdata wrote."""
    from spatialdata import SpatialData

    path = tmp_path / "spatialdata.zarr"
    SpatialData().write(path)
    with executor_cls(max_workers=min(8, n_multi)) as executor:
        futures = [executor.submit(workers.add_image, str(path), n, width) for n in range(1, n_multi + 1)]
        [f.result() for f in as_completed(futures, timeout=120)]
    actual = spatialdata.read_zarr(path)
    assert set(actual.images.keys()) == {f"image{n}" for n in range(1, n_multi + 1)}
    for n in range(1, n_multi + 1):
        assert (actual.images[f"image{n}"].values == n).all()


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_process_start_methods_and_pickled_handles(method, dataset_path):
    ds = sz.open(dataset_path)
    ds.add_labels("parent", np.zeros((4, 4), np.uint8))
    context = multiprocessing.get_context(method)
    # The parent holds the read lock while forking: a forked child must not act
    # through it (it would otherwise believe it may write under a read lock).
    with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
        with ds.lock(shared=True):
            futures = [pool.submit(workers.add_with_handle, ds, i) for i in range(6)]
            # Children wait for the parent's read lock to go before they can write.
            time.sleep(1.0)
            assert not any(f.done() for f in futures)
        done = sorted(f.result(timeout=120) for f in futures)
    assert done == list(range(6))
    assert ds.list()["labels"] == ["labels0", "labels1", "labels2", "labels3", "labels4", "labels5", "parent"]
    assert ds.info("cells")["n_obs"] == 6


def test_thread_pool_of_eight_loses_nothing(dataset_path):
    n = 400 if LONG else 40
    ds = sz.open(dataset_path)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: workers.add_with_handle(ds, i), range(n)))
    assert results == list(range(n))
    assert len(ds.list()["labels"]) == n
    obs = ds.read_obs("cells")
    assert sorted(obs.column("instance_id").to_pylist()) == list(range(n))


def test_a_dataset_pickles_by_path_and_options(dataset_path):
    ds = sz.open(dataset_path, lock_timeout=2.5)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.path == ds.path and copy._options == ds._options
    ds.add_labels("seen", np.zeros((2, 2), np.uint8))
    assert "seen" in copy


def test_mixed_writers_spatialdata_under_the_lock_and_spatialzarr(tmp_path):
    from spatialdata import SpatialData

    path = tmp_path / "mixed.zarr"
    SpatialData().write(path)
    # spawn: a forked child of this process would inherit dask's thread pool without
    # its threads (spatialdata computes through dask), a hang unrelated to the store.
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = []
        for i in range(6):
            futures.append(pool.submit(workers.spatialdata_writer, str(path), i))
            futures.append(pool.submit(workers.spatialzarr_writer, str(path), i))
        names = sorted(f.result(timeout=300) for f in futures)
    sdata = spatialdata.read_zarr(path)
    assert sorted(sdata.labels.keys()) == names
    assert sorted(sz.open(path).list()["labels"]) == names


def test_the_gil_is_released_during_a_long_add(dataset_path):
    ds = sz.open(dataset_path)
    data = np.random.default_rng(0).integers(0, 2**31, size=(3000, 3000), dtype=np.uint32)
    counter = {"n": 0, "stop": False}

    def count():
        while not counter["stop"]:
            counter["n"] += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        # Counts made while the add runs: with the GIL held they would stay near 0
        # (the interpreter would not switch to the counting thread for its duration).
        before = counter["n"]
        ds.add_labels("big", data, scale_factors=[2, 2])
        during = counter["n"] - before
    finally:
        counter["stop"] = True
        thread.join()
    assert np.array_equal(ds.read_raster("big"), data)
    # Python's switch interval is 5 ms; a thread that ran for the add's duration
    # counts far past a million on any machine.
    assert during > 1_000_000, during


def test_the_shell_lock_and_the_python_lock_exclude_each_other(dataset_path):
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path(__file__).resolve().parents[2] / "target")
    cli = target / "debug" / "spatialzarr"
    if not cli.exists():
        cli = shutil.which("spatialzarr")
    if cli is None:
        message = f"the spatialzarr command is not built (cargo build; looked in {target}/debug and PATH)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    ds = sz.open(dataset_path)
    with ds.lock():
        started = subprocess.run(
            [str(cli), "lock", str(dataset_path), "--timeout", "0.3", "--", "true"], capture_output=True, text=True
        )
    assert started.returncode != 0 and "timed out" in started.stderr
    # Its command inherits the lock: the whole process group is ended below.
    holder = subprocess.Popen([str(cli), "lock", str(dataset_path), "--", "sleep", "30"], start_new_session=True)
    try:
        deadline = time.time() + 20
        while True:
            try:
                with sz.locked(dataset_path, timeout=0.2):
                    pass
            except sz.LockTimeoutError:
                break
            assert time.time() < deadline, "the shell's lock was never seen"
        with pytest.raises(sz.LockTimeoutError):
            sz.open(dataset_path, lock_timeout=0.2).add_labels("x", np.zeros((2, 2), np.uint8))
    finally:
        os.killpg(holder.pid, 9)
        holder.wait()
    with sz.locked(dataset_path, timeout=10):
        pass


def test_lock_reentry_and_upgrade(dataset_path):
    ds = sz.open(dataset_path)
    with ds.lock():
        with sz.locked(dataset_path, timeout=0):
            ds.add_labels("inside", np.zeros((2, 2), np.uint8))
    with ds.lock(shared=True):
        with pytest.raises(sz.LockUpgradeError):
            ds.remove("inside")
        with pytest.raises(sz.LockUpgradeError):
            with ds.lock():
                pass
    assert "inside" in ds


def test_spatialdata_under_the_shared_lock_sees_one_state_while_a_writer_waits(dataset_path):
    """README "Open in spatialdata while writers run": inside `sz.locked(path,
    shared=True)` spatialdata reads one committed state however often it reads; a
    writer in another process waits until the block ends, then commits."""
    ds = sz.open(dataset_path)
    workers.add_with_handle(ds, 0)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with sz.locked(dataset_path, shared=True):
            before = spatialdata.read_zarr(dataset_path)
            future = pool.submit(workers.add_with_handle, ds, 1)
            time.sleep(1.0)
            # The writer cannot commit while the readers hold the lock.
            assert not future.done()
            again = spatialdata.read_zarr(dataset_path)
            assert sorted(again.labels) == sorted(before.labels) == ["labels0"]
            assert again.tables["cells"].n_obs == before.tables["cells"].n_obs == 1
        assert future.result(timeout=120) == 1
    after = spatialdata.read_zarr(dataset_path)
    assert sorted(after.labels) == ["labels0", "labels1"]
    assert after.tables["cells"].n_obs == 2
