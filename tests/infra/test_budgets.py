"""Numbers that must fit together: connections through PgBouncer, and host.json against Flex Consumption.

Connections (docs/deploy.md, "Connections at scale"): each Function App instance runs one Python
worker with two pools (metadata, engine) of ``databasePoolSize`` connections, all to PgBouncer
(port 6432). PgBouncer accepts ``pgbouncer.max_client_conn`` clients and multiplexes them onto at
most ``pgbouncer.default_pool_size`` server connections for the (identity, toygres) pair, which
must fit in the server's ``max_connections`` minus the 15 Azure reserves minus a reserve of direct
(5432) connections for migrations and operators.

Timeouts: Flex Consumption's ``functionTimeout`` defaults to 30 minutes and is unbounded, but an
instance being scaled in gets at most 60 minutes to finish; HTTP responses must come within 230 s
(Azure Load Balancer idle timeout). Budgets only stop a drain from fetching more work, so each must
leave room for the longest item before ``functionTimeout``; the sweep runs every minute.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from functions.config import SWEEP_SCHEDULE, FunctionsSettings
from tests.infra.bicep import MAIN, ROOT, BicepFile, decorator, evaluate

#: Azure Database for PostgreSQL Flexible Server default max_connections per SKU
#: (https://learn.microsoft.com/azure/postgresql/flexible-server/concepts-limits)
MAX_CONNECTIONS = {
    "Standard_D2ds_v5": 859,
    "Standard_D4ds_v5": 1718,
    "Standard_D8ds_v5": 3437,
    "Standard_D16ds_v5": 5000,
    "Standard_E2ds_v5": 1718,
    "Standard_E4ds_v5": 3437,
}
AZURE_RESERVED_CONNECTIONS = 15
PGBOUNCER_MAX_CLIENT_CONN_LIMIT = 50000
PGBOUNCER_DEFAULT_POOL_SIZE_LIMIT = 4950
POOLS_PER_INSTANCE = 2  # metadata + engine, one worker process per instance

FLEX_SCALE_IN_GRACE = timedelta(minutes=60)
#: the longest single orchestration turn or activity we expect once a budget is spent
LONGEST_ITEM = timedelta(minutes=3)


def main_file() -> BicepFile:
    return BicepFile.load(MAIN)


def budget(scope: dict[str, int]) -> dict[str, int]:
    main = main_file()
    names = ("functionClientConnections", "pgbouncerMaxClientConnections", "pgbouncerPoolSize")
    return {n: evaluate(main.variables[n]["value"], scope, main) for n in names}


def defaults() -> dict[str, int]:
    main = main_file()
    return {
        name: spec["default"]
        for name, spec in main.params.items()
        if spec["type"] == "int" and isinstance(spec.get("default"), int)
    }


def test_default_max_connections_is_the_default_skus() -> None:
    main = main_file()
    sku = main.params["postgresSkuName"]["default"]
    assert main.params["postgresMaxConnections"]["default"] == MAX_CONNECTIONS[sku]
    values = json.loads((MAIN.parent / "main.parameters.json").read_text())["parameters"]
    assert values["postgresMaxConnections"]["value"] == MAX_CONNECTIONS[values["postgresSkuName"]["value"]]


@pytest.mark.parametrize("case", ["defaults", "largest", "parameters file"])
def test_connections_fit(case: str) -> None:
    main = main_file()
    scope = defaults()
    if case == "largest":  # every knob at its @maxValue
        for name in ("maximumInstanceCount", "databasePoolSize", "pgbouncerClientHeadroom"):
            scope[name] = decorator(main.params[name], "max_value")
    if case == "parameters file":
        values = json.loads((MAIN.parent / "main.parameters.json").read_text())["parameters"]
        scope.update({n: v["value"] for n, v in values.items() if isinstance(v["value"], int)})
    b = budget(scope)
    clients = scope["maximumInstanceCount"] * POOLS_PER_INSTANCE * scope["databasePoolSize"]
    assert b["functionClientConnections"] == clients
    assert clients <= b["pgbouncerMaxClientConnections"] <= PGBOUNCER_MAX_CLIENT_CONN_LIMIT
    assert 1 <= b["pgbouncerPoolSize"] <= PGBOUNCER_DEFAULT_POOL_SIZE_LIMIT
    server_side = b["pgbouncerPoolSize"] + AZURE_RESERVED_CONNECTIONS + scope["directConnectionReserve"]
    assert server_side <= scope["postgresMaxConnections"]


def test_pool_size_is_capped_by_the_server() -> None:
    scope = defaults() | {"postgresMaxConnections": 60, "pgbouncerServerPoolSize": 50}
    b = budget(scope)
    assert b["pgbouncerPoolSize"] == 60 - AZURE_RESERVED_CONNECTIONS - scope["directConnectionReserve"]


def test_burstable_skus_are_not_allowed() -> None:
    """The built-in PgBouncer does not run on Burstable servers."""
    tier = main_file().params["postgresSkuTier"]
    assert "Burstable" not in decorator(tier, "allowed")


def _host() -> dict[str, object]:
    return json.loads((ROOT / "host.json").read_text())  # type: ignore[no-any-return]


def _timespan(text: str) -> timedelta:
    hours, minutes, seconds = (int(x) for x in text.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def test_function_timeout_fits_flex_consumption() -> None:
    timeout = _timespan(str(_host()["functionTimeout"]))
    assert timedelta(0) < timeout <= FLEX_SCALE_IN_GRACE
    bundle = _host()["extensionBundle"]
    assert isinstance(bundle, dict) and re.match(r"^\[4\.", bundle["version"]), (
        "Flex needs bundle [4.0.0, 5.0.0)"
    )


def test_budgets_leave_room_before_the_timeout() -> None:
    timeout = _timespan(str(_host()["functionTimeout"]))
    settings = FunctionsSettings()
    for field in ("orchestration_budget_seconds", "activity_budget_seconds"):
        budget_ = timedelta(seconds=getattr(settings, field))
        assert budget_ + LONGEST_ITEM <= timeout, f"{field} leaves no room for a running item"
    sweep = timedelta(seconds=settings.sweep_budget_seconds)
    assert SWEEP_SCHEDULE.startswith("0 */1 "), "the sweep budget below assumes a one-minute schedule"
    assert sweep < timedelta(minutes=1)


def test_hint_redelivery_is_quicker_than_the_timeout() -> None:
    """A hint comes back only when a worker died; it must not wait for a whole function timeout."""
    queues = _host()["extensions"]["queues"]  # type: ignore[index]
    assert _timespan(queues["visibilityTimeout"]) < _timespan(str(_host()["functionTimeout"]))
