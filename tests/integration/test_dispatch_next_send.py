"""A batch's ``next_send`` on SQLite and PostgreSQL: for every limit it says what the claim decided.

The services clock starts at T0 (real trio time on top, since a database and MockClock do not
mix); claims run at ``clock.now()`` as the dispatcher and a polling device make them, until the
limits let nothing more go; then the batch's ``next_send`` must be exactly the claim's
``(next_at, reason)``: both come from ``limits.decide`` over the same ledger.
"""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import pytest

from roost.domain.dispatch.sending import CONNECTED_WITHIN, batch_with_next_send
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import dispatch, send_queue, tenancy
from roost.storage.database import open_database
from tests.integration.test_dispatch_claims import LEASE, T0, make_batch, setup_account

SECOND = dt.timedelta(seconds=1)


@asynccontextmanager
async def services_at_t0(url: str) -> AsyncIterator[Services]:
    async with open_database(url) as db:
        yield Services.build(Settings(database_url=url), db, Clock(wall_start=T0))


async def claim_all(services: Services, env: dict) -> send_queue.Claim:
    """Claim as the dispatcher does until a claim lets nothing go; returns that claim."""
    while True:
        claim = await send_queue.claim(services.db, account_id=env["account"], device_id=env["devices"][0],
                                       max_items=100, now=services.clock.now(), lease_s=LEASE)
        if not claim.items:
            return claim


Ledger = list[dt.datetime]


@pytest.mark.parametrize(("settings", "reason", "expected_at"), [
    ({"max_per_minute": 2}, "window:minute", lambda ledger: ledger[-2] + 60 * SECOND),
    ({"max_per_hour": 2}, "window:hour", lambda ledger: ledger[-2] + 3600 * SECOND),
    ({"max_per_day": 2}, "window:day", lambda ledger: ledger[-2] + 86400 * SECOND),
    ({"min_gap_seconds": 30}, "min_gap", lambda ledger: ledger[-1] + 30 * SECOND),
    ({"paused": True}, "paused", lambda ledger: None),
    ({"quiet_hours": {"start": "11:00", "end": "13:00"}, "timezone": "UTC"}, "quiet_hours",
     lambda ledger: T0.replace(hour=13)),
    # The minute window frees up at 12:01, inside quiet hours: their end is when, and why.
    ({"max_per_minute": 2, "quiet_hours": {"start": "12:01", "end": "13:00"}, "timezone": "UTC"}, "quiet_hours",
     lambda ledger: T0.replace(hour=13)),
    ({"max_per_minute": 2, "max_per_hour": 2}, "window:hour", lambda ledger: ledger[-2] + 3600 * SECOND),
])
async def test_next_send_is_exactly_what_the_claim_decided_for_each_limit(
    database_url: str, settings: dict[str, Any], reason: str, expected_at: Callable[[Ledger], dt.datetime | None]
) -> None:
    async with services_at_t0(database_url) as services:
        env = await setup_account(services.db)
        await dispatch.put_settings(services.db, env["account"], settings, now=T0)
        batch = await make_batch(services.db, env, 5)
        services.sockets.open(env["devices"][0], env["user"], env["account"])

        claim = await claim_all(services, env)
        view = await batch_with_next_send(services, batch["id"])
        ledger = await send_queue.ledger(services.db, env["account"])

    assert (claim.reason, claim.next_at) == (reason, expected_at(ledger))
    assert view["next_send"] == {"at": claim.next_at, "reason": claim.reason}
    assert view["counts"]["pending"] == 5 - len(ledger) > 0


async def test_next_send_follows_the_batch_state_and_whether_a_device_is_connected(database_url: str) -> None:
    async with services_at_t0(database_url) as services:
        db = services.db
        env = await setup_account(db)
        draft = await make_batch(db, env, 2, start=False)
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] == {"at": None, "reason": "draft"}

        await dispatch.change_batch(db, draft["id"], "send", now=T0)
        # Nobody holds a socket here, and the device was never seen, or not lately.
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] == {
            "at": None, "reason": "no_device_connected"}
        await db.execute("UPDATE devices SET last_seen_at = $1", services.clock.now() - 2 * CONNECTED_WITHIN)
        assert (await batch_with_next_send(services, draft["id"]))["next_send"]["reason"] == "no_device_connected"
        # Seen lately (a poll, or a socket in another process): an item may go now.
        await tenancy.touch_devices(db, env["devices"], services.clock.now() - CONNECTED_WITHIN / 2)
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] is None
        # A socket in this process counts at once.
        await db.execute("UPDATE devices SET last_seen_at = NULL")
        services.sockets.open(env["devices"][0], env["user"], env["account"])
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] is None

        await dispatch.change_batch(db, draft["id"], "pause", now=T0)
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] == {
            "at": None, "reason": "batch_paused"}
        await dispatch.change_batch(db, draft["id"], "resume", now=T0)

        await claim_all(services, env)  # both items dispatched: nothing of this batch waits
        assert (await batch_with_next_send(services, draft["id"]))["next_send"] == {
            "at": None, "reason": "nothing_pending"}
