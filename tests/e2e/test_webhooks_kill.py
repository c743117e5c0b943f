"""Webhooks survive ``kill -9`` of a real ``roost serve``: a delivery committed and not yet sent, and
one in flight when the process died, both reach the receiver after a restart (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.domain import webhooks
from roost.storage.database import open_database
from tests.support.server import admin_client
from tests.support.webhook_receiver import Answer, Receiver
from tests.support.webhook_sender import subscribed_sender, webhook_sender

pytestmark = pytest.mark.e2e


async def _emit(database_url: str, account_id: str, n: int) -> None:
    """Commit one event the way a roost process does (the transactional outbox), without waking anyone."""
    async with open_database(database_url) as db, db.transaction() as tx:
        assert await webhooks.emit(tx, account_id=account_id, event="batch.done", payload={"n": n}) == 1


@pytest.mark.timeout(120)
async def test_kill_9_between_commit_and_delivery_and_mid_delivery_loses_nothing(
        database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    async with subscribed_sender(database_url, tmp_path, receiver.url + "/in", ["batch.done"]) as (
            first, made, endpoint):
        account = made["account"]["id"]
        # 1. in flight when the process dies: the receiver holds the request, the row is `sending`
        receiver.answer(Answer(200, hold=True))
        await _emit(database_url, account, 1)
        await _emit(database_url, account, 2)  # committed; waits behind 1 (in order)
        async with admin_client(first.url) as client:  # any change to an enabled endpoint wakes the sender
            r = await client.patch(f"/api/v1/webhooks/{endpoint}", json={"description": "wake up"})
            assert r.status_code == 200, r.text
        (held,) = await receiver.wait_for(1, timeout_s=10)
    # (the block's end was a SIGKILL, mid-delivery)
    # 2. committed while no process runs (as if it died right after its commit)
    await _emit(database_url, account, 3)

    async with webhook_sender(database_url, tmp_path):
        got = await receiver.wait_for(4, timeout_s=30)
    assert [r.json["data"]["n"] for r in got] == [1, 1, 2, 3]
    assert got[1].id == held.id  # sent again with the same webhook-id: receivers dedupe on it
    assert len({r.id for r in got}) == 3
