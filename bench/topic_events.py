"""Time topic events to W watchers (the issue 19 bar: 10,000 watchers written in under 1 s), on SQLite or PostgreSQL.

    python bench/topic_events.py                       # SQLite in a temp dir
    python bench/topic_events.py --pg URL              # a fresh database on that server (dropped after)
    python bench/topic_events.py --watchers 10000 --events 5 --mail

Fills one account with W+1 users who all watch the topic (and a few other topics each), plus a second
account whose users watch a topic of the same name, then publishes ``--events`` events by one of the
users through ``roost.domain.watchers.publish_event`` (the function ``POST /api/v1/topics/{topic}/events``
calls): each writes W notifications in one transaction. Prints each event's time and notified count,
the rows written, and a PASS/FAIL line: every event written in under 1 s with exactly W notified.
``--mail`` also times one personal-direct ``email: true`` event (each watcher's mail rendered and
queued in the same transaction); a figure only, not part of the bar.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.domain.watchers import publish_event  # noqa: E402
from roost.runtime.clock import Clock  # noqa: E402
from roost.runtime.config import Settings  # noqa: E402
from roost.runtime.services import Services  # noqa: E402
from roost.serve import share_the_gil  # noqa: E402
from roost.storage.database import Database, open_database  # noqa: E402
from roost.storage.migrator import migrate  # noqa: E402

TOPIC = "rfc-0042"
BAR_S = 1.0
OTHER_TOPICS = 4  # each user also watches this many other topics, so the fan-out has to pick by topic
OTHER_ACCOUNT_USERS = 2_000


async def fill(db: Database, watchers: int, now: dt.datetime) -> None:
    for acc in ("acc_bench", "acc_other"):
        await db.execute("INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $1, 'UTC', $2)", acc, now)
    users = [(f"usr_{i:06d}", "acc_bench", f"u{i}@example.com", f"User {i}", now) for i in range(watchers + 1)]
    users += [(f"usr_o{i:06d}", "acc_other", f"o{i}@example.com", f"Other {i}", now)
              for i in range(OTHER_ACCOUNT_USERS)]
    await db.execute_many(
        "INSERT INTO users (id, account_id, email, display_name, timezone, digest_cadence, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, 'Europe/Berlin', 'daily', $5, $5)", users)
    watches = [(u[0], TOPIC, now) for u in users]
    watches += [(u[0], f"topic-{(i + k) % 50}", now) for i, u in enumerate(users) for k in range(OTHER_TOPICS)]
    await db.execute_many(
        "INSERT INTO watches (user_id, topic, created_at, last_participation_at) VALUES ($1, $2, $3, $3)", watches)
    await db.execute("ANALYZE")


async def bench(url: str, watchers: int, events: int, mail: bool) -> bool:
    async with open_database(url) as db:
        await migrate(db)
        settings = Settings(database_url=url, secret_key="YmVuY2gtc2VjcmV0LWtleS1mb3Itcm9vc3QtYmVuY2g=",
                            log_format="json", public_url="https://roost.example")
        services = Services.build(settings, db, Clock())
        started = time.perf_counter()
        await fill(db, watchers, services.clock.now())
        print(f"fill ({db.backend}): {watchers + 1} users watching {TOPIC!r} (+{OTHER_TOPICS} other topics each),"
              f" {OTHER_ACCOUNT_USERS} in another account, in {time.perf_counter() - started:.1f} s")
        times, counts = [], []
        for n in range(events):
            started = time.perf_counter()
            result = await publish_event(services, topic=TOPIC, event_kind="comment_added", actor_user_id="usr_000000",
                                         payload={"summary": f"reply {n}", "url": "https://app.example/rfc/42"},
                                         email=False, idempotency_key=f"bench-{n}")
            times.append(time.perf_counter() - started)
            counts.append(result["notified"])
            print(f"  event {n + 1}: notified {result['notified']} in {times[-1]:.3f} s")
        rows = await db.fetchval("SELECT COUNT(*) FROM notifications")
        print(f"topic events ({db.backend}): {events} x {watchers} watchers; median {statistics.median(times):.3f} s,"
              f" max {max(times):.3f} s; {rows} notification rows written ({watchers} per event expected)")
        if mail:
            started = time.perf_counter()
            result = await publish_event(services, topic=TOPIC, event_kind="mention", actor_user_id="usr_000000",
                                         payload={"category": "personal-direct", "text": "you are needed"},
                                         email=True)
            mailed = await db.fetchval("SELECT COUNT(*) FROM outbox")
            print(f"personal-direct with email ({db.backend}): notified {result['notified']}, {mailed} mails rendered"
                  f" and queued, in {time.perf_counter() - started:.3f} s (a figure, not the bar)")
        ok = max(times) < BAR_S and all(c == watchers for c in counts) and rows == watchers * events
        print(f"{'PASS' if ok else 'FAIL'}: a topic event to {watchers} watchers written in {max(times):.3f} s at"
              f" worst (bar < {BAR_S:.0f} s, exactly {watchers} notified each time)")
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--mail", action="store_true", help="also time one personal-direct event with e-mail")
    parser.add_argument("--pg", metavar="URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin URL of a PostgreSQL server: a fresh database is made there and dropped")
    args = parser.parse_args()
    share_the_gil()  # as `roost serve` does
    if args.pg:
        from tests.support.pg import admin_execute, url_with_database

        name = f"roost_bench_{uuid.uuid4().hex[:8]}"
        admin_execute(args.pg, f"CREATE DATABASE {name}")
        try:
            ok = trio.run(bench, url_with_database(args.pg, name), args.watchers, args.events, args.mail)
        finally:
            admin_execute(args.pg, f"DROP DATABASE IF EXISTS {name}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ok = trio.run(bench, f"sqlite:///{tmp}/bench.db", args.watchers, args.events, args.mail)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
