#!/usr/bin/env bash
# The 8-writer workload of the two-node notes: 8 writers, alternating between two
# mounts of one GlusterFS volume, each adding one 32x32 labels element and making 10
# keyed `append-rows` of 200 rows (8 add-labels and 80 appends in all).
#   bash scripts/bench_multinode_writers.sh BINARY [BINARY ...]
# Starts the two-node volume (scripts/multinode.sh), runs the workload once per binary
# (each on a new dataset), checks that every row arrived once, and prints one line per
# binary: its wall time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ ${1:-} != --inside ]]; then
    exec bash "$here/multinode.sh" run 2 -- bash "$0" --inside "$@"
fi
shift
a=${SPATIALZARR_NODES%%:*}
b=${SPATIALZARR_NODES##*:}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 "$here/bench_inputs.py" "$scratch"
n=0
for bin in "$@"; do
    n=$((n + 1))
    ds_a="$a/w$n.zarr"
    ds_b="$b/w$n.zarr"
    "$bin" init "$ds_a" > /dev/null
    "$bin" append-rows "$ds_a" cells --csv "$scratch/rows.csv" --key init > /dev/null
    start=$(date +%s.%N)
    for w in 1 2 3 4 5 6 7 8; do
        ds=$ds_a
        if (( w % 2 == 0 )); then ds=$ds_b; fi
        (
            "$bin" add-labels "$ds" "tile$w" --npy "$scratch/labels.npy" > /dev/null
            for i in $(seq 1 10); do
                "$bin" append-rows "$ds" cells --csv "$scratch/rows.csv" --key "w$w-$i" > /dev/null
            done
        ) &
    done
    wait
    end=$(date +%s.%N)
    rows=$("$bin" info "$ds_b" cells --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["n_obs"])')
    if [[ $rows != 16200 ]]; then
        echo "bench_multinode_writers: $bin left $rows rows, not 16200" >&2
        exit 1
    fi
    echo "$bin: $(echo "$end - $start" | bc) s for 8 add-labels and 80 appends on two mounts"
done
