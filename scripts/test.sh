#!/usr/bin/env bash
# Run the test suite (arguments go to pytest), setting up .venv and node_modules if needed.
set -euo pipefail
# shellcheck source=scripts/dev-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
# shellcheck disable=SC2119  # no argument on purpose: reinstall only when pyproject.toml changed
toygres_setup
cd "$TOYGRES_ROOT"
exec python -m pytest -q "$@"
