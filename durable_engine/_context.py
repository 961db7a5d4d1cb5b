"""The authoring surface: what orchestration and activity code receives as ``ctx``.

Everything an orchestration does that could differ between the first run and a replay —
time, randomness, I/O — goes through this context, which reads it from history on replay.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._errors import (
    ActivityError,
    ActivityTimeoutError,
    DurableError,
    ErrorCategory,
    ErrorInfo,
    SubOrchestrationError,
    TaskFailedError,
)
from ._futures import ConvertedFuture, DurableFuture, JoinFuture, SelectFuture
from ._retry import RetryPolicy
from ._serialization import check_result_type, validate_as

if TYPE_CHECKING:
    from ._replay import TurnExecutor

_UUID_NAMESPACE = uuid.UUID("6f1d9a52-7d0e-4d43-9c55-0b3c1d1f7e11")

T = TypeVar("T")


@dataclass(frozen=True)
class ContinueAsNew:
    """Returned (via ``ctx.continue_as_new``) to restart the instance with fresh history."""

    input: Any
    version: str | None = None


class _ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Drops records while replaying, so each log line appears once per real execution."""

    def __init__(self, logger: logging.Logger, ctx: OrchestrationContext) -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("instance_id", self._ctx.instance_id)
        extra.setdefault("orchestration", self._ctx.name)
        kwargs["extra"] = extra
        return msg, kwargs


class OrchestrationContext:
    def __init__(
        self,
        executor: TurnExecutor,
        *,
        instance_id: str,
        execution_id: int,
        name: str,
        version: str,
        parent_instance_id: str | None,
    ) -> None:
        self._executor = executor
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.name = name
        self.version = version
        self.parent_instance_id = parent_instance_id
        self._uuid_counter = 0
        self.logger = _ReplaySafeLogger(logging.getLogger(f"durable_engine.orchestration.{name}"), self)

    # --- determinism helpers -----------------------------------------------------------------
    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs past turns; side effects outside ``ctx`` should be skipped."""
        return self._executor.is_replaying

    def utc_now(self) -> datetime:
        """The start time of the current turn, as recorded in history (never the wall clock)."""
        return self._executor.current_time

    def new_uuid(self) -> str:
        """A UUID that is the same on every replay of this point of the orchestration."""
        self._uuid_counter += 1
        return str(
            uuid.uuid5(_UUID_NAMESPACE, f"{self.instance_id}/{self.execution_id}/{self._uuid_counter}")
        )

    def set_custom_status(self, value: Any) -> None:
        """A small JSON value shown in the instance status (progress, phase, ...)."""
        self._executor.set_custom_status(value)

    # --- scheduling --------------------------------------------------------------------------
    @overload
    def schedule_activity(
        self, name: str, input: Any = None, *, retry: RetryPolicy | None = None, result_type: None = None
    ) -> DurableFuture[Any]: ...

    @overload
    def schedule_activity(
        self, name: str, input: Any = None, *, retry: RetryPolicy | None = None, result_type: type[T]
    ) -> DurableFuture[T]: ...

    def schedule_activity(
        self,
        name: str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        result_type: type[Any] | None = None,
    ) -> DurableFuture[Any]:
        """Run activity ``name``; await the future for its result.

        With ``result_type`` (a pydantic model, a dataclass, any type pydantic validates) the
        result arrives validated as that type; one that does not fit raises ``ActivityError``
        with ``error_type == "ResultValidationError"``. History keeps the raw JSON either way.
        """
        if result_type is not None:
            check_result_type(result_type)
        if retry is None:
            future = self._executor.schedule_activity(name, input)
        else:
            future = self._executor.spawn(
                self._with_retry(name, input, retry), f"activity {name!r} with retry"
            )
        return _typed(future, result_type, ActivityError, name, f"the result of activity {name!r}")

    async def _with_retry(self, name: str, input: Any, policy: RetryPolicy) -> Any:
        attempt = 1
        while True:
            task = self._executor.schedule_activity(name, input)
            try:
                if policy.attempt_timeout is None:
                    return await task
                timer = self.schedule_timer(policy.attempt_timeout)
                index, value = await self.select([task, timer])
                if index == 0:
                    return value
                raise ActivityTimeoutError(
                    name,
                    ErrorInfo(
                        ErrorCategory.APPLICATION,
                        "Timeout",
                        f"attempt {attempt} did not complete within {policy.attempt_timeout}",
                    ),
                )
            except ActivityError as exc:
                retryable = (
                    exc.category != ErrorCategory.CONFIGURATION
                    and exc.error_type not in policy.non_retryable_error_types
                )
                if not retryable or attempt >= policy.max_attempts:
                    raise
                self.logger.info(
                    "activity %s attempt %d failed (%s); retrying", name, attempt, exc.error_message
                )
            attempt += 1
            await self.schedule_timer(policy.delay_before(attempt))

    def schedule_timer(self, delay: timedelta | float | datetime) -> DurableFuture[None]:
        """A durable timer: it survives restarts and fires at ``utc_now() + delay``."""
        if isinstance(delay, datetime):
            fire_at = delay
        else:
            if not isinstance(delay, timedelta):
                delay = timedelta(seconds=delay)
            fire_at = self.utc_now() + delay
        return self._executor.schedule_timer(fire_at)

    def wait_for_event(self, name: str) -> DurableFuture[Any]:
        """The next external event called ``name``; events raised earlier are kept until consumed."""
        return self._executor.wait_for_event(name)

    @overload
    def schedule_sub_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        version: str | None = None,
        result_type: None = None,
    ) -> DurableFuture[Any]: ...

    @overload
    def schedule_sub_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        version: str | None = None,
        result_type: type[T],
    ) -> DurableFuture[T]: ...

    def schedule_sub_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        version: str | None = None,
        result_type: type[Any] | None = None,
    ) -> DurableFuture[Any]:
        """Run orchestration ``name`` as a child; await the future for its output.

        ``result_type`` works as for :meth:`schedule_activity`; a mismatch raises
        ``SubOrchestrationError`` with ``error_type == "ResultValidationError"``.
        """
        if result_type is not None:
            check_result_type(result_type)
        future = self._executor.schedule_sub_orchestration(name, input, instance_id, version)
        return _typed(
            future, result_type, SubOrchestrationError, name, f"the output of orchestration {name!r}"
        )

    def start_orchestration(
        self, name: str, input: Any = None, *, instance_id: str | None = None, version: str | None = None
    ) -> str:
        """Start a detached orchestration (fire and forget); returns its instance id."""
        return self._executor.start_detached(name, input, instance_id, version)

    def join(self, futures: Sequence[DurableFuture[Any]]) -> DurableFuture[list[Any]]:
        return JoinFuture(futures)

    def select(self, futures: Sequence[DurableFuture[Any]]) -> DurableFuture[tuple[int, Any]]:
        return SelectFuture(futures)

    def continue_as_new(self, input: Any = None, *, version: str | None = None) -> ContinueAsNew:
        """Return this from the orchestration to restart with ``input`` and an empty history."""
        return ContinueAsNew(input, version)


def _typed(
    future: DurableFuture[Any],
    result_type: type[Any] | None,
    error_type: type[TaskFailedError],
    task_name: str,
    what: str,
) -> DurableFuture[Any]:
    """``future``, its value validated as ``result_type`` on delivery (every replay does it again)."""
    if result_type is None:
        return future

    def convert(value: Any) -> Any:
        try:
            return validate_as(result_type, value, what)
        except DurableError as exc:
            assert exc.error is not None
            raise error_type(task_name, exc.error) from None

    return ConvertedFuture(future, convert)


@dataclass
class ActivityContext:
    """What an activity learns about the call it serves; activities may run more than once."""

    instance_id: str
    execution_id: int
    activity_name: str
    corr_id: int
    #: delivery count: 1 on the first run, higher after a crash or lock loss redelivered it
    attempt: int
    logger: logging.LoggerAdapter  # type: ignore[type-arg]

    @property
    def idempotency_key(self) -> str:
        """Stable across redeliveries of this call: use it to make side effects idempotent."""
        return f"{self.instance_id}/{self.execution_id}/{self.corr_id}"
