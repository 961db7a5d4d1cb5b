"""The benchmark must keep running: a tiny Toygres-only run through its real entry point.

Numbers are not asserted (machines are shared and noisy); shape and completion are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_engine_bench_runs_end_to_end_and_writes_its_results() -> None:
    out = Path(tempfile.mkdtemp(prefix="toygres-bench-")) / "results.json"
    args = [
        "--only",
        "toygres",
        "--warmup",
        "2",
        "--seq-n",
        "5",
        "--throughput-n",
        "20",
        "--chain-n",
        "2",
        "--fanout-n",
        "1",
        "--fanout-width",
        "10",
        "--idle-seconds",
        "1",
        "--json",
        str(out),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine_bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]["toygres"]
    assert results["seq"]["p50_ms"] > 0 and results["throughput"]["per_s"] > 0
    assert results["idle"]["idle"]["window_s"] >= 1
