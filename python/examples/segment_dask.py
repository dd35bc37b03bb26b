"""The same segmentation worker on a Dask cluster: a LocalCluster by default, or a
SLURM cluster through dask-jobqueue (`--slurm`, not run in CI). Tasks of a killed
worker are simply resubmitted: the idempotency key makes the retry a no-op.

    python segment_dask.py cells.zarr 64 [--slurm]
"""

from __future__ import annotations

import sys

from distributed import Client, LocalCluster

import spatialzarr as sz
from segment_processes import segment_and_commit


def make_cluster(slurm: bool):
    if slurm:
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(cores=4, memory="16GB", walltime="01:00:00")
        cluster.scale(jobs=8)  # the dataset must be on a filesystem all nodes share
        return cluster
    return LocalCluster(n_workers=2, processes=True)


if __name__ == "__main__":
    path, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16
    sz.open(path)
    with make_cluster("--slurm" in sys.argv) as cluster, Client(cluster) as client:
        futures = client.map(segment_and_commit, [path] * count, range(count), retries=3, pure=False)
        for name, applied in client.gather(futures):
            print(name, "committed" if applied else "already there")
    print(sz.open(path).info("cells")["n_obs"], "cells")
