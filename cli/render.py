"""Tables the CLI prints, kept readable at any terminal width.

Ids, names and states are what a reader scans and copies, so they never wrap inside a cell: on a
narrow terminal fewer columns are shown and a long name is cut with an ellipsis, never folded
across lines ("runni / ng"). ``--wide`` shows every column whatever the width (lines may then run
past the edge); ``--json`` gives everything, unformatted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

#: below this width only id, name, state and health fit beside a 36-character id
MEDIUM_WIDTH = 110
#: from this width the version and storage columns fit too
WIDE_WIDTH = 140


@dataclass(frozen=True)
class _Column:
    title: str
    min_width: int = 0
    #: a truncatable column gives up characters (with an ellipsis) so that the others need not
    truncatable: bool = False


_ID = _Column("ID", min_width=36)
_NAME = _Column("NAME", min_width=8, truncatable=True)
_STATE = _Column("STATE", min_width=8)
_HEALTH = _Column("HEALTH", min_width=9)
_RUNTIME = _Column("RUNTIME", min_width=10)
_VERSION = _Column("VERSION")
_STORAGE = _Column("STORAGE")
_ENDPOINT = _Column("ENDPOINT", truncatable=True)


def _columns(width: int, wide: bool) -> list[_Column]:
    if wide or width >= WIDE_WIDTH:
        return [_ID, _NAME, _STATE, _HEALTH, _RUNTIME, _VERSION, _STORAGE, _ENDPOINT]
    if width >= MEDIUM_WIDTH:
        return [_ID, _NAME, _STATE, _HEALTH, _RUNTIME, _ENDPOINT]
    return [_ID, _NAME, _STATE, _HEALTH]


def _cell(item: Mapping[str, Any], column: _Column) -> str:
    if column is _ENDPOINT:
        return f"{item['host']}:{item['port']}" if item.get("host") else "-"
    key = {
        "ID": "id",
        "NAME": "name",
        "STATE": "state",
        "HEALTH": "health_status",
        "RUNTIME": "runtime",
        "VERSION": "postgres_version",
        "STORAGE": "storage_size",
    }[column.title]
    value = item.get(key)
    return "-" if value is None else str(value)


#: what the box draws around and between cells: one space at each edge, three between columns
_EDGES = 2
_GAP = 3


def instances_table(items: Sequence[Mapping[str, Any]], *, width: int, wide: bool = False) -> Table:
    """The ``instances list`` table for a terminal ``width`` columns wide (all columns if ``wide``).

    Without ``wide`` the table fits ``width``: the fixed columns keep their natural width and the
    truncatable ones (name, endpoint) share what is left, cut with an ellipsis when they must.
    """
    columns = _columns(width, wide)
    rows = [[_cell(item, column) for column in columns] for item in items]
    natural = [
        max([len(column.title), column.min_width, *(len(row[i]) for row in rows)])
        for i, column in enumerate(columns)
    ]
    left = width - _EDGES - _GAP * (len(columns) - 1)
    left -= sum(natural[i] for i, column in enumerate(columns) if not column.truncatable)
    # each truncatable column keeps at least its title; what is left over goes to the first ones
    extra = left - sum(len(column.title) for column in columns if column.truncatable)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i, column in enumerate(columns):
        max_width: int | None = None
        if column.truncatable and not wide:
            max_width = max(min(natural[i], len(column.title) + extra), len(column.title))
            extra -= max_width - len(column.title)
        table.add_column(column.title, no_wrap=True, overflow="ellipsis", max_width=max_width)
    for row in rows:
        table.add_row(*row)
    return table
