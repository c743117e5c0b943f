"""A webhook-sending ``roost serve`` process for the kill -9 tests (tests/e2e/test_*kill*.py).

Its settings make a lost delivery come back quickly: loopback destinations allowed, a 2 s request
timeout, a 3 s lease on a delivery in flight, retries from 0.1 s.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import trio

from tests.support.server import ServerProcess, admin_client, make_device

WEBHOOK_ENV = {"ROOST_ALLOWED_DESTINATIONS": "127.0.0.1", "ROOST_WEBHOOK_TIMEOUT_S": "2",
               "ROOST_WEBHOOK_LEASE_S": "3", "ROOST_WEBHOOK_RETRY_INITIAL_S": "0.1"}


@asynccontextmanager
async def webhook_sender(database_url: str, workdir: Path) -> AsyncIterator[ServerProcess]:
    """``roost serve`` with ``WEBHOOK_ENV`` while the block runs; SIGKILLed when it ends (however it
    ends), as a crash would stop it: no drain, whatever is in flight stays in flight."""
    server = await trio.to_thread.run_sync(lambda: ServerProcess.start(database_url, workdir, env=WEBHOOK_ENV))
    try:
        yield server
    finally:
        server.proc.kill()  # SIGKILL
        await trio.to_thread.run_sync(server.proc.wait)
        server.kill()


@asynccontextmanager
async def subscribed_sender(database_url: str, workdir: Path, url: str, events: list[str]
                            ) -> AsyncIterator[tuple[ServerProcess, dict[str, Any], str]]:
    """``webhook_sender`` with a ``subscribed_device`` made through its API before the block runs:
    (the server, the device, the endpoint's id); SIGKILLed when the block ends."""
    async with webhook_sender(database_url, workdir) as server:
        async with admin_client(server.url) as client:
            made, endpoint = await subscribed_device(client, url, events)
        yield server, made, endpoint


async def subscribed_device(client: httpx.AsyncClient, url: str, events: list[str]) -> tuple[dict[str, Any], str]:
    """A new device (``make_device``: with its account and user) whose account has a webhook endpoint
    at ``url`` for ``events``: (the device, the endpoint's id)."""
    made = await make_device(client)
    r = await client.post("/api/v1/webhooks", json={"account_id": made["account"]["id"], "url": url, "events": events})
    assert r.status_code == 201, r.text
    return made, r.json()["id"]
