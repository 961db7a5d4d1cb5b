"""JSON at the engine's edges: what may be stored, and how stored JSON becomes typed values.

Everything the engine stores (inputs, results, outputs, event data, custom status) is plain
JSON, so any process can replay it and any provider can keep it. ``ensure_json`` refuses a
value that is not, before anything is written. ``validate_as`` turns a stored value into the
type orchestration code asked for (``result_type=``); it runs when a result is delivered to
the code, on every replay, so history keeps the raw JSON and replays stay deterministic.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import DurableError, ErrorCategory, ErrorInfo, InvalidInputError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")

#: the ``ErrorInfo.type`` of a result that does not fit the ``result_type`` it was asked as
RESULT_VALIDATION_ERROR = "ResultValidationError"
#: validation errors quoted in the message; all of them are in ``details["errors"]``
_QUOTED_ERRORS = 3


def ensure_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from None


#: one adapter per type: building one costs far more than validating with it, and replays
#: validate every delivered result again
_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(result_type: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(result_type)
    if adapter is None:
        # pydantic is imported by the first typed result, not by ``import durable_engine``
        from pydantic import TypeAdapter

        adapter = _adapters[result_type] = TypeAdapter(result_type)
    return adapter


def check_result_type(result_type: Any) -> None:
    """Fail at scheduling time, as a configuration error, for a type pydantic cannot validate."""
    try:
        _adapter(result_type)
    except Exception as exc:  # pydantic raises several kinds (schema generation, type errors)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"result_type {result_type!r} cannot be validated by pydantic: {reason}"
        info = ErrorInfo(ErrorCategory.CONFIGURATION, "InvalidResultType", message)
        raise DurableError(message, info) from None


def validate_as(result_type: type[T], value: Any, what: str) -> T:
    """``value`` as a ``result_type`` (a pydantic model, a dataclass, any type pydantic knows).

    A value that does not fit raises a :class:`DurableError` whose ``ErrorInfo`` is of the
    application category, type ``ResultValidationError``, with pydantic's errors in ``details``.
    """
    from pydantic import ValidationError

    try:
        return _adapter(result_type).validate_python(value)  # type: ignore[no-any-return]
    except ValidationError as exc:
        errors = [
            {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        quoted = "; ".join(f"{'.'.join(e['loc']) or 'value'}: {e['msg']}" for e in errors[:_QUOTED_ERRORS])
        more = f" (and {len(errors) - _QUOTED_ERRORS} more)" if len(errors) > _QUOTED_ERRORS else ""
        type_name = getattr(result_type, "__name__", repr(result_type))
        message = f"{what} is not a valid {type_name}: {quoted}{more}"
        info = ErrorInfo(ErrorCategory.APPLICATION, RESULT_VALIDATION_ERROR, message, {"errors": errors})
        raise DurableError(message, info) from None
