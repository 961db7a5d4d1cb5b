"""The shared per-worker host: built once, survives an unusable storage setting, hooks never fail requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable_engine import RuntimeStatus
from functions import host_state
from functions.hints import StorageQueueHints
from functions.host_state import Host, HostConfig
from functions.sweep import run_sweep

from .conftest import local_host_config

pytestmark = pytest.mark.postgres


def _unusable() -> StorageQueueHints | None:
    return StorageQueueHints.from_connection_string("this is not a connection string")


@pytest.fixture
async def hintless(pg_dsn: str, pg_tmp_dir: Path) -> AsyncIterator[None]:
    root = pg_tmp_dir / "instances"
    host_state.configure(local_host_config(pg_dsn, root, hints=_unusable))
    try:
        yield
    finally:
        await host_state.close_host()
        host_state.configure(HostConfig())


async def test_concurrent_first_calls_build_one_host(hintless: None) -> None:
    hosts = await asyncio.gather(*(host_state.get_host() for _ in range(5)))
    assert all(h is hosts[0] for h in hosts)
    with pytest.raises(RuntimeError):
        host_state.configure(HostConfig())  # not while a host is open
    await host_state.close_host()
    assert await host_state.get_host() is not hosts[0]  # reopened after close


async def test_an_unusable_storage_setting_leaves_the_sweep_in_charge(hintless: None) -> None:
    host = await host_state.get_host()
    assert host.hints is None and host.runtime.hints is None and host.plane.on_started is None
    reconciler = await host.plane.run_reconciler()
    result = await run_sweep(host)
    assert result.processed >= 1
    status = await host.plane.client.get_status(reconciler)
    assert status is not None and status.status is RuntimeStatus.COMPLETED


async def test_a_failing_on_started_hook_does_not_fail_the_start(host: Host) -> None:
    async def broken(instance_id: str) -> None:
        raise ConnectionError("storage is down")

    host.plane.on_started = broken
    reconciler = await host.plane.run_reconciler()
    assert await host.plane.client.get_status(reconciler) is not None
