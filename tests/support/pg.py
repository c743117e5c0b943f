"""A PostgreSQL server for the test session, and cheap per-test databases on it.

``ROOST_TEST_DATABASE_URL`` names a database on a server where the tests may CREATE DATABASE;
without it, ``start_throwaway_server`` runs ``initdb`` + ``pg_ctl`` from the OS package in a
temporary directory on a free port (as an unprivileged user when we are root, since PostgreSQL
refuses to run as root) and stops and deletes it at the end.

Each test gets its own database cloned from a migrated template (``CREATE DATABASE x TEMPLATE
t``), which costs tens of milliseconds instead of a full migration.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio
import trio.lowlevel
import trio_asyncio

from roost.storage.database import open_database
from roost.storage.migrator import migrate

T = TypeVar("T")

class ServerUnavailable(Exception):
    """No PostgreSQL server could be found or started; the message says why."""


def url_with_database(url: str, dbname: str) -> str:
    """``url`` with its database name (the path) replaced by ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_trio(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(fn, *args)`` from sync code, even sync code called inside a running trio test
    (a test calling a database factory): there it runs in a thread of its own, blocking briefly."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return trio.run(fn, *args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(trio.run, fn, *args).result()


def admin_execute(url: str, *statements: str) -> None:
    """Run statements on one short-lived connection to ``url`` (from sync code, outside trio)."""

    async def run() -> None:
        async with trio_asyncio.open_loop() as loop:

            async def go() -> None:
                conn = await asyncpg.connect(url, timeout=10)
                try:
                    for statement in statements:
                        await conn.execute(statement)
                finally:
                    await conn.close()

            await loop.run_aio_coroutine(go())

    run_trio(run)


async def _migrate(url: str) -> None:
    async with open_database(url, pool_size=1) as db:
        await migrate(db)


@dataclass
class PgServer:
    """A server we may create databases on; ``admin_url`` names a database to connect to for that."""

    admin_url: str
    throwaway: bool
    template: str = field(default_factory=lambda: f"roost_template_{uuid.uuid4().hex[:8]}")
    _template_ready: bool = False

    def url_for(self, dbname: str) -> str:
        return url_with_database(self.admin_url, dbname)

    def ensure_template(self) -> None:
        """Create the migrated template database once (the first test that needs it pays)."""
        if self._template_ready:
            return
        admin_execute(self.admin_url, f"CREATE DATABASE {quote_ident(self.template)} TEMPLATE template0")
        try:
            run_trio(_migrate, self.url_for(self.template))
        except BaseException:
            self.drop_database(self.template)  # the next test tries again from scratch
            raise
        self._template_ready = True

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database, migrated (cloned from the template) or empty; returns its name."""
        name = f"roost_test_{uuid.uuid4().hex[:12]}"
        if migrated:
            self.ensure_template()
            source = self.template
        else:
            source = "template0"
        admin_execute(self.admin_url, f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(source)}")
        return name

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends connections a test left open instead of failing the drop.
        admin_execute(self.admin_url, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def close(self) -> None:
        if self._template_ready and not self.throwaway:
            self.drop_database(self.template)
            self._template_ready = False


def connectable(url: str) -> str | None:
    """None when ``url`` accepts a connection, else the reason it does not."""
    try:
        admin_execute(url, "SELECT 1")
    except Exception as exc:  # any failure is a reason to report, not to crash collection
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # trio wraps the driver's error; name the error itself
        return f"{type(exc).__name__}: {exc}"
    return None


# -- the throwaway cluster ------------------------------------------------------------------------


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has initdb and pg_ctl."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        major = bindir.parent.name
        if (bindir / "pg_ctl").exists() and major.isdigit():
            found.append((int(major), bindir))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """Who runs initdb/pg_ctl: ourselves, unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


# Runs beside pytest: if pytest dies without cleaning up (SIGKILL, a CI timeout), stop the
# cluster and delete its directory so no postmaster outlives the test run.
_REAPER = """
import os, shutil, subprocess, sys, time
parent, pg_ctl, datadir, root, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
prefix = ["runuser", "-u", user, "--"] if user else []
while os.getppid() == parent:  # pytest started us; when it dies we are handed to another parent
    if not os.path.isdir(root):
        sys.exit(0)
    time.sleep(0.5)
subprocess.run(prefix + [pg_ctl, "-D", datadir, "-m", "immediate", "stop"], capture_output=True)
shutil.rmtree(root, ignore_errors=True)
"""


_TMPFS_NEEDED_BYTES = 1024 * 1024 * 1024  # the cluster stays under ~200 MB with the WAL limits below


def _cluster_parent() -> str:
    """Where the cluster lives: a tmpfs when there is room, else /tmp (both world-traversable).

    CREATE DATABASE on tmpfs takes ~10 ms against ~250 ms on ext4 on these machines, fsync off
    or not: the clone creates and extends files, which is what ext4 is slow at here.
    """
    try:
        if shutil.disk_usage("/dev/shm").free >= _TMPFS_NEEDED_BYTES:
            return "/dev/shm"
    except OSError:
        pass
    return "/tmp"


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, for one test session."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="roost-pg-", dir=_cluster_parent()))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port: int | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        os.chmod(self.root, 0o755)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._start_reaper()

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run(
            prefix + list(args), capture_output=True, text=True, timeout=timeout, cwd=self.root
        )

    def start(self) -> str:
        """initdb and start; returns the URL of the ``postgres`` database."""
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )
        if done.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        last_error = ""
        for _ in range(3):  # the free port may be taken between finding and binding it
            port = _free_port()
            options = (
                f"-F -p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                # a small WAL keeps a tmpfs cluster small: every clone writes the template to WAL
                " -c max_connections=200 -c max_wal_size=96MB -c min_wal_size=32MB"
            )
            done = self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-o", options, "-w", "-t", "60", "start", timeout=90,
            )
            if done.returncode == 0:
                self.port = port
                return f"postgresql://postgres@127.0.0.1:{port}/postgres"
            last_error = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else done.stderr
        raise ServerUnavailable(f"pg_ctl start failed: {last_error.strip()}")

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(os.getpid()), str(self.bindir / "pg_ctl"), str(self.datadir),
             str(self.root), self.user or ""],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        try:
            if (self.datadir / "postmaster.pid").exists():  # also after a start that timed out
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._reaper is not None:  # it exits on its own once the directory is gone
                try:
                    self._reaper.send_signal(signal.SIGTERM)
                    self._reaper.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


def start_throwaway_server() -> tuple[PgServer, ThrowawayCluster]:
    """Start a cluster from the OS package's binaries.

    Raises:
        ServerUnavailable: the binaries are missing or the server would not start.
    """
    bindir = find_bindir()
    if bindir is None:
        raise ServerUnavailable(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install the 'postgresql' "
            "package, or set ROOST_TEST_DATABASE_URL)"
        )
    try:
        cluster = ThrowawayCluster(bindir)
    except OSError as exc:
        raise ServerUnavailable(f"cannot prepare a directory for the cluster: {exc}") from exc
    try:
        url = cluster.start()
    except (OSError, subprocess.SubprocessError) as exc:  # runuser missing, a hung initdb or pg_ctl
        cluster.stop()
        raise ServerUnavailable(f"cannot start a throwaway cluster: {exc}") from exc
    except BaseException:
        cluster.stop()
        raise
    return PgServer(admin_url=url, throwaway=True), cluster
