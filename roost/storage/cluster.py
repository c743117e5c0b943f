"""The cluster's statements on a dedicated PostgreSQL connection: leadership locks and bus notifications.

Both live on one connection for its whole life (``roost.storage.dedicated``): a session-level
advisory lock is held until that connection ends, and a notification sent on the connection
that LISTENs comes back with its own backend pid, which is how the relay skips its own.
PostgreSQL only: on SQLite one process serves the database and nothing here is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.storage.dedicated import DedicatedConnection


def leader_key(name: str) -> int:
    """The advisory-lock key of a leadership (distinct from the job lock of the same name)."""
    from roost.storage.postgres import lock_key  # asyncpg: imported on PostgreSQL only

    return lock_key(f"leader:{name}")


async def try_lead(conn: DedicatedConnection, name: str) -> bool:
    """Take the leadership of singleton ``name`` on ``conn`` if nobody holds it; whether we now do.

    Raises:
        StorageError: the connection failed (then whatever it held is gone too).
    """
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", leader_key(name)))


async def ping(conn: DedicatedConnection) -> None:
    """A round trip on ``conn``: it is still connected, so still holds its locks.

    Raises:
        StorageError: it is not.
    """
    await conn.fetchval("SELECT 1")


async def notify(conn: DedicatedConnection, channel: str, payload: str) -> None:
    """``pg_notify(channel, payload)`` on ``conn`` (a payload under 8000 bytes).

    Raises:
        StorageError: the connection failed.
    """
    await conn.fetchval("SELECT pg_notify($1, $2)", channel, payload)
