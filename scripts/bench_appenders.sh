#!/usr/bin/env bash
# CLI append throughput: 8 processes x 40 `append-rows` of 200 rows (keyed, dense X of
# width 5) against 1 process making the same 320 appends one after the other.
#   bash scripts/bench_appenders.sh BINARY DIR
# Prints one line: seconds for 8 x 40, seconds for 1 x 320, and their ratio.
set -euo pipefail
bin=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
python3 "$(dirname "$0")/bench_inputs.py" "$dir"
run() {
    local ds=$1 workers=$2 each=$3
    "$bin" init "$ds" > /dev/null
    "$bin" append-rows "$ds" cells --csv "$dir/rows.csv" --x-npy "$dir/x.npy" --key init > /dev/null
    local start end
    start=$(date +%s.%N)
    for w in $(seq 1 "$workers"); do
        (
            for i in $(seq 1 "$each"); do
                "$bin" append-rows "$ds" cells --csv "$dir/rows.csv" --x-npy "$dir/x.npy" --key "w$w-$i" > /dev/null
            done
        ) &
    done
    wait
    end=$(date +%s.%N)
    local n
    n=$("$bin" info "$ds" cells | sed -n 's/^n_obs: //p')
    [ "$n" = $((200 * (workers * each + 1))) ] || { echo "wrong row count $n" >&2; exit 1; }
    echo "$end - $start" | bc
}
many=$(run "$dir/many.zarr" 8 40)
one=$(run "$dir/one.zarr" 1 320)
echo "8x40: ${many}s  1x320: ${one}s  speedup: $(echo "scale=2; $one / $many" | bc)"
