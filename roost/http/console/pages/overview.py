"""The overview: processes, actors, readiness, queue depths, connected devices, throughput."""

from __future__ import annotations

from typing import Any

from quart import Response

from roost.http.console import console_bp
from roost.http.console.auth import page
from roost.http.console.render import add_nav, page_html
from roost.http.context import services
from roost.http.ops import process_table

add_nav("Overview", "console.overview", order=0)


async def overview_context() -> dict[str, Any]:
    s = services()
    queues = {"socket_outgoing_frames": s.sockets.pending_frames()}
    for name, probe in s.queue_probes.items():
        queues[name] = await probe()
    return {
        "ready": s.health.ready,
        "late": s.health.late(),
        "process_id": s.process_id,
        "processes": await process_table(),
        "actors": s.health.snapshot(),
        "queues": queues,
        "connected_devices": s.sockets.count,
    }


@console_bp.get("")
@console_bp.get("/")
@page()
async def overview() -> Response:
    return await page_html("console/overview.html", **await overview_context())
