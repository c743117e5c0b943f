"""Each session-processor run, kept for the console's "recent runs" (table ``processor_runs``).

A run is written once, when it ends (however it ends), with its counts; each processor keeps its
newest ``KEEP`` runs, older ones are deleted in the same transaction, so the table stays small.
Ids are time-ordered (``roost.storage.ids``): newest first is ``ORDER BY id DESC``.
"""

from __future__ import annotations

import datetime as dt

from roost.storage.database import Connection, Row
from roost.storage.ids import new_id

KEEP = 200  # runs kept per processor
COUNTS = ("scanned", "processed", "skipped", "failed", "bytes_read", "items")


async def record(conn: Connection, *, processor: str, kind: str, actor: str | None, started_at: dt.datetime,
                 finished_at: dt.datetime, duration_s: float, outcome: str, counts: dict[str, int],
                 error: str | None = None) -> str:
    """Store one ended run (``kind``: schedule | manual; ``outcome``: ok | failed | cancelled) and
    drop the processor's runs beyond the newest ``KEEP``; returns the run's id."""
    run_id = new_id("run")
    await conn.execute(
        "INSERT INTO processor_runs (id, processor, kind, actor, started_at, finished_at, duration_s, outcome,"
        " scanned, processed, skipped, failed, bytes_read, items, error)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        run_id, processor, kind, actor, started_at, finished_at, float(duration_s), outcome,
        *(int(counts.get(c, 0)) for c in COUNTS), error[:500] if error else None,
    )
    await conn.execute(
        "DELETE FROM processor_runs WHERE processor = $1 AND id < (SELECT id FROM processor_runs"
        " WHERE processor = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)", processor, KEEP - 1)
    return run_id


async def recent(conn: Connection, processor: str, *, limit: int = 20) -> list[Row]:
    """The processor's newest ``limit`` runs, newest first."""
    return await conn.fetch("SELECT * FROM processor_runs WHERE processor = $1 ORDER BY id DESC LIMIT $2",
                            processor, limit)


async def recent_by_processor(conn: Connection, processors: list[str], *, limit: int) -> dict[str, list[Row]]:
    """``recent`` for each of ``processors`` (one indexed read each: a handful of processors)."""
    out: dict[str, list[Row]] = {}
    for name in processors:
        out[name] = await recent(conn, name, limit=limit)
    return out


async def latest_id(conn: Connection) -> str | None:
    """The id of the newest run of any processor (a stamp: it changes whenever a run ends)."""
    return await conn.fetchval("SELECT MAX(id) FROM processor_runs")
