"""Clocks: the in-memory provider takes one so tests can move time instead of waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    #: True when time only moves by :meth:`ManualClock.advance`, so waiting on real time is pointless
    manual: bool


class SystemClock:
    manual = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Time that moves only when a test says so; advancing wakes every waiter."""

    manual = True

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._listeners: list[asyncio.Event] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        self._now += delta
        for event in self._listeners:
            event.set()
        return self._now

    def subscribe(self, event: asyncio.Event) -> None:
        self._listeners.append(event)
