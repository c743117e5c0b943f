"""Devices that can no longer send: revoking a device, deactivating a user, and ending what
their dispatch items still hold.

Revoking or deactivating closes the sockets held here at once and publishes the ids
(``DEVICE_REVOKED``, ``USER_DEACTIVATED``: ``SocketEvents`` closes them in the other processes),
then ends the open dispatch items of the dead devices so their batches can finish. The pruner's
sweep (``sweep_dead_devices``) does the same for everything, which also covers a crash between
the revocation's commit and the release.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any

from roost.domain.dispatch.sending import batch_done
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_POLICY
from roost.runtime.topics import DEVICE_REVOKED, USER_DEACTIVATED
from roost.storage import devices as device_rows
from roost.storage import processes, send_queue, tenancy
from roost.storage.database import Row


async def revoke_device(services: Services, device_id: str, *, actor: str) -> Row:
    """Revoke the device (``tenancy.revoke_device``, idempotent), close its live sockets with 1008
    and end its queued sends.

    Raises:
        NotFound: no such device.
    """
    s = services
    row = await tenancy.revoke_device(s.db, device_id, now=s.clock.now(), actor=actor)
    s.sockets.close_device(device_id, CLOSE_POLICY, "device revoked")
    s.bus.publish(DEVICE_REVOKED, device_id)  # and its sockets in other processes
    await release_dead_devices(s, device_id=device_id)
    return row


async def update_user(services: Services, user_id: str, changes: dict[str, Any], *, actor: str) -> Row:
    """Apply a partial update (``tenancy.update_user``, which says what it raises); a user left
    inactive loses its sockets (1008) and its devices' queued sends."""
    s = services
    row = await tenancy.update_user(s.db, user_id, changes, now=s.clock.now(), actor=actor)
    if not row["active"]:
        for sock in s.sockets.for_user(user_id):
            sock.close(CLOSE_POLICY, "user deactivated")
        s.bus.publish(USER_DEACTIVATED, user_id)  # and the user's sockets in other processes
        await release_dead_devices(s, user_id=user_id)
    return row


async def release_dead_devices(services: Services, *, device_id: str | None = None,
                               user_id: str | None = None) -> int:
    """End the open items of revoked devices / inactive users (all, or of one device or user) and
    tell the creators of the batches this finished; returns how many batches it finished."""
    finished = await send_queue.release_dead_devices(services.db, now=services.clock.now(), device_id=device_id,
                                                     user_id=user_id)
    for batch in finished:
        batch_done(services, batch)
    return len(finished)


async def sweep_dead_devices(services: Services, now: dt.datetime) -> int:
    """For the pruner: the catch-all for :func:`release_dead_devices` (e.g. after a crash), and for
    items that used up their offers on a device that went away and never came back (``no_result``).
    Returns the batches it finished."""
    unanswered = await send_queue.fail_unanswered(services.db, now=now,
                                                  max_offers=services.settings.dispatch_max_offers)
    for batch in unanswered:
        batch_done(services, batch)
    return await release_dead_devices(services) + len(unanswered)


# -- who is connected where (the console's devices page) -----------------------------------------


@dataclass(frozen=True)
class Here:
    """This process, as the process table names it."""

    process_id: str
    host: str
    pid: int


@dataclass
class Connected:
    """A page of the devices with an open socket in this process, and the processes there are."""

    here: Here
    devices: list[dict[str, Any]]  # device rows with their user and ``sockets`` (how many open here)
    total: int  # devices connected here, on every page
    next_cursor: str | None
    processes: list[dict[str, Any]]  # the process table (PostgreSQL: every process), each ``alive`` and ``here``
    elsewhere: list[dict[str, Any]]  # PostgreSQL: devices with a socket in another live process, with its host and pid
    elsewhere_next: str | None  # the cursor (``elsewhere_cursor``) of the next page of those


async def elsewhere_page(services: Services, *, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]],
                                                                                          str | None]:
    """Devices with a socket in another live process (``process_devices``, written by each
    process's heartbeat, so up to one heartbeat old), each with the process's id, host and pid and
    its device row; revoked devices are left out at once. Empty on SQLite (one process)."""
    s = services
    if not s.db.shared:
        return [], None
    alive_since = s.clock.now() - dt.timedelta(seconds=processes.DEAD_AFTER_BEATS * s.settings.heartbeat_s)
    rows = await processes.devices_elsewhere(s.db, here=s.process_id, alive_since=alive_since, cursor=cursor,
                                             limit=limit)
    more = len(rows) > limit
    rows = rows[:limit]
    described = {r["id"]: r for r in await device_rows.described(s.db, (r["device_id"] for r in rows))}
    out = [{**described[r["device_id"]], "sockets": r["sockets"], "process_id": r["process_id"], "host": r["host"],
            "pid": r["pid"]}
           for r in rows if r["device_id"] in described and described[r["device_id"]]["revoked_at"] is None]
    return out, (rows[-1]["device_id"] if more and rows else None)


async def connected(services: Services, *, cursor: str | None = None, limit: int = 100,
                    elsewhere_cursor: str | None = None) -> Connected:
    """The devices connected to this process now (the socket registry: exact, at once), a page at
    a time in id order, with their rows; and the process table, which says how many sockets each
    other process holds (on PostgreSQL, where several serve one database).

    A socket that is closing (revoked, its user deactivated, dropped as slow) is not counted, and
    neither is a device revoked in the database since, so a revocation leaves the list at once.
    On PostgreSQL also a page of the devices connected to the other processes (``elsewhere_page``).
    """
    s = services
    open_by_device: dict[str, list[Any]] = {}
    for sock in s.sockets.all():
        if sock.close_code is None:
            open_by_device.setdefault(sock.device_id, []).append(sock)
    ids = sorted(d for d in open_by_device if cursor is None or d > cursor)
    page_ids = ids[:limit]
    rows = [r for r in await device_rows.described(s.db, page_ids) if r["revoked_at"] is None]
    now = s.clock.now()
    devices = [{**r, "sockets": len(open_by_device[r["id"]])} for r in rows]
    table = await processes.list_all(s.db)
    heartbeat_s = s.settings.heartbeat_s
    procs = [{**p, "alive": processes.alive(p["last_heartbeat"], now, heartbeat_s),
              "here": p["id"] == s.process_id} for p in table]
    elsewhere, elsewhere_next = await elsewhere_page(s, cursor=elsewhere_cursor, limit=limit)
    return Connected(
        here=Here(s.process_id, socket.gethostname(), os.getpid()),
        devices=devices,
        total=len(open_by_device),
        next_cursor=page_ids[-1] if len(ids) > limit and page_ids else None,
        processes=procs,
        elsewhere=elsewhere,
        elsewhere_next=elsewhere_next,
    )


async def recently_seen(services: Services, *, limit: int = 50) -> list[dict[str, Any]]:
    """The live devices seen most recently in any process (``last_seen_at``, written at most once a
    minute per active device by each process's heartbeat), with ``connected_here``."""
    here = {sock.device_id for sock in services.sockets.all() if sock.close_code is None}
    return [{**r, "connected_here": r["id"] in here}
            for r in await device_rows.recently_seen(services.db, limit=limit)]


async def of_user(services: Services, user_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """A user's devices (revoked ones too), with ``connected_here``.

    Raises:
        NotFound: no such user.
    """
    await tenancy.get_user(services.db, user_id)
    here = {sock.device_id for sock in services.sockets.all() if sock.close_code is None}
    return [{**r, "connected_here": r["id"] in here}
            for r in await device_rows.of_user(services.db, user_id, limit=limit)]
