"""The console scout page with 1,000,000 items in ONE scout (the worst case of the bar): its queries, then the page.

Fills a fresh database (SQLite in a temp dir, or ``--pg URL``: a new database on that server) with
one scout holding ``--items`` items spread over every status, then times what the scout page
reads: the scout, its capped counts (``item_counts_capped``), the first page of every item and of
one status, a deep page (by cursor), and for reference the exact counts the API reads. Then it
starts ``roost serve`` on that database, signs in to the console and times ``GET
/console/scouts/<id>`` (all items, one status, a deep page) from a client on this machine: an
upper bound of the server time. PASS when every median is under 200 ms.

    .venv/bin/python bench/console_scout_queries.py [--items 1000000] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from roost.storage import scouts as repo
from roost.storage.database import open_database
from roost.storage.migrator import migrate

LIMIT_MS = 200.0
CAP = 10_000
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


async def fill(db, n: int) -> str:
    await db.execute("INSERT INTO accounts (id, name, timezone, created_at) VALUES ('acc_b', 'b', 'UTC', $1)", T0)
    await db.execute("INSERT INTO users (id, account_id, email, display_name, timezone, created_at, updated_at)"
                     " VALUES ('usr_b', 'acc_b', 'b@example.com', 'b', 'UTC', $1, $1)", T0)
    # Disabled, so the served process's scout actor does not triage its pending items while we time.
    await db.execute("INSERT INTO scouts (id, user_id, provider, config, classifier_config, poll_interval_s,"
                     " enabled, created_at, updated_at)"
                     " VALUES ('sct_b', 'usr_b', 'push', '{}', '{}', 60, FALSE, $1, $1)", T0)
    statuses = "ARRAY['pending','queued','delivered','acked','discarded','failed','expired']"
    if db.dialect.postgresql:
        await db.execute(
            "INSERT INTO scout_items (id, scout_id, user_id, source_type, source_msg_ref, status, raw_subject,"
            " next_attempt_at, created_at) SELECT 'prp_' || lpad(i::text, 12, '0'), 'sct_b', 'usr_b', 'push',"
            f" 'ref' || i, ({statuses})[1 + (i % 7)], 'subject ' || i, $1, $1"
            " FROM generate_series(1, $2) AS i", T0, n)
        await db.execute("VACUUM ANALYZE scout_items")
    else:
        await db.execute(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $2)"
            " INSERT INTO scout_items (id, scout_id, user_id, source_type, source_msg_ref, status, raw_subject,"
            " next_attempt_at, created_at) SELECT 'prp_' || substr('000000000000' || i, -12), 'sct_b', 'usr_b',"
            " 'push', 'ref' || i, CASE i % 7 WHEN 0 THEN 'pending' WHEN 1 THEN 'queued' WHEN 2 THEN 'delivered'"
            " WHEN 3 THEN 'acked' WHEN 4 THEN 'discarded' WHEN 5 THEN 'failed' ELSE 'expired' END,"
            " 'subject ' || i, $1, $1 FROM g", T0, n)
        await db.execute("ANALYZE")
    return "sct_b"


async def timed(label: str, fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    print(f"  {label:<44} median {median:7.1f} ms  (min {min(times):.1f})")
    return median


def timed_sync(label: str, fn, runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    print(f"  {label:<44} median {median:7.1f} ms  (min {min(times):.1f})")
    return median


async def main(items: int, pg: str | None) -> tuple[str, str, bool]:
    tmp = tempfile.mkdtemp()
    url = pg or f"sqlite:///{Path(tmp) / 'bench.db'}"
    async with open_database(url) as db:
        await migrate(db)
        start = time.perf_counter()
        scout_id = await fill(db, items)
        print(f"{'postgresql' if db.dialect.postgresql else 'sqlite'}: {items:,} items in one scout"
              f" (filled in {time.perf_counter() - start:.1f} s)")
        total = 0.0
        total += await timed("get_scout", lambda: repo.get_scout(db, scout_id))
        total += await timed(f"item_counts_capped (cap {CAP:,})",
                             lambda: repo.item_counts_capped(db, scout_id, cap=CAP))
        total += await timed("list_items_newest all, first page of 50",
                             lambda: repo.list_items_newest(db, scout_id, status=None, limit=50, cursor=None))
        total += await timed("list_items_newest failed, first page of 50",
                             lambda: repo.list_items_newest(db, scout_id, status="failed", limit=50, cursor=None))
        deep = f"prp_{items // 2:012d}"
        total += await timed("list_items_newest all, a page from the middle",
                             lambda: repo.list_items_newest(db, scout_id, status=None, limit=50, cursor=deep))
        await timed("(API) list_items all, first page of 50",
                    lambda: repo.list_items(db, scout_id, status=None, limit=50, cursor=None))
        exact = await timed("(reference) item_counts exact, all items", lambda: repo.item_counts(db, scout_id), 3)
        ok = total < LIMIT_MS
        print(f"page queries together: {total:.1f} ms (limit {LIMIT_MS:.0f} ms; the exact counts alone"
              f" {exact:.0f} ms) -> {'PASS' if ok else 'FAIL'}")
    return url, scout_id, ok


def time_pages(url: str, scout_id: str, deep: str) -> bool:
    """Serve the filled database and time the console's scout page over HTTP (signed in as operate)."""
    import os
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench-console-operate-token-0000000000001"
    env = {**os.environ, "ROOST_DATABASE_URL": url, "ROOST_PORT": str(port), "ROOST_LOG_FORMAT": "json",
           "ROOST_SERVICE_TOKEN": "bench-console-service-token-00000000000001",
           "ROOST_CONSOLE_TOKENS": f"bench:operate:{token}"}
    proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            r = client.post("/console/login", data={"token": token, "next": "/console"})
            assert r.status_code == 303, r.text
            ok = True
            for label, params in (("all items", {}), ("failed items", {"status": "failed"}),
                                  ("all items, a page from the middle", {"cursor": deep}),
                                  ("the counts fragment (live refresh)", {"fragment": "counts"})):
                def get(params=params) -> None:
                    response = client.get(f"/console/scouts/{scout_id}", params=params)
                    assert response.status_code == 200, response.text[:300]

                median = timed_sync(f"GET scout page: {label}", get)
                ok = ok and median < LIMIT_MS
        print(f"scout page over HTTP: every median under {LIMIT_MS:.0f} ms -> {'PASS' if ok else 'FAIL'}")
        return ok
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--pg", help="URL of an EMPTY PostgreSQL database to fill (its tables are migrated)")
    args = parser.parse_args()
    db_url, scout, queries_ok = trio.run(main, args.items, args.pg)
    pages_ok = time_pages(db_url, scout, f"prp_{args.items // 2:012d}")
    sys.exit(0 if queries_ok and pages_ok else 1)
