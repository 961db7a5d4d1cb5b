#!/usr/bin/env bash
# Offline checks of the Azure deployment assets, run by .ci/run (fails on any failing check):
#   1. checkov --framework bicep over infra/bicep, failures allowed only from checkov-skips.txt
#   2. shellcheck on every script under scripts/ and on .ci/run
#   3. bicep build + bicep lint of main.bicep, only where a Bicep CLI is installed ("skipped" otherwise)
# The pycep-parser parse and the structural checks of the Bicep files are pytest tests (tests/infra).
# Expects the project venv on PATH (checkov and shellcheck come from the dev extra).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0

echo "--> checkov (bicep)"
python scripts/checkov_gate.py infra/bicep infra/bicep/checkov-skips.txt || status=1

echo "--> shellcheck"
scripts=()
while IFS= read -r -d '' file; do
    scripts+=("$file")
done < <(find scripts -type f -name '*.sh' -print0 | sort -z)
scripts+=(.ci/run)
if shellcheck --external-sources "${scripts[@]}"; then
    echo "shellcheck: ${#scripts[@]} scripts clean"
else
    status=1
fi

echo "--> bicep build / lint"
bicep_cli=()
if command -v bicep >/dev/null 2>&1; then
    bicep_cli=(bicep)
elif command -v az >/dev/null 2>&1 && az bicep version >/dev/null 2>&1; then
    bicep_cli=(az bicep)
fi
if [ ${#bicep_cli[@]} -eq 0 ]; then
    echo "bicep build/lint: skipped (no bicep or az bicep CLI installed)"
else
    out="$(mktemp -d)"
    if "${bicep_cli[@]}" build infra/bicep/main.bicep --outdir "$out" && "${bicep_cli[@]}" lint infra/bicep/main.bicep; then
        echo "bicep build/lint: passed (${bicep_cli[*]})"
    else
        status=1
    fi
    rm -rf "$out"
fi

exit "$status"
