"""The architecture contracts in pyproject.toml hold, and they catch a dependency pointing up.

``lint-imports`` runs in CI too; these tests also prove the contracts have teeth: a copy of the
tree with one upward import added must fail them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "functions",
    "cli",
    "api",
    "control_plane",
    "orchestrations",
    "activities",
    "toygres",
    "durable_engine",
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the tree at ``root``, which comes first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"}  # one line per contract
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", script, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "contract"),
    [
        ("toygres/models/lifecycle.py", "import activities", "Layers"),
        ("toygres/models/lifecycle.py", "import toygres.metadata", "Inside the domain"),
        ("activities/health.py", "import control_plane", "Layers"),
        ("durable_engine/_retry.py", "import toygres.models", "The engine is a library of its own"),
    ],
)
def test_an_upward_import_breaks_a_contract(
    tree_copy: Path, module: str, upward_import: str, contract: str
) -> None:
    path = tree_copy / module
    path.write_text(path.read_text() + f"\n{upward_import}  # added by the test\n")
    result = lint_imports(tree_copy)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert [line for line in broken if line.startswith(contract)], result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    imported = upward_import.removeprefix("import ")
    assert f"{importer} -> {imported}" in result.stdout
