"""The deliverer catches the errors it expects (storage) and lets bugs reach the supervisor (issue 16 item 5).

A storage error in the live push is logged and the actor goes on (the rows stay queued and come
on the next wake-up); anything else crashes the actor, so ``/api/admin/status`` shows it with its
error and the supervisor restarts it, and the proposal still arrives afterwards.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import trio

from roost.errors import StorageError
from roost.storage import proposals as repo
from tests.support.scouting import connect, make_push_scout, push
from tests.support.server import admin_client, make_device, running_server


async def deliverer_status(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/admin/status")
    assert r.status_code == 200, r.text
    return next(a for a in r.json()["actors"] if a["name"] == "deliverer")


def _restarted(status: dict[str, Any]) -> bool:
    return status["restarts"] >= 1 and status["state"] == "running"


@pytest.mark.parametrize(("error", "crashes"), [(RuntimeError("a bug in the live push"), True),
                                                (StorageError("database error: connection lost"), False)],
                         ids=["bug", "storage"])
async def test_a_bug_in_the_live_push_reaches_the_supervisor_and_a_storage_error_does_not(
    database_url: str, monkeypatch: pytest.MonkeyPatch, error: Exception, crashes: bool
) -> None:
    real = repo.queued_for_user
    failures = [error]

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    async with (running_server(database_url, restart_initial_backoff_s=0.05) as server,
                admin_client(server.url) as client, AsyncExitStack() as stack):
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        device = await connect(server.url, ann["token"], stack)
        monkeypatch.setattr(repo, "queued_for_user", fails_once)
        await push(client, scout["id"], ["m1"])
        with trio.fail_after(10):
            while failures:  # noqa: ASYNC110 - the failure happens in the server's actor
                await trio.sleep(0.01)
        status = await deliverer_status(client)
        if crashes:
            assert status["last_error"] == "RuntimeError: a bug in the live push"
            with trio.fail_after(10):  # restarted (a wake-up published while it is down finds no one)
                while not _restarted(await deliverer_status(client)):  # noqa: ASYNC110 - polling the API
                    await trio.sleep(0.02)
        else:
            assert status["last_error"] is None and status["restarts"] == 0 and status["state"] == "running"
        # Either way the proposal is not lost: the next wake-up delivers it with the new one.
        await push(client, scout["id"], ["m2"])
        refs = {p["source_msg_ref"] for p in await device.proposals(2)}
        assert refs == {"m1", "m2"}


async def test_an_ack_batch_whose_write_fails_once_is_written_on_the_next_attempt(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = repo.ack
    failures = [StorageError("database error: deadlock detected")]

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    async with (running_server(database_url) as server, admin_client(server.url) as client,
                AsyncExitStack() as stack):
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        device = await connect(server.url, ann["token"], stack)
        await push(client, scout["id"], ["m1"])
        (proposal,) = await device.proposals(1)
        monkeypatch.setattr(repo, "ack", fails_once)
        await device.ack(proposal["id"])
        with trio.fail_after(10):
            while (await client.get(f"/api/admin/scouts/{scout['id']}")).json()["counts"].get("acked", 0) < 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
    assert not failures
