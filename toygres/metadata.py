"""The metadata (CMS) repository: instances and their health checks, in PostgreSQL.

Every write is idempotent because activities run at least once: creating an instance with an id
that exists returns the row, a state change that already happened returns the row unchanged, and
"set" methods write the same values again without touching ``updated_at`` (the table trigger only
moves it when a row really changes). State changes are compare-and-set: they apply only from the
expected states, so a late or replayed activity cannot move an instance backwards.

SQL is parameterised; the schema name is composed with ``psycopg.sql.Identifier``.

The repository works over an ``AsyncConnectionPool`` (services) or a single ``AsyncConnection``
(scripts, tests). A single connection is used by one call at a time; give it ``autocommit=True``
so each call is its own transaction.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import errors, sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from toygres.models import (
    DeploymentConfig,
    HealthCheckRecord,
    HealthCheckResult,
    InstanceMetadata,
    InstanceState,
    ListInstancesResponse,
    allowed_predecessors,
    health_monitor_id,
    load_stored,
)

__all__ = [
    "DuplicateInstanceName",
    "InstanceDeleted",
    "InstanceNotFound",
    "InvalidCursor",
    "InvalidStateTransition",
    "MetadataError",
    "MetadataRepository",
]

MAX_PAGE_SIZE = 500
#: class id of the per-instance advisory locks (two-key form; the engine uses a class of its own)
INSTANCE_LOCK_CLASS = 0x5447


class MetadataError(Exception):
    """Base class of the repository's errors."""


class DuplicateInstanceName(MetadataError):
    """Another instance that is not deleted already has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an instance named {name!r} already exists")
        self.name = name


class InstanceNotFound(MetadataError):
    def __init__(self, instance_id: UUID) -> None:
        super().__init__(f"instance {instance_id} not found")
        self.instance_id = instance_id


class InvalidStateTransition(MetadataError):
    """The instance is in a state from which the requested change is not allowed."""

    def __init__(self, instance_id: UUID, current: InstanceState, target: InstanceState) -> None:
        super().__init__(f"instance {instance_id} is {current.value}; cannot move it to {target.value}")
        self.instance_id = instance_id
        self.current = current
        self.target = target


class InstanceDeleted(MetadataError):
    """The instance is deleted: its row is history and takes no writes."""

    def __init__(self, instance_id: UUID) -> None:
        super().__init__(f"instance {instance_id} is deleted; it takes no changes")
        self.instance_id = instance_id


class InvalidCursor(MetadataError, ValueError):
    def __init__(self) -> None:
        super().__init__("cursor is not valid: pass the next_cursor of a previous page")


def encode_cursor(created_at: datetime, instance_id: UUID) -> str:
    """Opaque page cursor: the sort key of the last item of a page."""
    raw = json.dumps({"t": created_at.isoformat(), "i": str(instance_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = datetime.fromisoformat(data["t"])
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, UUID(data["i"])
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidCursor() from None


def _instance(row: DictRow) -> InstanceMetadata:
    # tolerant: a newer version may have written JSON fields (config, password ref) we do not know
    return load_stored(InstanceMetadata, row)


#: constraint names the schema's lifecycle trigger raises check_violation with (migration 0004)
_DELETED_IS_FINAL = "instances_deleted_is_final"
_STATE_TRANSITION = "instances_state_transition"


@contextmanager
def _refusals(instance_id: UUID) -> Iterator[None]:
    """Turn the lifecycle trigger's refusal of a write to a deleted row into ``InstanceDeleted``."""
    try:
        yield
    except errors.CheckViolation as exc:
        if exc.diag.constraint_name == _DELETED_IS_FINAL:
            raise InstanceDeleted(instance_id) from None
        raise


class MetadataRepository:
    """Async access to the CMS tables in ``schema`` (created by ``toygres.cms_migrations.migrate_cms``)."""

    def __init__(
        self,
        source: AsyncConnectionPool[Any] | psycopg.AsyncConnection[Any],
        *,
        schema: str = "toygres",
    ) -> None:
        self._source = source
        self._lock = asyncio.Lock()
        self.schema = schema
        self._instances = sql.Identifier(schema, "instances")
        self._checks = sql.Identifier(schema, "health_checks")
        self._state_type = sql.Identifier(schema, "instance_state")

    # -- plumbing -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
        """A dict-row cursor inside one transaction (committed on success, rolled back on error)."""
        if isinstance(self._source, AsyncConnectionPool):
            async with self._source.connection() as conn:
                async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    yield cur
        else:
            conn = self._source
            async with self._lock:
                async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    yield cur

    def _q(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(
            instances=self._instances, checks=self._checks, state=self._state_type
        )

    async def _fetch_instance(self, cur: psycopg.AsyncCursor[DictRow], instance_id: UUID) -> InstanceMetadata:
        await cur.execute(self._q("SELECT * FROM {instances} WHERE id = %s"), (instance_id,))
        row = await cur.fetchone()
        if row is None:
            raise InstanceNotFound(instance_id)
        return _instance(row)

    async def _update_returning(self, template: str, params: dict[str, Any]) -> InstanceMetadata:
        with _refusals(params["id"]):
            async with self._cursor() as cur:
                await cur.execute(self._q(template), params)
                row = await cur.fetchone()
        if row is None:
            raise InstanceNotFound(params["id"])
        return _instance(row)

    # -- the per-instance lock -----------------------------------------------------------------

    @asynccontextmanager
    async def instance_lock(self, instance_id: UUID | str) -> AsyncIterator[InstanceMetadata | None]:
        """Hold the instance's lock for the block; yields its row as read under the lock (or None).

        Every change a runtime makes to an instance (deploy, delete, orphan removal) runs inside
        this lock, so a delete waits for a deploy in flight and a deploy that comes later reads the
        ``deleting`` state the delete wrote before it. It lives in PostgreSQL because the instances
        of one control plane are changed from many processes and hosts (Functions workers).

        A transaction-level advisory lock: it ends with the block however the block ends (an
        exception, a cancelled task, a dropped connection), so a pooled connection never keeps
        it. Keyed by the id's text, so ids that are not UUIDs (hand-made objects) lock too.
        """
        key = str(instance_id)
        async with self._cursor() as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (INSTANCE_LOCK_CLASS, key))
            try:
                uuid = UUID(key)
            except ValueError:
                yield None
                return
            await cur.execute(self._q("SELECT * FROM {instances} WHERE id = %s"), (uuid,))
            row = await cur.fetchone()
            yield None if row is None else _instance(row)

    # -- instances ----------------------------------------------------------------------------

    async def create_instance(
        self, config: DeploymentConfig, *, create_orchestration_id: str | None = None
    ) -> InstanceMetadata:
        """Record a new instance in state ``creating``, with the id its health monitor will have.

        The monitor id is deterministic and recorded up front, so no reconciler pass ever sees a
        running instance without one (and starts a second monitor in that gap).
        Repeating the call with the same ``config.instance_id`` returns the existing row.
        Raises ``DuplicateInstanceName`` while another non-deleted instance has the name.
        """
        params = {
            "id": config.instance_id,
            "name": config.name,
            "k8s_name": config.k8s_name,
            "runtime": config.runtime.value,
            "postgres_version": config.postgres_version,
            "image": config.image,
            "storage_size": config.storage_size,
            "storage_class": config.storage_class,
            "resources": Jsonb(config.resources.model_dump(mode="json")),
            "service_type": config.service_type.value,
            "k8s_namespace": config.namespace,
            "password_ref": Jsonb(config.password_ref.model_dump(mode="json")),
            "database": config.database,
            "username": config.username,
            "create_orchestration_id": create_orchestration_id,
            "health_monitor_id": health_monitor_id(config.instance_id),
            "deployment_config": Jsonb(config.model_dump(mode="json")),
        }
        columns = list(params)
        query = sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT (id) DO NOTHING RETURNING *"
        ).format(
            table=self._instances,
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        )
        try:
            async with self._cursor() as cur:
                await cur.execute(query, params)
                row = await cur.fetchone()
                if row is None:  # the id exists: a retried call
                    existing = await self._fetch_instance(cur, config.instance_id)
                    if existing.name != config.name or existing.k8s_name != config.k8s_name:
                        raise MetadataError(
                            f"instance id {config.instance_id} is already used by instance {existing.name!r}"
                        )
                    return existing
                return _instance(row)
        except errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "instances_name_live_key":
                raise DuplicateInstanceName(config.name) from None
            raise MetadataError(f"instance {config.name!r} conflicts with an existing instance") from exc

    async def get_instance(self, instance_id: UUID) -> InstanceMetadata | None:
        async with self._cursor() as cur:
            await cur.execute(self._q("SELECT * FROM {instances} WHERE id = %s"), (instance_id,))
            row = await cur.fetchone()
        return None if row is None else _instance(row)

    async def get_instances(self, instance_ids: Iterable[UUID]) -> dict[UUID, InstanceMetadata]:
        """The rows of these ids that exist (any state), by id."""
        ids = sorted(set(instance_ids))
        if not ids:
            return {}
        async with self._cursor() as cur:
            await cur.execute(self._q("SELECT * FROM {instances} WHERE id = ANY(%s)"), (ids,))
            rows = await cur.fetchall()
        return {instance.id: instance for instance in map(_instance, rows)}

    async def namespaces_in_use(self) -> list[str]:
        """Every Kubernetes namespace an instance was ever placed in (where orphans may hide)."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "SELECT DISTINCT k8s_namespace FROM {instances} WHERE k8s_namespace IS NOT NULL"
                    " ORDER BY 1"
                )
            )
            rows = await cur.fetchall()
        return [str(row["k8s_namespace"]) for row in rows]

    async def get_instance_by_name(self, name: str) -> InstanceMetadata | None:
        """The instance that holds this user-facing name (not deleted, not a failed create), if any."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "SELECT * FROM {instances} WHERE name = %s AND deleted_at IS NULL AND NOT name_released"
                ),
                (name,),
            )
            row = await cur.fetchone()
        return None if row is None else _instance(row)

    async def get_instance_by_operation_id(self, operation_id: str) -> InstanceMetadata | None:
        """The instance whose create or delete orchestration has this id."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "SELECT * FROM {instances} WHERE create_orchestration_id = %(op)s "
                    "UNION ALL SELECT * FROM {instances} WHERE delete_orchestration_id = %(op)s LIMIT 1"
                ),
                {"op": operation_id},
            )
            row = await cur.fetchone()
        return None if row is None else _instance(row)

    async def list_instances(
        self,
        state: InstanceState | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        include_deleted: bool = False,
    ) -> ListInstancesResponse:
        """Newest first, keyset-paginated on (created_at, id): pages stay stable under inserts.

        Deleted instances are left out unless ``include_deleted`` or ``state=deleted``.
        """
        query, params = self.list_query(state, limit, cursor, include_deleted=include_deleted)
        async with self._cursor() as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        items = [_instance(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return ListInstancesResponse(items=items, next_cursor=next_cursor)

    async def list_instances_in_states(self, states: Iterable[InstanceState]) -> list[InstanceMetadata]:
        """Every instance in one of ``states``, oldest first (the reconciler's scans)."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q("SELECT * FROM {instances} WHERE state = ANY(%s::{state}[]) ORDER BY created_at, id"),
                ([s.value for s in states],),
            )
            rows = await cur.fetchall()
        return [_instance(r) for r in rows]

    def list_query(
        self,
        state: InstanceState | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        include_deleted: bool = False,
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The SQL and parameters of one :meth:`list_instances` page (one row more than ``limit``,
        to tell whether another page follows); public so its plan can be checked with EXPLAIN."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        conditions: list[sql.Composable] = [sql.SQL("TRUE")]
        params: dict[str, Any] = {"limit": limit + 1}
        if state is not None:
            # the enum itself, no cast on the column: instances_state_page_idx applies
            conditions.append(sql.SQL("state = %(state)s::{state}").format(state=self._state_type))
            params["state"] = state.value
        elif not include_deleted:
            conditions.append(sql.SQL("deleted_at IS NULL"))
        if cursor is not None:
            params["c_at"], params["c_id"] = decode_cursor(cursor)
            conditions.append(sql.SQL("(created_at, id) < (%(c_at)s, %(c_id)s)"))
        query = sql.SQL(
            "SELECT * FROM {table} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
        ).format(table=self._instances, where=sql.SQL(" AND ").join(conditions))
        return query, params

    async def list_running_instances(self) -> list[InstanceMetadata]:
        """Every instance in state ``running`` (the reconciler checks each has a live monitor)."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q("SELECT * FROM {instances} WHERE state = 'running' ORDER BY created_at, id")
            )
            rows = await cur.fetchall()
        return [_instance(r) for r in rows]

    async def update_state(
        self,
        instance_id: UUID,
        state: InstanceState,
        *,
        reason: str | None = None,
        expected_from: Iterable[InstanceState] | None = None,
    ) -> InstanceMetadata:
        """Compare-and-set the state; returns the instance as it is afterwards.

        The change applies only if the current state is in ``expected_from`` (default: the states
        ``ALLOWED_TRANSITIONS`` lets reach ``state``); ``deleted`` is never left. If the instance is
        already in ``state`` nothing is written and the row is returned, so a retried activity is
        harmless. Otherwise raises ``InvalidStateTransition`` (or ``InstanceNotFound``). ``reason``
        is stored as the failure reason; moving to ``deleted`` stamps ``deleted_at``, which frees
        the name.
        """
        # a caller may narrow the machine, never widen it (the schema's trigger refuses that too)
        sources = allowed_predecessors(state)
        if expected_from is not None:
            sources &= frozenset(expected_from)
        params = {
            "id": instance_id,
            "state": state.value,
            "target": state.value,
            "reason": reason,
            "deleting": state is InstanceState.DELETED,
            "sources": sorted(s.value for s in sources),
        }
        try:
            return await self._update_state(instance_id, state, params)
        except errors.CheckViolation as exc:
            if exc.diag.constraint_name not in (_DELETED_IS_FINAL, _STATE_TRANSITION):
                raise
            current = await self.get_instance(instance_id)
            if current is None:
                raise InstanceNotFound(instance_id) from None
            raise InvalidStateTransition(instance_id, current.state, state) from None

    async def _update_state(
        self, instance_id: UUID, state: InstanceState, params: dict[str, Any]
    ) -> InstanceMetadata:
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "UPDATE {instances} SET state = %(state)s,"
                    " failure_reason = COALESCE(%(reason)s::text, failure_reason),"
                    " deleted_at = CASE WHEN %(deleting)s THEN COALESCE(deleted_at, now()) ELSE NULL END"
                    " WHERE id = %(id)s AND state::text <> %(target)s::text"
                    " AND state::text = ANY(%(sources)s::text[])"
                    " RETURNING *"
                ),
                params,
            )
            row = await cur.fetchone()
            if row is not None:
                return _instance(row)
            current = await self._fetch_instance(cur, instance_id)
        if current.state is state:
            return current
        raise InvalidStateTransition(instance_id, current.state, state)

    async def mark_deleted(self, instance_id: UUID) -> InstanceMetadata:
        """Move the instance from ``deleting`` to ``deleted`` (idempotent); its name becomes free."""
        return await self.update_state(instance_id, InstanceState.DELETED)

    async def set_connection_info(
        self,
        instance_id: UUID,
        *,
        host: str,
        port: int,
        database: str | None = None,
        username: str | None = None,
    ) -> InstanceMetadata:
        """Record where the instance answers (no password: it stays behind ``password_ref``)."""
        return await self._update_returning(
            "UPDATE {instances} SET host = %(host)s, port = %(port)s,"
            " database = COALESCE(%(database)s::text, database),"
            " username = COALESCE(%(username)s::text, username)"
            " WHERE id = %(id)s RETURNING *",
            {"id": instance_id, "host": host, "port": port, "database": database, "username": username},
        )

    async def set_health_monitor_id(
        self, instance_id: UUID, orchestration_id: str | None
    ) -> InstanceMetadata:
        return await self._update_returning(
            "UPDATE {instances} SET health_monitor_id = %(op)s WHERE id = %(id)s RETURNING *",
            {"id": instance_id, "op": orchestration_id},
        )

    async def set_create_orchestration_id(self, instance_id: UUID, orchestration_id: str) -> InstanceMetadata:
        return await self._update_returning(
            "UPDATE {instances} SET create_orchestration_id = %(op)s WHERE id = %(id)s RETURNING *",
            {"id": instance_id, "op": orchestration_id},
        )

    async def set_delete_orchestration_id(self, instance_id: UUID, orchestration_id: str) -> InstanceMetadata:
        return await self._update_returning(
            "UPDATE {instances} SET delete_orchestration_id = %(op)s WHERE id = %(id)s RETURNING *",
            {"id": instance_id, "op": orchestration_id},
        )

    async def set_deployment_config(
        self, instance_id: UUID, config: DeploymentConfig
    ) -> InstanceMetadata | None:
        """Record a changed deployment (a new pinned image) of a *running* instance; None otherwise.

        Written before the change is applied (intent first), so whatever re-applies an instance from
        its record (a retry, drift correction) moves it forward, never back to the old image.
        """
        if config.instance_id != instance_id:
            raise ValueError("the config belongs to another instance")
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "UPDATE {instances} SET deployment_config = %(config)s, image = %(image)s"
                    " WHERE id = %(id)s AND state = 'running' RETURNING *"
                ),
                {"id": instance_id, "config": Jsonb(config.model_dump(mode="json")), "image": config.image},
            )
            row = await cur.fetchone()
        return None if row is None else _instance(row)

    async def claim_delete_operation(self, instance_id: UUID, previous: str | None, operation_id: str) -> str:
        """Compare-and-set the delete operation from ``previous`` to ``operation_id``.

        Returns the id recorded afterwards: ``operation_id``, or whatever a concurrent caller
        recorded first (with deterministic ids, the same one). Raises ``InstanceNotFound`` and
        ``InstanceDeleted``.
        """
        with _refusals(instance_id):
            return await self._claim_delete_operation(instance_id, previous, operation_id)

    async def _claim_delete_operation(
        self, instance_id: UUID, previous: str | None, operation_id: str
    ) -> str:
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "UPDATE {instances} SET delete_orchestration_id = %(op)s WHERE id = %(id)s"
                    " AND delete_orchestration_id IS NOT DISTINCT FROM %(previous)s"
                    " RETURNING delete_orchestration_id"
                ),
                {"id": instance_id, "op": operation_id, "previous": previous},
            )
            row = await cur.fetchone()
            if row is None:
                row = (await self._fetch_instance(cur, instance_id)).model_dump()
        recorded = row["delete_orchestration_id"]
        return str(recorded) if recorded is not None else operation_id

    # -- health checks ------------------------------------------------------------------------

    async def record_health_check(self, instance_id: UUID, result: HealthCheckResult) -> HealthCheckRecord:
        """Store one probe and update the instance's last-health fields, in one transaction.

        Recording the same probe (same ``checked_at``) again is a no-op returning the stored row;
        an older probe arriving late is stored but does not overwrite newer last-health fields.
        """
        params = {
            "instance_id": instance_id,
            "checked_at": result.checked_at,
            "status": result.status.value,
            "latency_ms": result.latency_ms,
            "server_version": result.server_version,
            "message": result.message,
        }
        try:
            with _refusals(instance_id):
                return await self._record_health_check(params)
        except errors.ForeignKeyViolation:
            raise InstanceNotFound(instance_id) from None

    async def _record_health_check(self, params: dict[str, Any]) -> HealthCheckRecord:
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "INSERT INTO {checks} (instance_id, checked_at, status, latency_ms, server_version,"
                    " message) VALUES (%(instance_id)s, %(checked_at)s, %(status)s, %(latency_ms)s,"
                    " %(server_version)s, %(message)s)"
                    " ON CONFLICT (instance_id, checked_at) DO NOTHING RETURNING *"
                ),
                params,
            )
            row = await cur.fetchone()
            if row is None:
                await cur.execute(
                    self._q(
                        "SELECT * FROM {checks} WHERE instance_id = %(instance_id)s"
                        " AND checked_at = %(checked_at)s"
                    ),
                    params,
                )
                row = await cur.fetchone()
                assert row is not None
                return HealthCheckRecord.model_validate(row)
            await cur.execute(
                self._q(
                    "UPDATE {instances} SET health_status = %(status)s,"
                    " last_health_check_at = %(checked_at)s, last_health_message = %(message)s,"
                    " last_health_latency_ms = %(latency_ms)s"
                    " WHERE id = %(instance_id)s"
                    " AND (last_health_check_at IS NULL OR last_health_check_at <= %(checked_at)s)"
                ),
                params,
            )
            return HealthCheckRecord.model_validate(row)

    async def list_health_checks(self, instance_id: UUID, limit: int = 20) -> list[HealthCheckRecord]:
        """The latest ``limit`` checks of an instance, newest first."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        async with self._cursor() as cur:
            await cur.execute(
                self._q("SELECT * FROM {checks} WHERE instance_id = %s ORDER BY checked_at DESC LIMIT %s"),
                (instance_id, limit),
            )
            rows = await cur.fetchall()
        return [HealthCheckRecord.model_validate(r) for r in rows]

    async def prune_health_checks(self, older_than: datetime, limit: int = 10_000) -> int:
        """Retention: delete up to ``limit`` checks taken before ``older_than``; returns how many went.

        Bounded per call, so one pass never holds a long transaction; call again while it returns
        ``limit``.
        """
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "DELETE FROM {checks} WHERE id IN"
                    " (SELECT id FROM {checks} WHERE checked_at < %s LIMIT %s)"
                ),
                (older_than, limit),
            )
            return cur.rowcount

    async def prune_deleted_instances(
        self, older_than: datetime, limit: int = 1000
    ) -> list[InstanceMetadata]:
        """Retention: remove up to ``limit`` instances deleted before ``older_than`` (their health
        checks go with them); returns the removed rows, whose operations the caller may purge."""
        async with self._cursor() as cur:
            await cur.execute(
                self._q(
                    "DELETE FROM {instances} WHERE id IN (SELECT id FROM {instances}"
                    " WHERE deleted_at IS NOT NULL AND deleted_at < %s ORDER BY deleted_at LIMIT %s)"
                    " RETURNING *"
                ),
                (older_than, limit),
            )
            rows = await cur.fetchall()
        return [_instance(r) for r in rows]
