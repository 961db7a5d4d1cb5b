"""Instance passwords: how they are made and checked, and where they are kept.

The password only ever lives in a ``SecretStr`` on the request; everything that is stored or sent
through the durable engine carries a :class:`PasswordRef` (where the password is kept) instead, so
no history row, metadata row or log line can hold it.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_core import PydanticCustomError

from .validation import StrictModel

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128


def generate_password() -> str:
    """A 32-character URL-safe password (192 bits from ``secrets``): safe in connection URIs."""
    return secrets.token_urlsafe(24)


def checked_password(value: object) -> SecretStr:
    """``value`` as a ``SecretStr`` if it is an acceptable password; the error never echoes it."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str):
        raise PydanticCustomError("password_type", "password must be a string")
    if not PASSWORD_MIN_LENGTH <= len(raw) <= PASSWORD_MAX_LENGTH:
        raise PydanticCustomError(
            "password_length",
            f"password must have between {PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH} characters",
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        raise PydanticCustomError("password_chars", "password must not contain control characters")
    return SecretStr(raw)


class PasswordRef(StrictModel):
    """Where an instance password is kept — never the password itself.

    ``kubernetes-secret``: key ``key`` of Secret ``namespace/name``. ``local-file``: the file at ``name``.
    """

    store: Literal["kubernetes-secret", "local-file"]
    name: str = Field(min_length=1)
    namespace: str | None = None
    key: str = "password"

    def describe(self) -> str:
        """A hint telling a person how to fetch the password."""
        if self.store == "kubernetes-secret":
            ns = self.namespace or "default"
            return (
                f"The password is in Kubernetes Secret {ns}/{self.name} (key '{self.key}'): "
                f"kubectl get secret -n {ns} {self.name} -o jsonpath='{{.data.{self.key}}}' | base64 -d"
            )
        return f"The password is in the file {self.name} on the host running the local runtime."
