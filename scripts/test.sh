#!/usr/bin/env bash
# Installs what the tests need and runs every test. The interop tests need a Python
# virtual environment with spatialdata 0.8.0 (built once under target/, 2-3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
SPATIALZARR_INTEROP_PYTHON="$(bash tests/interop/setup_venv.sh | tail -n 1)"
export SPATIALZARR_INTEROP_PYTHON
# The two-node SLURM test runs the example worker; `cargo test` builds examples only
# under hashed names, so build them first (same profile, dependencies shared).
cargo build --examples
cargo test --all-targets
# --all-targets leaves out the documentation examples.
cargo test --doc
bash scripts/test_python.sh
