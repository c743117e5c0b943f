"""SQLite backend: the standard library's sqlite3 in worker threads, WAL mode.

One writer connection behind a trio.Lock (SQLite allows one writer at a time anyway) and a
few reader connections for plain SELECTs, which WAL lets run beside the writer. Every call
runs in a worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

import trio

from roost.errors import AlreadyExists, InvalidInput, MissingReference, StorageError
from roost.storage.database import Connection, Database, Row
from roost.storage.dialect import SQLITE

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\$(\d+)")


_last_iso: tuple[dt.datetime | None, str] = (None, "")


def _to_iso(value: dt.datetime) -> str:
    # A batch binds one ``now`` to every row: the last datetime's text is kept for the next call.
    global _last_iso
    last, text = _last_iso
    if value is last:
        return text
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
    text = value.astimezone(dt.UTC).isoformat()
    _last_iso = (value, text)
    return text


def _from_iso(raw: bytes) -> dt.datetime:
    return dt.datetime.fromisoformat(raw.decode())


sqlite3.register_adapter(dt.datetime, _to_iso)
sqlite3.register_adapter(dict, lambda v: json.dumps(v, separators=(",", ":")))
sqlite3.register_adapter(list, lambda v: json.dumps(v, separators=(",", ":")))
sqlite3.register_converter("TIMESTAMPTZ", _from_iso)
sqlite3.register_converter("BOOLEAN", lambda raw: raw not in (b"0", b""))
sqlite3.register_converter("JSONB", lambda raw: json.loads(raw))


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """PostgreSQL placeholders (``$1``) to SQLite's numbered ones (``?1``); cached: most SQL is a constant."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        check_same_thread=False,
        isolation_level=None,
        detect_types=sqlite3.PARSE_DECLTYPES,
        timeout=10,
    )
    conn.row_factory = _dict_row
    _enable_wal(conn)
    # NORMAL in WAL mode survives a killed process (only a power cut can lose the last commits).
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _enable_wal(conn: sqlite3.Connection, *, patience_s: float = 10.0) -> None:
    """Switch to WAL, retrying while another connection holds the lock that needs.

    SQLite answers "database is locked" at once here, without its busy handler, when another
    process opens the same new file at the same moment (two migrators, seen in the tests).
    Runs in a worker thread, so sleeping is fine.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _map_error(exc: sqlite3.Error) -> Exception:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE" in text or "PRIMARY KEY" in text:
            return AlreadyExists("a row with the same unique key already exists")
        if "FOREIGN KEY" in text:
            return MissingReference("the request names a row that does not exist")
        if "CHECK" in text:  # as PostgreSQL's CheckViolationError: the caller sent a bad value
            return InvalidInput(f"the database refused a value: {text}")
    return StorageError(f"database error: {text}")


class _SqliteConn(Connection):
    """Methods on one sqlite3 connection; the caller holds whatever lock it needs."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection, limiter: trio.CapacityLimiter):
        self._conn = conn
        self._limiter = limiter

    async def _run(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise _map_error(exc) from exc

        return await trio.to_thread.run_sync(guarded, limiter=self._limiter)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(lambda: self._conn.execute(translate(sql), args).rowcount)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._run(lambda: self._conn.executemany(translate(sql), rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._run(lambda: self._conn.execute(translate(sql), args).fetchall())

    async def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            cursor = self._conn.cursor()
            cursor.row_factory = None  # plain tuples, not the connection's dict rows
            return cursor.execute(translate(sql), args).fetchall()

        return await self._run(run)

    async def fetch_records(self, sql: str, *args: Any) -> Sequence[Any]:
        def run() -> list[sqlite3.Row]:
            cursor = self._conn.cursor()
            cursor.row_factory = sqlite3.Row
            return cursor.execute(translate(sql), args).fetchall()

        return await self._run(run)


class SqliteDatabase(Database):
    dialect = SQLITE
    backend = "sqlite"
    shared = False  # one process per database file (the serve lock)

    def __init__(self, path: str, readers: int):
        self.path = path
        self._limiter = trio.CapacityLimiter(readers + 1)
        self._writer = _SqliteConn(_connect(path), self._limiter)
        self._write_lock = trio.Lock()
        self._readers = [_SqliteConn(_connect(path, readonly=True), self._limiter) for _ in range(readers)]
        self._free_readers = trio.Semaphore(readers)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._write_lock:
            return await self._writer.execute(sql, *args)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One transaction, in one worker-thread hop (BEGIN, every row, COMMIT)."""
        conn = self._writer._conn

        def batch() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(translate(sql), rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        async with self._write_lock:
            await self._writer._run(batch)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._read(lambda conn: conn.fetch(sql, *args), sql)

    async def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._read(lambda conn: conn.fetch_tuples(sql, *args), sql)

    async def fetch_records(self, sql: str, *args: Any) -> Sequence[Any]:
        return await self._read(lambda conn: conn.fetch_records(sql, *args), sql)

    async def _read(self, query: Callable[[_SqliteConn], Awaitable[T]], sql: str) -> T:
        if not sql.lstrip()[:6].upper() == "SELECT":
            async with self._write_lock:  # INSERT .. RETURNING and friends write
                return await query(self._writer)
        async with self._free_readers:
            reader = self._readers.pop()
            try:
                return await query(reader)
            finally:
                self._readers.append(reader)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._writer.execute("ROLLBACK")
                raise
            else:
                with trio.CancelScope(shield=True):
                    await self._writer.execute("COMMIT")

    @asynccontextmanager
    async def advisory_lock(self, name: str) -> AsyncIterator[bool]:
        yield True

    async def run_script(self, conn: Connection, script: str) -> None:
        for statement in split_statements(script):
            add = _ADD_COLUMN_IF_NOT_EXISTS.match(_strip_comments(statement))
            if add is not None:
                # SQLite has no ADD COLUMN IF NOT EXISTS (PostgreSQL has): emulated, so one shared
                # migration file stays idempotent on both.
                columns = {r["name"] for r in await conn.fetch(f'PRAGMA table_info("{add["table"]}")')}
                if add["column"] in columns:
                    continue
                statement = add["head"] + add["rest"]
            await conn.execute(statement)

    async def lock_migrations(self, conn: Connection) -> None:
        """BEGIN IMMEDIATE already holds SQLite's one write lock."""

    async def close(self) -> None:
        def close_all() -> None:
            for c in [self._writer, *self._readers]:
                c._conn.close()

        await trio.to_thread.run_sync(close_all)


_ADD_COLUMN_IF_NOT_EXISTS = re.compile(
    r"^(?P<head>ALTER\s+TABLE\s+(?P<table>\w+)\s+ADD\s+COLUMN\s+)IF\s+NOT\s+EXISTS\s+"
    r"(?P<rest>(?P<column>\w+).*)$", re.IGNORECASE | re.DOTALL)


def _strip_comments(statement: str) -> str:
    return "\n".join(ln for ln in statement.splitlines() if not ln.lstrip().startswith("--")).strip()


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements (sqlite3 runs one per call)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()):
        raise StorageError(f"incomplete SQL statement at end of script: {buffer.strip()[:80]!r}")
    return statements


@asynccontextmanager
async def open_sqlite(path: str, *, readers: int = 4) -> AsyncIterator[SqliteDatabase]:
    db = await trio.to_thread.run_sync(lambda: SqliteDatabase(path, readers))
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await db.close()
