"""The process table: every running ``roost serve`` and its last heartbeat."""

from __future__ import annotations

import datetime as dt

from roost.storage.database import Connection, Row

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
    await conn.execute("DELETE FROM processes WHERE id = $1", process_id)


async def prune(conn: Connection, *, silent_since: dt.datetime) -> int:
    """Delete rows whose last heartbeat is older than ``silent_since``; returns how many went."""
    return await conn.execute("DELETE FROM processes WHERE last_heartbeat < $1", silent_since)


async def list_all(conn: Connection) -> list[Row]:
    return await conn.fetch(
        "SELECT id, host, pid, port, started_at, last_heartbeat, sockets, leads FROM processes"
        " ORDER BY started_at, id")
