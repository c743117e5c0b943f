"""The cluster's statements on a dedicated PostgreSQL connection: leadership locks and bus notifications.

Both live on one connection for its whole life (``roost.storage.pgsession``): a session-level
advisory lock is held until that connection ends, and a notification sent on the connection
that LISTENs comes back with its own backend pid, which is how the relay skips its own.
PostgreSQL only: on SQLite one process serves the database and nothing here is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.storage.pgsession import PgSession


def leader_key(name: str) -> int:
    """The advisory-lock key of a leadership (distinct from the job lock of the same name)."""
    from roost.storage.postgres import lock_key  # asyncpg: imported on PostgreSQL only

    return lock_key(f"leader:{name}")


async def try_lead(session: PgSession, name: str) -> bool:
    """Take the leadership of singleton ``name`` on ``session`` if nobody holds it; whether we now do.

    Raises:
        StorageError: the connection failed (then whatever it held is gone too).
    """
    return bool(await session.fetchval("SELECT pg_try_advisory_lock($1)", leader_key(name)))


async def ping(session: PgSession) -> None:
    """A round trip on ``session``: it is still connected, so still holds its locks.

    Raises:
        StorageError: it is not.
    """
    await session.fetchval("SELECT 1")


async def notify(session: PgSession, channel: str, payload: str) -> None:
    """``pg_notify(channel, payload)`` on ``session`` (a payload under 8000 bytes).

    Raises:
        StorageError: the connection failed.
    """
    await session.fetchval("SELECT pg_notify($1, $2)", channel, payload)
