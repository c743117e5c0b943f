"""Dispatcher: hands each account's queued messages to its connected devices, within its limits.

Event-driven, with one inbox over two topics (``roost.runtime.topics``): ``DISPATCH_QUEUED``
(account ids; a cluster topic, so a batch started in another process wakes this one) —
published when a batch starts or resumes, the settings change or a device registers (that one
locally only) — and ``DISPATCH_RESULT`` (device ids, one per recorded result). Otherwise it
sleeps exactly until the earliest instant it computed something may happen (the end of a gap, a
window, quiet hours, or a lease). There is no polling interval.

For each woken account it walks the account's devices that hold a socket in this process: first
it fails, with reason ``no_result``, items already offered ``dispatch_max_offers`` times whose
last lease ran out (the device never answered; their batch can end), and offers again the other
items whose lease ran out (same id) (``roost.domain.dispatch.sending.expire_offers``), then
claims new ones through ``send_queue.claim`` — the transaction that checks the limits against
the ledger and claims — while the device has fewer than ``dispatch_window`` unanswered items,
and pushes each as ``send_request {id, to_handle, body}``. A device without a socket drains its
items over HTTP (``GET /api/device/send-queue/pending``), under the same claim and limits.

Devices answer ``send_result {id, status, error}``. The socket's task queues the result on a
bounded channel (waiting for room: backpressure on the socket's reader; a result is data, never
dropped, unlike an inbox hint) and the actor's writer task records what arrived together in one
transaction; ``after_result`` then publishes ``DISPATCH_RESULT`` (the device has room again) and
``batch_done`` when it finished a batch.

When the limits let nothing go, it logs why it waits (``dispatch waiting``: account, reason as
``roost.domain.dispatch.limits`` names it, until when): one line per account's look, and at most
one a ``WAIT_LOG_EVERY_S`` per account for the same reason (an account kept waiting by a gap
would log at every dispatch otherwise); a new reason is logged at once.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import trio

from roost.actors.pruner import Prune
from roost.domain.devices import sweep_dead_devices
from roost.domain.dispatch.sending import MAX_ERROR_CHARS, after_result, expire_offers, prune_ledger
from roost.errors import InvalidInput, RoostError, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.bus import Message
from roost.runtime.frames import error_frame
from roost.runtime.services import Services
from roost.runtime.sockets import DeviceSocket
from roost.runtime.topics import DISPATCH_QUEUED, DISPATCH_RESULT
from roost.storage import send_queue
from roost.storage.database import Row

RESULT_BATCH = 256
STORAGE_RETRY_S = 5.0  # a database error in an account's look: look again this much later
WAIT_LOG_EVERY_S = 60.0  # the same wait reason of an account is logged at most this often


def send_request(item: Row) -> dict[str, Any]:
    return {"type": "send_request", "id": item["id"], "to_handle": item["to_handle"], "body": item["body"]}


def parse_result_frame(frame: dict[str, Any]) -> tuple[str, str, str | None]:
    """``send_result`` → (id, status, error).

    Raises:
        InvalidInput: a missing or malformed field, or an unknown one.
    """
    unknown = set(frame) - {"type", "id", "status", "error"}
    if unknown:
        raise InvalidInput(f"send_result has unknown fields {sorted(unknown)}", code="bad_frame")
    item_id, status, error = frame.get("id"), frame.get("status"), frame.get("error")
    if not isinstance(item_id, str) or not 0 < len(item_id) <= 64:
        raise InvalidInput("send_result.id must be the send_request's id (a string)", code="bad_frame")
    if status not in ("sent", "failed"):
        raise InvalidInput("send_result.status must be 'sent' or 'failed'", code="bad_frame")
    if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR_CHARS):
        raise InvalidInput(f"send_result.error must be a string of at most {MAX_ERROR_CHARS} characters or null",
                           code="bad_frame")
    return item_id, status, error


class Dispatcher(Actor):
    name = "dispatcher"

    def __init__(self) -> None:
        # Per device with a socket here: unanswered items as of the last look, and when the
        # earliest lease runs out. Only hints for when to look again; every look reads the database.
        self._outstanding: dict[str, int] = {}
        self._lease_due: dict[str, dt.datetime | None] = {}
        self._results_send: trio.MemorySendChannel[tuple[DeviceSocket, send_queue.Result]] | None = None
        self._waits_logged: dict[str, tuple[str, dt.datetime]] = {}  # account -> (reason, when) last logged

    # -- WebSocket frames (run in the socket's task) ------------------------------------------------

    async def _on_send_result(self, sock: DeviceSocket, frame: dict[str, Any]) -> None:
        """Queue the result for the writer (waiting for room: backpressure on the socket's reader)."""
        item_id, status, error = parse_result_frame(frame)
        assert self._results_send is not None, "registered only while the dispatcher runs"
        await self._results_send.send((sock, send_queue.Result(sock.device_id, item_id, status, error)))

    async def _on_register(self, sock: DeviceSocket, since: int | None) -> None:
        """A device connected: give it back what it holds without a result, then wake the dispatcher."""
        s = self._services
        items = await send_queue.reoffer(s.db, device_id=sock.device_id, now=s.clock.now(),
                                         lease_s=s.settings.dispatch_lease_s, only_expired=False,
                                         max_offers=s.settings.dispatch_max_offers)
        for item in items:
            await sock.send(send_request(item))
        s.bus.deliver(DISPATCH_QUEUED, (sock.account_id,))  # only this process holds the socket: no NOTIFY

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = self._services = ctx.services
        self._results_send, results = trio.open_memory_channel[tuple[DeviceSocket, send_queue.Result]](
            RESULT_BATCH * 4)
        due: dict[str, dt.datetime] = {}
        everything = True  # the first pass looks at every connected account
        with ctx.inbox(DISPATCH_QUEUED, DISPATCH_RESULT) as inbox:
            s.frames.add("send_result", self._on_send_result)
            s.frames.add_register_hook(self._on_register)
            s.queue_probes.setdefault("dispatch_in_flight", lambda: send_queue.count_dispatched(s.db))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_results, results)
                    task_status.started()
                    while True:
                        messages, overflowed = inbox.take()
                        connected = {sock.account_id for sock in s.sockets.all()}
                        accounts = set(connected) if everything or overflowed else self._woken(messages) & connected
                        everything = False
                        now = s.clock.now()
                        accounts.update(a for a, at in due.items() if at <= now)
                        for account_id in accounts:
                            next_at = await self._look(ctx, account_id)
                            if next_at is None:
                                due.pop(account_id, None)
                            else:
                                due[account_id] = next_at
                        for account_id in [a for a in due if a not in connected]:
                            del due[account_id]  # its devices left; a register wakes it again
                        for account_id in [a for a in self._waits_logged if a not in connected]:
                            del self._waits_logged[account_id]
                        ctx.tick()
                        delay = math.inf
                        if due:
                            delay = max(0.0, (min(due.values()) - s.clock.now()).total_seconds())
                        if not await ctx.wait(inbox, at_most=delay):
                            break
                    nursery.cancel_scope.cancel()
            finally:
                s.frames.handlers.pop("send_result", None)
                s.frames.on_register.remove(self._on_register)
                self._results_send = None

    def _woken(self, messages: list[Message]) -> set[str]:
        """The accounts the inbox's messages ask to look at.

        A result frees room on its device; the account is looked at again once half the device's
        window is free, so one look claims many items instead of one look per result.
        """
        s = self._services
        low_water = s.settings.dispatch_window // 2
        accounts: set[str] = set()
        for message in messages:
            if message.topic == DISPATCH_QUEUED:
                accounts.update(message.ids)
                continue
            for device_id in message.ids:
                left = self._outstanding.get(device_id, 0) - 1
                self._outstanding[device_id] = left
                if left <= low_water:
                    socks = s.sockets.for_device(device_id)
                    if socks:
                        accounts.add(socks[0].account_id)
        return accounts

    async def _look(self, ctx: ActorContext, account_id: str) -> dt.datetime | None:
        """``dispatch_account``, with a database error logged and the account looked at again soon."""
        try:
            return await self.dispatch_account(ctx, account_id)
        except StorageError as exc:  # its items stay as they were: look again soon
            ctx.log.error("dispatch failed; retrying", account_id=account_id, error=exc.message,
                          retry_in_s=STORAGE_RETRY_S)
            return ctx.services.clock.now() + dt.timedelta(seconds=STORAGE_RETRY_S)

    async def _write_results(self, results: trio.MemoryReceiveChannel[tuple[DeviceSocket, send_queue.Result]]
                             ) -> None:
        """Record results in batches: whatever has arrived together goes in one transaction."""
        s = self._services
        while True:
            queued = [await results.receive()]
            while len(queued) < RESULT_BATCH:
                try:
                    queued.append(results.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                outcomes = await send_queue.record_results(s.db, [r for _, r in queued], now=s.clock.now())
            except StorageError as exc:
                # Nothing recorded: the items stay dispatched and are offered again after their lease.
                for sock, r in queued:
                    sock.send_nowait(error_frame(exc.code, "the result was not recorded; send it again", id=r.item_id))
                continue
            for (sock, r), outcome in zip(queued, outcomes, strict=True):
                if isinstance(outcome, RoostError):
                    sock.send_nowait(error_frame(outcome.code, outcome.message, id=r.item_id))
                else:
                    after_result(s, outcome, sock.device_id)

    async def dispatch_account(self, ctx: ActorContext, account_id: str) -> dt.datetime | None:
        """Offer and claim for every device of the account connected here; returns the next instant
        this account needs a look without being woken (None: only an event can help)."""
        s = ctx.services
        lease_s, window = s.settings.dispatch_lease_s, s.settings.dispatch_window
        candidates: list[dt.datetime] = []
        wait: send_queue.Claim | None = None  # a claim that let nothing go, and why
        for device_id in sorted({sock.device_id for sock in s.sockets.for_account(account_id)}):
            lease_due = self._lease_due.get(device_id, s.clock.now())
            if lease_due is not None and lease_due <= s.clock.now():
                self._offer(s, device_id, await expire_offers(s, device_id))
            in_flight = await send_queue.in_flight(s.db, device_id)
            while s.sockets.for_device(device_id) and in_flight < window:
                claim = await send_queue.claim(s.db, account_id=account_id, device_id=device_id,
                                               max_items=window - in_flight, now=s.clock.now(), lease_s=lease_s)
                self._offer(s, device_id, claim.items)
                in_flight += len(claim.items)
                if claim.next_at is not None:
                    candidates.append(claim.next_at)
                if claim.reason is not None:
                    wait = claim
                if not claim.more:
                    break
            self._outstanding[device_id] = in_flight
            lease = self._lease_due[device_id] = await send_queue.next_lease_expiry(s.db, device_id)
            if lease is not None:
                candidates.append(lease)
        if wait is not None:
            self._log_wait(ctx, account_id, wait)
        return min(candidates) if candidates else None

    def _log_wait(self, ctx: ActorContext, account_id: str, wait: send_queue.Claim) -> None:
        """``dispatch waiting``, rate-limited per account and reason (see the module docstring)."""
        assert wait.reason is not None
        now = ctx.services.clock.now()
        last = self._waits_logged.get(account_id)
        if last is not None and last[0] == wait.reason and (now - last[1]).total_seconds() < WAIT_LOG_EVERY_S:
            return
        self._waits_logged[account_id] = (wait.reason, now)
        ctx.log.info("dispatch waiting", account_id=account_id, reason=wait.reason,
                     until=wait.next_at.isoformat() if wait.next_at else None)

    def _offer(self, s: Services, device_id: str, items: list[Row]) -> None:
        # A socket that closes in between loses nothing: the item stays dispatched and is offered
        # again when the device registers or its lease runs out.
        for item in items:
            s.sockets.send_to_device(device_id, send_request(item))


def dead_device_sweep() -> Prune:
    """For the pruner: ``roost.domain.devices.sweep_dead_devices``."""
    return Prune("dispatch_dead_devices", sweep_dead_devices)


def ledger_prune() -> Prune:
    """For the pruner: ``roost.domain.dispatch.sending.prune_ledger``."""
    return Prune("dispatch_ledger", prune_ledger)
