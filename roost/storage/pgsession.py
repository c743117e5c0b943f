"""A dedicated PostgreSQL connection outside the pool, for what must live on one session.

Two things do: LISTEN (the cluster bus relay) and session-level advisory locks (leadership).
Neither can use a pooled connection, which is handed to other tasks between queries. When the
server ends the session (``pg_terminate_backend``, a restart, a cut network), ``lost`` is set:
whatever the session held (its LISTEN, its locks) is gone, and the owner opens a new one.
(Closing the session ourselves sets it too: read it before closing to tell the two apart.)
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import asyncpg
import trio

from roost.storage.postgres import CLEANUP_TIMEOUT_S, PostgresDatabase

CONNECT_TIMEOUT_S = 10.0
Listener = Callable[[int, str], None]  # (sender's backend pid, payload)


class PgSession:
    def __init__(self, db: PostgresDatabase, conn: asyncpg.Connection):
        self._db = db
        self._conn = conn
        self.lost = trio.Event()
        # asyncpg calls this from the trio-asyncio loop, which runs in trio: setting an event is safe.
        conn.add_termination_listener(lambda _conn: self.lost.set())

    @property
    def pid(self) -> int:
        """The server process id of this session (NOTIFY payloads name the sender's)."""
        return self._conn.get_server_pid()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Raises: StorageError (the session may be lost: see ``lost``)."""
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


async def connect_session(db: PostgresDatabase) -> PgSession:
    """A connection of its own (not from the pool); the caller closes it with ``close_session``.

    Raises:
        StorageError: cannot connect.
    """
    return PgSession(db, await db.aio(asyncpg.connect(db.dsn, timeout=CONNECT_TIMEOUT_S)))


async def close_session(session: PgSession) -> None:
    """Close politely when possible, however the caller is being cancelled; never longer than the
    cleanup deadline (then the connection is terminated)."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT_S + 0.5):
        try:
            await session.close()
        except Exception:  # a lost session may fail to close politely; it is gone either way
            session._conn.terminate()
    if not session._conn.is_closed():
        session._conn.terminate()


@asynccontextmanager
async def open_session(db: PostgresDatabase) -> AsyncIterator[PgSession]:
    """A connection of its own for as long as the block runs.

    Raises:
        StorageError: cannot connect.
    """
    session = await connect_session(db)
    try:
        yield session
    finally:
        await close_session(session)
