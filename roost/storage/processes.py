"""The process table: every running ``roost serve`` and its last heartbeat; and, on PostgreSQL,
which devices hold a socket in which process (``process_devices``, written by each heartbeat)."""

from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

from roost.storage.database import Connection, Database, Row

DEAD_AFTER_BEATS = 3


def alive(last_heartbeat: dt.datetime, now: dt.datetime, heartbeat_s: float) -> bool:
    """A process is shown alive while its last heartbeat is within three heartbeats of now."""
    return (now - last_heartbeat).total_seconds() <= DEAD_AFTER_BEATS * heartbeat_s


async def beat(conn: Connection, *, process_id: str, host: str, pid: int, port: int | None,
               started_at: dt.datetime, now: dt.datetime, sockets: int, leads: list[str]) -> None:
    """Insert or refresh this process's row (a row pruned while the process was stalled comes back)."""
    await conn.execute(
        "INSERT INTO processes (id, host, pid, port, started_at, last_heartbeat, sockets, leads)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat, sockets = excluded.sockets,"
        " leads = excluded.leads, port = excluded.port",
        process_id, host, pid, port, started_at, now, sockets, leads,
    )


async def remove(conn: Connection, process_id: str) -> None:
    await conn.execute("DELETE FROM process_devices WHERE process_id = $1", process_id)
    await conn.execute("DELETE FROM processes WHERE id = $1", process_id)


async def prune(conn: Connection, *, silent_since: dt.datetime) -> int:
    """Delete rows whose last heartbeat is older than ``silent_since`` (and the device rows of
    processes gone); returns how many processes went."""
    gone = await conn.execute("DELETE FROM processes WHERE last_heartbeat < $1", silent_since)
    if gone:
        await conn.execute("DELETE FROM process_devices WHERE process_id NOT IN (SELECT id FROM processes)")
    return gone


async def write_devices(db: Database, process_id: str, *, changed: Mapping[str, int], gone: Sequence[str],
                        everything: bool = False) -> None:
    """Record this process's device sockets: ``changed`` (device -> sockets open here) written,
    ``gone`` deleted; with ``everything``, ``changed`` is the whole set and any other row of the
    process goes. One transaction."""
    async with db.transaction() as tx:
        if everything:
            await tx.execute(f"DELETE FROM process_devices WHERE process_id = $1 AND NOT (device_id"
                             f" {tx.dialect.in_list('$2')})", process_id, sorted(changed))
        elif gone:
            await tx.execute(f"DELETE FROM process_devices WHERE process_id = $1 AND device_id"
                             f" {tx.dialect.in_list('$2')}", process_id, sorted(gone))
        if changed:
            await tx.execute_many(
                "INSERT INTO process_devices (process_id, device_id, sockets) VALUES ($1, $2, $3)"
                " ON CONFLICT (process_id, device_id) DO UPDATE SET sockets = excluded.sockets",
                [(process_id, device_id, n) for device_id, n in sorted(changed.items())])


async def devices_elsewhere(conn: Connection, *, here: str, alive_since: dt.datetime, cursor: str | None,
                            limit: int) -> list[Row]:
    """Devices with a socket in another live process (heartbeat since ``alive_since``), in device
    id order after ``cursor``, with the process's host and pid: at most ``limit`` + 1 rows."""
    return await conn.fetch(
        "SELECT pd.device_id, pd.process_id, pd.sockets, p.host, p.pid FROM process_devices pd"
        " JOIN processes p ON p.id = pd.process_id WHERE pd.process_id <> $1 AND p.last_heartbeat >= $2"
        " AND pd.device_id > $3 ORDER BY pd.device_id, pd.process_id LIMIT $4",
        here, alive_since, cursor or "", limit + 1)


async def list_all(conn: Connection) -> list[Row]:
    return await conn.fetch(
        "SELECT id, host, pid, port, started_at, last_heartbeat, sockets, leads FROM processes"
        " ORDER BY started_at, id")
