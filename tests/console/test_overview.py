"""The overview page: processes, actors, readiness, queue depths, devices, throughput chart; live parts."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.server import admin_client, make_device

pytestmark = pytest.mark.timeout(30)


def figure(html: str, name: str) -> int:
    found = re.search(rf'data-figure="{name}">(\d+)<', html)
    assert found, f"no {name} figure"
    return int(found[1])


async def test_overview_shows_processes_actors_readiness_queues_and_throughput(console, console_server):
    client = await console("read")
    s = console_server.services
    html = (await client.get("/console")).text
    for heading in ("Processes", "Actors", "Throughput, last hour"):
        assert heading in html
    assert all(a["name"] in html for a in s.health.snapshot())
    assert "readiness" in html
    assert figure(html, "connected_devices") == 0 and figure(html, "socket_outgoing_frames") == 0
    assert html.count('<svg class="chart" role="img"') == len(s.health.snapshot())
    assert "ticks per minute over the last hour" in html
    for part in ("now", "processes", "actors", "throughput"):  # each part is live and swappable
        assert re.search(rf'id="{part}" data-live="[^"]*console\.tick[^"]*" data-src="/console/\?fragment={part}"',
                         html), part
        fragment = (await client.get(f"/console/?fragment={part}")).text
        assert "<html" not in fragment and "<h2" in fragment
    for _ in range(50):  # the heartbeat actor writes this process's row on start
        processes = (await client.get("/console", params={"fragment": "processes"})).text
        if "(this one)" in processes:
            break
    assert "(this one)" in processes and f"<td>{os.getpid()}</td>" in processes and "alive" in processes


async def test_pushed_item_changes_the_queue_depth(console, console_server):
    client = await console("read")
    async with admin_client(console_server.url) as admin:
        ann = await make_device(admin)
        r = await admin.post("/api/admin/scouts", json={"user_id": ann["user"]["id"], "provider": "push"})
        assert r.status_code == 201, r.text
        before = figure((await client.get("/console", params={"fragment": "now"})).text,
                        "scout_items_pending_or_queued")
        r = await admin.post(f"/api/v1/scouts/{r.json()['id']}/items",
                             json={"items": [{"source_msg_ref": "m1", "subject": "hi"}]})
        assert r.status_code == 202, r.text
    after = figure((await client.get("/console", params={"fragment": "now"})).text, "scout_items_pending_or_queued")
    assert after == before + 1
