"""Time one digest tick over U users x N notifications (all users due), on SQLite or PostgreSQL.

    python bench/digest.py --users 20000 --per-user 50            # SQLite in a temp dir
    python bench/digest.py --users 20000 --per-user 50 --pg URL   # a fresh database on that server
    add --drain to run the mailer actor beside the tick, as the server does, writing every digest
    with the file transport

Prints the fill time, the tick's counters and wall time and (with --drain) the time from the tick's
start until the last digest's .eml file is written, with a PASS/FAIL line against the 20 s bar.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.actors.mailer import Mailer  # noqa: E402
from roost.domain.digest.tick import run_tick  # noqa: E402
from roost.plugins.transports.file import FileTransport  # noqa: E402
from roost.runtime.actor import ActorContext  # noqa: E402
from roost.runtime.clock import Clock  # noqa: E402
from roost.runtime.config import Settings  # noqa: E402
from roost.runtime.services import Services  # noqa: E402
from roost.serve import share_the_gil  # noqa: E402
from roost.storage import outbox  # noqa: E402
from roost.storage.database import Database, open_database  # noqa: E402
from roost.storage.migrator import migrate  # noqa: E402

NOW = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
KINDS = ("comment", "review", "merged", "opened")


async def fill(db: Database, users: int, per_user: int) -> None:
    await db.execute("INSERT INTO accounts (id, name, timezone, created_at) VALUES ('acc_bench', 'Bench', 'UTC', $1)",
                     NOW)
    user_rows = [(f"usr_{i:06d}", f"u{i}@example.com", f"User {i}", NOW) for i in range(users)]
    await db.execute_many(
        "INSERT INTO users (id, account_id, email, display_name, timezone, digest_cadence, created_at, updated_at)"
        " VALUES ($1, 'acc_bench', $2, $3, 'Europe/Berlin', 'daily', $4, $4)", user_rows)
    await db.execute_many("INSERT INTO digest_schedule (user_id, next_at) VALUES ($1, $2)",
                          [(r[0], NOW - dt.timedelta(minutes=1)) for r in user_rows])
    if db.backend == "postgresql":
        await db.execute(
            "INSERT INTO notifications (id, recipient_user_id, event_kind, topic, payload, email, created_at)"
            " SELECT 'ntf_' || u.id || '_' || g, u.id, (ARRAY['comment','review','merged','opened'])[1 + g % 4],"
            " 'topic-' || (g % 7), '{\"summary\": \"something happened\"}'::jsonb, false,"
            " $1::timestamptz - make_interval(mins => g * 20)"
            " FROM users u CROSS JOIN generate_series(1, $2::int) AS g", NOW, per_user)
        await db.execute("ANALYZE")
        return
    chunk: list[tuple] = []
    for i in range(users):
        uid = f"usr_{i:06d}"
        for g in range(per_user):
            chunk.append((f"ntf_{uid}_{g}", uid, KINDS[g % 4], f"topic-{g % 7}", {"summary": "something happened"},
                          NOW - dt.timedelta(minutes=20 * (g + 1))))
        if len(chunk) >= 50_000:
            await _insert(db, chunk)
            chunk = []
    await _insert(db, chunk)
    await db.execute("ANALYZE")


async def _insert(db: Database, rows: list[tuple]) -> None:
    if rows:
        await db.execute_many(
            "INSERT INTO notifications (id, recipient_user_id, event_kind, topic, payload, email, created_at)"
            " VALUES ($1, $2, $3, $4, $5, false, $6)", rows)


async def bench(url: str, users: int, per_user: int, drain: bool, mail_dir: str) -> bool:
    """Fill, tick (with the mailer beside it if ``drain``); False when --drain missed the bar."""
    async with open_database(url) as db:
        await migrate(db)
        started = time.perf_counter()
        await fill(db, users, per_user)
        print(f"fill: {users} users x {per_user} notifications in {time.perf_counter() - started:.1f} s")
        settings = Settings(database_url=url, secret_key="YmVuY2gtc2VjcmV0LWtleS1mb3Itcm9vc3QtYmVuY2g=",  # a Fernet key
                            mail_dir=mail_dir, log_format="json")
        services = Services.build(settings, db, Clock())
        ok = True
        if not drain:
            started = time.perf_counter()
            counters = await run_tick(services, now=NOW)
            print(f"tick ({db.backend}): {time.perf_counter() - started:.2f} s  {counters}")
        else:
            async with trio.open_nursery() as nursery:
                # The mailer actor as the server runs it: woken by each batch's commit.
                mailer = Mailer(FileTransport(mail_dir))
                services.health.add(mailer.name)
                await nursery.start(mailer.run, ActorContext(mailer.name, services))
                started = time.perf_counter()
                counters = await run_tick(services, now=NOW)
                tick_s = time.perf_counter() - started
                sent_by_then = (await outbox.counts(db))["sent"]
                print(f"tick ({db.backend}): {tick_s:.2f} s  {counters}")
                print(f"  the mailer had written {sent_by_then} of them when the tick ended")
                while (await outbox.counts(db))["sent"] < counters["digests"]:  # noqa: ASYNC110 (polls the db)
                    await trio.sleep(0.05)
                total_s = time.perf_counter() - started
                services.stopping.set()
            files = sum(name.endswith(".eml") for name in os.listdir(mail_dir))
            print(f"tick and mail ({db.backend}, file transport): {total_s:.2f} s from the tick's start until the"
                  f" last of {files} .eml files was written ({files - counters['digests']} missing or extra)")
            ok = total_s < 20 and files == counters["digests"]
            print(f"{'PASS' if ok else 'FAIL'}: every due digest assembled and written in {total_s:.2f} s (bar < 20 s)")
        started = time.perf_counter()
        empty = await run_tick(services, now=NOW + dt.timedelta(minutes=1))
        print(f"second tick (nothing due): {1000 * (time.perf_counter() - started):.1f} ms  due={empty['due']}")
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--pg", metavar="URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin URL of a PostgreSQL server: a fresh database is made there and dropped")
    parser.add_argument("--drain", action="store_true",
                        help="run the mailer (file transport) beside the tick and time both")
    args = parser.parse_args()
    share_the_gil()  # as `roost serve` does
    with tempfile.TemporaryDirectory() as tmp:
        mail_dir = str(Path(tmp) / "mail")
        if args.pg:
            from tests.support.pg import admin_execute, url_with_database

            name = f"roost_bench_{uuid.uuid4().hex[:8]}"
            admin_execute(args.pg, f"CREATE DATABASE {name}")
            try:
                ok = trio.run(bench, url_with_database(args.pg, name), args.users, args.per_user, args.drain, mail_dir)
            finally:
                admin_execute(args.pg, f"DROP DATABASE IF EXISTS {name}")
        else:
            ok = trio.run(bench, f"sqlite:///{tmp}/bench.db", args.users, args.per_user, args.drain, mail_dir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
