"""Structural checks of infra/bicep without a Bicep compiler: what `bicep build` would reject, plus our rules.

Every file parses with pycep-parser; module calls pass every required parameter and no unknown one;
every referenced symbol (and module output) is declared; role assignments take their role
definition ids from built-in-roles.json, whose ids match Azure's built-in roles, and say why; no
output carries a ``@secure()`` value or a secret-looking name; main.parameters.json matches main.bicep.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pycep.transformer import BicepElement

from tests.infra.bicep import (
    BICEP_DIR,
    MAIN,
    ROOT,
    BicepFile,
    bicep_files,
    loop_names,
    parse,
    references,
)

#: Azure built-in roles (name -> role definition id), from
#: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
AZURE_BUILT_IN_ROLES = {
    "StorageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "StorageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "MonitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "AzureKubernetesServiceClusterUserRole": "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
    "AzureKubernetesServiceRbacReader": "7f6c6a51-bcf8-42ba-9220-52d62157d7db",
    "AzureKubernetesServiceRbacWriter": "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb",
    "AzureKubernetesServiceRbacAdmin": "3498e952-d568-435e-9b2c-8d77e338d7f7",
    "AzureKubernetesServiceRbacClusterAdmin": "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
    "NetworkContributor": "4d97b98b-1d4f-4787-a291-c67834d212e7",
}

ROLE_TABLE = BICEP_DIR / "built-in-roles.json"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
SECRET_NAME = re.compile(r"(password|secret|connectionstring|key$|keys$|token)", re.IGNORECASE)

FILES = bicep_files()
IDS = [str(p.relative_to(BICEP_DIR)) for p in FILES]


def test_the_templates_are_where_the_docs_say() -> None:
    names = {p.relative_to(BICEP_DIR).as_posix() for p in FILES}
    assert "main.bicep" in names
    assert {n for n in names if n.startswith("modules/")}, "modules live in infra/bicep/modules/"
    assert parse(MAIN)["globals"]["scope"]["value"] == "resourceGroup"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_file_parses_with_pycep(path: Path) -> None:
    doc = parse(path)
    assert doc.get("resources") or doc.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_referenced_symbol_is_declared(path: Path) -> None:
    file = BicepFile.load(path)
    declared = file.declared()
    problems = []
    for where, value in file.elements():
        local = loop_names(value)
        for ref in references(value):
            if ref.name not in declared and ref.name not in local:
                problems.append(f"{where}: '{ref.name}' is not declared")
            elif ref.output is not None:
                if ref.name not in file.modules:
                    continue  # resource.outputs is not a thing we use; a resource property otherwise
                module = BicepFile.load(file.module_path(ref.name))
                if ref.output not in module.outputs:
                    problems.append(f"{where}: module '{ref.name}' has no output '{ref.output}'")
    assert not problems, "\n".join(problems)


def _module_calls() -> list[tuple[BicepFile, str]]:
    return [(f, m) for f in map(BicepFile.load, FILES) for m in f.modules]


@pytest.mark.parametrize(
    ("file", "module"), _module_calls(), ids=[f"{f.path.name}:{m}" for f, m in _module_calls()]
)
def test_module_calls_pass_required_and_only_known_params(file: BicepFile, module: str) -> None:
    target = file.module_path(module)
    assert target.is_file(), f"module {module} points at missing {target}"
    callee = BicepFile.load(target)
    passed = set(file.module_body(module).get("params", {}))
    missing = callee.required_params() - passed
    unknown = passed - set(callee.params)
    assert not missing, f"{module} ({target.name}) misses required params {sorted(missing)}"
    assert not unknown, f"{module} ({target.name}) gets unknown params {sorted(unknown)}"


def test_module_checks_catch_a_missing_and_an_unknown_parameter(tmp_path: Path) -> None:
    """The checks above are real: a broken call is reported."""
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "m.bicep").write_text(
        "param needed string\nparam optional int = 1\n"
        "resource r 'Microsoft.Resources/tags@2022-09-01' = {\n  name: needed\n}\n"
    )
    main = tmp_path / "main.bicep"
    main.write_text(
        "module m 'modules/m.bicep' = {\n  name: 'm'\n  params: {\n    optionall: 2\n  }\n}\n"
        "output o string = m.outputs.nothing\noutput p string = undeclared\n"
    )
    file = BicepFile.load(main)
    callee = BicepFile.load(file.module_path("m"))
    passed = set(file.module_body("m").get("params", {}))
    assert callee.required_params() - passed == {"needed"}
    assert passed - set(callee.params) == {"optionall"}
    refs = {(r.name, r.output) for _, v in file.elements() for r in references(v)}
    assert ("m", "nothing") in refs
    assert ("undeclared", None) in refs


def test_role_table_holds_azure_built_in_role_ids() -> None:
    table = json.loads(ROLE_TABLE.read_text())
    table.pop("$comment", None)
    assert table, "built-in-roles.json is empty"
    for name, role_id in table.items():
        assert AZURE_BUILT_IN_ROLES.get(name) == role_id, f"{name}: {role_id} is not that built-in role's id"


def _role_assignments() -> list[tuple[BicepFile, str]]:
    return [
        (f, name)
        for f in map(BicepFile.load, FILES)
        for name, spec in f.resources.items()
        if spec["type"] == ROLE_ASSIGNMENT
    ]


def test_the_control_plane_gets_the_roles_the_issue_lists() -> None:
    used = set()
    for file, name in _role_assignments():
        role = file.resource_body(name)["properties"]["roleDefinitionId"]["function"]["parameters"]
        used.add(str(role["resource_name_1"]["operator"]["operands"]["operand_2"]))
    assert {
        "StorageBlobDataOwner",
        "StorageQueueDataContributor",
        "MonitoringMetricsPublisher",
        "AzureKubernetesServiceClusterUserRole",
        "AzureKubernetesServiceRbacWriter",
    } <= used


@pytest.mark.parametrize(
    ("file", "name"), _role_assignments(), ids=[f"{f.path.name}:{n}" for f, n in _role_assignments()]
)
def test_role_assignment_uses_the_named_table_and_says_why(file: BicepFile, name: str) -> None:
    table = json.loads(ROLE_TABLE.read_text())
    body = file.resource_body(name)
    role = body["properties"]["roleDefinitionId"]
    function = role.get("function", {}) if isinstance(role, dict) else {}
    assert function.get("type") == "subscription_resource_id", f"{name}: roleDefinitionId must be built in"
    args = function["parameters"]
    assert args["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    accessor = args["resource_name_1"]["operator"]["operands"]
    table_var, role_name = str(accessor["operand_1"]), str(accessor["operand_2"])
    loaded = file.variables[table_var]["value"]["function"]
    assert loaded["type"] == "load_json_content"
    assert (file.path.parent / loaded["parameters"]["file_path"]).resolve() == ROLE_TABLE
    assert role_name in table, f"{name}: role {role_name} is not in built-in-roles.json"
    assert body.get("scope"), f"{name}: give the assignment the narrowest scope, never the deployment's"
    assert body["properties"].get("principalType"), f"{name}: set principalType (avoids replication races)"

    lines = file.path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {name} "))
    comment = []
    for line in reversed(lines[:start]):
        if not line.startswith("//"):
            break
        comment.append(line)
    assert any("Why:" in line for line in comment), f"{name}: needs a '// Why: ...' comment right above it"


def test_the_namespace_writer_role_is_scoped_to_the_namespace() -> None:
    access = BicepFile.load(BICEP_DIR / "modules" / "aks-access.bicep")
    writer = next(
        n
        for n in access.resources
        if access.resources[n]["type"] == ROLE_ASSIGNMENT and "RbacWriter" in str(access.resource_body(n))
    )
    scope = str(access.resource_body(writer)["scope"])
    assert access.resources[scope]["type"] == "Microsoft.ContainerService/managedClusters/namespaces"
    assert str(access.resource_body(scope)["name"]) == "namespace"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_output_carries_a_secret(path: Path) -> None:
    file = BicepFile.load(path)
    secure = file.secure_params()
    for name, spec in file.outputs.items():
        assert not SECRET_NAME.search(name), f"output {name} looks like a secret"
        assert not any(d.get("type") == "secure" for d in spec.get("decorators", [])), name
        refs = {r.name for r in references(spec["value"])}
        assert not refs & secure, f"output {name} exposes @secure() {sorted(refs & secure)}"
        text = json.dumps(spec["value"], default=str)
        assert "function_accessor" not in text and "listKeys" not in text, f"output {name} lists keys"


def test_outputs_the_issue_asks_for() -> None:
    outputs = BicepFile.load(MAIN).outputs
    assert {"API_BASE_URL", "FUNCTION_APP_NAME", "POSTGRES_HOST", "AKS_NAME"} <= set(outputs)


def test_parameters_file_matches_main() -> None:
    main = BicepFile.load(MAIN)
    values = json.loads((BICEP_DIR / "main.parameters.json").read_text())["parameters"]
    assert not set(values) - set(main.params), "main.parameters.json sets unknown parameters"
    assert main.required_params() <= set(values), "main.parameters.json misses required parameters"
    for name, spec in main.params.items():
        allowed = next((d["argument"] for d in spec["decorators"] if d["type"] == "allowed"), None)
        value = values.get(name, {}).get("value")
        if allowed is not None and isinstance(value, str | int) and "${" not in str(value):
            assert value in allowed, f"{name}={value!r} is not one of {allowed}"


def test_deploy_script_sets_every_azd_placeholder() -> None:
    """az CLI does not expand azd's ${VAR} placeholders: deploy.sh must override each one."""
    values = json.loads((BICEP_DIR / "main.parameters.json").read_text())["parameters"]
    placeholders = [n for n, v in values.items() if "${" in str(v.get("value"))]
    script = (ROOT / "scripts" / "azure" / "deploy.sh").read_text()
    missing = [n for n in placeholders if f'"{n}=' not in script]
    assert placeholders and not missing, f"deploy.sh does not set {missing}"


def test_postgres_is_entra_only_with_pgbouncer() -> None:
    pg = BicepFile.load(BICEP_DIR / "modules" / "postgres.bicep")
    server = pg.resource_body("server")["properties"]
    assert server["authConfig"]["passwordAuth"] == "Disabled"
    assert server["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert "administratorLoginPassword" not in json.dumps(server, default=str)
    configs = {
        str(pg.resource_body(n)["name"]): pg.resource_body(n)["properties"]["value"]
        for n, spec in pg.resources.items()
        if spec["type"].endswith("/configurations")
    }
    assert configs["pgbouncer.enabled"] == "true"
    assert configs["pgbouncer.pool_mode"] == "transaction"
    admins = [n for n, s in pg.resources.items() if s["type"].endswith("/administrators")]
    identity_admin = pg.resource_body(admins[0])
    assert str(identity_admin["name"]) == "identityPrincipalId"
    assert identity_admin["properties"]["principalType"] == "ServicePrincipal"


def test_storage_and_monitoring_take_no_keys() -> None:
    storage = BicepFile.load(BICEP_DIR / "modules" / "storage.bicep").resource_body("storage")["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    monitoring = BicepFile.load(BICEP_DIR / "modules" / "monitoring.bicep")
    assert monitoring.resource_body("appInsights")["properties"]["DisableLocalAuth"] is True
    assert monitoring.resource_body("workspace")["properties"]["features"]["disableLocalAuth"] is True


def test_aks_is_entra_rbac_without_local_accounts() -> None:
    cluster = BicepFile.load(BICEP_DIR / "modules" / "aks.bicep").resource_body("cluster")["properties"]
    assert cluster["disableLocalAccounts"] is True
    assert cluster["aadProfile"]["managed"] is True and cluster["aadProfile"]["enableAzureRBAC"] is True
    assert cluster["oidcIssuerProfile"]["enabled"] is True
    assert cluster["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert cluster["agentPoolProfiles"][0]["mode"] == "System"


def test_function_app_is_flex_consumption_with_identity_based_deployment() -> None:
    app = BicepFile.load(BICEP_DIR / "modules" / "functionapp.bicep")
    assert app.resource_body("plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = app.resource_body("site")
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert isinstance(config["scaleAndConcurrency"]["maximumInstanceCount"], BicepElement)
    assert isinstance(config["scaleAndConcurrency"]["instanceMemoryMB"], BicepElement)
    assert str(site["properties"]["virtualNetworkSubnetId"]) == "subnetId"
    auth: dict[str, Any] = app.resource_body("authSettings")
    assert str(auth["name"]) == "authsettingsV2"
    assert auth["properties"]["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    network = BicepFile.load(BICEP_DIR / "modules" / "network.bicep")
    subnets = json.dumps(network.variables["baseSubnets"]["value"], default=str)
    assert "Microsoft.App/environments" in subnets, "Flex Consumption needs its subnet delegated"
