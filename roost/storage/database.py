"""The database interface both backends implement, and ``open_database`` to pick one."""

from __future__ import annotations

import abc
from contextlib import asynccontextmanager
from typing import Any, AsyncContextManager, AsyncIterator, Sequence

from roost.storage.dialect import Dialect

Row = dict[str, Any]


class Connection(abc.ABC):
    """The query methods, on a pooled connection or inside one transaction."""

    dialect: Dialect  # where the SQL of the two backends differs (roost.storage.dialect)

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run a query and return every row as a dict."""

    async def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run a query and return every row as a tuple, in the SELECT's column order.

        For bulk reads (100,000 rows) where a dict per row costs more than the query.
        """
        return [tuple(r.values()) for r in await self.fetch(sql, *args)]

    async def fetch_records(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run a query and return the driver's own rows, read as ``row["column"]`` only.

        For hot reads of many rows: an asyncpg ``Record`` or ``sqlite3.Row`` is built in C, a dict
        per row is not. The default returns ``fetch``'s dicts, which read the same way.
        """
        return await self.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))


class Database(Connection):
    """A connection pool; ``transaction()`` hands out one connection inside BEGIN..COMMIT."""

    backend: str  # "sqlite" or "postgresql": for status pages and logs, never to branch on
    shared: bool  # several processes may serve this database (cross-process wake-ups, leadership)

    @abc.abstractmethod
    def transaction(self) -> AsyncContextManager[Connection]:
        """Commit when the block exits normally, roll back when it raises or is cancelled."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def for_update(self, *, skip_locked: bool = False, of: str | None = None) -> str:
        """Shorthand for ``self.dialect.for_update`` (see ``roost.storage.dialect``)."""
        return self.dialect.for_update(skip_locked=skip_locked, of=of)

    @abc.abstractmethod
    def advisory_lock(self, name: str) -> AsyncContextManager[bool]:
        """Try to take a cluster-wide lock named ``name`` without waiting; yields whether it was taken.

        PostgreSQL: a session advisory lock on a connection held for the block, so a process that
        dies releases it. SQLite has one process, so it is always taken (callers also hold an
        in-process lock).
        """

    @abc.abstractmethod
    async def run_script(self, conn: Connection, script: str) -> None:
        """Run a multi-statement migration script on a connection inside a transaction."""

    @abc.abstractmethod
    async def lock_migrations(self, conn: Connection) -> None:
        """Serialise migrators (PostgreSQL: a transaction-scoped advisory lock)."""


@asynccontextmanager
async def open_database(url: str, *, pool_size: int = 10, readers: int = 4) -> AsyncIterator[Database]:
    """Open the database ``url`` names: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from roost.storage.postgres import open_postgres

        async with open_postgres(url, pool_size=pool_size) as db:
            yield db
    elif url.startswith("sqlite://"):
        from roost.storage.sqlite import open_sqlite

        async with open_sqlite(sqlite_path(url), readers=readers) as db:
            yield db
    else:
        from roost.errors import InvalidInput

        raise InvalidInput(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")


def sqlite_path(url: str) -> str:
    """``sqlite:///./roost.db`` → ``./roost.db``; ``sqlite:////abs/path`` → ``/abs/path``."""
    path = url[len("sqlite://"):]
    if path.startswith("/"):
        path = path[1:]
    return path or "roost.db"
