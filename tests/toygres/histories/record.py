"""Record real orchestration histories as JSON fixtures for the replay test.

Run it whenever an orchestration gets a new version, *before* changing the old code::

    .venv/bin/python -m tests.toygres.histories.record

It runs the current orchestrations on an embedded PostgreSQL (metadata and engine) with the
local runtime's real PostgreSQL processes, and writes one file per scenario and version
(``<Name>-<version>-<scenario>.json``) next to this module. Existing files are kept: a stored
history is a fact about an old version and must never be rewritten by newer code.
``test_history_replay.py`` re-runs every stored history against the code registered today.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import PostgresProvider
from toygres.models import CreateInstanceRequest, RuntimeKind
from toygres.pgserver import EmbeddedPostgres
from toygres.runtimes.local import LocalRuntime

from ..plane import control_plane, kill_local_instances, local_settings

HERE = Path(__file__).resolve().parent
#: a long interval keeps a monitor parked on its timer, so its history is stable when read
PARKED = LifecycleTiming(
    health_interval_seconds=3600, readiness_deadline_seconds=60, readiness_poll_seconds=0.3, deploy_attempts=1
)


async def dump(cp: ControlPlane, orchestration_id: str, scenario: str) -> Path | None:
    status = await cp.client.get_status(orchestration_id)
    assert status is not None, orchestration_id
    history = await cp.client.get_history(orchestration_id)
    path = HERE / f"{status.name}-{status.version}-{scenario}.json"
    if path.exists():
        return None
    record = {
        "name": status.name,
        "version": status.version,
        "instance_id": orchestration_id,
        "status": status.status.value,
        "history": [event.to_dict() for event in history],
    }
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.2)):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("condition not reached")


async def record_all(dsn: str, root: Path) -> list[Path]:
    written: list[Path] = []
    provider = await PostgresProvider.connect(dsn)
    local = LocalRuntime(root)
    runtimes = {RuntimeKind.LOCAL: local}
    try:
        async with control_plane(dsn, provider, runtimes, settings=local_settings(root), timing=PARKED) as (
            cp,
            _,
        ):
            created = await cp.create_instance(CreateInstanceRequest(name="recorded"))
            await cp.client.wait_for_completion(created.operation_id, 120)
            instance = await cp.get_instance(created.instance_id)
            monitor = instance.health_monitor_id
            assert monitor is not None

            async def parked() -> bool:
                history = await cp.client.get_history(monitor)
                return any(e.kind.value == "TimerCreated" for e in history)

            await wait_until(parked)
            written += [await dump(cp, created.operation_id, "completed"), await dump(cp, monitor, "parked")]

            await cp.client.cancel(monitor, "lost, to record a reconciler pass")
            await cp.client.wait_for_completion(monitor, 30)
            reconciler = await cp.run_reconciler()
            await cp.client.wait_for_completion(reconciler, 60)
            written.append(await dump(cp, reconciler, "restarted-monitor"))

            # the fleet passes, over a local instance (no TLS, no image to roll): their first steps
            rotation = await cp.run_certificate_rotation()
            await cp.client.wait_for_completion(rotation, 60)
            written.append(await dump(cp, rotation, "nothing-due"))
            rollout = await cp.start_image_rollout()
            await cp.client.wait_for_completion(rollout, 60)
            written.append(await dump(cp, rollout, "nothing-to-roll"))

            delete_op = await cp.delete_instance(created.instance_id)
            await cp.client.wait_for_completion(delete_op, 120)
            written.append(await dump(cp, delete_op, "completed"))

        # a create whose deploy fails: PostgreSQL refuses a bad setting, so the cleanup path runs
        broken = {RuntimeKind.LOCAL: LocalRuntime(root, server_settings={"shared_buffers": "not-a-size"})}
        async with control_plane(dsn, provider, broken, settings=local_settings(root), timing=PARKED) as (
            cp,
            _,
        ):
            failing = await cp.create_instance(CreateInstanceRequest(name="unlucky"))
            await cp.client.wait_for_completion(failing.operation_id, 120)
            written.append(await dump(cp, failing.operation_id, "failed-deploy"))
    finally:
        await provider.close()
        kill_local_instances(root)
    return [p for p in written if p is not None]


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="toygres-record-"))
    server = EmbeddedPostgres(base / "meta", server_settings={"fsync": "off"})
    try:
        server.start(timeout=60)
        for path in asyncio.run(record_all(server.dsn("postgres"), base / "instances")):
            print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
