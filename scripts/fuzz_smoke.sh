#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, stable toolchain, no sanitizer) and runs each
# for a short budget, starting from a copy of the committed corpus.
# Usage: bash scripts/fuzz_smoke.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz_smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
# A smoke run needs no debug info; leaving it out shortens the build.
export CARGO_PROFILE_DEV_DEBUG=0
cargo fuzz build --dev --sanitizer none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$work/$target"
    cp -r "corpus/$target/." "$work/$target/"
    echo "fuzz_smoke: $target for ${seconds}s" >&2
    if ! cargo fuzz run --dev --sanitizer none "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        > "$work/$target.log" 2>&1; then
        tail -40 "$work/$target.log" >&2
        echo "fuzz_smoke: $target failed; the input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added)" "$work/$target.log" \
        | sed "s/^/fuzz_smoke: $target /" >&2
done
