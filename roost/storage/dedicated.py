"""A dedicated connection: a PostgreSQL connection of its own, outside the pool.

Two things need one: LISTEN (the cluster bus relay) and connection-level advisory locks
(leadership). Neither can use a pooled connection, which is handed to other tasks between
queries. When the server ends the connection (``pg_terminate_backend``, a restart, a cut
network), ``lost`` is set: whatever it held (its LISTEN, its locks) is gone, and the owner opens
a new one. (Closing it ourselves sets it too: read it before closing to tell the two apart.)
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import asyncpg
import trio

from roost.storage.postgres import CLEANUP_TIMEOUT_S, PostgresDatabase

CONNECT_TIMEOUT_S = 10.0
Listener = Callable[[int, str], None]  # (sender's backend pid, payload)


class DedicatedConnection:
    def __init__(self, db: PostgresDatabase, conn: asyncpg.Connection):
        self._db = db
        self._conn = conn
        self.lost = trio.Event()
        # asyncpg calls this from the trio-asyncio loop, which runs in trio: setting an event is safe.
        conn.add_termination_listener(lambda _conn: self.lost.set())

    @property
    def pid(self) -> int:
        """The server process id of this connection (NOTIFY payloads name the sender's)."""
        return self._conn.get_server_pid()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Raises: StorageError (the connection may be lost: see ``lost``)."""
        return await self._db.aio(self._conn.fetchval(sql, *args))

    async def listen(self, channel: str, listener: Listener) -> None:
        """LISTEN on ``channel``; ``listener`` is called (synchronously, in trio) for each notification."""
        await self._db.aio(self._conn.add_listener(channel, lambda _c, pid, _ch, payload: listener(pid, payload)))

    async def close(self) -> None:
        """Close politely (the server is told) within the cleanup deadline, else terminate."""
        if self._conn.is_closed():
            return
        with trio.move_on_after(CLEANUP_TIMEOUT_S):
            await self._db.aio(self._conn.close(timeout=CLEANUP_TIMEOUT_S))
            return
        self._conn.terminate()


async def connect_dedicated(db: PostgresDatabase) -> DedicatedConnection:
    """A connection of its own (not from the pool); the caller closes it with ``close_dedicated``.

    Raises:
        StorageError: cannot connect.
    """
    return DedicatedConnection(db, await db.aio(asyncpg.connect(db.dsn, timeout=CONNECT_TIMEOUT_S)))


async def close_dedicated(conn: DedicatedConnection) -> None:
    """Close politely when possible, however the caller is being cancelled; never longer than the
    cleanup deadline (then the connection is terminated)."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT_S + 0.5):
        try:
            await conn.close()
        except Exception:  # a lost connection may fail to close politely; it is gone either way
            conn._conn.terminate()
    if not conn._conn.is_closed():
        conn._conn.terminate()


@asynccontextmanager
async def open_dedicated(db: PostgresDatabase) -> AsyncIterator[DedicatedConnection]:
    """A connection of its own for as long as the block runs.

    Raises:
        StorageError: cannot connect.
    """
    conn = await connect_dedicated(db)
    try:
        yield conn
    finally:
        await close_dedicated(conn)
