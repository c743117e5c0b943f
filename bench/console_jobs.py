"""Bench the console's processors and mail pages on a large database: server time per page view.

    .venv/bin/python bench/console_jobs.py                                  # SQLite, default sizes
    .venv/bin/python bench/console_jobs.py --database-url postgresql://...  # a fresh database there
    .venv/bin/python bench/console_jobs.py --outbox 1000000 --usage 1000000
    .venv/bin/python bench/console_jobs.py --database-url postgresql://... --reuse   # pages only, again

Fills the outbox (``--outbox`` rows: 90 % sent, 6 % failed, the rest queued and held), token usage
(``--usage`` messages over 90 days, 50 users, 3 models) and ``--users`` users with a daily digest,
then serves roost in this process and times each page through HTTP (signed in, 20 views each after
2 warm-ups): ``/console/mail`` (failed), ``?state=sent``, ``?state=sent`` two pages on, a digest
preview, and ``/console/processors`` (14 days of usage: chart, totals, the first 50 rows).
The limit, as issue 20's bar for the overview: each page's median under 200 ms. Prints PASS/FAIL, and
each page's first view (the processors page's usage is aggregated then, and reused until a run ends).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.storage import tenancy  # noqa: E402
from roost.storage.database import Database, open_database  # noqa: E402
from roost.storage.ids import new_id  # noqa: E402
from roost.storage.migrator import migrate  # noqa: E402
from tests.support.server import running_server  # noqa: E402

LIMIT_MS = 200.0
TOKEN = "bench-console-jobs-operate-token-000000001"
CHUNK = 20_000
MODELS = ("claude-opus", "claude-sonnet", "claude-haiku")


async def insert(db: Database, table: str, columns: list[str], types: list[str], rows: list[tuple]) -> None:
    """Many rows in chunks: unnest of typed arrays on PostgreSQL, execute_many on SQLite."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        if db.dialect.postgresql:
            arrays = [list(col) for col in zip(*chunk, strict=True)]
            args = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
            await db.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({args})", *arrays)
        else:
            marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
            await db.execute_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", chunk)


async def fill(db: Database, *, outbox: int, usage: int, users: int) -> str:
    now = dt.datetime.now(dt.UTC)
    account = await tenancy.create_account(db, name="Bench", timezone="UTC", now=now, actor="bench")
    user_ids = []
    for i in range(users):
        row = await tenancy.create_user(db, account_id=account["id"], now=now, actor="bench", fields={
            "email": f"u{i}@example.com", "display_name": f"User {i}", "timezone": "Europe/Paris", "role": "member",
            "active": True, "digest_cadence": "daily", "digest_time": "08:00", "digest_weekday": "monday",
            "quiet_hours": None})
        user_ids.append(row["id"])
    states = ["sent"] * 90 + ["failed"] * 6 + ["queued"] * 2 + ["held"] * 2
    later = now + dt.timedelta(days=3)  # queued and held ones are not due while the bench runs
    rows = []
    for i in range(outbox):
        mid, status = new_id("msg"), states[i % 100]
        rows.append((mid, "mail", user_ids[i % users], f"u{i % users}@example.com", f"Subject {i}", "body", "{}",
                     f"<{mid}@roost.mail>", status, later if status == "held" else None, later,
                     1, "550 no such mailbox" if status == "failed" else None, now - dt.timedelta(seconds=i),
                     now if status == "sent" else None))
    await insert(db, "outbox", ["id", "kind", "recipient_user_id", "to_addr", "subject", "text_body", "headers",
                                "message_id", "status", "hold_until", "next_attempt_at", "attempts", "last_error",
                                "created_at", "sent_at"],
                 ["text", "text", "text", "text", "text", "text", "jsonb", "text", "text", "timestamptz",
                  "timestamptz", "int", "text", "timestamptz", "timestamptz"], rows)
    rows = []
    for i in range(usage):
        day = (now - dt.timedelta(days=i % 90)).date().isoformat()
        rows.append((f"user{i % 50}", f"m{i}", "r", day, MODELS[i % 3], now, 1000 + i % 777, 100, 10, 5000))
    await insert(db, "usage_messages", ["username", "message_id", "request_id", "day", "model", "seen_at",
                                        "input_tokens", "output_tokens", "cache_creation_input_tokens",
                                        "cache_read_input_tokens"],
                 ["text", "text", "text", "text", "text", "timestamptz", "bigint", "bigint", "bigint", "bigint"], rows)
    if db.dialect.postgresql:
        await db.execute("ANALYZE")
    return user_ids[0]


async def time_page(client: httpx.AsyncClient, path: str, views: int = 20) -> tuple[float, list[float]]:
    """(the first view's ms, then ``views`` timed views after a second warm-up)."""
    first = 0.0
    for _ in range(2):
        start = time.perf_counter()
        r = await client.get(path)
        first = first or (time.perf_counter() - start) * 1000
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(views):
        start = time.perf_counter()
        r = await client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200
    return first, times


async def main(args: argparse.Namespace) -> int:
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-console-jobs-')}/roost.db"
    async with open_database(url) as db:
        await migrate(db)
        start = time.perf_counter()
        if args.reuse:  # a database an earlier run filled
            first_user = await db.fetchval("SELECT MIN(id) FROM users")
            print(f"reusing {await db.fetchval('SELECT COUNT(*) FROM outbox'):,} outbox rows ({db.dialect.name})")
        else:
            first_user = await fill(db, outbox=args.outbox, usage=args.usage, users=args.users)
            print(f"filled {args.outbox:,} outbox rows, {args.usage:,} usage messages, {args.users:,} users "
                  f"in {time.perf_counter() - start:.1f} s ({db.dialect.name})")
    failed = False
    async with running_server(url, console_tokens=f"bench:operate:{TOKEN}", session_dir=tempfile.mkdtemp(),
                              processor_crons={"usage": "0 0 1 1 *", "tools": "0 0 1 1 *"}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/console/login", data={"token": TOKEN, "next": "/console"})
            assert r.status_code == 303, r.text
            first = await client.get("/console/mail", params={"state": "sent"})
            older = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
            third = (await client.get(older)).text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
            pages = [("mail, failed", "/console/mail"), ("mail, sent", "/console/mail?state=sent"),
                     ("mail, sent, 3rd page", third.replace("&amp;", "&")),
                     ("digest preview", f"/console/mail/digests/{first_user}"),
                     ("processors, 14 days", "/console/processors")]
            for name, path in pages:
                first_ms, times = await time_page(client, path)
                median, worst = statistics.median(times), max(times)
                ok = median < LIMIT_MS
                failed |= not ok
                print(f"{name:22} first {first_ms:7.1f} ms  median {median:7.1f} ms  max {worst:7.1f} ms  "
                      f"limit {LIMIT_MS:.0f} ms  "
                      f"{'PASS' if ok else 'FAIL'}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"result": "FAIL" if failed else "PASS"}))
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a fresh database (default: a temp SQLite file)")
    parser.add_argument("--outbox", type=int, default=300_000)
    parser.add_argument("--usage", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--reuse", action="store_true", help="time the pages on a database an earlier run filled")
    sys.exit(trio.run(main, parser.parse_args()))
