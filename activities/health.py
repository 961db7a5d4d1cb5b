"""The HealthCheck activity: connect to the instance like a client would and time a query."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from durable_engine import ActivityContext
from toygres.models import HealthCheckResult, HealthStatus
from toygres.runtimes.base import CredentialError, DeployError, InstanceNotFound
from toygres.runtimes.capabilities import TlsRuntime

from .deps import ActivityDeps, instance_spec, load_config
from .errors import PlatformCredentialError
from .tls_probe import tls_connect_kwargs


async def health_check(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    """Never raises for an unhealthy instance: "unhealthy" is a result to record, not a failure.

    A TLS instance is checked as its clients connect: ``sslmode=verify-full`` against the
    deployment's CA and the instance's server name, and the session must really be encrypted.

    Raises ``PlatformCredentialError`` when the control plane cannot authenticate to the platform:
    the monitor retries, then records "unknown" (the instance may be fine).
    """
    config = load_config(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    checked_at = datetime.now(UTC)

    def result(status: HealthStatus, message: str, **extra: Any) -> dict[str, Any]:
        model = HealthCheckResult(status=status, checked_at=checked_at, message=message, **extra)
        return model.model_dump(mode="json")

    try:
        observed = await asyncio.to_thread(runtime.status, spec)
        password = await asyncio.to_thread(runtime.read_password, spec)
        ca_pem = None
        if config.tls is not None:
            if not isinstance(runtime, TlsRuntime):
                return result(HealthStatus.UNHEALTHY, f"the {config.runtime.value} runtime cannot serve TLS")
            ca_pem = await asyncio.to_thread(runtime.ca_certificate)
    except CredentialError as exc:
        # not the instance's fault: a failure to retry, and then to record as "unknown"
        raise PlatformCredentialError(str(exc)) from None
    except (DeployError, InstanceNotFound) as exc:
        return result(HealthStatus.UNHEALTHY, f"cannot inspect the instance: {exc}")
    if not observed.exists:
        return result(HealthStatus.UNHEALTHY, "the instance's resources do not exist")
    if observed.endpoint is None:
        return result(HealthStatus.UNHEALTHY, f"no endpoint ({observed.phase}: {observed.message})")
    if ca_pem is not None:
        target = tls_connect_kwargs(config, observed.endpoint, ca_pem)
    else:
        target = {"host": observed.endpoint.host, "port": observed.endpoint.port}
    started = time.perf_counter()
    try:
        async with await psycopg.AsyncConnection.connect(
            **target,
            user=config.username,
            password=password,
            dbname=config.database,
            connect_timeout=max(int(deps.health_check_timeout), 1),
        ) as conn:
            cur = await conn.execute(
                "SELECT current_setting('server_version'), s.ssl, s.version"
                " FROM pg_stat_ssl AS s WHERE s.pid = pg_backend_pid()"
            )
            row = await cur.fetchone()
    except (psycopg.Error, OSError) as exc:
        # the message of a failed connection names host and user, never the password
        return result(HealthStatus.UNHEALTHY, f"connection failed: {type(exc).__name__}: {exc}".strip()[:500])
    latency_ms = (time.perf_counter() - started) * 1000
    version, encrypted, protocol = (str(row[0]), bool(row[1]), row[2]) if row else (None, False, None)
    if ca_pem is not None and not encrypted:
        return result(HealthStatus.UNHEALTHY, "the connection was not encrypted", server_version=version)
    message = f"ok ({protocol}, certificate verified)" if encrypted and ca_pem is not None else "ok"
    return result(HealthStatus.HEALTHY, message, latency_ms=round(latency_ms, 2), server_version=version)
