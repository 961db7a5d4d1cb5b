"""Toygres engine vs DBOS Transact on one embedded PostgreSQL: latency, throughput, idle CPU.

One PostgreSQL server (``toygres.pgserver.EmbeddedPostgres``, durable default settings:
fsync, synchronous_commit and full_page_writes on) holds one database per system. Each
system runs in its own subprocess (``bench.toygres_side`` / ``bench.dbos_side``), one after
the other, so they never share an event loop, a GIL or the two CPU cores. Idle CPU is measured
in two further subprocesses so the systems' background threads never mix.

Run ``python -m bench.engine_bench`` (full, ~3 minutes) or ``--quick`` (CI, ~1 minute).
The table and the method are documented in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/engine_bench.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.common import Sizes, parse_result
from toygres.pgserver import EmbeddedPostgres, Watchdog, dsn_for_database

REPO = Path(__file__).resolve().parents[1]
DATABASES = {"toygres": "bench_toygres", "dbos": "bench_dbos"}

#: used only with ``--no-durability`` (both systems then run on it; the table says so)
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextlib.contextmanager
def embedded_server(*, fast: bool = False) -> Iterator[dict[str, str]]:
    """Start a throw-away server, create one database per system, yield their DSNs, clean up."""
    base = Path(tempfile.mkdtemp(prefix="toygres-bench-"))
    settings = {"max_connections": "300", **(FAST_SETTINGS if fast else {})}
    server = EmbeddedPostgres(base / "data", server_settings=settings)
    watchdog: Watchdog | None = None
    try:
        server.start(timeout=60)
        watchdog = server.stop_when_process_exits()
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
            for db in DATABASES.values():
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        yield {"admin": server.dsn("postgres"), **{k: server.dsn(v) for k, v in DATABASES.items()}}
    finally:
        try:
            server.stop(mode="fast")
        finally:
            if watchdog is not None:
                watchdog.release()
            shutil.rmtree(base, ignore_errors=True)


def run_side(module: str, dsn: str, sizes: Sizes, scenario: str, extra: list[str], timeout: float) -> Any:
    cmd = [
        sys.executable,
        "-m",
        module,
        "--dsn",
        dsn,
        "--sizes",
        sizes.to_json(),
        "--scenario",
        scenario,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {scenario} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return parse_result(proc.stdout)


def machine_info(admin_dsn: str) -> dict[str, str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    from importlib.metadata import version

    return {
        "cpus": str(psutil.cpu_count()),
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "python": platform.python_version(),
        "postgresql": str(row[0]),
        "fsync": str(row[1]),
        "synchronous_commit": str(row[2]),
        "dbos": version("dbos"),
        "psycopg": version("psycopg"),
        "platform": platform.platform(),
    }


@dataclass
class Row:
    metric: str
    toygres: float
    dbos: float
    unit: str
    higher_is_better: bool
    target: str
    met: bool | None

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.toygres / self.dbos if self.dbos else float("inf")
        return self.dbos / self.toygres if self.toygres else float("inf")


def build_rows(t: dict[str, Any], d: dict[str, Any], sizes: Sizes) -> list[Row]:
    def lat(metric: str, tv: float, dv: float) -> Row:
        return Row(metric, tv, dv, "ms", False, "Toygres ≤ ⅓ DBOS", dv / tv >= 3.0)

    tp_t, tp_d = t["throughput"]["per_s"], d["throughput"]["per_s"]
    idle_t, idle_d = t["idle"]["idle"], d["idle"]["idle"]
    return [
        lat(f"1-activity latency p50 (N={sizes.seq_n})", t["seq"]["p50_ms"], d["seq"]["p50_ms"]),
        lat(f"1-activity latency p95 (N={sizes.seq_n})", t["seq"]["p95_ms"], d["seq"]["p95_ms"]),
        Row(
            f"throughput, {sizes.throughput_n} concurrent",
            tp_t,
            tp_d,
            "orch/s",
            True,
            "Toygres ≥ 5x DBOS",
            tp_t / tp_d >= 5.0,
        ),
        lat(
            f"{sizes.chain_len}-activity chain p50 (N={sizes.chain_n})",
            t["chain"]["p50_ms"],
            d["chain"]["p50_ms"],
        ),
        lat(
            f"fan-out/fan-in {sizes.fanout_width} p50 (N={sizes.fanout_n})",
            t["fanout"]["p50_ms"],
            d["fanout"]["p50_ms"],
        ),
        Row(
            "idle CPU, process only",
            idle_t["process_pct"],
            idle_d["process_pct"],
            "% core",
            False,
            "Toygres < 1%",
            idle_t["process_pct"] < 1.0,
        ),
        Row(
            "idle CPU, process + its PG backends",
            idle_t["total_pct"],
            idle_d["total_pct"],
            "% core",
            False,
            "Toygres < 1%",
            idle_t["total_pct"] < 1.0,
        ),
    ]


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(rows: list[Row], console: Console, title: str) -> None:
    table = Table(title=title)
    for col in ("metric", "unit", "Toygres", "DBOS", "ratio (better = >1)", "target", "met"):
        table.add_column(col, justify="left" if col in ("metric", "target") else "right")
    for r in rows:
        ratio_label = "T/D" if r.higher_is_better else "D/T"
        table.add_row(
            r.metric,
            r.unit,
            _fmt(r.toygres),
            _fmt(r.dbos),
            f"{r.ratio:.2f}x ({ratio_label})",
            r.target,
            "n/a" if r.met is None else ("yes" if r.met else "NO"),
        )
    console.print(table)


def markdown(rows: list[Row]) -> str:
    out = ["| metric | unit | Toygres | DBOS | ratio | target | met |", "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        ratio_label = "Toygres/DBOS" if r.higher_is_better else "DBOS/Toygres"
        out.append(
            f"| {r.metric} | {r.unit} | {_fmt(r.toygres)} | {_fmt(r.dbos)} | {r.ratio:.2f}x "
            f"({ratio_label}) | {r.target} | {'yes' if r.met else '**no**'} |"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smaller sizes for CI (about a minute)")
    for name, help_ in [
        ("warmup", "warm-up orchestrations before measuring"),
        ("seq-n", "sequential 1-activity runs"),
        ("throughput-n", "concurrent orchestrations"),
        ("chain-len", "activities per chain"),
        ("chain-n", "chain runs"),
        ("fanout-width", "activities per fan-out"),
        ("fanout-n", "fan-out runs"),
    ]:
        p.add_argument(f"--{name}", type=int, help=help_)
    p.add_argument("--idle-seconds", type=float, help="idle CPU window (default 10 s)")
    p.add_argument(
        "--dsn",
        help="admin URL of an existing server (CREATE DATABASE rights) instead of "
        "an embedded one; the databases bench_toygres/bench_dbos are recreated",
    )
    p.add_argument(
        "--no-durability",
        action="store_true",
        help="run the embedded server with fsync/synchronous_commit/full_page_writes off (both)",
    )
    p.add_argument("--only", choices=["toygres", "dbos"], help="run one side and print its raw JSON")
    p.add_argument("--json", type=Path, help="also write all raw results here")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument(
        "--toygres-args",
        default="",
        help="extra args for bench.toygres_side, e.g. "
        "'--orchestration-concurrency 8 --activity-concurrency 16 --max-pool 20'",
    )
    p.add_argument(
        "--dbos-args",
        default="",
        help="extra args for bench.dbos_side, e.g. '--throughput-mode queue --fanout-mode queue'",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="per-subprocess timeout (s)")
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    for field in (
        "warmup",
        "seq_n",
        "throughput_n",
        "chain_len",
        "chain_n",
        "fanout_width",
        "fanout_n",
        "idle_seconds",
    ):
        value = getattr(args, field)
        if value is not None:
            setattr(sizes, field, value)
    return sizes


@contextlib.contextmanager
def external_server(admin_dsn: str) -> Iterator[dict[str, str]]:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for db in DATABASES.values():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    yield {"admin": admin_dsn, **{k: dsn_for_database(admin_dsn, v) for k, v in DATABASES.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    console = Console(width=None if sys.stdout.isatty() else 150)
    server = external_server(args.dsn) if args.dsn else embedded_server(fast=args.no_durability)
    started = time.monotonic()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sides = {
        "toygres": ("bench.toygres_side", args.toygres_args.split()),
        "dbos": ("bench.dbos_side", args.dbos_args.split()),
    }
    results: dict[str, dict[str, Any]] = {}
    with server as dsns:
        info = machine_info(dsns["admin"])
        for name, (module, extra) in sides.items():
            if args.only and args.only != name:
                continue
            console.log(f"{name}: latency, throughput, chain, fan-out …")
            results[name] = run_side(module, dsns[name], sizes, "all", extra, args.timeout)
        for name, (module, extra) in sides.items():
            if args.only and args.only != name:
                continue
            console.log(f"{name}: idle CPU over {sizes.idle_seconds:g} s …")
            results[name]["idle"] = run_side(module, dsns[name], sizes, "idle", extra, args.timeout)
    elapsed = time.monotonic() - started
    document = {
        "machine": info,
        "sizes": vars(sizes),
        "results": results,
        "elapsed_s": elapsed,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    if args.only:
        console.print_json(json.dumps(results[args.only]))
        return 0
    rows = build_rows(results["toygres"], results["dbos"], sizes)
    durability = "fsync off (both)" if args.no_durability else f"fsync={info['fsync']}"
    title = (
        f"Toygres engine vs DBOS {info['dbos']} — PostgreSQL {info['postgresql']} ({durability}), "
        f"{info['cpus']} CPUs, Python {info['python']}"
    )
    render(rows, console, title)
    if args.markdown:
        print(markdown(rows))
    console.log(f"load average (1/5/15 min) before: {load_before}, after: {document['load_after']}")
    console.log(f"done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
