"""A wired event survives ``kill -9`` of a real ``roost serve``: ``handoff.created`` of a handoff
whose POST was answered is delivered after a restart, the one in flight again with its webhook-id
(both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.support.handoffs import handoff_body
from tests.support.server import ServerProcess, admin_client, make_device
from tests.support.webhook_receiver import Answer, running_receiver

pytestmark = pytest.mark.e2e

ENV = {"ROOST_ALLOWED_DESTINATIONS": "127.0.0.1", "ROOST_WEBHOOK_TIMEOUT_S": "2", "ROOST_WEBHOOK_LEASE_S": "3",
       "ROOST_WEBHOOK_RETRY_INITIAL_S": "0.1"}


async def _start(database_url: str, workdir: Path) -> ServerProcess:
    return await trio.to_thread.run_sync(lambda: ServerProcess.start(database_url, workdir, env=ENV))


@pytest.mark.timeout(120)
async def test_handoff_created_is_delivered_after_kill_9_of_the_process_that_committed_it(
        database_url: str, tmp_path: Path) -> None:
    async with running_receiver() as receiver:
        first = await _start(database_url, tmp_path)
        try:
            async with admin_client(first.url) as client:
                made = await make_device(client)
                account, user = made["account"]["id"], made["user"]["id"]
                r = await client.post("/api/v1/webhooks", json={"account_id": account, "url": receiver.url + "/in",
                                                                "events": ["handoff.created"]})
                assert r.status_code == 201, r.text
                receiver.answer(Answer(200, hold=True))  # the first delivery is in flight when the process dies
                ids = []
                for ref in ("t-1", "t-2"):  # the second is committed and waits behind the first (in order)
                    r = await client.post("/api/v1/handoffs", json=handoff_body(account, user, subject_ref=ref))
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["id"])
            (held,) = await receiver.wait_for(1, timeout_s=10)
            first.proc.kill()  # SIGKILL
            await trio.to_thread.run_sync(first.proc.wait)
        finally:
            first.kill()
        second = await _start(database_url, tmp_path)
        try:
            got = await receiver.wait_for(3, timeout_s=30)
        finally:
            second.kill()
        assert [g.json["data"]["handoff"]["id"] for g in got] == [ids[0], ids[0], ids[1]]
        assert [g.json["data"]["seq"] for g in got] == [1, 1, 2]
        assert got[1].id == held.id  # the same webhook-id again: receivers dedupe on it
