"""Dispatch as an operator sees it (the console's dispatch page): an account's limits and when its
next send may go, its batches newest first, its devices and a device's send queue.

Reads only; the actions (send, pause, resume, cancel) are ``roost.domain.dispatch.sending``
``change_batch``, the same the API calls. ``next_send`` here is the account's: the decision a
claim at this instant would make (``send_queue.decision``, ``limits.decide``), so it never
disagrees with the dispatcher.
"""

from __future__ import annotations

from typing import Any

from roost.domain.dispatch import limits
from roost.domain.dispatch.sending import CONNECTED_WITHIN, batch_with_next_send
from roost.errors import NotFound
from roost.runtime.services import Services
from roost.storage import dispatch, dispatch_lists, send_queue
from roost.storage.database import Row

DEVICES_SHOWN = 200


async def account_state(services: Services, account_id: str) -> dict[str, Any]:
    """The account's settings, its use of each window, and its ``next_send``: None when a message
    may go now (``allowed_now`` says how many; None: no limit), else ``{at, reason}`` (``at``
    None: not until something changes, e.g. the account is unpaused).

    Raises:
        NotFound: no such account.
    """
    settings = await dispatch.get_settings(services.db, account_id)
    now = services.clock.now()
    decided = await send_queue.decision(services.db, account_id, now)
    usage = await send_queue.window_usage(services.db, account_id, now)
    return {
        "account_id": account_id,
        "settings": settings,
        "now": now,
        "usage": usage,
        "allowed_now": None if decided.allowed >= limits.UNLIMITED else decided.allowed,
        "next_send": None if decided.allowed > 0 else {"at": decided.next_at, "reason": decided.reason},
    }


async def recent_batches(services: Services, account_id: str, *, status: str | None = None, limit: int = 50,
                         before: str | None = None) -> dict[str, Any]:
    """The account's batches, newest first, with counts by item status.

    Raises:
        NotFound: no such account.
    """
    return await dispatch_lists.recent_batches(services.db, account_id, status=status, limit=limit, before=before)


async def batch(services: Services, account_id: str, batch_id: str) -> dict[str, Any]:
    """One batch of the account with its ``next_send`` (the API's ``GET .../batches/{id}``).

    Raises:
        NotFound: no such batch in this account.
    """
    row = await batch_with_next_send(services, batch_id)
    if row["account_id"] != account_id:
        raise NotFound(f"no batch {batch_id!r}")
    return row


def _connected(services: Services, device: Row, now: Any) -> bool:
    seen = device["last_seen_at"]
    return bool(services.sockets.for_device(device["id"])) or (seen is not None and seen >= now - CONNECTED_WITHIN)


async def devices(services: Services, account_id: str, *, limit: int = DEVICES_SHOWN) -> list[Row]:
    """The account's devices with their queue counts (``pending``, ``dispatched``) and ``connected``
    (a socket in this process, or seen lately anywhere).

    Raises:
        NotFound: no such account.
    """
    await dispatch.get_settings(services.db, account_id)  # NotFound for an unknown account
    rows = await dispatch_lists.account_devices(services.db, account_id, limit=limit)
    now = services.clock.now()
    for row in rows:
        row["connected"] = _connected(services, row, now)
    return rows


async def device_queue(services: Services, account_id: str, device_id: str, *, status: str | None = None,
                       limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """A device of the account's send queue in the order it gets them (the API's
    ``GET /api/admin/devices/{id}/send-queue``).

    Raises:
        NotFound: no such device in this account.
        InvalidInput: a cursor not handed out (``bad_cursor``).
    """
    if await dispatch_lists.device_account(services.db, device_id) != account_id:
        raise NotFound(f"no device {device_id!r} in this account")
    return await dispatch_lists.device_queue(services.db, device_id, status=status, limit=limit, cursor=cursor)
