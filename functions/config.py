"""Settings of the Functions host: queue names, time budgets, the reconciler cadence.

Queue names and the storage connection name are constants, not settings, because the trigger
decorators bind them when ``function_app.py`` is indexed; the hint sender must use the same ones.
Budgets are settings (``TOYGRES_FUNCTIONS_*``) so operators can fit them to ``functionTimeout``.
"""

from __future__ import annotations

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
