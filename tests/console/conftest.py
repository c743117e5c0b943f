"""Fixtures for console tests: a running roost with console tokens, and signed-in clients on both backends.

``console`` is a factory: ``client = await console("read")`` (or ``await console()`` for ``operate``)
gives an ``httpx.AsyncClient`` signed in through ``/console/login`` like a browser (it keeps the
cookie), with ``client.csrf`` read from the page and ``await client.act(url, **fields)`` to post a
console form with the CSRF field. ``console_server`` is the ``Running`` server (its ``services``
reach the database and the bus); a test module overrides ``console_overrides`` (a dict of
``Settings`` fields) to change settings, e.g. a short session.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest

from roost.serve import Running
from tests.support.server import running_server

OPERATE_TOKEN = "console-operate-token-for-roost-tests-0001"
READ_TOKEN = "console-read-token-for-roost-tests-00000001"
CONSOLE_TOKENS = f"ops:operate:{OPERATE_TOKEN},viewer:read:{READ_TOKEN}"
TOKENS = {"operate": OPERATE_TOKEN, "read": READ_TOKEN}
NAMES = {"operate": "ops", "read": "viewer"}
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class ConsoleClient(httpx.AsyncClient):
    """A client signed in to the console: ``name``, ``role``, ``csrf``, and ``act`` to post a form."""

    name: str = ""
    role: str = ""
    csrf: str = ""

    async def act(self, url: str, *, back: str = "/console", **fields: str) -> httpx.Response:
        """POST a console form (with this session's CSRF field); the 303 is not followed."""
        return await self.post(url, data={"csrf": self.csrf, "back": back, **fields})


async def sign_in(base_url: str, role: str = "operate") -> ConsoleClient:
    """A new client signed in with the ``role`` token (``operate`` or ``read``)."""
    client = ConsoleClient(base_url=base_url, timeout=10)
    r = await client.post("/console/login", data={"token": TOKENS[role], "next": "/console"})
    assert r.status_code == 303, r.text
    page = await client.get("/console")
    assert page.status_code == 200, page.text
    found = _CSRF.search(page.text)
    assert found, "no csrf-token meta on the overview"
    client.name, client.role, client.csrf = NAMES[role], role, found[1]
    return client


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    """Settings fields for ``console_server`` (override in a test module to change them)."""
    return {}


@pytest.fixture
async def console_server(database_url: str, console_overrides: dict[str, Any]) -> AsyncIterator[Running]:
    """``roost serve`` in the test's trio run on a fresh database of the test's backend, console on."""
    async with running_server(database_url, console_tokens=CONSOLE_TOKENS, **console_overrides) as running:
        yield running


@pytest.fixture
async def console(console_server: Running) -> AsyncIterator[Callable[..., Awaitable[ConsoleClient]]]:
    """A factory of signed-in console clients: ``await console()`` (operate) or ``await console("read")``."""
    made: list[ConsoleClient] = []

    async def make(role: str = "operate") -> ConsoleClient:
        client = await sign_in(console_server.url, role)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def anonymous(console_server: Running) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no console cookie."""
    async with httpx.AsyncClient(base_url=console_server.url, timeout=10) as client:
        yield client
