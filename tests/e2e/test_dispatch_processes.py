"""Real ``roost serve`` processes: a WebSocket device end to end, and two processes on one
PostgreSQL sharing one account's limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.support.dispatch import answering_device, start_batch
from tests.support.server import ServerProcess, admin_client, make_device

pytestmark = [pytest.mark.e2e]


async def test_a_real_server_drains_a_batch_to_a_websocket_device(tmp_path: Path) -> None:
    server = await trio.to_thread.run_sync(lambda: ServerProcess.start(f"sqlite:///{tmp_path}/e2e.db", tmp_path))
    try:
        async with admin_client(server.url) as client:
            env = await make_device(client)
            seen: list[str] = []
            async with trio.open_nursery() as nursery:
                await nursery.start(answering_device, server.url, env["token"], seen)
                batch = await start_batch(client, env, 20)
                with trio.fail_after(15):
                    while True:
                        r = await client.get(f"/api/v1/outreach/batches/{batch['id']}")
                        if r.json()["status"] == "done":
                            break
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        assert len(seen) == 20 == len(set(seen))
    finally:
        server.terminate()


@pytest.mark.postgres
async def test_two_processes_on_postgresql_share_one_accounts_limits(pg_empty_url: str, tmp_path: Path) -> None:
    a = await trio.to_thread.run_sync(lambda: ServerProcess.start(pg_empty_url, tmp_path))
    b = await trio.to_thread.run_sync(lambda: ServerProcess.start(pg_empty_url, tmp_path))
    try:
        async with admin_client(a.url) as via_a, admin_client(b.url) as via_b:
            first = await make_device(via_a)
            second = await make_device(via_a, account=first["account"], email="bob@example.com")
            r = await via_a.put(f"/api/admin/accounts/{first['account']['id']}/outreach-settings",
                                json={"max_per_minute": 7})
            assert r.status_code == 200, r.text
            seen_a: list[str] = []
            seen_b: list[str] = []
            async with trio.open_nursery() as nursery:
                await nursery.start(answering_device, a.url, first["token"], seen_a)
                await nursery.start(answering_device, b.url, second["token"], seen_b)
                batch_a = await start_batch(via_a, first, 10)
                batch_b = await start_batch(via_b, second, 10)
                await trio.sleep(4)
                nursery.cancel_scope.cancel()
            counts = [(await via_a.get(f"/api/v1/outreach/batches/{bid}")).json()["counts"]
                      for bid in (batch_a["id"], batch_b["id"])]
    finally:
        a.terminate()
        b.terminate()
    assert len(seen_a) + len(seen_b) == 7
    assert sum(c["sent"] + c["dispatched"] for c in counts) == 7
    assert sum(c["pending"] for c in counts) == 13
