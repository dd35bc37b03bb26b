"""Concurrent writers through the Python package vs through the Rust library, in the
same run: 8 processes x 8 add_labels of 1024 x 1024 uint32, and 8 processes x 20
append_rows of 1,000 rows.

    cargo build --release -p spatialzarr-bench-driver
    pip install ./python          # a release build: the default of pip install
    python python/bench/bench_writers.py [--driver target/release/spatialzarr-bench-driver]
        [--pairs 12] [--processes 8] [--only labels,rows]

Every writer is its own process, started once and kept for the whole run (Python:
this script with --worker; Rust: spatialzarr-bench-driver), so that a round measures
the writes and not the start of a process. For each round every writer gets one line
on its standard input (scenario, a fresh dataset, round, count, start time), prepares,
waits for the common start time, writes, and answers with the time it finished and
the CPU time (user + system, all threads, from /proc/self/stat) its writes took; a
round's time is the last finish minus the start, its CPU time the sum over writers.

A shared machine drifts (other load comes and goes), so the rounds of the two sides
are interleaved pairwise, A B B A A B ...: each pair is one Python and one Rust round
next to each other, and the first of a pair alternates. The result per scenario is
the median over the pairs of Python's time divided by Rust's, with its interquartile
range; after one unmeasured warm-up round per side. The same is given for the CPU
time, which other load on the machine disturbs far less than the wall-clock time;
as the writes also wait (fsync, the lock), the CPU ratio bounds the wall-clock
overhead from above. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SCENARIOS = {"labels": 8, "rows": 20}  # operations per process and round
START_DELAY = 0.3  # seconds between handing out a round and its start


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads, as the Rust driver reads it."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(index: int) -> None:
    """A Python writer: prepares its data once, then runs the rounds read from stdin."""
    import spatialzarr as sz

    labels = np.random.default_rng(index).integers(0, 5000, size=(1024, 1024), dtype=np.uint32)
    rows = pd.DataFrame({
        "region": pd.Categorical([f"w{index}"] * 1000),
        "instance_id": np.arange(1000),
        "area": np.random.default_rng(index).random(1000),
    })
    for line in sys.stdin:
        scenario, path, round_no, count, start_at = line.split()
        ds = sz.open(path, create=False)
        time.sleep(max(0.0, float(start_at) - time.time()))
        cpu = cpu_seconds()
        for i in range(int(count)):
            if scenario == "labels":
                ds.add_labels(f"w{index}_r{round_no}_l{i}", labels)
            else:
                ds.append_rows("cells", rows, key=f"w{index}_r{round_no}_{i}")
        print(time.time(), cpu_seconds() - cpu, flush=True)


class Writers:
    """``processes`` writer processes of one side, kept across rounds."""

    def __init__(self, command: list[str], processes: int) -> None:
        self.command = command
        self.procs = [
            subprocess.Popen(command + [str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            for i in range(processes)
        ]

    def round(self, scenario: str, round_no: int) -> tuple[float, float]:
        """Runs one round: its wall-clock time and the CPU time of all writers."""
        import spatialzarr as sz

        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "bench.zarr")
            sz.open(path)
            start_at = time.time() + START_DELAY
            for p in self.procs:
                p.stdin.write(f"{scenario} {path} {round_no} {SCENARIOS[scenario]} {start_at!r}\n")
                p.stdin.flush()
            ends, cpu = [], 0.0
            for p in self.procs:
                answer = p.stdout.readline().split()
                if not answer:
                    raise SystemExit(f"a writer of {self.command} stopped (exit {p.wait()})")
                ends.append(float(answer[0]))
                cpu += float(answer[1])
            return max(ends) - start_at, cpu

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            p.wait()


def quartiles(values: list[float]) -> tuple[float, float]:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--worker":
        worker(int(args[1]))
        return
    repo = Path(__file__).resolve().parents[2]
    option = lambda name, default: args[args.index(name) + 1] if name in args else default  # noqa: E731
    driver = option("--driver", str(repo / "target/release/spatialzarr-bench-driver"))
    pairs = int(option("--pairs", "12"))
    processes = int(option("--processes", "8"))
    only = option("--only", ",".join(SCENARIOS)).split(",")
    python = Writers([sys.executable, str(Path(__file__).resolve()), "--worker"], processes)
    rust = Writers([driver], processes)
    result = {"processes": processes, "pairs": pairs, "order": "A B B A ... (pairwise, alternating)", "driver": driver}
    round_no = 0
    try:
        for scenario in only:
            for side in (python, rust):  # warm-up, not counted
                side.round(scenario, round_no)
                round_no += 1
            times = {"python": [], "rust": []}
            cpus = {"python": [], "rust": []}
            for k in range(pairs):
                first, second = (python, rust) if k % 2 == 0 else (rust, python)
                a = first.round(scenario, round_no)
                b = second.round(scenario, round_no + 1)
                round_no += 2
                (t_py, c_py), (t_rs, c_rs) = (a, b) if first is python else (b, a)
                times["python"].append(round(t_py, 4))
                times["rust"].append(round(t_rs, 4))
                cpus["python"].append(round(c_py, 3))
                cpus["rust"].append(round(c_rs, 3))
            result[scenario] = {"pairs": pairs}
            for what, values in (("wall", times), ("cpu", cpus)):
                ratios = [p / r for p, r in zip(values["python"], values["rust"])]
                q1, q3 = quartiles(ratios)
                median = statistics.median(ratios)
                result[scenario][what] = {
                    "overhead_median": round(median - 1, 4),
                    "overhead_iqr": [round(q1 - 1, 4), round(q3 - 1, 4)],
                    "python_median_s": round(statistics.median(values["python"]), 4),
                    "rust_median_s": round(statistics.median(values["rust"]), 4),
                    "ratios": [round(r, 4) for r in ratios],
                    "python_s": values["python"],
                    "rust_s": values["rust"],
                }
                print(
                    f"{scenario}: {pairs} pairs, Python/Rust {what} time overhead median {median - 1:+.1%}"
                    f" (interquartile {q1 - 1:+.1%} .. {q3 - 1:+.1%})",
                    file=sys.stderr,
                )
    finally:
        python.close()
        rust.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
