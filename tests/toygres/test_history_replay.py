"""Stored histories of every registered orchestration version still replay on today's code.

The fixtures in ``tests/toygres/histories/`` are real histories recorded from the version they
name (``python -m tests.toygres.histories.record``). Each is run again here, on the in-memory
engine with a manual clock, against the code registered today for that name and version: the
orchestration gets the recorded input, every activity answers with the recorded result for its
correlation id, and the clock is set to each recorded turn's start time. The engine checks each
turn's replay against the history it is building, and this test checks that history against the
stored one: same actions (kind, name, target instance) in the same order, same outcome. A code
change that would break in-flight instances of a version fails here, which is the signal to
register the change as a new version and keep the old code.

Only the engine's public surface is used, so the test does not depend on its internals.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from durable_engine import (
    ActivityContext,
    Client,
    EventKind,
    HistoryEvent,
    InMemoryProvider,
    ManualClock,
    Registry,
    Runtime,
    RuntimeOptions,
)
from orchestrations import register_orchestrations

HISTORIES = Path(__file__).resolve().parent / "histories"
FIXTURES = sorted(HISTORIES.glob("*.json"))
#: events written by orchestration code; replay must reproduce them in order
ACTIONS = {
    EventKind.ACTIVITY_SCHEDULED,
    EventKind.TIMER_CREATED,
    EventKind.EVENT_SUBSCRIBED,
    EventKind.SUB_ORCHESTRATION_SCHEDULED,
    EventKind.ORCHESTRATION_DETACHED,
}
ENDINGS = {EventKind.ORCHESTRATION_COMPLETED, EventKind.ORCHESTRATION_FAILED, EventKind.CONTINUED_AS_NEW}


class NotInRecording(Exception):
    """The re-run asked for an activity result the recording does not have."""


def _load(path: Path) -> tuple[dict[str, Any], list[HistoryEvent]]:
    record = json.loads(path.read_text())
    return record, [HistoryEvent.from_dict(e) for e in record["history"]]


def _actions(history: list[HistoryEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind.value, e.name, e.instance) for e in history if e.kind in ACTIONS]


def _registry_answering_from(history: list[HistoryEvent], instance_id: str) -> Registry:
    """The orchestrations registered today, with activities that replay the recorded results."""
    registry = Registry()
    register_orchestrations(registry)
    scheduled = {e.corr_id: e.name for e in history if e.kind == EventKind.ACTIVITY_SCHEDULED}
    results = {
        e.corr_id: e for e in history if e.kind in (EventKind.ACTIVITY_COMPLETED, EventKind.ACTIVITY_FAILED)
    }

    def recorded(name: str) -> Any:
        async def activity(ctx: ActivityContext, _: Any) -> Any:
            if ctx.instance_id != instance_id:
                raise NotInRecording(f"{name} for {ctx.instance_id}: another instance")
            event = results.get(ctx.corr_id)
            if event is None or scheduled.get(ctx.corr_id) != name:
                raise NotInRecording(f"{name} at correlation id {ctx.corr_id}")
            if event.kind == EventKind.ACTIVITY_COMPLETED:
                return event.data
            error = event.error or {}
            # the engine reports an activity failure by its exception's type name and message
            raise type(str(error.get("type", "Error")), (Exception,), {})(error.get("message", ""))

        return activity

    names = {name for name in scheduled.values() if name} | {
        "DeployPostgres",
        "DeletePostgres",
        "GetInstanceStatus",
        "HealthCheck",
        "UpdateMetadata",
        "GenerateConnectionString",
        "GetInstanceRecord",
        "StopOrchestration",
        "FindInstancesWithoutMonitor",
    }
    for name in sorted(names):
        registry.activity(name)(recorded(name))
    return registry


async def _rerun(record: dict[str, Any], history: list[HistoryEvent]) -> list[HistoryEvent]:
    instance_id = record["instance_id"]
    turn_times = [
        datetime.fromisoformat(e.timestamp or "") for e in history if e.kind == EventKind.TURN_STARTED
    ]
    clock = ManualClock(turn_times[0])
    provider = InMemoryProvider(clock)
    runtime = Runtime(
        provider, _registry_answering_from(history, instance_id), RuntimeOptions(inline_activities=False)
    )
    client = Client(provider)
    started = next(e for e in history if e.kind == EventKind.ORCHESTRATION_STARTED)
    await client.start_orchestration(instance_id, record["name"], started.data, version=record["version"])
    for at in turn_times:
        if at > clock.now():
            clock.advance(at - clock.now())
        await runtime.run_orchestrations()
        await runtime.run_activities()
        status = await client.get_status(instance_id)
        assert status is not None
        if status.is_terminal:
            break
    return await client.get_history(instance_id)


def test_every_registered_version_has_a_stored_history() -> None:
    registry = Registry()
    register_orchestrations(registry)
    stored = {(json.loads(p.read_text())["name"], json.loads(p.read_text())["version"]) for p in FIXTURES}
    registered = {(name, v) for name, versions in registry.orchestration_names().items() for v in versions}
    missing = registered - stored
    assert not missing, f"record histories of {sorted(missing)}: python -m tests.toygres.histories.record"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
async def test_stored_history_replays_on_current_code(path: Path) -> None:
    record, history = _load(path)
    rerun = await _rerun(record, history)
    recorded_actions, rerun_actions = _actions(history), _actions(rerun)
    assert rerun_actions[: len(recorded_actions)] == recorded_actions
    failures = [e for e in rerun if e.kind == EventKind.ORCHESTRATION_FAILED]
    assert not any((e.error or {}).get("type") == "NonDeterminismError" for e in failures)
    recorded_end = [e for e in history if e.kind in ENDINGS]
    if recorded_end:  # a finished recording: the re-run ends the same way
        rerun_end = [e for e in rerun if e.kind in ENDINGS]
        assert [(e.kind, e.data) for e in rerun_end] == [(e.kind, e.data) for e in recorded_end]
    else:  # an in-flight recording: the re-run did exactly what it did, then waits like it did
        assert len(rerun_actions) == len(recorded_actions)
