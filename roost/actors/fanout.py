"""Fan-out: committed handoff events to every open socket of the account's active users.

- Producers write events in their own transaction (``roost.storage.handoffs``) and, after the
  commit, publish the account id on ``HANDOFF_EVENTS`` (``roost.domain.handoffs``; a cluster
  topic: the bus relay wakes the other processes too). This actor then reads the account's
  events after the last one it pushed, in ``seq`` order, and offers each (encoded once) to every
  live socket of the account whose user is active. An overflowed inbox (or the relay's catch-up)
  and a slow safety read every ``handoff_poll_s`` (30 s) compare every account's counter, so an
  event whose wake-up was lost still goes out. Only committed rows are ever read: a rollback
  publishes nothing.
- ``offer`` never waits: a socket whose bounded outbox is full is closed 1013 (slow consumer)
  and catches up on reconnect; the others are not delayed.
- A socket that registers catches up in its own task, and only this actor changes its state.
  The register hook posts a ``_Registration`` to the actor's inbox. The actor notes the last
  pushed ``seq`` (D) and from then on hands every event for that socket to the registration
  (a bounded inbox: past ``ws_outgoing_buffer`` events the socket is closed 1013) instead of
  offering it. The socket's task replays (since, D] from the database with ``await sock.put``
  (backpressure), then writes what was handed to it, then posts ``_CaughtUp`` with how many
  items it took; the actor makes the socket live only if that is everything it handed over (the
  socket's task is then idle), else the task writes the rest and says so again. The socket's
  task also skips any ``seq`` at or below the last one it wrote. So there is no gap and no
  duplicate at the seam.
- ``since`` older than the retention window (its next event was pruned, or is older than
  ``handoff_event_retention_s``), or ahead of the account's counter: ``resync_required {seq}``,
  and the client reloads the queue over HTTP.
- When the actor crashes, sockets still catching up are closed 1013: they register again with
  their ``since`` once it runs. In a drain they are left to the server, which closes every socket
  1001 (going away).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import trio

from roost.errors import StorageError
from roost.runtime.actor import Actor, ActorContext, Inbox
from roost.runtime.bus import Message
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_TRY_AGAIN, DeviceSocket, encode
from roost.runtime.topics import HANDOFF_EVENTS
from roost.storage import handoffs as repo

REPLAY_PAGE = 500
INBOX_SIZE = 16 * 1024  # wake-ups and registrations; a registration that finds it full is closed 1013

Event = tuple[int, str, str]  # seq, encoded frame, frame type


@dataclass(frozen=True)
class _Start:
    """The actor's first answer to a registration: replay up to ``upto``; without ``since``, the
    socket has had everything up to ``last``."""

    upto: int
    last: int


# What the actor hands a registering socket: _Start, then events, then None ("live from now on").
_Item = _Start | Event | None


class _Registration:
    """A registering socket's side of the hand-over; only the socket's task reads ``items``."""

    __slots__ = ("sock", "since", "items")

    def __init__(self, sock: DeviceSocket, since: int | None, size: int):
        self.sock = sock
        self.since = since
        self.items: Inbox[_Item] = Inbox(size)


@dataclass(frozen=True)
class _CaughtUp:
    registration: _Registration
    last: int  # the last seq the socket's task wrote (or skipped as already had)
    taken: int  # how many items it took, all written


@dataclass(eq=False)
class _SocketState:
    sock: DeviceSocket
    last_seq: int  # events at or below it are not for this socket
    live: bool = False
    registration: _Registration | None = None  # registered and catching up: events go to its items
    early: list[Event] = field(default_factory=list)  # pushed before its registration arrived
    handed: int = 0  # items handed to the registration


def event_frame(row: dict) -> dict:
    return {"type": row["kind"], "seq": int(row["seq"]), "handoff": row["handoff"]}


class FanOut(Actor):
    name = "fanout"

    def __init__(self) -> None:
        self.delivered: dict[str, int] | None = None  # account id -> last seq pushed from this process
        self._states: dict[int, _SocketState] = {}  # socket id -> state
        self._inbox: Inbox | None = None  # while running
        self._services: Services | None = None

    # -- live push ---------------------------------------------------------------------------

    async def push_account(self, services: Services, account_id: str) -> int:
        """Push every committed event of the account after the last pushed one; returns frames queued."""
        assert self.delivered is not None
        db, sockets = services.db, services.sockets
        users: set[str] | None = None
        queued = 0
        while True:
            rows = await repo.events_after(db, account_id, self.delivered.get(account_id, 0), limit=REPLAY_PAGE)
            if not rows:
                return queued
            if users is None:
                users = await repo.active_user_ids(db, account_id)
            targets = [(s, self._states.get(s.id)) for s in sockets.for_account(account_id) if s.user_id in users]
            for row in rows:
                seq = int(row["seq"])
                frame = event_frame(row)
                text, kind = encode(frame), frame["type"]
                for i, (sock, state) in enumerate(targets):
                    if state is None or state.sock is not sock:
                        # Open, but its registration has not arrived: keep what it would miss.
                        state = self._states[sock.id] = _SocketState(sock, last_seq=seq - 1)
                        targets[i] = (sock, state)
                    if seq <= state.last_seq:
                        continue
                    if state.live:
                        if sock.send_nowait(text, kind):
                            queued += 1
                        state.last_seq = seq
                    elif state.registration is not None:
                        self._hand(state, (seq, text, kind))
                    else:
                        state.early.append((seq, text, kind))
                        if len(state.early) > services.settings.ws_outgoing_buffer:
                            sock.close(CLOSE_TRY_AGAIN, "slow consumer (catching up)")
                self.delivered[account_id] = seq

    # -- registration (replay) ---------------------------------------------------------------

    def _hand(self, state: _SocketState, item: _Item) -> None:
        assert state.registration is not None
        if state.registration.items.post(item):
            state.handed += 1
        else:
            state.sock.close(CLOSE_TRY_AGAIN, "slow consumer (catching up)")

    def _join(self, reg: _Registration) -> None:
        """A socket registered: hand it where to replay to, and what was pushed for it meanwhile."""
        assert self.delivered is not None
        sock = reg.sock
        upto = self.delivered.get(sock.account_id, 0)
        state = self._states.get(sock.id)
        if state is None or state.sock is not sock:
            state = self._states[sock.id] = _SocketState(sock, last_seq=upto)
            if reg.since is None:  # nothing to replay, nothing pushed for it yet
                state.live = True
                reg.items.post(None)
                return
        state.registration = reg
        self._hand(state, _Start(upto, state.last_seq))
        for event in state.early:
            self._hand(state, event)
        state.early = []

    def _caught_up(self, message: _CaughtUp) -> None:
        """Make the socket live if its task has written everything handed to it (it is idle then)."""
        reg = message.registration
        state = self._states.get(reg.sock.id)
        if state is None or state.registration is not reg or message.taken != state.handed:
            return  # gone, or more was handed over since: its task says so again once written
        state.live, state.registration = True, None
        state.last_seq = max(state.last_seq, message.last)
        reg.items.post(None)

    async def _on_register(self, sock: DeviceSocket, since: int | None) -> None:
        """The register hook (the socket's task): post the registration, then catch up."""
        inbox, services = self._inbox, self._services
        if inbox is None or services is None:  # stopped: the socket registers again once it runs
            if services is None or not services.stopping.is_set():  # a drain closes it 1001 itself
                sock.close(CLOSE_TRY_AGAIN, "handoff events are paused; register again")
            return
        reg = _Registration(sock, since, services.settings.ws_outgoing_buffer + 2)  # + _Start and None
        if not inbox.post(reg):
            sock.close(CLOSE_TRY_AGAIN, "too many sockets registering; register again")
            return
        await _catch_up(services, inbox, reg)

    # -- the loop ----------------------------------------------------------------------------

    def _sweep(self, services: Services) -> None:
        """Forget sockets that have closed."""
        alive = {s.id for s in services.sockets.all()}
        for sid in [sid for sid in self._states if sid not in alive]:
            del self._states[sid]

    async def run_once(self, services: Services, accounts: set[str], *, everything: bool) -> int:
        assert self.delivered is not None
        if everything:
            for account_id, last in (await repo.last_seqs(services.db)).items():
                if last > self.delivered.get(account_id, 0):
                    accounts.add(account_id)
        queued = 0
        for account_id in sorted(accounts):
            queued += await self.push_account(services, account_id)
        return queued

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        poll_s = services.settings.handoff_poll_s
        with ctx.inbox(HANDOFF_EVENTS, size=INBOX_SIZE) as inbox:
            if self.delivered is None:
                # Events committed before this process started went to the sockets of that time.
                self.delivered = await repo.last_seqs(services.db)
            self._inbox, self._services = inbox, services
            services.frames.add_register_hook(self._on_register)
            for sock in services.sockets.all():
                if sock.id not in self._states:  # registered while no hook was there: it gets one now
                    sock.close(CLOSE_TRY_AGAIN, "handoff events were paused; register again")
            try:
                task_status.started()
                next_poll = trio.current_time() + poll_s
                while await ctx.wait(inbox, at_most=next_poll - trio.current_time()):
                    items, overflowed = inbox.take()
                    accounts: set[str] = set()
                    for item in items:
                        if isinstance(item, Message):
                            accounts.update(item.ids)
                        elif isinstance(item, _Registration):
                            self._join(item)
                        else:
                            self._caught_up(item)
                    polling = overflowed or trio.current_time() >= next_poll
                    if polling:
                        next_poll = trio.current_time() + poll_s
                        self._sweep(services)
                    if accounts or polling:
                        try:
                            await self.run_once(services, accounts, everything=polling)
                        except StorageError as exc:  # a database hiccup: retry on the next read, keep serving
                            ctx.log.error("fan-out failed; retrying on the next read", error=exc.message)
                    ctx.tick()
            finally:
                services.frames.on_register.remove(self._on_register)
                self._inbox = None
                self._turn_away(inbox, draining=ctx.stopping.is_set())

    def _turn_away(self, inbox: Inbox, *, draining: bool) -> None:
        """Stopping: release the sockets not live yet, so none waits on this actor.

        After a crash they are closed 1013 and register again; in a drain the server closes every
        socket 1001 (going away), which must be what the client sees, so they are only released.
        """
        for item in inbox.take()[0]:
            if isinstance(item, _Registration):
                if not draining:
                    item.sock.close(CLOSE_TRY_AGAIN, "handoff events are paused; register again")
                item.items.post(None)
        for sid, state in list(self._states.items()):
            if not state.live:
                if not draining:
                    state.sock.close(CLOSE_TRY_AGAIN, "handoff events are paused; register again")
                if state.registration is not None:
                    state.registration.items.post(None)
                del self._states[sid]


# -- the socket's side of a registration (runs in the socket's task) --------------------------------


async def _catch_up(services: Services, inbox: Inbox, reg: _Registration) -> None:
    """Replay, write what the actor handed over, and tell it so until it makes the socket live."""
    sock, last, taken = reg.sock, 0, 0
    while True:
        await reg.items.wait_ready()
        items, overflowed = reg.items.take()
        if overflowed:
            return  # the actor closed the socket: too slow catching up
        for item in items:
            if item is None:
                return  # live: the actor offers it every event from now on
            taken += 1
            if isinstance(item, _Start):
                last = item.last if reg.since is None else await _replay(services, sock, reg.since, item.upto)
            elif item[0] > last:
                await sock.send(item[1], item[2])
                last = item[0]
        if not reg.items.ready and not inbox.post(_CaughtUp(reg, last, taken)):
            sock.close(CLOSE_TRY_AGAIN, "too many sockets registering; register again")
            return


async def _replay(services: Services, sock: DeviceSocket, since: int, upto: int) -> int:
    """Write the account's events in (since, upto] to the socket; the last seq it has now."""
    db = services.db
    if since >= upto:
        if since > upto and since > await repo.last_seq(db, sock.account_id):
            return await _resync(sock, upto)  # ahead of the counter: the client's seq is not ours
        return since  # this process lags another one: skip what the client has
    if sock.user_id not in await repo.active_user_ids(db, sock.account_id):
        return upto
    cutoff = services.clock.now() - dt.timedelta(seconds=services.settings.handoff_event_retention_s)
    after = since
    while after < upto:
        rows = await repo.events_after(db, sock.account_id, after, upto=upto, limit=REPLAY_PAGE)
        if after == since and (not rows or int(rows[0]["seq"]) != since + 1 or rows[0]["created_at"] < cutoff):
            return await _resync(sock, upto)
        if not rows:
            break
        for row in rows:
            await sock.send(encode(event_frame(row)), row["kind"])
            after = int(row["seq"])
    return after


async def _resync(sock: DeviceSocket, upto: int) -> int:
    await sock.send({"type": "resync_required", "seq": upto,
                    "message": "missed events are no longer kept; reload the queue over HTTP"})
    return upto
