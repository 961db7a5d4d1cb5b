#!/usr/bin/env bash
# Start the Toygres control plane (`toygres serve`: API on http://127.0.0.1:7071/api, durable
# runtime and reconciler, embedded PostgreSQL in .toygres/, local instance runtime unless a cluster
# is configured), setting up .venv and node_modules if needed. Arguments go to `toygres serve`
# (e.g. --port 8080, --log-format json). `bash scripts/run.sh demo` runs the engine demo instead
# (`python -m examples.engine_demo`, arguments go to it).
set -euo pipefail
# shellcheck source=scripts/dev-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
# shellcheck disable=SC2119  # no argument on purpose: reinstall only when pyproject.toml changed
toygres_setup
cd "$TOYGRES_ROOT"
if [ "${1:-}" = demo ]; then
    shift
    exec python -m examples.engine_demo "$@"
fi
# `python -m` from the checkout rather than the `toygres` console script: it runs this tree's code
# whatever state the editable install of the venv is in.
exec python -m cli serve "$@"
