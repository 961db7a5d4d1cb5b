"""The HTTP API over a real control plane: engine + metadata on PostgreSQL, local PostgreSQL instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from api.app import create_app
from control_plane.bootstrap import ConfigurationError, open_control_plane
from control_plane.service import ControlPlane
from toygres.pgserver import bundled_major_version

from .plane import local_settings

pytestmark = pytest.mark.postgres

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
async def api(api_plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda: api_plane)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://toygres") as client:
        yield client


async def wait_operation(api: httpx.AsyncClient, location: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(location)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("Completed", "Failed", "Cancelled"):
            return body
        assert time.monotonic() < deadline, f"operation still {body['status']}: {body}"
        await asyncio.sleep(0.3)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


async def test_create_get_list_delete_over_http(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/instances", json={"name": "orders", "password": PASSWORD})
    assert response.status_code == 202, response.text
    created = response.json()
    assert PASSWORD not in response.text
    assert response.headers["location"] == f"/api/operations/{created['operation_id']}"
    assert created["state"] == "creating" and created["name"] == "orders"
    assert "password" in created["password_hint"]

    # a second instance with the same name is refused while the first exists
    dup = await api.post("/api/instances", json={"name": "orders"})
    error = assert_error(dup, 409, "duplicate_name")
    assert error["fields"] == [{"field": "name", "message": "an instance with this name already exists"}]

    operation = await wait_operation(api, response.headers["location"])
    assert operation["status"] == "Completed", operation
    assert operation["kind"] == "create" and operation["instance_id"] == created["instance_id"]

    got = await api.get(f"/api/instances/{created['instance_id']}")
    assert got.status_code == 200
    instance = got.json()
    assert instance["state"] == "running"
    assert instance["connection_string"].startswith("postgresql://postgres@127.0.0.1:")
    assert PASSWORD not in got.text
    assert "deployment_config" not in instance

    listed = await api.get("/api/instances", params={"state": "running"})
    assert [item["id"] for item in listed.json()["items"]] == [created["instance_id"]]
    assert (await api.get("/api/instances", params={"state": "deleted"})).json()["items"] == []

    deleted = await api.delete(f"/api/instances/{created['instance_id']}")
    assert deleted.status_code == 202, deleted.text
    body = deleted.json()
    assert body == {"operation_id": f"delete-{created['instance_id']}", "instance_id": created["instance_id"]}
    assert deleted.headers["location"] == f"/api/operations/{body['operation_id']}"
    # a repeated DELETE while the first is in progress (or done) names the same operation
    again = await api.delete(f"/api/instances/{created['instance_id']}")
    if again.status_code == 202:
        assert again.json()["operation_id"] == body["operation_id"]
    else:
        assert_error(again, 410, "instance_deleted")

    operation = await wait_operation(api, deleted.headers["location"])
    assert operation["status"] == "Completed", operation
    gone = (await api.get(f"/api/instances/{created['instance_id']}")).json()
    assert gone["state"] == "deleted" and gone["deleted_at"] is not None
    assert_error(await api.delete(f"/api/instances/{created['instance_id']}"), 410, "instance_deleted")
    # deleted instances are hidden unless asked for
    assert (await api.get("/api/instances")).json()["items"] == []
    everything = (await api.get("/api/instances", params={"include_deleted": "true"})).json()
    assert [item["id"] for item in everything["items"]] == [created["instance_id"]]


@pytest.mark.parametrize(
    ("body", "field", "phrase"),
    [
        ({"name": "Bad_Name"}, "name", "DNS-1123"),
        ({"name": "ok", "storage_size": "ten gigs"}, "storage_size", "Kubernetes quantity"),
        ({"name": "ok", "storage_size": "100Ti"}, "storage_size", "between 1Gi and 16Ti"),
        ({"name": "ok", "storgae_size": "10Gi"}, "storgae_size", "Extra inputs are not permitted"),
        ({"name": "ok", "postgres_version": "9"}, "postgres_version", "one of 14, 15, 16, 17, 18"),
        ({"name": "ok", "runtime": "docker"}, "runtime", "kubernetes"),
        ({}, "name", "Field required"),
    ],
)
async def test_validation_errors_name_the_field_and_never_echo_the_password(
    api: httpx.AsyncClient, body: dict[str, Any], field: str, phrase: str
) -> None:
    secret = "hunter2-but-longer-" + uuid4().hex
    response = await api.post("/api/instances", json={**body, "password": secret})
    error = assert_error(response, 422, "validation_error")
    fields = {f["field"]: f["message"] for f in error["fields"]}
    assert phrase in fields[field], fields
    assert secret not in response.text
    assert '"input"' not in response.text  # FastAPI's default body would carry the submitted values


async def test_a_rejected_password_is_not_echoed(api: httpx.AsyncClient) -> None:
    for password in ("short-pw", "with\x07bell-character", 12345678901234):
        response = await api.post("/api/instances", json={"name": "ok", "password": password})
        error = assert_error(response, 422, "validation_error")
        assert [f["field"] for f in error["fields"]] == ["password"]
        assert str(password) not in response.text


async def test_malformed_json_and_query_parameters(api: httpx.AsyncClient) -> None:
    broken = await api.post(
        "/api/instances",
        content=b'{"name": "x", "password": "abcdefghijklmn',
        headers={"content-type": "application/json"},
    )
    assert_error(broken, 422, "validation_error")
    assert "abcdefghijklmn" not in broken.text
    bad_queries = [({"limit": 0}, "limit"), ({"state": "sleeping"}, "state"), ({"cursor": "x"}, "cursor")]
    for params, field in bad_queries:
        error = assert_error(await api.get("/api/instances", params=params), 422, "validation_error")
        assert error["fields"][0]["field"] == field


async def test_unknown_ids_are_404_and_malformed_ids_422(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/api/instances/{uuid4()}"), 404, "instance_not_found")
    assert_error(await api.delete(f"/api/instances/{uuid4()}"), 404, "instance_not_found")
    assert_error(await api.get("/api/operations/create-nothing"), 404, "operation_not_found")
    error = assert_error(await api.get("/api/instances/not-a-uuid"), 422, "validation_error")
    assert error["fields"][0]["field"] == "instance_id"
    assert_error(await api.get("/api/nowhere"), 404, "not_found")
    assert_error(await api.put("/api/instances"), 405, "method_not_allowed")


async def test_a_runtime_that_is_not_configured_is_a_clear_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/instances", json={"name": "onk8s", "runtime": "kubernetes"})
    error = assert_error(response, 422, "runtime_not_configured")
    assert "'kubernetes' is not configured" in error["message"] and "local" in error["message"]
    assert error["fields"][0]["field"] == "runtime"
    assert (await api.get("/api/instances")).json()["items"] == []  # nothing was recorded


async def test_a_version_the_runtime_cannot_run_is_a_clear_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/instances", json={"name": "old", "postgres_version": "14"})
    error = assert_error(response, 422, "version_not_available")
    assert error["fields"] == [{"field": "postgres_version", "message": error["message"]}]
    assert f"runs PostgreSQL {bundled_major_version()}" in error["message"]
    assert (await api.get("/api/instances")).json()["items"] == []


async def test_health_reports_the_database(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/health")
    assert response.status_code == 200
    expected = {"status": "ok", "database": "ok", "runtimes": ["local"], "default_runtime": "local"}
    assert response.json() == expected


async def test_health_is_503_when_the_database_is_unreachable(pg_dsn: str, pg_tmp_dir: Path) -> None:
    settings = local_settings(pg_tmp_dir / "instances", database_url=pg_dsn)
    async with open_control_plane(settings) as closed_later:
        app = create_app(lambda: closed_later)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/api/health")).status_code == 200
    # the plane's pools are closed now: nothing reaches the database any more
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/api/health")
    assert_error(response, 503, "database_unreachable")


async def test_a_failing_plane_provider_is_503_with_the_settings_to_fix() -> None:
    def not_configured() -> ControlPlane:
        raise ConfigurationError("TOYGRES_DATABASE_URL is not set")

    app = create_app(not_configured)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://toygres") as client:
        error = assert_error(await client.get("/api/instances"), 503, "not_configured")
        assert "TOYGRES_DATABASE_URL" in error["message"]
        docs = await client.get("/api/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        schema = (await client.get("/api/openapi.json")).json()
        assert {
            "/api/instances",
            "/api/instances/{instance_id}",
            "/api/operations/{operation_id}",
            "/api/health",
        } <= set(schema["paths"])


# -- hardening: CA, parameters, catalog -------------------------------------------------------


async def test_ca_of_a_local_instance_is_a_clear_404(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/api/instances/{uuid4()}/ca"), 404, "instance_not_found")
    created = (await api.post("/api/instances", json={"name": "plain"})).json()
    error = assert_error(await api.get(f"/api/instances/{created['instance_id']}/ca"), 404, "tls_not_served")
    assert "does not serve TLS" in error["message"]
    instance = (await api.get(f"/api/instances/{created['instance_id']}")).json()
    assert (
        "local runtime only" in instance["connection_security"]
        and "sslmode=disable" in instance["connection_security"]
    )


async def test_parameters_and_sources_are_validated_naming_them(api: httpx.AsyncClient) -> None:
    error = assert_error(
        await api.post("/api/instances", json={"name": "tuned", "server_parameters": {"fsync": "off"}}),
        422,
        "validation_error",
    )
    assert error["fields"][0]["field"] == "server_parameters"
    assert "server_parameters.fsync is not a settable parameter" in error["fields"][0]["message"]
    error = assert_error(
        await api.post(
            "/api/instances", json={"name": "tuned", "allowed_sources": [{"cidr": "300.0.0.0/8"}]}
        ),
        422,
        "validation_error",
    )
    assert error["fields"][0]["field"] == "allowed_sources.0.cidr"


async def test_image_catalog_and_a_rollout_with_nothing_to_roll(api: httpx.AsyncClient) -> None:
    catalog = (await api.get("/api/image-catalog")).json()
    assert catalog["repository"] == "postgres" and sorted(catalog["images"]) == ["14", "15", "16", "17", "18"]
    assert all("@sha256:" in image for image in catalog["images"].values())
    response = await api.post("/api/image-catalog/rollouts")
    assert response.status_code == 202, response.text
    operation = await wait_operation(api, response.headers["location"])
    assert operation["status"] == "Completed" and operation["kind"] == "image-rollout"
    assert operation["custom_status"]["rolled"] == []  # local instances run their bundled binaries
