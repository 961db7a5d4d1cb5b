"""The timer-triggered sweep: progress without hints, and the periodic Reconciler.

Hints can be lost, arrive early, or never be sent (a crashed dispatcher's expired lock, a timer
longer than a Storage queue's seven-day visibility limit, an item abandoned after an error). Every
minute the sweep therefore drains both PostgreSQL queues within a budget, so the worst case of a
lost hint is about a minute of delay. Once per ``reconcile_every_minutes`` window it also starts the
Reconciler (every running instance has a live health monitor), under an instance id derived from
the window, so late, repeated or overlapping sweeps start at most one pass per window. The day's
certificate renewal pass (``RotateCertificates``) is started the same way.

No ``from __future__ import annotations`` here: the Functions worker binds trigger arguments by
their annotations, which must be real classes, not strings.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import azure.functions as func

from functions.config import SWEEP_SCHEDULE
from functions.host_state import Host, get_host

log = logging.getLogger("toygres.functions.sweep")

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class SweepResult:
    processed: int
    reconciler_id: str | None


async def start_reconciler(host: Host, now: datetime) -> str | None:
    """Start this window's Reconciler pass unless one exists; returns its id, or None when disabled."""
    every = host.settings.reconcile_every_minutes
    if every <= 0:
        return None
    instance_id = await host.plane.run_reconciler(now=now, every=timedelta(minutes=every))
    log.info("reconciler pass of this window: %s", instance_id)
    return instance_id


async def run_sweep(host: Host, now: datetime | None = None) -> SweepResult:
    """Start the Reconciler when due, then drain both queues until idle or the budget ends."""
    started = time.monotonic()
    reconciler_id: str | None = None
    try:
        reconciler_id = await start_reconciler(host, now or datetime.now(UTC))
    except Exception:  # the drain below is still worth doing
        log.exception("starting the reconciler failed; the next window tries again")
    try:
        if host.settings.reconcile_every_minutes > 0:  # the same switch: no maintenance passes when off
            await host.plane.run_certificate_rotation(now=now or datetime.now(UTC))
    except Exception:
        log.exception("starting the certificate rotation pass failed; the next sweep tries again")
    budget = max(host.settings.sweep_budget_seconds - (time.monotonic() - started), 1.0)
    processed = await host.runtime.run_until_idle(time_budget=budget)
    return SweepResult(processed=processed, reconciler_id=reconciler_id)


async def sweep(timer: func.TimerRequest) -> None:
    """The timer trigger: never raises, so a bad minute does not disturb the schedule."""
    started = time.monotonic()
    try:
        if timer.past_due:
            log.info("the sweep is running late")
        result = await run_sweep(await get_host())
    except Exception:
        log.exception("the sweep failed; the next one tries again")
        return
    log.info(
        "sweep processed %d item(s) in %.1fs (reconciler %s)",
        result.processed,
        time.monotonic() - started,
        result.reconciler_id or "off",
    )


bp.function_name(name="sweep")(bp.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE)(sweep))
