"""PostgreSQL backend: asyncpg on trio through trio-asyncio.

A thin adapter instead of triopg: the asyncio loop trio-asyncio runs is opened with the
database and kept on it, and every asyncpg coroutine runs through ``loop.run_aio_coroutine``,
so any trio task may query without entering an asyncio context of its own. Cancelling the trio
scope cancels the query.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Sequence, TypeVar

import asyncpg
import trio
import trio_asyncio

from roost.errors import AlreadyExists, InvalidInput, MissingReference, StorageError
from roost.storage.database import Connection, Database, Row

T = TypeVar("T")
_MIGRATION_LOCK_KEY = 0x726F6F7374  # "roost"


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


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgConn(Connection):
    def __init__(self, loop: trio_asyncio.TrioEventLoop, conn: Any):
        self._loop = loop
        self._conn = conn  # an asyncpg Connection or Pool: both have the same query methods

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
    dialect = "postgresql"

    def __init__(self, loop: trio_asyncio.TrioEventLoop, pool: asyncpg.Pool, dsn: str):
        super().__init__(loop, pool)
        self.pool = pool
        self.dsn = dsn
        self.loop = loop

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
            with trio.CancelScope(shield=True):
                await self._run(self.pool.release(conn))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.acquire() as conn:
            raw = conn._conn
            tr = raw.transaction()
            await self._run(tr.start())
            try:
                yield conn
            except BaseException:
                with trio.CancelScope(shield=True):
                    if not raw.is_closed():
                        await self._run(tr.rollback())
                raise
            else:
                with trio.CancelScope(shield=True):
                    await self._run(tr.commit())

    @asynccontextmanager
    async def advisory_lock(self, name: str) -> AsyncIterator[bool]:
        key = lock_key(name)
        async with self.acquire() as conn:
            taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
            try:
                yield taken
            finally:
                if taken:
                    with trio.CancelScope(shield=True):
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)

    def for_update(self, *, skip_locked: bool = False, of: str | None = None) -> str:
        return " FOR UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip_locked else "")

    async def run_script(self, conn: Connection, script: str) -> None:
        await conn.execute(script)

    async def lock_migrations(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)

    async def close(self) -> None:
        await self._run(self.pool.close())


@asynccontextmanager
async def open_postgres(dsn: str, *, pool_size: int = 10) -> AsyncIterator[PostgresDatabase]:
    """Open a trio-asyncio loop and a bounded asyncpg pool on it, for as long as the block runs."""
    async with trio_asyncio.open_loop() as loop:
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
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await db.close()
