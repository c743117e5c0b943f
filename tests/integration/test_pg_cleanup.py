"""PostgreSQL cleanup always ends: releases, rollbacks, unlocks and the pool's close have a deadline,
and nothing asyncio reports on the database loop stops the loop from reading its connections.

The server "stops answering" through a proxy that forwards nothing while frozen (as a server sent
SIGSTOP: connections are still accepted, nothing comes back). Bounds below are the deadline plus
a margin for a loaded machine; without a deadline these waits were endless.
"""

from __future__ import annotations

import gc
import logging
import random
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import structlog
import trio

from roost.storage.dedicated import close_dedicated, connect_dedicated
from roost.storage.postgres import CLEANUP_TIMEOUT_S, PostgresDatabase, open_postgres
from tests.support.freeze import freezable_proxy

pytestmark = pytest.mark.postgres

MARGIN_S = 2.0  # a loaded CI machine
BOUND_S = CLEANUP_TIMEOUT_S + MARGIN_S


@contextmanager
def debug_logs_captured() -> Iterator[list[dict]]:
    """Capture log events down to debug, whatever level an earlier test configured."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


async def _leave_an_orphaned_connect_error(db: PostgresDatabase, url: str) -> None:
    """What a connection attempt cancelled right after its TCP connect leaves on the loop.

    asyncpg's SSL probe protocol (``TLSUpgradeProto``) is created, and its transport closed before
    anybody awaits its answer (what asyncio's ``create_connection`` does when the task is
    cancelled in its last step): ``connection_lost`` sets ``ConnectionError('unexpected
    connection_lost() call')`` on a future nobody retrieves, and asyncio reports it to the loop's
    exception handler when the future is collected.
    """
    from asyncpg.connect_utils import TLSUpgradeProto

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432

    async def abandoned() -> None:
        loop = db.loop
        transport, _ = await loop.create_connection(
            lambda: TLSUpgradeProto(loop, host, port, None, True), host, port)
        transport.close()

    await db.aio(abandoned())
    await trio.sleep(0.05)  # connection_lost runs, the protocol and its future are dropped
    gc.collect()
    await trio.sleep(0.05)  # the exception handler has run (and, before the fix, its task had too)


@pytest.mark.timeout(60)
async def test_an_error_asyncio_reports_on_the_loop_does_not_stop_reading_pooled_connections(pg_url: str) -> None:
    """The cause of the unread reset answer: trio-asyncio's default exception handler re-raised such
    an error in the loop's nursery, which cancelled the reader of every connection; a release then
    waited for its reset answer forever. Now it is logged and every connection still answers."""
    with debug_logs_captured() as logs:
        async with open_postgres(pg_url, pool_size=2) as db:
            raw = await db.aio(db.pool.acquire())  # held outside acquire(): the old code fails, not hangs
            try:
                await _leave_an_orphaned_connect_error(db, pg_url)
                answered = None
                with trio.move_on_after(5):
                    answered = await db.aio(raw.fetchval("SELECT 41 + 1"))
            finally:
                raw.terminate()
            assert answered == 42, "the pooled connection's answer was never read"
            assert await db.fetch("SELECT 1 AS one") == [{"one": 1}]  # the pool as a whole too

    reported = [e for e in logs if e["event"] == "asyncio reported an error on the database loop"]
    assert reported and "unexpected connection_lost() call" in reported[0]["error"]


@pytest.mark.timeout(120)
async def test_queries_cancelled_at_random_moments_never_leave_a_release_waiting(pg_url: str) -> None:
    """Workers in transactions cancelled at random points, and the whole pool cancelled at random:
    every round ends (the race that left a release waiting forever, within tens of rounds)."""
    rng = random.Random(16)

    async def worker(db: PostgresDatabase) -> None:
        while True:
            with trio.move_on_after(rng.uniform(0, 0.02)):
                async with db.transaction() as conn:
                    await conn.execute("SELECT pg_sleep($1)", rng.uniform(0, 0.02))
            await trio.lowlevel.checkpoint()

    rounds: list[float] = []
    for _ in range(25):
        began = trio.current_time()
        with trio.move_on_after(rng.uniform(0.05, 0.4)):
            async with open_postgres(pg_url, pool_size=4) as db, trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(worker, db)
        rounds.append(trio.current_time() - began)

    assert len(rounds) == 25 and max(rounds) < 0.4 + BOUND_S  # each round's cancel and cleanup ended in time


@pytest.mark.timeout(60)
async def test_a_release_on_a_server_that_stopped_answering_ends_within_the_cleanup_deadline(pg_url: str) -> None:
    async with freezable_proxy(pg_url) as proxy, open_postgres(proxy.url_for(pg_url), pool_size=2) as db:
        async with db.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        proxy.freeze()
        began = trio.current_time()
        with trio.move_on_after(0.2):
            async with db.acquire() as conn:
                await conn.fetchval("SELECT 1")  # never answered; cancelled, then released
        took = trio.current_time() - began
        proxy.thaw()

        assert took < 0.2 + BOUND_S
        assert await db.fetchval("SELECT pg_backend_pid()") != pid  # that connection was terminated


@pytest.mark.timeout(60)
async def test_a_pool_query_cancelled_on_a_frozen_server_returns_within_the_cleanup_deadline(pg_url: str) -> None:
    """``db.fetch`` (a connection acquired for the one query) used asyncpg's pool methods, whose
    release waits for the cancel to be acknowledged without a timeout: the cancelled trio task
    waited for that asyncio task, forever."""
    async with freezable_proxy(pg_url) as proxy, open_postgres(proxy.url_for(pg_url), pool_size=2) as db:
        assert await db.fetch("SELECT 1 AS one") == [{"one": 1}]
        proxy.freeze()
        began = trio.current_time()
        with trio.move_on_after(0.2):
            await db.fetch("SELECT 2")  # never answered
        took = trio.current_time() - began
        proxy.thaw()

        assert took < 0.2 + BOUND_S
        assert await db.fetch("SELECT 3 AS three") == [{"three": 3}]


@pytest.mark.timeout(60)
async def test_a_rollback_after_a_cancel_on_a_frozen_server_ends_within_the_cleanup_deadline(pg_url: str) -> None:
    async with freezable_proxy(pg_url) as proxy, open_postgres(proxy.url_for(pg_url), pool_size=2) as db:
        await db.execute("CREATE TABLE t (n int)")
        began = 0.0
        with trio.move_on_after(3):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES (1)")
                proxy.freeze()
                began = trio.current_time()
                await conn.execute("INSERT INTO t VALUES (2)")  # never answered
        took = trio.current_time() - began
        proxy.thaw()

        assert took < 3 + 2 * BOUND_S  # cancelled at 3 s, then rollback and release, each bounded
        assert await db.fetch("SELECT n FROM t") == []  # the server rolled the transaction back


@pytest.mark.timeout(60)
async def test_an_advisory_unlock_on_a_frozen_server_ends_and_the_lock_is_free_afterwards(pg_url: str) -> None:
    async with freezable_proxy(pg_url) as proxy, open_postgres(proxy.url_for(pg_url), pool_size=2) as db:
        began = 0.0
        with trio.move_on_after(0.5):
            async with db.advisory_lock("job") as taken:
                assert taken
                proxy.freeze()
                began = trio.current_time()
                await trio.sleep_forever()
        took = trio.current_time() - began
        proxy.thaw()

        assert took < 0.5 + 2 * BOUND_S
        async with db.advisory_lock("job") as taken_again:
            assert taken_again  # the terminated session's lock went with it


@pytest.mark.timeout(60)
async def test_more_job_locks_held_at_once_than_the_pool_has_connections_still_leave_room_for_queries(
    pg_url: str
) -> None:
    # 100 scouts due together on a pool of 10 once took every pooled connection for their locks,
    # and each run then waited forever for one to query with.
    async with open_postgres(pg_url, pool_size=2) as db:
        ran: list[int] = []

        async def run(n: int) -> None:
            async with db.advisory_lock(f"scout:{n}") as taken:
                assert taken
                await trio.sleep(0.05)  # all of them held at once
                async with db.transaction() as tx:
                    ran.append(await tx.fetchval("SELECT $1::int", n))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(run, n)
        assert sorted(ran) == list(range(12))
        async with db.advisory_lock("scout:3") as again, db.advisory_lock("scout:3") as twice:
            assert again and not twice  # released, and exclusive (per name) as before


@pytest.mark.timeout(60)
async def test_closing_the_pool_of_a_frozen_server_ends_within_the_cleanup_deadline(pg_url: str) -> None:
    async with freezable_proxy(pg_url) as proxy:
        async with open_postgres(proxy.url_for(pg_url), pool_size=3) as db:
            async with db.acquire() as a, db.acquire() as b:
                await a.fetchval("SELECT 1")
                await b.fetchval("SELECT 1")
            proxy.freeze()
            began = trio.current_time()
        took = trio.current_time() - began

        assert took < BOUND_S
        assert db.pool.is_closing()


@pytest.mark.timeout(60)
async def test_closing_a_dedicated_session_on_a_frozen_server_ends_within_the_cleanup_deadline(pg_url: str) -> None:
    async with freezable_proxy(pg_url) as proxy, open_postgres(proxy.url_for(pg_url), pool_size=1) as db:
        session = await connect_dedicated(db)
        await session.fetchval("SELECT pg_advisory_lock(7)")
        proxy.freeze()
        began = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()  # as a drain's end would: the close is shielded and still bounded
            await close_dedicated(session)
        took = trio.current_time() - began
        proxy.thaw()

        assert took < BOUND_S
        assert session._conn.is_closed()
        assert isinstance(session._conn, asyncpg.Connection)
