"""The ``toygres`` command: run the control plane, migrate its database, and talk to its API.

``toygres serve`` and ``toygres migrate`` work on this host; every other command is an HTTP
client of a running API (``--url``, or ``TOYGRES_API_URL``), so the CLI works the same against
``toygres serve`` on a laptop and the Azure Functions app.

Exit codes: 0 success; 1 the API refused the request, could not be reached, or the awaited
operation did not complete; 2 bad command-line arguments (checked locally with the same models
the API uses, so a typo fails before any request is sent).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import time
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from uuid import UUID

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cli.credentials import ApiCredentials, CredentialError
from cli.render import instances_table
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind, validation_errors

if TYPE_CHECKING:
    from toygres.settings import Settings

DEFAULT_API_URL = "http://127.0.0.1:7071/api"
#: render width for --wide: wider than any row, so every column keeps its natural width
_UNLIMITED_WIDTH = 1000
TERMINAL_OPERATION_STATES = frozenset({"Completed", "Failed", "Cancelled"})

app = typer.Typer(
    name="toygres",
    help="Toygres: PostgreSQL instances as a service.",
    no_args_is_help=True,
    # locals of a crashing frame may hold a password: never print them
    pretty_exceptions_show_locals=False,
)
instances_app = typer.Typer(
    help="Create, list, inspect and delete PostgreSQL instances.", no_args_is_help=True
)
operations_app = typer.Typer(
    help="Inspect create, delete, rollout and rotation operations.", no_args_is_help=True
)
catalog_app = typer.Typer(
    help="The pinned PostgreSQL images, and rolling instances onto them.", no_args_is_help=True
)
app.add_typer(instances_app, name="instances")


#: set by the root command's callback for the command it runs
_CREDENTIALS: ContextVar[ApiCredentials] = ContextVar("toygres_api_credentials")


@app.callback()
def _credentials_options(
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="TOYGRES_TOKEN",
            show_envvar=True,
            help="Bearer token for the API (prefer the environment variable).",
        ),
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            envvar="TOYGRES_API_SCOPE",
            show_envvar=True,
            help="Get a token for this scope with azure-identity (e.g. api://<app id>/.default).",
        ),
    ] = None,
    function_key: Annotated[
        str | None,
        typer.Option(
            "--function-key",
            envvar="TOYGRES_FUNCTION_KEY",
            show_envvar=True,
            help="Azure Functions key, sent as x-functions-key.",
        ),
    ] = None,
) -> None:
    """Toygres: PostgreSQL instances as a service."""
    _CREDENTIALS.set(
        ApiCredentials(token=token or None, scope=scope or None, function_key=function_key or None)
    )


app.add_typer(operations_app, name="operations")
app.add_typer(catalog_app, name="catalog")


# request fields -> the option a CLI user typed, for local validation messages
_OPTION_FOR_FIELD = {
    "name": "NAME",
    "postgres_version": "--version",
    "storage_size": "--storage",
    "storage_class": "--storage-class",
    "runtime": "--runtime",
    "username": "--username",
    "database": "--database",
    "password": "--password-stdin",
    "allowed_sources": "--allow",
    "server_parameters": "--param",
}


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class CliFailure(Exception):
    """An error to print (without a traceback) before exiting with ``exit_code``."""

    def __init__(self, message: str, *, details: list[str] | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.exit_code = exit_code


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout(width: int | None = None) -> Console:
    return Console(highlight=False, soft_wrap=True, width=width)


def _fail(failure: CliFailure) -> NoReturn:
    err = _stderr()
    err.print(f"[bold red]Error:[/] {failure.message}", markup=True, soft_wrap=True)
    for line in failure.details:
        err.print(f"  {line}", markup=False, soft_wrap=True)
    raise typer.Exit(failure.exit_code)


def _get(url: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GET against the API; an error body or an unreachable API ends the command."""
    try:
        with ApiClient(url) as client:
            result: dict[str, Any] = client.call("GET", path, params=params)
    except CliFailure as failure:
        _fail(failure)
    return result


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


# --------------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------------


class ApiClient:
    """Thin httpx wrapper: JSON in, JSON out, API error bodies turned into :class:`CliFailure`."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, credentials: ApiCredentials | None = None
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise typer.BadParameter("must be an http:// or https:// URL", param_hint="'--url'")
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or _current_credentials()
        self._http = httpx.Client(base_url=self.base_url + "/", timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def text(self, path: str) -> str:
        """A GET whose answer is not JSON (a PEM certificate)."""
        return self._request("GET", path).text

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            headers = self.credentials.headers()
        except CredentialError as exc:
            raise CliFailure(str(exc)) from None
        try:
            response = self._http.request(method, path.lstrip("/"), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise CliFailure(
                f"cannot reach the Toygres API at {self.base_url}: {exc or type(exc).__name__}",
                details=["Is `toygres serve` running? Set --url or TOYGRES_API_URL to point elsewhere."],
            ) from None
        if response.is_success:
            return response
        raise _api_failure(response)


def _current_credentials() -> ApiCredentials:
    """The credentials the root command's options (or their environment variables) gave."""
    return _CREDENTIALS.get(ApiCredentials())


_AUTH_HINTS = {
    401: "Send credentials: TOYGRES_TOKEN, TOYGRES_API_SCOPE (a token from `az login`) "
    "or TOYGRES_FUNCTION_KEY.",
    403: "Ask an administrator of the API's Entra application for the role named above.",
}


def _api_failure(response: httpx.Response) -> CliFailure:
    try:
        error = response.json()["error"]
        message = f"{error['message']} (HTTP {response.status_code}, {error['code']})"
        details = [f"{f['field']}: {f['message']}" for f in error.get("fields") or []]
    except (ValueError, KeyError, TypeError):
        message = f"the API answered HTTP {response.status_code}: {response.text[:300]}"
        details = []
    if response.status_code in _AUTH_HINTS:
        details.append(_AUTH_HINTS[response.status_code])
    return CliFailure(message, details=details)


def _wait_operation(
    client: ApiClient, operation_id: str, *, timeout: float, interval: float
) -> dict[str, Any]:
    """Poll ``GET /operations/{id}`` until it ends; a spinner on stderr shows the phase."""
    deadline = time.monotonic() + timeout
    with _stderr().status(f"waiting for {operation_id}") as status:
        while True:
            operation: dict[str, Any] = client.call("GET", f"operations/{operation_id}")
            if operation["status"] in TERMINAL_OPERATION_STATES:
                return operation
            if time.monotonic() >= deadline:
                raise CliFailure(
                    f"operation {operation_id} is still {operation['status']} after {timeout:.0f} s",
                    details=["It continues in the background: `toygres operations get " + operation_id + "`"],
                )
            phase = operation.get("phase") or operation["status"].lower()
            status.update(f"{operation_id}: {phase}")
            time.sleep(interval)


def _run_operation(
    url: str,
    method: str,
    path: str,
    *,
    started_text: str,
    wait: bool,
    timeout: float,
    poll_interval: float,
    as_json: bool,
) -> dict[str, Any] | None:
    """Start an operation (the API answers 202 with its id); with ``wait``, return it once it ended
    Completed, or fail with exit code 1. Prints what a person (or ``--json``) wants to see."""
    try:
        with ApiClient(url) as client:
            started: dict[str, Any] = client.call(method, path)
            if as_json and not wait:
                _print_json(started)
            elif not as_json:
                _stdout().print(f"{started_text}: operation {started['operation_id']}", markup=False)
            if not wait:
                return None
            operation = _wait_operation(
                client, started["operation_id"], timeout=timeout, interval=poll_interval
            )
            if as_json:
                _print_json(operation)
            if operation["status"] != "Completed":
                raise _operation_failure(operation)
            return operation
    except CliFailure as failure:
        _fail(failure)


def _operation_failure(operation: dict[str, Any]) -> CliFailure:
    error = operation.get("error") or {}
    reason = error.get("message") or "no reason recorded"
    return CliFailure(f"operation {operation['operation_id']} ended {operation['status']}: {reason}")


# --------------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------------

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="TOYGRES_API_URL", show_envvar=True, help="Base URL of the Toygres API."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until the operation has ended.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="With --wait: give up waiting after this many seconds.")
]
PollOption = Annotated[
    float, typer.Option("--poll-interval", min=0.1, help="With --wait: seconds between polls.")
]


# --------------------------------------------------------------------------------------------------
# instances
# --------------------------------------------------------------------------------------------------


def _local_request(body: dict[str, Any]) -> None:
    """Validate with the API's own model so bad arguments fail here, with exit code 2."""
    try:
        CreateInstanceRequest.model_validate(body)
    except ValidationError as exc:
        problems = validation_errors(exc)
        options = [_OPTION_FOR_FIELD.get(p["field"].split(".")[0], p["field"]) for p in problems]
        hint = ", ".join(f"'{option}'" for option in dict.fromkeys(options))
        raise typer.BadParameter("; ".join(p["message"] for p in problems), param_hint=hint) from None


@instances_app.command("create")
def create_instance(
    name: Annotated[str, typer.Argument(help="Instance name: lowercase letters, digits and '-'.")],
    version: Annotated[
        str | None,
        typer.Option("--version", help="PostgreSQL major version (14 to 18; default: the runtime's)."),
    ] = None,
    storage: Annotated[str, typer.Option("--storage", help="Volume size, a Kubernetes quantity.")] = "10Gi",
    storage_class: Annotated[
        str | None, typer.Option("--storage-class", help="Kubernetes storage class.")
    ] = None,
    runtime: Annotated[
        RuntimeKind | None, typer.Option("--runtime", help="Where it runs (default: the server's default).")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="Superuser (default: postgres).")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Database (default: postgres).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (else one is generated).")
    ] = False,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="Who may connect besides the control plane: a CIDR (10.0.0.0/8) or ns:LABEL=VALUE[,…] "
            "(pods of the namespaces with those labels). Repeatable.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="A server parameter NAME=VALUE from the allow-list. Repeatable."),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 900,
    poll_interval: PollOption = 1.0,
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """Create an instance. With --wait, print the running instance (or fail with exit code 1)."""
    body: dict[str, Any] = {"name": name, "storage_size": storage}
    optional = {
        "postgres_version": version,
        "storage_class": storage_class,
        "runtime": runtime.value if runtime is not None else None,
        "username": username,
        "database": database,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if allow:
        body["allowed_sources"] = [_ingress_source(item) for item in allow]
    if param:
        body["server_parameters"] = dict(_parameter(item) for item in param)
    if password_stdin:
        # from a terminal: prompt without echo; from a pipe: the first line
        tty = sys.stdin.isatty()
        password = getpass.getpass("Password: ") if tty else sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise typer.BadParameter("no password on standard input", param_hint="'--password-stdin'")
        body["password"] = password
    _local_request(body)
    try:
        with ApiClient(url) as client:
            created: dict[str, Any] = client.call("POST", "instances", json=body)
            if not wait:
                if as_json:
                    _print_json(created)
                else:
                    _show_created(created)
                return
            if not as_json:
                _show_created(created)
            operation = _wait_operation(
                client, created["operation_id"], timeout=timeout, interval=poll_interval
            )
            if operation["status"] != "Completed":
                if as_json:
                    _print_json(operation)
                raise _operation_failure(operation)
            instance = client.call("GET", f"instances/{created['instance_id']}")
    except CliFailure as failure:
        _fail(failure)
    if as_json:
        _print_json(instance)
    else:
        _stdout().print(
            f"[green]✓[/] {instance['name']} is {instance['state']}: {instance.get('connection_string')}"
        )


def _ingress_source(text: str) -> dict[str, Any]:
    """``10.0.0.0/8`` -> a CIDR source; ``ns:team=web,env=prod`` -> a namespace selector."""
    if not text.startswith("ns:"):
        return {"cidr": text}
    labels: dict[str, str] = {}
    for pair in text[3:].split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{text!r}: write ns:LABEL=VALUE[,LABEL=VALUE]", param_hint="'--allow'")
        labels[key.strip()] = value.strip()
    return {"namespace_selector": labels}


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise typer.BadParameter(f"{text!r}: write NAME=VALUE", param_hint="'--param'")
    return name.strip(), value.strip()


def _show_created(created: dict[str, Any]) -> None:
    out = _stdout()
    out.print(f"Creating instance [bold]{created['name']}[/] ({created['instance_id']})")
    out.print(f"  operation: {created['operation_id']}", markup=False)
    out.print(f"  password:  {created['password_hint']}", markup=False, soft_wrap=True)


@instances_app.command("list")
def list_instances(
    state: Annotated[
        InstanceState | None, typer.Option("--state", help="Only instances in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="next_cursor of the previous page.")] = None,
    include_deleted: Annotated[bool, typer.Option("--all", help="Include deleted instances.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Every column, however narrow the terminal.")
    ] = False,
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """List instances (newest first). Narrow terminals get fewer columns; --wide or --json give all."""
    params: dict[str, Any] = {"limit": limit, "include_deleted": include_deleted}
    if state is not None:
        params["state"] = state.value
    if cursor is not None:
        params["cursor"] = cursor
    page = _get(url, "instances", params=params)
    if as_json:
        _print_json(page)
        return
    out = _stdout()
    table = instances_table(page["items"], width=out.width, wide=wide)
    if page["items"]:
        # --wide: every column at its natural width, even past the terminal's edge
        (_stdout(width=_UNLIMITED_WIDTH) if wide else out).print(table)
    else:
        out.print("no instances")
    if page.get("next_cursor"):
        out.print(f"more: --cursor {page['next_cursor']}", markup=False)


_INSTANCE_FIELDS = (
    "id",
    "name",
    "state",
    "health_status",
    "runtime",
    "postgres_version",
    "storage_size",
    "storage_class",
    "k8s_name",
    "k8s_namespace",
    "connection_string",
    "connection_security",
    "username",
    "database",
    "last_health_check_at",
    "last_health_message",
    "failure_reason",
    "create_orchestration_id",
    "delete_orchestration_id",
    "health_monitor_id",
    "created_at",
    "updated_at",
    "deleted_at",
)


def _show_fields(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key in fields:
        value = data.get(key)
        if value is not None:
            grid.add_row(key, value if isinstance(value, str) else json.dumps(value))
    _stdout().print(grid)


@instances_app.command("get")
def get_instance(
    instance_id: Annotated[UUID, typer.Argument(metavar="ID", help="Instance id.")],
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """Show one instance."""
    instance = _get(url, f"instances/{instance_id}")
    if as_json:
        _print_json(instance)
    else:
        _show_fields(instance, _INSTANCE_FIELDS)
        ref = instance.get("password_ref") or {}
        if ref.get("store") == "local-file":
            _stdout().print(f"password     in the file {ref.get('name')}", markup=False)
        elif ref:
            _stdout().print(f"password     in Secret {ref.get('namespace')}/{ref.get('name')}", markup=False)


@instances_app.command("ca")
def instance_ca(
    instance_id: Annotated[UUID, typer.Argument(metavar="ID", help="Instance id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the certificate to this file (else stdout).")
    ] = None,
    url: UrlOption = DEFAULT_API_URL,
) -> None:
    """Print the CA certificate to verify the instance with (sslmode=verify-full, sslrootcert=FILE)."""
    try:
        with ApiClient(url) as client:
            pem = client.text(f"instances/{instance_id}/ca")
    except CliFailure as failure:
        _fail(failure)
    if output is None:
        typer.echo(pem, nl=False)
        return
    output.write_text(pem)
    _stderr().print(f"wrote {output}; connect with sslmode=verify-full sslrootcert={output}", markup=False)


@instances_app.command("delete")
def delete_instance(
    instance_id: Annotated[UUID, typer.Argument(metavar="ID", help="Instance id.")],
    wait: WaitOption = False,
    timeout: TimeoutOption = 900,
    poll_interval: PollOption = 1.0,
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """Delete an instance (its server, data and password). With --wait, until it is gone."""
    _run_operation(
        url,
        "DELETE",
        f"instances/{instance_id}",
        started_text=f"Deleting instance {instance_id}",
        wait=wait,
        timeout=timeout,
        poll_interval=poll_interval,
        as_json=as_json,
    )
    if wait and not as_json:
        _stdout().print(f"[green]✓[/] instance {instance_id} is deleted")


# --------------------------------------------------------------------------------------------------
# operations
# --------------------------------------------------------------------------------------------------

_OPERATION_FIELDS = (
    "operation_id",
    "kind",
    "instance_id",
    "status",
    "phase",
    "error",
    "created_at",
    "updated_at",
)


@operations_app.command("get")
def get_operation(
    operation_id: Annotated[str, typer.Argument(metavar="ID", help="Operation id (create-… / delete-…).")],
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """Show an operation's status, phase and error."""
    operation = _get(url, f"operations/{operation_id}")
    if as_json:
        _print_json(operation)
    else:
        _show_fields(operation, _OPERATION_FIELDS)


# --------------------------------------------------------------------------------------------------
# image catalog
# --------------------------------------------------------------------------------------------------


@catalog_app.command("show")
def show_catalog(url: UrlOption = DEFAULT_API_URL, as_json: JsonOption = False) -> None:
    """The image, pinned by digest, that each PostgreSQL major version runs."""
    catalog = _get(url, "image-catalog")
    if as_json:
        _print_json(catalog)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for major, image in catalog["images"].items():
        grid.add_row(major, image)
    _stdout().print(grid)


@catalog_app.command("rollout")
def rollout_catalog(
    wait: WaitOption = False,
    timeout: TimeoutOption = 3600,
    poll_interval: PollOption = 2.0,
    url: UrlOption = DEFAULT_API_URL,
    as_json: JsonOption = False,
) -> None:
    """Restart running instances onto the catalog's images, one at a time (after a catalog change)."""
    operation = _run_operation(
        url,
        "POST",
        "image-catalog/rollouts",
        started_text="Rolling out the image catalog",
        wait=wait,
        timeout=timeout,
        poll_interval=poll_interval,
        as_json=as_json,
    )
    if operation is not None and not as_json:
        output = operation.get("custom_status") or {}
        _stdout().print(
            f"[green]✓[/] rollout {operation['operation_id']}: {len(output.get('rolled', []))} instance(s) "
            f"rolled, {len(output.get('skipped', []))} skipped"
        )


# --------------------------------------------------------------------------------------------------
# serve / migrate
# --------------------------------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port of the API.")] = 7071,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Embedded PostgreSQL data dir (without TOYGRES_DATABASE_URL).")
    ] = Path(".toygres/control-plane-pg"),
    instances_dir: Annotated[
        Path | None,
        typer.Option(
            "--instances-dir",
            help="Local runtime instances (default: TOYGRES_LOCAL_DATA_DIR or .toygres/instances).",
        ),
    ] = None,
    reconcile_interval: Annotated[
        float, typer.Option("--reconcile-interval", min=0, help="Seconds between Reconciler passes (0: off).")
    ] = 300,
    log_format: Annotated[LogFormat, typer.Option("--log-format", help="Log line format.")] = LogFormat.TEXT,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Lowest level logged.")
    ] = LogLevel.INFO,
) -> None:
    """Run the API, the durable runtime and the reconciler in one process (Ctrl-C stops it)."""
    from cli.serve import ServeOptions, run  # local: client commands need not import uvicorn & co

    options = ServeOptions(
        host=host,
        port=port,
        data_dir=data_dir.expanduser().absolute(),
        instances_dir=instances_dir.expanduser().absolute() if instances_dir is not None else None,
        reconcile_interval=reconcile_interval,
        log_format=log_format.value,
        log_level=log_level.value,
    )
    raise typer.Exit(run(options))


@app.command("migrate")
def migrate() -> None:
    """Create or upgrade the engine and metadata schemas in TOYGRES_DATABASE_URL."""
    from toygres.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = [
            f"TOYGRES_{p['field'].upper().replace('.', '__')}: {p['message']}" for p in validation_errors(exc)
        ]
        _fail(CliFailure("invalid settings", details=problems, exit_code=2))
    if settings.database_url is None:
        _fail(CliFailure("TOYGRES_DATABASE_URL is not set", exit_code=2))
    try:
        applied = asyncio.run(_migrate(settings.database_url.get_secret_value(), settings))
    except Exception as exc:  # psycopg's messages name host and port, never the password
        _fail(CliFailure(f"migration failed: {type(exc).__name__}: {str(exc).strip()}"))
    out = _stdout()
    for schema, names in applied:
        out.print(f"{schema}: " + (", ".join(names) if names else "up to date"), markup=False)


async def _migrate(url: str, settings: Settings) -> list[tuple[str, list[str]]]:
    import psycopg

    from control_plane.bootstrap import DatabaseAccess
    from durable_engine.migrate import apply_migrations
    from durable_engine.postgres import engine_migrations
    from toygres.cms_migrations import migrate_cms

    # the same credentials the control plane uses (an Entra token with TOYGRES_DATABASE_AUTH=entra)
    access = DatabaseAccess.from_settings(settings)
    async with await psycopg.AsyncConnection.connect(url, **(await access.session_kwargs())) as conn:
        # same lock key as PostgresProvider.connect (the schema name), so the two never race
        engine = await apply_migrations(conn, engine_migrations(), schema=settings.engine_schema)
        cms = await migrate_cms(conn, schema=settings.cms_schema)
    return [
        (settings.engine_schema, [m.filename for m in engine]),
        (settings.cms_schema, [m.filename for m in cms]),
    ]


if __name__ == "__main__":  # pragma: no cover
    app()
