"""Concurrent writers through the Python package vs through the Rust library, in the
same run: 8 processes x 8 add_labels of 1024 x 1024 uint32, and 8 processes x 20
append_rows of 1,000 rows.

    cargo build --release -p spatialzarr-bench-driver
    pip install ./python          # a release build: the default of pip install
    python python/bench/bench_writers.py [--driver target/release/spatialzarr-bench-driver] [--rounds 3]

Every writer is its own process (Python: this script with --worker; Rust:
spatialzarr-bench-driver). Each prepares its data, waits for a common start time,
writes, and reports when it finished; a scenario's time is the last finish minus the
start. Python and Rust rounds alternate on fresh datasets. Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SCENARIOS = {"labels": 8, "rows": 20}  # operations per process


def worker(scenario: str, path: str, index: int, count: int, start_at: float) -> None:
    import spatialzarr as sz

    ds = sz.open(path, create=False)
    labels = np.random.default_rng(index).integers(0, 5000, size=(1024, 1024), dtype=np.uint32)
    rows = pd.DataFrame({
        "region": pd.Categorical([f"w{index}"] * 1000),
        "instance_id": np.arange(1000),
        "area": np.random.default_rng(index).random(1000),
    })
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        if scenario == "labels":
            ds.add_labels(f"w{index}_l{i}", labels)
        else:
            ds.append_rows("cells", rows, key=f"w{index}_{i}")
    print(time.time())


def one_round(scenario: str, command: list[str], processes: int) -> float:
    import spatialzarr as sz

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.zarr")
        sz.open(path)
        start_at = time.time() + 3.0  # time for every process to start and prepare
        count = SCENARIOS[scenario]
        procs = [
            subprocess.Popen(command + [scenario, path, str(i), str(count), repr(start_at)], stdout=subprocess.PIPE, text=True)
            for i in range(processes)
        ]
        ends = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a writer failed: {command}")
            ends.append(float(out.strip().splitlines()[-1]))
        return max(ends) - start_at


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--worker":
        scenario, path, index, count, start_at = args[1:6]
        worker(scenario, path, int(index), int(count), float(start_at))
        return
    repo = Path(__file__).resolve().parents[2]
    driver = args[args.index("--driver") + 1] if "--driver" in args else str(repo / "target/release/spatialzarr-bench-driver")
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3
    processes = int(args[args.index("--processes") + 1]) if "--processes" in args else 8
    python_cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    result = {"processes": processes, "rounds": rounds, "driver": driver}
    for scenario in SCENARIOS:
        times = {"python": [], "rust": []}
        for _ in range(rounds):
            times["python"].append(one_round(scenario, python_cmd, processes))
            times["rust"].append(one_round(scenario, [driver], processes))
        py, rs = statistics.median(times["python"]), statistics.median(times["rust"])
        result[scenario] = {"python_s": round(py, 3), "rust_s": round(rs, 3), "overhead": round(py / rs - 1, 3), "all": times}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
