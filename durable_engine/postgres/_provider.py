"""The PostgreSQL provider: durable queues, history and instances on psycopg 3.

Why server-side functions: each hot operation (fetch a turn, commit a turn, fetch and
complete an activity) is one ``SELECT fn(...)`` in autocommit mode, i.e. one round trip
and one transaction, with the multi-statement logic and its locking next to the data
(see ``sql/0001_engine_schema.sql``). Everything crosses the wire as ``jsonb``.
Wake-ups come from LISTEN/NOTIFY on one shared connection (``_listener.py``).

Every statement names its objects schema-qualified (``"<schema>".fn(...)``) and no session
state is relied on, so the provider also works through a transaction-mode pooler
(``pooler="transaction"``, ``_connections.py``); the functions pin their own search_path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .._clock import Clock, SystemClock
from .._errors import LockLostError
from .._history import HistoryEvent
from .._messages import ActivityTask, MessageKind, OrchestratorMessage
from .._provider import (
    ActivityItem,
    InstanceRecord,
    NewInstance,
    OrchestrationItem,
    QueueName,
    TurnCommit,
)
from .._status import RuntimeStatus
from ..migrate import apply_migrations, require_migrations
from ._connections import Connections, ConnectKwargs, Pooler
from ._dbclock import DatabaseClock
from ._listener import Listener
from ._schema import engine_migrations

T = TypeVar("T")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TERMINAL = [s.value for s in RuntimeStatus if s.is_terminal]
_INSTANCE_COLUMNS = (
    "instance_id, name, version, status, execution_id, input, output, error, custom_status,"
    " parent_instance_id, created_at, updated_at"
)
#: an idle waiter re-checks the database at least this often even without a NOTIFY (a lost
#: notification, a message made visible by another process's clock) - cheap, not hot polling
_MAX_IDLE_SLEEP = 30.0
#: without LISTEN (behind a transaction-mode pooler), how often idle waiters poll by default
_POLL_INTERVAL = 0.5


async def _uncancelled(query: Coroutine[Any, Any, T]) -> T:
    """Await a short read that a waiter's cancellation must not interrupt.

    Waits are cancelled all the time (a dispatcher stopping, ``wait_for_completion`` returning).
    A query cancelled mid-flight makes psycopg send the server a cancel request over a new
    connection; letting the read finish in the background and hand its connection back costs
    nothing (and spares PgBouncer 1.18 a cancel-request path that crashes it).
    """
    task = asyncio.ensure_future(query)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_discard)  # nobody wants its result now, nor an error it may end in
        raise


def _discard(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _record(row: dict[str, Any]) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row["instance_id"],
        name=row["name"],
        version=row["version"],
        status=RuntimeStatus(row["status"]),
        execution_id=int(row["execution_id"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        custom_status=row["custom_status"],
        parent_instance_id=row["parent_instance_id"],
        created_at=_ts(row["created_at"]),
        updated_at=_ts(row["updated_at"]),
    )


_COLUMN_NAMES = [c.strip() for c in _INSTANCE_COLUMNS.split(",")]


def _row_record(row: TupleRow) -> InstanceRecord:
    return _record(dict(zip(_COLUMN_NAMES, row, strict=True)))


#: Like the create_instances SQL function, but the start message is delivered and locked to
#: the caller at once (no NOTIFY: nobody else should fetch it); the instance row comes back.
_CREATE_LOCKED = """
WITH ins AS (
    INSERT INTO {s}.instances (instance_id, name, version, status, execution_id, input,
                           parent_instance_id, parent_link, created_at, updated_at)
    VALUES (%(id)s, %(name)s, %(version)s, 'Pending', 1, %(input)s, %(parent)s, %(link)s, now(), now())
    ON CONFLICT (instance_id) DO NOTHING
    RETURNING *
), lk AS (
    INSERT INTO {s}.instance_locks (instance_id, lock_token, locked_until)
    SELECT instance_id, %(token)s, now() + make_interval(secs => %(secs)s) FROM ins
    ON CONFLICT (instance_id) DO UPDATE
        SET lock_token = EXCLUDED.lock_token, locked_until = EXCLUDED.locked_until
    RETURNING instance_id, locked_until
), msg AS (
    INSERT INTO {s}.orchestrator_queue (instance_id, payload, visible_at, lock_token, delivery_count)
    SELECT instance_id, %(start)s, locked_until, %(token)s, 1 FROM lk
    RETURNING id, instance_id
)
SELECT msg.id, to_jsonb(ins) FROM msg JOIN ins USING (instance_id)
"""


def _new_instance_json(instance: NewInstance) -> dict[str, Any]:
    start = OrchestratorMessage(
        kind=MessageKind.START,
        instance_id=instance.instance_id,
        execution_id=1,
        name=instance.name,
        version=instance.version,
        data=instance.input,
        parent=instance.parent,
    )
    return {
        "instance_id": instance.instance_id,
        "name": instance.name,
        "version": instance.version,
        "input": instance.input,
        "parent_instance_id": (instance.parent or {}).get("instance"),
        "parent": instance.parent,
        "start": start.to_dict(),
    }


def _encode_cursor(created_at: datetime, instance_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, instance_id = json.loads(raw)
        return datetime.fromisoformat(created), str(instance_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid list cursor {cursor!r}") from exc


class PostgresProvider:
    """:class:`~durable_engine.Provider` on PostgreSQL; build it with :meth:`connect`."""

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
        listener: Listener,
        schema: str,
        host_clock: Clock | None = None,
        *,
        poll_interval: float = _POLL_INTERVAL,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self.schema = schema
        #: schema-qualified names everywhere: no statement depends on a session's search_path
        self._schema_sql = f'"{schema}"'
        self._queries: dict[str, str] = {}
        #: the server's clock: instants the runtime makes (a turn's time) are on it
        self._clock = DatabaseClock(host_clock or SystemClock())
        #: without LISTEN, idle waiters look at the database this often
        self._poll_interval = poll_interval

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "durable",
        min_pool: int = 1,
        max_pool: int = 10,
        pooler: Pooler = "none",
        connect_kwargs: ConnectKwargs | None = None,
        direct_dsn: str | None = None,
        poll_interval: float = _POLL_INTERVAL,
        host_clock: Clock | None = None,
        migrate: bool = True,
    ) -> PostgresProvider:
        """Create or upgrade the engine schema (advisory-locked), then open the pool and listener.

        ``pooler="transaction"``: ``dsn`` goes through a transaction-mode pooler (PgBouncer,
        Azure Database for PostgreSQL's built-in one): no server-side prepared statements, and
        no LISTEN - idle waiters poll every ``poll_interval`` seconds instead - unless
        ``direct_dsn`` (a connection that bypasses the pooler) is given, which then carries the
        LISTEN connection and the migrations.

        ``connect_kwargs`` is called for every new connection (pool, listener, migrations) and
        returns extra ``psycopg.connect`` keyword arguments, or an awaitable of them: fresh
        credentials where they rotate (``{"password": token}``).

        ``host_clock`` is this host's wall clock (tests pass a skewed one); :meth:`now` is the
        database server's clock whatever it says (see ``_dbclock.py``).

        ``migrate=False``: run no DDL, only check that the schema is current (raising
        :class:`~durable_engine.migrate.MigrationError` naming what is missing), for identities
        that may not change the schema; someone else applies it (``apply_migrations``).
        """
        if not _SCHEMA_RE.match(schema):
            raise ValueError(f"invalid schema name {schema!r}: use lowercase letters, digits and '_'")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        connections = Connections(dsn, pooler, direct_dsn, connect_kwargs)
        migrations = engine_migrations()
        async with await connections.connect_session() as conn:
            if migrate:
                await apply_migrations(conn, migrations, schema=schema)
            else:
                await require_migrations(conn, migrations, schema=schema)

        pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
            dsn,
            min_size=min_pool,
            max_size=max_pool,
            kwargs=connections.pool_kwargs,
            open=False,
            name=f"durable-{schema}",
        )
        await pool.open(wait=True)
        listener = Listener(
            connections.connect_session if connections.can_listen else None,
            {k: f"{schema}.{k}" for k in ("orchestrator", "worker", "status")},
        )
        try:
            await listener.start()
        except BaseException:
            await pool.close()
            raise
        provider = cls(pool, listener, schema, host_clock, poll_interval=poll_interval)
        try:
            for _ in range(3):  # the first round trip of a connection is the slowest: keep the best
                await provider._measure_clock()
        except BaseException:
            await provider.close()
            raise
        return provider

    def _made_work(self, kind: QueueName) -> None:
        """This process made work fetchable; without LISTEN, wake its own idle waiters now."""
        if not self._listener.listening:
            self._listener.wake_local(kind)

    def _q(self, query: str) -> str:
        """``query`` with ``{s}`` replaced by the quoted schema name (cached)."""
        found = self._queries.get(query)
        if found is None:
            found = self._queries[query] = query.replace("{s}", self._schema_sql)
        return found

    async def close(self) -> None:
        await self._listener.close()
        await self._pool.close()

    def now(self) -> datetime:
        """The database server's clock, estimated on this host (instants sent are relative to it)."""
        return self._clock.now()

    def _delay(self, instant: datetime) -> float:
        """Seconds from now to ``instant`` (on :meth:`now`'s clock): what SQL adds to its ``now()``."""
        return (instant - self._clock.now()).total_seconds()

    async def _measure_clock(self) -> None:
        await self._scalar_and_clock("SELECT NULL::integer, clock_timestamp()")

    # --- helpers --------------------------------------------------------------------------
    async def _scalar(self, query: str | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(cast(Any, query), params)
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def _row(self, query: str, params: tuple[Any, ...]) -> TupleRow | None:
        async with self._pool.connection() as conn:
            return await (await conn.execute(query, params)).fetchone()

    async def _scalar_and_clock(self, query: str | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
        """``_scalar`` of a query whose second column is ``clock_timestamp()``: a clock sample for free."""
        async with self._pool.connection() as conn:
            sent = self._clock.host_now()
            cur = await conn.execute(cast(Any, query), params)
            row = await cur.fetchone()
            assert row is not None
            self._clock.observe(sent, row[1])
            return row[0]

    # --- instance creation and client-side messages ---------------------------------------
    async def create_instance(self, instance: NewInstance) -> bool:
        created = await self._scalar(
            self._q("SELECT {s}.create_instances(%s)"), (Jsonb([_new_instance_json(instance)]),)
        )
        if created:
            self._made_work("orchestrator")
        return bool(created)

    async def create_instance_locked(
        self, instance: NewInstance, lock_timeout: timedelta
    ) -> OrchestrationItem | None:
        row = _new_instance_json(instance)
        token = uuid.uuid4().hex
        params = {
            "id": row["instance_id"],
            "name": row["name"],
            "version": row["version"],
            "input": Jsonb(row["input"]),
            "parent": row["parent_instance_id"],
            "link": None if row["parent"] is None else Jsonb(row["parent"]),
            "token": token,
            "secs": lock_timeout.total_seconds(),
            "start": Jsonb(row["start"]),
        }
        async with self._pool.connection() as conn:
            # the lock row lives in an unlogged table; only the instance and message need the flush
            cur = await conn.execute(self._q(_CREATE_LOCKED), params)
            found = await cur.fetchone()
        if found is None:
            return None
        message_id, record = found
        return OrchestrationItem(
            instance_id=instance.instance_id,
            lock_token=token,
            instance=_record(record),
            history=[],
            messages=[OrchestratorMessage.from_dict(row["start"], id=int(message_id))],
            dequeue_count=1,
        )

    async def enqueue_orchestrator_message(
        self, message: OrchestratorMessage, visible_at: datetime | None = None
    ) -> None:
        delay = None if visible_at is None else self._delay(visible_at)
        await self._scalar(
            self._q("SELECT {s}.enqueue_orchestrator_message(%s, %s, %s)"),
            (message.instance_id, Jsonb(message.to_dict()), delay),
        )
        self._made_work("orchestrator")

    # --- orchestrator queue ---------------------------------------------------------------
    async def fetch_orchestration_item(self, lock_timeout: timedelta) -> OrchestrationItem | None:
        data = await self._scalar_and_clock(
            self._q("SELECT {s}.fetch_orchestration_item(%s), clock_timestamp()"),
            (lock_timeout.total_seconds(),),
        )
        if data is None:
            return None
        messages = [OrchestratorMessage.from_dict(m["payload"], id=int(m["id"])) for m in data["messages"]]
        return OrchestrationItem(
            instance_id=data["instance_id"],
            lock_token=data["lock_token"],
            instance=_record(data["instance"]) if data["instance"] is not None else None,
            history=[HistoryEvent.from_dict(e) for e in data["history"]],
            messages=messages,
            dequeue_count=max(int(m["delivery_count"]) for m in data["messages"]),
        )

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        update = commit.update
        payload: dict[str, Any] = {
            "instance_id": commit.instance_id,
            "execution_id": commit.execution_id,
            "new_events": [e.to_dict() for e in commit.new_events],
            "consumed": commit.consumed_message_ids,
            "update": None
            if update is None
            else {
                "name": update.name,
                "version": update.version,
                "status": update.status.value,
                "execution_id": update.execution_id,
                "input": update.input,
                "output": update.output,
                "error": update.error,
                "custom_status": update.custom_status,
            },
            "messages": [
                {
                    "instance_id": tm.message.instance_id,
                    "payload": tm.message.to_dict(),
                    # a duration: the server computes the instant on its own clock
                    "delay": self._delay(tm.visible_at) if tm.visible_at is not None else None,
                }
                for tm in commit.orchestrator_messages
            ],
            "tasks": [{"instance_id": t.instance_id, "payload": t.to_dict()} for t in commit.activity_tasks]
            + [
                {
                    "instance_id": c.task.instance_id,
                    "payload": c.task.to_dict(),
                    "lock_token": c.lock_token,
                    "lock_seconds": self._delay(c.locked_until),
                    "delivery_count": c.dequeue_count,
                }
                for c in commit.claimed_tasks
            ],
            "new_instances": [_new_instance_json(n) for n in commit.new_instances],
        }
        try:
            ok = await self._scalar(self._q("SELECT {s}.commit_turn(%s, %s)"), (lock_token, Jsonb(payload)))
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError(
                f"duplicate history event id in commit for {commit.instance_id!r}; nothing was applied"
            ) from exc
        if not ok:
            raise LockLostError(
                f"lock on orchestration instance {commit.instance_id!r} was lost before the turn committed"
            )
        if commit.update is not None:
            self._listener.wake_instance(commit.instance_id)  # local waiters need not await the NOTIFY
        if commit.orchestrator_messages or commit.new_instances:
            self._made_work("orchestrator")
        if commit.activity_tasks:
            self._made_work("worker")

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: timedelta) -> bool:
        renewed = await self._scalar(
            self._q("SELECT {s}.renew_orchestration_lock(%s, %s)"), (lock_token, lock_timeout.total_seconds())
        )
        return bool(renewed)

    async def abandon_orchestration_item(self, lock_token: str, delay: timedelta | None = None) -> None:
        seconds = delay.total_seconds() if delay else 0.0
        await self._scalar(self._q("SELECT {s}.abandon_orchestration_item(%s, %s)"), (lock_token, seconds))
        self._made_work("orchestrator")

    # --- worker queue ---------------------------------------------------------------------
    async def fetch_activity(self, lock_timeout: timedelta) -> ActivityItem | None:
        data = await self._scalar_and_clock(
            self._q("SELECT {s}.fetch_activity(%s), clock_timestamp()"), (lock_timeout.total_seconds(),)
        )
        if data is None:
            return None
        return ActivityItem(
            task=ActivityTask.from_dict(data["payload"]),
            lock_token=data["lock_token"],
            dequeue_count=int(data["delivery_count"]),
        )

    async def renew_activity_lock(self, lock_token: str, lock_timeout: timedelta) -> bool:
        renewed = await self._scalar(
            self._q("SELECT {s}.renew_activity_lock(%s, %s)"), (lock_token, lock_timeout.total_seconds())
        )
        return bool(renewed)

    async def complete_activity(self, lock_token: str, completion: OrchestratorMessage) -> bool:
        done = await self._scalar(
            self._q("SELECT {s}.complete_activity(%s, %s, %s)"),
            (lock_token, completion.instance_id, Jsonb(completion.to_dict())),
        )
        if done:
            self._made_work("orchestrator")
        return bool(done)

    async def abandon_activity(self, lock_token: str, delay: timedelta | None = None) -> None:
        seconds = delay.total_seconds() if delay else 0.0
        await self._scalar(
            self._q("SELECT {s}.abandon_activity(%s, %s)"),
            (lock_token, seconds),
        )
        self._made_work("worker")

    # --- reads and maintenance --------------------------------------------------------------
    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._q(f"SELECT {_INSTANCE_COLUMNS} FROM {{s}}.instances WHERE instance_id = %s"),
                (instance_id,),
            )
            row = await cur.fetchone()
        return None if row is None else _row_record(row)

    async def list_instances(
        self,
        *,
        status: RuntimeStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[InstanceRecord], str | None]:
        if limit <= 0:
            raise ValueError("limit must be positive")
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = %s")
            params.append(RuntimeStatus(status).value)
        if name is not None:
            where.append("name = %s")
            params.append(name)
        if cursor is not None:
            created, after_id = _decode_cursor(cursor)
            where.append("(created_at, instance_id) > (%s, %s)")
            params.extend([created, after_id])
        query = self._q(f"SELECT {_INSTANCE_COLUMNS} FROM {{s}}.instances")
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at, instance_id LIMIT %s"
        params.append(limit + 1)
        async with self._pool.connection() as conn:
            cur = await conn.execute(cast(Any, query), params)
            rows = await cur.fetchall()
        records = [_row_record(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = records[-1]
            assert last.created_at is not None
            next_cursor = _encode_cursor(last.created_at, last.instance_id)
        return records, next_cursor

    async def read_history(self, instance_id: str) -> list[HistoryEvent]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._q(
                    "SELECT event FROM {s}.history WHERE instance_id = %s AND execution_id = coalesce("
                    " (SELECT execution_id FROM {s}.instances WHERE instance_id = %s),"
                    " (SELECT max(execution_id) FROM {s}.history WHERE instance_id = %s))"
                    " ORDER BY event_id"
                ),
                (instance_id, instance_id, instance_id),
            )
            rows = await cur.fetchall()
        return [HistoryEvent.from_dict(r[0]) for r in rows]

    async def purge_instance(self, instance_id: str) -> bool:
        return bool(await self._scalar(self._q("SELECT {s}.purge_instances(%s)"), ([instance_id],)))

    async def purge_terminal_before(self, cutoff: datetime) -> int:
        count = await self._scalar(
            self._q(
                "SELECT {s}.purge_instances(array(SELECT instance_id FROM {s}.instances"
                " WHERE status = ANY(%s) AND updated_at < %s))"
            ),
            (_TERMINAL, cutoff),
        )
        return int(count or 0)

    # --- wake-ups -------------------------------------------------------------------------
    async def wait_for_work(self, queue: QueueName, timeout: float) -> None:
        # capture the event before asking the database, so a NOTIFY racing the query still wakes us
        event = self._listener.current(queue)
        deadline = time.monotonic() + max(0.0, min(timeout, _MAX_IDLE_SLEEP))
        while True:
            until_work = await _uncancelled(
                self._scalar_and_clock(
                    self._q("SELECT {s}.seconds_until_work(%s), clock_timestamp()"), (queue,)
                )
            )
            budget = deadline - time.monotonic()
            if until_work is not None:
                budget = min(budget, max(0.0, float(until_work) + 0.002))
            if event.is_set() or budget <= 0:
                return
            if not self._listener.listening:  # nobody will NOTIFY us: look again in a while
                budget = min(budget, self._poll_interval)
            try:
                await asyncio.wait_for(event.wait(), budget)
                return
            except TimeoutError:
                if self._listener.listening:
                    return

    async def wait_for_instance_change(self, instance_id: str, timeout: float) -> None:
        event = self._listener.watch_instance(instance_id)
        try:
            if self._listener.listening:
                await asyncio.wait_for(event.wait(), max(0.0, timeout))
            else:
                await self._poll_instance(instance_id, event, timeout)
        except TimeoutError:
            pass
        finally:
            self._listener.unwatch_instance(instance_id, event)

    async def _poll_instance(self, instance_id: str, event: asyncio.Event, timeout: float) -> None:
        """Without LISTEN: return once the instance row changes (or goes), this process commits
        to it, or ``timeout`` passes.

        The first read is the baseline. It is sent before the caller reads the status (callers
        start this coroutine first, and the pool serves requests in order), so a change the
        caller has not seen is not in the baseline either; should that ever lose the race, the
        caller's own periodic re-read (``Client.wait_for_completion``) bounds the delay.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        query = self._q("SELECT status, updated_at FROM {s}.instances WHERE instance_id = %s")
        first: tuple[Any, ...] | None = None
        while not event.is_set():
            row = await _uncancelled(self._row(query, (instance_id,)))
            if row is None or (first is not None and tuple(row) != first):
                return
            first = tuple(row)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, self._poll_interval))
