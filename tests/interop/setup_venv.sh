#!/usr/bin/env bash
# Creates (once) the Python virtualenv with spatialdata 0.8.0 used by the interop tests.
# Idempotent and safe to run concurrently. Logs go to stderr; the last line of stdout
# is the venv's python. Env: SPATIALZARR_VENV (venv dir), SPATIALZARR_PYTHON (base python).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SPATIALZARR_VENV:-$repo/target/interop-venv}"
req="$here/requirements.txt"
log() { echo "setup_venv: $*" >&2; }

# True if $1 runs and is Python >= 3.12.
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
    local c
    for c in ${SPATIALZARR_PYTHON:-} \
             $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 2>/dev/null | sort -rV) \
             python3.12 python3.13 python3; do
        if py_ok "$c"; then command -v "$c"; return 0; fi
    done
    log "no Python >= 3.12 found (tried \$SPATIALZARR_PYTHON, pyenv 3.12*, python3.12, python3.13, python3)"
    return 1
}

mkdir -p "$(dirname "$venv")"
# Parallel test processes may call this at once: serialise on a lock file beside the venv.
exec 9>"$venv.lock"
flock 9

stamp="$venv/.interop-stamp"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && py_ok "$venv/bin/python"; then
    echo "$venv/bin/python"
    exit 0
fi

if ! py_ok "$venv/bin/python"; then
    base="$(find_python)"
    log "creating $venv with $base ($("$base" --version 2>&1))"
    rm -rf "$venv"
    "$base" -m venv "$venv"
fi

log "installing $req (a first install takes 2-3 minutes)"
start=$SECONDS
"$venv/bin/python" -m pip install --no-input --disable-pip-version-check --progress-bar off \
    -q -r "$req" >&2
log "installed in $((SECONDS - start)) s"
echo "$want" > "$stamp"
echo "$venv/bin/python"
