#!/usr/bin/env bash
# Builds the Python package with `pip install ./python` into a virtual environment
# (made once, under target/, with spatialdata 0.8.0 and pytest) and runs its tests.
# Env: SPATIALZARR_PY_VENV (venv dir), SPATIALZARR_PYTHON (base python, >= 3.12),
# SPATIALZARR_WHEEL_PROFILE (cargo profile of the wheel, default dev: it reuses the
# debug build of the rest of the tests), SPATIALZARR_PY_LONG=1 (the long forms).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
venv="${SPATIALZARR_PY_VENV:-$repo/target/python-venv}"
req="$repo/python/tests/requirements.txt"
log() { echo "test_python: $*" >&2; }

# spatialdata 0.8.0 and its pins, as for the Rust interop tests, in a venv of our own.
python="$(SPATIALZARR_VENV="$venv" bash tests/interop/setup_venv.sh | tail -n 1)"
stamp="$venv/.python-tests-stamp"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if ! [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "installing $req"
    "$python" -m pip install --no-input --disable-pip-version-check --progress-bar off -q -r "$req" >&2
    echo "$want" > "$stamp"
fi

# The contract command. The wheel's crate is a member of the root workspace, so its
# build shares target/ (and, in the dev profile, every compiled dependency) with the
# Rust tests. No toolchain download: a missing cargo is an error.
export MATURIN_NO_INSTALL_RUST=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
export MATURIN_PEP517_ARGS="--profile ${SPATIALZARR_WHEEL_PROFILE:-dev}"
log "pip install ./python (cargo profile ${SPATIALZARR_WHEEL_PROFILE:-dev})"
start=$SECONDS
"$python" -m pip uninstall -q -y spatialzarr >&2 2>/dev/null || true
"$python" -m pip install --no-input --disable-pip-version-check --progress-bar off -q ./python >&2
log "built and installed in $((SECONDS - start)) s"


set +e
"$python" -m pytest -q -p no:cacheprovider --import-mode=importlib python/tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    log "pytest collected no tests: that is a failure"
    exit 1
fi
exit $status
