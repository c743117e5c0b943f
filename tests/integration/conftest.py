"""Fixtures for the integration tier: a running server on the test's backend, a device on it, and a
real SMTP server."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

import httpx
import pytest

from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server
from tests.support.smtp import SmtpRecorder, smtp_server


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    """``roost serve`` in this test's trio run, on a fresh database of the test's backend."""
    async with running_server(database_url) as running:
        yield running


@pytest.fixture
async def client(server: Running) -> AsyncIterator[httpx.AsyncClient]:
    """An admin API client of ``server`` (a test module's own ``server`` fixture, when it has one)."""
    async with admin_client(server.url) as c:
        yield c


@pytest.fixture
async def env(client: httpx.AsyncClient) -> dict[str, Any]:
    """A new device with its account and user (``make_device``) on the client's server."""
    return await make_device(client)


@pytest.fixture
async def token(server: Running) -> str:
    """The token of a new device (with its account and user) on ``server``."""
    async with admin_client(server.url) as client:
        return (await make_device(client))["token"]


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpRecorder, int]]:
    """A real SMTP server (aiosmtpd) that records what it accepts: (its recorder, its port)."""
    recorder = SmtpRecorder()
    with smtp_server(recorder) as port:
        yield recorder, port
