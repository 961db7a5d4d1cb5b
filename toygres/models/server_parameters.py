"""Server parameters a caller may set on a create request: an allow-list, as managed services offer.

Only parameters that cannot break the instance, its security or the control plane's view of it are
settable: nothing about TLS, authentication, file locations, replication or preloaded libraries.
Each value is checked against its parameter's kind and range and normalised to the spelling
``postgresql.conf`` takes (memory in kB, durations in ms), so the rendered ConfigMap is stable.
Error messages name the parameter, because that is what the caller has to fix.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydantic_core import PydanticCustomError

_MEMORY_UNITS_KB = {"kB": Decimal(1), "MB": Decimal(1024), "GB": Decimal(1024**2), "TB": Decimal(1024**3)}
_DURATION_UNITS_MS = {
    "us": Decimal("0.001"),
    "ms": Decimal(1),
    "s": Decimal(1000),
    "min": Decimal(60_000),
    "h": Decimal(3_600_000),
    "d": Decimal(86_400_000),
}
_NUMBER_UNIT_RE = re.compile(r"^\s*(-?\d+)\s*([A-Za-z]*)\s*$")
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


@dataclass(frozen=True)
class ParameterRule:
    """How one settable parameter is checked; ``check`` returns the normalised value or raises."""

    kind: str
    describe: str
    check: Callable[[str, object], str]


def _fail(name: str, describe: str) -> PydanticCustomError:
    return PydanticCustomError("server_parameter", f"server_parameters.{name} must be {describe}")


def _integer(low: int, high: int) -> ParameterRule:
    describe = f"an integer between {low} and {high}"

    def check(name: str, value: object) -> str:
        if isinstance(value, bool):
            raise _fail(name, describe)
        try:
            number = int(str(value).strip()) if isinstance(value, int | str) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise _fail(name, describe)
        return str(number)

    return ParameterRule("integer", describe, check)


def _real(low: float, high: float) -> ParameterRule:
    describe = f"a number between {low:g} and {high:g}"

    def check(name: str, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _fail(name, describe)
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise _fail(name, describe) from None
        if not number.is_finite() or not Decimal(str(low)) <= number <= Decimal(str(high)):
            raise _fail(name, describe)
        return format(number.normalize(), "f")

    return ParameterRule("real", describe, check)


def _with_unit(
    value: object, units: dict[str, Decimal] | dict[str, int], default_unit: str
) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        return None
    match = _NUMBER_UNIT_RE.match(value)
    if match is None:
        return None
    unit = match.group(2) or default_unit
    if unit not in units:
        return None
    return Decimal(match.group(1)) * units[unit] / units[default_unit]


def _with_units(
    kind: str, units: dict[str, Decimal], base: str, low: int, high: int, describe: str
) -> ParameterRule:
    """A number with a unit (``units``, relative to ``base``), stored as a whole number of ``base``."""

    def check(name: str, value: object) -> str:
        amount = _with_unit(value, units, base)
        if amount is None or amount != amount.to_integral_value() or not low <= amount <= high:
            raise _fail(name, describe)
        return f"{int(amount)}{base}"

    return ParameterRule(kind, describe, check)


def _memory(low_kb: int, high_kb: int, example: str) -> ParameterRule:
    describe = (
        f"a memory size between {_kb_text(low_kb)} and {_kb_text(high_kb)} "
        f"(units kB, MB, GB; a bare number means kB), e.g. {example!r}"
    )
    return _with_units("memory", _MEMORY_UNITS_KB, "kB", low_kb, high_kb, describe)


def _duration(low_ms: int, high_ms: int, example: str) -> ParameterRule:
    describe = (
        f"a duration between {low_ms} ms and {high_ms // 3_600_000} h "
        f"(units us, ms, s, min, h, d; a bare number means ms; 0 disables), e.g. {example!r}"
    )
    return _with_units("duration", _DURATION_UNITS_MS, "ms", low_ms, high_ms, describe)


def _boolean() -> ParameterRule:
    describe = "on or off (true/false)"

    def check(name: str, value: object) -> str:
        text = str(value).strip().lower() if isinstance(value, bool | int | str) else ""
        if isinstance(value, bool):
            return "on" if value else "off"
        if text in _TRUE:
            return "on"
        if text in _FALSE:
            return "off"
        raise _fail(name, describe)

    return ParameterRule("boolean", describe, check)


def _choice(*choices: str) -> ParameterRule:
    describe = f"one of {', '.join(choices)}"

    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise _fail(name, describe)
        return value.strip().lower()

    return ParameterRule("enum", describe, check)


def _time_zone() -> ParameterRule:
    describe = "an IANA time zone name such as 'UTC' or 'Europe/Berlin'"

    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", value):
            raise _fail(name, describe)
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _fail(name, describe) from None
        return value

    return ParameterRule("string", describe, check)


def _kb_text(kb: int) -> str:
    for unit, size in (("TB", 1024**3), ("GB", 1024**2), ("MB", 1024)):
        if kb >= size and kb % size == 0:
            return f"{kb // size}{unit}"
    return f"{kb}kB"


_HOUR_MS = 3_600_000

SETTABLE_PARAMETERS: dict[str, ParameterRule] = {
    "max_connections": _integer(25, 5000),
    "work_mem": _memory(64, 2 * 1024**2, "16MB"),
    "maintenance_work_mem": _memory(1024, 2 * 1024**2, "256MB"),
    "temp_buffers": _memory(800, 1024**2, "8MB"),
    "statement_timeout": _duration(0, 24 * _HOUR_MS, "30s"),
    "lock_timeout": _duration(0, 24 * _HOUR_MS, "10s"),
    "idle_in_transaction_session_timeout": _duration(0, 24 * _HOUR_MS, "5min"),
    "idle_session_timeout": _duration(0, 24 * _HOUR_MS, "1h"),
    "log_min_duration_statement": _duration(-1, 24 * _HOUR_MS, "500ms"),
    "log_statement": _choice("none", "ddl", "mod", "all"),
    "log_connections": _boolean(),
    "log_disconnections": _boolean(),
    "log_lock_waits": _boolean(),
    "track_io_timing": _boolean(),
    "jit": _boolean(),
    "default_statistics_target": _integer(1, 10000),
    "random_page_cost": _real(0, 100),
    "effective_io_concurrency": _integer(0, 1000),
    "max_parallel_workers_per_gather": _integer(0, 64),
    "autovacuum_vacuum_scale_factor": _real(0, 1),
    "autovacuum_analyze_scale_factor": _real(0, 1),
    "timezone": _time_zone(),
}
"""The allow-list: parameter name -> its rule. Names are PostgreSQL's, lower case."""

MAX_SERVER_PARAMETERS = len(SETTABLE_PARAMETERS)


def checked_server_parameters(value: object) -> dict[str, str]:
    """``value`` as ``{name: normalised value}`` if every name is settable and every value fits its rule."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "server_parameters", "server_parameters must be a map of parameter names to values"
        )
    out: dict[str, str] = {}
    for raw_name, raw_value in value.items():
        name = raw_name.strip().lower() if isinstance(raw_name, str) else ""
        rule = SETTABLE_PARAMETERS.get(name)
        if rule is None:
            shown = raw_name if isinstance(raw_name, str) and len(raw_name) <= 63 else "(name)"
            raise PydanticCustomError(
                "server_parameter_not_settable",
                f"server_parameters.{shown} is not a settable parameter; settable: "
                f"{', '.join(sorted(SETTABLE_PARAMETERS))}",
            )
        if name in out:
            raise PydanticCustomError("server_parameter", f"server_parameters.{name} is given twice")
        out[name] = rule.check(name, raw_value)
    return out
