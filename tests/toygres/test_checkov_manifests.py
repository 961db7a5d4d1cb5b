"""checkov's Kubernetes checks over the manifests of three sample instances: zero failed checks
beyond the documented skip list (toygres/runtimes/checkov-skips.txt, each with its reason).

checkov comes with the dev extra (pyproject.toml). Without it the test is skipped locally and
fails in CI, where .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .manifest_samples import render, write_samples

ROOT = Path(__file__).resolve().parents[2]
GATE = ROOT / "scripts" / "checkov_gate.py"
SKIPS = ROOT / "toygres" / "runtimes" / "checkov-skips.txt"
CHECKOV = Path(os.environ.get("TOYGRES_CHECKOV", Path(sys.executable).parent / "checkov"))


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        message = f"checkov is not installed at {CHECKOV}: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHECKOV


def gate(checkov: Path, directory: Path, skips: Path = SKIPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(GATE),
            "--framework",
            "kubernetes",
            "--checkov",
            str(checkov),
            str(directory),
            str(skips),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_sample_instances_pass_checkov(checkov: Path, tmp_path: Path) -> None:
    files = write_samples(tmp_path / "manifests")
    assert [f.name for f in files] == ["default.yaml", "loadbalancer.yaml", "custom.yaml"]
    done = gate(checkov, tmp_path / "manifests")
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    match = re.search(r"(\d+) checks passed, (\d+) failed, (\d+) skipped", done.stdout)
    assert match is not None, done.stdout
    passed, failed, skipped = map(int, match.groups())
    assert failed == 0 and passed >= 90 * 3 and skipped >= 1


def test_the_gate_fails_a_weakened_pod_and_a_stale_skip(checkov: Path, tmp_path: Path) -> None:
    """Guards the test above: a privileged, root, token-mounting pod fails; so does an unused skip."""
    documents = render("default")
    sts = next(d for d in documents if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    pod["automountServiceAccountToken"] = True
    container = pod["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    (tmp_path / "weak").mkdir()
    (tmp_path / "weak" / "weak.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    stale = tmp_path / "skips.txt"
    stale.write_text(
        SKIPS.read_text() + "CKV_K8S_21 The default namespace (never used; must be reported stale)\n"
    )
    done = gate(checkov, tmp_path / "weak", stale)
    assert done.returncode == 1
    assert "FAILED CKV_K8S_16" in done.stderr  # privileged container
    assert "FAILED CKV_K8S_20" in done.stderr  # privilege escalation
    assert "stale skip CKV_K8S_21" in done.stderr
