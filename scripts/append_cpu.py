#!/usr/bin/env python3
"""CPU time (user + sys) and wall time of one CLI append, for one or more binaries.

    python3 scripts/append_cpu.py N DIR BINARY [BINARY ...]

Each binary gets its own dataset in DIR holding a table of 3,000 rows (15 appends of
200 rows, keyed, dense X of width 5: the rows of scripts/bench_appenders.sh). Then
N rounds, each making one keyed append of 200 rows with every binary in turn
(alternated, so every binary sees the same machine load). CPU times come from
wait4(2) of each process. Prints one line per binary: medians, and the mean CPU.
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inputs import write_inputs  # noqa: E402


def run(args):
    """(user ms, sys ms, wall ms) of one process; its stdout goes to /dev/null."""
    start = time.perf_counter()
    pid = os.posix_spawn(
        args[0], args, os.environ,
        file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)],
    )
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter() - start) * 1e3
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(args)}")
    return usage.ru_utime * 1e3, usage.ru_stime * 1e3, wall


def main():
    n, d, binaries = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    os.makedirs(d, exist_ok=True)
    write_inputs(d)

    def append(i, b, key):
        return run([b, "append-rows", f"{d}/ds{i}.zarr", "cells", "--csv", f"{d}/rows.csv",
                    "--x-npy", f"{d}/x.npy", "--key", key])

    for i, b in enumerate(binaries):
        shutil.rmtree(f"{d}/ds{i}.zarr", ignore_errors=True)
        subprocess.run([b, "init", f"{d}/ds{i}.zarr"], check=True, stdout=subprocess.DEVNULL)
        for k in range(15):
            append(i, b, f"setup{k}")
    results = [[] for _ in binaries]
    for j in range(n):
        for i, b in enumerate(binaries):
            results[i].append(append(i, b, f"round{j}"))
    med = statistics.median
    for b, rs in zip(binaries, results):
        cpu = [u + s for u, s, _ in rs]
        print(f"{b}: median user {med(r[0] for r in rs):.1f} ms, sys {med(r[1] for r in rs):.1f} ms, "
              f"user+sys {med(cpu):.1f} ms (mean {statistics.mean(cpu):.1f}), "
              f"wall {med(r[2] for r in rs):.1f} ms; {n} appends")


main()
