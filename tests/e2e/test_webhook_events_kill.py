"""A wired event survives ``kill -9`` of a real ``roost serve``: ``handoff.created`` of a handoff
whose POST was answered is delivered after a restart, the one in flight again with its webhook-id
(both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.handoffs import handoff_body
from tests.support.server import admin_client
from tests.support.webhook_receiver import Answer, Receiver
from tests.support.webhook_sender import subscribed_sender, webhook_sender

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
async def test_handoff_created_is_delivered_after_kill_9_of_the_process_that_committed_it(
        database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    async with subscribed_sender(database_url, tmp_path, receiver.url + "/in", ["handoff.created"]) as (
            first, made, _):
        account, user = made["account"]["id"], made["user"]["id"]
        async with admin_client(first.url) as client:
            receiver.answer(Answer(200, hold=True))  # the first delivery is in flight when the process dies
            ids = []
            for ref in ("t-1", "t-2"):  # the second is committed and waits behind the first (in order)
                r = await client.post("/api/v1/handoffs", json=handoff_body(account, user, subject_ref=ref))
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        (held,) = await receiver.wait_for(1, timeout_s=10)
    # (the block's end was a SIGKILL, mid-delivery)
    async with webhook_sender(database_url, tmp_path):
        got = await receiver.wait_for(3, timeout_s=30)
    assert [g.json["data"]["handoff"]["id"] for g in got] == [ids[0], ids[0], ids[1]]
    assert [g.json["data"]["seq"] for g in got] == [1, 1, 2]
    assert got[1].id == held.id  # the same webhook-id again: receivers dedupe on it
