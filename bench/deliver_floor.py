"""What SQLite alone costs per delivered proposal: the floor under ``bench/deliver.py``'s CPU bar.

A proposal's life writes four rows and reads two (``roost.storage.scouts`` and
``roost.storage.proposals``): the pushed item's insert, the scout's read of pending items, the
verdict, the deliverer's read of queued items, the delivered mark of the page, the ack. This
script runs those statements with plain ``sqlite3`` (no roost code, no event loop, no threads)
on a database made by ``roost migrate`` (the real schema and indexes), in the batch sizes
``bench/deliver.py`` produces (500 items a push, one transaction per batch), and prints the
thread CPU per proposal of each statement and in all, the median of ``--runs`` runs, against
issue 21's bar of 50 µs of server CPU per proposal end to end (push over HTTP, triage, frame,
ack included): what SQLite takes by itself is the part of that budget no roost code can give
back without writing fewer rows.

It also measures the other part no server can skip: a trivial ``websockets`` server (asyncio, no
compression, nothing but the protocol) sending each proposal frame and reading its ack, with the
device in another process, so the figure is the server side alone. SQLite's statements plus that
echo are a lower bound for any Python server on this machine that keeps the four writes; both are
printed beside the bar.

    python bench/deliver_floor.py [--items 10000] [--batch 500] [--runs 5] [--echo-frames 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import echo_server_side  # noqa: E402

BAR_US = 50.0
NOW = "2026-12-06T00:00:00.000000+00:00"
LATER = "2026-12-13T00:00:00.000000+00:00"

# The statements as roost's storage modules send them (translated to SQLite's ?N placeholders).
INSERT = ("INSERT INTO scout_items (id, scout_id, user_id, source_type, source_msg_ref, status, sender, raw_subject,"
          " raw_snippet, body, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9,"
          " ?10, ?10) ON CONFLICT (scout_id, source_msg_ref) DO NOTHING")
DUE = ("SELECT id, source_msg_ref, sender, raw_subject, raw_snippet, body, attempts FROM scout_items"
       " WHERE scout_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3")
VERDICT = ("UPDATE scout_items SET status = ?2, raw_subject = ?3, raw_snippet = ?4, sender = ?5, verdict = ?6,"
           " reason = ?7, category = ?8, payload = ?9, expires_at = ?10, triaged_at = ?11, body = NULL,"
           " last_error = NULL WHERE id = ?1 AND status = 'pending'")
QUEUED = ("SELECT id, scout_id, source_type, source_msg_ref, raw_subject, raw_snippet, category, payload"
          " FROM scout_items WHERE user_id = ?1 AND status = 'queued' AND expires_at > ?2 ORDER BY id LIMIT ?3")
DELIVERED = ("UPDATE scout_items SET status = 'delivered', delivered_at = ?2 WHERE id IN"
             " (SELECT value FROM json_each(?1)) AND +status = 'queued'")
ACKED = ("UPDATE scout_items SET status = 'acked', acked_at = ?2 WHERE id IN (SELECT value FROM json_each(?1))"
         " AND +user_id = ?3 AND +status IN ('queued', 'delivered') RETURNING user_id, acked_at, id, scout_id,"
         " source_type, source_msg_ref, raw_subject, raw_snippet, category, payload")


def migrated(workdir: Path) -> Path:
    path = workdir / "schema.db"
    env = {**os.environ, "ROOST_DATABASE_URL": f"sqlite:///{path}"}
    subprocess.run([sys.executable, "-m", "roost", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    return path


def insert_row(conn: sqlite3.Connection, table: str, values: dict[str, object]) -> None:
    conn.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                 list(values.values()))


def one_run(schema: Path, workdir: Path, items: int, batch: int) -> dict[str, float]:
    """Thread CPU seconds per statement kind for ``items`` proposals on a fresh copy of ``schema``."""
    path = workdir / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(schema, path)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):  # as roost.storage.sqlite
        conn.execute(f"PRAGMA {pragma}")
    insert_row(conn, "accounts", {"id": "a", "name": "bench", "timezone": "UTC", "created_at": NOW})
    insert_row(conn, "users", {"id": "u", "account_id": "a", "email": "b@example.com", "display_name": "B",
                               "timezone": "UTC", "created_at": NOW, "updated_at": NOW})
    insert_row(conn, "scouts", {"id": "s", "user_id": "u", "provider": "push", "config": "{}", "classifier": "rules",
                                "classifier_config": "{}", "poll_interval_s": 3600, "created_at": NOW,
                                "updated_at": NOW})
    spent: dict[str, float] = {}

    def timed(kind: str, fn, transaction: bool = True) -> None:  # noqa: ANN001
        start = time.thread_time()
        if transaction:
            conn.execute("BEGIN IMMEDIATE")
        fn()
        if transaction:
            conn.execute("COMMIT")
        spent[kind] = spent.get(kind, 0.0) + time.thread_time() - start

    ids = [f"01{i:024d}" for i in range(items)]
    for start in range(0, items, batch):
        page = ids[start:start + batch]
        timed("insert", lambda page=page: conn.executemany(INSERT, [
            (i, "s", "u", "push", f"r{i}", "x@example.com", f"s r{i}", f"t={time.time()}", f"t={time.time()}", NOW)
            for i in page]))
        timed("read pending", lambda: conn.execute(DUE, ("s", NOW, batch)).fetchall(), transaction=False)
        timed("verdict", lambda page=page: conn.executemany(VERDICT, [
            (i, "queued", f"s r{i}", "t", "x@example.com", "relevant", "no spam pattern matched", None, None, LATER,
             NOW) for i in page]))
        timed("read queued", lambda: conn.execute(QUEUED, ("u", NOW, batch)).fetchall(), transaction=False)
        timed("delivered", lambda page=page: conn.execute(DELIVERED, (json.dumps(page), NOW)))
        timed("acked", lambda page=page: conn.execute(ACKED, (json.dumps(page), NOW, "u")).fetchall())
    assert conn.execute("SELECT COUNT(*) FROM scout_items WHERE status = 'acked'").fetchone()[0] == items
    conn.close()
    return spent


# The device: reads each frame and answers its ack, in its own process so its CPU is not counted.
DEVICE = """
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], compression=None) as ws:
        async for message in ws:
            pid = json.loads(message)["proposal"]["id"]
            await ws.send(json.dumps({"type": "scout_proposal_ack", "proposal_id": pid}))
asyncio.run(main())
"""


def echo_server_us(frames: int) -> float:
    """CPU µs per proposal of a ``websockets`` server that only sends the frame and reads the ack."""
    import asyncio

    from websockets.asyncio.server import serve

    async def run() -> float:
        spent: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def handler(ws) -> None:  # noqa: ANN001
            start = time.process_time()
            await echo_server_side(ws, frames, parse_acks=True)
            spent.set_result(time.process_time() - start)

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            device = await asyncio.create_subprocess_exec(sys.executable, "-c", DEVICE, f"ws://127.0.0.1:{port}")
            try:
                return await asyncio.wait_for(spent, 120)
            finally:
                device.kill()
                await device.wait()

    return asyncio.run(run()) / frames * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--items", 10_000), ("--batch", 500), ("--runs", 5), ("--echo-frames", 20_000)):
        ap.add_argument(flag, type=int, default=default)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        schema = migrated(workdir)
        runs = [one_run(schema, workdir, args.items, args.batch) for _ in range(args.runs)]
    per = {kind: statistics.median(r[kind] for r in runs) / args.items * 1e6 for kind in runs[0]}
    totals = sorted(sum(r.values()) / args.items * 1e6 for r in runs)
    total = statistics.median(totals)
    echoes = sorted(echo_server_us(args.echo_frames) for _ in range(3))
    echo = statistics.median(echoes)
    print(f"sqlite {sqlite3.sqlite_version}, {args.items} proposals in batches of {args.batch}, {args.runs} runs")
    for kind, us in per.items():
        print(f"  {kind:13s} {us:6.1f} µs per proposal (median)")
    print(f"  {'all':13s} {total:6.1f} µs per proposal (runs: {', '.join(f'{t:.1f}' for t in totals)})")
    print(f"  {'echo server':13s} {echo:6.1f} µs per proposal: a websockets server's frame out and ack in, "
          f"device in another process (runs: {', '.join(f'{e:.1f}' for e in echoes)})")
    floor = total + echo
    # A measurement, not a bar: it says how much of the bar is left for roost's own code.
    print(f"INFO SQLite alone takes {total:.1f} µs of issue 21's {BAR_US:.0f} µs end-to-end bar "
          f"({total / BAR_US * 100:.0f} %), leaving {BAR_US - total:.1f} µs for HTTP, validation, triage, framing, "
          "acks and the driver (bench/deliver.py prints the event loop's and the database threads' shares)")
    print(f"INFO lower bound with four writes: SQLite {total:.1f} + the bare echo's server side {echo:.1f} = "
          f"{floor:.1f} µs per proposal, {'over' if floor > BAR_US else 'under'} the {BAR_US:.0f} µs bar before "
          "any HTTP intake, validation, triage or bookkeeping")

if __name__ == "__main__":
    main()
