"""Dispatcher: hands each account's queued messages to its connected devices, within its limits.

Event-driven. It wakes on the bus topic ``outreach`` (ids: account ids; a cluster topic, so a
batch started in another process wakes this one) — published when a batch starts or resumes, a
result arrives, the settings change or a device registers (that one locally only) — and
otherwise sleeps exactly until the earliest instant it computed something may happen (the end
of a gap, a window, quiet hours, or a lease). There is no polling interval.

For each woken account it walks the account's devices that hold a socket in this process: first
it fails, with reason ``no_result``, items already offered ``dispatch_max_offers`` times whose
last lease ran out (the device never answered; their batch can end), and offers again the other
items whose lease ran out (same id), then claims new ones through
``sends.claim`` — the transaction that checks the limits against the ledger and claims —
while the device has fewer than ``dispatch_window`` unanswered items, and pushes each as
``send_request {id, to_handle, body}``. A device without a socket drains its items over HTTP
(``GET /api/device/send-queue/pending``), under the same claim and limits.

Devices answer ``send_result {id, status, error}``; ``after_result`` wakes the dispatcher (the
device has room again) and tells the batch's creator ``batch_done`` when it finished a batch.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import trio

from roost.actors.pruner import Prune
from roost.errors import InvalidInput, RoostError, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.frames import error_frame
from roost.runtime.services import Services
from roost.runtime.sockets import DeviceSocket
from roost.runtime.topics import DISPATCH_BATCH_DONE as TOPIC_BATCH_DONE
from roost.storage import sends
from roost.storage.database import Row

TOPIC = "outreach"
RESULT_TOPIC = "outreach.result"  # ids: device ids, one per recorded result
MAX_ERROR_CHARS = 2000
RESULT_BATCH = 256
STORAGE_RETRY_S = 5.0  # a database error in an account's look: look again this much later


def send_request(item: Row) -> dict[str, Any]:
    return {"type": "send_request", "id": item["id"], "to_handle": item["to_handle"], "body": item["body"]}


def wake(services: Services, account_id: str) -> None:
    """Tell the dispatcher that the account may have something to dispatch."""
    services.bus.publish(TOPIC, account_id)


def batch_done(services: Services, batch: dict[str, Any] | None) -> None:
    """Tell the sockets of a finished batch's creator, in whichever process they are (``batch_done``,
    sent by ``SocketEvents``); None or no creator: nothing."""
    if batch is not None and batch["created_by"]:
        services.bus.publish(TOPIC_BATCH_DONE, batch["id"])


def after_result(services: Services, outcome: sends.ResultOutcome, device_id: str) -> None:
    """What follows a recorded result: room on the device, and maybe ``batch_done``."""
    if not outcome.changed:
        return
    services.bus.publish(RESULT_TOPIC, device_id)
    batch_done(services, outcome.done_batch)


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


class _Wakeups:
    """Accounts woken since the dispatcher last looked (coalesced), and an event to wait on."""

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.everything = True  # the first pass looks at every connected account
        self.event = trio.Event()

    def add(self, ids: tuple[str, ...], overflowed: bool) -> None:
        if overflowed:
            self.everything = True
        self.accounts.update(ids)
        self.event.set()

    def take(self, connected: set[str]) -> set[str]:
        taken = set(connected) if self.everything else self.accounts & connected
        self.accounts, self.everything, self.event = set(), False, trio.Event()
        return taken


class Dispatcher(Actor):
    name = "dispatcher"

    def __init__(self, services: Services):
        self._services = services
        # Per device with a socket here: unanswered items as of the last look, and when the
        # earliest lease runs out. Only hints for when to look again; every look reads the database.
        self._outstanding: dict[str, int] = {}
        self._lease_due: dict[str, dt.datetime | None] = {}
        self._results_send, self._results_receive = trio.open_memory_channel[
            tuple[DeviceSocket, sends.Result]](RESULT_BATCH * 4)
        services.frames.add("send_result", self._on_send_result)
        services.frames.on_register.append(self._on_register)
        services.queue_probes.setdefault("dispatch_in_flight", lambda: _count_dispatched(services))

    # -- WebSocket frames ---------------------------------------------------------------------------

    async def _on_send_result(self, sock: DeviceSocket, frame: dict[str, Any]) -> None:
        """Queue the result for the writer (waiting for room: backpressure on the socket's reader)."""
        item_id, status, error = parse_result_frame(frame)
        await self._results_send.send((sock, sends.Result(sock.device_id, item_id, status, error)))

    async def _write_results(self) -> None:
        """Record results in batches: whatever has arrived together goes in one transaction."""
        s = self._services
        while True:
            queued = [await self._results_receive.receive()]
            while len(queued) < RESULT_BATCH:
                try:
                    queued.append(self._results_receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                outcomes = await sends.record_results(s.db, [r for _, r in queued], now=s.clock.now())
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

    async def _on_register(self, sock: DeviceSocket, since: int | None) -> None:
        """A device connected: give it back what it holds without a result, then wake the dispatcher."""
        s = self._services
        items = await sends.reoffer(s.db, device_id=sock.device_id, now=s.clock.now(),
                                    lease_s=s.settings.dispatch_lease_s, only_expired=False,
                                    max_offers=s.settings.dispatch_max_offers)
        for item in items:
            await sock.send(send_request(item))
        s.bus.deliver(TOPIC, (sock.account_id,))  # only this process holds the socket: no NOTIFY

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.services
        wakeups = _Wakeups()
        due: dict[str, dt.datetime] = {}
        with s.bus.subscribe(TOPIC) as sub, s.bus.subscribe(RESULT_TOPIC) as results:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, sub, wakeups)
                nursery.start_soon(self._listen_results, results, wakeups)
                nursery.start_soon(self._write_results)
                nursery.start_soon(self._stop_on_drain, ctx, wakeups)
                task_status.started()
                while not ctx.stopping.is_set():
                    connected = {sock.account_id for sock in s.sockets.all()}
                    accounts = wakeups.take(connected)
                    now = s.clock.now()
                    accounts.update(a for a, at in due.items() if at <= now)
                    for account_id in accounts:
                        try:
                            next_at = await self.dispatch_account(ctx, account_id)
                        except StorageError as exc:  # its items stay as they were: look again soon
                            next_at = s.clock.now() + dt.timedelta(seconds=STORAGE_RETRY_S)
                            ctx.log.error("dispatch failed; retrying", account_id=account_id, error=exc.message,
                                          retry_in_s=STORAGE_RETRY_S)
                        if next_at is None:
                            due.pop(account_id, None)
                        else:
                            due[account_id] = next_at
                    for account_id in [a for a in due if a not in connected]:
                        del due[account_id]  # its devices left; a register wakes it again
                    ctx.tick()
                    delay = math.inf
                    if due:
                        delay = max(0.0, (min(due.values()) - s.clock.now()).total_seconds())
                    with trio.move_on_after(delay):
                        await wakeups.event.wait()
                nursery.cancel_scope.cancel()

    async def _listen(self, sub: Any, wakeups: _Wakeups) -> None:
        while True:
            message = await sub.receive()
            wakeups.add(message.ids, message.overflowed)

    async def _listen_results(self, sub: Any, wakeups: _Wakeups) -> None:
        """Results free room on their device; look again once half its window is free, so one look
        claims many items instead of one look per result."""
        s = self._services
        low_water = s.settings.dispatch_window // 2
        while True:
            message = await sub.receive()
            if message.overflowed:
                wakeups.add((), True)
                continue
            for device_id in message.ids:
                left = self._outstanding.get(device_id, 0) - 1
                self._outstanding[device_id] = left
                if left <= low_water:
                    socks = s.sockets.for_device(device_id)
                    if socks:
                        wakeups.add((socks[0].account_id,), False)

    async def _stop_on_drain(self, ctx: ActorContext, wakeups: _Wakeups) -> None:
        await ctx.stopping.wait()
        wakeups.event.set()

    async def dispatch_account(self, ctx: ActorContext, account_id: str) -> dt.datetime | None:
        """Offer and claim for every device of the account connected here; returns the next instant
        this account needs a look without being woken (None: only an event can help)."""
        s = ctx.services
        lease_s, window = s.settings.dispatch_lease_s, s.settings.dispatch_window
        candidates: list[dt.datetime] = []
        for device_id in sorted({sock.device_id for sock in s.sockets.for_account(account_id)}):
            lease_due = self._lease_due.get(device_id, s.clock.now())
            if lease_due is not None and lease_due <= s.clock.now():
                for batch in await sends.fail_unanswered(s.db, now=s.clock.now(), device_id=device_id,
                                                         max_offers=s.settings.dispatch_max_offers):
                    batch_done(s, batch)
                expired = await sends.reoffer(s.db, device_id=device_id, now=s.clock.now(), lease_s=lease_s,
                                              only_expired=True, max_offers=s.settings.dispatch_max_offers)
                self._offer(s, device_id, expired)
            in_flight = await sends.in_flight(s.db, device_id)
            while s.sockets.for_device(device_id) and in_flight < window:
                claim = await sends.claim(s.db, account_id=account_id, device_id=device_id,
                                          max_items=window - in_flight, now=s.clock.now(), lease_s=lease_s)
                self._offer(s, device_id, claim.items)
                in_flight += len(claim.items)
                if claim.next_at is not None:
                    candidates.append(claim.next_at)
                if not claim.more:
                    break
            self._outstanding[device_id] = in_flight
            lease = self._lease_due[device_id] = await sends.next_lease_expiry(s.db, device_id)
            if lease is not None:
                candidates.append(lease)
        return min(candidates) if candidates else None

    def _offer(self, s: Services, device_id: str, items: list[Row]) -> None:
        # A socket that closes in between loses nothing: the item stays dispatched and is offered
        # again when the device registers or its lease runs out.
        for item in items:
            s.sockets.send_to_device(device_id, send_request(item))


async def release_dead_devices(services: Services, *, device_id: str | None = None,
                               user_id: str | None = None) -> int:
    """End the open items of revoked devices / inactive users and tell creators of finished batches."""
    finished = await sends.release_dead_devices(services.db, now=services.clock.now(), device_id=device_id,
                                                user_id=user_id)
    for batch in finished:
        batch_done(services, batch)
    return len(finished)


def dead_device_sweep() -> Prune:
    """For the pruner: the catch-all for :func:`release_dead_devices` (e.g. after a crash), and for
    items that used up their offers on a device that went away and never came back (``no_result``)."""

    async def run(services: Services, now: dt.datetime) -> int:
        unanswered = await sends.fail_unanswered(services.db, now=now, max_offers=services.settings.dispatch_max_offers)
        for batch in unanswered:
            batch_done(services, batch)
        return await release_dead_devices(services) + len(unanswered)

    return Prune("outreach_dead_devices", run)


def ledger_prune() -> Prune:
    """For the pruner: ledger rows older than two days (the limits look back one)."""

    async def run(services: Services, now: dt.datetime) -> int:
        return await sends.prune_ledger(services.db, older_than=now - dt.timedelta(days=2))

    return Prune("outreach_dispatches", run)


async def _count_dispatched(services: Services) -> int:
    return int(await services.db.fetchval("SELECT COUNT(*) FROM outreach_items WHERE status = 'dispatched'"))
