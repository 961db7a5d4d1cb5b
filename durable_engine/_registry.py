"""Name → code registration for orchestrations (versioned) and activities."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._context import ActivityContext, OrchestrationContext

OrchestrationFn = Callable[["OrchestrationContext", Any], Coroutine[Any, Any, Any]]
ActivityFn = Callable[["ActivityContext", Any], Any]
F = TypeVar("F", bound=Callable[..., Any])


def parse_version(version: str) -> tuple[int, ...]:
    """Semantic-version sort key; ``"1.10.0"`` sorts after ``"1.9.0"``."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise ValueError(f"orchestration version {version!r} must be dotted integers like '1.2.0'") from None


@dataclass(frozen=True)
class RegisteredActivity:
    name: str
    fn: ActivityFn
    is_async: bool


class Registry:
    """Holds the code a runtime can run; several versions of one orchestration may coexist.

    New instances take the latest version unless told otherwise; running instances keep the
    version recorded in their history, so deploying v2 never changes an in-flight v1 replay.
    """

    def __init__(self) -> None:
        self._orchestrations: dict[str, dict[str, OrchestrationFn]] = {}
        self._activities: dict[str, RegisteredActivity] = {}

    def orchestration(self, name: str | None = None, *, version: str = "1.0.0") -> Callable[[F], F]:
        parse_version(version)

        def decorator(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"orchestration {fn.__name__} must be an 'async def' function")
            key = name or fn.__name__
            versions = self._orchestrations.setdefault(key, {})
            if version in versions:
                raise ValueError(f"orchestration {key!r} version {version} is already registered")
            versions[version] = fn
            return fn

        return decorator

    def activity(self, name: str | None = None) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._activities:
                raise ValueError(f"activity {key!r} is already registered")
            self._activities[key] = RegisteredActivity(key, fn, inspect.iscoroutinefunction(fn))
            return fn

        return decorator

    def latest_version(self, name: str) -> str | None:
        versions = self._orchestrations.get(name)
        if not versions:
            return None
        return max(versions, key=parse_version)

    def get_orchestration(self, name: str, version: str | None) -> tuple[str, OrchestrationFn] | None:
        versions = self._orchestrations.get(name)
        if not versions:
            return None
        resolved = version or max(versions, key=parse_version)
        fn = versions.get(resolved)
        return (resolved, fn) if fn is not None else None

    def get_activity(self, name: str) -> RegisteredActivity | None:
        return self._activities.get(name)

    def orchestration_names(self) -> dict[str, list[str]]:
        return {n: sorted(v, key=parse_version) for n, v in self._orchestrations.items()}

    def activity_names(self) -> list[str]:
        return sorted(self._activities)
