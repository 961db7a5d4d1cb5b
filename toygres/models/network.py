"""Who may open connections to an instance: the ingress sources a create request allows.

Every instance gets a NetworkPolicy that admits port 5432 only from the control plane and from
these sources (see ``toygres.runtimes.manifests.network_policy_manifest``). A source is either an
address range (``cidr``) or the pods of the namespaces a label selector picks
(``namespace_selector``, optionally narrowed by ``pod_selector``), which is how Kubernetes itself
names peers. Selectors must not be empty: an empty selector means "every namespace", which is
exactly what the policy exists to prevent.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from .validation import StrictModel

MAX_ALLOWED_SOURCES = 20
MAX_SELECTOR_LABELS = 10

_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def cidr(value: object, field: str) -> str:
    """``value`` as a normalised CIDR (``10.1.2.3/8`` -> ``10.0.0.0/8``); a field error otherwise."""
    if not isinstance(value, str):
        raise PydanticCustomError("cidr", f"{field} must be a CIDR range such as 10.0.0.0/8")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise PydanticCustomError(
            "cidr", f"{field} must be a CIDR range such as 10.0.0.0/8 or 2001:db8::/32"
        ) from None


def label_selector(value: object, field: str) -> dict[str, str]:
    """A non-empty ``matchLabels`` map whose keys and values Kubernetes accepts."""
    if not isinstance(value, dict) or not value:
        raise PydanticCustomError(
            "label_selector",
            f'{field} must be a non-empty map of labels, e.g. {{"team": "orders"}} '
            "(an empty selector would match every namespace)",
        )
    if len(value) > MAX_SELECTOR_LABELS:
        raise PydanticCustomError("label_selector", f"{field} may hold at most {MAX_SELECTOR_LABELS} labels")
    out: dict[str, str] = {}
    for key, label in value.items():
        if not isinstance(key, str) or not _label_key_ok(key):
            raise PydanticCustomError(
                "label_key",
                f"{field}: {key!r} is not a label key ([prefix/]name; name: letters, digits, '-', '_', '.', "
                "at most 63 characters)",
            )
        if not isinstance(label, str) or not _LABEL_VALUE_RE.match(label):
            raise PydanticCustomError(
                "label_value",
                f"{field}: the value of {key!r} is not a label value (letters, digits, '-', '_', '.', "
                "at most 63 characters)",
            )
        out[key] = label
    return out


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return False
    return bool(_LABEL_NAME_RE.match(name))


class IngressSource(StrictModel):
    """One allowed source of connections: ``cidr``, or ``namespace_selector`` (+ ``pod_selector``)."""

    cidr: str | None = None
    namespace_selector: dict[str, str] | None = None
    pod_selector: dict[str, str] | None = None

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, value: object) -> object:
        return None if value is None else cidr(value, "allowed_sources.cidr")

    @field_validator("namespace_selector", "pod_selector", mode="before")
    @classmethod
    def _selector(cls, value: object, info: object) -> object:
        name = getattr(info, "field_name", "selector")
        return None if value is None else label_selector(value, f"allowed_sources.{name}")

    @model_validator(mode="after")
    def _one_kind(self) -> IngressSource:
        if (self.cidr is None) == (self.namespace_selector is None):
            raise PydanticCustomError(
                "ingress_source",
                "allowed_sources: each source needs exactly one of 'cidr' and 'namespace_selector'",
            )
        if self.pod_selector is not None and self.namespace_selector is None:
            raise PydanticCustomError(
                "ingress_source", "allowed_sources: 'pod_selector' narrows a 'namespace_selector'; give both"
            )
        return self


def allowed_sources(value: object) -> object:
    """The list rule: at most :data:`MAX_ALLOWED_SOURCES` entries (each entry validates itself)."""
    if isinstance(value, list) and len(value) > MAX_ALLOWED_SOURCES:
        raise PydanticCustomError(
            "allowed_sources", f"allowed_sources may hold at most {MAX_ALLOWED_SOURCES} sources"
        )
    return value
