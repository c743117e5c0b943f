"""Scout: runs each enabled scout on its own interval, and at once when woken.

A run itself is ``roost.domain.scouting.run_scout``. This actor decides when: a scout is due at
``next_run_at`` (its interval with ±10 % jitter, earlier when a pending retry falls due), and
woken by its inbox: items pushed (``SCOUT_ITEMS``), a scout created or changed
(``SCOUT_CHANGED``), a device of the user registering (``DEVICE_REGISTERED``, which resumes
the user's paused scouts). An overflowed inbox wakes every enabled scout.

At most one run per scout at a time here (and across processes, by the run's job lock): a
wake-up during a run asks for one more run after it. A run another process holds
(``AlreadyRunning``) is retried soon (50 ms doubling to 1 s) while pushed rows wait, since that
run may have read its pending rows before ours were committed; a wake-up ends that wait at once.

Errors: the actor catches ``RoostError`` (plugin, storage, configuration) per scout, with a
per-scout backoff; anything else is a bug in roost and goes to the supervisor.
"""

from __future__ import annotations

import random
from typing import Awaitable, Callable

import trio

from roost.domain.scouting import RunReport, reason_of, retry_delay_s, run_scout
from roost.errors import AlreadyRunning, Conflict, NotFound, RoostError, StorageError
from roost.runtime.actor import Actor, ActorContext, Inbox
from roost.runtime.bus import Message
from roost.runtime.topics import DEVICE_REGISTERED, SCOUT_CHANGED, SCOUT_ITEMS
from roost.storage import scouts as repo

MAX_CONCURRENT_RUNS = 8
IDLE_RECHECK_S = 60.0
STORAGE_RETRY_S = 5.0  # the database failed listing scouts: look again this much later
HELD_RETRY_FIRST_S = 0.05  # a run elsewhere holds the scout while our pushed rows wait: retry soon
HELD_RETRY_MAX_S = 1.0

# Posted to the inbox when a run ends: look at the scouts again (it names none, so wakes none).
_RUN_ENDED = Message(SCOUT_CHANGED, ())


class ScoutActor(Actor):
    """Starts scout runs when they are due or woken; at most one run per scout at a time."""

    name = "scout"

    def __init__(self, rng: random.Random | None = None,
                 run: Callable[..., Awaitable[RunReport]] | None = None):
        """``run`` replaces ``run_scout`` (tests drive the loop under a mock clock without a database)."""
        self._rng = rng or random.Random()
        self._run = run or run_scout
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._crashes: dict[str, tuple[int, float]] = {}  # scout -> (crashes in a row, not before)
        self._held: dict[str, Inbox[str]] = {}  # scouts waiting out a run elsewhere: a wake-up ends the wait

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_RUNS)
        with ctx.inbox(SCOUT_ITEMS, SCOUT_CHANGED, DEVICE_REGISTERED) as inbox:
            async with trio.open_nursery() as nursery:
                task_status.started()
                wait = 0.0
                woken: set[str] | None = set()  # scouts to wake (None: all), kept until a look succeeds
                while await ctx.wait(inbox, at_most=wait):
                    more = await self._woken(ctx, *inbox.take())
                    woken = None if woken is None or more is None else woken | more
                    try:
                        wait = await self._start_due(ctx, nursery, limiter, inbox, woken)
                        woken = set()
                    except StorageError as exc:  # the database is away: keep the actor, look again soon
                        ctx.log.warning("scouts not listed; retrying", error=exc.message, retry_in_s=STORAGE_RETRY_S)
                        wait = STORAGE_RETRY_S
                nursery.cancel_scope.cancel()

    async def _woken(self, ctx: ActorContext, messages: list[Message], overflowed: bool) -> set[str] | None:
        """The scouts the inbox's messages wake (None: every enabled scout), ending their waits
        for a run elsewhere."""
        db = ctx.services.db
        woken: set[str] | None = set()
        try:
            if overflowed:
                woken = None
            else:
                for message in messages:
                    if message.topic == DEVICE_REGISTERED:
                        for user_id in message.ids:
                            woken.update(await repo.scouts_of_user(db, user_id))
                    else:
                        woken.update(message.ids)
        except StorageError as exc:  # unknown whom it meant: wake every scout
            ctx.log.warning("scout wake-up not resolved; waking all", error=exc.message)
            woken = None
        for sid, held in self._held.items():
            if woken is None or sid in woken:
                held.post(sid)
        return woken

    async def _start_due(self, ctx: ActorContext, nursery: trio.Nursery, limiter: trio.CapacityLimiter,
                         inbox: Inbox[Message], woken: set[str] | None) -> float:
        """Start every due or woken scout (``woken`` None: all); return how long to wait until the next is due."""
        rows = await repo.enabled_scouts(ctx.services.db)
        now = ctx.services.clock.now()
        if woken is None:
            woken = {r["id"] for r in rows}
        wait = IDLE_RECHECK_S
        for row in rows:
            sid = row["id"]
            due = row["next_run_at"] is None or row["next_run_at"] <= now or sid in woken
            if sid in self._running:
                if sid in woken:
                    self._again.add(sid)
                continue
            crashed = self._crashes.get(sid)
            if due and crashed is not None and sid not in woken and crashed[1] > trio.current_time():
                wait = min(wait, crashed[1] - trio.current_time())  # a crashing run backs off
                continue
            if due:
                self._running.add(sid)
                nursery.start_soon(self._run_one, ctx, sid, limiter, inbox)
            else:
                wait = min(wait, (row["next_run_at"] - now).total_seconds())
        return max(0.0, wait)

    async def _run_one(self, ctx: ActorContext, scout_id: str, limiter: trio.CapacityLimiter,
                       inbox: Inbox[Message]) -> None:
        try:
            async with limiter:
                held_retry_s = HELD_RETRY_FIRST_S
                while True:
                    self._again.discard(scout_id)
                    try:
                        report = await self._run(ctx.services, scout_id, rng=self._rng)
                        self._crashes.pop(scout_id, None)
                        # Under steady pushes to several processes this loop lives on: start the
                        # backoff afresh after each run that got the scout.
                        held_retry_s = HELD_RETRY_FIRST_S
                        ctx.tick()
                        if report.queued or report.failed or report.error:
                            ctx.log.info("scout run", **report.as_dict())
                    except AlreadyRunning:
                        # A run elsewhere has it. It may have read its pending rows before ours
                        # (pushed to this process) were committed, so while due rows wait, try
                        # again soon (50 ms, doubling to 1 s) until that run ends. With none, its
                        # run covers the scout: look again in a second, not in a spin.
                        try:
                            next_at = await repo.next_pending_at(ctx.services.db, scout_id)
                            due = next_at is not None and next_at <= ctx.services.clock.now()
                        except StorageError as exc:  # raised here it would escape the handlers below
                            ctx.log.warning("scout pending check failed", scout_id=scout_id, error=exc.message)
                            due = True  # unknown: keep trying on the backoff rather than leave rows waiting
                        # A wake (new items pushed here) ends the wait at once: the backoff spaces out
                        # retries with nothing new, it must not hold back what was just pushed.
                        delay = held_retry_s if due else HELD_RETRY_MAX_S
                        held_retry_s = min(held_retry_s * 2, HELD_RETRY_MAX_S)
                        held = self._held[scout_id] = Inbox(size=1)
                        try:
                            if not await ctx.wait(held, at_most=delay):
                                return
                        finally:
                            del self._held[scout_id]
                        if due or held.ready:
                            self._again.add(scout_id)
                    except NotFound:
                        return
                    except RoostError as exc:
                        if isinstance(exc, Conflict) and exc.code == "scout_disabled":
                            return  # disabled since it was listed: nothing to run
                        # One scout's trouble (its database rows, its plugins) never stops the others.
                        # Anything else is a bug in roost: it goes to the supervisor (restart budget).
                        count = self._crashes.get(scout_id, (0, 0.0))[0] + 1
                        delay = retry_delay_s(count)
                        self._crashes[scout_id] = (count, trio.current_time() + delay)
                        ctx.log.error("scout run failed", scout_id=scout_id, error=reason_of(exc), detail=repr(exc),
                                      retry_in_s=delay)
                        return  # due again after the backoff, or at once when woken
                    if scout_id not in self._again or ctx.stopping.is_set():
                        return
        finally:
            self._running.discard(scout_id)
            inbox.post(_RUN_ENDED)
