"""Fan-out: committed handoff events to every open socket of the account's active users.

- Producers write events in their own transaction (``roost.storage.handoffs``) and, after the
  commit, publish the account id on the bus topic ``handoffs.TOPIC`` (a cluster topic: the bus
  relay wakes the other processes too). This actor then reads the account's events after the
  last one it pushed, in ``seq`` order, and offers each (encoded once) to every live socket of
  the account whose user is active. A catch-up message (the relay reconnected, or its safety
  sweep) and a slow safety read every ``handoff_poll_s`` (30 s) compare every account's counter,
  so an event whose wake-up was lost still goes out. Only committed rows are ever read: a
  rollback publishes nothing.
- ``offer`` never waits: a socket whose bounded outbox is full is closed 1013 (slow consumer)
  and catches up on reconnect; the others are not delayed.
- A socket that registers is first "catching up": the hook notes the last pushed ``seq`` (D)
  without awaiting, so from then on every pushed event goes into the socket's own buffer; it
  replays the events in (since, D] from the database with ``await sock.put`` (backpressure),
  then empties the buffer, and only when the buffer is empty (checked and switched with no
  await in between) does the socket become live. Each socket also remembers the last ``seq`` it
  was sent and never takes one at or below it. So there is no gap and no duplicate at the seam.
- ``since`` older than the retention window (its next event was pruned, or is older than
  ``handoff_event_retention_s``), or ahead of the account's counter: ``resync_required {seq}``,
  and the client reloads the queue over HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import trio

from roost.errors import StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_TRY_AGAIN, DeviceSocket, encode
from roost.storage import handoffs as repo

REPLAY_PAGE = 500
log = get_logger()


@dataclass(eq=False)
class _SocketState:
    sock: DeviceSocket
    last_seq: int
    live: bool = False
    buffer: list[tuple[int, str, str]] = field(default_factory=list)


def event_frame(row: dict) -> dict:
    return {"type": row["kind"], "seq": int(row["seq"]), "handoff": row["handoff"]}


class FanOut(Actor):
    name = "fanout"

    def __init__(self, services: Services):
        self.services = services
        self.delivered: dict[str, int] = {}  # account id -> last seq pushed from this process
        self._states: dict[int, _SocketState] = {}  # socket id -> state
        self._ready = trio.Event()
        self._pending: set[str] = set()
        self._everything = False
        self._wake = trio.Event()
        services.frames.on_register.append(self.on_register)

    # -- live push ---------------------------------------------------------------------------

    async def push_account(self, account_id: str) -> int:
        """Push every committed event of the account after the last pushed one; returns frames queued."""
        db, sockets = self.services.db, self.services.sockets
        users: set[str] | None = None
        queued = 0
        while True:
            after = self.delivered.get(account_id, 0)
            rows = await repo.events_after(db, account_id, after, limit=REPLAY_PAGE)
            if not rows:
                return queued
            if users is None:
                users = await repo.active_user_ids(db, account_id)
            if self.delivered.get(account_id, 0) != after:  # another task pushed meanwhile
                continue
            targets = [(s, self._states.get(s.id)) for s in sockets.for_account(account_id) if s.user_id in users]
            for row in rows:
                seq = int(row["seq"])
                frame = event_frame(row)
                text, kind = encode(frame), frame["type"]
                for i, (sock, state) in enumerate(targets):
                    if state is None or state.sock is not sock:
                        # Open, but its register hook has not started: keep what it would miss.
                        state = self._states[sock.id] = _SocketState(sock, last_seq=seq - 1)
                        targets[i] = (sock, state)
                    if seq <= state.last_seq:
                        continue
                    if state.live:
                        if sock.send_nowait(text, kind):
                            queued += 1
                        state.last_seq = seq
                    else:
                        state.buffer.append((seq, text, kind))
                        if len(state.buffer) > self.services.settings.ws_outgoing_buffer:
                            sock.close(CLOSE_TRY_AGAIN, "slow consumer (catching up)")
                self.delivered[account_id] = seq

    # -- registration (replay) ---------------------------------------------------------------

    async def on_register(self, sock: DeviceSocket, since: int | None) -> None:
        await self._ready.wait()
        account_id = sock.account_id
        upto = self.delivered.get(account_id, 0)
        state = self._states.get(sock.id)
        if state is None or state.sock is not sock:
            state = self._states[sock.id] = _SocketState(sock, last_seq=upto)
        if since is not None:
            state.last_seq = min(since, upto)
        # From here on, pushes for this socket go to its buffer (a push before now created the
        # state itself, buffering from the socket's first event on).
        try:
            if since is not None:
                await self._replay(sock, state, since, upto)
            while state.buffer:
                seq, text, kind = state.buffer.pop(0)
                if seq > state.last_seq:
                    await sock.send(text, kind)
                    state.last_seq = seq
            state.live = True  # the buffer is empty and nothing awaited since it was checked
        except BaseException:
            self._states.pop(sock.id, None)
            raise

    async def _replay(self, sock: DeviceSocket, state: _SocketState, since: int, upto: int) -> None:
        db = self.services.db
        if since >= upto:
            if since > upto and since > await repo.last_seq(db, sock.account_id):
                await self._resync(sock, state, upto)  # ahead of the counter: the client's seq is not ours
            else:
                state.last_seq = since  # this process lags another one: skip what the client has
            return
        if sock.user_id not in await repo.active_user_ids(db, sock.account_id):
            state.last_seq = upto
            return
        cutoff = self.services.clock.now() - dt.timedelta(seconds=self.services.settings.handoff_event_retention_s)
        after = since
        while after < upto:
            rows = await repo.events_after(db, sock.account_id, after, upto=upto, limit=REPLAY_PAGE)
            if after == since and (not rows or int(rows[0]["seq"]) != since + 1 or rows[0]["created_at"] < cutoff):
                await self._resync(sock, state, upto)
                return
            if not rows:
                break
            for row in rows:
                await sock.send(encode(event_frame(row)), row["kind"])
                state.last_seq = after = int(row["seq"])

    async def _resync(self, sock: DeviceSocket, state: _SocketState, upto: int) -> None:
        await sock.send({"type": "resync_required", "seq": upto,
                        "message": "missed events are no longer kept; reload the queue over HTTP"})
        state.last_seq = upto

    # -- the loop ----------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Forget sockets that have closed."""
        alive = {s.id for s in self.services.sockets.all()}
        for sid in [sid for sid in self._states if sid not in alive]:
            del self._states[sid]

    async def _listen(self, sub) -> None:
        while True:
            message = await sub.receive()
            if message.overflowed:
                self._everything = True
            self._pending.update(message.ids)
            self._wake.set()

    async def _wake_on_drain(self, ctx: ActorContext) -> None:
        await ctx.stopping.wait()
        self._wake.set()

    async def run_once(self, *, everything: bool) -> int:
        accounts = set(self._pending)
        self._pending.clear()
        if everything:
            for account_id, last in (await repo.last_seqs(self.services.db)).items():
                if last > self.delivered.get(account_id, 0):
                    accounts.add(account_id)
        queued = 0
        for account_id in sorted(accounts):
            queued += await self.push_account(account_id)
        return queued

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        poll_s = services.settings.handoff_poll_s
        with services.bus.subscribe(repo.TOPIC) as sub:
            if not self._ready.is_set():
                # Events committed before this process started went to the sockets of that time.
                self.delivered = await repo.last_seqs(services.db)
                self._ready.set()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, sub)
                nursery.start_soon(self._wake_on_drain, ctx)
                task_status.started()
                next_poll = trio.current_time() + poll_s
                while not ctx.stopping.is_set():
                    with trio.move_on_at(next_poll):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    polling = trio.current_time() >= next_poll or self._everything
                    self._everything = False
                    if polling:
                        next_poll = trio.current_time() + poll_s
                        self._sweep()
                    try:
                        await self.run_once(everything=polling)
                    except StorageError as exc:  # a database hiccup: retry on the next read, keep serving
                        ctx.log.error("fan-out failed; retrying on the next read", error=exc.message)
                    ctx.tick()
                nursery.cancel_scope.cancel()


async def prune_events(services: Services, now: dt.datetime) -> int:
    """The pruner step: events older than the retention window."""
    return await repo.prune_events(services.db, now - dt.timedelta(seconds=services.settings.handoff_event_retention_s))
