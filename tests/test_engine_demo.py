"""The README's main job must keep working: every demo orchestration completes."""

from __future__ import annotations

import pytest

from examples.engine_demo import run


async def test_demo_runs_every_orchestration_to_completion(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await run(pg_dsn)
    out = capsys.readouterr().out
    assert out.count("Completed") == 6, out
    assert "Failed" not in out
    assert "lift-off" in out and "2870" in out and "timed out" in out
