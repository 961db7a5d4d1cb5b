"""Rules for the names a caller chooses: instance names (DNS labels) and PostgreSQL identifiers.

Each rule raises a ``PydanticCustomError`` whose message names the field and says what a good value
looks like, because these messages are what an API caller reads.
"""

from __future__ import annotations

import re

from pydantic_core import PydanticCustomError

NAME_MAX_LENGTH = 40
"""User-facing names are capped at 40 although a DNS-1123 label may have 63 characters: the
Kubernetes name appends ``-`` and 8 hex digits of the instance id (49 characters), and a StatefulSet
name must stay within 52 characters because the controller adds ``-<10-char hash>`` to a 63-character
label value."""

_DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_SUBDOMAIN_MAX = 253
_PG_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_PG_IDENTIFIER_MAX = 63  # NAMEDATALEN - 1

# PostgreSQL's *reserved* key words (they cannot be used as a role or database name without
# quoting, which breaks tools that build SQL from the name), plus role names the server refuses.
_PG_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign from
    grant group having in initially intersect into lateral leading limit localtime localtimestamp
    not null offset on only or order placing primary references returning select session_user some
    symmetric system_user table then to trailing true union unique user using variadic when where
    window with public none
    """.split()
)


def dns_label(value: str, field: str, max_length: int) -> str:
    """``value`` if it is a DNS-1123 label starting with a letter, of at most ``max_length`` chars."""
    if len(value) > max_length or not _DNS_LABEL_RE.match(value):
        raise PydanticCustomError(
            "dns_label",
            f"{field} must be a DNS-1123 label: lowercase letters, digits and '-', starting with a "
            f"letter and ending with a letter or digit, at most {max_length} characters",
        )
    return value


def dns_subdomain(value: str, field: str) -> str:
    """``value`` if it is a DNS-1123 subdomain (the shape of Kubernetes object names)."""
    if len(value) > _DNS_SUBDOMAIN_MAX or not _DNS_SUBDOMAIN_RE.match(value):
        raise PydanticCustomError(
            "dns_subdomain",
            f"{field} must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            f"at most {_DNS_SUBDOMAIN_MAX} characters",
        )
    return value


def pg_identifier(value: str, field: str) -> str:
    """``value`` if it can name a role or database without quoting and the server accepts it."""
    if len(value) > _PG_IDENTIFIER_MAX or not _PG_IDENTIFIER_RE.match(value):
        raise PydanticCustomError(
            "pg_identifier",
            f"{field} must be a PostgreSQL identifier: lowercase letters, digits and '_', starting "
            f"with a letter or '_', at most {_PG_IDENTIFIER_MAX} characters",
        )
    if value.startswith("pg_"):
        raise PydanticCustomError("pg_reserved_prefix", f"{field} must not start with 'pg_' (reserved)")
    if value in _PG_RESERVED:
        raise PydanticCustomError(
            "pg_reserved_word", f"{field} must not be the reserved SQL key word {value!r}"
        )
    return value
