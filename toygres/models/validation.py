"""What every model at the edge shares: strictness, and error messages that never echo input."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Request-style model: unknown fields are errors; errors never print inputs (passwords).

    A typo (``storgae_size``) must be an error instead of a silently ignored option.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Human-readable ``{"field", "message"}`` pairs, WITHOUT the rejected input values.

    Use this (not ``exc.errors()``) in API responses and logs: pydantic's own error entries echo the
    input, which for a rejected password would be the password.
    """
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        out.append({"field": field, "message": err["msg"]})
    return out


def load_stored(model: type[M], data: Any) -> M:
    """Validate data another version of Toygres may have written: a row, an orchestration input.

    Fields this version does not know are ignored (not errors), at every nesting level: a newer
    version that added a field, then rolled back, must not make old rows or histories unreadable.
    Strict request models stay strict at the edge; this is for data already inside.
    """
    return model.model_validate(data, extra="ignore")
