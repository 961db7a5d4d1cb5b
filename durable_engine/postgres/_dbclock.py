"""The database server's clock, as read from this host.

Why: the server compares every stored instant (message visibility, lock expiry) with its own
``now()``, so the runtime must think in the server's time too. A host clock that is minutes
off (no NTP, a VM resumed from a snapshot) otherwise fires timers minutes late or early and
stores locks that expired before they were written. The provider sends durations and lets SQL
compute instants; what it must produce itself (a turn's time, recorded in history and seen by
``ctx.utc_now()``) comes from this clock: the host clock plus the offset measured on round
trips the provider makes anyway (each fetch also returns ``clock_timestamp()``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .._clock import Clock

#: a sample from a slower round trip says little about the offset (its error is up to half of it)
_MAX_SAMPLE_RTT = timedelta(milliseconds=100)


class DatabaseClock:
    manual = False

    def __init__(self, host: Clock) -> None:
        self._host = host
        self._offset = timedelta(0)
        self._measured = False

    def now(self) -> datetime:
        return self._host.now() + self._offset

    def host_now(self) -> datetime:
        """This host's time; pass it to :meth:`observe` along with the server's answer."""
        return self._host.now()

    def observe(self, sent: datetime, server_time: datetime) -> None:
        """A round trip that left at ``sent`` (host time) and read the server's clock."""
        received = self._host.now()
        rtt = received - sent
        if rtt < timedelta(0) or (self._measured and rtt > _MAX_SAMPLE_RTT):
            return  # the host clock stepped mid-flight, or the sample is too coarse to help
        self._offset = server_time - (sent + rtt / 2)
        self._measured = True

    @property
    def offset(self) -> timedelta:
        """How far the server's clock is ahead of this host's (negative: behind)."""
        return self._offset
