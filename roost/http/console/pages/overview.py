"""The overview: processes, actors, readiness, queue depths, connected devices, throughput per actor.

Processes come from the process table (every ``roost serve`` on the database, by heartbeat);
actors, readiness, queue depths and throughput from this process's health registry and probes
(a tick is one unit of work an actor reports; the chart is ticks per minute over the last hour).
The page refreshes its parts over the live stream: every heartbeat (``console.tick``), and at
once when work arrives (pushed items, proposals, devices coming and going, mail, dispatch).
"""

from __future__ import annotations

from typing import Any

from quart import Response

from roost.http.console import console_bp
from roost.http.console.auth import page
from roost.http.console.chart import bar_chart
from roost.http.console.render import add_nav, page_html
from roost.http.context import services
from roost.http.ops import process_table
from roost.runtime import topics

add_nav("Overview", "console.overview", order=0)

# What makes the "now" figures change at once (besides every heartbeat).
NOW_TOPICS = " ".join(["console.tick", topics.SCOUT_ITEMS, topics.PROPOSAL_QUEUED, topics.DEVICE_REGISTERED,
                       topics.DEVICE_REVOKED, topics.USER_DEACTIVATED, topics.MAIL_QUEUED, topics.DISPATCH_QUEUED,
                       topics.DISPATCH_RESULT, topics.HANDOFF_EVENTS, topics.WEBHOOKS_QUEUED,
                       # cluster topics the console's page branches add (a scout run ended, in any process);
                       # the live stream ignores a topic this build does not know
                       "scout.ran"])


async def overview_context() -> dict[str, Any]:
    s = services()
    queues = {"socket_outgoing_frames": s.sockets.pending_frames()}
    for name, probe in s.queue_probes.items():
        queues[name] = await probe()
    table = await process_table()
    throughput = [{"name": name, "total": sum(per_minute),
                   "chart": bar_chart(per_minute, title=f"{name}, ticks per minute over the last hour",
                                      labels=[f"{60 - i} min ago" for i in range(60)])}
                  for name, per_minute in sorted(s.health.throughput().items())]
    return {
        "ready": s.health.ready,
        "late": s.health.late(),
        "process_id": s.process_id,
        "processes": table,
        "alive_processes": sum(1 for p in table if p["alive"]),
        "actors": s.health.snapshot(),
        "queues": queues,
        "connected_devices": s.sockets.count,
        "connected_everywhere": sum(p["sockets"] for p in table if p["alive"] and p["id"] != s.process_id)
        + s.sockets.count,
        "throughput": throughput,
        "now_topics": NOW_TOPICS,
    }


@console_bp.get("")
@console_bp.get("/")
@page()
async def overview() -> Response:
    return await page_html("console/overview.html", **await overview_context())
