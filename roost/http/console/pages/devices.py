"""Console: devices connected now and where, recently seen, a user's devices; revoke.

"Where": this process's socket registry says exactly which devices hold a socket here (host, pid,
process id); on PostgreSQL the process table (``processes``, written by every process's
heartbeat) lists the other processes serving the same database and how many sockets each holds
(open that process's console for its devices). "Last seen" is ``devices.last_seen_at``, which
every process writes at most once a minute for the devices active there.

Revoking calls ``devices.revoke_device``, as ``DELETE /api/admin/devices/{id}`` does: the device's
sockets here close 1008 at once, and ``device.revoked`` (a cluster topic) closes them in the other
processes. The connected list refreshes live on ``device.registered`` and ``device.revoked``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from quart import request

from roost.domain import devices as device_ops
from roost.errors import InvalidInput, NotFound
from roost.http.console import console_bp
from roost.http.console.args import matched_arg
from roost.http.console.auth import action, done, page
from roost.http.console.render import add_nav, page_html
from roost.http.context import services
from roost.runtime import topics
from roost.storage.audit import SERVICE

DEVICES_PER_PAGE = 100
RECENT = 50
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
LIVE_TOPICS = " ".join((topics.DEVICE_REGISTERED, topics.DEVICE_REVOKED, topics.USER_DEACTIVATED))
# On PostgreSQL the other processes' sockets are read from what their heartbeats wrote: refreshed every beat.
SHARED_TOPICS = LIVE_TOPICS + " console.tick"

add_nav("Devices", "console.devices", 30)


def _id_arg(name: str) -> str | None:
    return matched_arg(name, _ID, InvalidInput, "is not an id (letters, digits, _ and -, at most 100)")


@console_bp.get("/devices")
@page()
async def devices() -> Any:
    """Connected here (a page at a time), the processes, recently seen devices, and one user's devices."""
    cursor = _id_arg("cursor")
    elsewhere_cursor = _id_arg("elsewhere_cursor")
    user_id = _id_arg("user_id")
    s = services()
    connected = await device_ops.connected(s, cursor=cursor, limit=DEVICES_PER_PAGE,
                                           elsewhere_cursor=elsewhere_cursor)
    recent = await device_ops.recently_seen(s, limit=RECENT)
    users_devices = await device_ops.of_user(s, user_id) if user_id else None
    base = {k: v for k, v in request.args.items() if k not in ("fragment",)}
    without_cursor = {k: v for k, v in base.items() if k not in ("cursor", "elsewhere_cursor")}
    back = "/console/devices" + (f"?{urlencode(base)}" if base else "")
    return await page_html(
        "console/devices.html", connected=connected, recent=recent, user_id=user_id, users_devices=users_devices,
        live_topics=SHARED_TOPICS if s.db.shared else LIVE_TOPICS, back=back, shared=s.db.shared,
        elsewhere_next_link="/console/devices?" + urlencode({**without_cursor,
                                                             "elsewhere_cursor": connected.elsewhere_next})
        if connected.elsewhere_next else None,
        connected_src="/console/devices?" + urlencode({**base, "fragment": "connected"}),
        recent_src="/console/devices?" + urlencode({**base, "fragment": "recent"}),
        next_link="/console/devices?" + urlencode({**without_cursor, "cursor": connected.next_cursor})
        if connected.next_cursor else None,
        first_link="/console/devices" + (f"?{urlencode(without_cursor)}" if without_cursor else "")
        if cursor or elsewhere_cursor else None)


@console_bp.post("/devices/<device_id>/revoke")
@action("device.revoke")
async def revoke_device(device_id: str) -> Any:
    """Revoke the device (``devices.revoke_device``, as the API's DELETE): its sockets close 1008 everywhere."""
    if not _ID.match(device_id):
        raise NotFound(f"no device {device_id[:40]!r}")
    row = await device_ops.revoke_device(services(), device_id, actor=SERVICE)
    back = (await request.form).get("back") or "/console/devices"  # the page it was revoked from (checked by done)
    return done(f"Device {device_id} ({row['name']}) revoked; its sockets are closed.", back)
