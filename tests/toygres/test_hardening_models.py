"""The hardening's domain rules: ingress sources, settable server parameters, derived tuning, the
image catalog, TLS in the deployment config, and the settings that feed them. Each rule accepts good
input and refuses bad input with a message that names the field or the parameter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from toygres.deployment_planner import PlacementError, build_deployment_config
from toygres.image_catalog import CatalogError, ImageCatalog, load_image_catalog
from toygres.models import (
    CreateInstanceRequest,
    DeploymentConfig,
    RuntimeKind,
    derived_parameters,
    effective_parameters,
    validation_errors,
)
from toygres.settings import Settings
from toygres.x509 import (
    certificate_info,
    issue_server_certificate,
    issued_by,
    key_matches,
    new_certificate_authority,
)


def _messages(**body: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        CreateInstanceRequest(name="db", **body)
    return validation_errors(info.value)


# -- allowed sources ------------------------------------------------------------------------------


def test_allowed_sources_accept_cidrs_and_selectors() -> None:
    request = CreateInstanceRequest(
        name="db",
        allowed_sources=[
            {"cidr": "10.1.2.3/16"},
            {"cidr": "2001:db8::/32"},
            {
                "namespace_selector": {"team": "web", "example.com/tier": "frontend"},
                "pod_selector": {"app": "api"},
            },
        ],
    )
    assert request.allowed_sources[0].cidr == "10.1.0.0/16"  # normalised
    assert request.allowed_sources[2].pod_selector == {"app": "api"}


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ({"cidr": "10.0.0.0/33"}, "allowed_sources.cidr must be a CIDR range"),
        ({"cidr": "not-an-address"}, "allowed_sources.cidr must be a CIDR range"),
        ({}, "exactly one of 'cidr' and 'namespace_selector'"),
        ({"cidr": "10.0.0.0/8", "namespace_selector": {"a": "b"}}, "exactly one of"),
        ({"namespace_selector": {}}, "an empty selector would match every namespace"),
        ({"namespace_selector": {"bad key!": "x"}}, "is not a label key"),
        ({"namespace_selector": {"team": "no spaces"}}, "is not a label value"),
        (
            {"cidr": "10.0.0.0/8", "pod_selector": {"app": "api"}},
            "'pod_selector' narrows a 'namespace_selector'",
        ),
        ({"cidr": "10.0.0.0/8", "port": 5432}, "Extra inputs are not permitted"),
    ],
)
def test_allowed_sources_refuse_bad_entries(source: dict[str, Any], says: str) -> None:
    errors = _messages(allowed_sources=[source])
    assert errors[0]["field"].startswith("allowed_sources.0"), errors
    assert says in errors[0]["message"]


def test_allowed_sources_are_bounded() -> None:
    errors = _messages(allowed_sources=[{"cidr": f"10.{i}.0.0/16"} for i in range(21)])
    assert errors[0]["field"] == "allowed_sources" and "at most 20" in errors[0]["message"]


# -- server parameters ----------------------------------------------------------------------------


def test_settable_parameters_are_normalised() -> None:
    request = CreateInstanceRequest(
        name="db",
        server_parameters={
            "work_mem": "16MB",
            "maintenance_work_mem": 262144,
            "statement_timeout": "30s",
            "log_min_duration_statement": -1,
            "log_statement": "DDL",
            "jit": False,
            "track_io_timing": "on",
            "random_page_cost": 1.1,
            "timezone": "Europe/Berlin",
            "Max_Connections": "250",
        },
    )
    assert request.server_parameters == {
        "work_mem": "16384kB",
        "maintenance_work_mem": "262144kB",
        "statement_timeout": "30000ms",
        "log_min_duration_statement": "-1ms",
        "log_statement": "ddl",
        "jit": "off",
        "track_io_timing": "on",
        "random_page_cost": "1.1",
        "timezone": "Europe/Berlin",
        "max_connections": "250",
    }


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        (
            {"shared_preload_libraries": "pg_cron"},
            "server_parameters.shared_preload_libraries is not a settable",
        ),
        ({"ssl": "off"}, "server_parameters.ssl is not a settable parameter"),
        ({"hba_file": "/tmp/x"}, "server_parameters.hba_file is not a settable parameter"),
        ({"work_mem": "16XB"}, "server_parameters.work_mem must be a memory size"),
        ({"work_mem": "4TB"}, "server_parameters.work_mem must be a memory size between 64kB and 2GB"),
        ({"max_connections": 10}, "server_parameters.max_connections must be an integer between 25 and 5000"),
        ({"max_connections": True}, "server_parameters.max_connections must be an integer"),
        ({"statement_timeout": "2d"}, "server_parameters.statement_timeout must be a duration"),
        (
            {"log_statement": "everything"},
            "server_parameters.log_statement must be one of none, ddl, mod, all",
        ),
        ({"jit": "maybe"}, "server_parameters.jit must be on or off"),
        ({"random_page_cost": "nan"}, "server_parameters.random_page_cost must be a number"),
        ({"timezone": "Mars/Olympus_Mons"}, "server_parameters.timezone must be an IANA time zone"),
        ({"timezone": "../../etc/passwd"}, "server_parameters.timezone must be an IANA time zone"),
    ],
)
def test_parameters_are_refused_naming_the_parameter(parameters: dict[str, Any], says: str) -> None:
    errors = _messages(server_parameters=parameters)
    assert errors[0]["field"] == "server_parameters", errors
    assert says in errors[0]["message"]


def test_derived_parameters_follow_the_memory() -> None:
    small, large = derived_parameters("1Gi"), derived_parameters("64Gi")
    assert small["shared_buffers"] == "262144kB" and small["max_connections"] == "102"
    assert large["shared_buffers"] == f"{16 * 1024 * 1024}kB" and large["max_connections"] == "1000"
    assert large["maintenance_work_mem"] == f"{2 * 1024 * 1024}kB"  # capped at 2 GB
    assert derived_parameters("128Mi")["max_connections"] == "25"  # the floor
    # the caller wins, and work_mem follows the caller's max_connections
    mixed = effective_parameters("1Gi", {"max_connections": "50", "jit": "off"})
    assert mixed["max_connections"] == "50" and mixed["jit"] == "off"
    assert int(mixed["work_mem"].removesuffix("kB")) > int(small["work_mem"].removesuffix("kB"))


# -- image catalog --------------------------------------------------------------------------------


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    return path


def test_the_shipped_catalog_pins_every_version_by_digest() -> None:
    catalog = load_image_catalog()
    assert catalog.versions == ("14", "15", "16", "17", "18")
    for major in catalog.versions:
        reference = catalog.reference(major, "myacr.azurecr.io/postgres")
        assert reference.startswith(f"myacr.azurecr.io/postgres:{major}.") and "@sha256:" in reference


@pytest.mark.parametrize(
    ("images", "says"),
    [
        ({"17": {"tag": "17.6", "digest": "sha256:abc"}}, "images.17.digest: digest must be 'sha256:'"),
        ({"17": {"tag": "17.6"}}, "images.17.digest: Field required"),
        ({"13": {"tag": "13.1", "digest": "sha256:" + "a" * 64}}, "images.13: not a supported major version"),
        (
            {"17": {"tag": "16.4", "digest": "sha256:" + "a" * 64}},
            "tag '16.4' is not a PostgreSQL 17 release",
        ),
        ({}, "images: "),
    ],
)
def test_a_bad_catalog_is_refused_naming_the_entry(tmp_path: Path, images: dict[str, Any], says: str) -> None:
    with pytest.raises(CatalogError) as info:
        load_image_catalog(_write(tmp_path, {"images": images}))
    assert says in str(info.value) and str(tmp_path) in str(info.value)


def test_an_unreadable_catalog_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_image_catalog(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CatalogError, match="not JSON"):
        load_image_catalog(tmp_path / "broken.json")


def test_a_version_without_a_catalog_entry_is_refused(tmp_path: Path) -> None:
    only_16 = ImageCatalog.model_validate(
        {"images": {"16": {"tag": "16.10", "digest": "sha256:" + "1" * 64}}}
    )
    request = CreateInstanceRequest(name="db", postgres_version="17", runtime=RuntimeKind.KUBERNETES)
    with pytest.raises(PlacementError) as info:
        build_deployment_config(request, Settings(), instance_id=uuid.uuid4(), image_catalog=only_16)
    assert info.value.field == "postgres_version" and info.value.code == "version_not_in_catalog"
    assert "no image for PostgreSQL 17 (it lists 16)" in info.value.message
    ok = build_deployment_config(
        request.model_copy(update={"postgres_version": "16"}),
        Settings(),
        instance_id=uuid.uuid4(),
        image_catalog=only_16,
    )
    assert ok.image == f"postgres:16.10@sha256:{'1' * 64}"
    # the local runtime runs its bundled binaries: the catalog does not apply there
    local = build_deployment_config(
        CreateInstanceRequest(name="db", runtime=RuntimeKind.LOCAL),
        Settings(),
        instance_id=uuid.uuid4(),
        image_catalog=only_16,
    )
    assert local.tls is None and "@sha256" not in local.image


# -- TLS in the deployment config -----------------------------------------------------------------


def test_kubernetes_instances_serve_tls_and_local_ones_say_they_do_not() -> None:
    settings = Settings(kubernetes={"namespace": "pg", "cluster_domain": "corp.internal"})  # type: ignore[arg-type]
    instance_id = uuid.UUID("3f2b9c1e-0d4a-4e8b-9a51-7c2d6e8f1a23")
    kube = build_deployment_config(
        CreateInstanceRequest(
            name="orders", runtime=RuntimeKind.KUBERNETES, server_parameters={"jit": "off"}
        ),
        settings,
        instance_id=instance_id,
    )
    assert kube.tls is not None and kube.tls.secret_name == "orders-3f2b9c1e-tls"
    assert kube.tls.server_name == "orders-3f2b9c1e.pg.svc.corp.internal"
    assert kube.tls.dns_names == [
        "orders-3f2b9c1e.pg.svc.corp.internal",
        "orders-3f2b9c1e.pg.svc",
        "orders-3f2b9c1e.pg",
        "orders-3f2b9c1e",
    ]
    assert kube.server_parameters == {"jit": "off"}
    assert kube.connection_uri("orders-3f2b9c1e.pg.svc.corp.internal", 5432) == (
        "postgresql://postgres@orders-3f2b9c1e.pg.svc.corp.internal:5432/postgres?sslmode=verify-full"
    )
    # through a load balancer's IP the name stays the verified host, the IP becomes hostaddr
    assert kube.connection_uri("20.1.2.3", 5432) == (
        "postgresql://postgres@orders-3f2b9c1e.pg.svc.corp.internal:5432/postgres"
        "?hostaddr=20.1.2.3&sslmode=verify-full"
    )
    local = build_deployment_config(
        CreateInstanceRequest(name="scratch", runtime=RuntimeKind.LOCAL), settings, instance_id=instance_id
    )
    assert local.tls is None and local.sslmode == "disable"
    assert local.connection_uri("127.0.0.1", 5544).endswith("@127.0.0.1:5544/postgres?sslmode=disable")


def test_configs_stored_before_the_hardening_still_load() -> None:
    """Rows and histories written by earlier versions have none of the new fields."""
    old = {
        "instance_id": str(uuid.uuid4()),
        "name": "legacy",
        "k8s_name": "legacy-0a1b2c3d",
        "runtime": "kubernetes",
        "namespace": "toygres",
        "postgres_version": "17",
        "image": "postgres:17",
        "storage_size": "10Gi",
        "username": "postgres",
        "password_ref": {"store": "kubernetes-secret", "namespace": "toygres", "name": "legacy-0a1b2c3d"},
    }
    config = DeploymentConfig.model_validate(old)
    assert config.tls is None and config.allowed_sources == [] and config.server_parameters == {}
    assert config.sslmode == "disable"  # it was created without TLS, and says so


# -- settings -------------------------------------------------------------------------------------


def test_settings_for_the_hardening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOYGRES_KUBERNETES__CONTROL_PLANE_CIDRS", "10.9.0.0/24, 10.8.1.0/24")
    monkeypatch.setenv("TOYGRES_KUBERNETES__INTERNAL_LOAD_BALANCER", "true")
    monkeypatch.setenv("TOYGRES_TLS__RENEW_BEFORE_DAYS", "20")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kubernetes.control_plane_cidrs == ["10.9.0.0/24", "10.8.1.0/24"]
    assert settings.kubernetes.internal_load_balancer is True
    assert settings.tls.renew_before_days == 20 and settings.tls.server_certificate_days == 90
    monkeypatch.setenv("TOYGRES_KUBERNETES__CONTROL_PLANE_CIDRS", "10.9.0.0/24,nope")
    with pytest.raises(ValidationError, match=r"kubernetes\.control_plane_cidrs must hold CIDR ranges"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.delenv("TOYGRES_KUBERNETES__CONTROL_PLANE_CIDRS")
    monkeypatch.setenv("TOYGRES_TLS__RENEW_BEFORE_DAYS", "90")
    with pytest.raises(ValidationError, match="renew_before_days must be smaller"):
        Settings(_env_file=None)  # type: ignore[call-arg]


# -- the CA ---------------------------------------------------------------------------------------


def test_certificates_from_the_ca() -> None:
    ca = new_certificate_authority("test CA")
    now = datetime.now(UTC)
    cert = issue_server_certificate(
        ca, ["db.ns.svc.cluster.local", "db"], valid_for=timedelta(days=30), now=now
    )
    info = certificate_info(cert.cert_pem)
    assert info.dns_names == ("db.ns.svc.cluster.local", "db") and info.covers(["db"])
    assert not info.covers(["other"])
    assert timedelta(days=29) < info.not_after - now <= timedelta(days=30)
    assert issued_by(cert.cert_pem, ca.cert_pem) and not issued_by(
        cert.cert_pem, new_certificate_authority("x").cert_pem
    )
    assert key_matches(cert.cert_pem, cert.key_pem) and not key_matches(cert.cert_pem, ca.key_pem)
    # keys stay out of repr (logs, tracebacks)
    assert "PRIVATE KEY" not in repr(ca) and "PRIVATE KEY" not in repr(cert)
    # a certificate never outlives its CA
    short_ca = new_certificate_authority("short", valid_for=timedelta(days=10))
    capped = certificate_info(
        issue_server_certificate(short_ca, ["db"], valid_for=timedelta(days=90)).cert_pem
    )
    assert capped.not_after <= certificate_info(short_ca.cert_pem).not_after
