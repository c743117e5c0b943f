"""Dispatch operations shared by HTTP and the dispatcher actor (``roost.actors.dispatcher``).

Each writes rows through ``roost.storage.dispatch`` / ``roost.storage.send_queue`` and then
publishes the wake-ups that follow: ``DISPATCH_QUEUED`` (account ids: the dispatcher looks at the
account; a cluster topic, so a batch started in another process wakes this one),
``DISPATCH_RESULT`` (device ids: the device has room again; this process only) and
``DISPATCH_BATCH_DONE`` (batch ids: the creator's sockets hear ``batch_done``, in whichever
process holds them), ``DISPATCH_CHANGED`` (account ids: a batch was sent, paused, resumed or
cancelled; open consoles re-read the account).

Also the reads that combine rows with this process's state: a batch with its ``next_send`` (the
limits' ``decide``, through the same ``send_queue.decision`` a claim makes, and whether a device
of its pending items is connected), and a single message sent (a one-item batch, already sending).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.domain import webhooks
from roost.domain.dispatch import limits
from roost.runtime.activity import WRITE_EVERY_S
from roost.runtime.services import Services
from roost.runtime.topics import DISPATCH_BATCH_DONE, DISPATCH_CHANGED, DISPATCH_QUEUED, DISPATCH_RESULT
from roost.storage import dispatch, dispatch_lists, send_queue
from roost.storage.database import Row

MAX_ERROR_CHARS = 2000  # a device's error text on a failed send
LEDGER_KEEP = dt.timedelta(days=2)  # the limits look back one day
# A device counts as connected with a socket in this process, or seen (``last_seen_at``, written at
# most once a minute while it holds a socket anywhere or calls the device API) within this long.
CONNECTED_WITHIN = dt.timedelta(seconds=2 * WRITE_EVERY_S)


def wake(services: Services, account_id: str) -> None:
    """Tell the dispatcher that the account may have something to dispatch."""
    services.bus.publish(DISPATCH_QUEUED, account_id)


def batch_done(services: Services, batch: dict[str, Any] | None) -> None:
    """Tell the sockets of a finished batch's creator, in whichever process they are (``batch_done``,
    sent by ``SocketEvents``), and the webhook actor (``batch.done``); None: nothing."""
    if batch is not None:
        webhooks.wake(services.bus)  # its batch.done webhook was queued with the change
    if batch is not None and batch["created_by"]:
        services.bus.publish(DISPATCH_BATCH_DONE, batch["id"])


def after_result(services: Services, outcome: send_queue.ResultOutcome, device_id: str) -> None:
    """What follows a recorded result: room on the device, and maybe ``batch_done``."""
    if not outcome.changed:
        return
    services.bus.publish(DISPATCH_RESULT, device_id)
    batch_done(services, outcome.done_batch)


async def put_settings(services: Services, account_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Replace the account's dispatch settings and look at the account again under them."""
    row = await dispatch.put_settings(services.db, account_id, values, now=services.clock.now())
    wake(services, account_id)
    return row


async def change_batch(services: Services, batch_id: str, action: str, *,
                       account_id: str | None = None) -> dict[str, Any]:
    """Apply send / pause / resume / cancel (``roost.storage.dispatch.change_batch``, which says what
    it raises); a batch that starts or resumes wakes the dispatcher, one that this finishes tells
    its creator. ``account_id`` (the console's page) makes a batch of another account not found."""
    change = await dispatch.change_batch(services.db, batch_id, action, now=services.clock.now(),
                                         account_id=account_id)
    batch = change.batch
    if change.changed:
        services.bus.publish(DISPATCH_CHANGED, batch["account_id"])  # open consoles re-read the account
    if change.changed and action in ("send", "resume"):
        wake(services, batch["account_id"])
    if change.done:
        batch_done(services, batch)
    return batch


async def send_message(services: Services, *, device_id: str | None, user_id: str | None,
                       account_id: str | None, to_handle: str, body: str,
                       idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
    """One message without a batch (``roost.storage.dispatch.create_message``, which says what it
    raises): a one-item batch created sending, so the dispatcher is woken as for a batch's send.
    Returns (item, created)."""
    item, created = await dispatch.create_message(services.db, device_id=device_id, user_id=user_id,
                                                  account_id=account_id, to_handle=to_handle, body=body,
                                                  idempotency_key=idempotency_key, now=services.clock.now())
    if created:
        wake(services, item["account_id"])
    return item, created


async def batch_with_next_send(services: Services, batch_id: str) -> dict[str, Any]:
    """The batch (``dispatch.get_batch``) with ``next_send``: None when an item may go now, else
    ``{at, reason}`` (``limits.next_send``).

    Raises:
        NotFound: no such batch.
    """
    s = services
    batch = await dispatch.get_batch(s.db, batch_id)
    now, pending = s.clock.now(), batch["counts"]["pending"]
    decided, connected = limits.Decision(limits.UNLIMITED), True
    if batch["status"] == "sending" and pending:
        decided = await send_queue.decision(s.db, batch["account_id"], now)
        if decided.allowed > 0:
            connected = any(s.sockets.for_device(d["id"]) or (d["last_seen_at"] is not None
                                                              and d["last_seen_at"] >= now - CONNECTED_WITHIN)
                            for d in await dispatch_lists.pending_devices(s.db, batch_id))
    found = limits.next_send(batch["status"], pending, decided, connected)
    batch["next_send"] = None if found is None else {"at": found.at, "reason": found.reason}
    return batch


async def record_result(services: Services, *, device_id: str, item_id: str, status: str,
                        error: str | None) -> send_queue.ResultOutcome:
    """Record one device result (``roost.storage.send_queue.record_result``, which says what it
    raises) and wake what follows it."""
    outcome = await send_queue.record_result(services.db, device_id=device_id, item_id=item_id, status=status,
                                             error=error, now=services.clock.now())
    after_result(services, outcome, device_id)
    return outcome


async def expire_offers(services: Services, device_id: str, *, limit: int = 1000) -> list[Row]:
    """The device's items whose lease ran out: fail (``no_result``) those offered
    ``dispatch_max_offers`` times, telling the creators of batches this finishes, and return the
    others with a fresh lease, to be offered again with the same id."""
    settings = services.settings
    for batch in await send_queue.fail_unanswered(services.db, now=services.clock.now(), device_id=device_id,
                                                  max_offers=settings.dispatch_max_offers):
        batch_done(services, batch)
    return await send_queue.reoffer(services.db, device_id=device_id, now=services.clock.now(),
                                    lease_s=settings.dispatch_lease_s, only_expired=True,
                                    max_offers=settings.dispatch_max_offers, limit=limit)


async def pull(services: Services, *, account_id: str, device_id: str, limit: int) -> dict[str, Any]:
    """A device's pull of its send queue over HTTP: up to ``limit`` items, first those whose lease
    ran out (same ids), then new ones claimed within the account's limits; ``retry_at`` is when
    something may go if nothing may now."""
    items = await expire_offers(services, device_id, limit=limit)
    claim = await send_queue.claim(services.db, account_id=account_id, device_id=device_id,
                                   max_items=limit - len(items), now=services.clock.now(),
                                   lease_s=services.settings.dispatch_lease_s)
    return {"items": items + claim.items, "retry_at": claim.next_at}


async def prune_ledger(services: Services, now: dt.datetime) -> int:
    """Drop ledger rows older than two days (the limits look back one); for the pruner."""
    return await send_queue.prune_ledger(services.db, older_than=now - LEDGER_KEEP)
