#!/usr/bin/env python3
"""Writes the inputs of the append benchmarks into DIR (no numpy needed):

    python3 scripts/bench_inputs.py DIR

- rows.csv: 200 rows `instance_id,region,area` (keyed appends into table `cells`);
- x.npy: their X, 200 x 5 float64;
- labels.npy: a 32 x 32 uint32 labels image.
"""
import struct
import sys


def npy(path, descr, shape, fmt, values):
    """A version-1 .npy file, its header padded to 64 bytes as numpy writes it."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(fmt, *values))


def write_inputs(d):
    with open(f"{d}/rows.csv", "w") as f:
        f.write("instance_id,region,area\n")
        for j in range(200):
            f.write(f"{j},r,{j + 0.5}\n")
    npy(f"{d}/x.npy", "<f8", "(200, 5)", "<1000d", [i * 0.25 for i in range(1000)])
    npy(f"{d}/labels.npy", "<u4", "(32, 32)", "<1024I", [i % 7 for i in range(1024)])


if __name__ == "__main__":
    write_inputs(sys.argv[1])
