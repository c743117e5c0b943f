"""PostgreSQL backend: asyncpg on trio through trio-asyncio.

A thin adapter instead of triopg: the asyncio loop trio-asyncio runs is opened with the
database and kept on it, and every asyncpg coroutine runs through ``loop.run_aio_coroutine``,
so any trio task may query without entering an asyncio context of its own. Cancelling the trio
scope cancels the query.

Cleanup that must survive a cancel (releasing a connection, rolling back or committing, an
advisory unlock, closing the pool) runs shielded, and every such shield has a deadline: past it
the connection is terminated (closed without a goodbye; the server ends the session and drops its
locks and open transaction), so a server that stops answering can delay a drain but never hang it.

One more thing keeps the loop's I/O alive: trio-asyncio's default exception handler re-raises
any error asyncio reports (say "Future exception was never retrieved") inside the loop's task
nursery, which cancels every reader and writer of the loop. asyncpg leaves such a future behind
when a connection attempt is cancelled just after its TCP connect (a new pool connection, or the
side connection a query cancel opens): ``TLSUpgradeProto.on_data`` gets
``ConnectionError('unexpected connection_lost() call')`` and nobody awaits it. From then on no
answer on any pooled connection was read, so a release (shielded, without a deadline) waited for
its reset answer forever. ``open_postgres`` installs a handler that logs such errors instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Sequence, TypeVar

import asyncpg
import trio
import trio_asyncio

from roost.errors import AlreadyExists, InvalidInput, MissingReference, StorageError
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.logging import get_logger
from roost.storage.database import Connection, Database, Row
from roost.storage.dialect import POSTGRESQL

T = TypeVar("T")
_MIGRATION_LOCK_KEY = 0x726F6F7374  # "roost"
log = get_logger()

# How long a shielded cleanup (release, rollback, unlock, pool close) may wait for the server
# before the connection is terminated. Each is one round trip (milliseconds) when the server
# answers; the bound matters when it does not (frozen, cut off), and it keeps a drain's end
# (grace period, then these cleanups) well inside the grace + 5 s the process promises.
CLEANUP_TIMEOUT_S = 1.0
LOCKS_CONNECT_TIMEOUT_S = 10.0
# A commit may take longer (a large transaction, a synchronous replica); it is shielded so a
# cancel arriving mid-commit cannot leave its outcome unknown, and bounded by this, and by
# CLEANUP_TIMEOUT_S past a cancel (see roost.runtime.deadlines).
COMMIT_TIMEOUT_S = 10.0


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _map_error(exc: Exception) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists("a row with the same unique key already exists")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return MissingReference("the request names a row that does not exist")
    if isinstance(exc, (asyncpg.DataError, asyncpg.CheckViolationError)):
        return InvalidInput(f"the database refused a value: {exc}")
    return StorageError(f"database error: {exc}")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=lambda v: json.dumps(v, separators=(",", ":")), decoder=json.loads, schema="pg_catalog"
        )


def _log_asyncio_error(loop: Any, context: dict[str, Any]) -> None:
    """The loop's exception handler: log what asyncio reports; never re-raise it into the loop.

    trio-asyncio's default handler raises it in the loop's task nursery, which cancels every
    socket reader of every connection (see the module docstring).
    """
    exc = context.get("exception")
    # The orphaned future of a cancelled connection attempt is expected (every cancelled query
    # may leave one): kept out of the warnings. Anything else is worth a look.
    expected = isinstance(exc, ConnectionError) and "never retrieved" in str(context.get("message"))
    (log.debug if expected else log.warning)(
        "asyncio reported an error on the database loop", message=context.get("message"),
        error=f"{type(exc).__name__}: {exc}" if exc is not None else None)


def terminate(conn: Any) -> None:
    """Close an asyncpg connection (or a pool's proxy of one) at once, without a round trip."""
    raw = getattr(conn, "_con", conn)  # a PoolConnectionProxy whose _con is None was released already
    if raw is not None and not raw.is_closed():
        raw.terminate()


async def _release_in_loop(pool: asyncpg.Pool, conn: Any) -> None:
    """Return ``conn`` to ``pool`` from asyncio code, within the cleanup deadline (then terminated).

    asyncpg's own pool methods (``pool.fetch``) release without a timeout: a query cancelled on a
    server that stopped answering waits there for the cancel to be acknowledged, forever, and
    the trio task that cancelled it waits for that asyncio task to end.
    """
    try:
        await pool.release(conn, timeout=CLEANUP_TIMEOUT_S)
    except asyncio.CancelledError:  # the loop is closing: leave nothing half-released
        terminate(conn)
        raise
    except Exception as exc:  # asyncpg terminated it already (a failed or late reset); make sure
        terminate(conn)
        log.warning("connection not reset on release; terminated", error=f"{type(exc).__name__}: {exc}")


class _PoolQueries:
    """The pool's query methods, each on a connection acquired for it and released with a deadline."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def _on_a_connection(self, method: str, *args: Any) -> Any:
        conn = await self._pool.acquire()
        try:
            return await getattr(conn, method)(*args)
        finally:
            await _release_in_loop(self._pool, conn)

    def execute(self, sql: str, *args: Any) -> Awaitable[str]:
        return self._on_a_connection("execute", sql, *args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Awaitable[None]:
        return self._on_a_connection("executemany", sql, rows)

    def fetch(self, sql: str, *args: Any) -> Awaitable[list[Any]]:
        return self._on_a_connection("fetch", sql, *args)


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgConn(Connection):
    dialect = POSTGRESQL

    def __init__(self, loop: trio_asyncio.TrioEventLoop, conn: Any):
        self._loop = loop
        self._conn = conn  # an asyncpg connection, or the pool's queries (_PoolQueries): the same methods

    async def _run(self, coro: Awaitable[T]) -> T:
        try:
            return await self._loop.run_aio_coroutine(coro)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
            # InternalClientError: a connection the server ended in the middle of an operation
            # ("cannot switch to state ..."); the actors treat it like any lost connection.
            raise _map_error(exc) from exc

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._run(self._conn.execute(sql, *args)))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._run(self._conn.executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._run(self._conn.fetch(sql, *args))]

    async def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._run(self._conn.fetch(sql, *args))]

    async def fetch_records(self, sql: str, *args: Any) -> Sequence[Any]:
        return await self._run(self._conn.fetch(sql, *args))


class PostgresDatabase(_PgConn, Database):
    backend = "postgresql"
    shared = True  # several processes may serve one database

    def __init__(self, loop: trio_asyncio.TrioEventLoop, pool: asyncpg.Pool, dsn: str):
        super().__init__(loop, _PoolQueries(pool))
        self.pool = pool
        self.dsn = dsn
        self.loop = loop
        # Job locks (``advisory_lock``) are session locks, all held on one connection of their own.
        # Held on pooled connections, each run kept one for its whole length and needed another for
        # its queries: as many runs at once as the pool had connections (100 scouts due together,
        # a pool of 10) took them all, and every run then waited for a connection forever.
        self._locks_conn: asyncpg.Connection | None = None
        self._locks_guard = trio.Lock()  # one query at a time on it (asyncpg allows no more)
        self._locks_held: set[int] = set()  # a session's advisory locks nest: exclusive here by this set

    async def aio(self, coro: Awaitable[T]) -> T:
        """Run any asyncio coroutine (asyncpg calls the interface lacks) on this database's loop."""
        return await self._run(coro)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_PgConn]:
        """Hold one connection for a hot loop (a pool acquire per call costs more)."""
        async def acquire() -> asyncpg.Connection:
            return await self.pool.acquire()

        conn = await self._run(acquire())
        try:
            yield _PgConn(self.loop, conn)
        finally:
            await self._release(conn)

    async def _release(self, conn: Any) -> None:
        """Give ``conn`` back to the pool, however the caller is cancelled, within the cleanup deadline.

        asyncpg's own timeout covers its reset (and terminates on expiry); the trio deadline
        around it is the backstop for a loop that does not answer, after which the connection is
        terminated here. A proxy already released is detached, so a connection that made it back
        to the pool (and may be another task's now) is never terminated.
        """
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT_S + 0.5):
            try:
                await self._run(self.pool.release(conn, timeout=CLEANUP_TIMEOUT_S))
                return
            except StorageError as exc:  # a reset that failed or ran out of time (asyncpg terminated it)
                log.warning("connection not reset on release; terminated", error=str(exc))
        terminate(conn)

    async def _cleanup(self, conn: Any, coro: Awaitable[Any], limit_s: float, what: str) -> None:
        """Run ``coro`` on ``conn`` shielded for at most ``limit_s`` seconds; terminate ``conn`` past that."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit_s) as scope:
            await self._run(coro)
        if scope.cancelled_caught:
            log.warning("database cleanup timed out; connection terminated", what=what, limit_s=limit_s)
            terminate(conn)
            raise StorageError(f"{what} did not finish within {limit_s:g} s; the connection was closed")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.acquire() as conn:
            raw = conn._conn
            tr = raw.transaction()
            await self._run(tr.start())
            try:
                yield conn
            except BaseException:
                if not raw.is_closed():
                    try:
                        await self._cleanup(raw, tr.rollback(), CLEANUP_TIMEOUT_S, "rollback")
                    except StorageError:  # terminated: the server rolls back; the first error goes on
                        pass
                raise
            else:
                # Its own bound, and never much past a cancel (a drain's end) of the caller.
                deadline = shielded_deadline(COMMIT_TIMEOUT_S, CLEANUP_TIMEOUT_S)
                await self._cleanup(raw, tr.commit(), deadline - trio.current_time(), "commit")

    @asynccontextmanager
    async def advisory_lock(self, name: str) -> AsyncIterator[bool]:
        """Try the session advisory lock ``name`` (never waits for it); True when taken, released
        when the block ends. Every lock of this process is held on one connection outside the pool."""
        key = lock_key(name)
        if key in self._locks_held:
            yield False
            return
        async with self._locks_guard:
            if self._locks_conn is None or self._locks_conn.is_closed():
                self._locks_conn = await self._run(asyncpg.connect(self.dsn, timeout=LOCKS_CONNECT_TIMEOUT_S))
            conn = self._locks_conn
            taken = key not in self._locks_held and bool(await self._run(
                conn.fetchval("SELECT pg_try_advisory_lock($1)", key, timeout=LOCKS_CONNECT_TIMEOUT_S)))
            if taken:
                self._locks_held.add(key)
        try:
            yield taken
        finally:
            if taken:
                try:
                    await self._unlock(conn, key)
                finally:
                    self._locks_held.discard(key)

    async def _unlock(self, conn: asyncpg.Connection, key: int) -> None:
        """Release ``key`` on the locks connection within the cleanup deadline; past it the
        connection is terminated (the server drops every lock it held, this process's others too)."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT_S) as scope:
            async with self._locks_guard:
                if conn.is_closed():
                    return  # lost: its locks went with it
                try:
                    await self._run(conn.execute("SELECT pg_advisory_unlock($1)", key))
                except StorageError:  # lost meanwhile: the same
                    pass
        if scope.cancelled_caught:
            log.warning("advisory unlock timed out; the locks connection was closed (every job lock of this"
                        " process is released)", limit_s=CLEANUP_TIMEOUT_S)
            terminate(conn)

    async def run_script(self, conn: Connection, script: str) -> None:
        await conn.execute(script)

    async def lock_migrations(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)

    async def close(self) -> None:
        """Close the pool politely within the cleanup deadline, else terminate every connection."""
        if self._locks_conn is not None:
            terminate(self._locks_conn)  # the server releases its locks; nothing else is on it
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT_S):
            try:
                await self._run(self.pool.close())
                return
            except StorageError as exc:
                log.warning("pool not closed politely; terminating it", error=str(exc))
        self.pool.terminate()


@asynccontextmanager
async def open_postgres(dsn: str, *, pool_size: int = 10) -> AsyncIterator[PostgresDatabase]:
    """Open a trio-asyncio loop and a bounded asyncpg pool on it, for as long as the block runs."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_asyncio_error)

        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, init=_init_connection)

        try:
            pool = await loop.run_aio_coroutine(create())
        except (asyncpg.PostgresError, OSError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        db = PostgresDatabase(loop, pool, dsn)
        try:
            yield db
        finally:
            await db.close()
