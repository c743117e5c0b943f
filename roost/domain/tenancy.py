"""Accounts and users: changing an account, deleting a user or an account.

A deletion is one transaction (``roost/storage/erasure.py`` says what it does to the rows);
after the commit the deleted users' sockets here close with 1008 and their ids are published
(``USER_DEACTIVATED``: ``SocketEvents`` closes them in the other processes), then the dispatch
items still on their (now revoked) devices end so their batches can finish. The pruner's sweep of
dead devices does the same after a crash between the commit and the release. The effects are
written up for apps in docs/tenancy.md.
"""

from __future__ import annotations

from typing import Any

from roost.domain.devices import release_dead_devices
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_POLICY
from roost.runtime.topics import HANDOFF_EVENTS, USER_DEACTIVATED
from roost.storage import erasure, tenancy
from roost.storage.database import Row


async def update_account(services: Services, account_id: str, changes: dict[str, Any], *, actor: str) -> Row:
    """Change an account's ``name``, ``timezone`` or ``assess_parks`` (``tenancy.update_account`` says what
    it raises)."""
    return await tenancy.update_account(services.db, account_id, changes, now=services.clock.now(), actor=actor)


async def _disconnect(services: Services, user_ids: list[str], reason: str) -> None:
    for user_id in user_ids:
        for sock in services.sockets.for_user(user_id):
            sock.close(CLOSE_POLICY, reason)
        services.bus.publish(USER_DEACTIVATED, user_id)  # and the user's sockets in other processes
    for user_id in user_ids:
        await release_dead_devices(services, user_id=user_id)


async def delete_user(services: Services, user_id: str, *, actor: str) -> Row:
    """Delete a user; answers it as it was.

    Raises:
        NotFound: no such (live) user.
    """
    row = await erasure.delete_user(services.db, user_id, now=services.clock.now(), actor=actor)
    await _disconnect(services, [user_id], "user deleted")
    return row


async def delete_account(services: Services, account_id: str, *, actor: str) -> Row:
    """Delete an account and its users; answers the account as it was.

    Raises:
        NotFound: no such (live) account.
    """
    row, user_ids = await erasure.delete_account(services.db, account_id, now=services.clock.now(), actor=actor)
    services.bus.publish(HANDOFF_EVENTS, account_id)  # the handoff_cancelled events
    await _disconnect(services, user_ids, "account deleted")
    return row
