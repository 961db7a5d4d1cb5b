"""The CLI's instance table stays readable at 80 columns and shows everything when there is room."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from cli.render import instances_table

LONG_NAME = "orders-service-primary-database-eu-west"  # 39 characters, close to the 40 allowed
ITEMS: list[dict[str, Any]] = [
    {
        "id": "3f2b6a0e-6f51-4c39-9e0e-1a2b3c4d5e6f",
        "name": LONG_NAME,
        "state": "running",
        "health_status": "healthy",
        "runtime": "kubernetes",
        "postgres_version": "17",
        "storage_size": "10Gi",
        "host": "10.240.0.17",
        "port": 5432,
    },
    {
        "id": "0c4e1f44-95c3-4c8e-a7d1-2f6d8c9b0a11",
        "name": "s",
        "state": "creating",
        "health_status": "unknown",
        "runtime": "local",
        "postgres_version": "18",
        "storage_size": "1Gi",
        "host": None,
        "port": None,
    },
]


def render(width: int, *, wide: bool = False) -> list[str]:
    console = Console(width=1000 if wide else width, record=True, color_system=None)
    console.print(instances_table(ITEMS, width=width, wide=wide))
    return [line.rstrip() for line in console.export_text().splitlines() if line.strip()]


def row_of(lines: list[str], instance_id: str) -> list[str]:
    return next(line for line in lines if instance_id in line).split()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_narrow_terminals_get_whole_ids_and_states_on_one_line(width: int) -> None:
    lines = render(width)
    assert max(map(len, lines)) <= width
    assert len(lines) == 4  # header, rule, one line per instance: nothing folded
    first, second = row_of(lines, str(ITEMS[0]["id"])), row_of(lines, str(ITEMS[1]["id"]))
    assert "running" in first and "healthy" in first
    assert "creating" in second and "unknown" in second and "s" in second
    name = first[1]
    assert name == LONG_NAME or (name.endswith("…") and LONG_NAME.startswith(name[:-1]))


def test_80_columns_cut_the_long_name_with_an_ellipsis_and_drop_secondary_columns() -> None:
    lines = render(80)
    header = lines[0].split()
    assert header == ["ID", "NAME", "STATE", "HEALTH"]
    assert row_of(lines, str(ITEMS[0]["id"]))[1].endswith("…")


def test_200_columns_show_every_column_in_full() -> None:
    lines = render(200)
    assert lines[0].split() == ["ID", "NAME", "STATE", "HEALTH", "RUNTIME", "VERSION", "STORAGE", "ENDPOINT"]
    assert row_of(lines, str(ITEMS[0]["id"])) == [
        "3f2b6a0e-6f51-4c39-9e0e-1a2b3c4d5e6f",
        LONG_NAME,
        "running",
        "healthy",
        "kubernetes",
        "17",
        "10Gi",
        "10.240.0.17:5432",
    ]
    assert row_of(lines, str(ITEMS[1]["id"]))[-1] == "-"


def test_wide_shows_every_column_even_on_a_narrow_terminal() -> None:
    lines = render(80, wide=True)
    assert len(lines[0].split()) == 8
    assert LONG_NAME in row_of(lines, str(ITEMS[0]["id"]))
