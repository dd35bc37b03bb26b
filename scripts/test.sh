#!/usr/bin/env bash
# Installs what the tests need (the Python interop environment) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x tests/interop/setup_venv.sh ] || [ -f tests/interop/setup_venv.sh ]; then
  SPATIALZARR_PYTHON="$(bash tests/interop/setup_venv.sh | tail -n 1)"
  export SPATIALZARR_PYTHON
fi
cargo test --all-targets
