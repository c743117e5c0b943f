"""The supervisor: one nursery that owns every actor, restarts crashed ones, and drains on stop.

Restart policy: a crashed actor waits an exponential backoff with jitter and is started again.
More than ``budget`` crashes inside ``window_s`` marks it failed: it stays down (``/readyz``
answers 503 and status shows its last error) while every other actor keeps running.

Draining: ``request_stop()`` sets ``services.stopping``; actors finish what they hold and
return, the HTTP server stops accepting, and whatever is still running when the grace period
ends is cancelled.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import trio

from roost.errors import ActorReturned, unwrap_group
from roost.runtime.actor import Actor, ActorContext, Readiness, first_of
from roost.runtime.health import ActorState
from roost.runtime.logging import bind, get_logger
from roost.runtime.services import Services

log = get_logger()


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    budget: int = 10
    window_s: float = 600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.budget < 0 or not self.window_s > 0:
            raise ValueError("need budget >= 0 and window_s > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("need 0 <= jitter < 1")

    def backoff(self, consecutive: int, rng: random.Random) -> float:
        """Delay before restart number ``consecutive`` (0-based): doubling, ±jitter, never over the cap.

        The cap applies after the jitter, so ``max_backoff_s`` really is the longest wait; at the
        cap the jitter only shortens the delay, which still spreads restarts out.
        """
        base = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(consecutive, 32)))
        return min(self.max_backoff_s, base * (1 + rng.uniform(-self.jitter, self.jitter)))

    @classmethod
    def from_settings(cls, services: Services) -> RestartPolicy:
        s = services.settings
        return cls(s.restart_initial_backoff_s, s.restart_max_backoff_s, s.restart_budget, s.restart_window_s)


class Supervisor:
    def __init__(
        self,
        services: Services,
        actors: list[Actor],
        policy: RestartPolicy | None = None,
        rng: random.Random | None = None,
    ):
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique: {names}")
        self.services = services
        self.actors = actors
        self.policy = policy or RestartPolicy.from_settings(services)
        self._rng = rng or random.Random()
        self._stop = trio.Event()

    def request_stop(self) -> None:
        """Begin the drain: set ``services.stopping``, then cancel what still runs after the grace period.

        Safe to call at any time, also while actors are still starting.
        """
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the actors in order, each once it reported ready or crashed, then run until stopped.

        Every actor is listed in the health registry (starting) before the first one starts, so
        the process is not ready while any of them has yet to start. A stop requested during
        start-up drains like any other: actors not started yet stay stopped, and the ones
        starting get the grace period.
        """
        for actor in self.actors:
            self.services.health.add(actor.name)
            self.services.health.set_state(actor.name, ActorState.STARTING)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_when_asked, nursery.cancel_scope)
            for actor in self.actors:
                if self.services.stopping.is_set():
                    self.services.health.set_state(actor.name, ActorState.STOPPED)
                    continue
                reported = trio.Event()
                nursery.start_soon(self._supervise, actor, reported, name=f"supervise:{actor.name}")
                await first_of(reported, self.services.stopping)
            task_status.started()
        if nursery.cancel_scope.cancelled_caught:
            # A cancelled actor never reached STOPPED: those are the ones the grace period cut short.
            cut = [a.name for a in self.actors
                   if self.services.health.get(a.name).state not in (ActorState.STOPPED, ActorState.FAILED)]
            log.warning("grace period over; cancelled what was still running", actors=cut)
        log.info("stopped")

    async def _drain_when_asked(self, scope: trio.CancelScope) -> None:
        await self._stop.wait()
        grace = self.services.settings.grace_period_s
        log.info("draining", grace_period_s=grace)
        self.services.stopping.set()
        scope.deadline = trio.current_time() + grace

    async def _supervise(self, actor: Actor, reported: trio.Event) -> None:
        """Run one actor, restarting it after crashes; ``reported`` is set once it is up or down."""
        bind(actor=actor.name)
        health = self.services.health
        ctx = ActorContext(actor.name, self.services)
        crashes: deque[float] = deque()
        consecutive = 0
        try:
            while not self.services.stopping.is_set():
                health.set_state(actor.name, ActorState.STARTING)
                began = trio.current_time()
                try:
                    async with trio.open_nursery() as inner:
                        if await inner.start(self._run_actor, actor, ctx):
                            health.set_state(actor.name, ActorState.RUNNING)
                            reported.set()
                    if self.services.stopping.is_set():
                        break
                    raise ActorReturned(f"{actor.name} returned without being asked to stop")
                except Exception as group:
                    # Only Exception: a group holding Cancelled (or KeyboardInterrupt) is a
                    # BaseExceptionGroup and goes on up, so cancellation is never swallowed.
                    exc = unwrap_group(group)
                    health.record_crash(actor.name, exc)
                    log.error("actor crashed", error=str(exc), exc_info=exc)
                now = trio.current_time()
                if now - began >= self.policy.max_backoff_s:
                    consecutive = 0  # it ran healthily for a while: start the backoff over
                crashes.append(now)
                while crashes and crashes[0] < now - self.policy.window_s:
                    crashes.popleft()
                if len(crashes) > self.policy.budget:
                    health.set_state(actor.name, ActorState.FAILED)
                    log.error("actor failed: restart budget spent", restarts=health.get(actor.name).restarts)
                    return
                health.set_state(actor.name, ActorState.BACKOFF)
                reported.set()  # a first crash is its report: start-up goes on without it
                delay = self.policy.backoff(consecutive, self._rng)
                consecutive += 1
                with trio.move_on_after(delay):
                    await self.services.stopping.wait()
                if self.services.stopping.is_set():
                    break
                health.record_restart(actor.name)
            health.set_state(actor.name, ActorState.STOPPED)
        finally:
            reported.set()

    @staticmethod
    async def _run_actor(
        actor: Actor, ctx: ActorContext, *, task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor; report True when it is ready, False when it gave up starting on a drain.

        Raises:
            ActorReturned: it returned before it reported ready, and nobody asked it to stop.
        """
        status = Readiness(task_status, True)
        await actor.run(ctx, task_status=status)
        if not status.reported:
            if not ctx.stopping.is_set():
                raise ActorReturned(f"{actor.name} returned before it reported started")
            task_status.started(False)
