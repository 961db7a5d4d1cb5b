"""Kubernetes resource quantities, and the CPU and memory an instance asks for.

Quantities (k8s.io/apimachinery/pkg/api/resource) are parsed here rather than with
``kubernetes.utils.parse_quantity`` because importing that loads the whole generated client,
which costs every HTTP cold start for a twenty-line grammar.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from .validation import StrictModel

_QUANTITY_RE = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

GI = Decimal(2) ** 30
STORAGE_MIN = GI
STORAGE_MAX = 16 * Decimal(2) ** 40
CPU_MIN = Decimal("0.1")
CPU_MAX = Decimal(64)
MEMORY_MIN = 128 * Decimal(2) ** 20
MEMORY_MAX = 512 * GI


def parse_quantity(text: str) -> Decimal:
    """Value of a Kubernetes quantity (``500m`` -> 0.5, ``2Gi`` -> 2147483648); ValueError if malformed."""
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        try:
            return number.scaleb(int(suffix[1:]))
        except (InvalidOperation, ValueError) as exc:  # pragma: no cover - regex guarantees digits
            raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    return number * _QUANTITY_SUFFIXES[suffix]


def quantity_in_range(
    value: object, field: str, example: str, low: Decimal, high: Decimal, bounds: str
) -> str:
    """``value`` stripped, if it is a quantity between ``low`` and ``high``; a field error otherwise."""
    if not isinstance(value, str):
        raise PydanticCustomError("quantity_type", f"{field} must be a string such as {example!r}")
    text = value.strip()
    try:
        amount = parse_quantity(text)
    except ValueError:
        raise PydanticCustomError(
            "quantity", f"{field} must be a Kubernetes quantity such as {example!r}"
        ) from None
    if not low <= amount <= high:
        raise PydanticCustomError("quantity_range", f"{field} must be between {bounds}")
    return text


def storage_size(value: object) -> str:
    """A volume size: a whole number of bytes between 1Gi and 16Ti."""
    text = quantity_in_range(value, "storage_size", "10Gi", STORAGE_MIN, STORAGE_MAX, "1Gi and 16Ti")
    if parse_quantity(text) != parse_quantity(text).to_integral_value():
        raise PydanticCustomError("quantity", "storage_size must be a whole number of bytes")
    return text


class ResourceRequests(StrictModel):
    """CPU and memory requests of the PostgreSQL container, as Kubernetes quantities."""

    cpu: str = "500m"
    memory: str = "1Gi"

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: object) -> str:
        return quantity_in_range(value, "cpu", "500m", CPU_MIN, CPU_MAX, "100m and 64 cores")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> str:
        return quantity_in_range(value, "memory", "2Gi", MEMORY_MIN, MEMORY_MAX, "128Mi and 512Gi")
