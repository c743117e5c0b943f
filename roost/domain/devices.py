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
from typing import Any

from roost.domain.dispatch.sending import batch_done
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_POLICY
from roost.runtime.topics import DEVICE_REVOKED, USER_DEACTIVATED
from roost.storage import send_queue, tenancy
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
