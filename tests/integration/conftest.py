"""Fixtures for the integration tier: a running server on the test's backend and a device on it."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    """``roost serve`` in this test's trio run, on a fresh database of the test's backend."""
    async with running_server(database_url) as running:
        yield running


@pytest.fixture
async def token(server: Running) -> str:
    """The token of a new device (with its account and user) on ``server``."""
    async with admin_client(server.url) as client:
        return (await make_device(client))["token"]
