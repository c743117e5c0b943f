"""Fixtures shared by every tier: fresh databases on both backends; the tiers' folder check.

``database_url`` (and the ``db`` fixture over it) is parametrised over ``sqlite`` and
``postgres``; the postgres parameter carries ``pytest.mark.postgres``. PostgreSQL is the server
``ROOST_TEST_DATABASE_URL`` names, or else a throwaway cluster this session starts and stops
(see ``tests/support/pg.py``). Without either, postgres tests skip with the reason, except when
``CI=true``: then they fail, and any postgres test that skips for whatever reason is turned into
a failure, so a CI run can never pass without having run them.

When ``ROOST_TEST_SUMMARY`` names a file, the session writes ``key=value`` lines there
(``postgres_passed``, ``postgres_skipped``, ``postgres_failed``, ...) for ``.ci/run`` to check.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import trio
from trio.testing import MockClock

from roost.storage.database import Database, open_database
from roost.storage.migrator import migrate
from tests.support import watchdog
from tests.support.clock import ThreadAwareness
from tests.support.pg import (
    PgServer,
    ServerUnavailable,
    ThrowawayCluster,
    connectable,
    find_bindir,
    run_trio,
    start_throwaway_server,
)
from tests.support.webhook_receiver import Receiver, running_receiver

CI = os.environ.get("CI", "").strip().lower() == "true"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and the PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    watchdog.install(config)  # per-test limits that fail one test with its stacks (tests/support/watchdog.py)
    # Browser tests' screenshots (tests/browser): one folder per run, named here so that pytest-xdist
    # workers (which inherit the environment) all write to it and the controller can print it.
    if not hasattr(config, "workerinput") and not os.environ.get("ROOST_SCREENSHOTS", "").strip():
        os.environ["ROOST_SCREENSHOTS"] = str(Path(tempfile.gettempdir()) / f"roost-screenshots-{os.getpid()}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    folder = Path(os.environ.get("ROOST_SCREENSHOTS", "").strip() or "/nonexistent")
    if folder.is_dir():
        shots = len(list(folder.glob("*.png")))
        terminalreporter.write_line(f"browser screenshots ({shots}): {folder}")


E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers are folders, and the folder is the marker: a test under ``tests/e2e`` (it starts real
    ``roost serve`` processes) is marked ``e2e``, and no test elsewhere is."""
    wrong = [item.nodeid for item in items
             if (item.get_closest_marker("e2e") is not None) != item.path.is_relative_to(E2E)]
    if wrong:
        raise pytest.UsageError("the e2e marker and the tests/e2e folder disagree (mark the file, or move it): "
                                + ", ".join(wrong[:5]))


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def autojump_clock(monkeypatch: pytest.MonkeyPatch) -> MockClock:
    """pytest-trio's ``autojump_clock``, but time stands still while a worker thread works
    (``tests/support/clock.py``): every SQLite call runs in one."""
    clock = MockClock(autojump_threshold=0)
    monkeypatch.setattr(trio.to_thread, "run_sync", ThreadAwareness(clock).wrap(trio.to_thread.run_sync))
    return clock


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session (started on first use, stopped at the end)."""
    url = os.environ.get("ROOST_TEST_DATABASE_URL", "").strip()
    cluster: ThrowawayCluster | None = None
    server: PgServer | None = None
    try:
        if url:
            reason = connectable(url)
            if reason:
                _unavailable(f"ROOST_TEST_DATABASE_URL={_redacted(url)} does not accept connections: {reason}")
            server = PgServer(admin_url=url, throwaway=False)
        else:
            server, cluster = start_throwaway_server()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    assert server is not None
    try:
        yield server
    finally:
        try:
            server.close()
        finally:
            if cluster is not None:
                cluster.stop()


# -- SQLite --------------------------------------------------------------------------------------


async def _migrate(url: str) -> None:
    async with open_database(url) as db:
        await migrate(db)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, built once; tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "roost.db"
    run_trio(_migrate, f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # fold the WAL into the main file so one copy is complete
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


# -- per-test databases on either backend --------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgres': which backend this run of the test uses."""
    return request.param


@pytest.fixture
def make_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., str]]:
    """A factory for fresh databases on this test's backend: ``make_database_url(migrated=True)``.

    Callable from sync fixtures and from inside async tests alike; every database it makes is
    deleted when the test ends.
    """
    made: list[str] = []
    # Resolved now, not inside make(): a session fixture cannot be set up from inside a trio test.
    server: PgServer | None = request.getfixturevalue("pg_server") if backend == "postgres" else None
    template: Path | None = request.getfixturevalue("sqlite_template") if backend == "sqlite" else None

    def make(*, migrated: bool = True) -> str:
        if server is None:
            assert template is not None
            path = tmp_path / f"roost-{len(made)}.db"
            if migrated:
                shutil.copyfile(template, path)
            made.append(str(path))
            return f"sqlite:///{path}"
        name = server.create_database(migrated=migrated)
        made.append(name)
        return server.url_for(name)

    yield make
    if server is not None:
        for name in made:
            server.drop_database(name)


@pytest.fixture
def database_url(make_database_url: Callable[..., str]) -> str:
    """A fresh, migrated database of this test's backend, as a URL."""
    return make_database_url()


@pytest.fixture
def unmigrated_database_url(make_database_url: Callable[..., str]) -> str:
    """A fresh, empty database (no tables at all) of this test's backend."""
    return make_database_url(migrated=False)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An open ``Database`` on a fresh, migrated database."""
    async with open_database(database_url) as database:
        yield database


# -- CI: PostgreSQL tests never skip -------------------------------------------------------------

_postgres_outcomes: Counter[str] = Counter()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if CI and report.skipped and item.get_closest_marker("postgres") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: PostgreSQL tests must run, never skip, but this one skipped: {reason}"
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.failed:
        _postgres_outcomes["failed"] += 1
    elif report.skipped:
        _postgres_outcomes["skipped"] += 1
    elif report.when == "call" and report.passed:
        _postgres_outcomes["passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("ROOST_TEST_SUMMARY")
    if not target or hasattr(session.config, "workerinput"):
        return  # under pytest-xdist the controller sees every worker's reports and writes it once
    lines = [
        f"exitstatus={int(exitstatus)}",
        f"collected={session.testscollected}",
        f"postgres_passed={_postgres_outcomes['passed']}",
        f"postgres_skipped={_postgres_outcomes['skipped']}",
        f"postgres_failed={_postgres_outcomes['failed']}",
    ]
    Path(target).write_text("\n".join(lines) + "\n")


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get("ROOST_TEST_DATABASE_URL", "").strip()
    if url:
        where = f"ROOST_TEST_DATABASE_URL={_redacted(url)}"
    else:
        bindir = find_bindir()
        where = f"a throwaway cluster from {bindir}" if bindir else "none found (postgres tests will skip)"
    return f"postgres: {where}; CI={'true' if CI else 'false'}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A copy of the migrated SQLite template, for tests that open their own database (processes, actors)."""
    path = tmp_path / "roost.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for tests that start processes on one database."""
    name = pg_server.create_database(migrated=True)
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh PostgreSQL database with no tables: the processes under test migrate it themselves."""
    name = pg_server.create_database()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP server taking webhook deliveries (``tests/support/webhook_receiver.py``) for the test."""
    async with running_receiver() as running:
        yield running
