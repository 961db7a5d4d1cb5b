"""Retry policies for activities; retries wait on durable timers, so they survive restarts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

Backoff = Literal["exponential", "linear", "fixed"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failing activity.

    ``attempt_timeout`` bounds each attempt with a durable timer: an attempt that has not
    completed by then counts as failed (the activity may still finish; its result is ignored).
    Configuration errors (an unregistered activity, say) are never retried: retrying cannot fix them.
    """

    max_attempts: int = 3
    backoff: Backoff = "exponential"
    initial_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=5)
    attempt_timeout: timedelta | None = None
    non_retryable_error_types: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.backoff not in ("exponential", "linear", "fixed"):
            raise ValueError(
                f"RetryPolicy.backoff must be exponential, linear or fixed, not {self.backoff!r}"
            )
        if self.initial_delay < timedelta(0) or self.max_delay < timedelta(0):
            raise ValueError("RetryPolicy delays must not be negative")
        if self.attempt_timeout is not None and self.attempt_timeout <= timedelta(0):
            raise ValueError("RetryPolicy.attempt_timeout must be positive")

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before ``attempt`` (2 = the first retry)."""
        n = max(attempt - 1, 1)
        if self.backoff == "fixed":
            delay = self.initial_delay
        elif self.backoff == "linear":
            delay = self.initial_delay * n
        else:
            delay = self.initial_delay * (2 ** (n - 1))
        return min(delay, self.max_delay)
