"""Domain models and settings: every rule accepts good input, rejects bad input naming the field,
and the password never leaks through repr, dumps or validation errors."""

from __future__ import annotations

import json
import string
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from toygres.deployment_planner import PlacementError, build_deployment_config
from toygres.models import (
    ALLOWED_TRANSITIONS,
    DEFAULT_POSTGRES_VERSION,
    POSTGRES_VERSIONS,
    CreateInstanceRequest,
    DeploymentConfig,
    InstanceState,
    OperationState,
    PasswordRef,
    ResourceRequests,
    RuntimeKind,
    ServiceType,
    allowed_predecessors,
    connection_uri,
    generate_password,
    make_k8s_name,
    parse_quantity,
    validation_errors,
)
from toygres.settings import Settings, get_settings

PASSWORD = "Correct-Horse-Battery-Staple-42"


def _errors(**body: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        CreateInstanceRequest(**body)
    return validation_errors(info.value)


def _single_error(field: str, **body: Any) -> str:
    errs = _errors(**body)
    assert [e["field"] for e in errs] == [field], errs
    message = errs[0]["message"]
    assert field.rsplit(".", 1)[-1] in message, message  # the message itself names the field
    return message


# -- name -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "db1", "my-db", "orders-eu-west-2", "a" * 40])
def test_name_accepts_dns_labels(name: str) -> None:
    assert CreateInstanceRequest(name=name).name == name


@pytest.mark.parametrize("name", ["", "My-DB", "1db", "-db", "db-", "my_db", "db.x", "a" * 41, "dé", "db 1"])
def test_name_rejects_non_labels(name: str) -> None:
    message = _single_error("name", name=name)
    assert "DNS-1123 label" in message and "40 characters" in message


def test_name_is_required() -> None:
    assert _errors()[0]["field"] == "name"


# -- username / database ----------------------------------------------------------------------


@pytest.mark.parametrize("username", ["postgres", "app", "_svc", "app_user2", "u" * 63])
def test_username_accepts_identifiers(username: str) -> None:
    assert CreateInstanceRequest(name="db", username=username).username == username


@pytest.mark.parametrize(
    ("username", "fragment"),
    [
        ("App", "PostgreSQL identifier"),
        ("1app", "PostgreSQL identifier"),
        ("app-user", "PostgreSQL identifier"),
        ("u" * 64, "PostgreSQL identifier"),
        ("pg_monitor", "pg_"),
        ("user", "reserved"),
        ("select", "reserved"),
        ("public", "reserved"),
    ],
)
def test_username_rejects_bad_identifiers(username: str, fragment: str) -> None:
    assert fragment in _single_error("username", name="db", username=username)


def test_database_follows_identifier_rules() -> None:
    assert CreateInstanceRequest(name="db", database="orders").database == "orders"
    assert "PostgreSQL identifier" in _single_error("database", name="db", database="Orders-DB")


# -- password ---------------------------------------------------------------------------------


def test_password_accepted_and_kept_secret() -> None:
    req = CreateInstanceRequest(name="db", password=PASSWORD)
    assert req.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(req)
    assert PASSWORD not in str(req)
    assert PASSWORD not in req.model_dump_json()
    assert PASSWORD not in json.dumps(req.model_dump(mode="json"))
    assert PASSWORD not in repr(req.model_dump())


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("short", "between 12 and 128"), ("x" * 129, "between 12 and 128"), ("abcdefghijk\n12", "control")],
)
def test_password_rules(password: str, fragment: str) -> None:
    assert fragment in _single_error("password", name="db", password=password)


def test_rejected_password_is_not_echoed_by_errors() -> None:
    bad = "tooshort-pw"
    with pytest.raises(ValidationError) as info:
        CreateInstanceRequest(name="db", password=bad)
    assert bad not in str(info.value)
    assert bad not in repr(validation_errors(info.value))


def test_generated_password_is_strong_and_unique() -> None:
    urlsafe = set(string.ascii_letters + string.digits + "-_")
    passwords = {CreateInstanceRequest(name="db").password.get_secret_value() for _ in range(50)}
    assert len(passwords) == 50
    for pw in passwords:
        assert len(pw) >= 32
        assert set(pw) <= urlsafe
    assert len(generate_password()) >= 32


# -- version, storage, resources, runtime, service type ---------------------------------------


@pytest.mark.parametrize("version", ["14", "15", "16", "17", "18", 16])
def test_postgres_version_allow_list(version: object) -> None:
    assert CreateInstanceRequest(name="db", postgres_version=version).postgres_version == str(version)


@pytest.mark.parametrize("version", ["13", "19", "17.1", "latest", True, ""])
def test_postgres_version_rejects_others(version: object) -> None:
    assert "14, 15, 16, 17, 18" in _single_error("postgres_version", name="db", postgres_version=version)


def test_defaults() -> None:
    req = CreateInstanceRequest(name="db")
    # no version: the runtime's default, resolved when the deployment is planned
    assert (req.postgres_version, req.storage_size, req.username) == (None, "10Gi", "postgres")
    assert req.runtime is None and req.service_type is None and req.resources is None


@pytest.mark.parametrize("size", ["1Gi", "10Gi", "1.5Gi", "2G", "1024Mi", "16Ti", "100e9"])
def test_storage_size_accepts_quantities_in_range(size: str) -> None:
    assert CreateInstanceRequest(name="db", storage_size=size).storage_size == size


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ("10gb", "Kubernetes quantity"),
        ("ten", "Kubernetes quantity"),
        ("-5Gi", "Kubernetes quantity"),
        ("", "Kubernetes quantity"),
        ("1023Mi", "between 1Gi and 16Ti"),
        ("17Ti", "between 1Gi and 16Ti"),
        (10, "string"),
    ],
)
def test_storage_size_rejects(size: object, fragment: str) -> None:
    assert fragment in _single_error("storage_size", name="db", storage_size=size)


def test_storage_class() -> None:
    assert CreateInstanceRequest(name="db", storage_class="managed-csi").storage_class == "managed-csi"
    assert "DNS-1123 subdomain" in _single_error("storage_class", name="db", storage_class="Premium_LRS")


def test_resources() -> None:
    req = CreateInstanceRequest(name="db", resources={"cpu": "250m", "memory": "512Mi"})
    assert req.resources == ResourceRequests(cpu="250m", memory="512Mi")
    assert "100m and 64" in _single_error("resources.cpu", name="db", resources={"cpu": "50m"})
    assert "Kubernetes quantity" in _single_error("resources.cpu", name="db", resources={"cpu": "two"})
    assert "128Mi and 512Gi" in _single_error("resources.memory", name="db", resources={"memory": "64Mi"})
    assert _errors(name="db", resources={"cpu": "1", "gpu": "1"})[0]["field"] == "resources.gpu"


def test_runtime_and_service_type() -> None:
    req = CreateInstanceRequest(name="db", runtime="local", service_type="LoadBalancer")
    assert req.runtime is RuntimeKind.LOCAL and req.service_type is ServiceType.LOAD_BALANCER
    assert _errors(name="db", runtime="docker")[0]["field"] == "runtime"
    assert _errors(name="db", service_type="NodePort")[0]["field"] == "service_type"


def test_unknown_fields_are_rejected() -> None:
    errs = _errors(name="db", storgae_size="10Gi")
    assert errs == [{"field": "storgae_size", "message": "Extra inputs are not permitted"}]


def test_several_errors_are_reported_together() -> None:
    fields = {e["field"] for e in _errors(name="BAD", storage_size="1Mi", postgres_version="9")}
    assert fields == {"name", "storage_size", "postgres_version"}


# -- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("2G", Decimal(2 * 10**9)),
        ("1e3", Decimal(1000)),
        ("128974848", Decimal(128974848)),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1gi", "1 Gi", "1.2.3", "1Gi2", "+1"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_connection_uri_has_no_password_and_escapes() -> None:
    assert (
        connection_uri("db.example", 5432, "postgres", "app") == "postgresql://app@db.example:5432/postgres"
    )
    assert connection_uri("::1", 6000, "my db", "u") == "postgresql://u@[::1]:6000/my%20db"
    assert connection_uri("h", 1, "d", "u", sslmode="require").endswith("?sslmode=require")


def test_transitions_table() -> None:
    assert ALLOWED_TRANSITIONS[InstanceState.DELETED] == frozenset()
    assert allowed_predecessors(InstanceState.RUNNING) == {InstanceState.CREATING}
    assert InstanceState.CREATING not in allowed_predecessors(InstanceState.CREATING)
    assert OperationState("Cancelled") is OperationState.CANCELLED


def test_make_k8s_name_fits_statefulset_limit() -> None:
    iid = uuid.uuid4()
    name = make_k8s_name("a" * 40, iid)
    assert name == "a" * 40 + "-" + iid.hex[:8]
    assert len(name) <= 52


# -- settings and the resolved deployment config ----------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("TOYGRES_"):
            monkeypatch.delenv(key)
    return monkeypatch


def _settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = _settings()
    assert (s.engine_schema, s.cms_schema, s.default_runtime) == (
        "durable",
        "toygres",
        RuntimeKind.KUBERNETES,
    )
    assert s.kubernetes.namespace == "toygres" and s.kubernetes.service_type is ServiceType.CLUSTER_IP
    assert (s.health_check_interval_seconds, s.readiness_deadline_seconds) == (30, 600)
    assert s.local_data_dir == Path("~/.toygres/instances").expanduser()
    assert s.database_url is None and not s.kubernetes.uses_aks


def test_settings_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TOYGRES_DATABASE_URL", "postgresql://cp:s3cret-pw@db.internal:5432/toygres")
    clean_env.setenv("TOYGRES_DEFAULT_RUNTIME", "local")
    clean_env.setenv("TOYGRES_KUBERNETES__NAMESPACE", "pg-prod")
    clean_env.setenv("TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES", "10.0.0.0/8, 203.0.113.7")
    clean_env.setenv("TOYGRES_KUBERNETES__AKS_SUBSCRIPTION_ID", "sub")
    clean_env.setenv("TOYGRES_KUBERNETES__AKS_RESOURCE_GROUP", "rg")
    clean_env.setenv("TOYGRES_KUBERNETES__AKS_CLUSTER_NAME", "aks")
    clean_env.setenv("TOYGRES_HEALTH_CHECK_INTERVAL_SECONDS", "45")
    s = _settings()
    assert s.database_url is not None and "s3cret-pw" not in repr(s)
    assert s.default_runtime is RuntimeKind.LOCAL
    assert s.kubernetes.namespace == "pg-prod"
    assert s.kubernetes.load_balancer_source_ranges == ["10.0.0.0/8", "203.0.113.7/32"]
    assert s.kubernetes.uses_aks
    assert s.health_check_interval_seconds == 45
    clean_env.setenv("TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES", '["192.168.0.0/16"]')
    assert _settings().kubernetes.load_balancer_source_ranges == ["192.168.0.0/16"]


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("TOYGRES_CMS_SCHEMA", "Bad-Schema", "schema names"),
        ("TOYGRES_KUBERNETES__NAMESPACE", "Prod_NS", "kubernetes.namespace"),
        ("TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES", "10.0.0.0/8,nonsense", "CIDR"),
        ("TOYGRES_HEALTH_CHECK_INTERVAL_SECONDS", "1", "greater than or equal to 5"),
        ("TOYGRES_DEFAULT_RUNTIME", "docker", "kubernetes"),
    ],
)
def test_settings_errors_are_clear(
    clean_env: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    clean_env.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        _settings()
    assert fragment in str(info.value)


def test_bad_database_url_error_does_not_leak_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TOYGRES_DATABASE_URL", "host=db password=leaky-secret-1 'unterminated")
    with pytest.raises(ValidationError) as info:
        _settings()
    assert "database_url" in str(info.value)
    assert "leaky-secret-1" not in str(info.value)


def test_get_settings_is_cached(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_build_deployment_config_kubernetes(clean_env: pytest.MonkeyPatch) -> None:
    s = _settings(
        kubernetes={
            "namespace": "pg",
            "storage_class": "managed-csi-premium",
            "service_type": "LoadBalancer",
            "load_balancer_source_ranges": ["203.0.113.0/24"],
            "image_repository": "mcr.microsoft.com/postgres",
        }
    )
    iid = uuid.uuid4()
    req = CreateInstanceRequest(name="orders", password=PASSWORD, postgres_version="16")
    cfg = build_deployment_config(req, s, instance_id=iid)
    assert cfg.runtime is RuntimeKind.KUBERNETES and cfg.namespace == "pg"
    assert cfg.k8s_name == f"orders-{iid.hex[:8]}"
    assert cfg.image == "mcr.microsoft.com/postgres:16"
    assert cfg.storage_class == "managed-csi-premium"
    assert cfg.service_type is ServiceType.LOAD_BALANCER
    assert cfg.load_balancer_source_ranges == ["203.0.113.0/24"]
    assert cfg.resources == ResourceRequests()
    assert cfg.password_ref == PasswordRef(store="kubernetes-secret", namespace="pg", name=cfg.k8s_name)
    assert cfg.labels["toygres.io/instance-id"] == str(iid)
    dumped = cfg.model_dump_json()
    assert PASSWORD not in dumped
    assert DeploymentConfig.model_validate_json(dumped) == cfg  # survives the engine's JSON history
    assert "kubectl get secret -n pg" in cfg.password_ref.describe()


def test_build_deployment_config_local_and_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = _settings(local_data_dir=tmp_path, kubernetes={"load_balancer_source_ranges": ["10.0.0.0/8"]})
    req = CreateInstanceRequest(
        name="dev", runtime="local", storage_class="fast", resources={"cpu": "1", "memory": "2Gi"}
    )
    cfg = build_deployment_config(req, s, instance_id=uuid.uuid4())
    assert cfg.runtime is RuntimeKind.LOCAL and cfg.namespace is None
    assert cfg.password_ref.store == "local-file"
    assert cfg.password_ref.name == str(tmp_path / cfg.k8s_name / "password")
    assert cfg.storage_class == "fast" and cfg.resources.cpu == "1"
    assert cfg.load_balancer_source_ranges == []  # only meaningful for LoadBalancer services


RUNTIME_VERSIONS = {RuntimeKind.KUBERNETES: POSTGRES_VERSIONS, RuntimeKind.LOCAL: ("18",)}


@pytest.mark.parametrize(
    ("runtime", "asked", "recorded"),
    [
        ("kubernetes", None, DEFAULT_POSTGRES_VERSION),
        ("kubernetes", "15", "15"),
        ("local", None, "18"),  # what the bundled binaries run, not the cluster default
        ("local", "18", "18"),
    ],
)
def test_the_planned_version_is_what_the_runtime_runs(
    clean_env: pytest.MonkeyPatch, runtime: str, asked: str | None, recorded: str
) -> None:
    req = CreateInstanceRequest(name="db", runtime=runtime, postgres_version=asked)
    cfg = build_deployment_config(
        req, _settings(), instance_id=uuid.uuid4(), runtime_versions=RUNTIME_VERSIONS
    )
    assert cfg.postgres_version == recorded
    assert cfg.image.endswith(f":{recorded}")


def test_a_version_the_runtime_cannot_run_is_refused_naming_the_field(clean_env: pytest.MonkeyPatch) -> None:
    req = CreateInstanceRequest(name="db", runtime="local", postgres_version="16")
    with pytest.raises(PlacementError) as caught:
        build_deployment_config(req, _settings(), instance_id=uuid.uuid4(), runtime_versions=RUNTIME_VERSIONS)
    assert caught.value.field == "postgres_version"
    assert "runs PostgreSQL 18" in caught.value.message


def test_a_runtime_that_is_not_configured_is_refused_naming_the_field(clean_env: pytest.MonkeyPatch) -> None:
    req = CreateInstanceRequest(name="db", runtime="local")
    with pytest.raises(PlacementError) as caught:
        build_deployment_config(
            req,
            _settings(),
            instance_id=uuid.uuid4(),
            runtime_versions={RuntimeKind.KUBERNETES: POSTGRES_VERSIONS},
        )
    assert caught.value.field == "runtime"
    assert "'local' is not configured" in caught.value.message and "kubernetes" in caught.value.message


def test_deployment_config_refuses_a_password_field() -> None:
    with pytest.raises(ValidationError):
        DeploymentConfig.model_validate(
            {
                "instance_id": str(uuid.uuid4()),
                "name": "x",
                "k8s_name": "x-1",
                "runtime": "local",
                "postgres_version": "17",
                "image": "postgres:17",
                "storage_size": "1Gi",
                "username": "postgres",
                "password_ref": {"store": "local-file", "name": "/tmp/p"},
                "password": SecretStr("nope"),
            }
        )
