"""``GET /console/live?topics=a.b c.d``: Server-Sent Events saying which bus topics changed.

Each stream is one bus ``Subscription`` (bounded: ``QUEUE``) to the topics asked for (any topic of
``roost.runtime.topics``, and ``console.tick``, which this stream itself sends every heartbeat for
pages that show times and process state). Messages that arrive together are sent as one event::

    event: change
    data: {"topics": ["scout.items"], "ids": {"scout.items": ["sct_..."]}}

A client that falls behind (its subscription overflowed while a write to it was blocked) gets
``event: overflow`` and the stream ends: the browser reconnects and refreshes everything, and
memory never grows with a slow client. At most ``ROOST_CONSOLE_LIVE_CLIENTS`` streams are open per
process (503 past it). Every stream ends when the process drains.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

import trio
from quart import Response, request

from roost.http.console import console_bp
from roost.http.console.auth import page
from roost.http.console.render import error_page
from roost.http.console.sessions import state
from roost.http.context import services
from roost.runtime import topics as topic_names

TICK = "console.tick"
QUEUE = 64  # messages held per stream before it counts as slow
IDS_PER_TOPIC = 20  # ids sent per topic and event (hints only: pages re-read their rows)
KEEPALIVE_S = 15.0
_TOPIC = re.compile(r"^[a-z_]+\.[a-z_]+$")


def known_topics() -> frozenset[str]:
    """Every topic a console may listen to: those of ``roost.runtime.topics``, and ``console.tick``."""
    found = {value for name, value in vars(topic_names).items()
             if name.isupper() and isinstance(value, str) and _TOPIC.match(value)}
    return frozenset(found | {TICK})


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@console_bp.get("/live")
@page()
async def live() -> Response:
    asked = [t for t in re.split(r"[\s,]+", request.args.get("topics", "")[:2000]) if t]
    known = known_topics()
    wanted = tuple(dict.fromkeys(t for t in asked if t in known))
    if not wanted:
        return await error_page(400, f"name one or more topics to listen to, of: {', '.join(sorted(known))}")
    console = state()
    s = services()
    if console.live_clients >= s.settings.console_live_clients:
        response = await error_page(503, "too many live consoles are open on this process; try again soon")
        response.headers["Retry-After"] = "5"
        return response
    bus_topics = tuple(t for t in wanted if t != TICK)
    tick_s = s.settings.heartbeat_s if TICK in wanted else None

    async def stream() -> AsyncIterator[bytes]:
        console.live_clients += 1  # counted once the body runs: its finally then always uncounts it
        subscription = s.bus.subscribe(*bus_topics, size=QUEUE) if bus_topics else None
        try:
            yield b"retry: 2000\n\n" + event("hello", {"topics": list(wanted)})
            next_tick = trio.current_time() + tick_s if tick_s else None
            next_ping = trio.current_time() + KEEPALIVE_S
            while not s.stopping.is_set():
                deadline = min(t for t in (next_tick, next_ping) if t is not None)
                with trio.CancelScope(deadline=deadline) as scope:
                    s.stopping.watch(scope)
                    try:
                        if subscription is not None:
                            await subscription.wait_ready()
                        else:
                            await trio.sleep_forever()
                    finally:
                        s.stopping.unwatch(scope)
                if s.stopping.is_set():
                    break
                now = trio.current_time()
                if subscription is not None and subscription.ready:
                    messages, overflowed = subscription.take()
                    if overflowed:
                        yield event("overflow", {})
                        return
                    ids: dict[str, list[str]] = {}
                    for message in messages:
                        bucket = ids.setdefault(message.topic, [])
                        bucket.extend(i for i in message.ids[:IDS_PER_TOPIC] if len(bucket) < IDS_PER_TOPIC)
                    yield event("change", {"topics": sorted(ids), "ids": ids})
                    next_ping = now + KEEPALIVE_S
                if next_tick is not None and now >= next_tick:
                    yield event("change", {"topics": [TICK], "ids": {}})
                    next_tick = now + tick_s  # type: ignore[operator]
                    next_ping = now + KEEPALIVE_S
                elif now >= next_ping:
                    yield b": ping\n\n"
                    next_ping = now + KEEPALIVE_S
        finally:
            if subscription is not None:
                subscription.close()
            console.live_clients -= 1

    response = Response(stream(), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # proxies: pass each event on at once
    response.timeout = None  # a stream lasts as long as the page is open
    return response
