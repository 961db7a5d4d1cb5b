"""Settings of the Functions host: queue names, time budgets, the reconciler cadence.

Queue names and the storage connection name are constants, not settings, because the trigger
decorators bind them when ``function_app.py`` is indexed; the hint sender must use the same ones.
Budgets are settings (``TOYGRES_FUNCTIONS_*``) so operators can fit them to ``functionTimeout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Storage queue whose messages wake the orchestration dispatcher
ORCHESTRATION_QUEUE = "orchestration-hints"
#: Storage queue whose messages wake the activity dispatcher
ACTIVITY_QUEUE = "activity-hints"
#: App setting holding the storage account connection (the Functions host's own storage account)
STORAGE_CONNECTION = "AzureWebJobsStorage"
#: NCRONTAB (with seconds): the sweep runs at the start of every minute
SWEEP_SCHEDULE = "0 */1 * * * *"

#: The app settings the code needs in Azure (Flex Consumption, managed identity, Entra-only PostgreSQL
#: behind the built-in PgBouncer, AKS), mapped to the value they must have there, or ``None`` where the
#: value is deployment-specific (a URL, a resource name). ``infra/bicep`` must set each one on the
#: Function App; ``tests/infra`` checks it, and checks that every ``TOYGRES_*`` setting Bicep sets is a
#: real field of ``toygres.settings.Settings`` or ``FunctionsSettings``.
AZURE_APP_SETTINGS: Mapping[str, str | None] = MappingProxyType(
    {
        # the host's own storage, by identity: no key anywhere (functions/hints.py reads the
        # __queueServiceUri form and authenticates with DefaultAzureCredential, hence AZURE_CLIENT_ID)
        f"{STORAGE_CONNECTION}__credential": "managedidentity",
        f"{STORAGE_CONNECTION}__clientId": None,
        f"{STORAGE_CONNECTION}__blobServiceUri": None,
        f"{STORAGE_CONNECTION}__queueServiceUri": None,
        "AZURE_CLIENT_ID": None,
        # Application Insights with local auth off: the identity authenticates the telemetry
        "APPLICATIONINSIGHTS_CONNECTION_STRING": None,
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": None,
        # the metadata database: no password, Entra tokens, through PgBouncer (port 6432)
        "TOYGRES_DATABASE_URL": None,
        "TOYGRES_DATABASE_AUTH": "entra",
        "TOYGRES_DATABASE_POOLER": "transaction",
        "TOYGRES_MIGRATE_ON_START": "false",
        "TOYGRES_FUNCTIONS_POOL_SIZE": None,
        # callers: Entra ID tokens (validated by the app, and by App Service Authentication in front)
        "TOYGRES_AUTH__MODE": None,
        "TOYGRES_AUTH__ISSUER": None,
        "TOYGRES_AUTH__AUDIENCE": None,
        "TOYGRES_AUTH__JWKS_URL": None,
        # instances: on AKS only, reachable from the Function App's subnet through internal load balancers
        "TOYGRES_LOCAL_RUNTIME_ENABLED": "false",
        "TOYGRES_DEFAULT_RUNTIME": "kubernetes",
        "TOYGRES_KUBERNETES__AKS_SUBSCRIPTION_ID": None,
        "TOYGRES_KUBERNETES__AKS_RESOURCE_GROUP": None,
        "TOYGRES_KUBERNETES__AKS_CLUSTER_NAME": None,
        "TOYGRES_KUBERNETES__NAMESPACE": None,
        "TOYGRES_KUBERNETES__STORAGE_CLASS": None,
        "TOYGRES_KUBERNETES__SERVICE_TYPE": "LoadBalancer",
        "TOYGRES_KUBERNETES__INTERNAL_LOAD_BALANCER": "true",
        # the Function App's subnet: every instance's NetworkPolicy must admit the control plane
        "TOYGRES_KUBERNETES__CONTROL_PLANE_CIDRS": None,
    }
)


class FunctionsSettings(BaseSettings):
    """Knobs of the trigger functions; the defaults fit ``functionTimeout`` = 10 minutes in host.json.

    A budget only stops a drain from *fetching* more work: items already running finish, so a budget
    must leave room for the longest turn or activity before the host's timeout kills the invocation.
    """

    model_config = SettingsConfigDict(env_prefix="TOYGRES_FUNCTIONS_", extra="ignore")

    orchestration_budget_seconds: float = Field(default=240, gt=0, le=3600)
    activity_budget_seconds: float = Field(default=240, gt=0, le=3600)
    #: the sweep runs every minute and the timer trigger is a singleton: stay well under a minute
    sweep_budget_seconds: float = Field(default=40, gt=0, le=3600)
    #: start one Reconciler pass per this many minutes (0 disables it)
    reconcile_every_minutes: int = Field(default=5, ge=0, le=1440)
    #: drains of one queue allowed at once in one worker process; more hints wait their turn
    max_concurrent_drains: int = Field(default=2, ge=1, le=64)
    orchestration_concurrency: int = Field(default=4, ge=1, le=64)
    activity_concurrency: int = Field(default=8, ge=1, le=64)
    pool_size: int = Field(default=10, ge=2, le=100)
