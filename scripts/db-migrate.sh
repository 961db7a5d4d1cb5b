#!/usr/bin/env bash
# Apply the engine and metadata (CMS) schemas to TOYGRES_DATABASE_URL (idempotent, safe to run
# concurrently with control-plane start-ups: both take the same advisory locks).
#   TOYGRES_DATABASE_URL=postgresql://user@host:5432/toygres scripts/db-migrate.sh
set -euo pipefail
# shellcheck source=scripts/dev-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
# shellcheck disable=SC2119  # no argument on purpose: reinstall only when pyproject.toml changed
toygres_setup
cd "$TOYGRES_ROOT"
: "${TOYGRES_DATABASE_URL:?set TOYGRES_DATABASE_URL to the PostgreSQL database to migrate}"
exec python -m cli migrate "$@"
