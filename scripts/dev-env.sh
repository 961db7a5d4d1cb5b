# shellcheck shell=bash
# Idempotent development setup, sourced by scripts/test.sh, scripts/run.sh and .ci/run.
#
# The functions check every command themselves (`|| return`) because callers may run
# them in an `if`/`||` context, where `set -e` is suspended.
#
# Why a stamp file: `pip install -e '.[dev]'` takes tens of seconds even when nothing
# changed, so we remember the hash of pyproject.toml we last installed and only
# reinstall when it changes (or when the venv is new).

TOYGRES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOYGRES_VENV="$TOYGRES_ROOT/.venv"

toygres_deps_stamp() {
    local hash
    hash="$(sha256sum "$TOYGRES_ROOT/pyproject.toml" | cut -c1-16)" || return
    echo "$TOYGRES_VENV/.toygres-deps-$hash"
}

toygres_make_venv() {
    if [ ! -x "$TOYGRES_VENV/bin/python" ]; then
        echo "creating $TOYGRES_VENV" >&2
        "${PYTHON:-python3}" -m venv "$TOYGRES_VENV" || return
    fi
}

# Install the project and its dev extra; `force` skips the stamp check.
toygres_pip_install() {
    local stamp
    stamp="$(toygres_deps_stamp)" || return
    if [ "${1:-}" != force ] && [ -f "$stamp" ]; then
        return 0
    fi
    echo "installing Python dependencies (pip install -e '.[dev]')" >&2
    (cd "$TOYGRES_ROOT" && "$TOYGRES_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]') || return
    rm -f "$TOYGRES_VENV"/.toygres-deps-* || return
    touch "$stamp"
}

toygres_npm_install() {
    if [ "${1:-}" != force ] && [ -d "$TOYGRES_ROOT/node_modules/azurite" ]; then
        return 0
    fi
    echo "installing Node tools (npm install)" >&2
    (cd "$TOYGRES_ROOT" && npm install --no-audit --no-fund --loglevel=error)
}

toygres_setup() {
    toygres_make_venv || return
    toygres_pip_install "$@" || return
    toygres_npm_install "$@" || return
    export PATH="$TOYGRES_VENV/bin:$TOYGRES_ROOT/node_modules/.bin:$PATH"
    export VIRTUAL_ENV="$TOYGRES_VENV"
}

# Debian's pgbouncer for the connection-pooler tests (tests/pgbouncer.py), installed where
# missing when we are root and have apt-get (CI containers); otherwise the tests say what to do.
toygres_install_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "pgbouncer is missing and cannot be installed here (needs root and apt-get)" >&2
        return 0
    fi
    echo "installing pgbouncer (apt-get)" >&2
    local install=(apt-get install -y --no-install-recommends pgbouncer)
    if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; then
        apt-get update >/dev/null || return
        DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null || return
    fi
}
