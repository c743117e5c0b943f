# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Bugs reach the supervisor; expected errors do not (a real server, both backends).

An actor catches the errors it expects by type (storage errors, a plugin's errors) and keeps
going; anything else is logged with its traceback, counts against the restart budget, and shows
in ``/readyz`` and ``/api/admin/status``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from roost.errors import StorageError
from roost.runtime.topics import HANDOFF_FOLLOWUPS as FOLLOWUPS
from roost.storage import handoffs
from tests.support.server import admin_client, running_server


async def _actor(client: Any, name: str) -> dict[str, Any]:
    status = (await client.get("/api/admin/status")).json()
    return next(a for a in status["actors"] if a["name"] == name)


async def test_an_unexpected_error_in_an_actor_is_restarted_counted_and_shown_in_status_and_readyz(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    async def buggy(conn: Any) -> list[str]:
        calls.append(trio.current_time())
        raise KeyError("a bug in roost")

    monkeypatch.setattr(handoffs, "pending_mail", buggy)
    with capture_logs() as logs:
        async with running_server(database_url, restart_initial_backoff_s=0.05, restart_max_backoff_s=0.2,
                                  restart_budget=2) as server, admin_client(server.url) as client:
            with trio.fail_after(20):
                while (actor := await _actor(client, "handoff_followups"))["state"] != "failed":
                    await trio.sleep(0.05)
            ready = await client.get("/readyz")
            others = [a for a in (await client.get("/api/admin/status")).json()["actors"]
                      if a["name"] != "handoff_followups"]

    assert actor["restarts"] == 2 and len(calls) == 3  # crashed, restarted twice, then the budget was spent
    assert actor["last_error"] == "KeyError: 'a bug in roost'" and actor["last_error_at"]
    assert ready.status_code == 503 and ready.json()["actors"]["handoff_followups"] == "failed"
    assert all(a["state"] == "running" for a in others)  # every other actor keeps running
    crashed = [e for e in logs if e["event"] == "actor crashed"]
    assert len(crashed) == 3 and isinstance(crashed[0]["exc_info"], BaseException)  # with its traceback


async def test_an_expected_storage_error_is_logged_and_the_actor_keeps_going_without_a_restart(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    async def flaky(conn: Any) -> list[str]:
        calls.append(trio.current_time())
        raise StorageError("database error: connection reset")

    monkeypatch.setattr(handoffs, "pending_mail", flaky)
    async with running_server(database_url, restart_initial_backoff_s=0.05, restart_budget=2) as server, \
            admin_client(server.url) as client:
        with trio.fail_after(20):
            while len(calls) < 4:  # each wake-up is one more pass, each failing the same way
                server.services.bus.publish(FOLLOWUPS, "hnd_x")
                await trio.sleep(0.05)
        actor = await _actor(client, "handoff_followups")
        ready = await client.get("/readyz")

    assert actor["state"] == "running" and actor["restarts"] == 0 and actor["last_error"] is None
    assert actor["ticks"] >= 4
    assert ready.status_code == 200
