"""On PostgreSQL a console action in one process reaches the open consoles of every other process."""

from __future__ import annotations

import pytest
import trio

from tests.console.conftest import CONSOLE_TOKENS, sign_in
from tests.console.test_console_smoke import read_event
from tests.support.server import running_server

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(30)]


async def test_an_audit_row_written_in_one_process_shows_live_in_another(pg_url):
    async with running_server(pg_url, console_tokens=CONSOLE_TOKENS) as a, \
            running_server(pg_url, console_tokens=CONSOLE_TOKENS) as b:
        watcher = await sign_in(b.url, "read")
        try:
            async with watcher.stream("GET", "/console/live", params={"topics": "audit.written"}) as r:
                lines = r.aiter_lines()
                assert (await read_event(lines))[0] == "hello"
                acting = await sign_in(a.url, "operate")  # signing in writes an audit row, in process a
                await acting.aclose()
                with trio.fail_after(5):
                    name, data = await read_event(lines)
                assert name == "change" and "audit.written" in data
        finally:
            await watcher.aclose()
