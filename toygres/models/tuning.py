"""PostgreSQL memory and connection parameters derived from an instance's resources.

The official image starts with PostgreSQL's defaults (``shared_buffers = 128MB`` whatever the pod
has), which wastes a large pod and can overcommit a small one. These are the usual rules of thumb,
kept deliberately simple so a platform engineer can predict them:

==========================  ===========================================================
``shared_buffers``          25 % of the memory limit
``effective_cache_size``    75 % of the memory limit (a planner hint, allocates nothing)
``max_connections``         one per 10 MiB of memory, between 25 and 1000
``work_mem``                what ``shared_buffers`` leaves, over ``max_connections`` x 3
                            (a query may run a few sorts at once), between 1 MB and 256 MB
``maintenance_work_mem``    1/16 of the memory limit, between 16 MB and 2 GB
==========================  ===========================================================

A caller's ``server_parameters`` win over these; ``work_mem`` follows a caller's
``max_connections``. Values are in kB, the unit ``postgresql.conf`` uses for memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from .resources import parse_quantity

_KB = 1024
_MB_IN_KB = 1024


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def derived_parameters(memory: str, *, max_connections: int | None = None) -> dict[str, str]:
    """The five resource-derived parameters for a container with ``memory`` (a quantity) of memory."""
    memory_kb = int(parse_quantity(memory)) // _KB
    shared_buffers = max(memory_kb // 4, 16 * _MB_IN_KB)
    connections = max_connections or _clamp(memory_kb // (10 * _MB_IN_KB), 25, 1000)
    work_mem = _clamp((memory_kb - shared_buffers) // (connections * 3), 1 * _MB_IN_KB, 256 * _MB_IN_KB)
    maintenance = _clamp(memory_kb // 16, 16 * _MB_IN_KB, 2 * 1024 * _MB_IN_KB)
    return {
        "shared_buffers": f"{shared_buffers}kB",
        "effective_cache_size": f"{memory_kb * 3 // 4}kB",
        "max_connections": str(connections),
        "work_mem": f"{work_mem}kB",
        "maintenance_work_mem": f"{maintenance}kB",
    }


def effective_parameters(memory: str, user_parameters: Mapping[str, str]) -> dict[str, str]:
    """Derived parameters overlaid with the caller's (already validated) ones, sorted by name."""
    user_connections = user_parameters.get("max_connections")
    derived = derived_parameters(
        memory, max_connections=int(user_connections) if user_connections is not None else None
    )
    return dict(sorted({**derived, **user_parameters}.items()))


def shm_size_limit(memory: str) -> str:
    """Size of the memory-backed ``/dev/shm`` (dynamic shared memory of parallel queries): a quarter
    of the memory limit, at least 64Mi. It counts against the container's memory limit."""
    mib = max(int(parse_quantity(memory)) // (4 * 1024 * 1024), 64)
    return f"{mib}Mi"
