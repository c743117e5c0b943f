# ruff: noqa: ASYNC110  (the live test polls state the server owns)
"""The console skeleton: sign in, see a page, fragments, static assets, the live stream."""

from __future__ import annotations

import httpx
import pytest
import trio

pytestmark = pytest.mark.timeout(30)


async def test_signed_in_page_fragments_and_static_assets(console, anonymous):
    client = await console()
    r = await client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Signed in as <strong>ops</strong>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    r = await client.get("/console", params={"fragment": "processes"})
    assert r.status_code == 200 and "<html" not in r.text and "Processes" in r.text
    assert (await client.get("/console", params={"fragment": "nope"})).status_code == 404
    assert (await client.get("/console", params={"fragment": "<script>" * 100})).status_code == 404
    for name, kind in (("console.js", "javascript"), ("console.css", "text/css")):
        r = await anonymous.get(f"/console/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert not [p for p in (await anonymous.get("/openapi.json")).json()["paths"] if p.startswith("/console")]


async def read_event(lines) -> tuple[str, str]:
    """The next ``event:``/``data:`` pair from an SSE line iterator (comments skipped)."""
    name, data = "message", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            return name, data
    raise AssertionError("the stream ended")


async def test_live_stream_reports_published_topics_and_drops_a_slow_client(console, console_server):
    client = await console("read")
    bus = console_server.services.bus
    subscribers = len(bus._subs["scout.items"])  # the scout actor's own
    r = await client.get("/console/live", params={"topics": "x" * 5000})
    assert r.status_code == 400
    async with client.stream("GET", "/console/live", params={"topics": "scout.items nope.nope"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert await read_event(lines) == ("hello", '{"topics":["scout.items"]}')
        bus.publish("scout.items", "sct_1")
        name, data = await read_event(lines)
        assert name == "change" and '"scout.items"' in data and "sct_1" in data
        for i in range(500):  # far more than the stream holds before it reads again: it is "slow"
            bus.publish("scout.items", f"sct_{i}")
        assert (await read_event(lines))[0] == "overflow"
        with pytest.raises(AssertionError, match="ended"):
            await read_event(lines)
    state = console_server.http.app.extensions["roost.console"]
    with trio.fail_after(5):  # the server notices the end of the stream on its own schedule
        while len(bus._subs["scout.items"]) != subscribers or state.live_clients:
            await trio.sleep(0.01)



async def test_live_stream_ends_when_the_process_drains(console, console_server):
    client = await console("read")
    async with client.stream("GET", "/console/live", params={"topics": "console.tick audit.written"}) as r:
        lines = r.aiter_lines()
        assert (await read_event(lines))[0] == "hello"
        console_server.supervisor.request_stop()
        with trio.fail_after(3), pytest.raises((AssertionError, httpx.HTTPError)):
            await read_event(lines)  # the stream ends (or the connection closes): it never holds the drain
