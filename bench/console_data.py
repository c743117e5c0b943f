"""Data for ``bench/console.py``: accounts, users with devices, scouts and their items, written
straight into a database (SQLite or PostgreSQL) before ``roost serve`` starts on it.

    python bench/console_data.py DATABASE_URL --accounts 100 --devices 2000 --scouts 100 --items 1000000 --out data.json

It migrates the database, then writes: ``--accounts`` accounts; ``devices / 2`` users with two
devices each, dealt over the accounts in turn (the tokens go to ``--out``, for the socket clients);
``--scouts`` push scouts over the first users;
``--items`` items spread evenly over the scouts, created over the last 30 days, mostly acked with
some discarded, expired and failed (none pending or queued, so no actor has work at start). Items go
in with one ``execute_many`` per 20,000 rows. This is a separate process from the bench because it
imports roost's storage (and with it trio-asyncio on PostgreSQL; STACK-NOTES pitfall 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.storage import tenancy  # noqa: E402
from roost.storage.database import open_database  # noqa: E402
from roost.storage.ids import new_id  # noqa: E402
from roost.storage.migrator import migrate  # noqa: E402
from roost.storage.scouts import item_ids  # noqa: E402

CHUNK = 20_000
STATUSES = ["acked"] * 90 + ["discarded"] * 5 + ["expired"] * 4 + ["failed"]
SENDERS = ["billing@vendor.example", "news@list.example", "ann@example.com", "bob@example.org", "ci@build.example"]
SUBJECTS = ["Invoice {n} overdue", "Weekly news {n}", "Re: lunch {n}", "Build {n} failed", "Your order {n}"]


async def generate(url: str, *, accounts: int, devices: int, scouts: int, items: int) -> dict:
    rng = random.Random(20)
    now = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    async with open_database(url, pool_size=2) as db:
        await migrate(db)
        account_ids = [(await tenancy.create_account(db, name=f"console-bench-{k}", timezone="UTC", now=now,
                                                     actor="bench"))["id"] for k in range(accounts)]
        users, tokens = [], []
        for i in range(max(1, devices // 2)):
            user = await tenancy.create_user(db, account_id=account_ids[i % accounts], fields={
                "email": f"user{i}@bench.example", "display_name": f"User {i}", "timezone": "UTC", "role": "member",
                "active": True, "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday",
                "quiet_hours": None}, now=now, actor="bench")
            users.append(user["id"])
            for d in range(2 if len(tokens) + 2 <= devices else devices - len(tokens)):
                _, token = await tenancy.create_device(db, user_id=user["id"], name=f"dev{i}-{d}", now=now,
                                                       actor="bench")
                tokens.append(token)
        scout_ids = []
        async with db.transaction() as tx:
            for i in range(scouts):
                scout_id = new_id("sct")
                await tx.execute(
                    "INSERT INTO scouts (id, user_id, provider, config, classifier, classifier_config, poll_interval_s,"
                    " enabled, next_run_at, created_at, updated_at) VALUES ($1, $2, 'push', $3, 'rules', $3, 300,"
                    " TRUE, $4, $4, $4)", scout_id, users[i % len(users)], {}, now)
                scout_ids.append(scout_id)
        setup_s = time.monotonic() - started
        sql = ("INSERT INTO scout_items (id, scout_id, user_id, source_type, source_msg_ref, status, sender,"
               " raw_subject, raw_snippet, verdict, last_error, next_attempt_at, created_at, triaged_at, acked_at)"
               " VALUES ($1, $2, $3, 'push', $4, $5, $6, $7, $8, $9, $10, $11, $11, $11, $12)")
        user_of = {s: users[i % len(users)] for i, s in enumerate(scout_ids)}
        written = 0
        while written < items:
            rows = []
            for n in range(written, min(items, written + CHUNK)):
                scout_id = scout_ids[n % len(scout_ids)]
                status = STATUSES[rng.randrange(len(STATUSES))]
                at = now - dt.timedelta(seconds=rng.randrange(30 * 86400))
                k = rng.randrange(5)
                rows.append((item_ids(1)[0], scout_id, user_of[scout_id], f"ref-{n:07d}", status, SENDERS[k],
                             SUBJECTS[k].format(n=n), "snippet", "archive" if status != "failed" else None,
                             "unreachable: timed out" if status == "failed" else None, at,
                             at if status == "acked" else None))
            async with db.transaction() as tx:
                await tx.execute_many(sql, rows)
            written += len(rows)
        items_s = time.monotonic() - started - setup_s
        await db.execute("ANALYZE")
    return {"account_id": account_ids[0], "users": users[:1], "accounts": accounts, "scouts": scout_ids,
            "tokens": tokens, "setup_s": round(setup_s, 1), "items_s": round(items_s, 1), "items": items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--scouts", type=int, default=100)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = trio.run(lambda: generate(args.url, accounts=args.accounts, devices=args.devices, scouts=args.scouts,
                                       items=args.items))
    Path(args.out).write_text(json.dumps(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("tokens", "scouts")}))


if __name__ == "__main__":
    main()
