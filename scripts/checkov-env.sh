#!/usr/bin/env bash
# Create (or reuse) .venv-checkov: checkov in a virtualenv of its own.
#
# Why not the project's .venv: checkov pins packaging<24 and python-dateutil<3 (through botocore),
# which conflicts with pytest>=9 and kubernetes>=37 there (`pip check` fails). The scanner only
# reads rendered files, so it needs nothing of the project's packages.
#
# Prints the path of the checkov executable. A stamp file skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-checkov"
requirement="checkov==3.3.30"
stamp="$venv/.installed-$(echo "$requirement" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    echo "installing $requirement into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" >&2
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
echo "$venv/bin/checkov"
