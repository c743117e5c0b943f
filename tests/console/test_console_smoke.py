"""The console skeleton: sign in, see the overview, fragments, static assets, the live stream."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(30)


async def test_signed_in_operator_sees_the_overview_with_their_name(console):
    client = await console()
    r = await client.get("/console")
    assert r.status_code == 200
    assert "Signed in as <strong>ops</strong>" in r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_fragment_renders_only_the_named_block(console):
    client = await console("read")
    r = await client.get("/console", params={"fragment": "processes"})
    assert r.status_code == 200
    assert "<html" not in r.text and "Processes" in r.text
    assert (await client.get("/console", params={"fragment": "nope"})).status_code == 404
    assert (await client.get("/console", params={"fragment": "<script>" * 100})).status_code == 404


async def test_static_assets_are_served_by_roost(anonymous):
    for name, kind in (("console.js", "javascript"), ("console.css", "text/css")):
        r = await anonymous.get(f"/console/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


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


async def test_live_stream_reports_a_published_topic(console, console_server):
    client = await console("read")
    async with client.stream("GET", "/console/live", params={"topics": "scout.items nope.nope"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert await read_event(lines) == ("hello", '{"topics":["scout.items"]}')
        console_server.services.bus.publish("scout.items", "sct_1")
        name, data = await read_event(lines)
        assert name == "change" and '"scout.items"' in data and "sct_1" in data


async def test_live_stream_refuses_no_known_topic(console):
    client = await console("read")
    r = await client.get("/console/live", params={"topics": "x" * 5000})
    assert r.status_code == 400
