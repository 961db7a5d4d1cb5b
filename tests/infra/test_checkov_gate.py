"""scripts/checkov_gate.py fails CI for the right reasons (each case runs checkov, ~5 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep import ROOT

GATE = ROOT / "scripts" / "checkov_gate.py"

LEAKY_STORAGE = """
param location string = resourceGroup().location

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stleaky'
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowBlobPublicAccess: true
    minimumTlsVersion: 'TLS1_0'
    supportsHttpsTrafficOnly: false
  }
}
"""


def run_gate(directory: Path, skips: str) -> subprocess.CompletedProcess[str]:
    skip_file = directory / "skips.txt"
    skip_file.write_text(skips)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [sys.executable, str(GATE), str(directory), str(skip_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def bicep_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bicep"
    directory.mkdir()
    (directory / "main.bicep").write_text(LEAKY_STORAGE)
    return directory


def test_a_failed_check_fails_the_gate_and_names_it(bicep_dir: Path) -> None:
    done = run_gate(bicep_dir, "")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED CKV_AZURE_" in done.stderr
    assert "storage" in done.stderr


def test_skips_need_a_reason_and_must_still_fire(bicep_dir: Path) -> None:
    no_reason = run_gate(bicep_dir, "CKV_AZURE_44\n")
    assert no_reason.returncode == 1
    assert "has no reason" in no_reason.stderr

    # a check this file passes (it has a name) is a stale skip, and the real failures still fail
    stale = run_gate(bicep_dir, "CKV_AZURE_1  not about storage accounts at all\n")
    assert stale.returncode == 1
    assert "stale skip CKV_AZURE_1" in stale.stderr
    assert "FAILED CKV_AZURE_" in stale.stderr


def test_a_file_that_does_not_parse_fails_the_gate(tmp_path: Path) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "main.bicep").write_text(LEAKY_STORAGE)
    (directory / "broken.bicep").write_text("resource x 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n")
    done = run_gate(directory, "")
    assert done.returncode == 1
    assert "did not parse" in done.stderr
