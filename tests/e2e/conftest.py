"""Fixtures of the e2e tier (real ``roost serve`` processes)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from tests.support.webhook_receiver import Receiver, running_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP server taking webhook deliveries (``tests/support/webhook_receiver.py``) for the test."""
    async with running_receiver() as running:
        yield running
